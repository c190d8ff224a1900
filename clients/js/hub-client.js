// Realtime hub client: live job progress over SSE, a fetch stream, or long-poll,
// and the few REST calls a page needs around them.
//
//   import { subscribeJob, hubClient } from './hub-client.js';
//   const sub = subscribeJob(type, jobId, { baseUrl, token, onProgress, onComplete, onError });
//   sub.close();
//   const hub = hubClient({ baseUrl, token });
//   const types = await hub.jobTypes();             // what this hub runs
//   const { jobId } = await hub.createJob(types[0].type, { ... });
//
// Job types are the hub's data (GET /api/v1/job-types): this client knows
// none by name. Plain ES module, no dependencies, no build step. Works in
// browsers and in Node 18+ (pass `EventSource` from the `eventsource` package
// to use that transport in Node). In a browser, every subscription of a page,
// and of every tab of the same user, shares one connection
// (shared-connection.js; `share: false` turns it off). See docs/CLIENTS.md.

import { SharedSubscription, callSafely, sharesConnection } from './shared-connection.js';

/** A job's last statuses: exactly one event carries one, and a job's stream ends there. */
export const TERMINAL_STATUSES = Object.freeze(['completed', 'failed']);
/** What a job type's name looks like (the hub refuses any other). */
export const JOB_TYPE_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;

export const isTerminal = (status) => TERMINAL_STATUSES.includes(status);

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
// A stream that shows no event at all for this long sits behind a buffering proxy.
const DEFAULT_BUFFERING_TIMEOUT_MS = 20000;
// Longer than the hub's hold (25 s by default): a poll that outlives it is lost.
const DEFAULT_POLL_TIMEOUT_MS = 60000;
// A REST call (create, list, read) that takes longer than this has failed.
const DEFAULT_REQUEST_TIMEOUT_MS = 30000;

/** Follows one job until its terminal event: `subscribeJob(type, jobId, options)`,
 *  or `subscribeJob({ type, jobId, ...options })`. */
export function subscribeJob(typeOrOptions, jobId, options = {}) {
  const o = typeof typeOrOptions === 'string' ? { ...options, type: typeOrOptions, jobId } : typeOrOptions || {};
  checkType(o.type);
  if (!o.jobId) throw new TypeError('jobId is required');
  const id = encodeURIComponent(String(o.jobId));
  const pollPath = `/api/v1/poll/jobs/${o.type}/${id}`;
  if (sharesConnection(o)) return new SharedSubscription(o, { type: o.type, jobId: o.jobId, pollPath }, SHARED_TOOLS);
  return new Subscription(o, `/api/v1/sse/jobs/${o.type}/${id}`, pollPath, true);
}

/** Follows every job of the user, including jobs created later; never ends by itself. */
export function subscribeMyJobs(options = {}) {
  if (sharesConnection(options)) return new SharedSubscription(options, null, SHARED_TOOLS);
  return new Subscription(options, '/api/v1/sse/jobs/my', '/api/v1/poll/jobs/my', false);
}

// -- REST helpers --------------------------------------------------------------
//
// They take the streams' options (baseUrl, token, getToken, auth, fetch). The
// token always travels in an Authorization header (the hub's REST endpoints
// all take it, so it never needs to be in a URL); with auth 'cookie' no token
// is sent and the browser sends its cookie.

/** The job types this hub runs: [{ type, runner, input, view, create }]. */
export async function jobTypes(options = {}) {
  return (await callHub('GET', '/api/v1/job-types', undefined, options)).data;
}

/** Starts a job; resolves with the hub's 202 answer { jobId, type, status, links }.
 *  A service (token with scope hub:publish) names the job's owner with `options.owner`. */
export async function createJob(type, input = {}, options = {}) {
  checkType(type);
  const body = { type, input };
  if (options.owner != null) body.owner = options.owner;
  return callHub('POST', '/api/v1/jobs', body, options);
}

/** One job's state (JOB: jobId, type, status, progress, result, ...). */
export async function getJob(jobId, options = {}) {
  if (!jobId) throw new TypeError('jobId is required');
  return (await callHub('GET', `/api/v1/jobs/${encodeURIComponent(String(jobId))}`, undefined, options)).data;
}

/** A page of the user's jobs, newest first, finished ones included:
 *  { jobs, next } (pass `next` as `before` for the page after; null at the end). */
export async function listJobs({ limit, before } = {}, options = {}) {
  const query = new URLSearchParams();
  if (limit != null) query.set('limit', String(limit));
  if (before != null) query.set('before', String(before));
  const text = query.toString();
  const body = await callHub('GET', `/api/v1/jobs${text ? `?${text}` : ''}`, undefined, options);
  return { jobs: body.data, next: body.next ?? null };
}

/** A file a job made (a URL from its result, e.g. an image), as a Blob. An
 *  <img> cannot send a header, so show it with URL.createObjectURL(blob). */
export async function fetchFile(url, options = {}) {
  const response = await hubRequest('GET', url, undefined, options, '*/*');
  return response.blob();
}

/** The helpers and subscriptions bound to one set of options (baseUrl, token | getToken, auth, fetch). */
export function hubClient(options = {}) {
  const merged = (more) => ({ ...options, ...more });
  return {
    jobTypes: (more) => jobTypes(merged(more)),
    createJob: (type, input, more) => createJob(type, input, merged(more)),
    getJob: (jobId, more) => getJob(jobId, merged(more)),
    listJobs: (page, more) => listJobs(page, merged(more)),
    fetchFile: (url, more) => fetchFile(url, merged(more)),
    subscribeJob: (type, jobId, more) =>
      typeof type === 'object' && type !== null ? subscribeJob(merged(type)) : subscribeJob(type, jobId, merged(more)),
    subscribeMyJobs: (more) => subscribeMyJobs(merged(more)),
  };
}

async function callHub(method, path, body, options) {
  const response = await hubRequest(method, path, body, options, 'application/json');
  return response.json();
}

/** One REST request, with a timeout, refreshing the token once through getToken() on 401. */
async function hubRequest(method, path, body, options, accept) {
  const fetchImpl = options.fetch || globalThis.fetch?.bind(globalThis);
  if (typeof fetchImpl !== 'function') throw new TypeError('no fetch: pass options.fetch');
  const base = (options.baseUrl || '').replace(/\/+$/, '');
  const absolute = /^[a-z][a-z0-9+.-]*:/i.test(path);
  const url = absolute ? path : `${base}${path}`;
  // The token goes to the hub only, never to another host a result may name.
  const toHub = !absolute || sameOrigin(url, base);
  const cookie = options.auth === 'cookie';
  let token = cookie || !toHub ? null : options.token || null;
  if (!token && !cookie && toHub && options.getToken) token = await options.getToken();
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: accept };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetchImpl(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: cookie && toHub ? 'include' : 'same-origin',
        cache: 'no-store',
        signal: controller.signal,
      });
    } finally {
      clearTimeout(timer);
    }
    if (response.ok) return response;
    if (response.status === 401 && attempt === 0 && token && options.getToken) {
      token = await options.getToken();
      continue;
    }
    throw await httpError(response);
  }
}

function sameOrigin(url, base) {
  const here = globalThis.location?.origin;
  try {
    return new URL(url).origin === new URL(base || here).origin;
  } catch {
    return false;
  }
}

function checkType(type) {
  if (typeof type !== 'string' || !JOB_TYPE_PATTERN.test(type)) {
    throw new TypeError(`job type must match ${JOB_TYPE_PATTERN}, not ${JSON.stringify(type)}`);
  }
}

/** Compares two event ids ("<ms>-<seq>"); negative when a is older. */
export function compareIds(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

/** A refusal from the hub: `status`, the JSON `body` ({ error, message }), and Retry-After in ms. */
export class HttpError extends Error {
  constructor(status, body, retryAfterMs) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.name = 'HttpError';
    this.status = status;
    this.body = body;
    this.retryAfterMs = retryAfterMs;
  }
}

class Subscription {
  constructor(options, streamPath, pollPath, endsWithJob) {
    this.options = options;
    this.baseUrl = (options.baseUrl || '').replace(/\/+$/, '');
    this.streamPath = streamPath;
    this.pollPath = pollPath;
    this.endsWithJob = endsWithJob;
    this.lastId = options.lastEventId || null;
    this.token = options.token || null;
    this.auth = options.auth || null; // 'query' | 'ticket' | 'header' | 'cookie'; null: the safest that works
    this.fetch = options.fetch || globalThis.fetch?.bind(globalThis);
    this.EventSource = options.EventSource || globalThis.EventSource;
    this.transport = this.chooseTransport(options.transport || 'auto');
    this.failures = 0;
    this.refreshedToken = false;
    this.closed = false;
    this.tokenExpired = false;
    this.timer = null;
    this.abort = null;
    this.source = null;
    this.start();
  }

  /** How the token travels now. By default the token goes into no URL: a
   *  native EventSource (which cannot send a header) gets a fresh one-minute
   *  ticket for each connection, the other transports send the header. */
  get authMode() {
    return this.auth || (this.transport === 'eventsource' ? 'ticket' : 'header');
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    if (this.abort) this.abort.abort();
    if (this.source) this.source.close();
    this.setState('closed');
  }

  // -- choosing and running a transport --------------------------------------

  chooseTransport(wanted) {
    if (wanted !== 'auto') return wanted;
    const streams = typeof this.fetch === 'function' && typeof ReadableStream !== 'undefined';
    if (this.EventSource && this.auth !== 'header') return 'eventsource';
    return streams ? 'fetch' : 'longpoll';
  }

  async start() {
    if (this.closed) return;
    if (!this.token && this.options.getToken && this.authMode !== 'cookie') {
      // (a ticket is bought with the token, so ticket mode needs one too)
      try {
        this.token = await this.options.getToken();
      } catch (error) {
        return this.fail(error);
      }
    }
    this.setState(this.failures ? 'reconnecting' : 'connecting');
    const run = { eventsource: this.runEventSource, fetch: this.runFetch, longpoll: this.runLongPoll }[this.transport];
    if (!run) return this.fail(new TypeError(`unknown transport ${this.transport}`));
    try {
      // A fresh one-minute ticket for every connection: the token stays out of URLs.
      if (this.authMode === 'ticket') this.ticket = await this.fetchTicket();
      await run.call(this);
    } catch (error) {
      return this.recover(error);
    }
    if (this.tokenExpired && !this.closed) {
      // The hub ended the stream at the token's expiry: resume with a fresh one.
      this.tokenExpired = false;
      if (this.options.getToken) this.token = null;
      return this.start();
    }
  }

  /** After a failure: refresh the token, wait, give up, or end, as the error says. */
  async recover(error) {
    if (this.closed) return;
    if (error instanceof HttpError) {
      if (error.status === 204) return this.finish();
      if (error.status === 401 && this.options.getToken && !this.refreshedToken) {
        this.refreshedToken = true;
        this.token = null; // start() asks getToken() for a fresh one
        return this.start();
      }
      if (error.status === 401 || error.status === 404 || error.status === 400) return this.fail(error);
      if (error.retryAfterMs != null) return this.retryIn(error.retryAfterMs * (1 + Math.random() * 0.2), error);
    }
    if (error && error.name === 'BufferingDetected') {
      this.transport = 'longpoll';
      return this.retryIn(0, error);
    }
    this.failures += 1;
    this.retryIn(backoff(this.failures), error);
  }

  retryIn(delayMs, error) {
    if (this.closed) return;
    this.setState('reconnecting', error);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start(), delayMs);
  }

  connected() {
    if (this.closed) return;
    this.failures = 0;
    this.refreshedToken = false;
    this.setState('open');
  }

  finish() {
    this.close();
  }

  fail(error) {
    if (this.closed) return;
    this.close();
    callSafely(this.options.onError, error);
  }

  setState(state, error) {
    callSafely(this.options.onState, { state, transport: this.transport, error });
  }

  // -- events ----------------------------------------------------------------

  /** Delivers one event unless it was delivered before; true when the subscription is over. */
  deliver(event, id) {
    if (this.closed) return true; // a late answer after close(): nobody wants it
    // Only events that carry state have cursors; `connected` and `reset` are
    // never duplicates (EventSource hands them the previous id all the same).
    const stateful = event.type === 'job_update' || event.type === 'initial_status';
    if (id && stateful) {
      const order = this.lastId ? compareIds(id, this.lastId) : 1;
      // `/my` snapshots share one id: several initial_status frames with it are all new.
      const snapshotPeer = order === 0 && event.type === 'initial_status' && !this.endsWithJob;
      if (order < 0 || (order === 0 && !snapshotPeer)) return false;
      this.lastId = id;
    }
    // On `/my`, a reset with no open job says where the client now stands.
    if (id && event.type === 'reset') this.lastId = id;
    const o = this.options;
    if (event.type === 'token_expired') this.tokenExpired = true;
    // What a callback throws is reported, and does not stop the stream.
    callSafely(o.onEvent, event, id);
    if (typeof event.progress === 'number' && event.jobId) callSafely(o.onProgress, event.progress, event);
    if (isTerminal(event.status) && (event.type === 'job_update' || event.type === 'initial_status')) {
      callSafely(o.onComplete, event);
      if (this.endsWithJob) {
        this.finish();
        return true;
      }
    }
    return false;
  }

  // -- URLs and headers ------------------------------------------------------

  url(path, params = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value != null) query.set(key, value);
    if (this.authMode === 'query' && this.token) query.set('access_token', this.token);
    if (this.authMode === 'ticket' && this.ticket) query.set('ticket', this.ticket);
    const text = query.toString();
    return `${this.baseUrl}${path}${text ? `?${text}` : ''}`;
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.authMode === 'header' && this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async fetchTicket() {
    // Bound to this stream: a ticket that leaks opens nothing else, and
    // EventSource may reconnect with the same URL (an unbound ticket opens
    // one stream once).
    const response = await this.request(
      `${this.baseUrl}/api/v1/sse/tickets`,
      {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ path: this.streamPath }),
      },
      10000,
    );
    return (await response.json()).ticket;
  }

  async request(url, init, timeoutMs, controller = new AbortController()) {
    this.abort = controller;
    const timer = timeoutMs ? setTimeout(() => controller.abort(), timeoutMs) : null;
    const credentials = this.authMode === 'cookie' ? 'include' : 'same-origin';
    try {
      const response = await this.fetch(url, { ...init, signal: controller.signal, credentials });
      if (response.status !== 200 && response.status !== 201) throw await httpError(response);
      return response;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** In 'auto' mode, calls `onBuffered` if no event arrives within the window. */
  watchForBuffering(onBuffered) {
    if ((this.options.transport || 'auto') !== 'auto') return null;
    return setTimeout(onBuffered, this.options.bufferingTimeoutMs ?? DEFAULT_BUFFERING_TIMEOUT_MS);
  }

  // -- transport: native EventSource -----------------------------------------

  runEventSource() {
    return new Promise((resolve, reject) => {
      const url = this.url(this.streamPath, { lastEventId: this.lastId });
      const source = new this.EventSource(url, { withCredentials: this.authMode === 'cookie' });
      this.source = source;
      const buffering = this.watchForBuffering(() => {
        source.close();
        this.source = null;
        reject(bufferingDetected());
      });
      source.onopen = () => this.connected();
      source.onmessage = (message) => {
        clearTimeout(buffering);
        const over = this.deliver(JSON.parse(message.data), message.lastEventId || null);
        // After token_expired, the browser would reconnect with the old token in the URL.
        if (over || this.tokenExpired) {
          source.close();
          this.source = null;
          resolve();
        }
      };
      source.onerror = () => {
        clearTimeout(buffering);
        if (this.closed) return resolve();
        // CONNECTING: the browser reconnects by itself, with Last-Event-ID.
        if (source.readyState !== 2) return this.setState('reconnecting');
        // CLOSED: the browser gave up for good (any non-200 answer does that,
        // 204, 401, 429 and 503 included) and will not say why: ask the hub.
        source.close();
        this.source = null;
        this.probe().then(resolve, reject);
      };
    });
  }

  /** Learns why EventSource was refused: the long-poll endpoint answers at once without a cursor. */
  async probe() {
    // Not with the ticket: it may be what was refused (expired, or spent). The
    // header goes in no URL either; the next connection buys a fresh ticket.
    const ticketed = this.authMode === 'ticket' && this.token;
    const url = ticketed ? `${this.baseUrl}${this.pollPath}` : this.url(this.pollPath);
    const headers = ticketed ? { Authorization: `Bearer ${this.token}` } : this.headers();
    const response = await this.request(url, { headers }, 10000);
    const body = await response.json();
    const final = body.events.find((e) => isTerminal(e.status));
    if (this.endsWithJob && final) {
      // The job is over: deliver its end if it is news, then stop.
      const { id, ...event } = final;
      if (!this.deliver(event, id)) this.finish();
      return;
    }
    this.failures += 1;
    throw new Error('EventSource closed');
  }

  // -- transport: fetch stream (Authorization header, no EventSource) --------

  async runFetch() {
    const headers = this.headers({ Accept: 'text/event-stream' });
    if (this.lastId) headers['Last-Event-ID'] = this.lastId;
    const controller = new AbortController();
    // From the request on: a buffering proxy may hold back the headers too.
    const buffering = this.watchForBuffering(() => controller.abort(bufferingDetected()));
    let heard = false;
    let retryMs = null;
    try {
      let response;
      try {
        response = await this.request(this.url(this.streamPath), { headers, cache: 'no-store' }, 0, controller);
      } catch (error) {
        throw controller.signal.reason?.name === 'BufferingDetected' ? controller.signal.reason : error;
      }
      const reader = response.body.getReader();
      const parser = new SseParser();
      const decoder = new TextDecoder();
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (error) {
          throw controller.signal.reason?.name === 'BufferingDetected' ? controller.signal.reason : error;
        }
        if (chunk.done) break;
        for (const frame of parser.push(decoder.decode(chunk.value, { stream: true }))) {
          if (frame.retry != null) retryMs = frame.retry;
          if (frame.data == null) continue;
          if (!heard) {
            heard = true;
            clearTimeout(buffering);
            this.connected();
          }
          if (this.deliver(JSON.parse(frame.data), frame.id)) return;
        }
      }
    } finally {
      clearTimeout(buffering);
      controller.abort(); // whatever ended the reading, the response goes with it
    }
    // The hub ended the stream (a deploy, a Redis reconnect): come back after
    // the `retry:` delay it asked for, with the last id, as EventSource would.
    if (!this.closed && !this.tokenExpired) this.retryIn(retryMs ?? 0);
  }

  // -- transport: long-poll --------------------------------------------------

  async runLongPoll() {
    const timeout = this.options.pollTimeoutMs ?? DEFAULT_POLL_TIMEOUT_MS;
    while (!this.closed) {
      const url = this.url(this.pollPath, { cursor: this.lastId });
      const response = await this.request(url, { headers: this.headers(), cache: 'no-store' }, timeout);
      const body = await response.json();
      if (this.closed) return;
      this.connected();
      for (const event of body.events) {
        const { id, ...payload } = event;
        if (this.deliver(payload, id || null)) return;
      }
      if (body.cursor && (!this.lastId || compareIds(body.cursor, this.lastId) > 0)) this.lastId = body.cursor;
    }
  }
}

/** What the shared connection uses of this module. */
const SHARED_TOOLS = Object.freeze({
  openStream: (options) => new Subscription(options, '/api/v1/sse/jobs/my', '/api/v1/poll/jobs/my', false),
  readJson: (path, options) => callHub('GET', path, undefined, options),
  compareIds,
  isTerminal,
});

/** The SSE wire format, incrementally: https://html.spec.whatwg.org/#event-stream-interpretation */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.data = null;
    this.id = null;
    this.retry = null;
    this.skipLineFeed = false;
  }

  push(text) {
    const frames = [];
    // A chunk that ended in '\r' may have been cut inside a '\r\n'.
    if (this.skipLineFeed && text.startsWith('\n')) text = text.slice(1);
    this.skipLineFeed = text.endsWith('\r');
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (this.data != null || this.retry != null) frames.push({ data: this.data, id: this.id, retry: this.retry });
        this.data = null;
        this.retry = null;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this.data = this.data == null ? value : `${this.data}\n${value}`;
      else if (field === 'id' && !value.includes('\0')) this.id = value || null;
      else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value);
    }
    return frames;
  }
}

function bufferingDetected() {
  return Object.assign(new Error('no event arrived in time: a proxy buffers the stream'), { name: 'BufferingDetected' });
}

function backoff(failures) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2); // jitter: clients do not return in step
}

async function httpError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const header = response.headers.get('Retry-After');
  const seconds = header != null && /^\d+$/.test(header) ? Number(header) : null;
  return new HttpError(response.status, body, seconds == null ? null : seconds * 1000);
}
