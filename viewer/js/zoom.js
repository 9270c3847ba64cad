// Pinch to zoom the view (not the page): two fingers scale and move the screen locally, for
// reading small text on a phone. Every role may zoom. Input keeps landing on the right pixel
// because it maps through the canvas's on-screen box, which includes the zoom.

const MAX_SCALE = 4;

export class ViewZoom {
  #canvas;
  #fingers = new Map(); // pointerId → {x, y}
  #pinch = null; // {dist, local: [x, y], layout: [x, y]}
  #scale = 1;
  #tx = 0;
  #ty = 0;
  #onPinch;

  /**
   * @param stage   element the canvas lives in (gestures are caught here, capture phase)
   * @param canvas  the screen
   * @param onPinch called when a pinch starts (the one-finger gesture in progress is dropped)
   */
  constructor(stage, canvas, onPinch) {
    this.#canvas = canvas;
    this.#onPinch = onPinch;
    canvas.style.transformOrigin = '0 0';
    const opts = { capture: true };
    stage.addEventListener('pointerdown', (e) => this.#down(e), opts);
    stage.addEventListener('pointermove', (e) => this.#move(e), opts);
    stage.addEventListener('pointerup', (e) => this.#up(e), opts);
    stage.addEventListener('pointercancel', (e) => this.#up(e), opts);
  }

  get scale() {
    return this.#scale;
  }

  reset() {
    this.#scale = 1;
    this.#tx = 0;
    this.#ty = 0;
    this.#apply();
  }

  #mid() {
    const [a, b] = [...this.#fingers.values()];
    return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2, dist: Math.hypot(a.x - b.x, a.y - b.y) };
  }

  #down(e) {
    if (e.pointerType !== 'touch') return;
    this.#fingers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (this.#fingers.size !== 2) return;
    e.stopPropagation();
    this.#onPinch();
    const m = this.#mid();
    const r = this.#canvas.getBoundingClientRect();
    // Where the canvas sits without the zoom, and the canvas point under the fingers.
    const layout = [r.left - this.#tx, r.top - this.#ty];
    const local = [(m.x - r.left) / this.#scale, (m.y - r.top) / this.#scale];
    this.#pinch = { dist: Math.max(1, m.dist), scale: this.#scale, local, layout };
  }

  #move(e) {
    if (!this.#fingers.has(e.pointerId)) return;
    this.#fingers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    const p = this.#pinch;
    if (!p || this.#fingers.size !== 2) return;
    e.stopPropagation();
    const m = this.#mid();
    this.#scale = Math.min(MAX_SCALE, Math.max(1, (p.scale * m.dist) / p.dist));
    // Keep the canvas point that was under the fingers under their midpoint.
    this.#tx = m.x - p.layout[0] - this.#scale * p.local[0];
    this.#ty = m.y - p.layout[1] - this.#scale * p.local[1];
    this.#apply();
  }

  #up(e) {
    if (!this.#fingers.delete(e.pointerId)) return;
    if (this.#pinch) e.stopPropagation();
    if (this.#fingers.size < 2) this.#pinch = null;
    if (this.#scale <= 1.01) this.reset();
  }

  #apply() {
    const s = this.#scale;
    this.#canvas.style.transform = s === 1 ? '' : `translate(${this.#tx}px, ${this.#ty}px) scale(${s})`;
    // Overlays (cursors, annotations) follow the canvas's box.
    window.dispatchEvent(new Event('resize'));
  }
}
