// WebSocket connection to a session (docs/protocol.md): join, reconnect, and message fan-out.
//
// States: connecting → live ⇄ reconnecting, and the final ones ended / error, after which the
// connection never reconnects.

const SUBPROTOCOL = 'cobrowse.v2';
const CLOSE_SESSION_ENDED = 4000;
const CLOSE_REMOVED = 4004;
const BACKOFF_START_MS = 250;
const BACKOFF_MAX_MS = 5000;
// A socket that neither opens nor fails (a silent middlebox) would otherwise hang in "connecting".
const CONNECT_TIMEOUT_MS = 10000;
const CHECK_TIMEOUT_MS = 5000;

/** Session id from `/s/{id}` and token from `#token=…`; either is null when absent. */
export function joinFromLocation(loc = location) {
  return idAndToken('s', loc);
}

/** The id from `/{prefix}/{id}` and the token from `#token=…`; either is null when absent. */
export function idAndToken(prefix, loc = location) {
  const match = new RegExp(`^/${prefix}/([^/]+)/?$`).exec(loc.pathname);
  let id = null;
  if (match) {
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = null;
    }
  }
  const token = new URLSearchParams(loc.hash.slice(1)).get('token') || null;
  return { id, token };
}

export class Connection {
  state = 'connecting';
  /** Incremented per socket; lets callers tell a frame of an old socket from the current one. */
  generation = 0;

  #id;
  #token;
  /** Display name sent when (re)connecting; null lets the server pick one. */
  name = null;
  #ws = null;
  #final = false;
  #attempt = 0;
  #retryTimer = 0;
  #listeners = { state: new Set(), json: new Set(), frame: new Set() };

  constructor({ id, token }) {
    this.#id = id;
    this.#token = token;
  }

  /** Subscribes to 'state' (state, message), 'json' (object) or 'frame' (ArrayBuffer, generation); returns an unsubscribe function. */
  on(type, fn) {
    const set = this.#listeners[type];
    set.add(fn);
    return () => set.delete(fn);
  }
  onState(fn) { return this.on('state', fn); }
  onJson(fn) { return this.on('json', fn); }
  onFrame(fn) { return this.on('frame', fn); }

  get isOpen() {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Sends one JSON message; silently dropped while not connected (input is only meaningful live). */
  send(obj) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(obj));
    return true;
  }

  start() {
    if (!this.#token) {
      this.#finish('error', 'this link has no access token; ask the session owner for the full link (…#token=…)');
      return;
    }
    if (!this.#id) {
      this.#finish('error', 'this address is not a session link (/s/{id})');
      return;
    }
    this.#final = false;
    this.#setState(this.generation === 0 ? 'connecting' : 'reconnecting');
    this.#open();
  }

  /** Closes without reconnecting and without changing the visible state (page going away). */
  stop() {
    this.#final = true;
    clearTimeout(this.#retryTimer);
    this.#closeSocket();
  }

  #emit(type, ...args) {
    for (const fn of this.#listeners[type]) {
      try {
        fn(...args);
      } catch (err) {
        // One broken listener must not starve the others (e.g. acks after a UI error).
        console.error(err);
      }
    }
  }

  #setState(state, message = '') {
    this.state = state;
    this.#emit('state', state, message);
  }

  #finish(state, message) {
    this.#final = true;
    clearTimeout(this.#retryTimer);
    this.#closeSocket();
    this.#setState(state, message);
  }

  #closeSocket() {
    const ws = this.#ws;
    this.#ws = null;
    if (ws && ws.readyState < WebSocket.CLOSING) ws.close(1000);
  }

  #open() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = this.name ? `?name=${encodeURIComponent(this.name)}` : '';
    const url = `${scheme}://${location.host}/ws/${encodeURIComponent(this.#id)}${query}`;
    let ws;
    try {
      ws = new WebSocket(url, [SUBPROTOCOL, 'cobrowse.token.' + this.#token]);
    } catch {
      // The constructor throws only for values no server could accept, e.g. a token with
      // characters a subprotocol may not contain; retrying cannot help.
      this.#finish('error', 'the link token is malformed');
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    const generation = ++this.generation;
    const connectTimer = setTimeout(() => ws.close(), CONNECT_TIMEOUT_MS);

    ws.addEventListener('open', () => {
      clearTimeout(connectTimer);
      if (ws === this.#ws) this.#setState('live');
    });
    ws.addEventListener('message', (event) => {
      if (ws !== this.#ws) return;
      // A message proves the join worked, so the next loss starts the backoff from scratch;
      // resetting on 'open' alone would hammer a server that accepts then drops at once.
      this.#attempt = 0;
      if (typeof event.data !== 'string') {
        this.#emit('frame', event.data, generation);
        return;
      }
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!msg || typeof msg !== 'object') return;
      this.#emit('json', msg);
      if (msg.t === 'ended') this.#finish('ended', msg.reason ? String(msg.reason) : '');
      if (msg.t === 'removed') this.#finish('ended', msg.reason ? String(msg.reason) : 'removed');
    });
    // 'error' is always followed by 'close', which does the work.
    ws.addEventListener('close', (event) => {
      clearTimeout(connectTimer);
      if (ws !== this.#ws) return;
      this.#ws = null;
      this.#lost(event.code);
    });
  }

  async #lost(code) {
    if (this.#final) return;
    if (code === CLOSE_SESSION_ENDED) {
      this.#finish('ended', '');
      return;
    }
    if (code === CLOSE_REMOVED) {
      this.#finish('ended', 'The session owner removed you from this session.');
      return;
    }
    this.#setState('reconnecting');
    // The browser hides why an upgrade was refused, so ask the server whether the link is dead.
    const verdict = await this.#check();
    if (this.#final) return;
    if (verdict) {
      this.#finish(verdict.state, verdict.message);
      return;
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** Math.min(this.#attempt, 10));
    this.#attempt += 1;
    // "Equal jitter": spreads the reconnects of many viewers after a server restart.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#retryTimer = setTimeout(() => {
      if (!this.#final) this.#open();
    }, delay);
  }

  /**
   * Resolves to {state, message} when the link is dead (401/403/404), or when the session is on
   * another node than the one that answered (421: the router sent this session's requests to
   * the wrong node, or its node is down); otherwise null (retry).
   */
  async #check() {
    let res;
    try {
      const signal = AbortSignal.timeout ? AbortSignal.timeout(CHECK_TIMEOUT_MS) : undefined;
      res = await fetch(`/s/${encodeURIComponent(this.#id)}/check`, {
        headers: { Authorization: `Bearer ${this.#token}` },
        cache: 'no-store',
        signal,
      });
    } catch {
      return null; // server unreachable: keep trying
    }
    if (![401, 403, 404, 421].includes(res.status)) return null;
    const body = await res.json().catch(() => null);
    if (res.status === 404) return { state: 'ended', message: body?.error || 'session not found' };
    if (res.status === 421) {
      return { state: 'error', message: body?.error || 'this session is held by another server' };
    }
    return { state: 'error', message: body?.error || `access refused (${res.status})` };
  }
}
