// The JavaScript client against a real hub and a real worker: every transport
// follows a whole job, resumes after a dropped connection, honours 429 +
// Retry-After, refreshes a rejected token once, and stops on 204.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventSource } from 'eventsource';

import { compareIds, subscribeJob, subscribeMyJobs } from '../hub-client.js';
import {
  EXTERNAL_TYPE,
  HUB_URL,
  checkJobEvents,
  createExternalJob,
  createJob,
  historyIds,
  publish,
  recordingTransports,
  startOneUseTicketProxy,
  startProxy,
  token,
  uniqueUser,
  within,
} from './helpers.mjs';

const TRANSPORTS = ['eventsource', 'fetch', 'longpoll'];
// Node has no EventSource of its own: the `eventsource` package stands in for the browser's.
const common = { EventSource };

/** Follows a job to its end; `onEvent` may act on each delivered event. */
function follow(options, onEvent = () => {}) {
  return within(30000, (resolve, reject) => {
    const events = [];
    const states = [];
    const subscription = subscribeJob({
      ...common,
      ...options,
      onEvent: (event, id) => {
        events.push({ event, id });
        onEvent(event, id, subscription);
      },
      onState: (change) => states.push(change),
      onComplete: (event) => setImmediate(() => resolve({ events, states, final: event, subscription })),
      onError: reject,
    });
  });
}

for (const transport of TRANSPORTS) {
  test(`${transport}: follows a whole job`, async () => {
    const user = uniqueUser('whole');
    const jobId = await createJob(user, 'character', { name: 'Whole' });
    const { events, final, states } = await follow({ baseUrl: HUB_URL, type: 'character', jobId, token: token(user), transport });
    checkJobEvents(events);
    assert.equal(final.status, 'completed');
    assert.equal(final.result.name, 'Whole');
    assert.equal(events[0].event.type, transport === 'longpoll' ? 'initial_status' : 'connected');
    assert.ok(states.every((s) => s.transport === transport));
    assert.equal(states.at(-1).state, 'closed', 'closed after the terminal event');
  });

  test(`${transport}: resumes after the server side drops the connection`, async () => {
    const user = uniqueUser('drop');
    const proxy = await startProxy();
    try {
      const jobId = await createJob(user, 'character', { name: 'Dropped' });
      let cut = false;
      const { events } = await follow(
        { baseUrl: proxy.url, type: 'character', jobId, token: token(user), transport, pollTimeoutMs: 60000 },
        (event) => {
          if (!cut && event.type === 'job_update' && event.status === 'active') {
            cut = true;
            proxy.cut();
          }
        },
      );
      assert.ok(cut, 'the connection was cut mid-job');
      const delivered = checkJobEvents(events);
      const all = await historyIds(user, 'character', jobId);
      const first = delivered[0];
      assert.deepEqual(delivered, all.filter((id) => compareIds(id, first) >= 0), 'no gap and no duplicate');
    } finally {
      await proxy.close();
    }
  });

  test(`${transport}: stops on 204 when resumed at the terminal event`, async () => {
    const user = uniqueUser('end');
    const jobId = await createJob(user, 'character', { name: 'Ended' });
    const { events: before } = await follow({ baseUrl: HUB_URL, type: 'character', jobId, token: token(user), transport });
    const again = await within(15000, (resolve, reject) => {
      const events = [];
      subscribeJob({
        ...common,
        baseUrl: HUB_URL,
        type: 'character',
        jobId,
        token: token(user),
        transport,
        lastEventId: before.at(-1).id,
        onEvent: (event) => events.push(event),
        onError: reject,
        onState: ({ state }) => state === 'closed' && resolve(events),
      });
    });
    assert.deepEqual(again.filter((e) => e.type !== 'connected'), [], 'nothing after the end, and no retry loop');
  });
}

for (const transport of ['fetch', 'eventsource', 'longpoll']) {
  test(`${transport}: waits out 429 with Retry-After, then connects`, async () => {
    const user = uniqueUser('crowd');
    const limit = Number(process.env.HUB_MAX_CONNECTIONS_PER_USER);
    const holders = [];
    for (let i = 0; i < limit; i += 1) {
      holders.push(
        await within(10000, (resolve, reject) => {
          const s = subscribeMyJobs({ ...common, baseUrl: HUB_URL, token: token(user), transport: 'fetch', onError: reject, onState: ({ state }) => state === 'open' && resolve(s) });
        }),
      );
    }
    const refused = [];
    let opened = null;
    const late = subscribeMyJobs({
      ...common,
      baseUrl: HUB_URL,
      token: token(user),
      transport,
      onState: ({ state, error }) => {
        if (state === 'reconnecting' && error?.status === 429) {
          refused.push({ at: Date.now(), retryAfterMs: error.retryAfterMs, body: error.body });
          holders.pop().close(); // a slot frees while the client waits
        }
        if (state === 'open' && !opened) opened = Date.now();
      },
      onError: (error) => assert.fail(error),
    });
    try {
      await within(20000, (resolve) => {
        const check = setInterval(() => opened && (clearInterval(check), resolve()), 20);
      });
      assert.equal(refused.length, 1);
      assert.deepEqual(refused[0].body, { error: 'too_many_connections', limit });
      assert.ok(refused[0].retryAfterMs >= 1000);
      assert.ok(opened - refused[0].at >= refused[0].retryAfterMs, 'waited as long as Retry-After said');
    } finally {
      late.close();
      holders.forEach((s) => s.close());
    }
  });

  test(`${transport}: on 401 asks getToken once for a fresh token`, async () => {
    const user = uniqueUser('refresh');
    const jobId = await createJob(user, 'character', { name: 'Fresh' });
    let calls = 0;
    const { final } = await follow({
      baseUrl: HUB_URL,
      type: 'character',
      jobId,
      transport,
      token: token(user, -3600), // expired
      getToken: async () => {
        calls += 1;
        return token(user);
      },
    });
    assert.equal(final.status, 'completed');
    assert.equal(calls, 1);

    // A token that stays bad: one refresh, then a 401 error, no loop.
    calls = 0;
    const error = await within(15000, (resolve) => {
      subscribeJob({
        ...common,
        baseUrl: HUB_URL,
        type: 'character',
        jobId,
        transport,
        token: 'not-a-token',
        getToken: () => {
          calls += 1;
          return 'still-not-a-token';
        },
        onError: resolve,
      });
    });
    assert.equal(error.status, 401);
    assert.equal(calls, 1);
  });
}

test("auto: picks EventSource (with a ticket) by default, a fetch stream for auth 'header'", async () => {
  const user = uniqueUser('auto');
  const jobId = await createJob(user);
  const viaUrl = await follow({ baseUrl: HUB_URL, type: 'character', jobId, token: token(user) });
  assert.equal(viaUrl.states[0].transport, 'eventsource');
  const viaHeader = await follow({ baseUrl: HUB_URL, type: 'character', jobId: await createJob(user), token: token(user), auth: 'header' });
  assert.equal(viaHeader.states[0].transport, 'fetch');
  checkJobEvents(viaHeader.events);
});

test('auto: falls back to long-poll when a proxy buffers the stream', async () => {
  const user = uniqueUser('buffered');
  // A "proxy" that answers 200 to streams but never passes a byte on.
  const http = await import('node:http');
  const server = http.createServer(async (request, response) => {
    if (request.url.includes('/sse/')) {
      response.writeHead(200, { 'Content-Type': 'text/event-stream' });
      response.flushHeaders();
      return; // then holds every event back, as a buffering proxy does
    }
    const upstream = await fetch(HUB_URL + request.url, { headers: { Authorization: request.headers.authorization ?? '' } });
    response.writeHead(upstream.status, { 'Content-Type': 'application/json' });
    response.end(await upstream.text());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const jobId = await createJob(user);
    const { states, final } = await follow({
      baseUrl: `http://127.0.0.1:${server.address().port}`,
      type: 'character',
      jobId,
      token: token(user),
      auth: 'header',
      bufferingTimeoutMs: 500,
    });
    assert.equal(final.status, 'completed');
    assert.deepEqual([...new Set(states.map((s) => s.transport))], ['fetch', 'longpoll']);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('subscribeMyJobs: every job of the user, including jobs created after connecting', async () => {
  const user = uniqueUser('my');
  const done = new Set();
  const seen = [];
  let subscription;
  const jobs = await within(30000, async (resolve, reject) => {
    subscription = subscribeMyJobs({
      ...common,
      baseUrl: HUB_URL,
      token: token(user),
      transport: 'fetch',
      onError: reject,
      onEvent: (event, id) => id && seen.push(id),
      onComplete: (event) => {
        done.add(event.jobId);
        if (done.size === 2) resolve([...done]);
      },
      onState: async ({ state }) => {
        if (state === 'open' && !done.size && !seen.length) {
          await createJob(user, 'character', { name: 'One' });
          await createJob(user, 'media', { prompt: 'two', width: 64, height: 64 });
        }
      },
    });
  });
  subscription.close();
  assert.equal(jobs.length, 2);
  assert.equal(new Set(seen).size, seen.length, 'no event twice');
});

test('ticket auth: the token buys a stream ticket and never goes into a URL', async () => {
  const user = uniqueUser('ticket');
  const jobId = await createJob(user, 'character', { name: 'Ticketed' });
  const urls = [];
  const spy = (url, init) => {
    urls.push(String(url));
    return fetch(url, init);
  };
  class SpyEventSource extends EventSource {
    constructor(url, init) {
      urls.push(String(url));
      super(url, init);
    }
  }
  const { final, states } = await follow({
    baseUrl: HUB_URL, type: 'character', jobId, token: token(user), auth: 'ticket', fetch: spy, EventSource: SpyEventSource,
  });
  assert.equal(final.status, 'completed');
  assert.equal(states[0].transport, 'eventsource');
  assert.ok(urls.some((u) => u.endsWith('/api/v1/sse/tickets')));
  assert.ok(urls.some((u) => u.includes('/sse/jobs/character/') && u.includes('ticket=')));
  assert.ok(urls.every((u) => !u.includes('access_token') && !u.includes(token(user).split('.')[2])));
});

// What each transport sends by default, with no `auth` option: a stream ticket for EventSource
// (which cannot send headers), the Authorization header for the others; never the token in a URL.
const DEFAULT_AUTH = { auto: 'ticket', eventsource: 'ticket', fetch: 'header', longpoll: 'header' };

for (const [transport, expected] of Object.entries(DEFAULT_AUTH)) {
  test(`${transport}: by default the token goes into no URL, and the job is followed to its end`, async () => {
    const user = uniqueUser('default-auth');
    const jobId = await createJob(user, 'character', { name: 'Default' });
    const spy = recordingTransports(EventSource);
    const options = { baseUrl: HUB_URL, type: 'character', jobId, token: token(user), fetch: spy.fetch, EventSource: spy.EventSource };
    const { events, final, states } = await follow(transport === 'auto' ? options : { ...options, transport });
    checkJobEvents(events);
    assert.equal(final.status, 'completed');
    assert.equal(states[0].transport, transport === 'auto' ? 'eventsource' : transport);

    const secret = token(user).split('.')[2];
    const leaks = spy.requests.filter((r) => r.url.includes('access_token') || r.url.includes(secret));
    assert.deepEqual(leaks, [], 'no URL carries the token');
    const streams = spy.requests.filter((r) => r.url.includes('/sse/jobs/') || r.url.includes('/poll/jobs/'));
    assert.ok(streams.length >= 1);
    if (expected === 'ticket') {
      const bought = spy.requests.filter((r) => r.url.endsWith('/api/v1/sse/tickets'));
      assert.ok(bought.length >= 1 && bought.every((r) => r.method === 'POST' && /^Bearer /.test(r.authorization)));
      // Each ticket opens this job's stream and no other.
      assert.deepEqual(JSON.parse(bought[0].body), { path: `/api/v1/sse/jobs/character/${jobId}` });
      assert.ok(streams.every((r) => r.method === 'EventSource' && r.url.includes('ticket=')), JSON.stringify(streams));
    } else {
      assert.ok(streams.every((r) => /^Bearer /.test(r.authorization) && !r.url.includes('ticket=')), JSON.stringify(streams));
    }
  });
}

test("auth 'query' still puts the token in the URL when asked for", async () => {
  const user = uniqueUser('query');
  const jobId = await createJob(user, 'character', { name: 'Query' });
  const spy = recordingTransports(EventSource);
  const { final } = await follow({
    baseUrl: HUB_URL, type: 'character', jobId, token: token(user), auth: 'query', fetch: spy.fetch, EventSource: spy.EventSource,
  });
  assert.equal(final.status, 'completed');
  assert.ok(spy.requests.some((r) => r.method === 'EventSource' && r.url.includes('access_token=')));
});

test('eventsource with tickets: when a reconnect is refused the old ticket, a fresh one is bought and nothing is missed', async () => {
  const user = uniqueUser('one-use');
  const proxy = await startOneUseTicketProxy();
  const jobId = await createExternalJob(user);
  const events = [];
  const states = [];
  let subscription;
  /** Resolves once `check()` holds, checking after each event and state change; fails with the subscription. */
  let wake = () => {};
  let failed = null;
  const until = (check) => within(20000, (resolve, reject) => {
    wake = () => (failed ? reject(failed) : check() && resolve());
    wake();
  });
  try {
    const done = new Promise((resolve, reject) => {
      subscription = subscribeJob(EXTERNAL_TYPE, jobId, {
        ...common,
        baseUrl: proxy.url,
        token: token(user),
        transport: 'eventsource',
        auth: 'ticket',
        onEvent: (event, id) => (events.push({ event, id }), wake()),
        onState: (change) => (states.push(change.state), wake()),
        onComplete: resolve,
        onError: (error) => {
          failed = error;
          wake();
          reject(error);
        },
      });
    });
    done.catch(() => {}); // reported through `until`
    await until(() => events.some((e) => e.event.type === 'initial_status'));
    await publish(jobId, { status: 'active', progress: 10, step: 'one' });
    await until(() => events.some((e) => e.event.progress === 10));
    proxy.cut();
    await until(() => states.at(-1) === 'reconnecting');
    await publish(jobId, { status: 'active', progress: 50, step: 'while away' });
    await until(() => events.some((e) => e.event.progress === 50));
    await publish(jobId, { status: 'completed', progress: 100, result: { ok: true } });
    assert.equal((await within(20000, (resolve, reject) => done.then(resolve, reject))).status, 'completed');
    assert.ok(proxy.tickets.size >= 2, 'a fresh ticket for the new connection');
    const delivered = checkJobEvents(events);
    const all = await historyIds(user, EXTERNAL_TYPE, jobId);
    assert.deepEqual(delivered, all, 'no gap and no duplicate');
  } finally {
    subscription?.close();
    await proxy.close();
  }
});

for (const transport of ['eventsource', 'fetch']) {
  test(`${transport}: at token expiry the stream says so, and the client resumes with a fresh token`, async () => {
    // A job no worker runs, so the stream stays open past the token's life.
    const { IDLE_JOB_ID: jobId, IDLE_JOB_USER: user } = process.env;
    const seen = [];
    let refreshes = 0;
    let subscription;
    await within(20000, (resolve, reject) => {
      let opens = 0;
      subscription = subscribeJob({
        ...common,
        baseUrl: HUB_URL,
        type: 'character',
        jobId,
        transport,
        token: token(user, 2),
        getToken: () => {
          refreshes += 1;
          return token(user, 600);
        },
        onEvent: (event) => seen.push(event.type),
        onError: reject,
        onState: ({ state }) => state === 'open' && ++opens === 2 && resolve(),
      });
    });
    subscription.close();
    assert.ok(seen.includes('token_expired'));
    assert.equal(refreshes, 1);
  });
}
