// The home page: start a call with an unguessable name, or go to one by name.

import { canonicalRoom } from './protocol.js';
import { setupLanguageSwitch } from './i18n.js';

/**
 * A room name nobody can guess: 80 random bits as 16 base-32 characters.
 * @returns {string}
 */
export function randomRoomName() {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const chars = Array.from(bytes, (b) => alphabet[b % 32]);
  return `${chars.slice(0, 4).join('')}-${chars.slice(4, 10).join('')}-${chars.slice(10).join('')}`;
}

/** @param {string} room */
function go(room) {
  location.assign(`/r/${encodeURIComponent(room)}`);
}

/**
 * Starts a call in a room nobody uses yet: the call page asks to create
 * it (`join.create`), which makes us its host.
 */
function startNew() {
  const room = randomRoomName();
  try {
    sessionStorage.setItem('webconf.create', room);
  } catch {
    // Without storage the call has no host: everyone in it is equal.
  }
  go(room);
}

setupLanguageSwitch();

// Only where the camera cannot work is there anything to say about HTTPS.
const httpsNote = document.getElementById('https-note');
if (httpsNote) httpsNote.hidden = window.isSecureContext;

// Links elsewhere (such as "start a new call" on a full call) ask for a
// fresh room with #new.
if (location.hash === '#new') startNew();

document.getElementById('start')?.addEventListener('click', startNew);

const form = /** @type {HTMLFormElement} */ (document.getElementById('join-form'));
const input = /** @type {HTMLInputElement} */ (document.getElementById('room-name'));
const error = /** @type {HTMLElement} */ (document.getElementById('room-error'));
form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const room = canonicalRoom(input.value.trim());
  if (!room) {
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  go(room);
});
input.addEventListener('input', () => {
  error.hidden = true;
  input.removeAttribute('aria-invalid');
});
