// Entry point of session.html: wires the connection, the screen, input capture and the toolbar.

import { Connection, joinFromLocation } from './connection.js';
import { Screen } from './screen.js';
import { InputCapture } from './input.js';
import { PeoplePanel, initialName } from './people.js';
import { PointerShare, RemoteCursors } from './cursors.js';
import { ControlPanel } from './control.js';
import { Annotations } from './annotate.js';
import { ViewZoom } from './zoom.js';
import { NavBar } from './navbar.js';
import { TabStrip } from './tabs.js';
import { FileAsk } from './files.js';
import { Downloads } from './downloads.js';
import { PasteBox } from './paste.js';
import { PickerBox } from './picker.js';
import { PageDialogs } from './dialogs.js';
import { SelectPopup } from './select.js';
import { MaskOverlay } from './masks.js';
import { Recording } from './record.js';

const NOTICE_MS = 5000;
const STATE_LABELS = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  ended: 'ended',
};

const $ = (id) => document.getElementById(id);
const ui = {
  state: $('conn-state'),
  presence: $('presence'),
  role: $('role'),
  viewOnly: $('view-only'),
  share: $('share'),
  canvas: $('screen'),
  stage: $('stage'),
  ime: $('ime'),
  placeholder: $('placeholder'),
  overlay: $('overlay'),
  overlayTitle: $('overlay-title'),
  overlayDetail: $('overlay-detail'),
  notice: $('notice'),
  noticeText: $('notice-text'),
  noticeClose: $('notice-close'),
};

// Testing and benchmarking hooks (names are relied upon by tests).
const stats = {
  state: 'connecting', role: null, seq: null, version: null, frames: 0, paints: 0, bytesIn: 0, framesIn: 0, lastPaintAt: null,
  links: null, paintMs: null, pointers: [],
};
window.cobrowse = stats;

const join = joinFromLocation();
const conn = new Connection(join);
conn.name = initialName();
const kiosk = new URLSearchParams(location.search).get('kiosk') === '1';
if (kiosk) document.body.classList.add('kiosk');
let viewport = null;
let greeted = false;

const screen = new Screen({
  canvas: ui.canvas,
  container: ui.stage,
  stats,
  // An ack belongs to the socket that delivered the update; a new socket never saw that number.
  ack: (seq, generation, resync) => {
    if (generation === conn.generation) conn.send(resync ? { t: 'ack', seq, resync: true } : { t: 'ack', seq });
  },
  onPaint: () => {
    ui.placeholder.hidden = true;
  },
});

const input = new InputCapture({
  canvas: ui.canvas,
  ime: ui.ime,
  send: (msg) => conn.send(msg),
  isReady: () => stats.paints > 0,
  getViewport: () => viewport,
});

const people = new PeoplePanel(
  {
    side: $('side'),
    toggle: $('side-toggle'),
    unread: $('chat-unread'),
    nameForm: $('name-form'),
    nameInput: $('name-input'),
    people: $('people'),
    chatLog: $('chat-log'),
    chatForm: $('chat-form'),
    chatInput: $('chat-input'),
  },
  (msg) => conn.send(msg),
  stats,
  (name) => {
    conn.name = name;
  },
);
if (kiosk) people.setOpen(false);
new PointerShare(ui.canvas, (msg) => conn.send(msg));
// Two fingers zoom the view; the one-finger scroll in progress, if any, stops.
const zoom = new ViewZoom(ui.stage, ui.canvas, () => input.cancelTouch());
stats.zoom = () => zoom.scale;
const annotations = new Annotations(
  {
    layer: $('annotations'),
    screen: ui.canvas,
    stage: ui.stage,
    buttons: [...document.querySelectorAll('button.tool')],
  },
  (msg) => conn.send(msg),
);
const control = new ControlPanel(
  {
    indicator: $('control-state'),
    section: $('control-section'),
    policy: $('control-policy'),
    request: $('control-request'),
    release: $('control-release'),
    take: $('control-take'),
    requests: $('control-requests'),
  },
  (msg) => conn.send(msg),
  (text) => showNotice(text),
  stats,
);
const cursors = new RemoteCursors($('cursors'), ui.canvas);
const maskOverlay = new MaskOverlay($('masks'), ui.canvas);
const nav = new NavBar(
  {
    form: $('nav'),
    back: $('nav-back'),
    forward: $('nav-forward'),
    reload: $('nav-reload'),
    url: $('nav-url'),
    title: $('page-title'),
    loading: $('nav-loading'),
  },
  (msg) => conn.send(msg),
);
stats.page = () => nav.state;
const tabStrip = new TabStrip($('tabs'), (msg) => conn.send(msg));
stats.tabs = () => tabStrip.state;
const fileAsk = new FileAsk(
  {
    box: $('file-box'),
    label: $('file-label'),
    input: $('file-input'),
    status: $('file-status'),
    cancel: $('file-cancel'),
  },
  join,
  stats,
);
const pickerBox = new PickerBox(
  {
    box: $('picker-box'),
    label: $('picker-label'),
    input: $('picker-input'),
    ok: $('picker-ok'),
    cancel: $('picker-cancel'),
  },
  (msg) => conn.send(msg),
  stats,
);
const pasteBox = new PasteBox(
  {
    open: $('paste-open'),
    box: $('paste-box'),
    text: $('paste-text'),
    send: $('paste-send'),
    cancel: $('paste-cancel'),
  },
  (msg) => conn.send(msg),
  stats,
);
const downloads = new Downloads(
  { box: $('downloads'), list: $('downloads-list'), close: $('downloads-close') },
  join,
  stats,
);
const recording = new Recording(
  { badge: $('rec-state'), row: $('recording-row'), toggle: $('record-toggle'), list: $('recordings-list') },
  (msg) => conn.send(msg),
  join,
  stats,
);
const selectPopup = new SelectPopup($('select-popup'), ui.canvas, ui.stage, (msg) => conn.send(msg), stats);
const dialogs = new PageDialogs(
  {
    box: $('page-dialog'),
    title: $('page-dialog-title'),
    message: $('page-dialog-message'),
    input: $('page-dialog-input'),
    ok: $('page-dialog-ok'),
    cancel: $('page-dialog-cancel'),
    wait: $('page-dialog-wait'),
  },
  (msg) => conn.send(msg),
  stats,
);

// ---- state ----

function setState(state, message = '') {
  stats.state = state;
  document.body.dataset.state = state;
  ui.state.textContent = state === 'error' ? `error: ${message}` : STATE_LABELS[state];
  if (state !== 'live') input.releaseAll(); // held keys/buttons die with the socket
  if (state === 'ended') {
    input.setEnabled(false);
    showOverlay('The session has ended', message);
  } else if (state === 'error') {
    input.setEnabled(false);
    showOverlay('Cannot join this session', message);
  }
}

function showOverlay(title, detail) {
  ui.overlayTitle.textContent = title;
  ui.overlayDetail.textContent = detail;
  ui.overlayDetail.hidden = !detail;
  ui.overlay.hidden = false;
  ui.placeholder.hidden = true;
}

// ---- toolbar ----

function showLinkStats(participants) {
  const list = $('link-stats');
  list.replaceChildren(
    ...participants.map((p) => {
      const li = document.createElement('li');
      const rtt = p.rttMs == null ? '–' : `${p.rttMs} ms`;
      li.textContent = `${p.id} (${p.role}): round trip ${rtt}, lag ${p.lagMs} ms, ${p.quality} quality, ${Math.round(p.bytes / 1024)} kB`;
      return li;
    }),
  );
}

/** Shows the page's size in the owner's size picker (adding it when it is not a preset). */
function showPageSize(size) {
  const select = $('page-size');
  if (!select || !size || !Number.isInteger(size.width) || !Number.isInteger(size.height)) return;
  const value = `${size.width}x${size.height}`;
  if (![...select.options].some((o) => o.value === value)) {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = `${size.width} × ${size.height}`;
    select.append(option);
  }
  select.value = value;
}

$('page-size')?.addEventListener('change', (e) => {
  const [width, height] = e.target.value.split('x').map(Number);
  conn.send({ t: 'viewport', width, height });
});

function showLinks(links) {
  if (!links) {
    ui.share.hidden = true;
    return;
  }
  for (const role of ['controller', 'viewer']) {
    // Links may be absolute or relative to this server; show what a recipient can open.
    $(`link-${role}`).value = links[role] ? new URL(links[role], location.href).href : '';
  }
  ui.share.hidden = false;
}

async function copyLink(button) {
  const field = $(button.dataset.copy);
  const original = 'Copy';
  let copied = false;
  if (navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(field.value);
      copied = true;
    } catch {
      // permission denied or not a secure context: fall back to selecting the text
    }
  }
  if (!copied) {
    field.focus();
    field.select();
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
  }
  button.textContent = copied ? 'Copied' : 'Press Ctrl+C';
  setTimeout(() => {
    button.textContent = original;
  }, 2000);
}

// ---- notices ----

let noticeTimer = 0;

// A sticky notice (the server is shutting down: it matters until the end) stays until closed,
// and comes back when a passing notice shown over it goes.
let stickyNotice = null;

function showNotice(message, level = 'info', sticky = false) {
  if (sticky) stickyNotice = { message, level };
  ui.noticeText.textContent = message;
  ui.notice.dataset.level = level;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(hideNotice, NOTICE_MS);
}

function hideNotice() {
  clearTimeout(noticeTimer);
  const showing = ui.noticeText.textContent;
  if (stickyNotice && showing !== stickyNotice.message) {
    showNotice(stickyNotice.message, stickyNotice.level, true);
    return;
  }
  ui.notice.hidden = true;
}

// ---- messages ----

const handlers = {
  hello(msg) {
    stats.role = msg.role ?? null;
    viewport = msg.viewport ?? null;
    showPageSize(viewport);
    ui.role.textContent = String(msg.role ?? '—');
    ui.viewOnly.hidden = Boolean(msg.canInput);
    nav.hello(msg);
    tabStrip.hello(msg);
    pasteBox.hello(msg);
    dialogs.hello(msg);
    showLinks(msg.links);
    people.hello(msg);
    control.hello(msg);
    annotations.hello(msg);
    recording.hello(msg);
    input.setEnabled(Boolean(msg.canInput));
    // Once per page, not per reconnect. Never a modal: whoever just wants to look, looks.
    if (!greeted) {
      const named = conn.name ? '' : ` You appear as ${msg.name}: change it under People & chat.`;
      const viewOnly = msg.canInput ? '' : 'View only: you can watch this session but not control it.';
      const text = `${viewOnly}${named}`.trim();
      if (text) showNotice(text);
    }
    greeted = true;
  },
  presence(msg) {
    ui.presence.textContent = String(msg.count);
    people.presence(msg);
    cursors.presence(Array.isArray(msg.participants) ? msg.participants : []);
    control.presence(Array.isArray(msg.participants) ? msg.participants : []);
    annotations.presence(Array.isArray(msg.participants) ? msg.participants : []);
  },
  joined(msg) {
    if (greeted && msg.participant?.name) showNotice(`${msg.participant.name} joined`);
  },
  left(msg) {
    if (msg.name) showNotice(`${msg.name} left`);
  },
  chat(msg) {
    people.chat(msg);
  },
  control(msg) {
    control.control(msg);
  },
  view(msg) {
    annotations.view(msg);
  },
  cursor(msg) {
    // The page's own cursor under our mouse; keywords only (the server sends nothing else).
    if (typeof msg.shape === 'string' && /^[a-z-]+$/.test(msg.shape)) ui.canvas.style.cursor = msg.shape;
  },
  annotation(msg) {
    stats.annotations = (stats.annotations ?? 0) + 1;
    annotations.annotation(msg);
  },
  masks(msg) {
    stats.masks = Array.isArray(msg.rects) ? msg.rects.length : 0;
    maskOverlay.masks(msg);
  },
  pointers(msg) {
    stats.pointers = msg.pointers ?? [];
    cursors.pointers(stats.pointers);
  },
  chatHistory(msg) {
    people.chatHistory(msg);
  },
  joinLinks(msg) {
    // Owners only: a removed participant's role got a new link.
    showLinks(msg.links);
    showNotice('Participant removed: the link of their role was replaced (see Share).');
  },
  page(msg) {
    nav.page(msg);
    dispatchEvent(new Event('cobrowse:page'));
  },
  viewport(msg) {
    viewport = { width: msg.width, height: msg.height };
    showPageSize(viewport);
    dispatchEvent(new Event('cobrowse:viewport'));
  },
  tabs(msg) {
    tabStrip.update(msg);
    dispatchEvent(new Event('cobrowse:tabs'));
  },
  recording(msg) {
    recording.update(msg);
    dispatchEvent(new Event('cobrowse:recording'));
  },
  downloads(msg) {
    downloads.update(msg);
    dispatchEvent(new Event('cobrowse:downloads'));
  },
  fileChooser(msg) {
    fileAsk.ask(msg);
    dispatchEvent(new Event('cobrowse:filechooser'));
  },
  picker(msg) {
    pickerBox.show(msg);
    dispatchEvent(new Event('cobrowse:picker'));
  },
  select(msg) {
    selectPopup.show(msg);
    dispatchEvent(new Event('cobrowse:select'));
  },
  async clipboard(msg) {
    if (typeof msg.text !== 'string') return;
    stats.copied = msg.text;
    let written = false;
    try {
      await navigator.clipboard.writeText(msg.text);
      written = true;
    } catch {
      written = false; // not allowed here (permissions, insecure context): show it to copy by hand
    }
    if (written) {
      showNotice(`Copied to your clipboard (${[...msg.text].length} characters).`);
    } else {
      const text = $('copy-text');
      text.value = msg.text;
      $('copy-box').hidden = false;
      text.focus();
      text.select();
    }
    dispatchEvent(new Event('cobrowse:clipboard'));
  },
  dialog(msg) {
    dialogs.dialog(msg, (text) => showNotice(text));
    dispatchEvent(new Event('cobrowse:dialog'));
  },
  notice(msg) {
    if (msg.message) showNotice(String(msg.message), msg.level, msg.code === 'server-shutdown');
  },
  links(msg) {
    // Owners only: how each participant's link performs.
    stats.links = msg.participants ?? [];
    showLinkStats(stats.links);
  },
  ended() {
    // The connection switches to the "ended" state right after this; the reason shows there.
  },
};

conn.onJson((msg) => handlers[msg.t]?.(msg));
conn.onFrame((buffer, generation) => screen.handle(buffer, generation));
conn.onState(setState);

// ---- page wiring ----

ui.noticeClose.addEventListener('click', () => {
  // Closing the sticky notice itself dismisses it for good.
  if (stickyNotice && ui.noticeText.textContent === stickyNotice.message) stickyNotice = null;
  hideNotice();
});
$('copy-close').addEventListener('click', () => {
  $('copy-box').hidden = true;
  ui.canvas.focus({ preventScroll: true });
});
// The share panel is the owner's: so is ending the session for everyone.
$('end-session').addEventListener('click', () => {
  if (window.confirm('End this session for everyone? The shared browser will be closed.')) conn.send({ t: 'end' });
});
for (const button of document.querySelectorAll('button.copy')) {
  button.addEventListener('click', () => copyLink(button));
}
// The share panel closes like any popup: Escape, or a press anywhere outside it.
ui.share.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    ui.share.open = false;
    ui.share.querySelector('summary').focus();
  }
});
document.addEventListener('pointerdown', (e) => {
  if (ui.share.open && !ui.share.contains(e.target)) ui.share.open = false;
}, true);

// Leaving the page is not a connection loss; a page restored from the back/forward cache rejoins.
window.addEventListener('pagehide', () => conn.stop());
window.addEventListener('pageshow', (e) => {
  if (e.persisted && (stats.state === 'live' || stats.state === 'reconnecting')) conn.start();
});

setState('connecting');
conn.start();
