// The people and chat panel: who is here (name, colour, role), your own display name, and the
// chat. Everything participants wrote is shown with textContent, never as HTML.

const NAME_KEY = 'cobrowse.name';
/** Chat messages kept on the page (the server keeps the last 200 for late joiners). */
const CHAT_SHOWN = 500;

/** The name to join with: the link's `name` parameter, else the one remembered on this device. */
export function initialName(loc = location) {
  const fromLink = new URLSearchParams(loc.search).get('name');
  if (fromLink && fromLink.trim()) return fromLink.trim();
  try {
    return localStorage.getItem(NAME_KEY) || null;
  } catch {
    return null; // storage disabled (private mode, sandboxed iframe)
  }
}

function remember(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // not remembered; nothing else depends on it
  }
}

function timeOf(ms) {
  try {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  } catch {
    return '';
  }
}

export class PeoplePanel {
  #els;
  #send;
  #stats;
  #me = null;
  #isOwner = false;
  #unread = 0;
  #seenChat = new Set();

  /**
   * @param els   {side, toggle, unread, nameForm, nameInput, people, chatLog, chatForm, chatInput}
   * @param send  (message) => boolean, sends JSON to the server
   * @param stats window.cobrowse, where `presence` and `chat` are mirrored for tests
   * @param onName (name) => void, the name to use on the next (re)connect
   */
  constructor(els, send, stats, onName) {
    this.#els = els;
    this.#send = send;
    this.#stats = stats;
    stats.presence = [];
    stats.chat = [];
    els.toggle.addEventListener('click', () => this.setOpen(els.side.hidden));
    els.nameForm.addEventListener('submit', (e) => {
      e.preventDefault();
      els.nameInput.blur();
    });
    els.nameInput.addEventListener('change', () => {
      const name = els.nameInput.value.trim();
      if (!name) return;
      remember(name);
      onName(name);
      this.#send({ t: 'name', name });
    });
    els.chatForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = els.chatInput.value;
      if (!text.trim()) return;
      if (this.#send({ t: 'chat', text })) els.chatInput.value = '';
    });
    // Keys typed in the panel are the panel's, not the shared page's.
    els.side.addEventListener('keydown', (e) => e.stopPropagation());
    // Wide screens show the panel beside the screen from the start; phones keep the screen.
    this.setOpen(window.matchMedia('(min-width: 1100px)').matches);
  }

  setOpen(open) {
    this.#els.side.hidden = !open;
    this.#els.toggle.setAttribute('aria-expanded', String(open));
    if (open) this.#setUnread(0);
    // The screen's box changed size.
    window.dispatchEvent(new Event('resize'));
  }

  hello(msg) {
    this.#me = msg.participant ?? null;
    this.#isOwner = msg.role === 'owner';
    if (document.activeElement !== this.#els.nameInput) this.#els.nameInput.value = msg.name ?? '';
  }

  presence(msg) {
    const list = Array.isArray(msg.participants) ? msg.participants : [];
    this.#stats.presence = list;
    const me = list.find((p) => p.id === this.#me);
    if (me && document.activeElement !== this.#els.nameInput) this.#els.nameInput.value = me.name;
    this.#els.people.replaceChildren(...list.map((p) => this.#personItem(p)));
  }

  #personItem(p) {
    const li = document.createElement('li');
    li.dataset.id = p.id;
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.style.background = /^#[0-9a-f]{6}$/i.test(p.color) ? p.color : '#888';
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = p.id === this.#me ? `${p.name} (you)` : p.name;
    who.title = `${p.name}, ${p.role}`;
    const role = document.createElement('span');
    role.className = 'role-tag';
    role.textContent = p.role;
    li.append(dot, who, role);
    if (this.#isOwner && p.role !== 'owner') {
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.textContent = 'Remove';
      remove.title = `Remove ${p.name}: their link stops working`;
      remove.addEventListener('click', () => {
        if (window.confirm(`Remove ${p.name} from this session? Their link will stop working.`)) {
          this.#send({ t: 'remove', id: p.id });
        }
      });
      li.append(remove);
    }
    return li;
  }

  /** The whole conversation (on join, and after the connection fell behind). */
  chatHistory(msg) {
    const messages = Array.isArray(msg.messages) ? msg.messages : [];
    this.#seenChat.clear();
    this.#stats.chat = [];
    this.#els.chatLog.replaceChildren();
    for (const m of messages) this.#addChat(m, false);
  }

  chat(msg) {
    this.#addChat(msg, msg.from !== this.#me);
  }

  #addChat(m, notify) {
    if (this.#seenChat.has(m.id)) return;
    this.#seenChat.add(m.id);
    this.#stats.chat.push(m);
    const li = document.createElement('li');
    const from = document.createElement('span');
    from.className = 'from';
    from.textContent = String(m.name ?? '?');
    if (/^#[0-9a-f]{6}$/i.test(m.color)) from.style.color = m.color;
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = timeOf(m.at);
    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = String(m.text ?? '');
    li.append(from, time, text);
    const log = this.#els.chatLog;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.append(li);
    while (log.children.length > CHAT_SHOWN) log.firstElementChild.remove();
    if (this.#stats.chat.length > CHAT_SHOWN) this.#stats.chat.shift();
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (notify && this.#els.side.hidden) this.#setUnread(this.#unread + 1);
  }

  #setUnread(n) {
    this.#unread = n;
    this.#els.unread.textContent = String(n);
    this.#els.unread.hidden = n === 0;
  }
}
