// Pointers: where this participant points on the shared screen goes to the others (any role:
// pointing is not acting), and the others' pointers are drawn over the screen as labelled cursors
// in their colours. Positions travel in screen pixels; the server anchors them to the page, so a
// cursor stays on what it points at when the page scrolls.

const SEND_EVERY_MS = 33; // ~30 Hz

export class PointerShare {
  #canvas;
  #send;
  #last = 0;
  #pending = null;
  #timer = 0;

  constructor(canvas, send) {
    this.#canvas = canvas;
    this.#send = send;
    canvas.addEventListener('pointermove', (e) => this.#moved(e));
    canvas.addEventListener('pointerleave', () => this.#left());
  }

  #moved(e) {
    const c = this.#canvas;
    const r = c.getBoundingClientRect();
    if (!r.width || !r.height || !c.width) return;
    const x = ((e.clientX - r.left) * c.width) / r.width;
    const y = ((e.clientY - r.top) * c.height) / r.height;
    this.#pending = { t: 'pointer', x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10 };
    this.#schedule();
  }

  #left() {
    this.#pending = { t: 'pointer', gone: true };
    this.#schedule();
  }

  #schedule() {
    if (this.#timer) return;
    const wait = Math.max(0, this.#last + SEND_EVERY_MS - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = 0;
      if (!this.#pending) return;
      this.#send(this.#pending);
      this.#pending = null;
      this.#last = performance.now();
    }, wait);
  }
}

export class RemoteCursors {
  #layer;
  #canvas;
  #people = new Map(); // id → {name, color}
  #cursors = new Map(); // id → element
  #last = [];

  constructor(layer, canvas) {
    this.#layer = layer;
    this.#canvas = canvas;
    new ResizeObserver(() => this.#place(this.#last)).observe(canvas);
    // A pinch zoom moves the canvas without resizing it; the zoom announces it as a resize.
    window.addEventListener('resize', () => this.#place(this.#last));
  }

  presence(list) {
    this.#people = new Map(list.map((p) => [p.id, p]));
    // Someone renamed or left: relabel, and drop cursors of those gone.
    for (const [id, el] of this.#cursors) {
      const p = this.#people.get(id);
      if (!p) {
        el.remove();
        this.#cursors.delete(id);
      } else {
        this.#label(el, p);
      }
    }
  }

  pointers(list) {
    this.#last = Array.isArray(list) ? list : [];
    this.#place(this.#last);
  }

  #label(el, p) {
    const color = /^#[0-9a-f]{6}$/i.test(p.color) ? p.color : '#888';
    el.style.setProperty('--cursor-color', color);
    el.querySelector('.cursor-name').textContent = p.name;
  }

  #cursorFor(id) {
    let el = this.#cursors.get(id);
    if (el) return el;
    el = document.createElement('div');
    el.className = 'cursor';
    el.dataset.id = id;
    el.innerHTML = '<svg width="16" height="20" viewBox="0 0 16 20" aria-hidden="true"><path d="M1 1 L1 16 L5 12 L8 19 L11 18 L8 11 L14 11 Z" fill="var(--cursor-color)" stroke="#fff" stroke-width="1.2"/></svg><span class="cursor-name"></span>';
    this.#label(el, this.#people.get(id) ?? { name: id, color: '#888' });
    this.#layer.append(el);
    this.#cursors.set(id, el);
    return el;
  }

  #place(list) {
    const c = this.#canvas;
    const r = c.getBoundingClientRect();
    const base = this.#layer.getBoundingClientRect();
    const seen = new Set();
    if (r.width && c.width) {
      for (const p of list) {
        if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) continue;
        seen.add(p.id);
        const el = this.#cursorFor(p.id);
        const left = r.left - base.left + (p.x * r.width) / c.width;
        const top = r.top - base.top + (p.y * r.height) / c.height;
        el.style.transform = `translate(${left}px, ${top}px)`;
      }
    }
    for (const [id, el] of this.#cursors) {
      if (!seen.has(id)) {
        el.remove();
        this.#cursors.delete(id);
      }
    }
  }
}
