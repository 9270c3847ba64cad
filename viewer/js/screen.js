// Screen updates: parse the binary update, decode its images off the main thread, apply its
// operations (moves and rectangles) to the canvas strictly in arrival order, then acknowledge.

const HEADER_BYTES = 16;
const KIND_UPDATE = 2;
const OP_COPY = 1;
const OP_RECT = 2;
const MIME = { 1: 'image/jpeg', 2: 'image/png', 3: 'image/webp' };

/**
 * Parses a binary update; returns null for anything that is not an update of this protocol
 * version, and throws on a malformed one (the caller asks for a whole screen).
 */
export function parseUpdate(buffer) {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < HEADER_BYTES) return null;
  const view = new DataView(buffer);
  // Unknown kinds are skipped so that later server versions can add message kinds.
  if (view.getUint8(0) !== KIND_UPDATE) return null;
  const update = {
    flags: view.getUint8(1),
    number: view.getUint32(4, true),
    version: view.getUint32(8, true),
    width: view.getUint16(12, true),
    height: view.getUint16(14, true),
    ops: [],
  };
  const count = view.getUint16(2, true);
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const op = view.getUint8(at);
    if (op === OP_COPY) {
      update.ops.push({ op, dx: view.getInt16(at + 2, true), dy: view.getInt16(at + 4, true) });
      at += 6;
    } else if (op === OP_RECT) {
      const length = view.getUint32(at + 10, true);
      if (at + 14 + length > buffer.byteLength) throw new Error('rectangle past the end of the update');
      update.ops.push({
        op,
        mime: MIME[view.getUint8(at + 1)] ?? 'application/octet-stream',
        x: view.getUint16(at + 2, true),
        y: view.getUint16(at + 4, true),
        w: view.getUint16(at + 6, true),
        h: view.getUint16(at + 8, true),
        data: new Uint8Array(buffer, at + 14, length),
      });
      at += 14 + length;
    } else {
      throw new Error(`unknown operation ${op}`);
    }
  }
  return update;
}

export class Screen {
  #canvas;
  #container;
  #ctx;
  #stats;
  #ack;
  #onPaint;
  #queue = Promise.resolve();
  #resizeObserver;
  #hasImage = false; // until the first paint the canvas has the default 300×150 size, which means nothing

  /**
   * @param canvas   the <canvas>; its intrinsic size follows the screen size
   * @param container element the canvas is fitted into (letterboxed)
   * @param stats    window.cobrowse counters, updated in place
   * @param ack      (number, generation, resync) => void, called after an update was painted
   * @param onPaint  optional ({seq, version, width, height}) => void
   */
  constructor({ canvas, container, stats, ack, onPaint }) {
    this.#canvas = canvas;
    this.#container = container;
    this.#ctx = canvas.getContext('2d', { alpha: false });
    this.#stats = stats;
    this.#ack = ack;
    this.#onPaint = onPaint;
    this.#resizeObserver = new ResizeObserver(() => this.fit());
    this.#resizeObserver.observe(container);
  }

  destroy() {
    this.#resizeObserver.disconnect();
  }

  /** Handles one binary message of the connection that had the given generation. */
  handle(buffer, generation) {
    this.#stats.bytesIn += buffer.byteLength;
    let update;
    try {
      update = parseUpdate(buffer);
    } catch (err) {
      // Acknowledge it in order and ask for a whole screen instead of deltas on a wrong one.
      console.warn('cobrowse: malformed update', err);
      const number = new DataView(buffer).getUint32(4, true);
      this.#queue = this.#queue.then(() => this.#ack(number, generation, true));
      return;
    }
    if (!update) return;
    this.#stats.framesIn += 1;
    // Decoding starts now, for every rectangle at once, off the main thread; painting is chained
    // so that updates (and their acks) are applied strictly in arrival order.
    const decoded = Promise.allSettled(
      update.ops.map((op) => (op.op === OP_RECT ? createImageBitmap(new Blob([op.data], { type: op.mime })) : null)),
    );
    const arrived = performance.now();
    this.#queue = this.#queue
      .then(() => this.#apply(update, decoded, generation, arrived))
      .catch((err) => {
        // Whatever went wrong, the chain must go on and the server must hear of it.
        console.warn(`cobrowse: update ${update.number} could not be applied`, err);
        this.#ack(update.number, generation, true);
      });
  }

  async #apply(update, decoded, generation, arrived) {
    const results = await decoded;
    const canvas = this.#canvas;
    const ctx = this.#ctx;
    let failed = false;
    const resized = canvas.width !== update.width || canvas.height !== update.height;
    if (resized) {
      // Setting the size clears the canvas; a new size only comes with a keyframe.
      canvas.width = update.width;
      canvas.height = update.height;
    }
    update.ops.forEach((op, i) => {
      if (op.op === OP_COPY) {
        // New pixel (x, y) = old pixel (x + dx, y + dy). Drawing a canvas onto itself copies.
        ctx.drawImage(canvas, -op.dx, -op.dy);
        return;
      }
      const result = results[i];
      if (result.status !== 'fulfilled') {
        console.warn(`cobrowse: image of update ${update.number} could not be decoded`, result.reason);
        failed = true;
        return;
      }
      ctx.drawImage(result.value, op.x, op.y, op.w, op.h);
      result.value.close();
    });
    if (resized || !this.#hasImage) {
      this.#hasImage = true;
      this.fit();
    }

    const stats = this.#stats;
    const time = performance.now();
    stats.seq = update.number;
    // Updates that bring a new screen version (not refinements of the same one): the viewer's fps.
    if (update.version !== stats.version) stats.frames += 1;
    stats.version = update.version;
    stats.paints += 1;
    stats.lastPaintAt = time;
    // Arrival → painted, smoothed: the viewer's own share of its round trip.
    stats.paintMs = stats.paintMs == null ? time - arrived : stats.paintMs * 0.9 + (time - arrived) * 0.1;
    // Acknowledge even a failed update (the server stops after 2 unacknowledged), asking for a
    // whole screen instead of deltas on top of a wrong one.
    this.#ack(update.number, generation, failed);
    const detail = { seq: update.number, version: update.version, width: canvas.width, height: canvas.height, time };
    this.#onPaint?.(detail);
    window.dispatchEvent(new CustomEvent('cobrowse:paint', { detail }));
  }

  /** Sizes the canvas (CSS) to the largest box of the image's aspect ratio that fits the container. */
  fit() {
    const canvas = this.#canvas;
    const cw = this.#container.clientWidth;
    const ch = this.#container.clientHeight;
    if (!this.#hasImage || !cw || !ch) return;
    const scale = Math.min(cw / canvas.width, ch / canvas.height);
    canvas.style.width = `${Math.max(1, Math.floor(canvas.width * scale))}px`;
    canvas.style.height = `${Math.max(1, Math.floor(canvas.height * scale))}px`;
  }
}
