// The JavaScript client (clients/js/hub-client.js), run in Node, following
// every job of its user over long-poll. Prints one JSON line per event
// delivered, and ends once WANTED events have come.
//
// Environment: HUB_URL, HUB_TOKEN, WANTED
import { subscribeMyJobs } from '../../clients/js/hub-client.js';

const { HUB_URL, HUB_TOKEN, WANTED } = process.env;
let delivered = 0;
const subscription = subscribeMyJobs({
  baseUrl: HUB_URL,
  token: HUB_TOKEN,
  auth: 'header',
  transport: 'longpoll',
  onEvent: (event, id) => {
    process.stdout.write(`${JSON.stringify({ event, id })}\n`);
    delivered += 1;
    // Closing leaves Node nothing to wait for: it exits once stdout is written.
    if (delivered === Number(WANTED)) subscription.close();
  },
  onError: (error) => {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  },
});
