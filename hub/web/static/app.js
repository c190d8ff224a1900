// The hub's demo page: sign in, start jobs, watch every job of the user over
// one /my subscription (one connection, whatever the number of jobs: browsers
// allow only 6 per origin over HTTP/1.1).
//
// All text from the hub or the user goes in through textContent, never innerHTML.

import { subscribeMyJobs } from './hub-client.js';

const $ = (id) => document.getElementById(id);
const TRANSPORT_NAMES = { eventsource: 'SSE', fetch: 'fetch stream', longpoll: 'long-poll' };
const STATUS_TEXT = { queued: 'queued', active: 'running', retrying: 'retrying', completed: 'done', failed: 'failed' };
const TERMINAL = new Set(['completed', 'failed']);
// sessionStorage: a reload keeps the user signed in, a closed tab forgets the token.
const SESSION_KEY = 'hub-demo-session';

let session = null; // { token, user }
let subscription = null;
let generation = 0; // callbacks of a replaced subscription are ignored
let lastEventId = null; // shared by SSE and long-poll: a transport switch misses nothing
const jobs = new Map(); // jobId -> { state, el }

// -- helpers -------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = String(text);
  return node;
}

function showMessage(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

async function post(path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (session) headers.Authorization = `Bearer ${session.token}`;
  let response;
  try {
    response = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body) });
  } catch {
    throw Object.assign(new Error('The hub did not answer. Is it running?'), { status: 0 });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = (data && (data.message || data.error)) || `HTTP ${response.status}`;
    throw Object.assign(new Error(message), { status: response.status, body: data });
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

// -- session -------------------------------------------------------------------

function signIn(token, user) {
  session = { token, user };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  lastEventId = null;
  $('session-user').textContent = user;
  $('signin-form').hidden = true;
  $('token-form').hidden = true;
  $('session').hidden = false;
  $('new-jobs').hidden = false;
  $('jobs-section').hidden = false;
  showMessage($('signin-error'), '');
  subscribe();
}

function signOut(reason) {
  generation += 1;
  subscription?.close();
  subscription = null;
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  jobs.clear();
  $('jobs').replaceChildren();
  $('jobs-empty').hidden = false;
  $('session').hidden = true;
  $('new-jobs').hidden = true;
  $('jobs-section').hidden = true;
  $('signin-form').hidden = false;
  showMessage($('signin-error'), reason);
  $('connection-error').hidden = true;
  setConnection('closed', '');
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

// -- the subscription ------------------------------------------------------------

function setConnection(state, transport) {
  const node = $('connection');
  node.dataset.state = state;
  node.dataset.transport = transport || '';
  node.textContent = transport ? `${state} · ${TRANSPORT_NAMES[transport] || transport}` : state;
}

function subscribe() {
  // Close the old subscription first: it must not hold one of the user's connections.
  subscription?.close();
  const mine = ++generation;
  const current = () => mine === generation;
  $('connection-error').hidden = true;
  subscription = subscribeMyJobs({
    baseUrl: '',
    token: session.token,
    transport: $('transport').value,
    lastEventId,
    onEvent: (event, id) => current() && handleEvent(event, id),
    onState: ({ state, transport }) => current() && setConnection(state, transport),
    onError: (error) => {
      if (!current()) return;
      if (error.status === 401) return signOut('The hub refused the token. Sign in again.');
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
  if (event.type === 'reset') return recheckJobs();
  if ((event.type === 'job_update' || event.type === 'initial_status') && event.jobId) {
    updateJob(event.jobId, event);
  }
}

/** After a reset, the fresh initial_status events cover unfinished jobs only:
 *  ask the hub about the rest. Only a finished answer is applied, because a
 *  finished job cannot change again, so it cannot undo a newer event. */
async function recheckJobs() {
  const token = session.token;
  for (const [jobId, job] of jobs) {
    if (TERMINAL.has(job.state.status)) continue;
    const segment = job.state.jobType === 'media' ? 'media' : 'characters';
    try {
      const response = await fetch(`/api/v1/${segment}/jobs/${encodeURIComponent(jobId)}`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      if (!response.ok) continue;
      const { data } = await response.json();
      if (TERMINAL.has(data.status) && jobs.has(jobId)) updateJob(jobId, data);
    } catch {
      // The stream will report its own trouble; this is a best effort.
    }
  }
}

// -- job cards -------------------------------------------------------------------

const FIELDS = ['jobType', 'status', 'progress', 'step', 'attempt', 'result', 'failedReason'];

/** Merges an event (or a job's state) into the card; events carry only what changed. */
function updateJob(jobId, change) {
  let job = jobs.get(jobId);
  if (!job) {
    job = { state: {}, el: createCard(jobId) };
    jobs.set(jobId, job);
    $('jobs').prepend(job.el.root);
    $('jobs-empty').hidden = true;
  }
  for (const field of FIELDS) if (change[field] !== undefined) job.state[field] = change[field];
  if (change.title) job.state.title = change.title;
  renderCard(job);
}

function createCard(jobId) {
  const root = el('article', 'job');
  root.dataset.jobId = jobId;
  const head = el('header', 'job-head');
  const kind = el('span', 'job-kind');
  const title = el('h3', 'job-title');
  const status = el('span', 'job-status');
  head.append(kind, title, status);

  const bar = el('div', 'bar');
  bar.setAttribute('role', 'progressbar');
  bar.setAttribute('aria-valuemin', '0');
  bar.setAttribute('aria-valuemax', '100');
  const fill = el('div', 'bar-fill');
  bar.append(fill);

  const meta = el('p', 'job-meta');
  const step = el('span', 'job-step');
  const percent = el('span', 'job-percent');
  meta.append(step, percent);

  const error = el('p', 'job-error');
  error.hidden = true;
  const result = el('div', 'job-result');
  result.hidden = true;
  root.append(head, bar, meta, error, result);
  return { root, kind, title, status, bar, fill, step, percent, error, result };
}

function renderCard(job) {
  const { state, el: card } = job;
  const isImage = state.jobType === 'media';
  const progress = Math.max(0, Math.min(100, Number(state.progress) || 0));
  card.root.dataset.jobType = state.jobType || '';
  card.root.dataset.status = state.status || '';
  card.kind.textContent = isImage ? 'Image' : 'Character';
  card.title.textContent = state.result?.name || state.title || `Job ${card.root.dataset.jobId.slice(0, 8)}`;
  card.status.textContent = STATUS_TEXT[state.status] || state.status || '';
  card.bar.setAttribute('aria-valuenow', String(progress));
  card.bar.setAttribute('aria-label', `${card.kind.textContent} job progress`);
  card.fill.style.width = `${progress}%`;
  card.percent.textContent = `${progress}%`;
  card.step.textContent = stepText(state);

  const showReason = (state.status === 'failed' || state.status === 'retrying') && state.failedReason;
  showMessage(card.error, showReason ? state.failedReason : '');

  // A result is drawn once: redrawing an <img> would fetch it again.
  if (state.status === 'completed' && state.result && card.result.hidden) {
    card.result.replaceChildren(isImage ? imageResult(state.result) : characterResult(state.result));
    card.result.hidden = false;
  }
}

function stepText(state) {
  switch (state.status) {
    case 'queued':
      return 'waiting for a worker';
    case 'completed':
      return 'finished';
    case 'failed':
      return 'failed';
    case 'retrying':
      return `attempt ${state.attempt || 1} failed, retrying`;
    default:
      return state.step ? `step: ${state.step}` : 'starting';
  }
}

function characterResult(result) {
  const box = el('div', 'character');
  box.append(el('p', 'archetype', result.archetype));
  const traits = el('ul', 'traits');
  for (const trait of result.traits || []) traits.append(el('li', '', trait));
  const stats = el('dl', 'stats');
  // Sorted: the hub does not keep the stats' order, and cards should be comparable.
  for (const [name, value] of Object.entries(result.stats || {}).sort()) {
    const pair = el('div');
    pair.append(el('dt', '', name), el('dd', '', value));
    stats.append(pair);
  }
  box.append(traits, stats, el('p', 'backstory', result.backstory));
  return box;
}

function imageResult(result) {
  const figure = el('figure', 'image');
  const img = el('img', 'job-image');
  // <img> cannot send a header: the hub accepts the token as access_token.
  img.src = `${result.url}?access_token=${encodeURIComponent(session.token)}`;
  img.alt = 'Generated image';
  if (result.width && result.height) {
    img.width = result.width; // reserves the space before the image arrives
    img.height = result.height;
  }
  const caption = el('figcaption', '', `${result.width} × ${result.height} px · ${formatBytes(result.bytes)}`);
  img.addEventListener('error', () => {
    caption.textContent = 'The image could not be loaded (it may have expired).';
  });
  figure.append(img, caption);
  return figure;
}

function formatBytes(bytes) {
  if (!(bytes >= 0)) return '';
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} kB`;
}

// -- starting jobs -----------------------------------------------------------------

/** Wires a form that starts a job: the card appears from the 202 answer, events do the rest. */
function jobForm(formId, buttonId, errorId, path, read) {
  $(formId).addEventListener('submit', async (event) => {
    event.preventDefault();
    const { body, title } = read();
    const button = $(buttonId);
    button.disabled = true;
    showMessage($(errorId), '');
    try {
      const answer = await post(path, body);
      // An event may have beaten the answer here: then the card exists and is newer.
      if (jobs.has(answer.jobId)) updateJob(answer.jobId, { title });
      else updateJob(answer.jobId, { jobType: answer.type, status: answer.status, progress: 0, title });
    } catch (error) {
      if (error.status === 401) signOut('The hub refused the token. Sign in again.');
      else showMessage($(errorId), error.message);
    } finally {
      button.disabled = false;
    }
  });
}

/** A number field: left out when empty (the hub's default applies), else sent as typed. */
function numberField(id) {
  const input = $(id);
  // Text that is not a number reads as '': send null so that the hub says what is wrong.
  if (input.validity.badInput) return null;
  return input.value.trim() === '' ? undefined : Number(input.value);
}

jobForm('character-form', 'character-start', 'character-error', '/api/v1/characters', () => {
  const name = $('character-name').value;
  const description = $('character-description').value.trim();
  return { body: { name, ...(description ? { description } : {}) }, title: name.trim() };
});

jobForm('image-form', 'image-start', 'image-error', '/api/v1/media/images', () => {
  const prompt = $('image-prompt').value;
  const body = { prompt, width: numberField('image-width'), height: numberField('image-height') };
  return { body, title: prompt.trim() };
});

// -- start -------------------------------------------------------------------------

const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
if (saved && saved.token) signIn(saved.token, saved.user);
