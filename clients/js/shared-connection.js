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

const MY_STREAM = '/api/v1/sse/jobs/my';
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

/** A subscription of one job (`jobId`), or of all the user's jobs (`jobId`
 *  null), over the page's shared connection. */
export class SharedSubscription {
  constructor(options, job, tools) {
    this.options = options;
    this.job = job; // { type, jobId, pollPath } or null for every job
    this.tools = tools;
    this.lastId = null;
    this.closed = false;
    this.catchingUp = false;
    this.held = null; // live events that came while catching up
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
    this.options.onState?.({ state: 'closed', transport: this.connection?.state.transport ?? null });
  }

  fail(error) {
    if (this.closed) return;
    this.close();
    this.options.onError?.(error);
  }

  setState(state) {
    if (this.closed) return;
    this.options.onState?.({ ...state, shared: this.connection?.role ?? null });
  }

  /** Reads the job's state now (or the user's open jobs), then takes live
   *  events; the connection reads it, for every subscription that waits at once. */
  catchUp() {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.catchingUp = true;
    this.held = [];
    this.connection.readStateOf(this);
  }

  /** The state read for it: `events` (with their ids), then what was held. */
  caughtUp(events, cursor) {
    if (this.closed) return;
    this.failures = 0;
    const held = this.held || [];
    this.catchingUp = false;
    this.held = null;
    for (const { id, ...event } of events) if (this.deliver(event, id || null)) return;
    if (cursor && !this.job) this.advance(cursor);
    for (const [event, id] of held) if (this.deliver(event, id)) return;
    this.setState(this.connection.state);
  }

  retryCatchUp(error) {
    if (this.closed) return;
    const status = error?.status;
    if (status === 400 || status === 401 || status === 403 || status === 404) return this.fail(error);
    this.failures += 1;
    const delay = error?.retryAfterMs ?? backoff(this.failures);
    this.setState({ state: 'reconnecting', transport: this.connection.state.transport, error });
    this.timer = setTimeout(() => this.catchUp(), delay);
  }

  /** Reads this job's state by itself (the user's open jobs did not include it). */
  async readAlone() {
    if (this.closed) return;
    try {
      const { events } = await this.tools.readJson(this.job.pollPath, this.options);
      this.caughtUp(events, null);
    } catch (error) {
      this.retryCatchUp(error);
    }
  }

  /** An event of the user's stream; this subscription takes those of its job. */
  receive(event, id) {
    if (this.closed) return;
    if (this.job && event.jobId !== this.jobId) {
      // History no longer reaches back: the job may have ended in the lost
      // part, so read its state again.
      if (event.type === 'reset' && !event.jobId) this.catchUp();
      return;
    }
    if (this.catchingUp) {
      if (this.held.length >= MAX_HELD_EVENTS) return this.catchUp();
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
    o.onEvent?.(event, id);
    if (typeof event.progress === 'number' && event.jobId) o.onProgress?.(event.progress, event);
    if (stateful && this.tools.isTerminal(event.status)) {
      o.onComplete?.(event);
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

/** One stream of the user's events for this page, led by this tab or another. */
class SharedConnection {
  constructor(key, options, tools) {
    this.key = key;
    this.options = pick(options, STREAM_OPTIONS);
    this.tools = tools;
    this.members = new Set();
    this.lastId = null; // the newest id of the user's stream this tab has seen
    this.ready = false; // events after lastId all reach this tab
    this.state = { state: 'connecting', transport: null };
    this.closed = false;
    this.stream = null;
    this.failures = 0;
    this.timer = null;
    // Tabs share only what names its user: never a channel named by a token.
    const crossTab = !key.includes('|token:') && typeof BroadcastChannel === 'function' && globalThis.navigator?.locks;
    this.role = crossTab ? 'follower' : 'alone';
    if (crossTab) this.joinTabs();
    else this.lead();
  }

  add(member) {
    this.members.add(member);
    if (this.ready) member.catchUp();
  }

  remove(member) {
    this.members.delete(member);
    if (this.members.size === 0) this.close();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (connections.get(this.key) === this) connections.delete(this.key);
    this.stopStream();
    clearInterval(this.ticker);
    this.releaseLock?.();
    this.lockRequest?.abort();
    this.channel?.close();
    for (const [name, handler] of this.pageHandlers || []) globalThis.removeEventListener?.(name, handler);
    for (const [name, handler] of this.documentHandlers || []) globalThis.document?.removeEventListener(name, handler);
  }

  // -- leading: this tab holds the stream ------------------------------------

  async lead() {
    if (this.closed) return;
    if (this.role !== 'alone') this.role = 'leader';
    if (!this.lastId) {
      // Where the stream starts: the user's newest event now. Starting from a
      // cursor, not from a snapshot, is what lets a later leader resume.
      try {
        this.advance((await this.tools.readJson(MY_POLL, this.options)).cursor);
        if (isSnapshotPosition(this.lastId)) this.lastId = snapshotHead(this.lastId);
      } catch (error) {
        return this.retryLead(error);
      }
      if (this.closed || !this.leading) return;
    }
    this.failures = 0;
    this.stream = this.tools.openStream({
      ...this.options,
      lastEventId: this.lastId,
      onEvent: (event, id) => this.fromStream(event, id),
      onState: (state) => this.streamState(state),
      onError: (error) => this.fatal(error),
    });
    // A long-poll from a cursor answers only when something happens: the
    // read above has just shown the hub answering.
    if (this.stream.transport === 'longpoll') this.streamState({ state: 'open', transport: 'longpoll' });
    this.becomeReady();
    this.tell({ t: 'ready', state: this.state });
  }

  get leading() {
    return this.role === 'leader' || this.role === 'alone';
  }

  retryLead(error) {
    if (this.closed) return;
    const status = error?.status;
    if (status === 400 || status === 401 || status === 403) return this.fatal(error);
    this.failures += 1;
    this.streamState({ state: 'reconnecting', transport: this.state.transport, error });
    this.timer = setTimeout(() => this.lead(), error?.retryAfterMs ?? backoff(this.failures));
  }

  stopStream() {
    clearTimeout(this.timer);
    const stream = this.stream;
    this.stream = null;
    stream?.close();
  }

  fromStream(event, id) {
    this.advance(id);
    this.tell({ t: 'event', event, id });
    this.receive(event, id);
  }

  streamState({ state, transport, error }) {
    if (this.closed || state === 'closed') return; // closed by this page, or failed: see fatal()
    this.setState({ state, transport, error });
    this.tell({ t: 'state', state: { state, transport } });
  }

  fatal(error) {
    if (this.closed) return;
    this.tell({ t: 'fatal', error: { message: error?.message, status: error?.status, body: error?.body } });
    this.failAll(error);
  }

  // -- what every tab does ---------------------------------------------------

  /** Reads the state of `member`'s job, with every other member's that
   *  waits: one read of the user's open jobs serves them all; only a job it
   *  lacks (ended, or not the user's) is read by itself, a few at a time, as
   *  each read counts against the user's connections at the hub. */
  readStateOf(member) {
    this.waiting ||= new Set();
    this.waiting.add(member);
    if (this.waiting.size === 1) queueMicrotask(() => this.readWaiting());
  }

  async readWaiting() {
    const members = [...this.waiting].filter((member) => !member.closed);
    this.waiting.clear();
    if (!members.length || this.closed) return;
    let snapshot;
    try {
      snapshot = await readOpenJobs(this.tools, this.options);
    } catch (error) {
      for (const member of members) member.retryCatchUp(error);
      return;
    }
    const open = new Map(snapshot.events.filter((e) => e.type === 'initial_status').map((e) => [e.jobId, e]));
    const alone = [];
    for (const member of members) {
      if (!member.job) member.caughtUp(snapshot.events, snapshot.cursor);
      else if (open.has(member.jobId)) member.caughtUp([open.get(member.jobId)], null);
      else alone.push(member);
    }
    const next = async () => {
      for (let member = alone.shift(); member; member = alone.shift()) await member.readAlone();
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

  failAll(error) {
    const members = [...this.members];
    this.close();
    for (const member of members) member.fail(error);
  }

  advance(id) {
    if (!id) return;
    if (!this.lastId || this.tools.compareIds(id, this.lastId) > 0) this.lastId = id;
  }

  // -- across tabs -----------------------------------------------------------
  //
  // Everything the leader tells the others carries the newest id it has seen
  // (its head), and it beats every BEAT_MS. A tab whose own newest id is
  // behind the head has missed events (it was frozen, or a new leader took
  // over past them): it reads them from the user's history, in order, holding
  // what arrives meanwhile. A visible tab that hears no beat for SILENCE_MS
  // takes the lead over (the leader is frozen or hung); a hidden one waits,
  // as a hidden tab's timers run late.

  joinTabs() {
    this.lockName = `realtime-hub:${this.key}`;
    this.lastBeat = Date.now();
    this.held = null; // what the leader said while this tab reads what it missed
    this.channel = new BroadcastChannel(this.lockName);
    this.channel.onmessage = (message) => this.heard(message.data);
    this.requestLead();
    this.channel.postMessage({ t: 'hello' }); // the leader answers when it is ready
    this.ticker = setInterval(() => this.tick(), BEAT_MS);
    // A tab about to be frozen or put away hands the stream over first.
    const away = (event) => (event.type !== 'pagehide' || event.persisted) && this.stepDown();
    this.documentHandlers = [['freeze', away]];
    this.pageHandlers = [['pagehide', away]];
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
    this.requestLead();
  }

  tick() {
    if (this.closed) return;
    if (this.role === 'leader') {
      if (this.ready) this.tell({ t: 'beat' });
      return;
    }
    const visible = globalThis.document?.visibilityState !== 'hidden';
    if (visible && this.ready && Date.now() - this.lastBeat > SILENCE_MS) {
      this.lastBeat = Date.now(); // one attempt per silence
      this.steal();
    }
  }

  tell(message) {
    if (this.role === 'leader' && this.channel) this.channel.postMessage({ ...message, head: this.lastId });
  }

  heard(message) {
    if (this.closed || !message) return;
    if (message.t === 'hello') {
      if (this.role === 'leader' && this.ready) this.tell({ t: 'ready', state: this.state });
      return;
    }
    if (this.role !== 'follower') return;
    this.lastBeat = Date.now();
    if (message.t === 'fatal') {
      const { message: text, status, body } = message.error || {};
      return this.failAll(Object.assign(new Error(text || 'the shared stream failed'), { status, body }));
    }
    if (message.t === 'state') return this.setState(message.state);
    if (this.held) {
      // Too much to hold: what is let go is in history, behind a later head.
      if (this.held.length >= MAX_HELD_EVENTS) this.held.length = 0;
      this.held.push(message);
      return;
    }
    this.act(message);
  }

  act(message) {
    if (message.t === 'event') this.receive(message.event, message.id);
    if (message.t === 'ready') this.setState(message.state);
    const head = message.head;
    if (!head) return;
    if (!this.lastId) this.lastId = head; // just joined: the leader's stream goes on from there
    if (this.tools.compareIds(this.lastId, head) < 0) this.readMissed(head);
    else if (message.t === 'ready') this.becomeReady();
  }

  /** Reads the user's events from this tab's newest id up to `head`, in
   *  order; what the leader says meanwhile waits, then follows. */
  async readMissed(head) {
    this.held = [];
    try {
      while (!this.closed && this.tools.compareIds(this.lastId, head) < 0) {
        const path = `${MY_POLL}?cursor=${encodeURIComponent(this.lastId)}`;
        const page = await this.tools.readJson(path, this.options);
        if (this.closed) return;
        for (const { id, ...event } of page.events) this.receive(event, id || null);
        this.advance(page.cursor);
        if (!page.events.length) break;
      }
    } catch {
      // Not read: each subscription reads its state instead, below.
      this.lastId = head;
      for (const member of [...this.members]) if (this.ready) member.catchUp();
    }
    this.becomeReady();
    const held = this.held || [];
    this.held = null;
    for (const message of held) {
      if (this.closed) return;
      if (this.held) this.held.push(message); // another read began: behind it
      else this.act(message);
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

function backoff(failures) {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
