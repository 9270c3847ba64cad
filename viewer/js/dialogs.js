// The page's JavaScript dialogs (alert, confirm, prompt, beforeunload), shown over the screen.
// The page's scripts wait until someone who may act answers; the others see that it waits.

const TITLES = {
  alert: 'says',
  confirm: 'asks',
  prompt: 'asks',
  beforeunload: 'asks: leave this page?',
};

export class PageDialogs {
  #els;
  #send;
  #stats;
  #canAct = false;
  #open = null;

  /**
   * @param els   {box, title, message, input, ok, cancel, wait}
   * @param send  (message) => boolean
   * @param stats window.cobrowse, where `dialog` is mirrored for tests
   */
  constructor(els, send, stats) {
    this.#els = els;
    this.#send = send;
    this.#stats = stats;
    stats.dialog = null;
    els.ok.addEventListener('click', () => this.#answer(true));
    els.cancel.addEventListener('click', () => this.#answer(false));
    els.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        this.#answer(true);
      }
    });
    els.box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.#open && this.#open.kind !== 'alert') {
        e.preventDefault();
        this.#answer(false);
      }
    });
  }

  hello(msg) {
    this.#canAct = Boolean(msg.canInput);
    this.#render();
  }

  /** `{t: 'dialog', dialog: {...} | null, answeredBy}` */
  dialog(msg, notify) {
    const d = msg.dialog;
    const was = this.#open;
    this.#open = d && typeof d === 'object' && Number.isInteger(d.id) ? d : null;
    this.#stats.dialog = this.#open;
    if (!this.#open && was && typeof msg.answeredBy === 'string') {
      notify(`${msg.answeredBy} answered the page's dialog.`);
    }
    this.#render();
  }

  #answer(accept) {
    const d = this.#open;
    if (!d || !this.#canAct) return;
    const msg = { t: 'dialog', id: d.id, accept };
    if (d.kind === 'prompt' && accept) msg.text = this.#els.input.value;
    this.#send(msg);
    // The server confirms with `dialog: null`; until then the buttons do nothing twice.
    this.#els.ok.disabled = true;
    this.#els.cancel.disabled = true;
  }

  #render() {
    const els = this.#els;
    const d = this.#open;
    if (!d) {
      els.box.hidden = true;
      return;
    }
    const origin = typeof d.origin === 'string' && d.origin !== 'null' ? d.origin : 'The page';
    els.title.textContent = `${origin} ${TITLES[d.kind] ?? 'says'}`;
    els.message.textContent = d.kind === 'beforeunload'
      ? 'Changes you made may not be saved.'
      : String(d.message ?? '');
    const prompt = d.kind === 'prompt';
    els.input.hidden = !prompt || !this.#canAct;
    if (prompt && els.box.dataset.id !== String(d.id)) els.input.value = String(d.defaultPrompt ?? '');
    els.ok.textContent = d.kind === 'beforeunload' ? 'Leave' : 'OK';
    els.cancel.textContent = d.kind === 'beforeunload' ? 'Stay' : 'Cancel';
    els.cancel.hidden = d.kind === 'alert' || !this.#canAct;
    els.ok.hidden = !this.#canAct;
    els.ok.disabled = false;
    els.cancel.disabled = false;
    els.wait.hidden = this.#canAct;
    const fresh = els.box.dataset.id !== String(d.id);
    els.box.dataset.id = String(d.id);
    els.box.hidden = false;
    if (fresh && this.#canAct) (prompt ? els.input : els.ok).focus({ preventScroll: true });
  }
}
