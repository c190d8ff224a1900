// One connection per browser: every subscription of a page, and of every tab
// of the same user on the same hub, shares one stream. See "One connection
// per browser" in docs/CLIENTS.md.
//
// A page keeps one SharedConnection per hub and user. It follows the user's
// `/my` stream, which carries every event of every job of the user, and hands
// each event to the subscriptions that want it. Across tabs, a Web Lock elects
// the one tab that holds the stream (the leader), and the leader repeats each
// event on a BroadcastChannel to the others. Where either API is missing, the
// page keeps a connection of its own.
//
// Nothing is lost and nothing doubled, because every event carries its id:
// the stream resumes from the newest id its tab has seen (a new leader from
// what the old one repeated), and each subscription drops what it already has.
//
// This module knows no transport: hub-client.js passes it `tools`, the
// functions it needs ({ openStream, readJson, compareIds, isTerminal }).

const MY_POLL = '/api/v1/poll/jobs/my';
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30000;
// How often the leading tab says it is there, and how long a silence makes
// another tab take the lead over.
const BEAT_MS = 400;
const SILENCE_MS = 1200;
// Reads of single jobs' states at once (each counts against the user's
// connections at the hub, with the stream).
const PARALLEL_READS = 2;
// Attempts at reading what a tab missed before its subscriptions read their
// state instead.
const MISSED_ATTEMPTS = 5;
// Live events a subscription holds while it reads its job's state; beyond,
// it starts the read again rather than grow.
const MAX_HELD_EVENTS = 10000;
// What the shared stream takes from a subscription's options: the rest
// (callbacks, lastEventId) belongs to that subscription.
const STREAM_OPTIONS = [
  'baseUrl', 'token', 'getToken', 'auth', 'transport', 'EventSource', 'fetch',
  'bufferingTimeoutMs', 'pollTimeoutMs', 'timeoutMs',
];

/** This page's connections, by hub and user. */
const connections = new Map();

/** Whether a subscription with these options shares the connection. */
export function sharesConnection(options) {
  const share = options.share ?? 'auto';
  if (share === false || options.lastEventId) return false;
  if (share === 'auto') return typeof window !== 'undefined' && typeof document !== 'undefined';
  return true;
}

/** Calls an app's callback; what it throws is reported, and stops nothing
 *  else (another subscription, the stream, the other tabs). */
export function callSafely(callback, ...args) {
  if (typeof callback !== 'function') return;
  try {
    callback(...args);
  } catch (error) {
    setTimeout(() => {
      throw error;
    });
  }
}

/** A subscription of one job (`jobId`), or of all the user's jobs (`jobId`
 *  null), over the page's shared connection. */
export class SharedSubscription {
  constructor(options, job, tools) {
    this.options = options;
    this.job = job; // { type, jobId, pollPath } or null for every job
    this.tools = tools;
    this.lastId = null;
    this.closed = false;
    // Until it has its job's state, live events wait.
    this.catchingUp = true;
    this.held = [];
    this.reading = 0; // which read of its state it waits for
    this.failures = 0;
    this.timer = null;
    this.connection = null;
    this.attach();
  }

  get jobId() {
    return this.job ? String(this.job.jobId) : null;
  }

  async attach() {
    this.setState({ state: 'connecting' });
    let key;
    let options;
    try {
      ({ key, options } = await identify(this.options));
    } catch (error) {
      return this.fail(error);
    }
    if (this.closed) return;
    this.options = options;
    let connection = connections.get(key);
    if (!connection || connection.closed) {
      connection = new SharedConnection(key, options, this.tools);
      connections.set(key, connection);
    }
    this.connection = connection;
    connection.add(this);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.held = null;
    this.connection?.remove(this);
    callSafely(this.options.onState, { state: 'closed', transport: this.connection?.state.transport ?? null });
  }

  fail(error) {
    if (this.closed) return;
    this.close();
    callSafely(this.options.onError, error);
  }

  setState(state) {
    if (this.closed) return;
    callSafely(this.options.onState, { ...state, shared: this.connection?.role ?? null });
  }

  /** Reads the job's state now (or the user's open jobs), then takes live
   *  events; the connection reads it, for every subscription that waits at once. */
  catchUp() {
    if (this.closed) return;
    clearTimeout(this.timer);
    if (!this.catchingUp) {
      this.catchingUp = true;
      this.held = [];
    }
    this.reading += 1;
    this.connection.readStateOf(this, this.reading);
  }

  /** The state read for it (read number `reading`): `events` (with their
   *  ids), then what was held. */
  caughtUp(events, cursor, reading) {
    if (this.closed || reading !== this.reading) return; // a newer read is on its way
    this.failures = 0;
    const held = this.held || [];
    this.catchingUp = false;
    this.held = null;
    for (const { id, ...event } of events) if (this.deliver(event, id || null)) return;
    if (cursor && !this.job) this.advance(cursor);
    for (const [event, id] of held) if (this.deliver(event, id)) return;
    this.setState(this.connection.state);
  }

  /** After a failed read of its state: gives up, or reads again later. */
  readFailed(error, reading) {
    if (this.closed || reading !== this.reading) return;
    const status = error?.status;
    if (status === 400 || status === 401 || status === 403 || status === 404) return this.fail(error);
    this.failures += 1;
    this.setState({ state: 'reconnecting', transport: this.connection.state.transport, error });
    this.timer = setTimeout(() => this.catchUp(), retryDelay(error, this.failures));
  }

  /** Reads this job's state by itself (the user's open jobs did not include it). */
  async readAlone(reading) {
    if (this.closed || reading !== this.reading) return;
    try {
      const { events } = await this.tools.readJson(this.job.pollPath, this.options);
      this.caughtUp(events, null, reading);
    } catch (error) {
      this.readFailed(error, reading);
    }
  }

  /** An event of the user's stream; this subscription takes those of its job. */
  receive(event, id) {
    if (this.closed) return;
    if (event.type === 'reset' && !event.jobId) {
      // History no longer reaches back: a job may have ended in the lost
      // part, so a job's subscription reads its state again.
      if (this.job) return this.catchUp();
    } else if (this.job && event.jobId !== this.jobId) {
      return;
    }
    if (this.catchingUp) {
      if (this.held.length >= MAX_HELD_EVENTS) {
        // Too much to hold: read the state again, and say so on `/my`.
        this.held = this.job ? [] : [[LOST, null]];
        return this.catchUp();
      }
      this.held.push([event, id]);
      return;
    }
    this.deliver(event, id);
  }

  /** Delivers one event unless this subscription has had it; true when it is over. */
  deliver(event, id) {
    if (this.closed) return true;
    const stateful = event.type === 'job_update' || event.type === 'initial_status';
    if (id && stateful) {
      const order = this.lastId ? this.tools.compareIds(id, this.lastId) : 1;
      // `/my` snapshots share one id: several initial_status frames with it are all new.
      const snapshotPeer = order === 0 && event.type === 'initial_status' && !this.job;
      if (order < 0 || (order === 0 && !snapshotPeer)) return false;
      this.lastId = id;
    }
    const o = this.options;
    callSafely(o.onEvent, event, id);
    if (typeof event.progress === 'number' && event.jobId) callSafely(o.onProgress, event.progress, event);
    if (stateful && this.tools.isTerminal(event.status)) {
      callSafely(o.onComplete, event);
      if (this.job) {
        this.close();
        return true;
      }
    }
    return false;
  }

  advance(id) {
    if (!this.lastId || this.tools.compareIds(id, this.lastId) > 0) this.lastId = id;
  }
}

/** What a `/my` subscription is told when the client could not read what it missed. */
const LOST = Object.freeze({
  type: 'reset',
  message: 'events were missed and could not be read again; the open jobs follow',
});

/** One stream of the user's events for this page, led by this tab or another. */
class SharedConnection {
  constructor(key, options, tools) {
    this.key = key;
    this.options = pick(options, STREAM_OPTIONS);
    this.tools = tools;
    this.members = new Set();
    this.waiting = new Map(); // member -> the read it waits for
    this.lastId = null; // the newest id of the user's stream this tab has seen
    this.ready = false; // events after lastId all reach this tab
    this.state = { state: 'connecting', transport: null };
    this.closed = false;
    this.stream = null;
    this.failures = 0;
    this.timer = null;
    this.readTimer = null;
    // Tabs share only what names its user: never a channel named by a token,
    // and not a cookie's (the tabs may be signed in as different users).
    const named = key.includes('|user:');
    const crossTab = named && typeof BroadcastChannel === 'function' && globalThis.navigator?.locks;
    this.role = crossTab ? 'follower' : 'alone';
    if (crossTab) this.joinTabs();
    else this.lead();
  }

  add(member) {
    this.members.add(member);
    // The newest token a subscription brings is the one the stream uses next.
    const token = member.options.token;
    if (token && token !== this.options.token) {
      this.options.token = token;
      if (this.stream) this.stream.token = token;
    }
    if (this.ready) member.catchUp();
  }

  remove(member) {
    this.members.delete(member);
    this.waiting.delete(member);
    if (this.members.size === 0) this.close();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (connections.get(this.key) === this) connections.delete(this.key);
    this.stopStream();
    clearTimeout(this.readTimer);
    clearTimeout(this.missedTimer);
    clearInterval(this.ticker);
    this.releaseLock?.();
    this.lockRequest?.abort();
    this.channel?.close();
    for (const [name, handler] of this.pageHandlers || []) globalThis.removeEventListener?.(name, handler);
    for (const [name, handler] of this.documentHandlers || []) globalThis.document?.removeEventListener(name, handler);
  }

  // -- leading: this tab holds the stream ------------------------------------

  get leading() {
    return this.role === 'leader' || this.role === 'alone';
  }

  async lead() {
    if (this.closed || !this.leading) return;
    if (!this.lastId) {
      // Where the stream starts: the user's newest event now. Starting from a
      // cursor, not from a snapshot, is what lets a later leader resume.
      let cursor;
      try {
        cursor = (await this.tools.readJson(MY_POLL, this.options)).cursor;
      } catch (error) {
        return this.retryLead(error);
      }
      if (this.closed || !this.leading) return;
      this.advance(isSnapshotPosition(cursor) ? snapshotHead(cursor) : cursor);
    }
    this.failures = 0;
    this.stopStream(); // one stream, whichever lead() got here last
    this.stream = this.tools.openStream({
      ...this.options,
      lastEventId: this.lastId,
      onEvent: (event, id) => this.fromStream(event, id),
      onState: (state) => this.streamState(state),
      onError: (error) => this.streamFailed(error),
    });
    // A long-poll from a cursor answers only when something happens: the
    // read above has just shown the hub answering.
    if (this.stream.transport === 'longpoll') this.streamState({ state: 'open', transport: 'longpoll' });
    this.becomeReady();
    this.tell({ t: 'ready', state: this.state });
  }

  retryLead(error) {
    if (this.closed || !this.leading) return;
    const status = error?.status;
    if (status === 400 || status === 401 || status === 403) return this.streamFailed(error);
    this.failures += 1;
    this.streamState({ state: 'reconnecting', transport: this.state.transport, error });
    this.timer = setTimeout(() => this.lead(), retryDelay(error, this.failures));
  }

  stopStream() {
    clearTimeout(this.timer);
    const stream = this.stream;
    this.stream = null;
    stream?.close();
  }

  fromStream(event, id) {
    const before = this.lastId;
    this.advance(id);
    this.tell({ t: 'event', event, id, before });
    this.receive(event, id);
  }

  streamState({ state, transport, error }) {
    if (this.closed || state === 'closed') return; // closed by this page, or failed: see streamFailed()
    this.setState({ state, transport, error });
    this.tell({ t: 'state', state: { state, transport } });
  }

  /** The stream gave up (a refused token, after one refresh): this tab's
   *  subscriptions end with the error, and another tab, with credentials of
   *  its own, takes the lead. */
  streamFailed(error) {
    if (this.closed) return;
    const members = [...this.members];
    this.close();
    for (const member of members) member.fail(error);
  }

  // -- what every tab does ---------------------------------------------------

  /** Reads the state of `member`'s job, with every other member's that
   *  waits: one read of the user's open jobs serves them all; only a job it
   *  lacks (ended, not the user's, or of another type) is read by itself, a
   *  few at a time, as each read counts against the user's connections at
   *  the hub. */
  readStateOf(member, reading) {
    this.waiting.set(member, reading);
    if (this.waiting.size === 1 && !this.readTimer) queueMicrotask(() => this.readWaiting());
  }

  async readWaiting() {
    this.readTimer = null;
    const waiting = [...this.waiting].filter(([member]) => !member.closed);
    this.waiting.clear();
    if (!waiting.length || this.closed) return;
    let snapshot;
    try {
      snapshot = await readOpenJobs(this.tools, this.options);
    } catch (error) {
      const status = error?.status;
      if (status === 400 || status === 401 || status === 403) {
        for (const [member, reading] of waiting) member.readFailed(error, reading);
        return;
      }
      // All of them again, later, in one read.
      for (const [member, reading] of waiting) if (!this.waiting.has(member)) this.waiting.set(member, reading);
      this.failures += 1;
      this.setState({ state: 'reconnecting', transport: this.state.transport, error });
      this.readTimer = setTimeout(() => this.readWaiting(), retryDelay(error, this.failures));
      return;
    }
    const open = new Map();
    for (const event of snapshot.events) if (event.type === 'initial_status') open.set(event.jobId, event);
    const alone = [];
    for (const [member, reading] of waiting) {
      const state = member.job && open.get(member.jobId);
      if (!member.job) member.caughtUp(snapshot.events, snapshot.cursor, reading);
      else if (state && state.jobType === member.job.type) member.caughtUp([state], null, reading);
      else alone.push([member, reading]);
    }
    const next = async () => {
      for (let item = alone.shift(); item; item = alone.shift()) await item[0].readAlone(item[1]);
    };
    await Promise.all(Array.from({ length: PARALLEL_READS }, next));
  }

  receive(event, id) {
    if (id) this.advance(id);
    for (const member of [...this.members]) member.receive(event, id);
  }

  becomeReady() {
    if (this.ready) return;
    this.ready = true;
    for (const member of [...this.members]) member.catchUp();
  }

  setState(state) {
    this.state = { state: state.state, transport: state.transport ?? null };
    for (const member of [...this.members]) if (!member.catchingUp) member.setState(state);
  }

  advance(id) {
    if (!id) return;
    if (!this.lastId || this.tools.compareIds(id, this.lastId) > 0) this.lastId = id;
  }

  // -- across tabs -----------------------------------------------------------
  //
  // The leader says, with each event, the newest id it had before it, and,
  // with everything else, the newest id it has; it beats every BEAT_MS. A
  // tab behind what the leader says has missed events (it was frozen or
  // busy, or a new leader took over past them): it reads them from the
  // user's history, in order, holding what the leader says meanwhile. A
  // visible tab that hears no beat for SILENCE_MS takes the lead over (the
  // leader is frozen or hung); a hidden one waits, as a hidden tab's timers
  // run late.

  joinTabs() {
    this.lockName = `realtime-hub:${this.key}`;
    this.lastBeat = Date.now();
    this.heldMessages = null; // what the leader said while this tab reads what it missed
    this.epoch = 0; // the latest leader's
    this.missedFailures = 0;
    this.channel = new BroadcastChannel(this.lockName);
    this.channel.onmessage = (message) => this.heard(message.data);
    this.requestLead();
    this.channel.postMessage({ t: 'hello' }); // the leader answers when it is ready
    this.ticker = setInterval(() => this.tick(), BEAT_MS);
    // A tab about to be frozen or put away hands the stream over first, and
    // asks for it again when it is back.
    const away = (event) => {
      if (event.type === 'pagehide' && !event.persisted) return;
      this.stepDown();
      this.lockRequest?.abort();
      this.lockRequest = null;
    };
    const back = (event) => {
      if (event.type === 'pageshow' && !event.persisted) return;
      this.lastBeat = Date.now();
      if (!this.lockRequest && this.role === 'follower') this.requestLead();
    };
    this.documentHandlers = [
      ['freeze', away],
      ['resume', back],
    ];
    this.pageHandlers = [
      ['pagehide', away],
      ['pageshow', back],
    ];
    for (const [event, handler] of this.documentHandlers) globalThis.document?.addEventListener(event, handler);
    for (const [event, handler] of this.pageHandlers) globalThis.addEventListener?.(event, handler);
  }

  /** Waits for the lead behind any other tab that asked first. */
  requestLead() {
    const request = new AbortController();
    this.lockRequest = request;
    this.acquire({ signal: request.signal });
  }

  /** Takes the lead from a leader that no longer beats. */
  steal() {
    this.lockRequest?.abort();
    this.lockRequest = null;
    this.acquire({ steal: true });
  }

  acquire(how) {
    let held = false;
    globalThis.navigator.locks
      .request(this.lockName, how, () => {
        if (this.closed) return undefined;
        held = true;
        this.lockRequest = null;
        this.role = 'leader';
        // Later leaders have later epochs: a tab that led before, and runs
        // again, learns from them that it no longer does.
        this.epoch = Date.now() + Math.random();
        // Held until released: when this tab closes, the browser releases it.
        return new Promise((release) => {
          this.releaseLock = () => {
            this.releaseLock = null;
            release();
          };
          this.lead();
        });
      })
      .catch(() => {
        // Aborted while waiting (this page stopped waiting), or stolen while
        // held (this tab was frozen or hung, and another leads now).
        if (held && !this.closed && this.role === 'leader') this.stepDown(false);
      });
  }

  stepDown(release = true) {
    if (this.closed || this.role !== 'leader') return;
    this.role = 'follower';
    this.lastBeat = Date.now();
    this.stopStream();
    if (release) this.releaseLock?.();
    this.releaseLock = null;
    if (!this.lockRequest) this.requestLead();
  }

  tick() {
    if (this.closed) return;
    if (this.role === 'leader') {
      if (this.ready) this.tell({ t: 'beat' });
      return;
    }
    const visible = globalThis.document?.visibilityState !== 'hidden';
    if (visible && Date.now() - this.lastBeat > SILENCE_MS) {
      this.lastBeat = Date.now(); // one attempt per silence
      this.steal();
    }
  }

  tell(message) {
    if (this.role !== 'leader' || !this.channel) return;
    this.channel.postMessage({ head: this.lastId, epoch: this.epoch, ...message });
  }

  heard(message) {
    if (this.closed || !message) return;
    if (message.t === 'hello') {
      if (this.role === 'leader' && this.ready) this.tell({ t: 'ready', state: this.state });
      return;
    }
    // What a tab that led before says, late, is not news.
    if (message.epoch < this.epoch) return;
    this.epoch = message.epoch;
    // A later leader: this tab's lock was taken while it did not run.
    if (this.role === 'leader') this.stepDown(false);
    if (this.role !== 'follower') return;
    this.lastBeat = Date.now();
    if (message.t === 'state') return this.setState(message.state);
    if (this.heldMessages) {
      // Too much to hold: what is let go is in history, and the next
      // message says how far this tab is behind.
      if (this.heldMessages.length >= MAX_HELD_EVENTS) this.heldMessages.length = 0;
      this.heldMessages.push(message);
      return;
    }
    this.act(message);
  }

  act(message) {
    if (message.t === 'ready') this.setState(message.state);
    // How far this tab must be for the message to follow on: the id before
    // an event, the leader's newest id for anything else.
    const upTo = message.t === 'event' ? message.before : message.head;
    if (upTo && this.lastId && this.tools.compareIds(this.lastId, upTo) < 0) {
      this.heldMessages = [message];
      this.readMissed(upTo);
      return;
    }
    if (!this.lastId && message.head) this.lastId = message.head; // just joined: the stream goes on from there
    if (message.t === 'event') this.receive(message.event, message.id);
    this.becomeReady();
  }

  /** Reads the user's events from this tab's newest id up to `upTo`, in
   *  order, then what the leader said meanwhile. */
  async readMissed(upTo) {
    try {
      while (!this.closed && this.tools.compareIds(this.lastId, upTo) < 0) {
        const path = `${MY_POLL}?cursor=${encodeURIComponent(this.lastId)}`;
        const page = await this.tools.readJson(path, this.options);
        if (this.closed) return;
        for (const { id, ...event } of page.events) this.receive(event, id || null);
        this.advance(page.cursor);
        if (!page.events.length) break;
      }
      this.missedFailures = 0;
    } catch (error) {
      if (this.closed) return;
      this.missedFailures += 1;
      if (this.missedFailures < MISSED_ATTEMPTS) {
        this.missedTimer = setTimeout(() => this.readMissed(upTo), retryDelay(error, this.missedFailures));
        return;
      }
      // Not to be had: `/my` subscriptions are told, and every
      // subscription reads its state instead.
      this.missedFailures = 0;
      this.lastId = upTo;
      for (const member of [...this.members]) {
        if (!member.job) member.receive(LOST, null);
        if (this.ready) member.catchUp();
      }
    }
    if (this.closed) return;
    this.becomeReady();
    const held = this.heldMessages || [];
    this.heldMessages = null;
    for (let i = 0; i < held.length; i += 1) {
      if (this.closed) return;
      if (this.heldMessages) {
        this.heldMessages.push(...held.slice(i)); // another read began: they wait behind it
        return;
      }
      this.act(held[i]);
    }
  }
}

/** The connection key (hub and user) and the options to open it with. A token
 *  is read for its `sub` only; one that is no JWT shares within the page only. */
async function identify(options) {
  const here = globalThis.location?.href;
  const base = new URL(options.baseUrl || '/', here).href.replace(/\/+$/, '');
  if (options.auth === 'cookie') return { key: `${base}|cookie`, options };
  let token = options.token;
  if (!token && options.getToken) {
    token = await options.getToken();
    options = { ...options, token };
  }
  const user = subjectOf(token);
  return { key: user == null ? `${base}|token:${token}` : `${base}|user:${user}`, options };
}

function subjectOf(token) {
  try {
    const part = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''),
    );
    const sub = JSON.parse(json).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

/** The user's open jobs (initial_status events) and the cursor after them,
 *  in pages when there are more than one answer holds: a snapshot position
 *  has a third number, and the last page ends at the head. */
async function readOpenJobs(tools, options) {
  const events = [];
  let cursor = null;
  for (;;) {
    const path = cursor ? `${MY_POLL}?cursor=${encodeURIComponent(cursor)}` : MY_POLL;
    const page = await tools.readJson(path, options);
    events.push(...page.events);
    cursor = page.cursor;
    if (!isSnapshotPosition(cursor)) return { events, cursor };
  }
}

function isSnapshotPosition(cursor) {
  return typeof cursor === 'string' && cursor.split('-').length > 2;
}

function snapshotHead(cursor) {
  return cursor.split('-').slice(0, 2).join('-');
}

function pick(options, names) {
  const picked = {};
  for (const name of names) if (options[name] !== undefined) picked[name] = options[name];
  return picked;
}

/** How long to wait before trying again: what the hub asked for (with a
 *  little spread, so that tabs do not come back together), or a backoff. */
function retryDelay(error, failures) {
  if (error?.retryAfterMs != null) return error.retryAfterMs * (1 + Math.random() * 0.2);
  return backoff(failures);
}

function backoff(failures) {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
