// A client we did not write: the `eventsource` package (a WHATWG EventSource
// for Node) follows a job, and when the connection drops it resumes by itself
// with Last-Event-ID, losing nothing and repeating nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventSource } from 'eventsource';

import { createJob, historyIds, startProxy, token, uniqueUser, within } from './helpers.mjs';

test('the eventsource package follows a job and resumes with Last-Event-ID', async () => {
  const user = uniqueUser('interop');
  const proxy = await startProxy();
  try {
    const jobId = await createJob(user, 'media', { prompt: 'interop', width: 64, height: 64 });
    const url = `${proxy.url}/api/v1/sse/jobs/media/${jobId}?access_token=${token(user)}`;
    const received = [];
    let drops = 0;
    await within(30000, (resolve) => {
      const source = new EventSource(url);
      source.onmessage = (message) => {
        const event = JSON.parse(message.data);
        received.push({ id: message.lastEventId, event });
        if (event.type === 'job_update' && event.progress > 0 && drops === 0) {
          drops += 1;
          proxy.cut(); // a network failure: the package reconnects on its own
        }
        if (event.status === 'completed') {
          source.close();
          resolve();
        }
      };
    });
    assert.equal(drops, 1);
    const connects = received.filter((r) => r.event.type === 'connected').length;
    assert.equal(connects, 2, 'connected twice: before and after the drop');
    const ids = received.filter((r) => r.event.type !== 'connected').map((r) => r.id);
    const all = await historyIds(user, 'media', jobId);
    assert.deepEqual(ids, all.slice(all.indexOf(ids[0])), 'every event after the first, once, in order');
  } finally {
    await proxy.close();
  }
});
