// Input capture on the shared screen: mouse, wheel, touch, keyboard and IME text → protocol messages.
// Coordinates are pixels of the painted frame image (docs/protocol.md), whatever the canvas's CSS size.

const BUTTON_NAMES = ['left', 'middle', 'right'];
const TAP_SLOP_PX = 10;
const TAP_MAX_MS = 500;
/** A finger held this long without moving is a right click (the page's context menu). */
const LONG_PRESS_MS = 550;
const LINE_PX = 40;
const TEXT_CHUNK = 4096; // protocol limit for one `text` message, in characters
const MODIFIER_KEYS = new Set(['Alt', 'AltGraph', 'Control', 'Meta', 'Shift', 'CapsLock', 'OS']);
/** macOS sends no keyup for keys released while Meta is held; other systems do. */
const IS_MAC = /Mac|iPhone|iPad|iPod/.test(navigator.userAgentData?.platform ?? navigator.platform ?? '');

/** Alt 1, Ctrl 2, Meta 4, Shift 8. */
export function modsOf(e) {
  return (e.altKey ? 1 : 0) | (e.ctrlKey ? 2 : 0) | (e.metaKey ? 4 : 0) | (e.shiftKey ? 8 : 0);
}

const round1 = (v) => Math.round(v * 10) / 10;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/**
 * Keys that stay with the local browser: reload, fullscreen, developer tools (Ctrl+Shift+I/J/C;
 * the server would not open the remote browser's developer tools either).
 */
function isReservedKey(e) {
  if (e.key === 'F5' || e.key === 'F11' || e.key === 'F12') return true;
  return (e.ctrlKey || e.metaKey) && e.shiftKey && (e.code === 'KeyI' || e.code === 'KeyJ' || e.code === 'KeyC');
}

const isPrintable = (key) => [...key].length === 1;

/** Ctrl/Cmd+V (Shift too): the local browser pastes the participant's own clipboard, and the
 *  `paste` event sends its text to the page. */
const isPasteKey = (e) => (e.ctrlKey || e.metaKey) && !e.altKey && e.code === 'KeyV';

export class InputCapture {
  #canvas;
  #ime;
  #send;
  #sendRaw;
  #isReady;
  #getViewport;
  #abort = null;
  #pending = null; // coalesced move or wheel waiting for the next animation frame
  #raf = 0;
  #buttons = new Set(); // DOM button numbers we sent `down` for
  #keys = new Map(); // code → last keydown message, for releasing on blur
  #lastPoint = { x: 0, y: 0 };
  #touch = null; // the one finger being tracked
  #printableSent = false; // a printable keydown was sent: its `input` event would duplicate it
  #composing = null; // composition update not sent yet (see #onInput)
  #composeTimer = 0;

  /**
   * @param canvas      the shared screen <canvas>
   * @param ime         hidden <textarea> receiving compositions and soft-keyboard text
   * @param send        (message) => void
   * @param isReady     () => bool: a frame has been painted, so coordinates mean something
   * @param getViewport () => {width, height} | null: the remote viewport in CSS px
   */
  constructor({ canvas, ime, send, isReady, getViewport }) {
    this.#canvas = canvas;
    this.#ime = ime;
    // Anything sent goes after a composition update still waiting, so order is kept.
    this.#send = (msg) => {
      this.#sendComposition();
      send(msg);
    };
    this.#sendRaw = send;
    this.#isReady = isReady;
    this.#getViewport = getViewport;
  }

  get enabled() {
    return this.#abort !== null;
  }

  setEnabled(on) {
    if (on === this.enabled) return;
    if (!on) {
      this.releaseAll();
      this.#abort.abort();
      this.#abort = null;
      this.#canvas.style.touchAction = '';
      return;
    }
    this.#abort = new AbortController();
    const opts = { signal: this.#abort.signal };
    const canvas = this.#canvas;
    const ime = this.#ime;
    // Touch gestures are ours (taps and scrolls of the remote page), not the local page's.
    canvas.style.touchAction = 'none';

    canvas.addEventListener('mousedown', (e) => this.#onMouseDown(e), opts);
    // On window: a drag that leaves the canvas must still move and end on the remote page.
    window.addEventListener('mousemove', (e) => this.#onMouseMove(e), opts);
    window.addEventListener('mouseup', (e) => this.#onMouseUp(e), opts);
    canvas.addEventListener('contextmenu', (e) => e.preventDefault(), opts);
    // Keyboard focus lives in the hidden textarea, the only kind of element an IME composes
    // in: a canvas that gets focus (Tab) hands it on.
    canvas.addEventListener('focus', () => ime.focus({ preventScroll: true }), opts);
    canvas.addEventListener('wheel', (e) => this.#onWheel(e), { ...opts, passive: false });
    canvas.addEventListener('pointerdown', (e) => this.#onPointerDown(e), opts);
    canvas.addEventListener('pointermove', (e) => this.#onPointerMove(e), opts);
    canvas.addEventListener('pointerup', (e) => this.#onPointerUp(e), opts);
    canvas.addEventListener('pointercancel', (e) => this.#onPointerCancel(e), opts);
    for (const el of [canvas, ime]) {
      el.addEventListener('keydown', (e) => this.#onKeyDown(e), opts);
      el.addEventListener('keyup', (e) => this.#onKeyUp(e), opts);
      // Keyups after focus moved elsewhere never reach us, so release now.
      el.addEventListener('blur', () => this.#releaseKeys(), opts);
    }
    for (const el of [canvas, ime]) el.addEventListener('paste', (e) => this.#onPaste(e), opts);
    ime.addEventListener('compositionend', (e) => this.#onCompositionEnd(e), opts);
    ime.addEventListener('compositionstart', () => this.#flush(), opts);
    // A new update (a commit's included) proves the one held back was not part of a commit.
    ime.addEventListener('compositionupdate', () => this.#sendComposition(), opts);
    ime.addEventListener('input', (e) => this.#onInput(e), opts);
    window.addEventListener('blur', () => this.releaseAll(), opts);
  }

  /** Sends key up / mouse up for everything still held, so nothing stays stuck remotely. */
  releaseAll() {
    this.#flush();
    this.#releaseKeys();
    for (const button of this.#buttons) {
      this.#send({
        t: 'mouse', type: 'up', ...this.#lastPoint, button: BUTTON_NAMES[button],
        buttons: 0, clicks: 0, mods: 0,
      });
    }
    this.#buttons.clear();
    this.#touch = null;
  }

  // ---- coordinates and coalescing ----

  #toImage(clientX, clientY) {
    const canvas = this.#canvas;
    const rect = canvas.getBoundingClientRect();
    if (!rect.width || !rect.height) return null;
    const x = ((clientX - rect.left) * canvas.width) / rect.width;
    const y = ((clientY - rect.top) * canvas.height) / rect.height;
    const point = {
      x: round1(clamp(x, 0, Math.max(0, canvas.width - 1))),
      y: round1(clamp(y, 0, Math.max(0, canvas.height - 1))),
    };
    this.#lastPoint = point;
    return point;
  }

  /** Queues a move or wheel for the next animation frame: moves keep the latest, wheels sum. */
  #queue(msg) {
    const p = this.#pending;
    if (p && p.t === 'wheel' && msg.t === 'wheel') {
      p.dx += msg.dx;
      p.dy += msg.dy;
      p.x = msg.x;
      p.y = msg.y;
      p.mods = msg.mods;
    } else if (p && p.t === 'mouse' && msg.t === 'mouse') {
      this.#pending = msg;
    } else {
      this.#flush(); // a different kind: keep the order of events
      this.#pending = msg;
    }
    if (!this.#raf) {
      this.#raf = requestAnimationFrame(() => {
        this.#raf = 0;
        this.#flush();
      });
    }
  }

  /** Sends the queued move/wheel now; called before any discrete event so it is never reordered or lost. */
  #flush() {
    const p = this.#pending;
    if (!p) return;
    this.#pending = null;
    if (p.t === 'wheel') {
      p.dx = round1(p.dx);
      p.dy = round1(p.dy);
      if (p.dx === 0 && p.dy === 0) return;
    }
    this.#send(p);
  }

  // ---- mouse and pen ----

  /** Mouse events synthesized from touch are handled by the pointer path instead. */
  static #fromTouch(e) {
    return e.sourceCapabilities?.firesTouchEvents === true;
  }

  #onMouseDown(e) {
    if (InputCapture.#fromTouch(e)) return;
    // Also stops middle-click autoscroll and text selection around the canvas; focus is explicit:
    // the hidden textarea, at the pointer (IME candidate windows open next to it).
    e.preventDefault();
    this.#focusIme(e.clientX, e.clientY);
    const button = BUTTON_NAMES[e.button];
    if (!button || !this.#isReady()) return;
    const point = this.#toImage(e.clientX, e.clientY);
    if (!point) return;
    this.#flush();
    this.#buttons.add(e.button);
    this.#send({
      t: 'mouse', type: 'down', ...point, button, buttons: e.buttons, clicks: e.detail, mods: modsOf(e),
    });
  }

  #onMouseMove(e) {
    if (InputCapture.#fromTouch(e)) return;
    if (this.#buttons.size === 0 && e.target !== this.#canvas) return;
    if (!this.#isReady()) return;
    const point = this.#toImage(e.clientX, e.clientY);
    if (!point) return;
    this.#queue({
      t: 'mouse', type: 'move', ...point, button: 'none', buttons: e.buttons, clicks: 0, mods: modsOf(e),
    });
  }

  #onMouseUp(e) {
    // Only buttons pressed on the canvas: an up without its down would confuse the remote page.
    if (!this.#buttons.has(e.button)) return;
    const point = this.#toImage(e.clientX, e.clientY) ?? this.#lastPoint;
    this.#flush();
    this.#buttons.delete(e.button);
    this.#send({
      t: 'mouse', type: 'up', ...point, button: BUTTON_NAMES[e.button],
      buttons: e.buttons, clicks: e.detail, mods: modsOf(e),
    });
  }

  #onWheel(e) {
    e.preventDefault(); // no local scrolling or ctrl+wheel zoom
    if (!this.#isReady()) return;
    const point = this.#toImage(e.clientX, e.clientY);
    if (!point) return;
    let factor = 1;
    if (e.deltaMode === 1) factor = LINE_PX;
    else if (e.deltaMode === 2) factor = this.#canvas.getBoundingClientRect().height;
    this.#queue({ t: 'wheel', ...point, dx: e.deltaX * factor, dy: e.deltaY * factor, mods: modsOf(e) });
  }

  // ---- touch: tap = click, one-finger drag = scroll ----

  #onPointerDown(e) {
    if (e.pointerType !== 'touch') return; // mouse and pen go through the mouse events
    // Suppresses the compatibility mouse events, so a tap is not also a mouse click.
    e.preventDefault();
    if (this.#touch) return; // second finger: ignored
    try {
      this.#canvas.setPointerCapture(e.pointerId);
    } catch {
      // capture is a convenience; without it the finger just stops being tracked off-canvas
    }
    const touch = {
      id: e.pointerId, startX: e.clientX, startY: e.clientY, startT: e.timeStamp,
      lastX: e.clientX, lastY: e.clientY, dragging: false, longPressed: false, timer: 0,
    };
    touch.timer = setTimeout(() => this.#longPress(touch), LONG_PRESS_MS);
    this.#touch = touch;
  }

  /** Held still: a right click where the finger is, and the tap that would follow is dropped. */
  #longPress(t) {
    if (this.#touch !== t || t.dragging || !this.#isReady()) return;
    const point = this.#toImage(t.startX, t.startY);
    if (!point) return;
    t.longPressed = true;
    this.#flush();
    const base = { t: 'mouse', ...point, clicks: 1, mods: 0 };
    this.#send({ ...base, type: 'move', button: 'none', buttons: 0, clicks: 0 });
    this.#send({ ...base, type: 'down', button: 'right', buttons: 2 });
    this.#send({ ...base, type: 'up', button: 'right', buttons: 0 });
  }

  /** Forgets the finger being tracked (a second finger started a pinch of the view). */
  cancelTouch() {
    const t = this.#touch;
    if (!t) return;
    clearTimeout(t.timer);
    this.#touch = null;
    this.#flush();
  }

  #onPointerMove(e) {
    const t = this.#touch;
    if (!t || e.pointerId !== t.id) return;
    if (!t.dragging) {
      if (Math.hypot(e.clientX - t.startX, e.clientY - t.startY) <= TAP_SLOP_PX) return;
      t.dragging = true; // the first scroll includes the slop, so content stays under the finger
      clearTimeout(t.timer);
    }
    if (!this.#isReady()) return;
    const point = this.#toImage(e.clientX, e.clientY);
    if (!point) return;
    const scale = this.#remotePxPerCssPx();
    const dx = -(e.clientX - t.lastX) * scale;
    const dy = -(e.clientY - t.lastY) * scale;
    t.lastX = e.clientX;
    t.lastY = e.clientY;
    this.#queue({ t: 'wheel', ...point, dx, dy, mods: 0 });
  }

  #onPointerUp(e) {
    const t = this.#touch;
    if (!t || e.pointerId !== t.id) return;
    this.#touch = null;
    clearTimeout(t.timer);
    if (t.longPressed || t.dragging || e.timeStamp - t.startT > TAP_MAX_MS || !this.#isReady()) {
      this.#flush();
      return;
    }
    const point = this.#toImage(e.clientX, e.clientY);
    if (!point) return;
    this.#flush();
    const base = { t: 'mouse', ...point, clicks: 1, mods: 0 };
    this.#send({ ...base, type: 'move', button: 'none', buttons: 0, clicks: 0 });
    this.#send({ ...base, type: 'down', button: 'left', buttons: 1 });
    this.#send({ ...base, type: 'up', button: 'left', buttons: 0 });
    this.#focusIme(e.clientX, e.clientY);
  }

  #onPointerCancel(e) {
    if (this.#touch?.id === e.pointerId) this.cancelTouch();
    this.#flush();
  }

  /** Remote CSS px per local CSS px, so a drag scrolls the remote page exactly as far as the finger moved. */
  #remotePxPerCssPx() {
    const rect = this.#canvas.getBoundingClientRect();
    if (!rect.width) return 1;
    const remoteWidth = this.#getViewport()?.width || this.#canvas.width;
    return remoteWidth / rect.width;
  }

  /** Focuses the hidden textarea at the tap, so the soft keyboard opens and IME popups sit nearby. */
  #focusIme(clientX, clientY) {
    const ime = this.#ime;
    const parent = ime.offsetParent?.getBoundingClientRect() ?? { left: 0, top: 0 };
    ime.style.left = `${Math.round(clientX - parent.left)}px`;
    ime.style.top = `${Math.round(clientY - parent.top)}px`;
    ime.focus({ preventScroll: true });
  }

  // ---- keyboard ----

  #keyMessage(type, e) {
    return {
      t: 'key', type, key: e.key, code: e.code, keyCode: e.keyCode,
      location: e.location, mods: modsOf(e), repeat: e.repeat,
    };
  }

  #onKeyDown(e) {
    // IME in progress: the text arrives through compositionend / input instead.
    if (e.isComposing || e.keyCode === 229) return;
    if (isReservedKey(e) || isPasteKey(e)) return;
    this.#flush();
    const msg = this.#keyMessage('down', e);
    // A dead key goes to the page (it sees keydown "Dead", as locally), but its default is
    // kept: the local browser combines it with the next key into a composition or a key
    // that types the accented letter, and that is forwarded in turn.
    if (e.key === 'Dead') {
      this.#keys.set(e.code || e.key, msg);
      this.#send(msg);
      return;
    }
    // Everything else is the remote page's: Tab, Ctrl+A, Backspace, arrows, space, …
    e.preventDefault();
    this.#keys.set(e.code || e.key, msg);
    if (isPrintable(e.key)) this.#printableSent = true;
    this.#send(msg);
  }

  #onKeyUp(e) {
    const id = e.code || e.key;
    if (!this.#keys.has(id)) return; // its keydown was reserved, composing, or elsewhere
    e.preventDefault();
    this.#keys.delete(id);
    this.#printableSent = false;
    this.#send(this.#keyMessage('up', e));
    // macOS sends no keyup for keys released while Meta is held; release them with Meta.
    if (e.key === 'Meta' && IS_MAC) {
      for (const [other, down] of this.#keys) {
        if (MODIFIER_KEYS.has(down.key)) continue;
        this.#keys.delete(other);
        this.#send({ ...down, type: 'up', repeat: false, mods: modsOf(e) });
      }
    }
  }

  #releaseKeys() {
    for (const down of this.#keys.values()) {
      this.#send({ ...down, type: 'up', repeat: false, mods: 0 });
    }
    this.#keys.clear();
    this.#printableSent = false;
  }

  // ---- IME and soft keyboards (text no key event describes) ----

  /**
   * The composition as it stands after each change, so the remote page composes too (its
   * composition events, the underlined text in its field). The textarea is empty outside
   * compositions, so its value is the composing text and its selection the IME's caret.
   */
  #queueComposition() {
    this.#flush(); // a move queued before the composition goes before it
    const ime = this.#ime;
    this.#composing = { t: 'compose', text: ime.value, start: ime.selectionStart, end: ime.selectionEnd };
    // Held back until the next composition event or a later task: a commit updates the
    // composition to the final text and ends it in one go, and the remote page must see that as
    // one commit (`text`, which updates and ends its composition), not an update and a commit.
    clearTimeout(this.#composeTimer);
    this.#composeTimer = setTimeout(() => this.#sendComposition(), 0);
  }

  #sendComposition() {
    const msg = this.#composing;
    if (!msg) return;
    this.#composing = null;
    clearTimeout(this.#composeTimer);
    this.#flush();
    this.#sendRaw(msg);
  }

  /** Commits the remote composition with the final text, or cancels it (empty text). */
  #onCompositionEnd(e) {
    this.#composing = null; // the commit carries the final text
    clearTimeout(this.#composeTimer);
    const text = e.data ?? '';
    if (text) this.#sendText(text);
    else this.#send({ t: 'compose', text: '', start: 0, end: 0 });
    this.#ime.value = '';
  }

  #onInput(e) {
    if (e.isComposing) {
      // compositionend delivers the result; until then the remote page follows the composition.
      if (e.inputType === 'insertCompositionText' || e.inputType === 'deleteCompositionText') {
        this.#queueComposition();
      }
      return;
    }
    const ime = this.#ime;
    switch (e.inputType) {
      case 'insertText':
      case 'insertFromPaste':
        // A printable keydown already went out on the key path; sending its text too would type twice.
        if (!this.#printableSent) this.#sendText(e.data ?? ime.value);
        break;
      // Soft keyboards report these with keyCode 229 keydowns, so emulate the keys.
      case 'deleteContentBackward':
        this.#tapKey('Backspace', 'Backspace', 8);
        break;
      case 'insertLineBreak':
      case 'insertParagraph':
        this.#tapKey('Enter', 'Enter', 13);
        break;
      default:
        break;
    }
    // Outside a composition the textarea's content is never needed again.
    ime.value = '';
  }

  /** The participant's clipboard, pasted: its text goes to the page as typed text. */
  #onPaste(e) {
    e.preventDefault();
    const text = e.clipboardData?.getData('text/plain') ?? '';
    if (text) this.#sendText(text.replace(/\r\n?/g, '\n'));
  }

  #sendText(text) {
    this.#flush();
    const chars = [...text];
    for (let i = 0; i < chars.length; i += TEXT_CHUNK) {
      this.#send({ t: 'text', text: chars.slice(i, i + TEXT_CHUNK).join('') });
    }
  }

  #tapKey(key, code, keyCode) {
    const msg = { t: 'key', type: 'down', key, code, keyCode, location: 0, mods: 0, repeat: false };
    this.#send(msg);
    this.#send({ ...msg, type: 'up' });
  }
}
