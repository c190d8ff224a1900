// The browser-side JavaScript client (clients/js/hub-client.js), run in Node,
// following one job as its owner. Prints one JSON line per event delivered,
// per stream request made (with the Last-Event-ID it carried) and per
// connection state, then the job's end.
//
// Environment: HUB_URL, HUB_TOKEN, JOB_TYPE, JOB_ID, TRANSPORT
// ('fetch': a fetch stream with the token in a header; 'eventsource': the
// `eventsource` package standing in for the browser's EventSource).
import { subscribeJob } from '../../clients/js/hub-client.js';

const { HUB_URL, HUB_TOKEN, JOB_TYPE, JOB_ID, TRANSPORT } = process.env;
const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

/** A fetch that notes each stream request and the cursor it resumes from. */
function noting(fetchImpl) {
  return (url, init = {}) => {
    say({ request: String(url).replace(/access_token=[^&]+/, 'access_token=…'), lastEventId: new Headers(init.headers).get('Last-Event-ID') });
    return fetchImpl(url, init);
  };
}

const options = {
  baseUrl: HUB_URL,
  token: HUB_TOKEN,
  transport: TRANSPORT,
  onEvent: (event, id) => say({ event, id }),
  onState: ({ state, transport }) => say({ state, transport }),
  onComplete: (event) => {
    say({ final: event });
    // Let the subscription close first, then end.
    setImmediate(() => process.exit(0));
  },
  onError: (error) => {
    say({ error: error.message, status: error.status ?? null });
    process.exit(1);
  },
};
if (TRANSPORT === 'eventsource') {
  const packageUrl = new URL('../../clients/js/node_modules/eventsource/dist/index.js', import.meta.url);
  const { EventSource } = await import(packageUrl);
  options.EventSource = class extends EventSource {
    constructor(url, init) {
      super(url, { ...init, fetch: noting(globalThis.fetch) });
    }
  };
} else {
  options.auth = 'header';
  options.fetch = noting(globalThis.fetch);
}
subscribeJob(JOB_TYPE, JOB_ID, options);
