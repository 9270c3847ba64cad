// Entry point of replay.html: loads a recording (/r/{id}/recording), paints its screen through the
// live viewer's Screen, and lets people play, pause, seek and jump to what happened.
//
// Seeking paints the last keyframe at or before the time and the updates after it up to the time,
// strictly in order (Screen's queue), a few decoding at once; a newer seek stops an older one from
// handing over more. Playing hands over updates as the clock (requestAnimationFrame × speed)
// reaches them. Everything from the recording is untrusted: text goes in with textContent only.

import { Screen } from './screen.js';
import { MaskOverlay } from './masks.js';
import { parseRecording, RecordingError } from './recording.js';
import { idAndToken } from './connection.js';

const SKIP_MS = 5000;
/** Updates handed to the screen (and so decoding) at once during a seek. */
const IN_FLIGHT = 8;
const SPEEDS = [0.5, 1, 2, 4, 8];

const $ = (id) => document.getElementById(id);
const ui = {
  body: document.body,
  badge: $('replay-badge'),
  url: $('replay-url'),
  title: $('replay-title'),
  notice: $('replay-notice'),
  bundle: $('bundle'),
  sideToggle: $('side-toggle'),
  side: $('side'),
  stage: $('stage'),
  canvas: $('screen'),
  placeholder: $('placeholder'),
  progress: $('progress'),
  progressText: $('progress-text'),
  overlay: $('overlay'),
  overlayTitle: $('overlay-title'),
  overlayDetail: $('overlay-detail'),
  list: $('event-list'),
  listEmpty: $('event-empty'),
  play: $('play'),
  speed: $('speed'),
  time: $('time'),
  timeline: $('timeline'),
  fill: $('timeline-fill'),
  thumb: $('thumb'),
  markers: $('markers'),
  cutoff: $('cutoff-mark'),
};

/** The recording id and access token from /replay/{id}#token=…. */
export function fromLocation(loc = location) {
  return idAndToken('replay', loc);
}

/** mm:ss (h:mm:ss from an hour on). */
export function formatTime(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const s = String(total % 60).padStart(2, '0');
  const m = Math.floor(total / 60);
  if (m < 60) return `${String(m).padStart(2, '0')}:${s}`;
  return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${s}`;
}

/** The last index of `items` (sorted by `t`) whose `t` is at most `t`, or -1. */
function lastAtOrBefore(items, t) {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (items[mid].t <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

function clip(text, max = 300) {
  const s = String(text ?? '');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function who(actor) {
  if (!actor || typeof actor !== 'object') return '';
  return clip(actor.name || actor.id || '', 40);
}

const KIND_NAMES = { nav: 'Navigation', click: 'Click', error: 'Error', chat: 'Chat' };

/**
 * What the page shows besides the screen, from the recording's events: the markers (navigations,
 * clicks, errors, chat), the page (URL, title) over time and the masks over time.
 */
export function index(rec) {
  const markers = [];
  const pages = [];
  const masks = [];
  const requests = new Map();
  let url = typeof rec.meta?.startUrl === 'string' ? rec.meta.startUrl : '';
  let title = '';
  pages.push({ t: 0, url, title });
  const add = (t, kind, by, what) => markers.push({ t, kind, who: by, what: clip(what) });
  for (const { t, event: e } of rec.events) {
    switch (e.type) {
      case 'server': {
        const msg = e.message;
        if (!msg || typeof msg !== 'object') break;
        if (msg.t === 'page') {
          const next = typeof msg.url === 'string' ? msg.url : url;
          const nextTitle = typeof msg.title === 'string' ? msg.title : title;
          if (next !== url) add(t, 'nav', '', `Went to ${next}`);
          if (next !== url || nextTitle !== title) pages.push({ t, url: next, title: nextTitle });
          url = next;
          title = nextTitle;
        } else if (msg.t === 'chat') {
          add(t, 'chat', clip(msg.name || msg.from || '', 40), msg.text);
        } else if (msg.t === 'masks') {
          masks.push({ t, msg });
        }
        break;
      }
      case 'input': {
        const input = e.input;
        if (input?.kind === 'mouse' && input.action === 'pressed') {
          const x = Math.round(Number(input.x));
          const y = Math.round(Number(input.y));
          const button = input.button && input.button !== 'left' ? `${input.button} ` : '';
          add(t, 'click', who(e.by), `${button ? `${button}click` : 'Clicked'} at ${x}, ${y}`);
        }
        break;
      }
      case 'console':
        if (e.level === 'error') add(t, 'error', 'page', `Console error: ${e.text}`);
        break;
      case 'exception':
        add(t, 'error', 'page', /^uncaught/i.test(String(e.text)) ? e.text : `Uncaught: ${e.text}`);
        break;
      case 'request':
        if (typeof e.id === 'string') requests.set(e.id, `${e.method ?? ''} ${e.url ?? ''}`.trim());
        break;
      case 'response':
        if (Number(e.status) >= 400) {
          add(t, 'error', 'network', `HTTP ${e.status} ${e.statusText ?? ''}: ${requests.get(e.id) ?? 'request'}`);
        }
        break;
      case 'failed':
        // A canceled request (a navigation away, an aborted fetch) is not an error of the page.
        if (!e.canceled) {
          const why = e.blocked ? `blocked (${e.blocked})` : e.error;
          add(t, 'error', 'network', `Request failed, ${why}: ${requests.get(e.id) ?? 'request'}`);
        }
        break;
      default:
        break;
    }
  }
  return { markers, pages, masks };
}

class Player {
  rec;
  #buffer;
  #screen;
  #masks;
  #info;
  /** Index of the last update handed to the screen: what the canvas shows once its queue drains. */
  #fed = -1;
  /** Resolvers of updates handed over and not yet painted, in order. */
  #acks = [];
  #last = Promise.resolve();
  #gen = 0;
  #target = -1;
  #running = false;
  #waiters = [];
  #playing = false;
  #clock = 0;
  #maskIndex = -1;
  t = 0;
  speed = 1;
  onChange = () => {};

  constructor(rec, buffer, screen, masks) {
    this.rec = rec;
    this.#buffer = buffer;
    this.#screen = screen;
    this.#masks = masks;
    this.#info = index(rec);
  }

  get info() {
    return this.#info;
  }

  get duration() {
    return this.rec.duration;
  }

  get playing() {
    return this.#playing;
  }

  /** Screen's ack: update painted (or failed and skipped), in order. */
  painted() {
    this.#acks.shift()?.();
  }

  #feed(i, gen) {
    const u = this.rec.updates[i];
    const done = new Promise((resolve) => this.#acks.push(resolve));
    this.#screen.handle(this.#buffer.slice(u.offset, u.offset + u.length), gen);
    this.#fed = i;
    this.#last = done;
    return done;
  }

  /** Brings the canvas to update `k` (-1: nothing yet), unless a newer seek (`gen`) takes over. */
  async #paintTo(k, gen) {
    const updates = this.rec.updates;
    if (k < 0) {
      await this.#last;
      if (gen !== this.#gen) return;
      const ctx = ui.canvas.getContext('2d', { alpha: false });
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, ui.canvas.width, ui.canvas.height);
      this.#fed = -1;
      return;
    }
    const keyframes = this.rec.keyframes;
    // The last keyframe at or before k (binary search over update indices).
    let lo = 0;
    let hi = keyframes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (keyframes[mid] <= k) lo = mid + 1;
      else hi = mid;
    }
    const keyframe = lo > 0 ? keyframes[lo - 1] : 0;
    // Forward with no keyframe in between: go on from what the canvas has.
    const start = this.#fed >= 0 && this.#fed <= k && keyframe <= this.#fed ? this.#fed + 1 : keyframe;
    const waits = [];
    for (let i = start; i <= k && i < updates.length; i++) {
      if (waits.length >= IN_FLIGHT) await waits[waits.length - IN_FLIGHT];
      if (gen !== this.#gen) break;
      waits.push(this.#feed(i, gen));
    }
    await Promise.all(waits);
  }

  /**
   * Paints towards `#target` until the canvas has it: one painting loop at a time. A seek bumps
   * `#gen`, which stops the loop handing over updates for an older target; playing only moves
   * the target on, and the loop carries on from what it handed over.
   */
  async #run() {
    if (this.#running) return;
    this.#running = true;
    try {
      for (;;) {
        const gen = this.#gen;
        const k = this.#target;
        await this.#paintTo(k, gen);
        if (gen === this.#gen && k === this.#target) break;
      }
    } finally {
      this.#running = false;
      const waiters = this.#waiters;
      this.#waiters = [];
      waiters.forEach((resolve) => resolve());
      this.#changed();
    }
  }

  /** Moves the playhead to `ms`; resolves once the screen of that time (or of a newer seek) is painted. */
  seek(ms) {
    this.t = Math.min(Math.max(0, Number(ms) || 0), this.duration);
    this.#gen += 1;
    this.#target = lastAtOrBefore(this.rec.updates, this.t);
    const done = new Promise((resolve) => this.#waiters.push(resolve));
    this.#changed();
    this.#run();
    return done;
  }

  play() {
    if (this.#playing) return;
    if (this.t >= this.duration) this.seek(0);
    this.#playing = true;
    this.#clock = performance.now();
    requestAnimationFrame((now) => this.#tick(now));
    this.#changed();
  }

  pause() {
    if (!this.#playing) return;
    this.#playing = false;
    this.#changed();
  }

  #tick(now) {
    if (!this.#playing) return;
    this.t = Math.min(this.duration, this.t + Math.max(0, now - this.#clock) * this.speed);
    this.#clock = now;
    if (this.t >= this.duration) this.#playing = false;
    // The updates whose time has come; while a batch paints the clock runs on, and the loop
    // takes the rest (from a later keyframe, when it fell that far behind).
    this.#target = lastAtOrBefore(this.rec.updates, this.t);
    this.#run();
    this.#changed();
    if (this.#playing) requestAnimationFrame((n) => this.#tick(n));
  }

  /** Where the page was at the playhead. */
  page() {
    const pages = this.#info.pages;
    return pages[Math.max(0, lastAtOrBefore(pages, this.t))];
  }

  /** Whether everything up to the playhead has been painted. */
  get caughtUp() {
    return !this.#running && this.#acks.length === 0 && this.#fed === lastAtOrBefore(this.rec.updates, this.t);
  }

  #changed() {
    const m = lastAtOrBefore(this.#info.masks, this.t);
    if (m !== this.#maskIndex) {
      this.#maskIndex = m;
      this.#masks.masks(m >= 0 ? this.#info.masks[m].msg : { rects: [] });
    }
    this.onChange();
  }
}

// ---------- page ----------

const { id, token } = fromLocation();
const headers = token ? { Authorization: `Bearer ${token}` } : {};
let player = null;
let readyResolve;
let readyReject;
const ready = new Promise((resolve, reject) => {
  readyResolve = resolve;
  readyReject = reject;
});
ready.catch(() => {}); // shown on the page; tests read the rejection themselves

window.__replay = {
  ready,
  get duration() {
    return player ? player.duration : 0;
  },
  seek: (ms) => (player ? player.seek(ms) : Promise.reject(new Error('not loaded'))),
  play: () => player?.play(),
  pause: () => player?.pause(),
  setSpeed: (s) => setSpeed(s),
  state: () => ({
    t: player ? player.t : 0,
    playing: player ? player.playing : false,
    speed: player ? player.speed : 1,
    duration: player ? player.duration : 0,
    url: player ? player.page().url : '',
    title: player ? player.page().title : '',
    truncated: player ? player.rec.truncated : false,
    caughtUp: player ? player.caughtUp : false,
    markers: player ? player.info.markers.map(({ t, kind, who: by, what }) => ({ t, kind, who: by, what })) : [],
  }),
};

function setState(state, label) {
  ui.body.dataset.state = state;
  ui.badge.textContent = label;
}

function notice(text, error = false) {
  ui.notice.textContent = text;
  ui.notice.classList.toggle('error', error);
  ui.notice.hidden = !text;
  window.dispatchEvent(new CustomEvent('replay:notice'));
}

function fail(title, detail) {
  setState('error', 'error');
  ui.placeholder.hidden = true;
  ui.overlayTitle.textContent = title;
  ui.overlayDetail.textContent = detail;
  ui.overlay.hidden = false;
  window.dispatchEvent(new CustomEvent('replay:state'));
}

class HttpError extends Error {
  constructor(status, text) {
    super(`HTTP ${status}`);
    this.status = status;
    this.text = text;
  }
}

/** Fetches the recording, reporting progress; resolves to its bytes. */
async function download(url) {
  const res = await fetch(url, { headers, cache: 'no-store' });
  if (!res.ok) throw new HttpError(res.status, clip(await res.text().catch(() => ''), 200));
  const total = Number(res.headers.get('content-length')) || 0;
  if (!res.body) return res.arrayBuffer();
  const reader = res.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    const mb = (received / 1048576).toFixed(1);
    if (total) {
      ui.progress.value = received / total;
      ui.progressText.textContent = `Loading the recording… ${mb} of ${(total / 1048576).toFixed(1)} MB`;
    } else {
      ui.progress.removeAttribute('value');
      ui.progressText.textContent = `Loading the recording… ${mb} MB`;
    }
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes.buffer;
}

function setSpeed(value) {
  const speed = Number(value);
  if (!SPEEDS.includes(speed)) return;
  ui.speed.value = String(speed);
  if (player) player.speed = speed;
}

// Timeline and list, redrawn on every change of the playhead.
let currentItem = -1;
const items = [];

function render() {
  if (!player) return;
  const d = player.duration;
  const share = d > 0 ? player.t / d : 0;
  ui.fill.style.width = `${share * 100}%`;
  ui.thumb.style.left = `${share * 100}%`;
  const now = formatTime(player.t);
  ui.time.textContent = `${now} / ${formatTime(d)}`;
  ui.timeline.setAttribute('aria-valuenow', String(Math.round(player.t)));
  ui.timeline.setAttribute('aria-valuetext', now);
  const playing = player.playing;
  ui.play.textContent = playing ? '\u23F8' : '\u25B6';
  ui.play.setAttribute('aria-label', playing ? 'Pause' : 'Play');
  const page = player.page();
  if (ui.url.textContent !== page.url) {
    ui.url.textContent = page.url;
    ui.url.title = page.url;
  }
  if (ui.title.textContent !== page.title) ui.title.textContent = page.title;
  const current = lastAtOrBefore(player.info.markers, player.t);
  if (current !== currentItem) {
    items.forEach((li, i) => {
      li.classList.toggle('past', i <= current);
      li.classList.toggle('current', i === current);
    });
    currentItem = current;
  }
}

// Tests and tools wait on this: dispatched on every change of the playhead, play state or paint.
function changed() {
  render();
  window.dispatchEvent(new CustomEvent('replay:state'));
}

function buildMarkers() {
  const { markers } = player.info;
  const d = player.duration;
  ui.markers.replaceChildren();
  ui.list.replaceChildren();
  items.length = 0;
  markers.forEach((m) => {
    const label = `${formatTime(m.t)} ${KIND_NAMES[m.kind]}${m.who ? ` (${m.who})` : ''}: ${m.what}`;
    const mark = document.createElement('span');
    mark.className = `marker marker-${m.kind}`;
    mark.dataset.kind = m.kind;
    mark.dataset.t = String(m.t);
    mark.style.left = `${d > 0 ? (m.t / d) * 100 : 0}%`;
    mark.title = label;
    ui.markers.append(mark);

    const li = document.createElement('li');
    li.dataset.kind = m.kind;
    li.dataset.t = String(m.t);
    const button = document.createElement('button');
    button.type = 'button';
    button.className = `kind-${m.kind}`;
    button.title = label;
    const time = document.createElement('span');
    time.className = 'ev-time';
    time.textContent = formatTime(m.t);
    const by = document.createElement('span');
    by.className = 'ev-who';
    by.textContent = m.who;
    const what = document.createElement('span');
    what.className = 'ev-what';
    const kind = document.createElement('span');
    kind.className = 'sr-only';
    kind.textContent = `${KIND_NAMES[m.kind]}: `;
    what.append(kind, m.what);
    button.append(time, by, what);
    button.addEventListener('click', () => player.seek(m.t));
    li.append(button);
    ui.list.append(li);
    items.push(li);
  });
  ui.listEmpty.hidden = markers.length > 0;
}

// Timeline: press, drag (each position a seek; a newer one stops an older one), touch included.
function timeAt(clientX) {
  const r = ui.timeline.getBoundingClientRect();
  const share = r.width > 0 ? (clientX - r.left) / r.width : 0;
  return Math.min(1, Math.max(0, share)) * player.duration;
}

let drag = null;
ui.timeline.addEventListener('pointerdown', (e) => {
  if (!player || e.button !== 0) return;
  e.preventDefault();
  ui.timeline.focus({ preventScroll: true });
  ui.timeline.setPointerCapture(e.pointerId);
  drag = { id: e.pointerId, resume: player.playing };
  player.pause();
  player.seek(timeAt(e.clientX));
});
ui.timeline.addEventListener('pointermove', (e) => {
  if (drag && e.pointerId === drag.id) player.seek(timeAt(e.clientX));
});
const endDrag = (e) => {
  if (!drag || e.pointerId !== drag.id) return;
  const resume = drag.resume;
  drag = null;
  if (resume) player.play();
};
ui.timeline.addEventListener('pointerup', endDrag);
ui.timeline.addEventListener('pointercancel', endDrag);

function toggle() {
  if (!player) return;
  if (player.playing) player.pause();
  else player.play();
}

ui.play.addEventListener('click', toggle);
ui.speed.addEventListener('change', () => setSpeed(ui.speed.value));
ui.sideToggle.addEventListener('click', () => {
  ui.side.hidden = !ui.side.hidden;
  ui.sideToggle.setAttribute('aria-expanded', String(!ui.side.hidden));
});

document.addEventListener('keydown', (e) => {
  if (!player || e.altKey || e.ctrlKey || e.metaKey) return;
  const tag = e.target?.tagName;
  if (tag === 'SELECT' || tag === 'INPUT' || tag === 'TEXTAREA') return;
  if (e.key === ' ' || e.code === 'Space') {
    // A toolbar button's own click; in the events list, Space still plays (Enter seeks).
    if (tag === 'BUTTON' && !ui.list.contains(e.target)) return;
    e.preventDefault();
    toggle();
  } else if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
    e.preventDefault();
    player.seek(player.t + (e.key === 'ArrowLeft' ? -SKIP_MS : SKIP_MS));
  } else if (e.target === ui.timeline && (e.key === 'Home' || e.key === 'End')) {
    e.preventDefault();
    player.seek(e.key === 'Home' ? 0 : player.duration);
  }
});

// Bug bundle: built by the server, if it builds them.
ui.bundle.addEventListener('click', async () => {
  ui.bundle.disabled = true;
  notice('Preparing the bug bundle…');
  try {
    const res = await fetch(`/r/${encodeURIComponent(id)}/bundle`, { headers, cache: 'no-store' });
    if (res.status === 404 || res.status === 501) {
      const why = clip(await res.text().catch(() => ''), 200);
      notice(`No bug bundle is available for this recording here${why ? `: ${why}` : '.'}`, true);
      return;
    }
    if (!res.ok) {
      notice(`The bug bundle could not be made (HTTP ${res.status}).`, true);
      return;
    }
    const blob = await res.blob();
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${String(id).replace(/[^A-Za-z0-9._-]/g, '_')}.zip`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    notice(player?.rec.truncated ? ui.notice.dataset.cutoff ?? '' : '');
  } catch (err) {
    notice(`The bug bundle could not be downloaded: ${err.message}`, true);
  } finally {
    ui.bundle.disabled = false;
  }
});

async function main() {
  if (!id) {
    fail('No recording', 'This address does not name a recording.');
    readyReject(new Error('no recording id'));
    return;
  }
  let buffer;
  try {
    buffer = await download(`/r/${encodeURIComponent(id)}/recording`);
  } catch (err) {
    const status = err instanceof HttpError ? err.status : 0;
    const detail =
      status === 404
        ? 'There is no such recording (or it was deleted).'
        : status === 401 || status === 403
          ? 'This link does not allow watching the recording (its token is missing, wrong or expired).'
          : `${err.message}${err.text ? `: ${err.text}` : ''}`;
    fail('The recording could not be loaded', detail);
    readyReject(err);
    return;
  }
  let rec;
  try {
    rec = parseRecording(buffer);
  } catch (err) {
    fail(err instanceof RecordingError ? 'Not a recording' : 'The recording could not be read', err.message);
    readyReject(err);
    return;
  }
  const stats = { seq: null, version: null, frames: 0, paints: 0, bytesIn: 0, framesIn: 0, lastPaintAt: null, paintMs: null };
  const masks = new MaskOverlay($('masks'), ui.canvas);
  let p = null;
  const screen = new Screen({
    canvas: ui.canvas,
    container: ui.stage,
    stats,
    ack: () => p?.painted(),
    onPaint: () => {
      ui.placeholder.hidden = true;
    },
  });
  p = new Player(rec, buffer, screen, masks);
  player = p;
  player.speed = Number(ui.speed.value) || 1;
  player.onChange = changed;
  if (rec.meta?.id) document.title = `Replay ${clip(rec.meta.id, 60)} · cobrowse`;
  ui.timeline.setAttribute('aria-valuemax', String(rec.duration));
  buildMarkers();
  ui.progressText.textContent = rec.updates.length ? 'Painting…' : 'Nothing was recorded on the screen.';
  ui.progress.hidden = true;
  if (rec.truncated) {
    const cut = `Recording cut off at ${formatTime(rec.end)}: the rest of the file is incomplete (the server stopped while recording).`;
    ui.notice.dataset.cutoff = cut;
    notice(cut);
    ui.cutoff.hidden = false;
    ui.cutoff.style.left = '100%';
  }
  ui.play.disabled = false;
  ui.bundle.disabled = false;
  setState('ready', rec.truncated ? 'cut off' : 'recording');
  await player.seek(0);
  render();
  readyResolve({ duration: rec.duration, truncated: rec.truncated, updates: rec.updates.length });
}

main().catch((err) => {
  fail('The replay failed', err?.message ?? String(err));
  readyReject(err);
});
