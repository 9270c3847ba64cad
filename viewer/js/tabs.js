// The tab strip: the session browser's tabs (pages opened by the page itself, popups included,
// or by a participant), the one the screen shows, switch / close / new for those who may act.
// The server decides everything (docs/protocol.md, `tabs` and `tab`); this only draws and asks.

export class TabStrip {
  #el;
  #send;
  #canAct = false;
  #tabs = [];
  #active = 0;

  /**
   * @param el   the strip's container
   * @param send (message) => boolean
   */
  constructor(el, send) {
    this.#el = el;
    this.#send = send;
    el.addEventListener('click', (e) => {
      const button = e.target instanceof Element ? e.target.closest('button') : null;
      if (!button || !this.#canAct) return;
      if (button.dataset.close) {
        this.#send({ t: 'tab', action: 'close', id: Number(button.dataset.close) });
      } else if (button.dataset.tab) {
        const id = Number(button.dataset.tab);
        if (id !== this.#active) this.#send({ t: 'tab', action: 'switch', id });
      } else if (button.dataset.new !== undefined) {
        this.#send({ t: 'tab', action: 'new' });
      }
    });
  }

  hello(msg) {
    this.#canAct = Boolean(msg.canInput);
    this.#render();
  }

  update(msg) {
    this.#tabs = Array.isArray(msg.tabs)
      ? msg.tabs.filter((t) => t && Number.isInteger(t.id)).slice(0, 50)
      : [];
    this.#active = Number.isInteger(msg.active) ? msg.active : 0;
    this.#render();
  }

  get state() {
    return { active: this.#active, tabs: this.#tabs.map((t) => ({ ...t })) };
  }

  #render() {
    const el = this.#el;
    // One tab and nothing to do with it: the strip takes no room (kiosks, viewers).
    el.hidden = this.#tabs.length < 2 && !this.#canAct;
    const items = this.#tabs.map((tab) => {
      const item = document.createElement('div');
      item.className = 'tab';
      item.setAttribute('role', 'presentation');
      const active = tab.id === this.#active;
      item.dataset.active = String(active);
      const label = tabLabel(tab);
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'tab-title';
      button.setAttribute('role', 'tab');
      button.setAttribute('aria-selected', String(active));
      button.id = `tab-${tab.id}`;
      button.dataset.tab = String(tab.id);
      button.title = typeof tab.url === 'string' ? `${label}\n${tab.url}` : label;
      button.disabled = !this.#canAct && !active;
      if (tab.dialog === true) {
        const mark = document.createElement('span');
        mark.className = 'tab-dialog';
        mark.textContent = '!';
        mark.title = 'This page is waiting for an answer';
        button.append(mark);
      }
      const text = document.createElement('span');
      text.className = 'tab-text';
      text.textContent = label;
      button.append(text);
      item.append(button);
      if (this.#canAct) {
        const close = document.createElement('button');
        close.type = 'button';
        close.className = 'tab-close';
        close.id = `tab-close-${tab.id}`;
        close.dataset.close = String(tab.id);
        close.setAttribute('aria-label', `Close ${label}`);
        close.title = 'Close tab';
        close.textContent = '×';
        item.append(close);
      }
      return item;
    });
    if (this.#canAct) {
      const add = document.createElement('button');
      add.type = 'button';
      add.className = 'tab-new';
      add.id = 'tab-new';
      add.dataset.new = '';
      add.setAttribute('aria-label', 'New tab');
      add.title = 'New tab';
      add.textContent = '+';
      items.push(add);
    }
    el.replaceChildren(...items);
  }
}

/** What a tab shows: its title, else its host, else "New tab". */
function tabLabel(tab) {
  if (typeof tab.title === 'string' && tab.title.trim()) return tab.title.trim();
  try {
    const url = new URL(tab.url);
    if (url.host) return url.host;
  } catch {
    // not a URL
  }
  return 'New tab';
}
