// The browser-side JavaScript client (clients/js/hub-client.js), run in Node
// with `auth: 'ticket'` and the `eventsource` package standing in for the
// browser's EventSource, following one job as its owner. Prints one JSON
// line per stream request (its path, and which ticket it carried), per
// event and per connection state, then the job's end.
//
// Environment: HUB_URL, HUB_TOKEN, JOB_TYPE, JOB_ID
import { subscribeJob } from '../../clients/js/hub-client.js';

const { HUB_URL, HUB_TOKEN, JOB_TYPE, JOB_ID } = process.env;
const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const packageUrl = new URL('../../clients/js/node_modules/eventsource/dist/index.js', import.meta.url);
const { EventSource } = await import(packageUrl);
const tickets = [];

function noting(url, init) {
  const ticket = new URL(url).searchParams.get('ticket');
  if (ticket && !tickets.includes(ticket)) tickets.push(ticket);
  say({ request: new URL(url).pathname, ticket: tickets.indexOf(ticket) });
  return fetch(url, init);
}

subscribeJob(JOB_TYPE, JOB_ID, {
  baseUrl: HUB_URL,
  token: HUB_TOKEN,
  auth: 'ticket',
  EventSource: class extends EventSource {
    constructor(url, init) {
      super(url, { ...init, fetch: noting });
    }
  },
  onEvent: (event, id) => say({ event: event.type, progress: event.progress ?? null, id }),
  onState: ({ state }) => say({ state }),
  onComplete: (event) => {
    say({ final: event.status });
    setImmediate(() => process.exit(0));
  },
  onError: (error) => {
    say({ error: error.message, status: error.status ?? null });
    process.exit(1);
  },
});
