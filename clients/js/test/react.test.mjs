// The React hook rendered for real (react-dom under jsdom) against a real hub.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { JSDOM } from 'jsdom';

import { HUB_URL, createJob, token, uniqueUser, within } from './helpers.mjs';

const dom = new JSDOM('<!doctype html><div id="root"></div>', { url: HUB_URL });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
if (!('navigator' in globalThis)) globalThis.navigator = dom.window.navigator;
globalThis.IS_REACT_ACT_ENVIRONMENT = false;

// Watch the streams the hook opens, to see that unmounting closes them.
const open = new Set();
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init = {}) => {
  if (init.signal && String(url).includes('/sse/')) {
    open.add(init.signal);
    init.signal.addEventListener('abort', () => open.delete(init.signal));
  }
  return realFetch(url, init);
};

const React = (await import('react')).default;
const { createRoot } = await import('react-dom/client');
const { useJobSSE } = await import('../react.js');

function mount(props, renders) {
  function Job() {
    const state = useJobSSE(props);
    renders.push(state);
    return React.createElement('p', { id: 'job' }, `${state.status} ${state.jobStatus} ${state.progress}`);
  }
  const container = document.createElement('div');
  document.body.append(container);
  const root = createRoot(container);
  root.render(React.createElement(Job));
  return { root, container };
}

test('useJobSSE shows progress, then completion', async () => {
  const user = uniqueUser('react');
  const jobId = await createJob(user, 'character', { name: 'Hooked' });
  const renders = [];
  let completed = null;
  const { root, container } = mount(
    { baseUrl: HUB_URL, jobId, type: 'character', token: token(user), onComplete: (event) => (completed = event) },
    renders,
  );
  await within(20000, (resolve) => {
    const check = setInterval(() => completed && container.textContent.includes('completed 100') && (clearInterval(check), resolve()), 10);
  });
  const progress = renders.map((r) => r.progress);
  assert.ok(progress.some((p) => p > 0 && p < 100), `saw progress on the way: ${progress}`);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b), 'never went down');
  assert.equal(renders.at(-1).jobStatus, 'completed');
  assert.equal(renders.at(-1).job.result.name, 'Hooked');
  assert.equal(completed.status, 'completed');
  assert.equal(renders.at(-1).error, null);
  root.unmount();
});

test('useJobSSE closes its stream when the component unmounts', async () => {
  // A job no worker runs (the test runner made it): its stream stays open until unmount.
  const { IDLE_JOB_ID: jobId, IDLE_JOB_USER: user } = process.env;
  const renders = [];
  const { root } = mount({ baseUrl: HUB_URL, jobId, type: 'character', token: token(user), transport: 'fetch' }, renders);
  await within(10000, (resolve) => {
    const check = setInterval(() => renders.at(-1)?.status === 'open' && (clearInterval(check), resolve()), 10);
  });
  assert.equal(open.size, 1);
  root.unmount();
  assert.equal(open.size, 0, 'the stream was aborted on unmount');
});

test('useJobSSE reports a fatal error', async () => {
  const renders = [];
  const { root } = mount({ baseUrl: HUB_URL, jobId: 'no-such-job', type: 'media', token: token(uniqueUser('lost')) }, renders);
  await within(10000, (resolve) => {
    const check = setInterval(() => renders.at(-1)?.error && (clearInterval(check), resolve()), 10);
  });
  assert.equal(renders.at(-1).error.status, 404);
  root.unmount();
});
