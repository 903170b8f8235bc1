// The call page: lobby (camera preview, name), the call itself, and the
// pages around it (full, ended). Speaks to the server through protocol.js
// and to peers through call.js; everything here is about the DOM.

import { Signaling, ProtocolError, canonicalRoom, signalingUrl } from './protocol.js';
import { PeerLink, openLocalMedia } from './call.js';
import { t, setupLanguageSwitch } from './i18n.js';

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const NAME_KEY = 'webconf.name';

/**
 * What the page is doing; mirrored in body[data-state] for styling and
 * for the browser tests.
 * @typedef {'lobby' | 'joining' | 'call' | 'full' | 'ended'} PageState
 */

const state = {
  /** @type {string | null} */
  room: null,
  /** @type {MediaStream} */
  local: new MediaStream(),
  /** @type {Signaling | null} */
  signaling: null,
  /** @type {Map<string, {link: PeerLink, tile: HTMLElement}>} */
  peers: new Map(),
  /** @type {import('./protocol.js').Joined | null} */
  joined: null,
  /** The last status line shown, as a key and its variables, so a
   *  language switch can re-render it. */
  /** @type {{key: any, vars: Record<string, string | number>} | null} */
  status: null,
};

/** Timings for people and tests, in ms since the page started loading. */
const metrics = {
  /** @type {number | null} */
  joinedAt: null,
  /** @type {number | null} */
  firstRemoteFrame: null,
};

/** @param {PageState} next */
function show(next) {
  document.body.dataset.state = next;
  $('lobby').hidden = next !== 'lobby' && next !== 'joining';
  $('call').hidden = next !== 'call';
  $('full').hidden = next !== 'full';
  $('ended').hidden = next !== 'ended';
}

/** Status lines that are news, not a lasting state: they fade away. */
const TRANSIENT = new Set(['peer_joined', 'copied']);
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

document.addEventListener('langchange', () => {
  if (state.status) $('status').textContent = t(state.status.key, state.status.vars);
  renderMediaStatus();
});

// ---- Lobby ----------------------------------------------------------------

/** @type {string | null} */
let mediaProblem = null;
let mediaReady = false;

function renderMediaStatus() {
  const el = $('media-status');
  if (!mediaReady) return;
  const kinds = new Set(state.local.getTracks().map((tr) => tr.kind));
  let text = t('media_ok');
  if (mediaProblem && kinds.size === 0) text = t(/** @type {any} */ (`media_${mediaProblem}`));
  else if (!kinds.has('video') && kinds.has('audio')) text = t('media_audio_only');
  else if (!kinds.has('audio') && kinds.has('video')) text = t('media_video_only');
  el.textContent = text;
  el.classList.toggle('warn', kinds.size < 2);
}

async function startLobby() {
  show('lobby');
  const nameInput = /** @type {HTMLInputElement} */ ($('name'));
  nameInput.value = savedName() ?? `${t('guest')} ${100 + Math.floor(Math.random() * 900)}`;
  const { stream, problem } = await openLocalMedia();
  state.local = stream;
  mediaProblem = problem;
  mediaReady = true;
  /** @type {HTMLVideoElement} */ ($('preview-video')).srcObject = stream;
  renderMediaStatus();
  const join = /** @type {HTMLButtonElement} */ ($('join'));
  join.disabled = false;
  join.focus();
}

function savedName() {
  try {
    return localStorage.getItem(NAME_KEY);
  } catch {
    return null;
  }
}

/** @param {string} name */
function saveName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // Private modes may forbid storage; the name is then asked again.
  }
}

// ---- Joining and the call -------------------------------------------------

async function join() {
  const nameInput = /** @type {HTMLInputElement} */ ($('name'));
  const name = nameInput.value.trim() || t('guest');
  saveName(name);
  const joinButton = /** @type {HTMLButtonElement} */ ($('join'));
  joinButton.disabled = true;
  joinButton.textContent = t('joining');
  show('joining');
  status(null);

  const signaling = new Signaling(signalingUrl());
  state.signaling = signaling;
  signaling.addEventListener('peer-joined', (ev) => onPeerJoined(/** @type {CustomEvent} */ (ev).detail));
  signaling.addEventListener('peer-left', (ev) => onPeerLeft(/** @type {CustomEvent} */ (ev).detail));
  signaling.addEventListener('signal', (ev) => {
    const { from, data } = /** @type {CustomEvent} */ (ev).detail;
    state.peers.get(from)?.link.handle(data);
  });
  signaling.addEventListener('error', (ev) => {
    const err = /** @type {CustomEvent} */ (ev).detail;
    console.warn('webconf: server error', err.code, err.message);
  });
  signaling.addEventListener('close', (ev) => onServerClosed(/** @type {CustomEvent} */ (ev).detail));

  try {
    await signaling.connect();
    const joined = await signaling.join(/** @type {string} */ (state.room), name);
    onJoined(joined);
  } catch (err) {
    signaling.close();
    state.signaling = null;
    joinButton.disabled = false;
    joinButton.textContent = t('join');
    if (err instanceof ProtocolError && err.code === 'room-full') {
      show('full');
    } else if (err instanceof ProtocolError && err.code === 'unreachable') {
      show('lobby');
      status('server_unreachable');
    } else {
      show('lobby');
      status('error', { message: err instanceof Error ? err.message : String(err) });
    }
  }
}

/** @param {import('./protocol.js').Joined} joined */
function onJoined(joined) {
  state.joined = joined;
  metrics.joinedAt = performance.now();
  $('room-name').textContent = joined.room;
  /** @type {HTMLVideoElement} */ ($('local-video')).srcObject = state.local;
  /** @type {HTMLInputElement} */ ($('share-link')).value = location.href;
  show('call');
  for (const peer of joined.peers) addPeer(peer, joined.polite);
  updateWaiting();
  $('hangup').focus();
}

/** @param {{peer: import('./protocol.js').PeerInfo, polite: boolean}} msg */
function onPeerJoined({ peer, polite }) {
  addPeer(peer, polite);
  status('peer_joined', { name: peer.name });
  updateWaiting();
}

/** @param {{peer: string, reason: string}} msg */
function onPeerLeft({ peer }) {
  const entry = state.peers.get(peer);
  if (!entry) return;
  entry.link.close();
  entry.tile.remove();
  state.peers.delete(peer);
  status('peer_left', { name: entry.link.name });
  updateWaiting();
}

/**
 * @param {import('./protocol.js').PeerInfo} peer
 * @param {boolean} polite
 */
function addPeer(peer, polite) {
  const signaling = /** @type {Signaling} */ (state.signaling);
  state.peers.get(peer.id)?.link.close();
  state.peers.get(peer.id)?.tile.remove();
  const link = new PeerLink({
    id: peer.id,
    name: peer.name,
    polite,
    iceServers: state.joined?.ice_servers ?? [],
    local: state.local,
    send: (data) => signaling.signal(peer.id, data),
  });
  const tile = makeTile(peer.name, link.remote);
  state.peers.set(peer.id, { link, tile });
  status('connecting_to', { name: peer.name });
  link.addEventListener('state', (ev) => {
    const s = /** @type {CustomEvent} */ (ev).detail;
    tile.dataset.connection = s;
    if (s === 'connected' && state.status?.key === 'connecting_to') status(null);
    if (s === 'failed') status('peer_failed', { name: peer.name });
  });
  link.addEventListener('track', () => {
    const video = /** @type {HTMLVideoElement} */ (tile.querySelector('video'));
    video.srcObject = link.remote;
  });
}

/**
 * A tile for one remote peer. Names are set as text, never as HTML.
 * @param {string} name
 * @param {MediaStream} stream
 */
function makeTile(name, stream) {
  const tile = document.createElement('figure');
  tile.className = 'tile';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.setAttribute('aria-label', t('remote_video', { name }));
  video.srcObject = stream;
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  placeholder.textContent = Array.from(name)[0]?.toUpperCase() ?? '?';
  const caption = document.createElement('figcaption');
  caption.textContent = name;
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

function updateWaiting() {
  $('waiting').hidden = state.peers.size > 0;
  document.body.dataset.peers = String(state.peers.size);
}

/** @param {{code: number, reason: string, wasOpen: boolean}} detail */
function onServerClosed({ reason }) {
  if (document.body.dataset.state !== 'call') return;
  endCall();
  $('ended-title').textContent = reason === 'server shutting down' ? t('server_shutdown') : t('server_closed');
  $('ended-text').textContent = '';
  show('ended');
}

function endCall() {
  for (const { link, tile } of state.peers.values()) {
    link.close();
    tile.remove();
  }
  state.peers.clear();
  state.signaling?.close();
  state.signaling = null;
  // Turn the camera off: its light should not stay on after the call.
  for (const track of state.local.getTracks()) track.stop();
  status(null);
}

async function hangUp() {
  await state.signaling?.leave();
  endCall();
  $('ended-title').textContent = t('you_left');
  $('ended-text').textContent = '';
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
 * A summary of each peer connection's getStats(), for tests (and later the
 * quality panel).
 */
async function stats() {
  const result = [];
  for (const [id, { link }] of state.peers) {
    const report = await link.pc.getStats();
    const out = {
      id,
      name: link.name,
      connection: link.pc.connectionState,
      video: { framesDecoded: 0, frameWidth: 0, frameHeight: 0, packetsReceived: 0 },
      audio: { packetsReceived: 0 },
      /** @type {{local: string, remote: string} | null} */
      pair: null,
    };
    /** @type {Map<string, any>} */
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    for (const s of byId.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.video.framesDecoded += s.framesDecoded ?? 0;
        out.video.packetsReceived += s.packetsReceived ?? 0;
        out.video.frameWidth = Math.max(out.video.frameWidth, s.frameWidth ?? 0);
        out.video.frameHeight = Math.max(out.video.frameHeight, s.frameHeight ?? 0);
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.audio.packetsReceived += s.packetsReceived ?? 0;
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        const remote = pair && byId.get(pair.remoteCandidateId);
        if (local && remote) out.pair = { local: local.candidateType, remote: remote.candidateType };
      }
    }
    result.push(out);
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
  window.addEventListener('pagehide', () => state.signaling?.close());
  startLobby();
}

start();
