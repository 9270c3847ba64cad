// Recording (docs/recording.md): everyone sees a REC badge while the session is recorded; the
// owner starts and stops it from the Share panel and lists the session's recordings there, each
// with a replay link that keeps working after the session ended.

export class Recording {
  #els;
  #send;
  #join;
  #stats;
  #owner = false;
  #on = false;

  /**
   * @param els   {badge, row, toggle, list}
   * @param send  sends a message to the server
   * @param join  {id, token} of this session
   * @param stats window.cobrowse (mirrors `recording` and `recordings` for tests)
   */
  constructor(els, send, join, stats) {
    this.#els = els;
    this.#send = send;
    this.#join = join;
    this.#stats = stats;
    stats.recording = { on: false };
    stats.recordings = [];
    els.toggle.addEventListener('click', () => {
      els.toggle.disabled = true;
      this.#send({ t: 'record', on: !this.#on });
    });
  }

  hello(msg) {
    this.#owner = msg.role === 'owner';
    this.#els.row.hidden = !this.#owner;
    if (this.#owner) this.#refresh();
  }

  /** `recording` message: whether the session is recorded now. */
  update(msg) {
    const on = msg.on === true;
    const changed = on !== this.#on;
    this.#on = on;
    this.#stats.recording = { on, id: msg.id ?? null, by: msg.by ?? null, since: msg.since ?? null };
    const badge = this.#els.badge;
    badge.hidden = !on;
    if (on) {
      const since = Number.isFinite(msg.since) ? new Date(msg.since).toLocaleTimeString() : '';
      const by = typeof msg.by === 'string' ? msg.by : 'someone';
      badge.title = `This session is being recorded (since ${since}, started by ${by})`;
    }
    this.#els.toggle.disabled = false;
    this.#els.toggle.textContent = on ? 'Stop recording' : 'Start recording';
    this.#els.toggle.setAttribute('aria-pressed', String(on));
    if (this.#owner && changed) this.#refresh();
  }

  async #refresh() {
    let list = [];
    try {
      const res = await fetch(`/s/${encodeURIComponent(this.#join.id)}/recordings`, {
        headers: { Authorization: `Bearer ${this.#join.token}` },
        cache: 'no-store',
      });
      if (!res.ok) {
        this.#els.list.replaceChildren(note(res.status === 503 ? 'Recording is off on this server.' : 'Recordings unavailable.'));
        this.#els.toggle.disabled = res.status === 503;
        return;
      }
      const body = await res.json();
      list = Array.isArray(body.recordings) ? body.recordings : [];
    } catch {
      this.#els.list.replaceChildren(note('Recordings unavailable.'));
      return;
    }
    this.#stats.recordings = list;
    this.#els.list.replaceChildren(...(list.length ? list.map(item) : [note('No recordings yet.')]));
    dispatchEvent(new Event('cobrowse:recordings'));
  }
}

function note(text) {
  const li = document.createElement('li');
  li.className = 'hint';
  li.textContent = text;
  return li;
}

function item(r) {
  const li = document.createElement('li');
  li.className = 'recording-item';
  const when = document.createElement('span');
  const started = Number.isFinite(r.startedAt) ? new Date(r.startedAt) : null;
  when.textContent = `${started ? started.toLocaleTimeString() : '?'} · ${size(r.bytes)}${r.active ? ' · recording' : ''}`;
  li.append(when);
  // Only links the server made (same origin, /replay/…) are offered.
  if (typeof r.replayUrl === 'string') {
    try {
      const url = new URL(r.replayUrl, location.href);
      if (url.origin === location.origin && url.pathname.startsWith('/replay/')) {
        const a = document.createElement('a');
        a.href = url.href;
        a.target = '_blank';
        a.rel = 'noopener';
        a.textContent = 'Replay';
        li.append(' ', a);
      }
    } catch {
      // not a URL: no link
    }
  }
  return li;
}

function size(bytes) {
  if (!Number.isFinite(bytes)) return '';
  if (bytes < 1024 * 1024) return `${Math.max(1, Math.round(bytes / 1024))} kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
