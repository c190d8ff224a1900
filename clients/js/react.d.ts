import type { ConnectionState, HubEvent, HubHttpError, JobStatus, JobType, Transport } from './hub-client.js';

/** What `useJobSSE` follows, and how. A change of jobId, type, token, baseUrl, transport, auth or share resubscribes;
 *  a new `onComplete` or `getToken` (a fresh function each render) does not. */
export interface UseJobSSEOptions {
  /** The job to follow; null or undefined follows nothing (the state is idle). */
  jobId: string | null | undefined;
  /** Any job type the hub runs (GET /api/v1/job-types); a malformed one shows as `error`. */
  type: JobType;
  /** A JWT; or give getToken. */
  token?: string;
  /** Called for a token at start and once more after a 401. */
  getToken?: () => string | Promise<string>;
  /** Where the hub is; '' (the default) for the page's own origin. */
  baseUrl?: string;
  /** Default 'auto'. */
  transport?: Transport;
  /** How the token travels on the stream; see SubscribeOptions.auth. */
  auth?: 'query' | 'ticket' | 'header' | 'cookie';
  /** One connection per browser (default 'auto': shared in a browser page); false for a connection of its own. */
  share?: boolean | 'auto';
  /** The job's terminal event, once: check event.status ('completed' or 'failed'). */
  onComplete?: (event: HubEvent) => void;
}

/** What `useJobSSE` returns, re-rendered on every change. */
export interface JobSSEState {
  /** The job's status from its latest event; null until the first one. */
  jobStatus: JobStatus | null;
  /** 0 to 100; 0 until an event says otherwise, 100 once completed. */
  progress: number;
  /** The connection: 'idle' (no jobId), then 'connecting', 'open', 'reconnecting', 'closed'. */
  status: 'idle' | ConnectionState;
  /** A fatal error (bad token, unknown job, malformed type); the subscription is closed. */
  error: HubHttpError | Error | null;
  /** The latest event with a status (its `result` once completed, `failedReason` once failed). */
  job: HubEvent | null;
}

export function useJobSSE(options: UseJobSSEOptions): JobSSEState;
