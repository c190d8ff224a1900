export type JobType = 'character' | 'media';
export type JobStatus = 'queued' | 'active' | 'retrying' | 'completed' | 'failed';
export type Transport = 'auto' | 'eventsource' | 'fetch' | 'longpoll';
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** One event from the hub: the JSON of an SSE frame. */
export interface HubEvent {
  type: 'connected' | 'initial_status' | 'job_update' | 'reset' | string;
  jobId?: string;
  jobType?: JobType;
  status?: JobStatus;
  progress?: number;
  step?: string;
  attempt?: number;
  result?: unknown;
  failedReason?: string;
  timestamp?: string;
  startedAt?: string;
  completedAt?: string;
  [field: string]: unknown;
}

export interface HubHttpError extends Error {
  name: 'HttpError';
  status: number;
  body: unknown;
  retryAfterMs: number | null;
}

export interface SubscribeOptions {
  /** Where the hub is; '' for the page's own origin. */
  baseUrl?: string;
  /** A JWT; or give getToken. */
  token?: string;
  /** Called for a token at start and once more after a 401. */
  getToken?: () => string | Promise<string>;
  /** How the token travels: 'query' (access_token, works with EventSource), 'ticket' (the token buys a one-minute
   *  stream ticket through an Authorization header; the token never goes into a URL), 'header' (Authorization, needs
   *  fetch), 'cookie' (hub_token). Default 'query'. */
  auth?: 'query' | 'ticket' | 'header' | 'cookie';
  transport?: Transport;
  /** Resume after this event id. */
  lastEventId?: string;
  /** Every event, once, in order. */
  onEvent?: (event: HubEvent, id: string | null) => void;
  /** Every event that carries progress. */
  onProgress?: (progress: number, event: HubEvent) => void;
  /** The job's terminal event (completed or failed): check event.status. On /my, once per job. */
  onComplete?: (event: HubEvent) => void;
  /** A fatal error: bad token (after one refresh), unknown job, bad request. The subscription is closed. */
  onError?: (error: HubHttpError | Error) => void;
  /** Connection state changes, with the transport in use. */
  onState?: (change: { state: ConnectionState; transport: Transport; error?: unknown }) => void;
  /** In 'auto' mode, a stream with no event for this long is taken as buffered: switch to long-poll. Default 20000. */
  bufferingTimeoutMs?: number;
  /** Client-side limit of one long-poll request. Default 60000. */
  pollTimeoutMs?: number;
  /** Implementations to use instead of the globals (e.g. the `eventsource` package in Node). */
  EventSource?: unknown;
  fetch?: typeof fetch;
}

export interface Subscription {
  close(): void;
}

export function subscribeJob(options: SubscribeOptions & { type: JobType; jobId: string }): Subscription;
export function subscribeMyJobs(options: SubscribeOptions): Subscription;
export function compareIds(a: string, b: string): number;

export class SseParser {
  push(text: string): Array<{ data: string | null; id: string | null; retry: number | null }>;
}
