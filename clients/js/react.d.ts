import type { HubEvent, JobStatus, JobType, Transport } from './hub-client';

export interface UseJobSSEOptions {
  jobId: string | null | undefined;
  type: JobType;
  token?: string;
  getToken?: () => string | Promise<string>;
  baseUrl?: string;
  transport?: Transport;
  auth?: 'query' | 'ticket' | 'header' | 'cookie';
  /** One connection per browser (default 'auto': shared in a browser page); false for a connection of its own. */
  share?: boolean | 'auto';
  onComplete?: (event: HubEvent) => void;
}

export interface JobSSEState {
  jobStatus: JobStatus | null;
  progress: number;
  status: 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
  error: Error | null;
  job: HubEvent | null;
}

export function useJobSSE(options: UseJobSSEOptions): JobSSEState;
