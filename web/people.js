// The participants panel: who is in the call and in what role, who waits
// in the lobby, and for hosts the room's access settings and an actions
// menu per person. The server checks every host action; this panel only
// offers them to hosts and renders what the server says.

import { t } from './i18n.js';

/** @typedef {import('./protocol.js').PeerInfo} PeerInfo */
/** @typedef {{locked: boolean, lobby: boolean, password: boolean}} RoomSettings */
/** @typedef {'mute' | 'stop-video' | 'stop-screen' | 'ask-unmute' | 'make-host' | 'remove'} HostAction */

/**
 * What the panel shows, kept by the call page.
 * @typedef {object} PeopleState
 * @property {string} you
 * @property {string} name our own name
 * @property {'host' | 'guest'} role
 * @property {{audio: boolean, video: boolean, screen: boolean}} media ours
 * @property {PeerInfo[]} peers the others, oldest first
 * @property {Map<string, string>} lobby who waits, by id: name
 * @property {RoomSettings} settings
 */

/**
 * What the panel asks of the session.
 * @typedef {object} PeopleActions
 * @property {(peer: string) => void} admit
 * @property {(peer: string) => void} deny
 * @property {(peer: string, action: HostAction, bar?: boolean) => void} moderate
 * @property {(s: {locked?: boolean, lobby?: boolean, password?: string}) => void} settings
 * @property {() => void} endCall
 */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

const MIC_OFF = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z"/><path d="M4 4l16 16" stroke="currentColor" stroke-width="2"/></svg>';

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class PeoplePanel {
  /** @param {PeopleActions} actions */
  constructor(actions) {
    this.actions = actions;
    /** @type {PeopleState | null} */
    this.state = null;
    $('people-close').addEventListener('click', () => this.toggle(false));
    $('people-toggle').addEventListener('click', () => this.toggle());
    $('chat-toggle').addEventListener('click', () => this.toggle(false));
    $('room-lock').addEventListener('change', (ev) => {
      this.actions.settings({ locked: /** @type {HTMLInputElement} */ (ev.target).checked });
    });
    $('room-lobby').addEventListener('change', (ev) => {
      this.actions.settings({ lobby: /** @type {HTMLInputElement} */ (ev.target).checked });
    });
    $('room-password-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = /** @type {HTMLInputElement} */ ($('room-password'));
      const password = input.value;
      if (!password) return;
      this.actions.settings({ password });
      input.value = '';
    });
    $('room-password-clear').addEventListener('click', () => this.actions.settings({ password: '' }));
    $('end-for-all').addEventListener('click', () => this.actions.endCall());
    document.addEventListener('langchange', () => this.render());
    // One open menu at a time, closed by a click elsewhere.
    document.addEventListener('click', (ev) => {
      for (const d of document.querySelectorAll('#people details[open]')) {
        if (!d.contains(/** @type {Node} */ (ev.target))) d.removeAttribute('open');
      }
    });
  }

  get open() {
    return !$('people').hidden;
  }

  /** @param {boolean} [on] */
  toggle(on = !this.open) {
    // The chat and this panel share their place: one at a time.
    if (on && !$('chat').hidden) $('chat-close').click();
    $('people').hidden = !on;
    $('people-toggle').setAttribute('aria-pressed', String(on));
    if (on) this.render();
  }

  /** @param {PeopleState} state */
  update(state) {
    this.state = state;
    const waiting = state.role === 'host' ? state.lobby.size : 0;
    const badge = $('people-badge');
    badge.hidden = waiting === 0;
    badge.textContent = String(waiting);
    this.render();
  }

  render() {
    const s = this.state;
    if (!s) return;
    const host = s.role === 'host';
    $('people-title').textContent = t('people_title', { n: s.peers.length + 1 });
    // The lobby, for hosts.
    const lobby = $('people-lobby');
    lobby.hidden = !host || s.lobby.size === 0;
    const waitList = $('people-waiting');
    waitList.replaceChildren();
    for (const [id, name] of s.lobby) {
      const li = el('li', 'person');
      li.dataset.peer = id;
      li.append(el('span', 'person-name', name));
      const admit = el('button', 'primary small', t('admit'));
      admit.dataset.action = 'admit';
      admit.addEventListener('click', () => this.actions.admit(id));
      const deny = el('button', 'small', t('deny'));
      deny.dataset.action = 'deny';
      deny.addEventListener('click', () => this.actions.deny(id));
      li.append(admit, deny);
      waitList.append(li);
    }
    // Everyone in the call, us first.
    const list = $('people-list');
    list.replaceChildren();
    list.append(this.person({ id: s.you, name: s.name, media: s.media, role: s.role }, true, false));
    for (const p of s.peers) list.append(this.person(p, false, host));
    // The room's access, for hosts.
    $('room-access').hidden = !host;
    /** @type {HTMLInputElement} */ ($('room-lock')).checked = s.settings.locked;
    /** @type {HTMLInputElement} */ ($('room-lobby')).checked = s.settings.lobby;
    $('room-password-state').textContent = t(s.settings.password ? 'password_on' : 'password_off');
    $('room-password-clear').hidden = !s.settings.password;
    $('room-locked-note').hidden = !s.settings.locked;
  }

  /**
   * @param {PeerInfo} p
   * @param {boolean} self
   * @param {boolean} actions whether to offer host actions
   */
  person(p, self, actions) {
    const li = el('li', 'person');
    li.dataset.peer = p.id;
    const name = el('span', 'person-name', self ? t('you_named', { name: p.name }) : p.name);
    li.append(name);
    if (p.role === 'host') li.append(el('span', 'role-badge', t('host')));
    if (!p.media.audio) {
      const m = el('span', 'person-muted');
      m.innerHTML = MIC_OFF;
      m.setAttribute('role', 'img');
      m.setAttribute('aria-label', t('muted'));
      li.append(m);
    }
    if (!actions) return li;
    const menu = /** @type {HTMLDetailsElement} */ (el('details', 'person-menu'));
    const summary = el('summary', 'icon', '⋮');
    summary.setAttribute('aria-label', t('actions_for', { name: p.name }));
    menu.append(summary);
    const items = el('div', 'menu-items');
    items.setAttribute('role', 'menu');
    /** @type {[HostAction, string, boolean?][]} */
    const entries = [];
    if (p.media.audio) entries.push(['mute', 'act_mute']);
    else entries.push(['ask-unmute', 'act_ask_unmute']);
    if (p.media.video) entries.push(['stop-video', 'act_stop_video']);
    if (p.media.screen) entries.push(['stop-screen', 'act_stop_screen']);
    if (p.role !== 'host') entries.push(['make-host', 'act_make_host']);
    entries.push(['remove', 'act_remove', false], ['remove', 'act_remove_bar', true]);
    for (const [action, key, bar] of entries) {
      const b = el('button', action === 'remove' ? 'menu-item danger' : 'menu-item', t(/** @type {any} */ (key)));
      b.setAttribute('role', 'menuitem');
      b.dataset.action = bar ? 'remove-bar' : action;
      b.addEventListener('click', () => {
        menu.removeAttribute('open');
        this.actions.moderate(p.id, action, bar);
      });
      items.append(b);
    }
    menu.append(items);
    li.append(menu);
    return li;
  }
}
