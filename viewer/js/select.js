// The page's <select> popups, which headless Chromium never draws: the server sends the options
// to the participant who opened the list, and this shows them over the screen, where the select
// is. A choice (click, or arrows and Enter) goes back as `choose`; Escape or a click elsewhere
// closes the list unchanged.

export class SelectPopup {
  #box;
  #canvas;
  #stage;
  #send;
  #stats;
  #open = null; // {id, buttons: [{button, index}], active}

  /**
   * @param box    the popup element (a listbox), inside the stage
   * @param canvas the shared screen
   * @param stage  the screen's container (the popup is positioned in it)
   * @param send   (message) => boolean
   * @param stats  window.cobrowse, where `select` is mirrored for tests
   */
  constructor(box, canvas, stage, send, stats) {
    this.#box = box;
    this.#canvas = canvas;
    this.#stage = stage;
    this.#send = send;
    this.#stats = stats;
    stats.select = null;
    box.addEventListener('keydown', (e) => this.#onKey(e));
    document.addEventListener('pointerdown', (e) => {
      if (this.#open && !box.contains(e.target)) this.#close(null);
    }, true);
  }

  /** `{t: 'select', id, selected, options: [{label, disabled, group}], rect: [x, y, w, h]}` */
  show(msg) {
    if (!Number.isInteger(msg.id) || !Array.isArray(msg.options)) return;
    const box = this.#box;
    const items = [];
    const nodes = [];
    let group = null;
    msg.options.forEach((option, index) => {
      const label = typeof option?.label === 'string' ? option.label : '';
      const g = typeof option?.group === 'string' ? option.group : null;
      if (g !== group) {
        group = g;
        if (g !== null) {
          const header = document.createElement('li');
          header.className = 'select-group';
          header.setAttribute('role', 'presentation');
          header.textContent = g;
          nodes.push(header);
        }
      }
      const li = document.createElement('li');
      li.className = 'select-option';
      li.setAttribute('role', 'option');
      li.id = `select-option-${index}`;
      li.textContent = label || '\u00a0';
      if (g !== null) li.classList.add('in-group');
      if (option?.disabled) li.setAttribute('aria-disabled', 'true');
      if (index === msg.selected) li.setAttribute('aria-selected', 'true');
      li.addEventListener('click', () => {
        if (!option?.disabled) this.#close(index);
      });
      nodes.push(li);
      items.push({ li, index, disabled: Boolean(option?.disabled) });
    });
    box.replaceChildren(...nodes);
    this.#open = { id: msg.id, items, active: Math.max(0, items.findIndex((i) => i.index === msg.selected)) };
    this.#stats.select = { id: msg.id, options: items.length };
    this.#place(msg.rect);
    box.hidden = false;
    this.#highlight(this.#open.active);
    box.focus({ preventScroll: true });
  }

  #place(rect) {
    const [x, y, w, h] = Array.isArray(rect) ? rect.map(Number) : [0, 0, 0, 0];
    const c = this.#canvas.getBoundingClientRect();
    const s = this.#stage.getBoundingClientRect();
    const scale = this.#canvas.width ? c.width / this.#canvas.width : 1;
    const box = this.#box;
    box.style.left = `${Math.max(0, c.left - s.left + x * scale)}px`;
    box.style.minWidth = `${Math.max(120, w * scale)}px`;
    const below = c.top - s.top + (y + h) * scale;
    box.style.maxHeight = `${Math.max(120, s.height - below - 8)}px`;
    box.style.top = `${below}px`;
  }

  #highlight(position) {
    const open = this.#open;
    if (!open || !open.items.length) return;
    open.active = Math.min(open.items.length - 1, Math.max(0, position));
    open.items.forEach((item, i) => item.li.classList.toggle('active', i === open.active));
    const active = open.items[open.active].li;
    this.#box.setAttribute('aria-activedescendant', active.id);
    active.scrollIntoView({ block: 'nearest' });
  }

  #onKey(e) {
    const open = this.#open;
    if (!open) return;
    e.stopPropagation();
    const step = (from, dir) => {
      let i = from + dir;
      while (i >= 0 && i < open.items.length && open.items[i].disabled) i += dir;
      return i >= 0 && i < open.items.length ? i : from;
    };
    switch (e.key) {
      case 'ArrowDown': this.#highlight(step(open.active, 1)); break;
      case 'ArrowUp': this.#highlight(step(open.active, -1)); break;
      case 'Home': this.#highlight(step(-1, 1)); break;
      case 'End': this.#highlight(step(open.items.length, -1)); break;
      case 'Enter':
      case ' ': {
        const item = open.items[open.active];
        if (item && !item.disabled) this.#close(item.index);
        break;
      }
      case 'Escape':
      case 'Tab': this.#close(null); break;
      default: return;
    }
    e.preventDefault();
  }

  #close(index) {
    const open = this.#open;
    if (!open) return;
    this.#open = null;
    this.#stats.select = null;
    this.#box.hidden = true;
    this.#send({ t: 'choose', id: open.id, index });
    this.#canvas.focus({ preventScroll: true });
  }
}
