// The navigation bar: back, forward, reload, the page's address (editable by those who may act),
// its title and whether it is loading. The server reads what was typed like a browser's address
// bar and refuses what it must not open (docs/protocol.md, `navigate`).

export class NavBar {
  #els;
  #send;
  #page = { url: '', title: '', loading: false, canGoBack: false, canGoForward: false };
  #canAct = false;
  #editing = false;

  /**
   * @param els  {form, back, forward, reload, url, title, loading}
   * @param send (message) => boolean
   */
  constructor(els, send) {
    this.#els = els;
    this.#send = send;
    els.back.addEventListener('click', () => this.#send({ t: 'history', action: 'back' }));
    els.forward.addEventListener('click', () => this.#send({ t: 'history', action: 'forward' }));
    els.reload.addEventListener('click', () => this.#send({ t: 'history', action: 'reload' }));
    els.form.addEventListener('submit', (e) => {
      e.preventDefault();
      const typed = els.url.value.trim();
      if (!this.#canAct || !typed) return;
      this.#send({ t: 'navigate', url: typed });
      this.#editing = false;
      els.url.blur();
    });
    els.url.addEventListener('focus', () => {
      if (!this.#canAct) return;
      this.#editing = true;
      els.url.select();
    });
    els.url.addEventListener('blur', () => {
      this.#editing = false;
      this.#render();
    });
    els.url.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        this.#editing = false;
        this.#render();
        els.url.blur();
      }
    });
  }

  hello(msg) {
    this.#canAct = Boolean(msg.canInput);
    if (typeof msg.url === 'string') this.#page.url = msg.url;
    this.#render();
  }

  page(msg) {
    this.#page = {
      url: typeof msg.url === 'string' ? msg.url : '',
      title: typeof msg.title === 'string' ? msg.title : '',
      loading: msg.loading === true,
      canGoBack: msg.canGoBack === true,
      canGoForward: msg.canGoForward === true,
    };
    this.#render();
  }

  get state() {
    return { ...this.#page };
  }

  #render() {
    const els = this.#els;
    const p = this.#page;
    els.back.disabled = !this.#canAct || !p.canGoBack;
    els.forward.disabled = !this.#canAct || !p.canGoForward;
    els.reload.disabled = !this.#canAct;
    els.url.readOnly = !this.#canAct;
    // Someone typing an address keeps what they typed while the page moves on.
    if (!this.#editing) els.url.value = p.url;
    els.url.title = p.url;
    els.title.textContent = p.title || '';
    els.title.title = p.title || '';
    els.loading.hidden = !p.loading;
    els.form.dataset.loading = String(p.loading);
    let host = '';
    try {
      host = new URL(p.url).host;
    } catch {
      host = '';
    }
    document.title = `${p.title || host || 'cobrowse'} · cobrowse`;
  }
}
