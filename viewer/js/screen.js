// Screen frames: parse the binary header, decode, paint in arrival order, acknowledge.

const HEADER_BYTES = 12;
const KIND_FRAME = 1;
const CODEC_JPEG = 1;

/** Parses a binary message; returns null for anything that is not a JPEG frame of this protocol version. */
export function parseFrame(buffer) {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < HEADER_BYTES) return null;
  const view = new DataView(buffer);
  // Unknown kinds/codecs are skipped so that later server versions can add message kinds.
  if (view.getUint8(0) !== KIND_FRAME || view.getUint8(1) !== CODEC_JPEG) return null;
  return {
    seq: view.getUint32(4, true),
    width: view.getUint16(8, true),
    height: view.getUint16(10, true),
    image: new Uint8Array(buffer, HEADER_BYTES),
  };
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
   * @param canvas   the <canvas>; its intrinsic size follows the frame image size
   * @param container element the canvas is fitted into (letterboxed)
   * @param stats    window.cobrowse counters, updated in place
   * @param ack      (seq, generation) => void, called after a frame was painted
   * @param onPaint  optional ({seq, width, height}) => void
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
    const frame = parseFrame(buffer);
    if (!frame) return;
    this.#stats.framesIn += 1;
    // One chain for all frames: decoding runs off the main thread, but chaining keeps paints (and
    // therefore acks) strictly in arrival order even when a later, smaller frame decodes faster.
    // The server keeps at most 2 frames unacknowledged, so this queue stays short.
    this.#queue = this.#queue.then(() => this.#paint(frame, generation));
  }

  async #paint(frame, generation) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(new Blob([frame.image], { type: 'image/jpeg' }));
    } catch (err) {
      // Still acknowledge: the server stops sending after 2 unacknowledged frames, and the next
      // frame replaces the whole screen anyway.
      console.warn(`cobrowse: frame ${frame.seq} could not be decoded`, err);
      this.#ack(frame.seq, generation);
      return;
    }
    const canvas = this.#canvas;
    const resized = canvas.width !== bitmap.width || canvas.height !== bitmap.height;
    if (resized) {
      // Setting the size clears the canvas; harmless since the frame covers all of it.
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    this.#ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    if (resized || !this.#hasImage) {
      this.#hasImage = true;
      this.fit();
    }

    const stats = this.#stats;
    const time = performance.now();
    stats.seq = frame.seq;
    stats.paints += 1;
    stats.lastPaintAt = time;
    this.#ack(frame.seq, generation);
    const detail = { seq: frame.seq, width: canvas.width, height: canvas.height, time };
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
