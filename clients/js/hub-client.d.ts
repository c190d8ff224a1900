/** A job type's name, as the hub's registry has it (GET /api/v1/job-types); matches JOB_TYPE_PATTERN. */
export type JobType = string;
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
  /** How the token travels on the streams. By default it goes into no URL: 'ticket' for a native EventSource (the
   *  token buys a one-minute ticket for each connection, through an Authorization header, bound to this stream),
   *  'header' for the fetch stream and long-poll (Authorization). 'cookie' sends the hub_token cookie; 'query' puts the
   *  token in the URL (access_token), only when asked for. */
  auth?: 'query' | 'ticket' | 'header' | 'cookie';
  transport?: Transport;
  /** Share one connection per browser; default on in browsers ('auto'). `false` gives this subscription a
   *  connection of its own. */
  share?: boolean | 'auto';
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

/** The statuses a job ends with; exactly one event of a job carries one. */
export const TERMINAL_STATUSES: readonly ['completed', 'failed'];
export const JOB_TYPE_PATTERN: RegExp;
export function isTerminal(status: string | null | undefined): boolean;

export function subscribeJob(type: JobType, jobId: string, options?: SubscribeOptions): Subscription;
export function subscribeJob(options: SubscribeOptions & { type: JobType; jobId: string }): Subscription;
export function subscribeMyJobs(options: SubscribeOptions): Subscription;
export function compareIds(a: string, b: string): number;

/** One field of a job type's input schema (a subset of JSON Schema). */
export interface InputField {
  type: 'string' | 'integer' | 'boolean';
  description?: string;
  default?: string | number | boolean;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  enum?: string[];
}

/** A job type as the hub describes it. */
export interface JobTypeInfo {
  type: JobType;
  /** 'actor': the hub runs it; 'external': the app's own workers publish its progress. */
  runner: 'actor' | 'external';
  input: { type: 'object'; properties: Record<string, InputField>; required?: string[] };
  /** Display hints, e.g. { title: 'Report', summary: 'text' } or { image: 'url' } (a result field). */
  view: { title?: string; summary?: string; image?: string; [hint: string]: unknown };
  /** The path that creates its jobs. */
  create: string;
}

/** A job's state. */
export interface Job {
  jobId: string;
  type: JobType;
  status: JobStatus;
  progress: number;
  createdAt: string;
  updatedAt?: string;
  startedAt?: string;
  completedAt?: string;
  step?: string;
  attempt?: number;
  result?: Record<string, unknown>;
  failedReason?: string;
  [field: string]: unknown;
}

export interface CreatedJob {
  jobId: string;
  type: JobType;
  status: 'queued';
  links: { sse: string; poll: string; status: string };
}

/** Options of the REST helpers: the streams' auth options. The token always travels in an Authorization
 *  header (never in a URL); with auth 'cookie' the browser's cookie is sent instead. */
export interface RequestOptions {
  baseUrl?: string;
  token?: string;
  /** Called when no token is given, and once more after a 401. */
  getToken?: () => string | Promise<string>;
  auth?: 'query' | 'ticket' | 'header' | 'cookie';
  fetch?: typeof fetch;
  /** Default 30000. */
  timeoutMs?: number;
}

export function jobTypes(options?: RequestOptions): Promise<JobTypeInfo[]>;
export function createJob(
  type: JobType,
  input?: Record<string, unknown>,
  options?: RequestOptions & { owner?: string },
): Promise<CreatedJob>;
export function getJob(jobId: string, options?: RequestOptions): Promise<Job>;
export function listJobs(
  page?: { limit?: number; before?: string | null },
  options?: RequestOptions,
): Promise<{ jobs: Job[]; next: string | null }>;
/** A file a job made; the token goes to the hub's origin only. */
export function fetchFile(url: string, options?: RequestOptions): Promise<Blob>;

export interface HubClient {
  jobTypes(options?: RequestOptions): Promise<JobTypeInfo[]>;
  createJob(type: JobType, input?: Record<string, unknown>, options?: RequestOptions & { owner?: string }): Promise<CreatedJob>;
  getJob(jobId: string, options?: RequestOptions): Promise<Job>;
  listJobs(page?: { limit?: number; before?: string | null }, options?: RequestOptions): Promise<{ jobs: Job[]; next: string | null }>;
  fetchFile(url: string, options?: RequestOptions): Promise<Blob>;
  subscribeJob(type: JobType, jobId: string, options?: SubscribeOptions): Subscription;
  subscribeJob(options: SubscribeOptions & { type: JobType; jobId: string }): Subscription;
  subscribeMyJobs(options?: SubscribeOptions): Subscription;
}

/** The helpers and subscriptions bound to one set of options. */
export function hubClient(options?: SubscribeOptions): HubClient;

export class HttpError extends Error implements HubHttpError {
  name: 'HttpError';
  status: number;
  body: unknown;
  retryAfterMs: number | null;
}

export class SseParser {
  push(text: string): Array<{ data: string | null; id: string | null; retry: number | null }>;
}
