// Subscriptions of one page over one shared connection, against a real hub:
// one stream for many jobs, each job's events once and in order, a finished
// job ends at once, an unknown one is an error, and the stream closes with
// the last subscription. (Across tabs: tests/test_browser_shared.py.)
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { subscribeJob, subscribeMyJobs } from '../hub-client.js';
import { HUB_URL, createExternalJob, publish, token, uniqueUser, within } from './helpers.mjs';

/** A fetch that counts the streams it opens and closes. */
function countingFetch() {
  const streams = { opened: 0, open: 0 };
  const fetchImpl = async (url, init = {}) => {
    const stream = String(url).includes('/api/v1/sse/');
    if (stream) {
      streams.opened += 1;
      streams.open += 1;
      init.signal?.addEventListener('abort', () => (streams.open -= 1));
    }
    return fetch(url, init);
  };
  return { streams, fetchImpl };
}

function follow(jobId, options) {
  const seen = { events: [], ended: 0, errors: [] };
  seen.done = within(30000, (resolve) => {
    seen.subscription = subscribeJob(process.env.EXTERNAL_JOB_TYPE, jobId, {
      ...options,
      onEvent: (event, id) => seen.events.push({ ...event, id }),
      onComplete: () => {
        seen.ended += 1;
        resolve();
      },
      onError: (error) => {
        seen.errors.push(error);
        resolve();
      },
    });
  });
  return seen;
}

test('ten jobs of a page share one stream, and each gets its own events once, in order', async () => {
  const user = uniqueUser('shared');
  const { streams, fetchImpl } = countingFetch();
  const options = { baseUrl: HUB_URL, token: token(user), share: true, fetch: fetchImpl, transport: 'fetch' };
  const jobs = await Promise.all(Array.from({ length: 10 }, () => createExternalJob(user)));
  const followed = jobs.map((jobId) => follow(jobId, options));
  await within(10000, (resolve) => {
    const check = () => (followed.every((f) => f.events.length > 0) ? resolve() : setTimeout(check, 20));
    check();
  });
  for (const step of [25, 50, 75]) for (const jobId of jobs) await publish(jobId, { status: 'active', progress: step });
  for (const jobId of jobs) await publish(jobId, { status: 'completed', result: { ok: true } });
  await Promise.all(followed.map((f) => f.done));
  for (const f of followed) {
    assert.deepEqual(f.errors, []);
    assert.equal(f.ended, 1);
    assert.deepEqual(
      f.events.map((e) => [e.type, e.status, e.status === 'active' ? e.progress : null]),
      [
        ['initial_status', 'queued', null],
        ['job_update', 'active', 25],
        ['job_update', 'active', 50],
        ['job_update', 'active', 75],
        ['job_update', 'completed', null],
      ],
    );
  }
  assert.equal(streams.opened, 1, 'one stream for the ten jobs');
  await within(5000, (resolve) => {
    const check = () => (streams.open === 0 ? resolve() : setTimeout(check, 20));
    check();
  });
});

test('a job that has ended ends its subscription at once; an unknown job is an error', async () => {
  const user = uniqueUser('shared-ended');
  const options = { baseUrl: HUB_URL, token: token(user), share: true, transport: 'fetch' };
  const jobId = await createExternalJob(user);
  await publish(jobId, { status: 'failed', failedReason: 'no paper' });
  const ended = follow(jobId, options);
  await ended.done;
  assert.equal(ended.ended, 1);
  assert.equal(ended.events.at(-1).status, 'failed');

  const unknown = follow('e4' + '0'.repeat(30), options);
  await unknown.done;
  assert.equal(unknown.errors[0]?.status, 404);
  assert.equal(unknown.ended, 0);
});

test('subscribeMyJobs shares the stream: the open jobs first, then every update', async () => {
  const user = uniqueUser('shared-my');
  const options = { baseUrl: HUB_URL, token: token(user), share: true, transport: 'fetch' };
  const open = await createExternalJob(user);
  await publish(open, { status: 'active', progress: 10 });
  const events = [];
  let subscription;
  await within(10000, (resolve) => {
    subscription = subscribeMyJobs({
      ...options,
      onEvent: (event, id) => {
        events.push({ ...event, id });
        if (event.type === 'initial_status') resolve();
      },
    });
  });
  const later = await createExternalJob(user);
  await publish(later, { status: 'completed', result: {} });
  await within(10000, (resolve) => {
    const check = () => (events.some((e) => e.jobId === later && e.status === 'completed') ? resolve() : setTimeout(check, 20));
    check();
  });
  subscription.close();
  const first = events.find((e) => e.type === 'initial_status');
  assert.equal(first.jobId, open);
  assert.equal(first.progress, 10);
  const ids = events.filter((e) => e.id && e.type === 'job_update').map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, 'no event twice');
});

test('the shared stream outlives its token: at expiry it asks getToken for a fresh one and goes on', async () => {
  const user = uniqueUser('shared-refresh');
  let asked = 0;
  const getToken = async () => {
    asked += 1;
    return token(user, 2); // expires while the job runs
  };
  const jobId = await createExternalJob(user);
  const followed = follow(jobId, { baseUrl: HUB_URL, getToken, share: true, transport: 'fetch' });
  await within(10000, (resolve) => {
    const check = () => (followed.events.length > 0 ? resolve() : setTimeout(check, 20));
    check();
  });
  // The hub ends the stream when the token expires; the client comes back with a new one.
  await within(15000, (resolve) => {
    const check = () => (asked >= 2 ? resolve() : setTimeout(check, 50));
    check();
  });
  await publish(jobId, { status: 'active', progress: 40 });
  await publish(jobId, { status: 'completed', result: {} });
  await followed.done;
  assert.deepEqual(followed.errors, []);
  assert.deepEqual(
    followed.events.filter((e) => e.jobId === jobId).map((e) => [e.type, e.status]),
    [
      ['initial_status', 'queued'],
      ['job_update', 'active'],
      ['job_update', 'completed'],
    ],
  );
});
