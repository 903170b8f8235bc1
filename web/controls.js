// The call's controls: microphone, camera, screen share, device choice,
// keyboard shortcuts and their help. Acts on LocalMedia; knows nothing of
// the server or of peers.

import { t } from './i18n.js';

/** @typedef {import('./call.js').LocalMedia} LocalMedia */

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** The muted sign: the microphone icon, struck through. */
export const MUTED_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z"/><path class="slash" d="M4 4l16 16"/></svg>';

export class Controls {
  /**
   * @param {LocalMedia} media
   * @param {object} hooks
   * @param {(key: any, vars?: Record<string, string | number>) => void} hooks.status shows a status line
   * @param {() => void} hooks.toggleChat
   * @param {() => void} hooks.toggleQuality
   * @param {(deviceId: string) => void} hooks.setSpeaker routes remote audio
   */
  constructor(media, hooks) {
    this.media = media;
    this.hooks = hooks;
    this.mic = $('mic');
    this.camera = $('camera');
    this.screen = $('screen');
    this.settingsDialog = /** @type {HTMLDialogElement} */ ($('settings-dialog'));
    this.helpDialog = /** @type {HTMLDialogElement} */ ($('help-dialog'));
    this.speakerId = '';
    /** Sources a host holds off for us. @type {{audio: boolean, video: boolean, screen: boolean} | undefined} */
    this.held = undefined;

    this.mic.addEventListener('click', () => this.toggleMic());
    this.camera.addEventListener('click', () => this.toggleCamera());
    // The lobby's own switches and device choice act the same way.
    $('lobby-mic').addEventListener('click', () => this.toggleMic());
    $('lobby-camera').addEventListener('click', () => this.toggleCamera());
    this.screen.addEventListener('click', () => this.toggleScreen());
    $('quality-toggle').addEventListener('click', () => hooks.toggleQuality());
    $('settings').addEventListener('click', () => this.openSettings());
    $('help').addEventListener('click', () => this.helpDialog.showModal());
    this.moreMenu = $('more-menu');
    this.moreToggle = $('more-toggle');
    this.moreToggle.addEventListener('click', () => {
      const open = !this.moreMenu.classList.contains('open');
      this.setMenuOpen(open);
      // The menu comes before its button in the page: a keyboard goes to
      // its first choice rather than past it.
      if (open) /** @type {HTMLElement | null} */ ([...this.moreMenu.querySelectorAll('button')].find((b) => b.offsetParent))?.focus();
    });
    // A choice made in the menu closes it, and so does a touch elsewhere.
    this.moreMenu.addEventListener('click', (ev) => {
      if (/** @type {HTMLElement} */ (ev.target).closest('button')) this.setMenuOpen(false);
    });
    document.addEventListener('pointerdown', (ev) => {
      const target = /** @type {Node} */ (ev.target);
      if (!this.moreMenu.contains(target) && !this.moreToggle.contains(target)) this.setMenuOpen(false);
    });
    for (const [id, kind] of [['camera-select', 'videoinput'], ['mic-select', 'audioinput'], ['speaker-select', 'audiooutput'],
      ['lobby-camera-select', 'videoinput'], ['lobby-mic-select', 'audioinput']]) {
      $(id).addEventListener('change', (ev) => {
        this.chooseDevice(kind, /** @type {HTMLSelectElement} */ (ev.target).value);
      });
    }
    navigator.mediaDevices?.addEventListener?.('devicechange', () => {
      if (this.settingsDialog.open) this.fillDevices();
      if (document.body.dataset.state === 'lobby') this.fillLobbyDevices();
    });
    media.addEventListener('change', () => this.render());
    document.addEventListener('keydown', (ev) => this.onKey(ev));
    this.render();
  }

  /**
   * What a host holds off for us: those toggles do not turn on.
   * @param {{audio: boolean, video: boolean, screen: boolean}} held
   */
  setHeld(held) {
    this.held = { ...held };
    this.render();
  }

  /**
   * Whether `what` is held off by a host (and says so).
   * @param {'audio' | 'video' | 'screen'} what
   */
  isHeld(what) {
    if (!this.held?.[what]) return false;
    this.hooks.status('held_by_host');
    return true;
  }

  /** Shows each toggle's state (aria-pressed drives the look, too). */
  render() {
    const f = this.media.flags;
    this.mic.setAttribute('aria-pressed', String(f.audio));
    this.camera.setAttribute('aria-pressed', String(f.video));
    this.screen.setAttribute('aria-pressed', String(f.screen));
    this.mic.classList.toggle('held', Boolean(this.held?.audio));
    this.camera.classList.toggle('held', Boolean(this.held?.video));
    this.screen.classList.toggle('held', Boolean(this.held?.screen));
    $('lobby-mic').setAttribute('aria-pressed', String(f.audio));
    $('lobby-camera').setAttribute('aria-pressed', String(f.video));
    $('self').classList.toggle('video-off', !this.media.videoTrack);
    $('preview').classList.toggle('video-off', !this.media.videoTrack);
    // Our own muted sign, as the others see it on our tile.
    const muted = $('self-muted');
    if (f.audio) muted.replaceChildren();
    else if (!muted.firstChild) muted.innerHTML = MUTED_ICON;
    if (f.audio) muted.removeAttribute('aria-label');
    else muted.setAttribute('aria-label', t('muted'));
  }

  /**
   * Opens or closes the "More" menu (a phone's bar holds only the main
   * controls; on a wider screen the menu's controls sit in the bar and
   * this changes nothing visible).
   * @param {boolean} open
   */
  setMenuOpen(open) {
    this.moreMenu.classList.toggle('open', open);
    this.moreToggle.setAttribute('aria-expanded', String(open));
  }

  /** The lobby's device choice, once the browser names the devices. */
  async fillLobbyDevices() {
    await this.fillDevices([
      ['lobby-camera-select', 'videoinput', this.media.cameraId],
      ['lobby-mic-select', 'audioinput', this.media.micId],
    ]);
    $('lobby-devices').hidden = !this.media.camera && !this.media.mic;
  }

  async toggleMic() {
    if (!this.media.micOn && this.isHeld('audio')) return;
    if (!this.media.mic && !this.media.micOn) {
      try {
        await this.media.setMic(true);
      } catch {
        this.hooks.status('mic_unavailable');
      }
      return;
    }
    await this.media.setMic(!this.media.micOn);
  }

  async toggleCamera() {
    if (!this.media.cameraOn && this.isHeld('video')) return;
    try {
      await this.media.setCamera(!this.media.cameraOn);
    } catch {
      this.hooks.status('camera_unavailable');
    }
  }

  async toggleScreen() {
    if (this.media.screen) {
      this.media.stopScreen();
      return;
    }
    if (this.isHeld('screen')) return;
    try {
      await this.media.startScreen();
    } catch (/** @type {any} */ err) {
      // Cancelling the browser's picker is a choice, not an error.
      // The browser's own words are for developers (and in its language,
      // not the page's): log them, tell people what it means for them.
      console.warn('webconf: screen share failed', err);
      if (err?.name === 'NotAllowedError') return;
      const unsupported = ['NotFoundError', 'NotSupportedError', 'TypeError'].includes(err?.name) || !navigator.mediaDevices?.getDisplayMedia;
      this.hooks.status(unsupported ? 'screen_unsupported' : 'screen_failed');
    }
  }

  async openSettings() {
    $('settings-error').hidden = true;
    await this.fillDevices();
    this.settingsDialog.showModal();
  }

  /**
   * Lists the devices of each kind in its select, the one in use chosen.
   * @param {[string, MediaDeviceKind, string | undefined][]} [lists] select id, kind, current
   */
  async fillDevices(lists) {
    const devices = await navigator.mediaDevices?.enumerateDevices?.() ?? [];
    lists ??= [
      ['camera-select', 'videoinput', this.media.cameraId],
      ['mic-select', 'audioinput', this.media.micId],
      ['speaker-select', 'audiooutput', this.speakerId],
    ];
    for (const [id, kind, current] of lists) {
      const select = /** @type {HTMLSelectElement} */ ($(id));
      select.replaceChildren();
      const ofKind = devices.filter((d) => d.kind === kind);
      if (kind === 'audiooutput' && !('setSinkId' in HTMLMediaElement.prototype)) {
        select.disabled = true;
      }
      if (ofKind.length === 0) {
        const option = new Option(t('default_device'), '');
        select.append(option);
      }
      ofKind.forEach((d, i) => {
        const option = new Option(d.label || `${t(kind === 'videoinput' ? 'camera_device' : kind === 'audioinput' ? 'mic_device' : 'speaker_device')} ${i + 1}`, d.deviceId);
        select.append(option);
      });
      if (current) select.value = current;
    }
  }

  /**
   * @param {string} kind
   * @param {string} deviceId
   */
  async chooseDevice(kind, deviceId) {
    try {
      if (kind === 'videoinput') await this.media.useCamera(deviceId);
      else if (kind === 'audioinput') await this.media.useMic(deviceId);
      else {
        this.speakerId = deviceId;
        this.hooks.setSpeaker(deviceId);
      }
    } catch (/** @type {any} */ err) {
      console.warn('webconf: device switch failed', err);
      if (document.body.dataset.state === 'lobby') {
        this.hooks.status('device_failed');
        return;
      }
      const el = $('settings-error');
      el.textContent = t('device_failed');
      el.hidden = false;
    }
  }

  /** @param {KeyboardEvent} ev */
  onKey(ev) {
    if (document.body.dataset.state !== 'call') return;
    if (ev.key === 'Escape' && this.moreMenu.classList.contains('open')) {
      this.setMenuOpen(false);
      this.moreToggle.focus();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const target = /** @type {HTMLElement} */ (ev.target);
    if (target.closest('input, textarea, select, [contenteditable]') || document.querySelector('dialog[open]')) return;
    const actions = /** @type {Record<string, () => void>} */ ({
      m: () => this.toggleMic(),
      v: () => this.toggleCamera(),
      s: () => this.toggleScreen(),
      c: () => this.hooks.toggleChat(),
      q: () => this.hooks.toggleQuality(),
      '?': () => this.helpDialog.showModal(),
    });
    const action = actions[ev.key.toLowerCase()];
    if (action) {
      ev.preventDefault();
      action();
    }
  }
}
