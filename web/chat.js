// The chat panel: history, new messages, the input. Every piece of text a
// peer wrote is put into the page with textContent, never as HTML. What we
// write shows at once, marked as sending until the server has it back, or
// as not sent (with a button to try again) if it could not be sent.

import { t, pageLang } from './i18n.js';

/** @typedef {import('./protocol.js').ChatMessage} ChatMessage */

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Most messages kept on screen (the server keeps its own, shorter history). */
const MAX_SHOWN = 500;
/** Messages remembered as shown, to show a repeat only once. */
const SEEN_KEPT = 1000;

/**
 * @typedef {object} ChatSender how the panel hands messages to the session
 * @property {(text: string) => {id: string, queued: boolean} | null} send
 *   sends (or keeps, while reconnecting) a message; `queued` false: refused
 *   (too many waiting); null: no session
 * @property {(id: string, text: string) => boolean} retry tries a message
 *   that was not sent again, under its id
 */

/**
 * A message's time of day, as people of the page's language write it.
 * @param {number} ts
 */
function clock(ts) {
  return new Date(ts).toLocaleTimeString(pageLang(), { hour: '2-digit', minute: '2-digit' });
}

export class ChatPanel {
  /** @param {ChatSender} sender */
  constructor(sender) {
    this.sender = sender;
    /** Our messages not yet back from the server, by id.
     *  @type {Map<string, {item: HTMLLIElement, text: string}>} */
    this.outgoing = new Map();
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
    // Times read in the page's language, not the browser's.
    document.addEventListener('langchange', () => {
      for (const time of this.log.querySelectorAll('time[data-ts]')) {
        time.textContent = clock(Number(/** @type {HTMLElement} */ (time).dataset.ts));
      }
    });
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
      this.showError(t('chat_too_long'));
      return;
    }
    // The server refuses control characters but newline and tab: drop them
    // here rather than lose the whole message.
    const clean = text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '');
    const sent = this.sender.send(clean);
    if (!sent) return;
    this.input.value = '';
    const item = this.item(true, '', clean, null);
    item.dataset.id = sent.id;
    this.outgoing.set(sent.id, { item, text: clean });
    this.setOutgoing(sent.id, sent.queued ? 'pending' : 'failed');
    this.append(item);
  }

  /**
   * Shows one of our messages as on its way, or as not sent with a button
   * to try again.
   * @param {string} id
   * @param {'pending' | 'failed'} how
   */
  setOutgoing(id, how) {
    const out = this.outgoing.get(id);
    if (!out) return;
    const { item } = out;
    item.classList.toggle('pending', how === 'pending');
    item.classList.toggle('failed', how === 'failed');
    item.querySelector('.chat-state')?.remove();
    const line = document.createElement('p');
    line.className = 'chat-state';
    const words = document.createElement('span');
    words.dataset.i18n = how === 'pending' ? 'chat_pending' : 'chat_failed';
    words.textContent = t(how === 'pending' ? 'chat_pending' : 'chat_failed');
    line.append(words);
    if (how === 'failed') {
      const retry = document.createElement('button');
      retry.type = 'button';
      retry.className = 'chat-retry';
      retry.dataset.i18n = 'chat_retry';
      retry.textContent = t('chat_retry');
      retry.addEventListener('click', () => {
        if (this.sender.retry(id, out.text)) this.setOutgoing(id, 'pending');
      });
      line.append(retry);
    }
    item.append(line);
  }

  /**
   * A message of ours could not be sent.
   * @param {string} id
   */
  failed(id) {
    this.setOutgoing(id, 'failed');
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
    // A message sent twice (before a dropped connection and again after)
    // carries one id: shown once. Without an id, a history replayed after
    // a reconnect is told apart by sender, time and text.
    const key = typeof msg.id === 'string' ? `id:${msg.id}` : `${msg.from}/${msg.ts}/${msg.text}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    // Bounded: a replayed history is at most the room's (100 messages), so
    // the oldest keys beyond SEEN_KEPT can go (a Set iterates oldest first).
    for (const old of this.seen) {
      if (this.seen.size <= SEEN_KEPT) break;
      this.seen.delete(old);
    }
    const out = typeof msg.id === 'string' ? this.outgoing.get(msg.id) : undefined;
    const mine = Boolean(out) || msg.from === this.you;
    const item = this.item(mine, msg.name, msg.text, msg.ts);
    if (out && msg.id) {
      // Ours, back from the server: sent. It takes its place in the order
      // everyone sees.
      this.outgoing.delete(msg.id);
      out.item.remove();
      item.dataset.id = msg.id;
    }
    this.append(item);
    if (!this.open && !mine) {
      this.unread++;
      this.renderUnread();
    }
  }

  /**
   * A message's list item.
   * @param {boolean} mine ours (labelled "You")
   * @param {string} name the sender's name
   * @param {string} text
   * @param {number | null} ts the server's time; null: not sent yet
   */
  item(mine, name, text, ts) {
    const item = document.createElement('li');
    item.className = mine ? 'mine' : '';
    const head = document.createElement('div');
    head.className = 'chat-meta';
    const who = document.createElement('span');
    who.className = 'chat-name';
    if (mine) {
      // Re-labelled by translatePage when the language changes.
      who.dataset.i18n = 'you';
      who.textContent = t('you');
    } else {
      who.textContent = name;
      // Its own direction, isolated: a right-to-left name (or one with
      // direction controls) cannot reorder the time or the text beside it.
      who.dir = 'auto';
    }
    head.append(who);
    if (ts !== null) {
      const time = document.createElement('time');
      const when = new Date(ts);
      time.dateTime = when.toISOString();
      time.dataset.ts = String(ts);
      time.textContent = clock(ts);
      head.append(time);
    }
    const body = document.createElement('p');
    body.className = 'chat-text';
    body.textContent = text;
    body.dir = 'auto';
    item.append(head, body);
    return item;
  }

  /** @param {HTMLLIElement} item */
  append(item) {
    this.log.append(item);
    while (this.log.children.length > MAX_SHOWN) this.log.firstElementChild?.remove();
    if (this.open) item.scrollIntoView({ block: 'end' });
  }

  renderUnread() {
    this.unreadBadge.hidden = this.unread === 0;
    this.unreadBadge.textContent = String(this.unread);
    this.unreadBadge.setAttribute('aria-label', t('new_messages', { n: this.unread }));
  }
}
