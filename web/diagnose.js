// /diagnose: tries camera, microphone, the WebSocket, STUN, and TURN over
// UDP and TCP, and says in plain words whether calls will work.

import { Session, signalingUrl } from './protocol.js';
import { t, setupLanguageSwitch } from './i18n.js';

/** How long one network check may take. */
const CHECK_MS = 6000;

/**
 * @typedef {'running' | 'pass' | 'warn' | 'fail' | 'skip'} Outcome
 * @typedef {{id: string, outcome: Outcome, detail: string}} Result
 */

/** @type {Map<string, Result>} */
const results = new Map();

const CHECKS = ['camera', 'mic', 'websocket', 'stun', 'turn_udp', 'turn_tcp'];

/**
 * @param {string} id
 * @param {Outcome} outcome
 * @param {string} [detail]
 */
function report(id, outcome, detail = '') {
  results.set(id, { id, outcome, detail });
  render();
}

function render() {
  const list = /** @type {HTMLElement} */ (document.getElementById('checks'));
  list.replaceChildren(
    ...CHECKS.map((id) => {
      const r = results.get(id) ?? { id, outcome: 'running', detail: '' };
      const li = document.createElement('li');
      li.dataset.check = id;
      li.dataset.outcome = r.outcome;
      const name = document.createElement('span');
      name.className = 'check-name';
      name.textContent = t(/** @type {any} */ (`diag_${id}`));
      const outcome = document.createElement('span');
      outcome.className = 'check-outcome';
      outcome.textContent = t(/** @type {any} */ (`diag_${r.outcome}`));
      const detail = document.createElement('span');
      detail.className = 'check-detail';
      detail.textContent = r.detail;
      li.append(outcome, name, detail);
      return li;
    }),
  );
}

/** @param {MediaStreamConstraints} constraints @param {string} id */
async function checkDevice(constraints, id) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return report(id, 'fail', t(window.isSecureContext ? 'media_failed' : 'media_insecure'));
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    const track = stream.getTracks()[0];
    const s = track?.getSettings() ?? {};
    const detail = id === 'camera' ? `${s.width ?? '?'}×${s.height ?? '?'}` : (track?.label ?? '');
    for (const tr of stream.getTracks()) tr.stop();
    report(id, 'pass', detail);
  } catch (/** @type {any} */ err) {
    const key = err?.name === 'NotAllowedError' ? 'media_denied' : err?.name === 'NotFoundError' ? 'media_missing' : err?.name === 'NotReadableError' ? 'media_busy' : 'media_failed';
    report(id, 'fail', t(key));
  }
}

/** Our own addresses, from the host candidates seen while gathering. */
const hostAddresses = new Set();

/**
 * Gathers candidates with `servers` and returns those of `type` (noting
 * host candidates' addresses on the way).
 * @param {RTCIceServer[]} servers
 * @param {'srflx' | 'relay'} type
 * @param {RTCIceTransportPolicy} policy
 * @returns {Promise<RTCIceCandidate[]>}
 */
async function gather(servers, type, policy) {
  const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: policy });
  /** @type {RTCIceCandidate[]} */
  const found = [];
  const done = new Promise((resolve) => {
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate) return resolve(undefined);
      if (candidate.type === 'host' && candidate.address) hostAddresses.add(candidate.address);
      if (candidate.type === type) {
        found.push(candidate);
        resolve(undefined);
      }
    };
    setTimeout(resolve, CHECK_MS);
  });
  pc.createDataChannel('diagnose');
  await pc.setLocalDescription();
  await done;
  pc.close();
  return found;
}

/**
 * @param {import('./protocol.js').IceServerInfo[]} servers
 * @param {string} prefix 'stun:' or 'turn:'
 * @param {string} [transport]
 */
function pick(servers, prefix, transport) {
  /** @type {RTCIceServer[]} */
  const out = [];
  for (const s of servers) {
    const urls = s.urls.filter((u) => u.startsWith(prefix) && (!transport || u.includes(`transport=${transport}`)));
    if (urls.length) out.push({ urls, username: s.username, credential: s.credential });
  }
  return out;
}

async function checkNetwork() {
  const room = `diagnose-${crypto.getRandomValues(new Uint32Array(2)).join('')}`;
  const session = new Session(signalingUrl(), { room, name: 'diagnose', media: { audio: false, video: false, screen: false } });
  /** @type {import('./protocol.js').Joined} */
  let joined;
  const started = performance.now();
  try {
    joined = await Promise.race([
      session.start(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), CHECK_MS)),
    ]);
    report('websocket', 'pass', `${Math.round(performance.now() - started)} ms`);
  } catch (/** @type {any} */ err) {
    session.close();
    report('websocket', 'fail', t('server_unreachable'));
    for (const id of ['stun', 'turn_udp', 'turn_tcp']) report(id, 'skip');
    return;
  }
  // Stay in the room until the relays are tried: TURN credentials are good
  // only while their peer is in a room.
  try {
    await checkIce(joined.ice_servers);
  } finally {
    await session.leave();
  }
}

/**
 * Tries STUN and TURN with the servers a `joined` gave.
 * @param {import('./protocol.js').IceServerInfo[]} servers
 */
async function checkIce(servers) {
  hostAddresses.clear();
  const stun = pick(servers, 'stun:');
  let noSrflx = false;
  if (stun.length === 0) {
    report('stun', 'skip', t('diag_not_offered'));
  } else {
    const found = await gather(stun, 'srflx', 'all');
    if (found.length) report('stun', 'pass', t('diag_public_address', { address: found[0].address ?? '?' }));
    else {
      // No address of our own from STUN: it was blocked, or it answered
      // with an address we have already (no NAT: browsers then offer no
      // separate candidate). The relay, below, may tell which.
      noSrflx = true;
      report('stun', 'warn', t('diag_no_public_address'));
    }
  }
  /** The address the relay saw us at, if a relay answered. @type {string | null} */
  let seenAt = null;
  for (const [id, transport] of [['turn_udp', 'udp'], ['turn_tcp', 'tcp']]) {
    const turn = pick(servers, 'turn:', transport);
    if (turn.length === 0) {
      report(id, 'skip', t('diag_not_offered'));
      continue;
    }
    const found = await gather(turn, 'relay', 'all');
    seenAt ??= found[0]?.relatedAddress ?? null;
    if (found.length) report(id, 'pass', t('diag_relay_address', { address: `${found[0].address}:${found[0].port}` }));
    else report(id, 'fail', t('diag_no_relay'));
  }
  if (noSrflx && seenAt && hostAddresses.has(seenAt)) {
    // The server sees us at an address of this machine: no NAT in the way.
    report('stun', 'pass', t('diag_no_nat', { address: seenAt }));
  }
}

/** The plain-words conclusion. */
function verdict() {
  const ok = (/** @type {string} */ id) => results.get(id)?.outcome === 'pass';
  const media = ok('camera') || ok('mic');
  let key;
  if (!ok('websocket')) key = 'diag_verdict_fail_server';
  else if (ok('turn_udp') || ok('turn_tcp')) key = ok('stun') ? 'diag_verdict_work' : 'diag_verdict_relay';
  else if (ok('stun')) key = 'diag_verdict_most';
  else key = 'diag_verdict_lan';
  const el = /** @type {HTMLElement} */ (document.getElementById('verdict'));
  const kind = key === 'diag_verdict_fail_server' ? 'fail' : key === 'diag_verdict_lan' ? 'fail' : key === 'diag_verdict_most' ? 'warn' : 'pass';
  el.dataset.verdict = kind;
  el.dataset.key = key;
  el.textContent = t(/** @type {any} */ (key)) + (media ? '' : ` ${t('diag_no_media')}`);
  document.body.dataset.state = 'done';
}

async function run() {
  document.body.dataset.state = 'running';
  results.clear();
  render();
  const el = /** @type {HTMLElement} */ (document.getElementById('verdict'));
  el.dataset.verdict = 'running';
  el.dataset.key = 'diag_checking';
  el.textContent = t('diag_checking');
  await checkDevice({ video: true }, 'camera');
  await checkDevice({ audio: true }, 'mic');
  await checkNetwork();
  verdict();
}

document.addEventListener('langchange', () => {
  render();
  const el = /** @type {HTMLElement} */ (document.getElementById('verdict'));
  if (el.dataset.key === 'diag_checking') el.textContent = t('diag_checking');
  else if (el.dataset.key) verdict();
});
setupLanguageSwitch();
document.getElementById('again')?.addEventListener('click', run);
Object.assign(window, { webconf: { results } });
run();
