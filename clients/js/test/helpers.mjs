// Shared by the Node tests: they run against a real hub whose address and
// signing key come from the environment (tests/test_js_client.py sets them).
import { createHmac } from 'node:crypto';
import net from 'node:net';

export const HUB_URL = process.env.HUB_URL;
const SECRET = process.env.HUB_JWT_SECRET;
if (!HUB_URL || !SECRET) throw new Error('HUB_URL and HUB_JWT_SECRET must be set (run through pytest)');

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An HS256 JWT for `user`, valid for `ttl` seconds (negative: already expired). */
export function token(user, ttl = 600, claims = {}) {
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: user, exp: Math.floor(Date.now() / 1000) + ttl, ...claims })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/** The job type whose progress the tests publish themselves, as an app's worker would. */
export const EXTERNAL_TYPE = process.env.EXTERNAL_JOB_TYPE;

async function asService(path, body) {
  const response = await fetch(HUB_URL + path, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token('test-service', 600, { scope: 'hub:publish' })}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

/** A job of EXTERNAL_TYPE for `owner`; nothing moves it but publish(). */
export const createExternalJob = async (owner) => (await asService('/api/v1/jobs', { type: EXTERNAL_TYPE, owner })).jobId;
export const publish = (jobId, event) => asService(`/api/v1/jobs/${jobId}/events`, event);

let counter = 0;
/** A user name no other test uses, so per-user limits never interfere. */
export const uniqueUser = (name) => `${name}-${process.pid}-${++counter}`;

export async function createJob(user, type = 'character', body = { name: 'Ada' }, baseUrl = HUB_URL) {
  const path = type === 'character' ? '/api/v1/characters' : '/api/v1/media/images';
  const response = await fetch(baseUrl + path, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token(user)}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (response.status !== 202) throw new Error(`create: ${response.status} ${await response.text()}`);
  return (await response.json()).jobId;
}

/** Every event id of a job's history, read by long-poll from the very beginning. */
export async function historyIds(user, type, jobId) {
  const response = await fetch(`${HUB_URL}/api/v1/poll/jobs/${type}/${jobId}?cursor=0-0`, {
    headers: { Authorization: `Bearer ${token(user)}` },
  });
  return (await response.json()).events.map((e) => e.id);
}

/** Resolves with what `start(resolve, reject)` resolves, or fails after `ms`. */
export function within(ms, start) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    start(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** A TCP forwarder to the hub that a test can cut, as a network failure would;
 *  it keeps listening, so clients can reconnect through it. */
export async function startProxy(target = new URL(HUB_URL)) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Checks what a client delivered for one job: in order, once each, one end. */
export function checkJobEvents(events) {
  const ids = events.filter((e) => e.id).map((e) => e.id);
  if (new Set(ids).size !== ids.length) throw new Error(`duplicate ids: ${ids}`);
  const terminal = events.filter((e) => e.event.status === 'completed' || e.event.status === 'failed');
  if (terminal.length !== 1 || terminal[0] !== events.at(-1)) throw new Error('expected exactly one terminal event, last');
  let last = -1;
  for (const { event } of events) {
    if (event.type !== 'job_update') continue;
    if (event.status === 'active' && event.step === 'started') last = -1; // a new attempt
    if (typeof event.progress === 'number') {
      if (event.progress < last) throw new Error('progress went down');
      last = event.progress;
    }
  }
  return ids;
}

/** An HTTP forwarder to the hub that lets each stream ticket through once:
 *  the second request carrying a ticket (an EventSource's own reconnect, a
 *  probe) is answered 401, as a hub with one-use or expired tickets would.
 *  `cut()` drops every open connection, as a network failure would. */
export async function startOneUseTicketProxy(target = HUB_URL) {
  const http = await import('node:http');
  const seen = new Set();
  const sockets = new Set();
  const server = http.createServer((request, response) => {
    const ticket = new URL(request.url, target).searchParams.get('ticket');
    if (ticket && seen.has(ticket)) {
      response.writeHead(401, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ error: 'unauthorized', message: 'unknown or expired ticket' }));
      return;
    }
    if (ticket) seen.add(ticket);
    const upstream = http.request(new URL(request.url, target), { method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      response.flushHeaders();
      answer.pipe(response);
    });
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    tickets: seen,
    cut() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      this.cut();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A fetch and an EventSource class that record every URL a client asks for,
 *  with each fetch's method, Authorization header and body. */
export function recordingTransports(EventSourceClass) {
  const requests = [];
  const fetchSpy = (url, init = {}) => {
    requests.push({ url: String(url), method: init.method || 'GET', authorization: init.headers?.Authorization ?? null, body: init.body ?? null });
    return fetch(url, init);
  };
  class RecordingEventSource extends EventSourceClass {
    constructor(url, init) {
      requests.push({ url: String(url), method: 'EventSource', authorization: null, body: null });
      super(url, init);
    }
  }
  return { requests, fetch: fetchSpy, EventSource: RecordingEventSource };
}
