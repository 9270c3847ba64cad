// Annotations: a laser pointer and a freehand highlight, drawn over the screen (never into the
// page), sent to everyone and faded out. Strokes are kept in page coordinates, so they stay on
// what they were drawn on when the page scrolls.

const FADE_MS = { laser: 1000, highlight: 4000 };
const WIDTH = { laser: 4, highlight: 14 };
const SEND_EVERY_MS = 50;
const MAX_POINTS = 64;

export class Annotations {
  #layer;
  #screen;
  #stage;
  #send;
  #ctx;
  #view = { scrollX: 0, scrollY: 0, cssWidth: 0, cssHeight: 0 };
  #strokes = new Map(); // "id/stroke" → {kind, color, points: [{x, y, t}]}
  #colors = new Map();
  #me = null;
  #tool = null; // 'laser' | 'highlight' | null
  #drawing = null; // {stroke, kind, pending: [[x, y]]}
  #nextStroke = 1;
  #timer = 0;
  #frame = 0;

  constructor({ layer, screen, stage, buttons }, send) {
    this.#layer = layer;
    this.#screen = screen;
    this.#stage = stage;
    this.#send = send;
    this.#ctx = layer.getContext('2d');
    for (const button of buttons) {
      button.addEventListener('click', () => {
        const tool = button.dataset.tool;
        this.#tool = this.#tool === tool ? null : tool;
        for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.tool === this.#tool));
        stage.classList.toggle('annotating', this.#tool !== null);
      });
    }
    // Capture phase on the stage: while a tool is on, presses on the screen draw instead of
    // reaching the shared page.
    const opts = { capture: true };
    stage.addEventListener('pointerdown', (e) => this.#down(e), opts);
    stage.addEventListener('pointermove', (e) => this.#move(e), opts);
    stage.addEventListener('pointerup', (e) => this.#up(e), opts);
    stage.addEventListener('pointercancel', (e) => this.#up(e), opts);
    stage.addEventListener('mousedown', (e) => this.#swallow(e), opts);
    stage.addEventListener('mouseup', (e) => this.#swallow(e), opts);
    new ResizeObserver(() => this.#redraw()).observe(screen);
    window.addEventListener('resize', () => this.#redraw());
  }

  hello(msg) {
    this.#me = msg.participant ?? null;
  }

  presence(list) {
    this.#colors = new Map(list.map((p) => [p.id, p.color]));
  }

  view(msg) {
    this.#view = {
      scrollX: Number(msg.scrollX) || 0,
      scrollY: Number(msg.scrollY) || 0,
      cssWidth: Number(msg.cssWidth) || 0,
      cssHeight: Number(msg.cssHeight) || 0,
    };
    this.#redraw();
  }

  /** A stroke part from the server (in page coordinates), ours included. */
  annotation(msg) {
    if (!Array.isArray(msg.points) || (msg.kind !== 'laser' && msg.kind !== 'highlight')) return;
    const key = `${msg.id}/${msg.stroke}`;
    let s = this.#strokes.get(key);
    if (!s) {
      const color = this.#colors.get(msg.id);
      s = { kind: msg.kind, color: /^#[0-9a-f]{6}$/i.test(color ?? '') ? color : '#ffcc00', points: [] };
      this.#strokes.set(key, s);
    }
    const t = performance.now();
    for (const p of msg.points) {
      if (Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1])) s.points.push({ x: p[0], y: p[1], t });
    }
    this.#animate();
  }

  #swallow(e) {
    if (this.#tool && e.target === this.#screen) e.stopPropagation();
  }

  #toScreen(e) {
    const c = this.#screen;
    const r = c.getBoundingClientRect();
    if (!r.width || !c.width) return null;
    return [
      Math.round((((e.clientX - r.left) * c.width) / r.width) * 10) / 10,
      Math.round((((e.clientY - r.top) * c.height) / r.height) * 10) / 10,
    ];
  }

  #down(e) {
    if (!this.#tool || e.target !== this.#screen) return;
    e.stopPropagation();
    e.preventDefault();
    const p = this.#toScreen(e);
    if (!p) return;
    this.#screen.setPointerCapture?.(e.pointerId);
    this.#drawing = { stroke: this.#nextStroke++, kind: this.#tool, pending: [p] };
    this.#flush();
  }

  #move(e) {
    if (!this.#drawing) return;
    e.stopPropagation();
    const p = this.#toScreen(e);
    if (p) this.#drawing.pending.push(p);
    if (!this.#timer) this.#timer = setTimeout(() => this.#flush(), SEND_EVERY_MS);
  }

  #up(e) {
    if (!this.#drawing) return;
    e.stopPropagation();
    this.#flush();
    this.#drawing = null;
  }

  #flush() {
    clearTimeout(this.#timer);
    this.#timer = 0;
    const d = this.#drawing;
    if (!d || d.pending.length === 0) return;
    while (d.pending.length) {
      const points = d.pending.splice(0, MAX_POINTS);
      this.#send({ t: 'annotate', stroke: d.stroke, kind: d.kind, points });
    }
  }

  #animate() {
    if (!this.#frame) this.#frame = requestAnimationFrame(() => this.#tick());
  }

  #tick() {
    this.#frame = 0;
    const now = performance.now();
    for (const [key, s] of this.#strokes) {
      s.points = s.points.filter((p) => now - p.t < FADE_MS[s.kind]);
      if (s.points.length === 0) this.#strokes.delete(key);
    }
    this.#redraw();
    if (this.#strokes.size) this.#animate();
  }

  #redraw() {
    const layer = this.#layer;
    const screen = this.#screen;
    const r = screen.getBoundingClientRect();
    const base = this.#stage.getBoundingClientRect();
    // The layer covers exactly the screen's box, at its pixel size.
    layer.style.left = `${r.left - base.left}px`;
    layer.style.top = `${r.top - base.top}px`;
    layer.style.width = `${r.width}px`;
    layer.style.height = `${r.height}px`;
    if (layer.width !== screen.width || layer.height !== screen.height) {
      layer.width = screen.width;
      layer.height = screen.height;
    }
    const ctx = this.#ctx;
    ctx.clearRect(0, 0, layer.width, layer.height);
    const v = this.#view;
    if (!v.cssWidth || !v.cssHeight) return;
    const sx = layer.width / v.cssWidth;
    const sy = layer.height / v.cssHeight;
    const now = performance.now();
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    for (const s of this.#strokes.values()) {
      const fade = FADE_MS[s.kind];
      ctx.strokeStyle = s.color;
      ctx.lineWidth = WIDTH[s.kind];
      for (let i = 0; i < s.points.length; i++) {
        const a = s.points[Math.max(0, i - 1)];
        const b = s.points[i];
        const life = 1 - (now - b.t) / fade;
        ctx.globalAlpha = Math.max(0, Math.min(1, life)) * (s.kind === 'highlight' ? 0.45 : 0.95);
        ctx.beginPath();
        ctx.moveTo((a.x - v.scrollX) * sx, (a.y - v.scrollY) * sy);
        ctx.lineTo((b.x - v.scrollX) * sx, (b.y - v.scrollY) * sy);
        ctx.stroke();
      }
    }
    ctx.globalAlpha = 1;
  }
}
