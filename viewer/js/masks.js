// Masked elements: the server paints over password, payment card and other configured fields
// before anything is encoded for participants who must not see them (docs/masking.md), and tells
// them where (`masks`, image pixels of the screen). This draws a labelled "hidden" box over each
// painted area, so the grey stripes read as deliberate, not as a broken screen. The pixels under
// them never reached this browser; the overlay only explains them.

export class MaskOverlay {
  #layer;
  #canvas;
  #rects = [];
  #boxes = [];

  constructor(layer, canvas) {
    this.#layer = layer;
    this.#canvas = canvas;
    new ResizeObserver(() => this.#place()).observe(canvas);
    // The first paint (and a page size change) sets the canvas's own size without always
    // changing its box: boxes placed for the old size are placed again.
    let size = '';
    window.addEventListener('cobrowse:paint', () => {
      const now = `${canvas.width}x${canvas.height}`;
      if (now !== size) {
        size = now;
        this.#place();
      }
    });
    // A pinch zoom moves the canvas without resizing it; the zoom announces it as a resize.
    window.addEventListener('resize', () => this.#place());
  }

  /** `masks` message: the painted rectangles of the screen being sent, `[x, y, w, h]`. */
  masks(msg) {
    const rects = Array.isArray(msg.rects) ? msg.rects : [];
    this.#rects = rects.filter((r) => Array.isArray(r) && r.length === 4 && r.every(Number.isFinite)).slice(0, 512);
    this.#place();
  }

  #place() {
    const c = this.#canvas;
    const r = c.getBoundingClientRect();
    const base = this.#layer.getBoundingClientRect();
    while (this.#boxes.length > this.#rects.length) this.#boxes.pop().remove();
    while (this.#boxes.length < this.#rects.length) {
      const box = document.createElement('div');
      box.className = 'mask-box';
      const label = document.createElement('span');
      label.className = 'mask-label';
      label.textContent = 'hidden';
      box.append(label);
      box.title = 'Hidden from you: this field is masked in this session';
      this.#layer.append(box);
      this.#boxes.push(box);
    }
    const sx = c.width ? r.width / c.width : 0;
    const sy = c.height ? r.height / c.height : 0;
    this.#rects.forEach(([x, y, w, h], i) => {
      const box = this.#boxes[i];
      box.style.left = `${r.left - base.left + x * sx}px`;
      box.style.top = `${r.top - base.top + y * sy}px`;
      box.style.width = `${w * sx}px`;
      box.style.height = `${h * sy}px`;
    });
  }
}
