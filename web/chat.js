// The chat panel: history, new messages, the input. Every piece of text a
// peer wrote is put into the page with textContent, never as HTML.

import { t } from './i18n.js';

/** @typedef {import('./protocol.js').ChatMessage} ChatMessage */

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Most messages kept on screen (the server keeps its own, shorter history). */
const MAX_SHOWN = 500;

export class ChatPanel {
  /**
   * @param {(text: string) => void} send delivers a message to the room
   */
  constructor(send) {
    this.send = send;
    this.panel = $('chat');
    this.log = /** @type {HTMLOListElement} */ ($('chat-log'));
    this.input = /** @type {HTMLTextAreaElement} */ ($('chat-input'));
    this.toggleButton = $('chat-toggle');
    this.unreadBadge = $('chat-unread');
    this.error = $('chat-error');
    this.unread = 0;
    /** @type {string | null} */
    this.you = null;
    /** Messages already shown, by sender and time, so a history replayed
     *  after a reconnect does not show them twice. */
    this.seen = new Set();

    $('chat-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (ev) => {
      // Enter sends, Shift+Enter is a new line.
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener('input', () => { this.error.hidden = true; });
    this.toggleButton.addEventListener('click', () => this.toggle());
    $('chat-close').addEventListener('click', () => this.toggle(false));
  }

  get open() {
    return !this.panel.hidden;
  }

  /** @param {boolean} [show] */
  toggle(show = !this.open) {
    this.panel.hidden = !show;
    this.toggleButton.setAttribute('aria-pressed', String(show));
    if (show) {
      this.unread = 0;
      this.renderUnread();
      this.input.focus();
      this.log.lastElementChild?.scrollIntoView({ block: 'end' });
    } else {
      this.toggleButton.focus();
    }
  }

  submit() {
    const text = this.input.value;
    if (!text.trim()) return;
    if (Array.from(text).length > 1000) {
      this.showError(t('error', { message: '1000+' }));
      return;
    }
    this.send(text);
    this.input.value = '';
  }

  /** @param {string} message */
  showError(message) {
    this.error.textContent = message;
    this.error.hidden = false;
  }

  /**
   * Adds a message to the log.
   * @param {ChatMessage} msg
   */
  add(msg) {
    const key = `${msg.from}/${msg.ts}/${msg.text}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const item = document.createElement('li');
    item.className = msg.from === this.you ? 'mine' : '';
    const head = document.createElement('div');
    head.className = 'chat-meta';
    const name = document.createElement('span');
    name.className = 'chat-name';
    if (msg.from === this.you) {
      // Re-labelled by translatePage when the language changes.
      name.dataset.i18n = 'you';
      name.textContent = t('you');
    } else {
      name.textContent = msg.name;
    }
    const time = document.createElement('time');
    const when = new Date(msg.ts);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    head.append(name, time);
    const body = document.createElement('p');
    body.className = 'chat-text';
    body.textContent = msg.text;
    item.append(head, body);
    this.log.append(item);
    while (this.log.children.length > MAX_SHOWN) this.log.firstElementChild?.remove();
    if (this.open) {
      item.scrollIntoView({ block: 'end' });
    } else if (msg.from !== this.you) {
      this.unread++;
      this.renderUnread();
    }
  }

  renderUnread() {
    this.unreadBadge.hidden = this.unread === 0;
    this.unreadBadge.textContent = String(this.unread);
    this.unreadBadge.setAttribute('aria-label', t('new_messages', { n: this.unread }));
  }
}
