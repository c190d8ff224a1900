// The client's REST helpers against a real hub: it learns the job types from
// the hub, starts jobs of any of them, lists and reads them, fetches the files
// they make, and sends the token in a header, never in a URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  HttpError,
  JOB_TYPE_PATTERN,
  createJob,
  hubClient,
  isTerminal,
  jobTypes,
  listJobs,
  subscribeJob,
} from '../hub-client.js';
import { HUB_URL, checkJobEvents, token, uniqueUser, within } from './helpers.mjs';

/** The smallest input the type's schema takes: each required field, filled in. */
function sampleInput(schema) {
  const input = {};
  for (const name of schema.required || []) {
    const field = schema.properties[name];
    if (field.type === 'string') input[name] = field.enum ? field.enum[0] : `sample ${name}`;
    else if (field.type === 'integer') input[name] = field.minimum ?? 1;
    else if (field.type === 'boolean') input[name] = true;
  }
  return input;
}

/** Records every request: its URL and its Authorization header. */
function spyFetch() {
  const calls = [];
  const spy = (url, init = {}) => {
    calls.push({ url: String(url), authorization: init.headers?.Authorization ?? null });
    return fetch(url, init);
  };
  return { calls, fetch: spy };
}

function follow(type, jobId, options) {
  return within(30000, (resolve, reject) => {
    const events = [];
    subscribeJob(type, jobId, {
      transport: 'fetch',
      ...options,
      onEvent: (event, id) => events.push({ event, id }),
      onComplete: (event) => setImmediate(() => resolve({ events, final: event })),
      onError: reject,
    });
  });
}

test('jobTypes: the hub describes the types it runs', async () => {
  const types = await jobTypes({ baseUrl: HUB_URL, token: token(uniqueUser('types')) });
  assert.ok(types.length >= 1);
  for (const type of types) {
    assert.match(type.type, JOB_TYPE_PATTERN);
    assert.ok(['actor', 'external'].includes(type.runner));
    assert.equal(type.input.type, 'object');
    assert.equal(typeof type.view, 'object');
  }
  assert.ok(types.some((t) => t.runner === 'actor'), 'the hub runs at least one type itself');
});

test('every type the hub runs: create, follow with subscribeJob(type, jobId), read, list; the token in headers only', async () => {
  const user = uniqueUser('any-type');
  const spy = spyFetch();
  const hub = hubClient({ baseUrl: HUB_URL, token: token(user), fetch: spy.fetch });
  const runnable = (await hub.jobTypes()).filter((t) => t.runner === 'actor');
  const started = [];
  for (const type of runnable) {
    const answer = await hub.createJob(type.type, sampleInput(type.input));
    assert.equal(answer.type, type.type);
    assert.equal(answer.status, 'queued');
    const { events, final } = await follow(type.type, answer.jobId, { baseUrl: HUB_URL, token: token(user), auth: 'header' });
    checkJobEvents(events);
    assert.equal(final.status, 'completed', `${type.type}: ${final.failedReason}`);
    const job = await hub.getJob(answer.jobId);
    assert.equal(job.status, 'completed');
    assert.deepEqual(job.result, final.result);
    started.push(answer.jobId);
  }
  const { jobs } = await hub.listJobs({ limit: 50 });
  assert.deepEqual(jobs.map((j) => j.jobId), [...started].reverse(), 'newest first');
  assert.ok(jobs.every((j) => isTerminal(j.status)), 'finished jobs are listed with their end');

  const secret = token(user).split('.')[2];
  assert.ok(spy.calls.length >= 2 + 2 * runnable.length);
  for (const call of spy.calls) {
    assert.ok(!call.url.includes(secret) && !call.url.includes('access_token'), call.url);
    assert.match(call.authorization, /^Bearer /);
  }
});

test('listJobs pages through the jobs, each once, newest first', async () => {
  const user = uniqueUser('pages');
  const options = { baseUrl: HUB_URL, token: token(user) };
  const type = (await jobTypes(options)).find((t) => t.runner === 'actor');
  const created = [];
  for (let i = 0; i < 3; i += 1) created.push((await createJob(type.type, sampleInput(type.input), options)).jobId);
  const seen = [];
  let before = null;
  do {
    const page = await listJobs({ limit: 2, before }, options);
    assert.ok(page.jobs.length <= 2);
    seen.push(...page.jobs.map((j) => j.jobId));
    before = page.next;
  } while (before);
  assert.deepEqual(seen, [...created].reverse());
});

test('fetchFile: a file a job made, with the token in a header', async () => {
  const user = uniqueUser('file');
  const spy = spyFetch();
  const hub = hubClient({ baseUrl: HUB_URL, token: token(user), fetch: spy.fetch });
  const withImage = (await hub.jobTypes()).filter((t) => t.runner === 'actor' && t.view.image);
  for (const type of withImage) {
    const { jobId } = await hub.createJob(type.type, sampleInput(type.input));
    const { final } = await follow(type.type, jobId, { baseUrl: HUB_URL, token: token(user) });
    const url = final.result[type.view.image];
    assert.ok(!url.includes('token'));
    const blob = await hub.fetchFile(url);
    assert.ok(blob.size > 0);
    assert.match(blob.type, /^image\//);
    const call = spy.calls.find((c) => c.url.endsWith(url));
    assert.match(call.authorization, /^Bearer /);
  }
  // Someone else cannot fetch it.
  const [type] = withImage;
  if (type) {
    const { jobId } = await hub.createJob(type.type, sampleInput(type.input));
    const { final } = await follow(type.type, jobId, { baseUrl: HUB_URL, token: token(user) });
    const refused = await hubClient({ baseUrl: HUB_URL, token: token(uniqueUser('other')) })
      .fetchFile(final.result[type.view.image])
      .catch((error) => error);
    assert.ok(refused instanceof HttpError);
    assert.equal(refused.status, 404);
  }
});

test('the token goes to the hub only, not to another host a result names', async () => {
  const spy = spyFetch();
  const http = await import('node:http');
  const other = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/plain' });
    response.end(request.headers.authorization ?? 'none');
  });
  await new Promise((resolve) => other.listen(0, '127.0.0.1', resolve));
  try {
    const blob = await hubClient({ baseUrl: HUB_URL, token: token(uniqueUser('leak')), fetch: spy.fetch }).fetchFile(
      `http://127.0.0.1:${other.address().port}/picture.png`,
    );
    assert.equal(await blob.text(), 'none');
  } finally {
    other.close();
  }
});

test('refusals are HttpErrors with the hub\'s JSON; a malformed type is refused before any request', async () => {
  const options = { baseUrl: HUB_URL, token: token(uniqueUser('refused')) };
  const unknown = await createJob('no-such-type', {}, options).catch((error) => error);
  assert.ok(unknown instanceof HttpError);
  assert.equal(unknown.status, 400);
  assert.equal(unknown.body.error, 'bad_request');

  const type = (await jobTypes(options)).find((t) => t.runner === 'actor');
  const badInput = await createJob(type.type, { 'not-a-field': 1 }, options).catch((error) => error);
  assert.equal(badInput.status, 400);
  assert.match(badInput.message, /not-a-field/);

  for (const bad of ['Bad', '', '9lives', 'a/b', 'x'.repeat(33), null]) {
    assert.throws(() => subscribeJob(bad, 'job', { baseUrl: HUB_URL }), TypeError);
    await assert.rejects(createJob(bad, {}, options), TypeError);
  }
});

test('on 401 the helpers ask getToken once for a fresh token', async () => {
  const user = uniqueUser('rest-refresh');
  let calls = 0;
  const hub = hubClient({
    baseUrl: HUB_URL,
    token: token(user, -3600),
    getToken: () => {
      calls += 1;
      return token(user);
    },
  });
  assert.deepEqual((await hub.listJobs()).jobs, []);
  assert.equal(calls, 1);
  // A token that stays bad: one refresh, then the 401.
  calls = 0;
  const refused = await hubClient({ baseUrl: HUB_URL, token: 'not-a-token', getToken: () => (calls += 1, 'still-not') })
    .listJobs()
    .catch((error) => error);
  assert.equal(refused.status, 401);
  assert.equal(calls, 1);
});
