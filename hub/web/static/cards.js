// Job cards: one per job, newest first, each with its progress bar, its step,
// its end, and its result drawn by the job type's view hints:
//   image: "url"       result.url is a file of the job, shown as an image
//   summary: "text"    result.text is shown as a paragraph
//   otherwise          a compact key/value view of the result.

import { isTerminal } from './hub-client.js';
import { el, humanize, showMessage } from './dom.js';

const STATUS_TEXT = { queued: 'queued', active: 'running', retrying: 'retrying', completed: 'done', failed: 'failed' };
// What a card keeps of a job's events (events carry only what changed).
const FIELDS = ['jobType', 'status', 'progress', 'step', 'attempt', 'result', 'failedReason', 'createdAt', 'title'];
// A result shows this many fields at most, each value this long at most.
const MAX_FIELDS = 12;
const MAX_VALUE_CHARS = 160;

/** The cards in `container`. `viewOf(type)` gives a type's { title, view };
 *  `loadImage(url)` resolves with a URL an <img> may show (a blob: URL). */
export function jobCards(container, { viewOf, loadImage, onCountChange }) {
  const cards = new Map(); // jobId -> { state, parts, objectUrls }
  // While the hub is out of reach, an unfinished job may have moved on
  // unseen: its card says its state is unknown rather than show it as live.
  let stale = false;

  function update(jobId, change) {
    let card = cards.get(jobId);
    if (!card) {
      card = { state: {}, parts: createCard(jobId), objectUrls: [] };
      cards.set(jobId, card);
    }
    const wasPlaced = card.parts.root.isConnected;
    // A card drawn before its creation time was known goes where that time says.
    const placedBlind = wasPlaced && !card.state.createdAt && change.createdAt;
    for (const field of FIELDS) if (change[field] !== undefined && change[field] !== '') card.state[field] = change[field];
    if (!wasPlaced || placedBlind) place(card);
    render(card);
    if (!wasPlaced) onCountChange?.(cards.size);
  }

  /** Newest first, by creation time; a card whose time is unknown is the newest. */
  function place(card) {
    const created = card.state.createdAt || '';
    let before = null;
    if (created) {
      for (const other of cards.values()) {
        if (other === card || !other.parts.root.isConnected) continue;
        const theirs = other.state.createdAt || '';
        if (theirs && theirs < created && (!before || theirs > before.state.createdAt)) before = other;
      }
      if (!before) return container.append(card.parts.root);
      return container.insertBefore(card.parts.root, before.parts.root);
    }
    container.prepend(card.parts.root);
  }

  function render(card) {
    const { state, parts } = card;
    const { title: kind, view } = viewOf(state.jobType);
    const progress = Math.max(0, Math.min(100, Number(state.progress) || 0));
    const statusText = STATUS_TEXT[state.status] || state.status || '';
    const unknown = stale && !isTerminal(state.status);
    parts.root.dataset.jobType = state.jobType || '';
    parts.root.dataset.status = state.status || '';
    if (unknown) parts.root.dataset.stale = 'true';
    else delete parts.root.dataset.stale;
    parts.kind.textContent = kind;
    parts.title.textContent = state.title || `Job ${parts.root.dataset.jobId.slice(0, 8)}`;
    parts.status.textContent = unknown ? 'unknown' : statusText;
    parts.status.title = unknown ? `last seen ${statusText}; the hub cannot be reached` : '';
    parts.bar.setAttribute('aria-valuenow', String(progress));
    parts.bar.setAttribute('aria-label', `${kind} job progress`);
    parts.fill.style.width = `${progress}%`;
    parts.percent.textContent = `${progress}%`;
    parts.step.textContent = unknown ? `last seen ${statusText}: ${stepText(state)}` : stepText(state);
    const showReason = (state.status === 'failed' || state.status === 'retrying') && state.failedReason;
    showMessage(parts.error, showReason ? state.failedReason : '');
    // A result is drawn once: redrawing an image would fetch it again.
    if (state.status === 'completed' && state.result && parts.result.hidden) {
      parts.result.replaceChildren(...resultView(card, view));
      parts.result.hidden = false;
    }
  }

  function resultView(card, view) {
    const result = card.state.result;
    if (typeof result !== 'object' || Array.isArray(result)) return [keyValues({ result })];
    const shown = [];
    const rest = { ...result };
    if (view.image && typeof result[view.image] === 'string') {
      shown.push(imageView(card, result[view.image]));
      delete rest[view.image];
    }
    if (view.summary && result[view.summary] != null) {
      shown.push(el('p', 'job-summary', clip(String(result[view.summary]), 4000)));
      delete rest[view.summary];
    }
    if (!shown.length) return [keyValues(result)];
    if (Object.keys(rest).length) {
      const details = el('details', 'job-details');
      details.append(el('summary', '', 'Details'), keyValues(rest));
      shown.push(details);
    }
    return shown;
  }

  function imageView(card, url) {
    const figure = el('figure', 'job-figure');
    const img = el('img', 'job-image');
    img.alt = `${viewOf(card.state.jobType).title} result`;
    const caption = el('figcaption', 'hint', 'loading…');
    figure.append(img, caption);
    // <img src> cannot carry an Authorization header, and a token in an image
    // URL would end up in history and logs: fetch it, then show the bytes.
    loadImage(url).then(
      (objectUrl) => {
        if (!cards.has(card.parts.root.dataset.jobId)) return URL.revokeObjectURL(objectUrl);
        card.objectUrls.push(objectUrl);
        img.src = objectUrl;
        caption.hidden = true;
      },
      (error) => {
        caption.textContent = error.status === 404 ? 'The image has expired.' : `The image could not be loaded: ${error.message}`;
      },
    );
    return figure;
  }

  /** Brings a card into view, and marks it for a moment: on a phone a new
   *  job's card appears below the forms, out of sight. */
  function reveal(jobId) {
    const root = cards.get(jobId)?.parts.root;
    if (!root) return;
    const still = window.matchMedia?.('(prefers-reduced-motion: reduce)').matches;
    root.scrollIntoView({ block: 'nearest', behavior: still ? 'auto' : 'smooth' });
    root.classList.remove('job-new');
    void root.offsetWidth; // restarts the highlight when the same card is revealed again
    root.classList.add('job-new');
  }

  /** Draws every card again, its result too: the types' view hints came after the cards. */
  function redraw() {
    for (const card of cards.values()) {
      card.objectUrls.forEach((url) => URL.revokeObjectURL(url));
      card.objectUrls = [];
      card.parts.result.hidden = true;
      render(card);
    }
  }

  /** Marks the unfinished jobs' state as unknown (true) or live again (false). */
  function setStale(value) {
    if (stale === value) return;
    stale = value;
    for (const card of cards.values()) render(card);
  }

  function clear() {
    for (const card of cards.values()) card.objectUrls.forEach((url) => URL.revokeObjectURL(url));
    cards.clear();
    container.replaceChildren();
    onCountChange?.(0);
  }

  return {
    update,
    reveal,
    setStale,
    redraw,
    clear,
    has: (jobId) => cards.has(jobId),
    /** The jobs whose card does not show an end yet. */
    unfinished: () => [...cards].filter(([, card]) => !isTerminal(card.state.status)).map(([jobId]) => jobId),
  };
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

/** A compact view of an object's fields: name, then the value in one line. */
function keyValues(object) {
  const list = el('dl', 'kv');
  const entries = Object.entries(object);
  for (const [name, value] of entries.slice(0, MAX_FIELDS)) {
    const pair = el('div');
    pair.append(el('dt', '', humanize(name)), el('dd', '', clip(oneLine(value), MAX_VALUE_CHARS)));
    list.append(pair);
  }
  if (entries.length > MAX_FIELDS) list.append(el('p', 'hint', `and ${entries.length - MAX_FIELDS} more`));
  return list;
}

function oneLine(value) {
  if (value == null) return '—';
  if (Array.isArray(value) && value.every((v) => v == null || typeof v !== 'object')) return value.join(', ');
  if (typeof value === 'object' && Object.values(value).every((v) => v == null || typeof v !== 'object')) {
    // Sorted: the hub does not keep an object's order, and cards should be comparable.
    return Object.entries(value)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ');
  }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function clip(text, limit) {
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}
