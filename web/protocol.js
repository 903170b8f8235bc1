// The signaling protocol, version 2 (docs/protocol.md), over a WebSocket,
// with reconnection. No DOM in here: this module only speaks to the server.

/** The protocol version this client speaks. */
export const VERSION = 3;

/** How often the client pings; a pong also brings a fresh resume token. */
const PING_EVERY_MS = 10_000;
/** A server that answers no ping for this long is taken for gone. */
const PONG_TIMEOUT_MS = 20_000;
/** Reconnection back-off: first delay, growth, ceiling (plus up to 30% jitter). */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5_000;
/** Chat messages waiting to be sent or confirmed, at most; more are refused
 *  (shown as not sent) rather than kept without bound. */
const OUTBOX_MAX = 50;
/** A chat message that found no connection for this long is given up. */
const OUTBOX_WAIT_MS = 120_000;
/** A chat message sent but not back from the server after this long, while
 *  connected, is given up (the server refused it, or it was rate-limited). */
const OUTBOX_ECHO_MS = 10_000;
/** The reason the server gives when it stops (a restart, usually). */
const SHUTDOWN_REASON = 'server shutting down';

/**
 * @typedef {{audio: boolean, video: boolean, screen: boolean}} MediaFlags
 * @typedef {'host' | 'guest'} Role
 * @typedef {{id: string, name: string, media: MediaFlags, polite?: boolean, role?: Role}} PeerInfo
 * @typedef {{urls: string[], username?: string, credential?: string}} IceServerInfo
 * @typedef {{from: string, name: string, text: string, ts: number, id?: string}} ChatMessage
 *   `id`: the sender's name for the message; the same id twice is one message
 * @typedef {{id: string, text: string, since: number, sentAt: number | null}} OutgoingChat
 *   a chat message of ours not yet back from the server: queued at `since`
 *   (or retried), sent at `sentAt` on the current connection, if it was
 * @typedef {'p2p' | 'sfu'} RoomMode how a room's media travels: browser to browser,
 *   or through the server's SFU
 * @typedef {{room: string, you: string, name: string, capacity: number, resumed: boolean,
 *            mode: RoomMode, peers: PeerInfo[], chat: ChatMessage[],
 *            ice_servers: IceServerInfo[], resume: string, role?: Role,
 *            grants?: {publish: boolean, screen: boolean, chat: boolean},
 *            settings?: {locked: boolean, lobby: boolean, password: boolean},
 *            lobby?: {peer: string, name: string}[]}} Joined
 * @typedef {'audio' | 'camera' | 'screen'} SfuSource what one m-line of an SFU
 *   session carries
 * @typedef {{mid: string, peer: string, source: SfuSource}} SfuTrack one track
 *   the server forwards to us, by the mid of its m-line
 * @typedef {{description: RTCSessionDescriptionInit, tracks?: SfuTrack[]}} SfuMessage
 *   an `sfu` message from the server: its answer, or an offer with the whole
 *   list of tracks it sends us
 * @typedef {{source: SfuSource, active: number[]}} SfuLayers which of our
 *   simulcast layers of `source` anybody receives (indexes, lowest first)
 * @typedef {{peer: string, height: number}} SfuTile how tall (CSS pixels) we
 *   show a peer's video; 0: not shown
 * @typedef {'bad-json' | 'bad-message' | 'hello-required' | 'unsupported-version'
 *   | 'bad-room' | 'bad-name' | 'room-full' | 'already-joined' | 'not-joined'
 *   | 'unknown-peer' | 'rate-limited' | 'bad-chat' | 'bad-resume' | 'bad-sdp'
 *   | 'sfu-unavailable' | 'sfu-failed' | 'cluster-unavailable' | 'not-host' | 'room-locked'
 *   | 'password-required' | 'bad-password' | 'too-many-attempts' | 'lobby-full' | 'denied' | 'barred'
 *   | 'token-required' | 'bad-token' | 'not-allowed' | 'held'} ServerErrorCode the server's stable codes
 * @typedef {ServerErrorCode | 'unreachable' | 'closed'} ErrorCode with the
 *   client's own two for transport failures
 */

/** An `error` message from the server, or a failure to reach it. */
export class ProtocolError extends Error {
  /**
   * @param {ErrorCode} code stable code, such as "room-full", or "unreachable"
   *   and "closed" for transport failures
   * @param {string} message words for people
   * @param {string} [request] the type of the message that caused it
   */
  constructor(code, message, request) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.request = request;
  }
}

/** A new chat message id: 16 random letters and digits. */
function newChatId() {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

/** The WebSocket URL on this page's own origin. */
export function signalingUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/**
 * Room names: 1-64 letters, digits, "-", "_" or ".", compared in lower case.
 * Mirrors `RoomId::parse` in crates/room.
 * @param {string} raw
 * @returns {string | null} the canonical name, or null if not valid
 */
export function canonicalRoom(raw) {
  const chars = Array.from(raw);
  if (chars.length < 1 || chars.length > 64) return null;
  if (!chars.every((c) => /^[\p{L}\p{N}._-]$/u.test(c))) return null;
  const folded = raw.toLowerCase();
  return Array.from(folded).length <= 64 ? folded : null;
}

/**
 * @typedef {object} RoomState the answer to `peek`
 * @property {number} peers how many are in the room
 * @property {number} capacity the most it holds
 * @property {string[] | null} names the first few of them (null: the
 *   server does not say)
 * @property {{locked: boolean, lobby: boolean, password: boolean} | null} settings
 *   what its hosts set (null: the server does not say)
 */

/**
 * Asks the server how full `room` is and who is in it, without joining it
 * (`peek`), on a
 * WebSocket of its own that is closed right after. Resolves null when the
 * server cannot say within `timeoutMs` (unreachable, or a server from
 * before `peek`): the caller then goes on as if it had not asked.
 * @param {string} url
 * @param {string} room
 * @param {number} timeoutMs
 * @returns {Promise<RoomState | null>}
 */
export function peekRoom(url, room, timeoutMs) {
  return new Promise((resolve) => {
    /** @type {Connection | null} */
    let conn = null;
    /** @param {RoomState | null} answer */
    const done = (answer) => {
      clearTimeout(timer);
      conn?.close();
      resolve(answer);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    try {
      conn = new Connection(url, (msg) => {
        if (msg?.type === 'room-state' && Number.isInteger(msg.peers) && Number.isInteger(msg.capacity)) {
          // `names` is newer than `room-state`: an older server leaves it out.
          const names = Array.isArray(msg.names) ? msg.names.filter((/** @type {unknown} */ n) => typeof n === 'string') : null;
          // So is `settings`.
          const s = msg.settings;
          const settings = s && typeof s === 'object'
            ? { locked: s.locked === true, lobby: s.lobby === true, password: s.password === true }
            : null;
          done({ peers: msg.peers, capacity: msg.capacity, names, settings });
        } else if (msg?.type === 'error') done(null);
      }, () => done(null));
      conn.ready.then(() => conn?.send({ type: 'peek', room }), () => done(null));
    } catch {
      done(null);
    }
  });
}

/**
 * One WebSocket: hello, then messages in and out. Resolves `ready` on
 * `welcome`; reports every other message and the close to its owner.
 */
class Connection {
  /**
   * @param {string} url
   * @param {(msg: any) => void} onMessage
   * @param {(ev: {code: number, reason: string, wasOpen: boolean}) => void} onClose
   */
  constructor(url, onMessage, onClose) {
    this.open = false;
    this.closed = false;
    this.ws = new WebSocket(url);
    this.lastHeard = Date.now();
    /** @type {Promise<void>} */
    this.ready = new Promise((resolve, reject) => {
      this.ws.onopen = () => {
        this.open = true;
        this.send({ type: 'hello', version: VERSION });
      };
      this.ws.onmessage = (ev) => {
        this.lastHeard = Date.now();
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return; // The server sends only JSON; anything else is dropped.
        }
        if (msg?.type === 'welcome') resolve();
        else if (msg?.type === 'error' && msg.request === 'hello') reject(new ProtocolError(msg.code, msg.message));
        else onMessage(msg);
      };
      this.ws.onclose = (ev) => {
        const wasOpen = this.open;
        this.closed = true;
        this.open = false;
        clearInterval(this.pinger);
        reject(new ProtocolError(wasOpen ? 'closed' : 'unreachable', ev.reason || 'connection closed'));
        onClose({ code: ev.code, reason: ev.reason, wasOpen });
      };
    });
    // Noticing a dead server: a ping every 10 s, and silence means gone.
    this.pinger = setInterval(() => {
      if (Date.now() - this.lastHeard > PONG_TIMEOUT_MS) this.ws.close(4001, 'no pong');
      else this.send({ type: 'ping' });
    }, PING_EVERY_MS);
  }

  /** @param {object} msg */
  send(msg) {
    if (this.open) this.ws.send(JSON.stringify(msg));
  }

  /** Closes without telling the owner. */
  close() {
    this.ws.onclose = null;
    this.closed = true;
    clearInterval(this.pinger);
    this.ws.close(1000, 'bye');
  }
}

/**
 * A stay in one room, across dropped connections and server restarts.
 *
 * `start()` connects and joins. If the connection then drops, the session
 * reconnects with back-off and joins again with its resume token, so the
 * others see the same peer come back.
 *
 * Chat messages go through an outbox: kept while reconnecting (at most
 * OUTBOX_MAX), sent once the session is back, each with an id so that one
 * sent twice (before a drop, and again after) is shown once by everyone,
 * and given up (`chat-failed`) if they cannot be sent.
 *
 * Events (CustomEvent, payload in `detail`):
 * - `peer-joined` {peer: PeerInfo, polite: boolean}
 * - `peer-left`   {peer: string, reason: string}
 * - `peer-media`  {peer: string, media: MediaFlags}
 * - `signal`      {from: string, data: any}
 * - `chat`        ChatMessage
 * - `chat-failed` {id: string} a message of ours could not be sent; `retryChat` tries again
 * - `room-mode`   {mode: RoomMode} the room switched (to `sfu`)
 * - `sfu`         SfuMessage from the server's SFU
 * - `sfu-layers`  SfuLayers: encode only these layers of ours (dynacast)
 * - `speaker`     {peer: string} the loudest person in the room changed
 * - `error`       ProtocolError not tied to a pending request
 * - `reconnecting` {attempt: number, delay: number, restart: boolean} (`restart`:
 *   the server said it was shutting down, so it is most likely restarting)
 * - `rejoined`    Joined (the same id if `resumed`, else a fresh one)
 * - `ended`       {reason: 'full' | 'replaced' | 'error' | 'removed' | 'ended', error?: ProtocolError,
 *   by?: string} (`removed`: a host took us out of the call; `ended`: a host
 *   ended it; `by`: which host)
 * - `waiting`     {room: string} we wait in the room's lobby; `start()` resolves
 *   once a host lets us in, or rejects with `denied`
 * - `knock`, `knock-gone`, `room-settings`, `peer-role`, `moderated`: as the
 *   server sends them (docs/protocol.md, "Hosts, the lobby and moderation")
 */
export class Session extends EventTarget {
  /** The latest resume token: private, so nothing outside (`window.webconf`
   *  shows the session) can read it. @type {string | null} */
  #resume = null;

  /**
   * @param {string} url
   * @param {{room: string, name: string, media: MediaFlags, create?: boolean,
   *          token?: string | null, password?: string | null, resume?: string | null,
   *          onResume?: (token: string | null) => void}} who `create`: the
   *   room is new, from the home page (we run it if nobody is there yet);
   *   `token`: a join token from an invitation link; `password`: the room's;
   *   `resume`: a resume token kept from before (a reloaded page); `onResume`:
   *   told each fresh resume token (null once it is refused)
   */
  constructor(url, { room, name, media, create = false, token = null, password = null, resume = null, onResume }) {
    super();
    this.#resume = resume;
    this.onResume = onResume;
    this.url = url;
    this.room = room;
    this.name = name;
    this.media = { ...media };
    this.create = create;
    this.token = token;
    this.password = password;
    /** @type {Connection | null} */
    this.conn = null;
    /** @type {string | null} */
    this.you = null;
    this.stopped = false;
    this.reconnecting = false;
    /** @type {{resolve: (j: Joined) => void, reject: (e: Error) => void} | null} */
    this.pendingJoin = null;
    /** @type {(() => void) | null} */
    this.pendingLeft = null;
    /** Whether we are in the room on the current connection. */
    this.inRoom = false;
    /** Whether the connection ended because the server was stopping. */
    this.restarting = false;
    /** Our chat messages on their way, by id, oldest first.
     *  @type {Map<string, OutgoingChat>} */
    this.outbox = new Map();
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.outboxTimer = undefined;
  }

  /**
   * Connects and joins.
   * @returns {Promise<Joined>} rejects with a ProtocolError (such as
   *   room-full, or unreachable)
   */
  async start() {
    return this.connectAndJoin();
  }

  /** @returns {Promise<Joined>} */
  async connectAndJoin() {
    const conn = new Connection(
      this.url,
      (msg) => this.onMessage(msg),
      (ev) => this.onClose(conn, ev),
    );
    this.conn = conn;
    await conn.ready;
    const joined = await new Promise((resolve, reject) => {
      this.pendingJoin = { resolve, reject };
      /** @type {Record<string, any>} */
      const join = { type: 'join', room: this.room, name: this.name, media: this.media, resume: this.#resume };
      if (this.create) join.create = true;
      if (this.token) join.token = this.token;
      if (this.password) join.password = this.password;
      conn.send(join);
    });
    this.you = joined.you;
    this.#resume = joined.resume;
    this.onResume?.(this.#resume);
    this.inRoom = true;
    // The room exists now: coming back is by resume token, not creation.
    this.create = false;
    // What the room's history holds arrived; the rest goes (again) now.
    for (const msg of /** @type {Joined} */ (joined).chat) if (msg.id) this.outbox.delete(msg.id);
    for (const entry of this.outbox.values()) this.sendChat(entry);
    return /** @type {Joined} */ (joined);
  }

  /**
   * @param {Connection} conn
   * @param {{code: number, reason: string, wasOpen: boolean}} ev
   */
  onClose(conn, ev) {
    if (conn !== this.conn) return;
    this.conn = null;
    this.inRoom = false;
    if (ev.code === 1001 && ev.reason === SHUTDOWN_REASON) this.restarting = true;
    const failure = new ProtocolError('closed', ev.reason || 'connection closed');
    this.pendingJoin?.reject(failure);
    this.pendingJoin = null;
    this.pendingLeft?.();
    this.pendingLeft = null;
    if (this.stopped || this.you === null) return;
    if (ev.code === 4000) {
      // Another tab or device took over this seat: do not fight it.
      this.stopped = true;
      this.dispatchEvent(new CustomEvent('ended', { detail: { reason: 'replaced' } }));
      this.failOutbox();
      return;
    }
    this.reconnect();
  }

  async reconnect() {
    if (this.reconnecting) return;
    this.reconnecting = true;
    let delay = BACKOFF_FIRST_MS;
    for (let attempt = 1; !this.stopped; attempt++) {
      const restart = this.restarting;
      this.dispatchEvent(new CustomEvent('reconnecting', { detail: { attempt, delay, restart } }));
      await new Promise((r) => setTimeout(r, delay * (1 + Math.random() * 0.3)));
      if (this.stopped) break;
      try {
        const joined = await this.connectAndJoin();
        this.reconnecting = false;
        this.restarting = false;
        this.dispatchEvent(new CustomEvent('rejoined', { detail: joined }));
        return;
      } catch (err) {
        this.conn?.close();
        this.conn = null;
        const code = err instanceof ProtocolError ? err.code : '';
        if (code === 'bad-resume') {
          // Too late to be the same peer: come back as a new one.
          this.#resume = null;
          this.onResume?.(null);
          delay = 0;
          continue;
        }
        // `cluster-unavailable`: the servers lost their shared Redis for a
        // moment; trying again later works, like a dropped connection.
        const retry = code === 'closed' || code === 'unreachable' || code === 'cluster-unavailable';
        if (code === 'room-full' || !retry) {
          this.stopped = true;
          this.reconnecting = false;
          const reason = code === 'room-full' ? 'full' : 'error';
          this.dispatchEvent(new CustomEvent('ended', { detail: { reason, error: err } }));
          this.failOutbox();
          return;
        }
      }
      delay = Math.min(Math.max(delay * 2, BACKOFF_FIRST_MS), BACKOFF_MAX_MS);
    }
    this.reconnecting = false;
  }

  /** @param {any} msg */
  onMessage(msg) {
    switch (msg?.type) {
      case 'joined':
        this.pendingJoin?.resolve(msg);
        this.pendingJoin = null;
        break;
      case 'left':
        this.pendingLeft?.();
        this.pendingLeft = null;
        break;
      case 'pong':
        if (typeof msg.resume === 'string') {
          this.#resume = msg.resume;
          this.onResume?.(msg.resume);
        }
        break;
      case 'chat':
        // Ours, back from the server: it arrived (whatever `from` says: a
        // new id after a lost resume token still sent it).
        if (typeof msg.id === 'string') this.outbox.delete(msg.id);
        this.dispatchEvent(new CustomEvent('chat', { detail: msg }));
        break;
      case 'removed':
        // A host took us out (or ended the call): we are in no room, and
        // coming back is not for this session to decide.
        this.inRoom = false;
        this.stopped = true;
        this.dispatchEvent(new CustomEvent('ended', {
          detail: { reason: msg.reason === 'ended' ? 'ended' : 'removed', by: msg.by },
        }));
        this.failOutbox();
        break;
      case 'waiting':
      case 'knock':
      case 'knock-gone':
      case 'room-settings':
      case 'peer-role':
      case 'moderated':
      case 'peer-joined':
      case 'peer-left':
      case 'peer-media':
      case 'signal':
      case 'room-mode':
      case 'sfu':
      case 'sfu-layers':
      case 'speaker':
        this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
        break;
      case 'error': {
        const err = new ProtocolError(msg.code, msg.message, msg.request);
        if (msg.request === 'join' && this.pendingJoin) {
          this.pendingJoin.reject(err);
          this.pendingJoin = null;
        } else {
          this.dispatchEvent(new CustomEvent('error', { detail: err }));
        }
        break;
      }
      default:
        break; // types from later versions
    }
  }

  /**
   * Sends `data` to one peer of the room (dropped while reconnecting).
   * @param {string} to
   * @param {any} data
   */
  signal(to, data) {
    this.conn?.send({ type: 'signal', to, data });
  }

  /**
   * Sends an `sfu` message to the server's SFU: our first offer (with
   * `sources`, what each of our m-lines carries, by mid), or our answer to
   * one of its offers (dropped while reconnecting: the session is gone then
   * anyway).
   * @param {{description: RTCSessionDescriptionInit, sources?: Record<string, SfuSource>}} msg
   */
  sfu({ description, sources }) {
    this.conn?.send(sources ? { type: 'sfu', description, sources } : { type: 'sfu', description });
  }

  /**
   * Tells the SFU how tall we show each peer's video, so it sends a layer
   * that fits (and none for video we do not show).
   * @param {SfuTile[]} tiles
   */
  sfuLayout(tiles) {
    this.conn?.send({ type: 'sfu-layout', tiles });
  }

  /** Lets someone waiting in the lobby in (hosts). @param {string} peer */
  admit(peer) {
    this.conn?.send({ type: 'admit', peer });
  }

  /** Turns someone waiting in the lobby away (hosts). @param {string} peer */
  deny(peer) {
    this.conn?.send({ type: 'deny', peer });
  }

  /**
   * Acts on a member (hosts): `mute`, `stop-video`, `stop-screen`,
   * `ask-unmute`, `make-host`, `remove` (with `bar`: not back while the room lasts).
   * @param {string} peer
   * @param {string} action
   * @param {boolean} [bar]
   */
  moderate(peer, action, bar = false) {
    this.conn?.send(bar ? { type: 'moderate', peer, action, bar } : { type: 'moderate', peer, action });
  }

  /**
   * Changes the room's access (hosts); absent fields stay, `password: ''` removes it.
   * @param {{locked?: boolean, lobby?: boolean, password?: string}} settings
   */
  roomSettings(settings) {
    this.conn?.send({ type: 'room-settings', ...settings });
  }

  /** Ends the call for everyone (hosts). */
  endCall() {
    this.conn?.send({ type: 'end-call' });
  }

  /**
   * Sends a chat message now if we are in the room, else once we are back.
   * @param {string} text
   * @returns {{id: string, queued: boolean}} its id; `queued` false when the
   *   outbox is full (it is not sent; `retryChat` may try again later)
   */
  chat(text) {
    const id = newChatId();
    return { id, queued: this.retryChat(id, text) };
  }

  /**
   * Tries again to send a message that could not be sent, under its id (so
   * that if an earlier try did arrive after all, it is still shown once).
   * @param {string} id
   * @param {string} text
   * @returns {boolean} whether it is on its way (false: the outbox is full)
   */
  retryChat(id, text) {
    if (this.outbox.size >= OUTBOX_MAX && !this.outbox.has(id)) return false;
    const entry = { id, text, since: Date.now(), sentAt: null };
    this.outbox.set(id, entry);
    this.sendChat(entry);
    this.outboxTimer ??= setInterval(() => this.checkOutbox(), 1000);
    return true;
  }

  /** @param {OutgoingChat} entry */
  sendChat(entry) {
    if (!this.inRoom || !this.conn?.open) return;
    entry.sentAt = Date.now();
    this.conn.send({ type: 'chat', text: entry.text, id: entry.id });
  }

  /** Gives up messages that waited too long for a connection, or for their
   *  echo while connected. */
  checkOutbox() {
    const now = Date.now();
    for (const entry of [...this.outbox.values()]) {
      const late = this.inRoom
        ? entry.sentAt !== null && now - entry.sentAt > OUTBOX_ECHO_MS
        : now - entry.since > OUTBOX_WAIT_MS;
      if (late) this.failChat(entry.id);
    }
    if (this.outbox.size === 0) {
      clearInterval(this.outboxTimer);
      this.outboxTimer = undefined;
    }
  }

  /** @param {string} id */
  failChat(id) {
    this.outbox.delete(id);
    this.dispatchEvent(new CustomEvent('chat-failed', { detail: { id } }));
  }

  /** The session is over: nothing waiting will be sent. */
  failOutbox() {
    for (const id of [...this.outbox.keys()]) this.failChat(id);
  }

  /**
   * Tells the room about our microphone, camera and screen share; also
   * remembered for the next join after a reconnect.
   * @param {MediaFlags} media
   */
  setMedia(media) {
    this.media = { ...media };
    this.conn?.send({ type: 'media', ...media });
  }

  /**
   * Leaves the room and closes; resolves when the server confirmed it or
   * after one second.
   * @returns {Promise<void>}
   */
  leave() {
    this.stopped = true;
    const conn = this.conn;
    if (!conn?.open) {
      this.close();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.close();
        resolve();
      };
      const timer = setTimeout(done, 1000);
      this.pendingLeft = done;
      conn.send({ type: 'leave' });
    });
  }

  /** Closes without leaving first (the server still takes us out). */
  close() {
    this.stopped = true;
    clearInterval(this.outboxTimer);
    this.outboxTimer = undefined;
    this.conn?.close();
    this.conn = null;
  }
}
