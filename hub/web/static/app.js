// The hub's demo page: sign in, start jobs of any type the hub runs (the
// forms come from GET /api/v1/job-types), and watch every job of the user
// over one /my subscription (one connection, whatever the number of jobs:
// browsers allow only 6 per origin over HTTP/1.1). After a reload the page
// shows the user's jobs again from GET /api/v1/jobs: finished ones with their
// end, unfinished ones followed live.

import { hubClient, isTerminal } from './hub-client.js';
import { jobCards } from './cards.js';
import { $, el, humanize, showMessage } from './dom.js';
import { jobForm } from './forms.js';

const TRANSPORT_NAMES = { eventsource: 'SSE', fetch: 'fetch stream', longpoll: 'long-poll' };
// sessionStorage: a reload keeps the user signed in, a closed tab forgets the token.
const SESSION_KEY = 'hub-demo-session';
// The titles the user gave jobs (the hub keeps a job's input, not its title).
const TITLES_KEY = 'hub-demo-titles';
const MAX_TITLES = 200;
const PAGE_SIZE = 20;
const REFUSED = 'The hub refused the token. Sign in again.';
// A live connection down this long is news (a reconnect usually takes less).
const UNREACHABLE_AFTER_MS = 1500;

let session = null; // { token, user }
let hub = null; // the client, bound to the session's token
let subscription = null;
// Answers that arrive for an earlier session, or an earlier subscription, are ignored.
let sessionGeneration = 0;
let generation = 0;
let lastEventId = null; // shared by SSE and long-poll: a transport switch misses nothing
let nextPage = null; // the cursor of the user's older jobs, or null
let types = new Map(); // type name -> its description from the hub
let typesFailed = false; // asked again once the live connection is back
let outage = null; // the timer that shows the banner, while the connection is down
// Until the hub has listed the user's jobs, "no jobs yet" may be untrue.
let jobsListed = false;
let cardCount = 0;

const cards = jobCards($('jobs'), {
  viewOf,
  loadImage: async (url) => URL.createObjectURL(await hub.fetchFile(url)),
  onCountChange: (count) => {
    cardCount = count;
    showEmptiness();
  },
});

/** Without cards: "loading" until the list has answered, then "no jobs yet". */
function showEmptiness() {
  $('jobs-loading').hidden = jobsListed || cardCount > 0;
  $('jobs-empty').hidden = !jobsListed || cardCount > 0;
}

function viewOf(type) {
  const view = types.get(type)?.view || {};
  return { view, title: view.title || humanize(type || 'job') };
}

/** What the hub calls `type` in a job's state, the events call `jobType`. */
function fromJob(job) {
  const { type, ...state } = job;
  return { ...state, jobType: type, title: titles()[job.jobId] };
}

// -- session -------------------------------------------------------------------

async function post(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw new Error('The hub did not answer. Is it running?');
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw Object.assign(new Error((data && (data.message || data.error)) || `HTTP ${response.status}`), {
      status: response.status,
    });
  }
  return data;
}

/** The user a pasted token names, for display only (the hub does the verifying). */
function tokenSubject(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub || 'unknown user';
  } catch {
    return 'unknown user';
  }
}

function signIn(token, user) {
  session = { token, user };
  // No `auth`: the client's default puts the token in no URL (a one-minute
  // ticket for each SSE connection, the header for long-poll and REST calls).
  hub = hubClient({ baseUrl: '', token });
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  lastEventId = null;
  jobsListed = false;
  showEmptiness();
  $('session-user').textContent = user;
  $('signin-form').hidden = true;
  $('token-form').hidden = true;
  $('session').hidden = false;
  $('new-jobs').hidden = false;
  $('jobs-section').hidden = false;
  showMessage($('signin-error'), '');
  loadTypes(++sessionGeneration);
  subscribe();
}

function signOut(reason) {
  sessionGeneration += 1;
  generation += 1;
  subscription?.close();
  subscription = null;
  session = null;
  hub = null;
  jobsListed = false;
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(TITLES_KEY);
  cards.clear();
  types = new Map();
  nextPage = null;
  $('job-forms').replaceChildren();
  $('external-types').hidden = true;
  $('jobs-more').hidden = true;
  $('session').hidden = true;
  $('new-jobs').hidden = true;
  $('jobs-section').hidden = true;
  $('signin-form').hidden = false;
  showMessage($('signin-error'), reason);
  showMessage($('jobs-error'), '');
  $('connection-error').hidden = true;
  setConnection('closed', '');
  live(true);
}

/** A 401 ends the session; anything else is the caller's to show. */
function refusedToken(error) {
  if (error.status !== 401) return false;
  signOut(REFUSED);
  return true;
}

$('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const button = $('signin-button');
  button.disabled = true;
  try {
    const answer = await post('/api/v1/dev/token', { user: $('signin-user').value.trim() });
    signIn(answer.token, answer.user);
  } catch (error) {
    if (error.status === 404) {
      // Not `hub up`: there is no token endpoint, so ask for a token instead.
      $('signin-form').hidden = true;
      $('token-form').hidden = false;
      showMessage($('signin-error'), '');
    } else {
      showMessage($('signin-error'), error.message);
    }
  } finally {
    button.disabled = false;
  }
});

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return showMessage($('signin-error'), 'Paste a token first.');
  signIn(token, tokenSubject(token));
});

$('signout-button').addEventListener('click', () => signOut(''));

// -- job types and their forms ---------------------------------------------------

async function loadTypes(mine) {
  showMessage($('types-error'), '');
  typesFailed = false;
  let described;
  try {
    described = await hub.jobTypes();
  } catch (error) {
    if (mine !== sessionGeneration || refusedToken(error)) return;
    typesFailed = true;
    return showMessage($('types-error'), `Could not load the job types: ${error.message}`);
  }
  if (mine !== sessionGeneration) return;
  types = new Map(described.map((jobType) => [jobType.type, jobType]));
  // Cards drawn before the types were known get their titles and view hints now.
  cards.redraw();
  const forms = described.filter((t) => t.runner === 'actor').map((t) => jobForm(t, startJob));
  $('job-forms').replaceChildren(...forms);
  const external = described.filter((t) => t.runner === 'external');
  $('external-list').replaceChildren(
    ...external.map((t) => {
      const item = el('li', '', t.view?.title || humanize(t.type));
      item.dataset.jobType = t.type;
      if (t.view?.title) item.append(' ', el('code', '', t.type));
      return item;
    }),
  );
  $('external-types').hidden = external.length === 0;
  if (!forms.length && !external.length) showMessage($('types-error'), 'This hub runs no job types.');
}

/** Starts a job: its card appears from the 202 answer, events do the rest. */
async function startJob(type, input, title) {
  let answer;
  try {
    answer = await hub.createJob(type, input);
  } catch (error) {
    if (refusedToken(error)) return;
    throw error;
  }
  if (title) rememberTitle(answer.jobId, title);
  // An event may have beaten the answer here: then the card exists and is newer.
  if (cards.has(answer.jobId)) cards.update(answer.jobId, { title });
  else cards.update(answer.jobId, { jobType: answer.type, status: answer.status, progress: 0, title });
  cards.reveal(answer.jobId);
}

function titles() {
  try {
    return JSON.parse(sessionStorage.getItem(TITLES_KEY) || '{}') || {};
  } catch {
    return {};
  }
}

function rememberTitle(jobId, title) {
  const kept = Object.entries(titles()).slice(-(MAX_TITLES - 1));
  kept.push([jobId, title]);
  sessionStorage.setItem(TITLES_KEY, JSON.stringify(Object.fromEntries(kept)));
}

// -- the user's jobs: the list, then live -----------------------------------------

/** Adds a page of the user's jobs. A card the stream already drew is newer
 *  than the list, unless the list shows the job's end: an end cannot change. */
async function loadJobs(before, mine) {
  $('jobs-more').disabled = true;
  try {
    const page = await hub.listJobs({ limit: PAGE_SIZE, before });
    if (mine !== sessionGeneration) return;
    for (const job of page.jobs) {
      const state = fromJob(job);
      if (!cards.has(job.jobId) || isTerminal(job.status)) cards.update(job.jobId, state);
      else cards.update(job.jobId, { title: state.title });
    }
    // Only the first page sets where "older" starts; a refresh keeps a later one.
    if (before || nextPage === null) nextPage = page.next;
    $('jobs-more').hidden = !nextPage;
    showMessage($('jobs-error'), '');
    jobsListed = true;
    showEmptiness();
  } catch (error) {
    if (mine !== sessionGeneration || refusedToken(error)) return;
    $('jobs-loading').hidden = true; // the error says what became of the list
    showMessage($('jobs-error'), `Could not load your jobs: ${error.message}`);
  } finally {
    $('jobs-more').disabled = false;
  }
}

$('jobs-more').addEventListener('click', () => nextPage && loadJobs(nextPage, sessionGeneration));

function setConnection(state, transport) {
  const node = $('connection');
  node.dataset.state = state;
  node.dataset.transport = transport || '';
  node.textContent = transport ? `${state} · ${TRANSPORT_NAMES[transport] || transport}` : state;
}

/** Tells the user when the live connection is down (the hub is gone, or
 *  refuses for now), and marks the unfinished jobs' state as unknown until
 *  it is back: a card must not say "running" on news that may be old. */
function live(isLive, error) {
  clearTimeout(outage);
  outage = null;
  if (isLive) {
    $('hub-unreachable').hidden = true;
    cards.setStale(false);
    return;
  }
  outage = setTimeout(() => {
    $('hub-unreachable-text').textContent = error?.status
      ? `The hub is not answering for now (HTTP ${error.status}).`
      : 'The hub cannot be reached.';
    $('hub-unreachable').hidden = false;
    cards.setStale(true);
  }, UNREACHABLE_AFTER_MS);
}

function subscribe() {
  // Close the old subscription first: it must not hold one of the user's connections.
  subscription?.close();
  const mine = ++generation;
  const current = () => mine === generation;
  const ofSession = sessionGeneration;
  const fresh = lastEventId === null;
  let listed = false;
  $('connection-error').hidden = true;
  subscription = hub.subscribeMyJobs({
    transport: $('transport').value,
    lastEventId,
    onEvent: (event, id) => current() && handleEvent(event, id),
    onState: ({ state, transport, error }) => {
      if (!current()) return;
      setConnection(state, transport);
      if (state === 'open') live(true);
      if (state === 'open' && typesFailed) loadTypes(ofSession);
      else if (state === 'reconnecting' && !outage && $('hub-unreachable').hidden) live(false, error);
      // A fresh stream starts from a snapshot of unfinished jobs; once it is
      // open, the list (taken after that snapshot) fills in the rest, and
      // whatever changes later arrives on the stream.
      if (state === 'open' && fresh && !listed) {
        listed = true;
        loadJobs(null, ofSession);
        recheckJobs(ofSession);
      }
    },
    onError: (error) => {
      if (!current() || refusedToken(error)) return;
      // No live updates, but the jobs as they stand are still worth showing.
      if (fresh && !listed) {
        listed = true;
        loadJobs(null, ofSession);
      }
      // The alert says it now, with a way to reconnect; the cards stay marked.
      clearTimeout(outage);
      outage = null;
      $('hub-unreachable').hidden = true;
      $('connection-error-text').textContent = `Live updates stopped: ${error.message}.`;
      $('connection-error').hidden = false;
    },
  });
}

$('reconnect-button').addEventListener('click', () => {
  // The cursor may be what the hub refused: start over from a fresh snapshot.
  lastEventId = null;
  subscribe();
});

$('transport').addEventListener('change', () => {
  if (session) subscribe();
});

function handleEvent(event, id) {
  if (id) lastEventId = id;
  if (event.type === 'reset') return recheckJobs(sessionGeneration);
  if ((event.type === 'job_update' || event.type === 'initial_status') && event.jobId) {
    // A job first seen after a reload gets back the title the user gave it.
    cards.update(event.jobId, cards.has(event.jobId) ? event : { ...event, title: titles()[event.jobId] });
  }
}

/** After a reset or a fresh start, the new snapshot covers unfinished jobs
 *  only: ask the hub about the cards that may have ended meanwhile. Only an
 *  end is applied, because it cannot undo a newer event. */
async function recheckJobs(mine) {
  for (const jobId of cards.unfinished()) {
    try {
      const job = await hub.getJob(jobId);
      if (mine !== sessionGeneration) return;
      if (isTerminal(job.status)) cards.update(jobId, fromJob(job));
    } catch {
      // The stream reports its own trouble; this is a best effort.
    }
  }
}

// -- start -------------------------------------------------------------------------

const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
if (saved && saved.token) signIn(saved.token, saved.user);
