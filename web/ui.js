// The call page: lobby (camera preview, name), the call itself (tiles, chat,
// quality, controls), and the pages around it (full, ended). Speaks to the
// server through protocol.js and to peers through call.js.

import { Session, ProtocolError, canonicalRoom, signalingUrl } from './protocol.js';
import { LocalMedia, PeerLink } from './call.js';
import { QualityMeter } from './quality.js';
import { ChatPanel } from './chat.js';
import { Controls } from './controls.js';
import { t, setupLanguageSwitch } from './i18n.js';

/**
 * @typedef {import('./protocol.js').Joined} Joined
 * @typedef {import('./protocol.js').PeerInfo} PeerInfo
 * @typedef {import('./protocol.js').MediaFlags} MediaFlags
 * @typedef {{link: PeerLink, tile: HTMLElement, info: PeerInfo, meter: QualityMeter,
 *            grace?: ReturnType<typeof setTimeout>}} Peer
 * @typedef {'lobby' | 'joining' | 'call' | 'full' | 'ended'} PageState
 */

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const NAME_KEY = 'webconf.name';
const RELAY_KEY = 'webconf.relayOnly';
/** How long a peer whose connection to the server dropped keeps its tile
 *  while its browser-to-browser connection still works. */
const GRACE_MS = 30_000;
/** Status lines that are news, not a lasting state: they fade away. */
const TRANSIENT = new Set(['peer_joined', 'copied', 'reconnected']);

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
  /** @type {{key: any, vars: Record<string, string | number>} | null} */
  status: null,
  speakerId: '',
};

/** Timings for people and tests, in ms since the page started loading. */
const metrics = {
  /** @type {number | null} */
  joinedAt: null,
  /** @type {number | null} */
  firstRemoteFrame: null,
  /** @type {{lost: number, rejoined: number | null}[]} */
  reconnects: [],
  /** Peer connections made (a link replaced counts again). */
  links: 0,
};

const chat = new ChatPanel((text) => state.session?.chat(text));
const controls = new Controls(state.media, {
  status: (key, vars) => status(key, vars),
  toggleChat: () => chat.toggle(),
  toggleQuality: () => toggleQuality(),
  setSpeaker: (id) => setSpeaker(id),
});

/** @param {PageState} next */
function show(next) {
  document.body.dataset.state = next;
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
  $('status').textContent = key ? t(key, vars) : '';
  clearTimeout(statusTimer);
  if (TRANSIENT.has(key)) statusTimer = setTimeout(() => status(null), 4000);
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
  for (const peer of state.peers.values()) renderTile(peer);
  if (!$('quality').hidden) renderQuality();
});

// ---- Lobby ----------------------------------------------------------------

let mediaReady = false;

function renderMediaStatus() {
  const el = $('media-status');
  if (!mediaReady) return;
  const { mic, camera, problem } = state.media;
  let text = t('media_ok');
  if (!mic && !camera) text = t(/** @type {any} */ (`media_${problem ?? 'failed'}`));
  else if (!camera) text = t('media_audio_only');
  else if (!mic) text = t('media_video_only');
  el.textContent = text;
  el.classList.toggle('warn', !mic || !camera);
}

async function startLobby() {
  show('lobby');
  const nameInput = /** @type {HTMLInputElement} */ ($('name'));
  nameInput.value = saved(NAME_KEY) ?? `${t('guest')} ${100 + Math.floor(Math.random() * 900)}`;
  /** @type {HTMLInputElement} */ ($('relay-only')).checked = saved(RELAY_KEY) === '1';
  /** @type {HTMLVideoElement} */ ($('preview-video')).srcObject = state.media.preview;
  await state.media.open();
  mediaReady = true;
  renderMediaStatus();
  const join = /** @type {HTMLButtonElement} */ ($('join'));
  join.disabled = false;
  join.focus();
}

/** @param {string} key */
function saved(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

/**
 * @param {string} key
 * @param {string} value
 */
function save(key, value) {
  try {
    localStorage.setItem(key, value);
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

  const session = new Session(signalingUrl(), {
    room: /** @type {string} */ (state.room),
    name,
    media: state.media.flags,
  });
  state.session = session;
  session.addEventListener('peer-joined', (ev) => {
    const { peer, polite } = /** @type {CustomEvent} */ (ev).detail;
    ensurePeer(peer, polite, false);
    status('peer_joined', { name: peer.name });
  });
  session.addEventListener('peer-left', (ev) => onPeerLeft(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('peer-media', (ev) => {
    const { peer, media } = /** @type {CustomEvent} */ (ev).detail;
    const entry = state.peers.get(peer);
    if (entry) {
      entry.info.media = media;
      renderTile(entry);
    }
  });
  session.addEventListener('signal', (ev) => onSignal(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('chat', (ev) => chat.add(/** @type {CustomEvent} */ (ev).detail));
  session.addEventListener('error', (ev) => {
    const err = /** @type {ProtocolError} */ (/** @type {CustomEvent} */ (ev).detail);
    if (err.request === 'chat') chat.showError(err.message);
    else console.warn('webconf: server error', err.code, err.message);
  });
  session.addEventListener('reconnecting', () => {
    if (!banner.lost) {
      banner.lost = performance.now();
      metrics.reconnects.push({ lost: banner.lost, rejoined: null });
    }
    banner('reconnecting');
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
    if (err instanceof ProtocolError && err.code === 'room-full') {
      show('full');
    } else if (err instanceof ProtocolError && (err.code === 'unreachable' || err.code === 'closed')) {
      show('lobby');
      status('server_unreachable');
    } else {
      show('lobby');
      status('error', { message: err instanceof Error ? err.message : String(err) });
    }
  }
}
/** When the connection to the server was lost, if it still is. */
banner.lost = /** @type {number | null} */ (null);

/** @param {Joined} joined */
function onJoined(joined) {
  state.joined = joined;
  metrics.joinedAt = performance.now();
  chat.you = joined.you;
  $('room-name').textContent = joined.room;
  /** @type {HTMLVideoElement} */ ($('local-video')).srcObject = state.media.preview;
  /** @type {HTMLInputElement} */ ($('share-link')).value = location.href;
  show('call');
  for (const msg of joined.chat) chat.add(msg);
  // We are the newcomer: we make the first offer to everyone here.
  for (const peer of joined.peers) ensurePeer(peer, Boolean(peer.polite), true);
  updateWaiting();
  $('hangup').focus();
}

/**
 * Back after a dropped connection. With the same id, links that still work
 * are kept: the call never stopped. With a new id, everything starts over.
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
  state.joined = joined;
  chat.you = joined.you;
  for (const msg of joined.chat) chat.add(msg);
  // Credentials may have changed (a restarted server): the next ICE
  // restart of a kept link uses the new ones.
  for (const peer of state.peers.values()) peer.link.setIceServers(joined.ice_servers);
  const present = new Set(joined.peers.map((p) => p.id));
  for (const peer of joined.peers) ensurePeer(peer, Boolean(peer.polite), true);
  for (const [id, peer] of state.peers) {
    if (!present.has(id)) startGrace(peer);
  }
  // The server may have missed our media changes while we were away.
  state.session?.setMedia(state.media.flags);
  updateWaiting();
}

/** @param {{reason: string, error?: ProtocolError}} detail */
function onEnded({ reason, error }) {
  banner(null);
  endCall();
  if (reason === 'full') {
    show('full');
    return;
  }
  $('ended-title').textContent = reason === 'replaced' ? t('replaced') : t('error', { message: error?.message ?? '' });
  show('ended');
}

// ---- Peers ------------------------------------------------------------------

/**
 * Makes sure there is a working link to `info`: keeps one that still works
 * (a peer back after a reconnect), else makes a new one.
 * @param {PeerInfo} info
 * @param {boolean} polite
 * @param {boolean} initiator
 */
function ensurePeer(info, polite, initiator) {
  const existing = state.peers.get(info.id);
  if (existing && existing.link.healthy) {
    clearTimeout(existing.grace);
    existing.grace = undefined;
    existing.info = { ...existing.info, ...info };
    renderTile(existing);
    return;
  }
  const tile = existing?.tile ?? makeTile();
  existing?.link.close();
  const link = makeLink(info, polite, initiator);
  /** @type {Peer} */
  const peer = { link, tile, info, meter: new QualityMeter(link.pc) };
  state.peers.set(info.id, peer);
  wireLink(peer);
  renderTile(peer);
  status('connecting_to', { name: info.name });
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
    iceServers: state.joined?.ice_servers ?? [],
    relayOnly: /** @type {HTMLInputElement} */ ($('relay-only')).checked,
    media: state.media,
    send: (data) => session.signal(info.id, data),
  });
}

/** @param {Peer} peer */
function wireLink(peer) {
  const { link, tile } = peer;
  const video = /** @type {HTMLVideoElement} */ (tile.querySelector('video'));
  video.srcObject = link.remote;
  if (state.speakerId) setSinkId(video, state.speakerId);
  link.addEventListener('track', () => {
    video.srcObject = link.remote;
  });
  link.addEventListener('state', (ev) => {
    const s = /** @type {CustomEvent} */ (ev).detail;
    tile.dataset.connection = s;
    if (state.peers.get(link.id)?.link !== link) return;
    if (s === 'connected' && ['connecting_to', 'ice_restart'].includes(state.status?.key)) status(null);
    if (s === 'failed') {
      // Gone for good if the server no longer lists it either.
      if (peer.grace) removePeer(link.id);
      else status('peer_failed', { name: peer.info.name });
    }
  });
  link.addEventListener('ice-restart', () => status('ice_restart', { name: peer.info.name }));
}

/** @param {{peer: string, reason: string}} msg */
function onPeerLeft({ peer: id, reason }) {
  const peer = state.peers.get(id);
  if (!peer) return;
  if (reason === 'disconnected' && peer.link.healthy) {
    // It may come back with its old id; media may still be flowing.
    startGrace(peer);
    return;
  }
  removePeer(id);
  status('peer_left', { name: peer.info.name });
}

/** @param {Peer} peer */
function startGrace(peer) {
  if (peer.grace) return;
  peer.tile.classList.add('away');
  peer.grace = setTimeout(() => {
    removePeer(peer.link.id);
    status('peer_left', { name: peer.info.name });
  }, GRACE_MS);
  renderTile(peer);
}

/** @param {string} id */
function removePeer(id) {
  const peer = state.peers.get(id);
  if (!peer) return;
  clearTimeout(peer.grace);
  peer.link.close();
  peer.tile.remove();
  state.peers.delete(id);
  updateWaiting();
}

/** @param {{from: string, data: any}} msg */
function onSignal({ from, data }) {
  const peer = state.peers.get(from);
  if (!peer) return;
  if (peer.link.isNewSession(data)) {
    // The peer made a new connection to us: follow it with a new link.
    peer.link.close();
    peer.link = makeLink(peer.info, peer.link.polite, false);
    peer.meter = new QualityMeter(peer.link.pc);
    wireLink(peer);
  }
  peer.link.handle(data);
}

// ---- Tiles ------------------------------------------------------------------

/** A tile for one remote peer; filled in by renderTile. */
function makeTile() {
  const tile = document.createElement('figure');
  tile.className = 'tile';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'tile-name';
  const muted = document.createElement('span');
  muted.className = 'tile-muted';
  const away = document.createElement('span');
  away.className = 'tile-away';
  caption.append(muted, name, away);
  tile.append(placeholder, video, caption);
  const markFrame = () => {
    tile.classList.add('has-video');
    metrics.firstRemoteFrame ??= performance.now();
  };
  if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(markFrame);
  else /** @type {HTMLVideoElement} */ (video).addEventListener('loadeddata', markFrame, { once: true });
  $('tiles').append(tile);
  return tile;
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
  /** @type {HTMLElement} */ (tile.querySelector('.placeholder')).textContent =
    Array.from(info.name)[0]?.toUpperCase() ?? '?';
  /** @type {HTMLElement} */ (tile.querySelector('.tile-name')).textContent = info.name;
  const muted = /** @type {HTMLElement} */ (tile.querySelector('.tile-muted'));
  muted.textContent = media.audio ? '' : '🔇';
  muted.setAttribute('aria-label', media.audio ? '' : t('muted'));
  muted.title = media.audio ? '' : t('muted');
  /** @type {HTMLElement} */ (tile.querySelector('.tile-away')).textContent = peer.grace ? t('peer_reconnecting') : '';
  tile.classList.toggle('away', Boolean(peer.grace));
  tile.querySelector('video')?.setAttribute('aria-label', t('remote_video', { name: info.name }));
}

function updateWaiting() {
  $('waiting').hidden = state.peers.size > 0;
  document.body.dataset.peers = String(state.peers.size);
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
    setSinkId(/** @type {HTMLVideoElement} */ (peer.tile.querySelector('video')), id);
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

async function renderQuality() {
  const body = $('quality-body');
  const rows = [];
  for (const peer of state.peers.values()) {
    const q = await peer.meter.sample();
    const section = document.createElement('dl');
    const heading = document.createElement('h3');
    heading.textContent = peer.info.name;
    /** @type {[any, string][]} */
    const items = [
      ['q_in', `${q.bitrateIn.toFixed(0)} kbit/s`],
      ['q_out', `${q.bitrateOut.toFixed(0)} kbit/s`],
      ['q_loss', `${q.lossPercent.toFixed(1)} %`],
      ['q_rtt', q.rttMs === null ? '–' : `${q.rttMs.toFixed(0)} ms`],
      ['q_video', q.width ? `${q.width}×${q.height} @ ${q.fps.toFixed(0)} fps` : '–'],
      ['q_codecs', [q.videoCodec, q.audioCodec].filter(Boolean).join(' / ') || '–'],
      ['q_path', q.path ? `${q.path}${q.relayProtocol ? ` (${q.relayProtocol})` : ''}` : '–'],
    ];
    for (const [key, value] of items) {
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
  state.session?.close();
  state.session = null;
  clearInterval(qualityTimer);
  // Turn the camera off: its light should not stay on after the call.
  state.media.stopAll();
  status(null);
}

async function hangUp() {
  await state.session?.leave();
  endCall();
  $('ended-title').textContent = t('you_left');
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
 * A summary of each link's getStats(), for the browser tests.
 */
async function stats() {
  const result = [];
  for (const [id, peer] of state.peers) {
    const q = await new QualityMeter(peer.link.pc).sample();
    const [local, remote] = q.path?.split('/') ?? [];
    result.push({
      id,
      name: peer.info.name,
      connection: peer.link.pc.connectionState,
      video: { framesDecoded: q.framesDecoded, frameWidth: q.width, frameHeight: q.height },
      audio: { packetsReceived: q.audioPacketsReceived, level: q.audioLevel },
      pair: q.path ? { local, remote, relayProtocol: q.relayProtocol } : null,
      lossPercent: q.lossPercent,
      iceRestarts: peer.link.iceRestarts,
      offers: peer.link.offers,
      sending: peer.link.pc.getSenders().map((s) => s.track?.id ?? null),
      session: peer.link.session,
      ufrag: /a=ice-ufrag:(\S+)/.exec(peer.link.pc.localDescription?.sdp ?? '')?.[1] ?? null,
    });
  }
  return result;
}

Object.assign(window, { webconf: { state, metrics, stats } });

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
  $('rejoin').addEventListener('click', () => location.reload());
  $('full-retry').addEventListener('click', () => location.reload());
  window.addEventListener('pagehide', () => state.session?.close());
  controls.render();
  startLobby();
}

start();
