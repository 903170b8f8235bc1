// The call page: lobby (camera preview, name), the call itself (tiles, chat,
// quality, controls), and the pages around it (full, ended). Speaks to the
// server through protocol.js, to peers through call.js (browser to browser)
// or sfu.js (a group call through the server).

import { Session, ProtocolError, canonicalRoom, signalingUrl, peekRoom } from './protocol.js';
import { LocalMedia, PeerLink } from './call.js';
import { SfuLink } from './sfu.js';
import { QualityMeter } from './quality.js';
import { ChatPanel } from './chat.js';
import { PeoplePanel } from './people.js';
// The muted sign on a tile is an icon, not an emoji (which may have no
// font to show it).
import { Controls, MUTED_ICON } from './controls.js';
import { LevelMeter, audioState } from './level.js';
import { t, setupLanguageSwitch } from './i18n.js';

/**
 * @typedef {import('./protocol.js').Joined} Joined
 * @typedef {import('./protocol.js').PeerInfo} PeerInfo
 * @typedef {import('./protocol.js').MediaFlags} MediaFlags
 * @typedef {import('./protocol.js').RoomMode} RoomMode
 * @typedef {import('./protocol.js').SfuMessage} SfuMessage
 * @typedef {import('./protocol.js').RoomState} RoomState
 * @typedef {object} Peer one remote peer and its tile
 * @property {PeerInfo} info
 * @property {HTMLElement} tile
 * @property {HTMLVideoElement} video the tile's video: what people see and
 *   hear of this peer
 * @property {PeerLink | null} link our browser-to-browser link to it, if any
 * @property {QualityMeter | null} meter of `link`
 * @property {QualityMeter | null} sfuMeter its share of the SFU session
 * @property {RoomMode} path where the tile's media comes from
 * @property {HTMLVideoElement | null} staging while switching to the SFU:
 *   plays the peer's media through the SFU over the P2P video, until its
 *   first frame completes the switch
 * @property {boolean} peerSwitched the peer told us it gets our media
 *   through the SFU (so our link to it may go once we get its media so too)
 * @property {ReturnType<typeof setTimeout>} [grace]
 * @property {LevelMeter} level how loud its audio is (a call of two: the
 *   server names the speaker of a group call)
 * @typedef {'lobby' | 'joining' | 'call' | 'full' | 'ended' | 'knocking'} PageState
 */

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const NAME_KEY = 'webconf.name';
const RELAY_KEY = 'webconf.relayOnly';
/** How long a peer whose connection to the server dropped keeps its tile
 *  while its browser-to-browser connection still works. */
const GRACE_MS = 30_000;
/** The same for a peer of a group call: its media stopped with its SFU
 *  session, but its tile stays in place while it may come straight back. */
const SFU_GRACE_MS = 10_000;
/** After `error sfu-failed`: a new SFU session this much later. */
const SFU_RESTART_MS = 1000;
/** After `error sfu-unavailable`: try again this much later. */
const SFU_RETRY_MS = 15_000;
/** Grid layout: the picture shape the tile sizes are chosen for. */
const TILE_ASPECT = 4 / 3;
/** A group call shows at most this many remote videos; the others are
 *  listed in a "+N more" tile (and their video is not forwarded). */
const MAX_TILES = 16;
/** The pin button's icon (a push pin). */
const PIN_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M16 9V4h1a1 1 0 0 0 0-2H7a1 1 0 0 0 0 2h1v5a3 3 0 0 1-3 3v2h6v7l1 1 1-1v-7h6v-2a3 3 0 0 1-3-3z"/></svg>';
/** A connection in trouble: signal bars, struck through. */
const WEAK_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 17h3v4H3zm6-5h3v9H9zm6-5h3v14h-3z"/><path class="slash" d="M3 3l18 18"/></svg>';
/** The picture-in-picture button's icon: a small picture in a big one. */
const PIP_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 5h18v14H3z" fill="none" stroke="currentColor" stroke-width="2"/><path d="M12 11h7v6h-7z"/></svg>';
/** How long "X lost their connection, waiting…" stays up: as long as a
 *  tile waits for its peer to come back. */
const LOST_NOTICE_MS = 30_000;
/** A tile whose connection received nothing for this long, or is broken,
 *  is marked unstable. */
const STALL_MS = 2500;
/** How long the lobby waits to hear how full the room is before it starts
 *  the camera anyway. */
const PEEK_MS = 1500;
/** How often the lobby asks again who is in the call. */
const LOBBY_PEEK_MS = 5000;
/** The pin id of our own tile. */
const SELF = 'self';
/** Status lines that are news, not a lasting state: they fade away. */
const TRANSIENT = new Set([
  'peer_joined', 'peer_left', 'peer_back', 'peer_gone', 'copied', 'reconnected', 'screen_failed', 'screen_unsupported',
]);
/** Status lines that expire after LOST_NOTICE_MS. */
const EXPIRING = new Set(['peer_lost']);

/** Timings the tests may shorten. */
const timings = { lostNoticeMs: LOST_NOTICE_MS, graceMs: GRACE_MS, lobbyPeekMs: LOBBY_PEEK_MS };

const state = {
  /** @type {string | null} */
  room: null,
  media: new LocalMedia(),
  /** @type {Session | null} */
  session: null,
  /** @type {Map<string, Peer>} */
  peers: new Map(),
  /** @type {Joined | null} */
  joined: null,
  /** How the room's media travels now (`joined.mode`, then `room-mode`).
   *  @type {RoomMode} */
  mode: 'p2p',
  /** Our session with the server's SFU, in an `sfu` room.
   *  @type {SfuLink | null} */
  sfu: null,
  /** @type {{key: any, vars: Record<string, string | number>} | null} */
  status: null,
  speakerId: '',
  /** The tile this viewer pinned to the stage: a peer id, SELF, or null.
   *  @type {string | null} */
  pinned: null,
  /** Remote peers by how recently the server named them the speaker,
   *  most recent first. @type {string[]} */
  recent: [],
  /** How many remote videos a group call shows at most. */
  maxTiles: MAX_TILES,
  /** Our role in the room. @type {'host' | 'guest'} */
  role: 'guest',
  /** Who waits in the lobby (hosts hear of them), by id: name.
   *  @type {Map<string, string>} */
  lobby: new Map(),
  /** The room's access settings. */
  settings: { locked: false, lobby: false, password: false },
};

/** The key under which the home page marks a room it just made up. */
const CREATE_KEY = 'webconf.create';

/** Whether the home page just made up this room for us (we then create it). */
function createdHere() {
  return saved(CREATE_KEY, true) === state.room;
}

/**
 * A host's proof of its role, kept for this tab (sessionStorage) so that a
 * reload keeps the role: its latest resume token, which carries the role.
 * Guests keep none (a reload makes them a new arrival, as before).
 */
const HOST_KEY = 'webconf.hostResume';

/** @returns {string | null} the kept token, if it is for this room */
function keptHostToken() {
  try {
    const kept = JSON.parse(saved(HOST_KEY, true) ?? 'null');
    return kept?.room === state.room && typeof kept.token === 'string' ? kept.token : null;
  } catch {
    return null;
  }
}

/** The session's latest resume token (not in `state`: `window.webconf` shows that). */
let latestResume = /** @type {string | null} */ (null);

/**
 * Keeps the latest resume token for a reload while we are a host, and
 * forgets it otherwise. (Without storage a reload makes the host a guest.)
 * @param {string | null} [token] a fresh token (default: the latest)
 */
function keepHostToken(token = latestResume) {
  latestResume = token;
  const keep = token && state.role === 'host';
  save(HOST_KEY, keep ? JSON.stringify({ room: state.room, token }) : null, true);
}

/** Forgets that mark: the room exists now. */
function forgetCreated() {
  save(CREATE_KEY, null, true);
}

/** Timings for people and tests, in ms since the page started loading. */
const metrics = {
  /** @type {number | null} */
  joinedAt: null,
  /** @type {number | null} */
  firstRemoteFrame: null,
  /** @type {{lost: number, rejoined: number | null, restart: boolean}[]} */
  reconnects: [],
  /** Peer connections made (a link replaced counts again). */
  links: 0,
  /** SFU sessions started. */
  sfuSessions: 0,
  /** Why each SFU session started, and the SFU errors the server sent.
   *  @type {{at: number, start?: string, error?: string, message?: string}[]} */
  sfuLog: [],
  /** When the latest SFU session was started. @type {number | null} */
  sfuStarted: null,
  /** By peer id: when its first frame through the SFU was shown.
   *  @type {Record<string, number>} */
  firstSfuFrame: {},
  /** By peer id: the longest time between two frames shown on its tile
   *  (since the last resetFrameGaps()), across changes of source.
   *  @type {Record<string, number>} */
  frameGaps: {},
  /** By peer id: frames shown on its tile. @type {Record<string, number>} */
  framesPresented: {},
  /** Status lines shown, in order. @type {{at: number, key: string}[]} */
  statusLog: [],
  /** By peer id: how often its tile was marked unstable.
   *  @type {Record<string, number>} */
  unstable: {},
};

const chat = new ChatPanel({
  send: (text) => state.session?.chat(text) ?? null,
  retry: (id, text) => state.session?.retryChat(id, text) ?? false,
});
const controls = new Controls(state.media, {
  status: (key, vars) => status(key, vars),
  toggleChat: () => chat.toggle(),
  toggleQuality: () => toggleQuality(),
  setSpeaker: (id) => setSpeaker(id),
});

const people = new PeoplePanel({
  admit: (id) => state.session?.admit(id),
  deny: (id) => state.session?.deny(id),
  moderate: (id, action, bar) => state.session?.moderate(id, action, bar),
  settings: (s) => state.session?.roomSettings(s),
  endCall: () => state.session?.endCall(),
});

/** Shows the participants panel as things are now. */
function refreshPeople() {
  const joined = state.joined;
  if (!joined) return;
  people.update({
    you: joined.you,
    name: joined.name,
    role: state.role,
    media: state.media.flags,
    peers: [...state.peers.values()].map((p) => p.info),
    lobby: state.lobby,
    settings: state.settings,
  });
}

/**
 * Follows what the server says of the room's hosts and access (joined,
 * then the messages that change it).
 * @param {Joined} joined
 */
function takeAccess(joined) {
  state.role = joined.role ?? 'guest';
  // The token that came with this `joined` carries the role.
  keepHostToken();
  state.settings = joined.settings ?? { locked: false, lobby: false, password: false };
  state.lobby = new Map((joined.lobby ?? []).map((k) => [k.peer, k.name]));
  controls.setHeld({ audio: false, video: false, screen: false });
}

/** @param {PageState} next */
function show(next) {
  document.body.dataset.state = next;
  $('knocking').hidden = next !== 'knocking';
  $('lobby').hidden = next !== 'lobby' && next !== 'joining';
  $('call').hidden = next !== 'call';
  $('full').hidden = next !== 'full';
  $('ended').hidden = next !== 'ended';
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let statusTimer;

/**
 * Shows a status line (translated, re-rendered on language change).
 * @param {any} key
 * @param {Record<string, string | number>} [vars]
 */
function status(key, vars = {}) {
  state.status = key ? { key, vars } : null;
  if (key) metrics.statusLog.push({ at: performance.now(), key });
  if (metrics.statusLog.length > 200) metrics.statusLog.shift();
  $('status').textContent = key ? t(key, vars) : '';
  clearTimeout(statusTimer);
  if (TRANSIENT.has(key)) statusTimer = setTimeout(() => status(null), 4000);
  else if (EXPIRING.has(key)) statusTimer = setTimeout(() => status(null), timings.lostNoticeMs);
}

/** @param {string | null} key */
function banner(key) {
  const el = $('connection-banner');
  el.hidden = !key;
  el.dataset.key = key ?? '';
  el.textContent = key ? t(/** @type {any} */ (key)) : '';
}

document.addEventListener('langchange', () => {
  if (state.status) $('status').textContent = t(state.status.key, state.status.vars);
  const key = $('connection-banner').dataset.key;
  if (key) $('connection-banner').textContent = t(/** @type {any} */ (key));
  renderMediaStatus();
  renderLobbyWho();
  for (const peer of state.peers.values()) renderTile(peer);
  layout();
  if (!$('quality').hidden) renderQuality();
});

// ---- Lobby ----------------------------------------------------------------

let mediaReady = false;

function renderMediaStatus() {
  const el = $('media-status');
  if (!mediaReady) return;
  const { mic, camera, problem } = state.media;
  // What is on, not which devices opened: a microphone muted by choice is
  // off to people, though its track stays.
  const { audio, video } = state.media.flags;
  let text = t('media_ok');
  if (!mic && !camera && problem) text = t(/** @type {any} */ (`media_${problem}`));
  else if (!audio && !video) text = t('media_off');
  else if (!video) text = t('media_audio_only');
  else if (!audio) text = t('media_video_only');
  el.textContent = text;
  el.classList.toggle('warn', !audio || !video);
}

/**
 * Shows our camera (or shared screen) in the lobby's preview and on our own
 * tile. A media element never gets a stream without tracks (no camera, or
 * none allowed): Chromium would wait for media that never comes, and the
 * page would never finish loading (its tab spinning on).
 */
function showSelf() {
  const stream = state.media.preview;
  const sharing = Boolean(state.media.screen);
  $('self').classList.toggle('screen', sharing);
  /** @type {HTMLElement} */ ($('preview-video').parentElement).classList.toggle('screen', sharing);
  const source = stream.getTracks().length > 0 ? stream : null;
  for (const id of ['preview-video', 'local-video']) {
    const video = /** @type {HTMLVideoElement} */ ($(id));
    if (video.srcObject !== source) video.srcObject = source;
  }
}
state.media.addEventListener('change', () => {
  showSelf();
  layout();
  micMeter.setTrack(state.media.audioTrack);
  renderMediaStatus();
});

/** Our microphone's level: the lobby's meter, and our speaking ring in a
 *  call of two. */
const micMeter = new LevelMeter((level, speaking) => {
  // Speech sits low on a linear scale: show it on a rough loudness one.
  const shown = level > 0 ? Math.min(1, Math.max(0, 1 + Math.log10(level) / 2.5)) : 0;
  $('mic-level').style.setProperty('width', `${Math.round(shown * 100)}%`);
  if (state.mode === 'p2p') $('self').classList.toggle('speaking', speaking && document.body.dataset.state === 'call');
});

async function startLobby() {
  show('lobby');
  const nameInput = /** @type {HTMLInputElement} */ ($('name'));
  nameInput.value = saved(NAME_KEY) ?? `${t('guest')} ${100 + Math.floor(Math.random() * 900)}`;
  /** @type {HTMLInputElement} */ ($('relay-only')).checked = saved(RELAY_KEY) === '1';
  showSelf();
  // A full call is said before any camera light goes on.
  const room = await peekRoom(signalingUrl(), /** @type {string} */ (state.room), PEEK_MS);
  if (room && room.peers >= room.capacity) {
    show('full');
    return;
  }
  // So is a locked call (unless this tab was its host: a host comes back
  // into a locked call), and a password is asked for before joining.
  if (room?.settings?.locked && !keptHostToken()) {
    endedTitle('locked_title');
    show('ended');
    return;
  }
  if (room?.settings?.password && !keptHostToken()) $('password-row').hidden = false;
  showLobbyWho(room);
  await state.media.open();
  controls.fillLobbyDevices();
  mediaReady = true;
  renderMediaStatus();
  const join = /** @type {HTMLButtonElement} */ ($('join'));
  join.disabled = false;
  join.focus();
}

/** What the lobby last heard of the room (`peek`). @type {RoomState | null} */
let lobbyRoom = null;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let lobbyPeekTimer;

/**
 * Says who is in the call already, and asks again every few seconds while
 * the lobby is up, so it stays true while people come and go.
 * @param {RoomState | null} room
 */
function showLobbyWho(room) {
  lobbyRoom = room;
  renderLobbyWho();
  clearTimeout(lobbyPeekTimer);
  lobbyPeekTimer = setTimeout(async () => {
    if (document.body.dataset.state !== 'lobby') return;
    const next = await peekRoom(signalingUrl(), /** @type {string} */ (state.room), PEEK_MS);
    // No answer this time: keep what was said.
    if (document.body.dataset.state === 'lobby') showLobbyWho(next ?? lobbyRoom);
  }, timings.lobbyPeekMs);
}

/** Names, as text: a name is whatever people typed. */
function renderLobbyWho() {
  const box = $('lobby-who');
  const room = lobbyRoom;
  box.hidden = !room;
  if (!room) return;
  const names = room.names ?? [];
  const [a, b, c] = names;
  const n = room.peers;
  let text;
  if (n === 0) text = t('who_none');
  else if (n === 1 && a) text = t('who_one', { a });
  else if (n === 2 && b) text = t('who_two', { a, b });
  else if (n === 3 && c) text = t('who_three', { a, b, c });
  else if (n > 3 && b) text = t('who_many', { a, b, n: n - 2 });
  else text = n === 1 ? t('who_count_one') : t('who_count', { n });
  $('lobby-who-text').textContent = text;
  const faces = names.slice(0, 4).map((name) => {
    const face = document.createElement('span');
    face.textContent = Array.from(name)[0]?.toUpperCase() ?? '?';
    face.style.setProperty('--avatar', avatarColour(name));
    return face;
  });
  /** @type {HTMLElement} */ (box.querySelector('.who-faces')).replaceChildren(...faces);
}

/**
 * @param {string} key
 * @param {boolean} [tab] this tab only (sessionStorage), not this browser
 */
function saved(key, tab = false) {
  try {
    return (tab ? sessionStorage : localStorage).getItem(key);
  } catch {
    return null;
  }
}

/**
 * @param {string} key
 * @param {string | null} value null: forget it
 * @param {boolean} [tab] this tab only (sessionStorage), not this browser
 */
function save(key, value, tab = false) {
  try {
    const store = tab ? sessionStorage : localStorage;
    if (value === null) store.removeItem(key);
    else store.setItem(key, value);
  } catch {
    // Private modes may forbid storage; the choice is then asked again.
  }
}

// ---- Joining --------------------------------------------------------------


async function join() {
  const nameInput = /** @type {HTMLInputElement} */ ($('name'));
  const name = nameInput.value.trim() || t('guest');
  save(NAME_KEY, name);
  save(RELAY_KEY, /** @type {HTMLInputElement} */ ($('relay-only')).checked ? '1' : '0');
  const joinButton = /** @type {HTMLButtonElement} */ ($('join'));
  joinButton.disabled = true;
  joinButton.textContent = t('joining');
  show('joining');
  status(null);

  const password = /** @type {HTMLInputElement} */ ($('join-password')).value || null;
  const session = new Session(signalingUrl(), {
    room: /** @type {string} */ (state.room),
    name,
    media: state.media.flags,
    create: createdHere(),
    token: new URLSearchParams(location.hash.slice(1)).get('token'),
    password,
    resume: keptHostToken(),
    onResume: (token) => keepHostToken(token),
  });
  state.session = session;
  session.addEventListener('waiting', () => show('knocking'));
  session.addEventListener('knock', (ev) => {
    const { peer, name: who } = /** @type {CustomEvent} */ (ev).detail;
    state.lobby.set(peer, who);
    status('knock_notice', { name: who });
    refreshPeople();
  });
  session.addEventListener('knock-gone', (ev) => {
    state.lobby.delete(/** @type {CustomEvent} */ (ev).detail.peer);
    refreshPeople();
  });
  session.addEventListener('room-settings', (ev) => {
    const { locked, lobby, password: pw } = /** @type {CustomEvent} */ (ev).detail;
    state.settings = { locked, lobby, password: pw };
    refreshPeople();
  });
  session.addEventListener('peer-role', (ev) => {
    const { peer, role } = /** @type {CustomEvent} */ (ev).detail;
    if (peer === state.joined?.you) {
      state.role = role;
      keepHostToken();
      if (role === 'host') status('made_host');
    } else {
      const entry = state.peers.get(peer);
      if (entry) {
        entry.info.role = role;
        if (role === 'host') status('peer_made_host', { name: entry.info.name });
      }
    }
    refreshPeople();
  });
  session.addEventListener('moderated', (ev) => onModerated(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('peer-joined', (ev) => {
    const { peer, polite } = /** @type {CustomEvent} */ (ev).detail;
    // Someone back with its old id (its resume token) is no newcomer.
    const back = state.peers.has(peer.id) || lost.has(peer.id);
    lost.delete(peer.id);
    // In a group call the newcomer's media comes through the SFU.
    if (state.mode === 'sfu') ensureSfuPeer(peer);
    else ensurePeer(peer, polite, false);
    status(back ? 'peer_back' : 'peer_joined', { name: peer.name });
    refreshPeople();
  });
  session.addEventListener('peer-left', (ev) => onPeerLeft(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('peer-media', (ev) => {
    const { peer, media } = /** @type {CustomEvent} */ (ev).detail;
    const entry = state.peers.get(peer);
    if (entry) {
      entry.info.media = media;
      renderTile(entry);
      layout();
      // The SFU carries camera and screen apart: show the one that is on.
      scheduleSync(entry);
    }
    refreshPeople();
  });
  session.addEventListener('signal', (ev) => onSignal(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('room-mode', (ev) => onRoomMode(/** @type {CustomEvent} */ (ev).detail.mode));
  session.addEventListener('sfu', (ev) => state.sfu?.handle(/** @type {SfuMessage} */ (/** @type {CustomEvent} */ (ev).detail)));
  session.addEventListener('sfu-layers', (ev) => {
    const { source, active } = /** @type {CustomEvent} */ (ev).detail;
    state.sfu?.setActiveLayers(source, active);
  });
  session.addEventListener('speaker', (ev) => showSpeaker(/** @type {CustomEvent} */ (ev).detail.peer));
  session.addEventListener('chat', (ev) => chat.add(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('chat-failed', (ev) => chat.failed(/** @type {CustomEvent} */ (ev).detail.id));
  session.addEventListener('error', (ev) => {
    const err = /** @type {ProtocolError} */ (/** @type {CustomEvent} */ (ev).detail);
    if (err.code.startsWith('sfu') || err.request?.startsWith('sfu')) {
      metrics.sfuLog.push({ at: performance.now(), error: err.code, message: err.message });
    }
    if (err.code === 'held') status('held_by_host');
    else if (err.code === 'not-allowed') status('not_allowed');
    else if (err.request === 'chat') chat.showError(t(err.code === 'rate-limited' ? 'chat_too_fast' : 'chat_rejected'));
    else if (err.code === 'sfu-failed') restartSfuSoon();
    else if (err.code === 'sfu-unavailable') onSfuUnavailable();
    else console.warn('webconf: server error', err.code, err.message);
  });
  session.addEventListener('reconnecting', (ev) => {
    const { restart } = /** @type {CustomEvent} */ (ev).detail;
    if (!banner.lost) {
      banner.lost = performance.now();
      metrics.reconnects.push({ lost: banner.lost, rejoined: null, restart });
    }
    // A server that said it was stopping is restarting, most likely: that
    // is no reason to worry about one's own connection.
    banner(restart ? 'server_restarting' : 'reconnecting');
  });
  session.addEventListener('rejoined', (ev) => onRejoined(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('ended', (ev) => onEnded(/** @type {CustomEvent} */ (ev).detail));

  try {
    const joined = await session.start();
    onJoined(joined);
  } catch (err) {
    session.close();
    state.session = null;
    joinButton.disabled = false;
    joinButton.textContent = t('join');
    const code = err instanceof ProtocolError ? err.code : '';
    if (code === 'bad-resume' && keptHostToken()) {
      // A kept host token too old (or for a room that is gone): join anew.
      keepHostToken(null);
      join();
      return;
    }
    /** @type {Record<string, string>} */
    const refusals = {
      'room-locked': 'locked_title',
      denied: 'denied_title',
      barred: 'barred_title',
      'token-required': 'token_required_title',
      'bad-token': 'bad_token_title',
      'lobby-full': 'lobby_full_title',
    };
    /** @type {Record<string, string>} */
    const passwordWords = {
      'password-required': 'password_needed',
      'bad-password': 'password_wrong',
      'too-many-attempts': 'password_too_many',
    };
    if (code === 'room-full') {
      // Not in the call: the camera's light and the microphone go off.
      state.media.stopAll();
      show('full');
    } else if (refusals[code]) {
      state.media.stopAll();
      endedTitle(refusals[code]);
      show('ended');
    } else if (passwordWords[code]) {
      show('lobby');
      $('password-row').hidden = false;
      /** @type {HTMLInputElement} */ ($('join-password')).focus();
      status(passwordWords[code]);
    } else if (err instanceof ProtocolError && (err.code === 'unreachable' || err.code === 'closed')) {
      show('lobby');
      status('server_unreachable');
    } else {
      show('lobby');
      console.warn('webconf: join failed', err);
      status('join_failed');
    }
  }
}
/** When the connection to the server was lost, if it still is. */
banner.lost = /** @type {number | null} */ (null);

/**
 * The ICE servers of the last `joined`, with their TURN credentials: kept
 * here, not in `state` (which `window.webconf` shows), as the Session keeps
 * the resume token to itself.
 * @type {import('./protocol.js').IceServerInfo[]}
 */
let iceServers = [];

/**
 * `joined` as `state` keeps it: without the resume token and the TURN
 * credentials, which go to `iceServers`.
 * @param {Joined} joined
 * @returns {Joined}
 */
function kept(joined) {
  iceServers = joined.ice_servers;
  return { ...joined, resume: '', ice_servers: joined.ice_servers.map(({ urls }) => ({ urls })) };
}

/** @param {Joined} joined */
function onJoined(joined) {
  state.joined = kept(joined);
  takeAccess(joined);
  // Made from the home page: ours now (the server says so in `role`).
  if (createdHere()) forgetCreated();
  setMode(joined.mode);
  metrics.joinedAt = performance.now();
  // A group call's session first: its offer and connection take the
  // longest, and need nothing of the page below.
  if (state.mode === 'sfu') startSfu('joined');
  chat.you = joined.you;
  $('room-name').textContent = joined.room;
  showSelf();
  /** @type {HTMLInputElement} */ ($('share-link')).value = location.href;
  show('call');
  for (const msg of joined.chat) chat.add(msg);
  for (const peer of joined.peers) {
    // We are the newcomer: we make the first offer to everyone here, unless
    // the room is a group call, where everyone's media comes through the SFU.
    if (state.mode === 'sfu') ensureSfuPeer(peer);
    else ensurePeer(peer, Boolean(peer.polite), true);
  }
  updateWaiting();
  refreshPeople();
  $('hangup').focus();
}

/**
 * Back after a dropped connection. With the same id, links that still work
 * are kept: the call never stopped. With a new id, everything starts over.
 * An SFU session never survives its WebSocket: a group call starts a new one.
 * @param {Joined} joined
 */
function onRejoined(joined) {
  const last = metrics.reconnects.at(-1);
  if (last && last.rejoined === null) last.rejoined = performance.now();
  banner.lost = null;
  banner(null);
  status('reconnected');
  if (state.joined && joined.you !== state.joined.you) {
    for (const id of [...state.peers.keys()]) removePeer(id);
  }
  state.joined = kept(joined);
  takeAccess(joined);
  setMode(joined.mode);
  chat.you = joined.you;
  for (const msg of joined.chat) chat.add(msg);
  // Credentials may have changed (a restarted server): the next ICE
  // restart of a kept link uses the new ones.
  for (const peer of state.peers.values()) peer.link?.setIceServers(joined.ice_servers);
  const present = new Set(joined.peers.map((p) => p.id));
  for (const peer of joined.peers) {
    if (state.mode === 'sfu') ensureSfuPeer(peer);
    else ensurePeer(peer, Boolean(peer.polite), true);
  }
  for (const [id, peer] of state.peers) {
    if (!present.has(id)) startGrace(peer);
  }
  if (state.mode === 'sfu') startSfu('rejoined');
  // The server may have missed our media changes while we were away.
  state.session?.setMedia(state.media.flags);
  updateWaiting();
  refreshPeople();
}

/**
 * A host acted on us: follow it here too (the server enforces it anyway),
 * and say so.
 * @param {{action: string, by: string, held: {audio: boolean, video: boolean, screen: boolean}}} detail
 */
function onModerated({ action, held }) {
  controls.setHeld(held);
  if (action === 'mute') {
    state.media.setMic(false);
    status('host_muted_you');
  } else if (action === 'stop-video') {
    state.media.setCamera(false);
    status('host_stopped_camera');
  } else if (action === 'stop-screen') {
    state.media.stopScreen();
    status('host_stopped_screen');
  } else if (action === 'ask-unmute') {
    status('host_asks_unmute');
  }
}

/** @param {{reason: string, error?: ProtocolError, by?: string}} detail */
function onEnded({ reason, error, by }) {
  const you = state.joined?.you;
  banner(null);
  endCall();
  if (reason === 'full') {
    show('full');
    return;
  }
  if (error) console.warn('webconf: call ended', error.code, error.message);
  /** @type {Record<string, string>} */
  const titles = {
    replaced: 'replaced',
    removed: 'removed_title',
    ended: by && by === you ? 'you_ended_call' : 'ended_by_host',
  };
  endedTitle(titles[reason] ?? 'call_failed');
  show('ended');
}

// ---- Room mode and the SFU session --------------------------------------------

/**
 * Follows the room's mode. A room that is not (or no longer, after a server
 * restart) a group call needs no SFU session.
 * @param {RoomMode | undefined} mode
 */
function setMode(mode) {
  const was = state.mode;
  state.mode = mode === 'sfu' ? 'sfu' : 'p2p';
  document.body.dataset.mode = state.mode;
  if (state.mode === 'p2p') stopSfu();
  if (state.mode === 'sfu' && was !== 'sfu') {
    // From now on the server says who speaks; the rings our own level
    // meters drew in a call of two must not linger.
    for (const peer of state.peers.values()) peer.tile.classList.remove('speaking');
    $('self').classList.remove('speaking');
  }
}

/**
 * The room became a group call: open our SFU session. Browser-to-browser
 * links stay until each peer's media arrives through the SFU.
 * @param {RoomMode} mode
 */
function onRoomMode(mode) {
  if (mode !== 'sfu' && mode !== 'p2p') return;
  setMode(mode);
  if (mode === 'sfu' && !state.sfu) startSfu('room-mode');
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let sfuTimer;

/**
 * Starts a new SFU session, replacing the one we had.
 * @param {string} why for the log: joined, rejoined, room-mode, sfu-failed, retry
 */
function startSfu(why) {
  clearTimeout(sfuTimer);
  sfuTimer = undefined;
  state.sfu?.close();
  state.sfu = null;
  const session = state.session;
  if (!session || !state.joined || state.mode !== 'sfu') return;
  const link = new SfuLink({
    iceServers,
    relayOnly: /** @type {HTMLInputElement} */ ($('relay-only')).checked,
    media: state.media,
    send: (msg) => session.sfu(msg),
  });
  state.sfu = link;
  metrics.sfuSessions++;
  metrics.sfuLog.push({ at: link.created, start: why });
  metrics.sfuStarted = link.created;
  const changed = (/** @type {Event} */ ev) => {
    if (state.sfu !== link) return;
    const peer = state.peers.get(/** @type {CustomEvent} */ (ev).detail.peer);
    if (peer) scheduleSync(peer);
  };
  link.addEventListener('track', changed);
  link.addEventListener('track-ended', changed);
  // A new session is a new participant to the server: tell it our layout.
  link.addEventListener('established', () => {
    if (state.sfu !== link) return;
    lastLayout = '';
    reportLayout();
  });
  link.addEventListener('state', (ev) => {
    if (state.sfu !== link) return;
    const s = /** @type {CustomEvent} */ (ev).detail;
    document.body.dataset.sfu = s;
    if (s === 'connected' && ['sfu_reconnecting', 'sfu_unavailable'].includes(state.status?.key)) status(null);
  });
  link.start();
}

function stopSfu() {
  clearTimeout(sfuTimer);
  sfuTimer = undefined;
  state.sfu?.close();
  state.sfu = null;
  delete document.body.dataset.sfu;
}

/** The server dropped our SFU session: a new one shortly. */
function restartSfuSoon() {
  if (state.mode !== 'sfu' || sfuTimer !== undefined) return;
  status('sfu_reconnecting');
  sfuTimer = setTimeout(() => startSfu('sfu-failed'), SFU_RESTART_MS);
}

/** The server has no SFU session for us (none, or full): keep the links we
 *  have, say so, and try again later. */
function onSfuUnavailable() {
  state.sfu?.close();
  state.sfu = null;
  status('sfu_unavailable');
  clearTimeout(sfuTimer);
  sfuTimer = state.mode === 'sfu' ? setTimeout(() => startSfu('retry'), SFU_RETRY_MS) : undefined;
}

/** What we last told the SFU of our layout (JSON). */
let lastLayout = '';
/** @type {ReturnType<typeof setTimeout> | undefined} */
let layoutTimer;

/**
 * Tells the SFU, soon and only if it changed, how tall we show each peer's
 * video (0: not at all, e.g. while this tab is hidden), so it forwards the
 * simulcast layer that fits.
 */
function reportLayout() {
  if (layoutTimer !== undefined) return;
  layoutTimer = setTimeout(() => {
    layoutTimer = undefined;
    const sfu = state.sfu;
    if (!sfu?.established || state.mode !== 'sfu') return;
    const hidden = document.visibilityState === 'hidden';
    const tiles = [...state.peers.values()].map((peer) => ({
      peer: peer.info.id,
      height: hidden || !peer.tile.isConnected ? 0 : Math.round(peer.tile.clientHeight),
    }));
    const json = JSON.stringify(tiles);
    if (json === lastLayout) return;
    lastLayout = json;
    state.session?.sfuLayout(tiles);
  }, 250);
}

/**
 * Marks the tile of the loudest person (ours too).
 * @param {string} id
 */
function showSpeaker(id) {
  if (state.peers.has(id)) {
    state.recent = [id, ...state.recent.filter((r) => r !== id)];
    // Past the visible maximum, a hidden speaker swaps in.
    if (state.peers.size > state.maxTiles) layout();
  }
  for (const peer of state.peers.values()) peer.tile.classList.toggle('speaking', peer.info.id === id);
  $('self').classList.toggle('speaking', id === state.joined?.you);
}

/** @type {Set<Peer>} */
const syncing = new Set();

/**
 * Brings a tile up to date with the SFU's tracks soon: after every `track`
 * event of one server offer, so audio and video change together.
 * @param {Peer} peer
 */
function scheduleSync(peer) {
  if (syncing.size === 0) {
    setTimeout(() => {
      const peers = [...syncing];
      syncing.clear();
      for (const p of peers) {
        if (state.peers.get(p.info.id) === p) syncSfu(p);
      }
    }, 0);
  }
  syncing.add(peer);
}

/**
 * Shows what the SFU brings of `peer`: on its tile when the tile is already
 * served by the SFU; else (still browser to browser) on a staging video over
 * the P2P one, which takes over at its first frame. A peer with its camera
 * off switches as soon as its audio arrives.
 * @param {Peer} peer
 */
function syncSfu(peer) {
  const sfu = state.sfu;
  if (!sfu || state.mode !== 'sfu') return;
  const tracks = sfu.tracksOf(peer.info.id);
  const media = peer.info.media ?? { audio: true, video: true, screen: false };
  const video = media.screen && tracks.screen ? tracks.screen : tracks.camera;
  const want = /** @type {MediaStreamTrack[]} */ ([tracks.audio, video].filter(Boolean));
  if (want.length === 0) return; // Nothing (yet, or any more): keep what is shown.
  if (peer.path === 'p2p' && !(peer.link && peer.link.pc.connectionState === 'connected')) {
    // Nothing flows browser to browser: nothing to wait for.
    retireLink(peer);
    usePath(peer, 'sfu');
  }
  if (peer.path === 'sfu') {
    if (!sameTracks(peer.video.srcObject, want)) setSource(peer.video, new MediaStream(want), 'sfu');
    return;
  }
  if (media.video || media.screen) {
    if (!video) return;
    if (!peer.staging) {
      const staging = makeVideo();
      staging.muted = true;
      staging.classList.add('staging');
      peer.video.after(staging);
      peer.staging = staging;
    }
    if (!sameTracks(peer.staging.srcObject, want)) setSource(peer.staging, new MediaStream(want), 'sfu');
  } else if (tracks.audio) {
    usePath(peer, 'sfu');
    setSource(peer.video, new MediaStream(want), 'sfu');
    switched(peer);
  }
}

/**
 * @param {MediaProvider | null} stream
 * @param {MediaStreamTrack[]} tracks
 */
function sameTracks(stream, tracks) {
  if (!(stream instanceof MediaStream)) return false;
  const have = stream.getTracks();
  return have.length === tracks.length && tracks.every((t) => have.includes(t));
}

/**
 * The staging video showed its first frame: it becomes the tile's video.
 * @param {Peer} peer
 */
function promote(peer) {
  const staging = peer.staging;
  if (!staging) return;
  const old = peer.video;
  peer.staging = null;
  peer.video = staging;
  staging.classList.remove('staging');
  staging.muted = false;
  if (state.speakerId) setSinkId(staging, state.speakerId);
  old.srcObject = null;
  old.remove();
  peer.path = 'sfu';
  peer.tile.dataset.path = 'sfu';
  renderTile(peer);
  switched(peer);
}

/**
 * We now get `peer`'s media through the SFU: tell it, so it can close its
 * link to us once it gets ours so too; close ours if it already did.
 * @param {Peer} peer
 */
function switched(peer) {
  const link = peer.link;
  if (!link) return;
  if (link.remoteSession) link.send({ sfu: true });
  if (peer.peerSwitched || !link.remoteSession) retireLink(peer);
}

/**
 * Where a tile's media comes from.
 * @param {Peer} peer
 * @param {RoomMode} path
 */
function usePath(peer, path) {
  peer.tile.dataset.path = path;
  if (path === 'p2p') {
    dropStaging(peer);
    peer.peerSwitched = false;
  } else if (peer.path !== 'sfu') {
    dropStaging(peer);
    setSource(peer.video, new MediaStream(), 'sfu');
  }
  peer.path = path;
}

/** @param {Peer} peer */
function dropStaging(peer) {
  if (!peer.staging) return;
  peer.staging.srcObject = null;
  peer.staging.remove();
  peer.staging = null;
}

/**
 * Closes the browser-to-browser link to `peer`, if any.
 * @param {Peer} peer
 */
function retireLink(peer) {
  peer.link?.close();
  peer.link = null;
  peer.meter = null;
}

// ---- Peers ------------------------------------------------------------------

/**
 * The entry (and tile) for `info`, made if new; a peer that comes back is
 * no longer "away".
 * @param {PeerInfo} info
 * @returns {Peer}
 */
function peerFor(info) {
  const existing = state.peers.get(info.id);
  if (existing) {
    clearTimeout(existing.grace);
    existing.grace = undefined;
    existing.info = { ...existing.info, ...info };
    return existing;
  }
  const { tile, video } = makeTile();
  /** @type {Peer} */
  const peer = {
    info, tile, video, link: null, meter: null, sfuMeter: null,
    path: state.mode, staging: null, peerSwitched: false,
    level: new LevelMeter((_, speaking) => {
      if (state.mode === 'p2p') tile.classList.toggle('speaking', speaking);
    }),
  };
  tile.dataset.path = peer.path;
  state.peers.set(info.id, peer);
  renderTile(peer);
  updateWaiting();
  return peer;
}

/**
 * Makes sure there is a working link to `info`: keeps one that still works
 * (a peer back after a reconnect), else makes a new one.
 * @param {PeerInfo} info
 * @param {boolean} polite
 * @param {boolean} initiator
 */
function ensurePeer(info, polite, initiator) {
  const peer = peerFor(info);
  if (peer.link && peer.link.healthy) {
    renderTile(peer);
    return;
  }
  retireLink(peer);
  usePath(peer, 'p2p');
  peer.link = makeLink(info, polite, initiator);
  peer.meter = new QualityMeter(peer.link.pc);
  wireLink(peer);
  renderTile(peer);
  status('connecting_to', { name: info.name });
  updateWaiting();
}

/**
 * A peer of a group call: a tile filled by the SFU. A browser-to-browser
 * link that still works stays until the SFU brings the peer's media.
 * @param {PeerInfo} info
 */
function ensureSfuPeer(info) {
  const peer = peerFor(info);
  if (peer.link && !peer.link.healthy) retireLink(peer);
  if (!peer.link) usePath(peer, 'sfu');
  renderTile(peer);
  scheduleSync(peer);
  updateWaiting();
}

/**
 * @param {PeerInfo} info
 * @param {boolean} polite
 * @param {boolean} initiator
 */
function makeLink(info, polite, initiator) {
  const session = /** @type {Session} */ (state.session);
  metrics.links++;
  return new PeerLink({
    id: info.id,
    name: info.name,
    polite,
    initiator,
    iceServers,
    relayOnly: /** @type {HTMLInputElement} */ ($('relay-only')).checked,
    media: state.media,
    send: (data) => session.signal(info.id, data),
  });
}

/** @param {Peer} peer */
function wireLink(peer) {
  const link = /** @type {PeerLink} */ (peer.link);
  const { tile } = peer;
  if (peer.path === 'p2p') setSource(peer.video, link.remote, 'p2p');
  if (state.speakerId) setSinkId(peer.video, state.speakerId);
  link.addEventListener('track', () => {
    if (peer.link === link && peer.path === 'p2p') setSource(peer.video, link.remote, 'p2p');
  });
  link.addEventListener('state', (ev) => {
    const s = /** @type {CustomEvent} */ (ev).detail;
    if (state.peers.get(link.id)?.link !== link) return;
    tile.dataset.connection = s;
    if (state.mode === 'sfu' && (s === 'failed' || s === 'closed')) {
      // A group call: the SFU takes over what this link carried.
      retireLink(peer);
      if (peer.path === 'p2p') {
        usePath(peer, 'sfu');
        scheduleSync(peer);
      }
      return;
    }
    if (s === 'connected' && ['connecting_to', 'ice_restart'].includes(state.status?.key)) status(null);
    if (s === 'failed') {
      // Gone for good if the server no longer lists it either.
      if (peer.grace) removePeer(link.id);
      else status('peer_failed', { name: peer.info.name });
    }
  });
  link.addEventListener('ice-restart', () => {
    if (peer.link === link && peer.path === 'p2p') status('ice_restart', { name: peer.info.name });
  });
}

/** Peers whose connection dropped (not hung up) and who may come back
 *  with their old id: by id, when. @type {Map<string, number>} */
const lost = new Map();

/** @param {{peer: string, reason: string}} msg */
function onPeerLeft({ peer: id, reason }) {
  const peer = state.peers.get(id);
  if (!peer) return;
  if (reason === 'disconnected' && (peer.path === 'sfu' || peer.link?.healthy)) {
    // It may come back with its old id; media may still be flowing
    // browser to browser.
    startGrace(peer, peer.path === 'sfu' ? SFU_GRACE_MS : timings.graceMs);
    return;
  }
  removePeer(id);
  if (reason !== 'left') lost.set(id, performance.now());
  // Hanging up is a choice: said once. A dropped connection may come back:
  // said while we would wait for it, then it goes.
  if (reason === 'left') status('peer_left', { name: peer.info.name });
  else status('peer_lost', { name: peer.info.name });
}

/**
 * @param {Peer} peer
 * @param {number} [ms]
 */
function startGrace(peer, ms = timings.graceMs) {
  if (peer.grace) return;
  lost.set(peer.info.id, performance.now());
  peer.tile.classList.add('away');
  peer.grace = setTimeout(() => {
    if (state.peers.get(peer.info.id) !== peer) return;
    removePeer(peer.info.id);
    status('peer_gone', { name: peer.info.name });
  }, ms);
  renderTile(peer);
}

/** @param {string} id */
function removePeer(id) {
  const peer = state.peers.get(id);
  if (!peer) return;
  clearTimeout(peer.grace);
  retireLink(peer);
  peer.level.stop();
  peer.staging = null;
  for (const v of peer.tile.querySelectorAll('video')) v.srcObject = null;
  peer.tile.remove();
  state.peers.delete(id);
  state.recent = state.recent.filter((r) => r !== id);
  syncing.delete(peer);
  lastFrame.delete(id);
  updateWaiting();
  refreshPeople();
}

/** @param {{from: string, data: any}} msg */
function onSignal({ from, data }) {
  const peer = state.peers.get(from);
  if (!peer) return;
  if (data?.sfu === true) {
    // The peer gets our media through the SFU now.
    peer.peerSwitched = true;
    if (peer.path === 'sfu') retireLink(peer);
    return;
  }
  if (!peer.link) return; // A group call: no browser-to-browser link here.
  if (peer.link.isNewSession(data)) {
    // The peer made a new connection to us: follow it with a new link.
    const polite = peer.link.polite;
    retireLink(peer);
    usePath(peer, 'p2p');
    peer.link = makeLink(peer.info, polite, false);
    peer.meter = new QualityMeter(peer.link.pc);
    wireLink(peer);
  }
  peer.link.handle(data);
}

// ---- Tiles ------------------------------------------------------------------

function makeVideo() {
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  armFrames(video);
  return video;
}

/** Three bars that move while the tile's person speaks (CSS shows them
 *  on a `.speaking` tile only), beside the ring, as Meet shows it. */
function talking() {
  const bars = document.createElement('span');
  bars.className = 'talking';
  bars.setAttribute('aria-hidden', 'true');
  bars.append(document.createElement('i'), document.createElement('i'), document.createElement('i'));
  return bars;
}

/** A tile for one remote peer; filled in by renderTile. */
function makeTile() {
  const tile = document.createElement('figure');
  tile.className = 'tile';
  const video = makeVideo();
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  avatar.setAttribute('aria-hidden', 'true');
  placeholder.append(avatar);
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'tile-name';
  const muted = document.createElement('span');
  muted.className = 'tile-muted';
  muted.setAttribute('role', 'img');
  const away = document.createElement('span');
  away.className = 'tile-away';
  caption.append(muted, talking(), name, away);
  const pin = document.createElement('button');
  pin.type = 'button';
  pin.className = 'pin';
  pin.innerHTML = PIN_ICON;
  pin.addEventListener('click', () => togglePin(/** @type {string} */ (tile.dataset.peer)));
  // Picture-in-picture where the browser offers it to pages (Chromium,
  // Firefox ESR 153); a Firefox without the API has its own switch on the
  // picture's right edge, which nothing covers.
  const pip = document.createElement('button');
  pip.type = 'button';
  pip.className = 'pip';
  pip.innerHTML = PIP_ICON;
  pip.hidden = !document.pictureInPictureEnabled;
  pip.setAttribute('aria-pressed', 'false');
  pip.addEventListener('click', () => togglePip(/** @type {string} */ (tile.dataset.peer)));
  tile.append(placeholder, video, caption, pin, pip);
  // Our own tile (in a group) stays last.
  const tiles = $('tiles');
  const self = $('self');
  if (self.parentElement === tiles) tiles.insertBefore(tile, self);
  else tiles.append(tile);
  return { tile, video };
}

/**
 * Plays `stream` on `video`, and keeps counting the frames it shows.
 * @param {HTMLVideoElement} video
 * @param {MediaStream} stream
 * @param {RoomMode} path where the stream comes from
 */
function setSource(video, stream, path) {
  // Not a stream without tracks (yet): see showSelf.
  video.srcObject = stream.getTracks().length > 0 ? stream : null;
  video.dataset.path = path;
  armFrames(video);
}

/** @type {WeakMap<HTMLVideoElement, number>} */
const frameRequests = new WeakMap();
/** By peer id: when the last frame was shown on its tile. @type {Map<string, number>} */
const lastFrame = new Map();

/**
 * Calls onFrame for every frame `video` shows (again after a new source).
 * @param {HTMLVideoElement} video
 */
function armFrames(video) {
  if (!('requestVideoFrameCallback' in video)) {
    /** @type {HTMLVideoElement} */ (video).addEventListener('loadeddata', () => onFrame(video, performance.now()));
    return;
  }
  const pending = frameRequests.get(video);
  if (pending !== undefined) video.cancelVideoFrameCallback(pending);
  /** @param {number} now */
  const loop = (now) => {
    frameRequests.set(video, video.requestVideoFrameCallback(loop));
    onFrame(video, now);
  };
  frameRequests.set(video, video.requestVideoFrameCallback(loop));
}

/**
 * A frame was shown on `video`, at `now`.
 * @param {HTMLVideoElement} video
 * @param {number} now
 */
function onFrame(video, now) {
  const id = /** @type {HTMLElement | null} */ (video.parentElement)?.dataset.peer;
  const peer = id ? state.peers.get(id) : undefined;
  if (!id || !peer) return;
  if (video === peer.staging) promote(peer);
  if (video !== peer.video) return;
  peer.tile.classList.add('has-video');
  metrics.firstRemoteFrame ??= performance.now();
  if (video.dataset.path === 'sfu' && metrics.firstSfuFrame[id] === undefined) {
    metrics.firstSfuFrame[id] = performance.now();
    state.sfu?.mark(`first frame of ${id}`);
  }
  const last = lastFrame.get(id);
  if (last !== undefined) metrics.frameGaps[id] = Math.max(metrics.frameGaps[id] ?? 0, now - last);
  lastFrame.set(id, now);
  metrics.framesPresented[id] = (metrics.framesPresented[id] ?? 0) + 1;
}

/** By connection: how many bytes it had received, and when that last grew.
 *  @type {WeakMap<RTCPeerConnection, {bytes: number, at: number}>} */
const received = new WeakMap();

/**
 * How long nothing at all has arrived on `pc`: no media, no RTCP, no ICE
 * check (all of which keep coming on a healthy link, even with the
 * microphone muted and a still screen shared, whose frames may be rare).
 * @param {RTCPeerConnection} pc
 */
async function silentFor(pc) {
  const report = await pc.getStats();
  let bytes = 0;
  report.forEach((s) => {
    if (s.type === 'candidate-pair') bytes += s.bytesReceived ?? 0;
  });
  const now = performance.now();
  const last = received.get(pc);
  if (!last || bytes > last.bytes) {
    received.set(pc, { bytes, at: now });
    return 0;
  }
  return now - last.at;
}

let checking = false;

/**
 * Marks tiles whose media stopped arriving: their connection (the link,
 * or the SFU session) is broken, or nothing has come in on it for a
 * while. The mark goes as soon as anything arrives again.
 */
async function checkHealth() {
  const now = performance.now();
  for (const [at, when] of lost) if (now - when > timings.lostNoticeMs) lost.delete(at);
  if (document.visibilityState === 'hidden' || checking) return;
  checking = true;
  try {
    for (const [id, peer] of state.peers) {
      // Who speaks, in a call of two: from the peer's audio as it plays.
      const stream = peer.video.srcObject;
      const audio = stream instanceof MediaStream ? stream.getAudioTracks()[0] ?? null : null;
      peer.level.setTrack(state.mode === 'p2p' && peer.info.media?.audio !== false ? audio : null);
      fitPicture(peer);
      const pc = peer.path === 'p2p' ? peer.link?.pc : state.sfu?.pc;
      const broken = pc ? ['disconnected', 'failed'].includes(pc.connectionState) : false;
      const stalled = pc && pc.connectionState === 'connected' ? (await silentFor(pc)) > STALL_MS : false;
      if (state.peers.get(id) !== peer) continue;
      // A tile left out of the layout gets no video: nothing to judge.
      const unstable = !peer.grace && !peer.tile.classList.contains('offstage') && (broken || stalled);
      if (unstable === peer.tile.classList.contains('unstable')) continue;
      peer.tile.classList.toggle('unstable', unstable);
      if (unstable) metrics.unstable[id] = (metrics.unstable[id] ?? 0) + 1;
      renderTile(peer);
    }
  } finally {
    checking = false;
  }
}

/** A camera picture whose shape is this close to its tile's fills the
 *  tile, cropped a little, rather than leaving bars; beyond it (a portrait
 *  phone on a wide screen) the whole picture shows. */
const CROP_UP_TO = 1.5;

/**
 * Crops a camera's picture to fill its tile when that costs little of it;
 * a shared screen is always shown whole.
 * @param {Peer} peer
 */
function fitPicture(peer) {
  const { video, tile } = peer;
  const screen = Boolean(peer.info.media?.screen);
  const tileShape = tile.clientWidth / Math.max(1, tile.clientHeight);
  const shape = video.videoWidth / Math.max(1, video.videoHeight);
  const crop = !screen && video.videoWidth > 0 && Math.abs(Math.log(shape / tileShape)) <= Math.log(CROP_UP_TO);
  tile.classList.toggle('crop', crop);
}

/** Forgets the longest frame gaps so far (the gap under way still counts). */
function resetFrameGaps() {
  for (const id of Object.keys(metrics.frameGaps)) metrics.frameGaps[id] = 0;
}

/**
 * Shows a peer's name and media state. Names are set as text, never HTML.
 * @param {Peer} peer
 */
function renderTile(peer) {
  const { tile, info } = peer;
  const media = info.media ?? { audio: true, video: true, screen: false };
  tile.dataset.peer = info.id;
  tile.classList.toggle('video-off', !media.video && !media.screen);
  tile.classList.toggle('audio-off', !media.audio);
  tile.classList.toggle('screen', media.screen);
  const avatar = /** @type {HTMLElement} */ (tile.querySelector('.avatar'));
  avatar.textContent = Array.from(info.name)[0]?.toUpperCase() ?? '?';
  avatar.style.setProperty('--avatar', avatarColour(info.name));
  /** @type {HTMLElement} */ (tile.querySelector('.tile-name')).textContent = info.name;
  const muted = /** @type {HTMLElement} */ (tile.querySelector('.tile-muted'));
  if (media.audio) muted.replaceChildren();
  else if (!muted.firstChild) muted.innerHTML = MUTED_ICON;
  if (media.audio) muted.removeAttribute('aria-label');
  else muted.setAttribute('aria-label', t('muted'));
  muted.title = media.audio ? '' : t('muted');
  // Off is off: a microphone the server says is off (its owner's choice or
  // a host's) is not played, whatever its link still carries.
  peer.video.muted = !media.audio;
  const unstable = !peer.grace && tile.classList.contains('unstable');
  const away = /** @type {HTMLElement} */ (tile.querySelector('.tile-away'));
  const awayText = peer.grace ? t('peer_reconnecting') : unstable ? t('peer_unstable') : '';
  // A weak-signal sign before the words, as Meet and Jitsi show one.
  if (!awayText) away.replaceChildren();
  else if (away.textContent !== awayText) away.innerHTML = `${WEAK_ICON}<span></span>`;
  if (awayText) /** @type {HTMLElement} */ (away.lastElementChild).textContent = awayText;
  tile.classList.toggle('away', Boolean(peer.grace));
  peer.video.setAttribute('aria-label', t('remote_video', { name: info.name }));
  renderPin(/** @type {HTMLElement} */ (tile.querySelector('.pin')), state.pinned === info.id, info.name);
  const pip = /** @type {HTMLElement} */ (tile.querySelector('.pip'));
  const floating = Boolean(document.pictureInPictureElement) && document.pictureInPictureElement === peer.video;
  pip.setAttribute('aria-pressed', String(floating));
  const pipLabel = floating ? t('pip_exit') : t('pip', { name: info.name });
  pip.setAttribute('aria-label', pipLabel);
  pip.title = pipLabel;
}

/**
 * Shows a peer's video in the browser's floating window, or brings it back.
 * @param {string} id
 */
async function togglePip(id) {
  const peer = state.peers.get(id);
  if (!peer) return;
  try {
    if (document.pictureInPictureElement === peer.video) await document.exitPictureInPicture();
    else await peer.video.requestPictureInPicture();
  } catch (err) {
    console.warn('webconf: picture-in-picture failed', err);
  }
}

// The floating window opens and closes by the browser's hand too.
for (const type of ['enterpictureinpicture', 'leavepictureinpicture']) {
  document.addEventListener(type, () => {
    for (const peer of state.peers.values()) renderTile(peer);
  }, true);
}

/**
 * A calm colour of its own for each name, the same on every screen.
 * @param {string} name
 */
function avatarColour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + (c.codePointAt(0) ?? 0)) % 360;
  return `hsl(${h} 35% 38%)`;
}

/**
 * @param {HTMLElement} button
 * @param {boolean} pinned
 * @param {string} name
 */
function renderPin(button, pinned, name) {
  button.setAttribute('aria-pressed', String(pinned));
  const label = t(pinned ? 'unpin' : 'pin', { name });
  button.setAttribute('aria-label', label);
  button.title = label;
}

/**
 * Pins a tile (a peer id, or SELF) to the stage, or unpins it. Local to
 * this viewer: the others' layouts do not change.
 * @param {string | null} id
 */
function togglePin(id) {
  setPinned(state.pinned === id ? null : id);
}

/** @param {string | null} id a peer id, SELF, or null (nothing pinned) */
function setPinned(id) {
  state.pinned = id;
  for (const peer of state.peers.values()) renderTile(peer);
  layout();
}

function updateWaiting() {
  $('waiting').hidden = state.peers.size > 0;
  document.body.dataset.peers = String(state.peers.size);
  layout();
}

/**
 * One remote peer fills the stage and our own view floats over it; from
 * three people on, everyone (us included) gets a tile in a grid, or, with a
 * tile pinned (or someone's screen shared), that tile on the stage and the
 * others in a strip. Past the visible maximum, the least recent speakers
 * are left out and counted in a "+N more" tile.
 */
function layout() {
  const tiles = $('tiles');
  const self = $('self');
  // A group, or a call of two where the other presents: our own view
  // becomes a tile (beside a shared screen, never over it).
  const presenter = state.peers.size >= 1 ? presenterOf() : null;
  const group = state.peers.size >= 2 || Boolean(presenter);
  if (state.pinned && state.pinned !== SELF && !state.peers.has(state.pinned)) state.pinned = null;
  const spot = group ? (state.pinned ?? presenter?.info.id ?? null) : null;
  document.body.dataset.layout = !group ? 'solo' : spot ? 'spotlight' : 'grid';
  if (group && self.parentElement !== tiles) tiles.append(self);
  else if (!group && self.parentElement === tiles) {
    $('waiting').after(self);
    // Floating again: the place the stage layout gave it must go too.
    for (const p of ['left', 'top', 'width', 'height']) self.style.removeProperty(p);
  }

  const shown = visiblePeers(spot);
  /** @type {Peer[]} */
  const hidden = [];
  for (const [id, peer] of state.peers) {
    const off = !shown.has(id);
    peer.tile.classList.toggle('offstage', off);
    peer.tile.classList.toggle('spotlit', id === spot);
    if (off) hidden.push(peer);
  }
  self.classList.toggle('spotlit', spot === SELF);
  renderPin($('self-pin'), state.pinned === SELF, t('you'));
  renderMore(hidden);

  // Who is presenting, for everyone (and "you" for the presenter), unless
  // the stage shows someone else by choice.
  const banner = $('presenting');
  const sharer = state.media.screen ? null : (presenter ?? presenterOf());
  banner.hidden = !(state.media.screen || (sharer && (!spot || spot === sharer.info.id)));
  $('presenting-text').textContent = state.media.screen ? t('you_presenting')
    : sharer ? t('presenting', { name: sharer.info.name }) : '';
  // Ours: stopped from where it is said, as in Meet.
  $('presenting-stop').hidden = !state.media.screen;
  // Status lines make way for it.
  document.body.toggleAttribute('data-presenting', !banner.hidden);
  fitGrid();
}

/** The remote peer sharing a screen, if any (the first one listed). */
function presenterOf() {
  for (const peer of state.peers.values()) {
    if (peer.info.media?.screen && !peer.grace) return peer;
  }
  return null;
}

/**
 * The remote peers whose tiles are shown: all of them up to the visible
 * maximum; past it the one on the stage, screen shares, then the most
 * recent speakers, then those who never spoke, in the order they came.
 * @param {string | null} spot
 * @returns {Set<string>}
 */
function visiblePeers(spot) {
  const ids = [...state.peers.keys()];
  const max = Math.max(1, state.maxTiles);
  if (ids.length <= max) return new Set(ids);
  /** @param {string} id */
  const rank = (id) => {
    if (id === spot) return -2;
    if (state.peers.get(id)?.info.media?.screen) return -1;
    const i = state.recent.indexOf(id);
    return i >= 0 ? i : state.recent.length + ids.indexOf(id);
  };
  return new Set(ids.sort((a, b) => rank(a) - rank(b)).slice(0, max));
}

/** @type {HTMLElement | null} */
let moreTile = null;

/**
 * The "+N more" tile: who is in the call but not shown.
 * @param {Peer[]} hidden
 */
function renderMore(hidden) {
  const tiles = $('tiles');
  if (hidden.length === 0) {
    moreTile?.remove();
    return;
  }
  if (!moreTile) {
    moreTile = document.createElement('div');
    moreTile.id = 'more';
    moreTile.className = 'more';
    moreTile.setAttribute('role', 'img');
  }
  const names = hidden.map((p) => p.info.name);
  const label = t('more_label', { n: hidden.length, names: names.join(', ') });
  moreTile.setAttribute('aria-label', label);
  moreTile.title = label;
  const count = document.createElement('span');
  count.className = 'more-count';
  count.textContent = t('more', { n: hidden.length });
  const faces = document.createElement('span');
  faces.className = 'more-faces';
  faces.setAttribute('aria-hidden', 'true');
  for (const name of names.slice(0, 4)) {
    const face = document.createElement('span');
    face.textContent = Array.from(name)[0]?.toUpperCase() ?? '?';
    faces.append(face);
  }
  moreTile.replaceChildren(faces, count);
  // Before our own tile, which stays last.
  const self = $('self');
  tiles.insertBefore(moreTile, self.parentElement === tiles ? self : null);
}

/** Picks the number of columns that gives each tile the largest picture. */
function fitGrid() {
  const tiles = $('tiles');
  const mode = document.body.dataset.layout;
  const items = /** @type {HTMLElement[]} */ ([...tiles.children]);
  if (mode !== 'spotlight') {
    for (const el of items) for (const p of ['left', 'top', 'width', 'height']) el.style.removeProperty(p);
  }
  if (mode !== 'grid') {
    tiles.style.removeProperty('--cols');
    tiles.style.removeProperty('--rows');
    if (mode === 'spotlight') placeSpotlight(tiles, items.filter((el) => !el.classList.contains('offstage')));
    reportLayout();
    return;
  }
  const n = items.filter((el) => !el.classList.contains('offstage')).length;
  const css = getComputedStyle(tiles);
  const gap = parseFloat(css.columnGap) || 0;
  const width = tiles.clientWidth - (parseFloat(css.paddingLeft) || 0) - (parseFloat(css.paddingRight) || 0);
  const height = tiles.clientHeight - (parseFloat(css.paddingTop) || 0) - (parseFloat(css.paddingBottom) || 0);
  let best = 1;
  let bestArea = -1;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = (width - gap * (cols - 1)) / cols;
    const h = (height - gap * (rows - 1)) / rows;
    const area = Math.min(w, h * TILE_ASPECT) * Math.min(h, w / TILE_ASPECT);
    if (area > bestArea + 1) {
      best = cols;
      bestArea = area;
    }
  }
  tiles.style.setProperty('--cols', String(best));
  tiles.style.setProperty('--rows', String(Math.ceil(n / best)));
  reportLayout();
}

/**
 * The stage layout: the spotlit tile takes the room the strip leaves; the
 * strip runs down the right side, or along the bottom on a narrow (portrait)
 * screen, with tiles of the picture shape, centred.
 * @param {HTMLElement} tiles
 * @param {HTMLElement[]} items the shown tiles
 */
function placeSpotlight(tiles, items) {
  const css = getComputedStyle(tiles);
  const gap = parseFloat(css.columnGap) || 0;
  const left = parseFloat(css.paddingLeft) || 0;
  const top = parseFloat(css.paddingTop) || 0;
  const width = tiles.clientWidth - left - (parseFloat(css.paddingRight) || 0);
  const height = tiles.clientHeight - top - (parseFloat(css.paddingBottom) || 0);
  const main = items.find((el) => el.classList.contains('spotlit')) ?? items[0];
  const strip = items.filter((el) => el !== main);
  const k = strip.length;
  /**
   * @param {HTMLElement} el
   * @param {number} x
   * @param {number} y
   * @param {number} w
   * @param {number} h
   */
  const place = (el, x, y, w, h) => {
    el.style.left = `${left + x}px`;
    el.style.top = `${top + y}px`;
    el.style.width = `${Math.max(0, w)}px`;
    el.style.height = `${Math.max(0, h)}px`;
  };
  if (k === 0) {
    place(main, 0, 0, width, height);
    return;
  }
  const bottom = width < 600 || width < height;
  if (bottom) {
    // Tiles side by side under the stage, at most a fifth of the height.
    const h = Math.min(height * 0.2, (width - gap * (k - 1)) / k / TILE_ASPECT);
    const w = h * TILE_ASPECT;
    const x0 = (width - (w * k + gap * (k - 1))) / 2;
    strip.forEach((el, i) => place(el, x0 + i * (w + gap), height - h, w, h));
    place(main, 0, 0, width, height - h - gap);
  } else {
    // A column on the right, at most a fifth of the width.
    const w = Math.min(width * 0.2, 16 * 16, ((height - gap * (k - 1)) / k) * TILE_ASPECT);
    const h = w / TILE_ASPECT;
    const y0 = (height - (h * k + gap * (k - 1))) / 2;
    strip.forEach((el, i) => place(el, width - w, y0 + i * (h + gap), w, h));
    place(main, 0, 0, width - w - gap, height);
  }
}

/**
 * @param {HTMLMediaElement} el
 * @param {string} id
 */
function setSinkId(el, id) {
  const withSink = /** @type {HTMLMediaElement & {setSinkId?: (id: string) => Promise<void>}} */ (el);
  withSink.setSinkId?.(id).catch((err) => console.warn('webconf: cannot route audio', err));
}

/** @param {string} id */
function setSpeaker(id) {
  state.speakerId = id;
  for (const peer of state.peers.values()) {
    for (const video of peer.tile.querySelectorAll('video')) setSinkId(video, id);
  }
}

// ---- Media changes ----------------------------------------------------------

let lastFlags = JSON.stringify(state.media.flags);
state.media.addEventListener('change', () => {
  const flags = JSON.stringify(state.media.flags);
  if (flags !== lastFlags) {
    lastFlags = flags;
    state.session?.setMedia(state.media.flags);
  }
});

// ---- Quality panel ------------------------------------------------------------

/** @type {ReturnType<typeof setInterval> | undefined} */
let qualityTimer;

function toggleQuality() {
  const panel = $('quality');
  panel.hidden = !panel.hidden;
  $('quality-toggle').setAttribute('aria-pressed', String(!panel.hidden));
  clearInterval(qualityTimer);
  if (!panel.hidden) {
    renderQuality();
    qualityTimer = setInterval(renderQuality, 1000);
  }
}

/**
 * The meter for what reaches us of `peer` now: its link's, or its share of
 * the SFU session.
 * @param {Peer} peer
 * @returns {QualityMeter | null}
 */
function meterOf(peer) {
  if (peer.path === 'p2p' && peer.meter) return peer.meter;
  const sfu = state.sfu;
  if (!sfu) return null;
  if (peer.sfuMeter?.pc !== sfu.pc) peer.sfuMeter = sfuMeter(sfu, peer.info.id);
  return peer.sfuMeter;
}

/**
 * @param {SfuLink} sfu
 * @param {string} id
 */
function sfuMeter(sfu, id) {
  return new QualityMeter(sfu.pc, (s) => {
    const { mids, trackIds } = sfu.midsOf(id);
    return mids.has(s.mid) || trackIds.has(s.trackIdentifier);
  });
}

/** Whether the quality panel shows its technical details. */
let qualityDetails = false;

/**
 * What a selected candidate pair means for people.
 * @param {RoomMode} path how the peer's media reaches us
 * @param {string} pair local/remote candidate types, e.g. "host/prflx"
 */
function connectionWords(path, pair) {
  if (path === 'sfu') return pair.includes('relay') ? 'q_sfu_relayed' : 'q_sfu';
  if (pair.includes('relay')) return 'q_relayed';
  return pair === 'host/host' ? 'q_direct_lan' : 'q_direct';
}

/**
 * A word for how the connection is doing.
 * @param {number} loss per cent
 * @param {number | null} rtt ms
 */
function rating(loss, rtt) {
  if (loss < 2 && (rtt ?? 0) < 300) return 'q_good';
  if (loss < 8 && (rtt ?? 0) < 600) return 'q_fair';
  return 'q_poor';
}

async function renderQuality() {
  const body = $('quality-body');
  const rows = [];
  for (const peer of state.peers.values()) {
    const meter = meterOf(peer);
    if (!meter) continue;
    const q = await meter.sample();
    const section = document.createElement('dl');
    const heading = document.createElement('h3');
    heading.textContent = peer.info.name;
    // In words first; the numbers and candidate types behind "Details".
    /** @type {[any, string][]} */
    const plain = [
      ['q_connection', q.path ? t(connectionWords(peer.path, q.path)) : '–'],
      ['q_rating', q.path ? t(rating(q.lossPercent, q.rttMs)) : '–'],
      ['q_video', q.width ? `${q.width}×${q.height}, ${q.fps.toFixed(0)} fps` : '–'],
    ];
    /** @type {[any, string][]} */
    const technical = [
      ['q_in', `${q.bitrateIn.toFixed(0)} kbit/s`],
      ['q_out', `${q.bitrateOut.toFixed(0)} kbit/s`],
      ['q_loss', `${q.lossPercent.toFixed(1)} %`],
      ['q_rtt', q.rttMs === null ? '–' : `${q.rttMs.toFixed(0)} ms`],
      ['q_codecs', [q.videoCodec, q.audioCodec].filter(Boolean).join(' / ') || '–'],
      ['q_path', q.path ? `${peer.path === 'sfu' ? t('q_via_server') : ''}${q.path}${q.relayProtocol ? ` (${q.relayProtocol})` : ''}` : '–'],
    ];
    for (const [key, value] of qualityDetails ? [...plain, ...technical] : plain) {
      const dt = document.createElement('dt');
      dt.textContent = t(key);
      const dd = document.createElement('dd');
      dd.textContent = value;
      section.append(dt, dd);
    }
    rows.push(heading, section);
  }
  if (rows.length === 0) {
    const p = document.createElement('p');
    p.textContent = t('q_none');
    rows.push(p);
  }
  body.replaceChildren(...rows);
}

// ---- Ending -------------------------------------------------------------------

function endCall() {
  for (const id of [...state.peers.keys()]) removePeer(id);
  stopSfu();
  state.session?.close();
  state.session = null;
  clearInterval(qualityTimer);
  // Turn the camera off: its light should not stay on after the call.
  state.media.stopAll();
  status(null);
}

/**
 * Says why the call ended (or never began), in the chosen language: the
 * key stays on the title, so a change of language says it again.
 * @param {string} key
 */
function endedTitle(key) {
  const title = $('ended-title');
  title.setAttribute('data-i18n', key);
  title.textContent = t(/** @type {any} */ (key));
  // Never in the call, so not "Rejoin": the page asks again.
  const again = key === 'locked_title' ? 'try_again' : 'rejoin';
  const button = $('rejoin');
  button.setAttribute('data-i18n', again);
  button.textContent = t(again);
}

async function hangUp() {
  await state.session?.leave();
  endCall();
  endedTitle('you_left');
  show('ended');
  $('rejoin').focus();
}

async function copyLink() {
  const input = /** @type {HTMLInputElement} */ ($('share-link'));
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand?.('copy');
  }
  status('copied');
}

// ---- Test and diagnostics hooks -------------------------------------------

/**
 * A summary of what reaches us from each peer, for the browser tests: from
 * its link's getStats(), or (`path: 'sfu'`) from the SFU session's, for the
 * mids that carry this peer's media.
 */
async function stats() {
  const result = [];
  for (const [id, peer] of state.peers) {
    const link = peer.path === 'p2p' ? peer.link : null;
    const sfu = state.sfu;
    const pc = link ? link.pc : sfu?.pc;
    const q = pc ? await (link || !sfu ? new QualityMeter(pc) : sfuMeter(sfu, id)).sample() : null;
    const [local, remote] = q?.path?.split('/') ?? [];
    const common = {
      id,
      name: peer.info.name,
      path: link ? 'p2p' : 'sfu',
      connection: pc?.connectionState ?? 'closed',
      video: { framesDecoded: q?.framesDecoded ?? 0, frameWidth: q?.width ?? 0, frameHeight: q?.height ?? 0 },
      audio: { packetsReceived: q?.audioPacketsReceived ?? 0, level: q?.audioLevel ?? 0 },
      pair: q?.path ? { local, remote, relayProtocol: q.relayProtocol } : null,
      lossPercent: q?.lossPercent ?? 0,
      ufrag: /a=ice-ufrag:(\S+)/.exec(pc?.localDescription?.sdp ?? '')?.[1] ?? null,
    };
    if (link) {
      result.push({
        ...common,
        iceRestarts: link.iceRestarts,
        offers: link.offers,
        sending: link.pc.getSenders().map((s) => s.track?.id ?? null),
        session: link.session,
      });
    } else {
      result.push({
        ...common,
        iceRestarts: 0,
        offers: sfu?.offers ?? 0,
        sending: sfu ? Object.values(sfu.sending) : [],
        session: sfu?.id ?? null,
        tracks: sfu ? [...sfu.tracks].filter(([, o]) => o.peer === id).map(([mid, o]) => ({ mid, source: o.source })) : [],
      });
    }
  }
  return result;
}

/**
 * The SFU session, for the browser tests: its state, the selected candidate
 * pair (with addresses), what it sends, and the tracks it receives.
 */
async function sfuStats() {
  const sfu = state.sfu;
  if (!sfu) return null;
  const report = await sfu.pc.getStats();
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  let pair = null;
  /** @type {Map<string, any>} inbound-rtp by mid */
  const inbound = new Map();
  /** @type {Record<string, any>} outbound-rtp by our source */
  const outbound = {};
  const ours = Object.fromEntries(Object.entries(sfu.transceivers).map(([source, tr]) => [tr.mid, source]));
  for (const s of byId.values()) {
    if (s.type === 'inbound-rtp' && s.mid !== undefined) inbound.set(s.mid, s);
    if (s.type === 'outbound-rtp' && ours[s.mid]) {
      const o = (outbound[ours[s.mid]] ??= { packetsSent: 0, framesEncoded: 0, keyFramesEncoded: 0, pliCount: 0, firCount: 0, nackCount: 0 });
      for (const k of ['packetsSent', 'framesEncoded', 'keyFramesEncoded', 'pliCount', 'firCount', 'nackCount']) o[k] += s[k] ?? 0;
      if (s.rid) {
        (o.layers ??= []).push({ rid: s.rid, active: s.active ?? null, frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0, framesEncoded: s.framesEncoded ?? 0,
          limitation: s.qualityLimitationReason ?? null });
        o.layers.sort((/** @type {any} */ x, /** @type {any} */ y) => x.rid.localeCompare(y.rid));
      }
    }
    if (s.type !== 'transport' || !s.selectedCandidatePairId) continue;
    const p = byId.get(s.selectedCandidatePairId);
    const candidate = (/** @type {any} */ c) => c && ({
      type: c.candidateType, protocol: c.protocol, address: c.address ?? c.ip, port: c.port,
      relayProtocol: c.relayProtocol ?? null,
    });
    if (p) pair = { local: candidate(byId.get(p.localCandidateId)), remote: candidate(byId.get(p.remoteCandidateId)), state: p.state };
  }
  return {
    session: sfu.id,
    created: sfu.created,
    connection: sfu.pc.connectionState,
    ice: sfu.pc.iceConnectionState,
    signaling: sfu.pc.signalingState,
    established: sfu.established,
    offers: sfu.offers,
    answers: sfu.answers,
    pair,
    sending: sfu.sending,
    outbound,
    tracks: [...sfu.tracks].map(([mid, o]) => {
      const s = inbound.get(mid);
      return {
        mid, peer: o.peer, source: o.source, arrived: sfu.remote.has(mid),
        muted: sfu.remote.get(mid)?.track.muted ?? null,
        packetsReceived: s?.packetsReceived ?? 0, bytesReceived: s?.bytesReceived ?? 0,
        framesReceived: s?.framesReceived ?? null, framesDecoded: s?.framesDecoded ?? null,
        keyFramesDecoded: s?.keyFramesDecoded ?? null, pliCount: s?.pliCount ?? null,
        firCount: s?.firCount ?? null, nackCount: s?.nackCount ?? null,
      };
    }),
  };
}

Object.assign(window, {
  webconf: {
    state,
    metrics,
    stats,
    sfuStats,
    /** The current SFU session's timeline: [ms since page load, what]. */
    sfuTimeline: () => state.sfu?.timeline ?? [],
    resetFrameGaps,
    timings,
    /** The microphone meter's input and level now. */
    audio: () => ({ context: audioState(), level: micMeter.level, track: micMeter.track?.readyState ?? null }),
    /** Pins a peer's tile (SELF: our own) to the stage; null unpins. */
    pin: (/** @type {string | null} */ id) => setPinned(id),
    /** Sets the visible maximum of remote videos (tests: small numbers). */
    setMaxTiles: (/** @type {number} */ n) => {
      state.maxTiles = n;
      layout();
    },
    /** The tiles' layout now: which is on the stage, which are hidden. */
    layoutState: () => ({
      layout: document.body.dataset.layout,
      pinned: state.pinned,
      spotlit: document.querySelector('#tiles > .spotlit')?.getAttribute('data-peer')
        ?? (document.querySelector('#tiles > .spotlit') ? SELF : null),
      hidden: [...state.peers].filter(([, p]) => p.tile.classList.contains('offstage')).map(([id]) => id),
      more: moreTile?.isConnected ? moreTile.querySelector('.more-count')?.textContent : null,
      moreLabel: moreTile?.isConnected ? moreTile.getAttribute('aria-label') : null,
      presenting: $('presenting').hidden ? null : $('presenting-text').textContent,
    }),
    /** The tiles we last reported to the SFU (`sfu-layout`). */
    get layoutSent() {
      return lastLayout ? JSON.parse(lastLayout) : null;
    },
    /** How many chat messages the page remembers as shown. */
    chatSeen: () => chat.seen.size,
    /** The SFU session (an SfuLink), if any. */
    get sfu() {
      return state.sfu;
    },
  },
});

// ---- Start ----------------------------------------------------------------

function start() {
  setupLanguageSwitch();
  const raw = decodeURIComponent(location.pathname.replace(/^\/r\//, '').replace(/\/$/, ''));
  state.room = canonicalRoom(raw);
  if (!state.room) {
    location.replace('/');
    return;
  }
  $('room-name').textContent = state.room;
  document.title = `${state.room} · webconf`;
  $('join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    join();
  });
  $('hangup').addEventListener('click', hangUp);
  $('copy-link').addEventListener('click', copyLink);
  $('quality-details').addEventListener('click', () => {
    qualityDetails = !qualityDetails;
    $('quality-details').setAttribute('aria-expanded', String(qualityDetails));
    renderQuality();
  });
  $('self-pin').addEventListener('click', () => togglePin(SELF));
  $('presenting-stop').addEventListener('click', () => state.media.stopScreen());
  $('rejoin').addEventListener('click', () => location.reload());
  $('knock-cancel').addEventListener('click', () => {
    state.session?.close();
    state.session = null;
    location.reload();
  });
  $('full-retry').addEventListener('click', () => location.reload());
  window.addEventListener('pagehide', () => state.session?.close());
  new ResizeObserver(fitGrid).observe($('tiles'));
  setInterval(checkHealth, 500);
  document.addEventListener('visibilitychange', reportLayout);
  controls.render();
  startLobby();
}

start();
