// A worker of the app's own, in Node with nothing but `fetch`: it holds a
// service token, creates an `external` job for a user, and publishes the
// job's progress to the hub over HTTP.
//
// Environment: HUB_URL, HUB_SERVICE_TOKEN, JOB_TYPE, JOB_OWNER.
// It prints one JSON line per thing it did, and waits for a line on stdin
// before each publish, so that whoever runs it decides the pace.
import { createInterface } from 'node:readline';

const { HUB_URL, HUB_SERVICE_TOKEN, JOB_TYPE, JOB_OWNER } = process.env;
const REQUEST_TIMEOUT_MS = 10000;

/** What the job reports, in order: it starts, works in steps, and ends with its result. */
const PLAN = [
  { status: 'active', progress: 0, step: 'started' },
  { status: 'active', progress: 20, step: 'collecting' },
  { status: 'active', progress: 40, step: 'counting' },
  { status: 'active', progress: 60, step: 'writing' },
  { status: 'active', progress: 80, step: 'checking' },
  {
    status: 'completed',
    progress: 100,
    result: { title: 'Weekly report', pages: 3, sections: ['sales', 'support'], summary: 'All quiet.' },
  },
];

async function hub(method, path, body) {
  const response = await fetch(HUB_URL + path, {
    method,
    headers: { Authorization: `Bearer ${HUB_SERVICE_TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return { status: response.status, body: await response.json() };
}

const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const created = await hub('POST', '/api/v1/jobs', { type: JOB_TYPE, owner: JOB_OWNER, input: {} });
if (created.status !== 202) {
  say({ error: 'create', ...created });
  process.exit(1);
}
const { jobId } = created.body;
say({ jobId, links: created.body.links });

const go = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const events = `/api/v1/jobs/${encodeURIComponent(jobId)}/events`;
for (const update of PLAN) {
  if ((await go.next()).done) process.exit(1); // told to stop early
  const answer = await hub('POST', events, update);
  if (answer.status !== 200) {
    say({ error: 'publish', update, ...answer });
    process.exit(1);
  }
  say({ published: update, id: answer.body.id });
}
// The job is over: the hub takes nothing more for it.
const late = await hub('POST', events, { status: 'active', progress: 100 });
say({ afterEnd: late });
process.exit(0);
