// Colour, date and time fields of the page: their picker popups are not drawn by headless
// Chromium. When this participant clicks one (`picker`), a box offers the same kind of field in
// their own browser, with its real picker; OK sends the value (`pick`), Cancel closes it.

const LABELS = {
  color: 'Pick a colour',
  date: 'Pick a date',
  time: 'Pick a time',
  'datetime-local': 'Pick a date and time',
  month: 'Pick a month',
  week: 'Pick a week',
};

export class PickerBox {
  #els;
  #send;
  #stats;
  #open = null;

  /**
   * @param els   {box, label, input, ok, cancel}
   * @param send  (message) => boolean
   * @param stats window.cobrowse (mirrors `picker` for tests)
   */
  constructor(els, send, stats) {
    this.#els = els;
    this.#send = send;
    this.#stats = stats;
    stats.picker = null;
    els.ok.addEventListener('click', () => this.#answer(els.input.value));
    els.cancel.addEventListener('click', () => this.#answer(null));
    els.box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.#answer(null);
      // Enter on a button is that button's click.
      else if (e.key === 'Enter' && e.target === els.input) this.#answer(els.input.value);
    });
  }

  show(msg) {
    if (!Number.isInteger(msg.id) || !(msg.type in LABELS)) return;
    if (this.#open) this.#send({ t: 'pick', id: this.#open.id, value: null });
    this.#open = { id: msg.id, type: msg.type };
    this.#stats.picker = { id: msg.id, type: msg.type, value: msg.value };
    const { input, label, box } = this.#els;
    input.type = msg.type;
    for (const attr of ['min', 'max', 'step']) {
      if (typeof msg[attr] === 'string' && msg[attr]) input.setAttribute(attr, msg[attr]);
      else input.removeAttribute(attr);
    }
    input.value = typeof msg.value === 'string' ? msg.value : '';
    label.textContent = LABELS[msg.type];
    box.hidden = false;
    input.focus();
  }

  #answer(value) {
    if (!this.#open) return;
    this.#send({ t: 'pick', id: this.#open.id, value });
    this.#open = null;
    this.#stats.picker = null;
    this.#els.box.hidden = true;
    dispatchEvent(new Event('cobrowse:picked'));
  }
}
