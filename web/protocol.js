// The signaling protocol, version 1 (docs/protocol.md), over a WebSocket.
// No DOM in here: this module only speaks to the server.

/** The protocol version this client speaks. */
export const VERSION = 1;

/**
 * @typedef {{id: string, name: string}} PeerInfo
 * @typedef {{urls: string[], username?: string, credential?: string}} IceServerInfo
 * @typedef {{room: string, you: string, name: string, capacity: number,
 *            polite: boolean, peers: PeerInfo[], ice_servers: IceServerInfo[]}} Joined
 */

/** An `error` message from the server, as an exception. */
export class ProtocolError extends Error {
  /**
   * @param {string} code stable code, such as "room-full"
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
 * One connection to the server.
 *
 * Events (CustomEvent, payload in `detail`):
 * - `peer-joined` {peer: PeerInfo, polite: boolean}
 * - `peer-left`   {peer: string, reason: string}
 * - `signal`      {from: string, data: any}
 * - `error`       ProtocolError not tied to a pending request
 * - `close`       {code: number, reason: string, wasOpen: boolean}
 */
export class Signaling extends EventTarget {
  /** @param {string} url */
  constructor(url) {
    super();
    this.url = url;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {{resolve: (j: Joined) => void, reject: (e: Error) => void} | null} */
    this.pendingJoin = null;
    /** @type {{resolve: () => void, reject: (e: Error) => void} | null} */
    this.pendingHello = null;
    /** @type {(() => void) | null} */
    this.pendingLeft = null;
  }

  /**
   * Opens the WebSocket and says hello.
   * @returns {Promise<void>} resolves on `welcome`
   */
  connect() {
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      this.pendingHello = { resolve, reject };
      ws.onopen = () => {
        opened = true;
        this.send({ type: 'hello', version: VERSION });
      };
      ws.onmessage = (ev) => this.onMessage(ev.data);
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        const failure = new ProtocolError(
          opened ? 'closed' : 'unreachable',
          ev.reason || (opened ? 'the connection closed' : 'cannot reach the server'),
        );
        this.pendingHello?.reject(failure);
        this.pendingJoin?.reject(failure);
        this.pendingLeft?.();
        this.pendingHello = this.pendingJoin = this.pendingLeft = null;
        this.dispatchEvent(new CustomEvent('close', {
          detail: { code: ev.code, reason: ev.reason, wasOpen: opened },
        }));
      };
    });
  }

  /**
   * Joins a room.
   * @param {string} room
   * @param {string} name
   * @returns {Promise<Joined>} rejects with a ProtocolError (e.g. room-full)
   */
  join(room, name) {
    return new Promise((resolve, reject) => {
      this.pendingJoin = { resolve, reject };
      this.send({ type: 'join', room, name });
    });
  }

  /**
   * Sends `data` to one peer of the room.
   * @param {string} to
   * @param {any} data
   */
  signal(to, data) {
    this.send({ type: 'signal', to, data });
  }

  /**
   * Leaves the room; resolves when the server confirmed it or the
   * connection is gone (at most one second).
   * @returns {Promise<void>}
   */
  leave() {
    return new Promise((resolve) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return resolve();
      const timer = setTimeout(() => { this.pendingLeft = null; resolve(); }, 1000);
      this.pendingLeft = () => { clearTimeout(timer); resolve(); };
      this.send({ type: 'leave' });
    });
  }

  /** Closes the connection; no `close` event follows. */
  close() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000, 'bye');
    }
  }

  /** @param {object} msg */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
    }
  }

  /** @param {any} raw */
  onMessage(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return; // The server only sends JSON; anything else is dropped.
    }
    switch (msg.type) {
      case 'welcome':
        this.pendingHello?.resolve();
        this.pendingHello = null;
        break;
      case 'joined':
        this.pendingJoin?.resolve(msg);
        this.pendingJoin = null;
        break;
      case 'left':
        this.pendingLeft?.();
        this.pendingLeft = null;
        break;
      case 'peer-joined':
      case 'peer-left':
      case 'signal':
        this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
        break;
      case 'error': {
        const err = new ProtocolError(msg.code, msg.message, msg.request);
        if (msg.request === 'join' && this.pendingJoin) {
          this.pendingJoin.reject(err);
          this.pendingJoin = null;
        } else if (msg.request === 'hello' && this.pendingHello) {
          this.pendingHello.reject(err);
          this.pendingHello = null;
        } else {
          this.dispatchEvent(new CustomEvent('error', { detail: err }));
        }
        break;
      }
      default:
        break; // pong, and types from later versions
    }
  }
}
