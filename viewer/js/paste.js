// A paste box: for phones and tablets (no Ctrl/Cmd+V) and anyone whose browser keeps the
// clipboard from pages. The participant pastes (or types) into it and sends the text to the
// page's focused field, as `text`, like Ctrl/Cmd+V does.

export class PasteBox {
  #els;
  #send;
  #stats;

  /**
   * @param els   {open, box, text, send, cancel}
   * @param send  (message) => boolean
   * @param stats window.cobrowse (counts `pasted` for tests)
   */
  constructor(els, send, stats) {
    this.#els = els;
    this.#send = send;
    this.#stats = stats;
    stats.pasted = 0;
    els.open.addEventListener('click', () => this.#open());
    els.cancel.addEventListener('click', () => this.#close());
    els.send.addEventListener('click', () => this.#submit());
    els.text.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        this.#submit();
      } else if (e.key === 'Escape') {
        this.#close();
      }
    });
  }

  /** Only those who may act get the button. */
  hello(msg) {
    this.#els.open.hidden = !msg.canInput;
  }

  async #open() {
    const els = this.#els;
    els.text.value = '';
    els.box.hidden = false;
    els.text.focus();
    // Where the browser allows it, the clipboard is already there; else the person pastes.
    try {
      const text = await navigator.clipboard.readText();
      if (text && !els.text.value) els.text.value = text;
    } catch {
      // not allowed: a long press → Paste in the box does it
    }
  }

  #submit() {
    const text = this.#els.text.value;
    // At most 4,096 characters (code points: a cut must not split an emoji).
    if (text && this.#send({ t: 'text', text: [...text].slice(0, 4096).join('') })) {
      this.#stats.pasted += 1;
      dispatchEvent(new Event('cobrowse:pasted'));
    }
    this.#close();
  }

  #close() {
    this.#els.box.hidden = true;
    this.#els.text.value = '';
  }
}
