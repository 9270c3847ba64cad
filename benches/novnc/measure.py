#!/usr/bin/python3
"""Drives the noVNC baseline: a headless viewer Chromium (noVNC's vnc_lite.html) and the
session Chromium (on Xvfb, exported by x11vnc), both over the DevTools protocol.

Started by run.sh, which owns every process; this script only connects to them.
Usage: measure.py SESSION_CDP_PORT VIEWER_CDP_PORT HTTP_PORT WS_PORT OUT_JSON
Needs python3-websockets (Debian) -- run it with /usr/bin/python3.
"""

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import websockets

SENTENCE = "The quick brown fox jumps over the lazy dog, twice now."
TYPE_CPS = 45.0          # characters per second
WHEEL_TICKS = 20
WHEEL_DELTA = 100
WHEEL_GAP = 0.080        # s between ticks
TAIL = 1.0               # s counted after the last key / tick
RATE_SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CLICKS = int(os.environ.get("BENCH_CLICKS", "30"))
SETTLE = 2.5             # s after a session navigation before measuring


def log(*a):
    print("[measure]", *a, file=sys.stderr, flush=True)


# Injected into the viewer before noVNC loads. Counts, with performance.now() stamps:
#  - every WebSocket message received (bytes = payload length; ws framing not included)
#  - every "flip" of noVNC's Display, i.e. each completed FramebufferUpdate that painted
#    something onto the visible canvas (Display.flip() -> visible ctx.drawImage(backbuffer,
#    9 args)); noVNC 1.3 calls flip() exactly once at the end of each FramebufferUpdate.
#  - keydown / wheel / mousedown events (capture phase, i.e. just before noVNC sees them)
#  - click latency: on mousedown, the centre pixel of the canvas is sampled; it is then
#    checked (a) right after every flip and (b) in a requestAnimationFrame loop.
VIEWER_JS = r"""
(() => {
  const S = window.__bench = {log: [], flips: [], keys: [], wheels: [], lat: [], latRaf: [],
                              totalBytes: 0, totalMsgs: 0, sentBytes: 0};
  const RealWS = window.WebSocket;
  function BenchWS(...args) {
    const ws = new RealWS(...args);
    ws.addEventListener('message', (e) => {
      const d = e.data;
      let n = 0, first = -1;
      if (d instanceof ArrayBuffer) { n = d.byteLength; if (n) first = new Uint8Array(d)[0]; }
      else if (d instanceof Blob) n = d.size;
      else if (typeof d === 'string') n = d.length;
      S.totalBytes += n; S.totalMsgs++;
      S.log.push([performance.now(), n, first]);
    });
    const send = ws.send;
    ws.send = function (d) { S.sentBytes += (d && (d.byteLength ?? d.length ?? d.size)) || 0; return send.call(this, d); };
    return ws;
  }
  BenchWS.prototype = RealWS.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) BenchWS[k] = RealWS[k];
  window.WebSocket = BenchWS;

  const canvas = () => document.querySelector('#screen canvas');
  const px = () => {
    const c = canvas();
    return Array.from(c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3));
  };
  const changed = (p, b) => p.some((v, i) => Math.abs(v - b[i]) > 40);
  let t0 = null, base = null;

  const drawImage = CanvasRenderingContext2D.prototype.drawImage;
  CanvasRenderingContext2D.prototype.drawImage = function (...a) {
    const r = drawImage.apply(this, a);
    if (a.length === 9 && a[0] instanceof HTMLCanvasElement && this.canvas.isConnected) {
      S.flips.push(performance.now());
      if (t0 !== null && changed(px(), base)) { S.lat.push(performance.now() - t0); t0 = null; }
    }
    return r;
  };

  addEventListener('keydown', () => S.keys.push(performance.now()), true);
  addEventListener('wheel', () => S.wheels.push(performance.now()), true);
  addEventListener('mousedown', () => {
    if (!S.probe) return;
    const start = performance.now();
    const b = px();
    t0 = start; base = b;
    const tick = () => {
      const now = performance.now();
      if (changed(px(), b)) S.latRaf.push(now - start);
      else if (now - start < 5000) requestAnimationFrame(tick);
      else S.latRaf.push(null);
    };
    requestAnimationFrame(tick);
  }, true);
})();
"""


class CDP:
    """A minimal DevTools-protocol client over one page target's websocket."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.pending = {}
        self.waiters = []  # (method, future)
        self.on_event = None
        self.reader = asyncio.get_event_loop().create_task(self._read())

    @classmethod
    async def page(cls, port, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = json.load(r)
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    ws = await websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None,
                                                  ping_interval=None)
                    return cls(ws)
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no DevTools page target on port {port}")
            await asyncio.sleep(0.2)

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self.pending.pop(msg["id"], None)
                if fut and not fut.done():
                    if "error" in msg:
                        fut.set_exception(RuntimeError(f"CDP error: {msg['error']}"))
                    else:
                        fut.set_result(msg.get("result", {}))
            else:
                if self.on_event:
                    self.on_event(msg)
                for method, fut in list(self.waiters):
                    if method == msg.get("method") and not fut.done():
                        fut.set_result(msg.get("params", {}))
                        self.waiters.remove((method, fut))

    async def send(self, method, params=None):
        self.next_id += 1
        fut = asyncio.get_event_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        return await asyncio.wait_for(fut, 30)

    def event(self, method):
        fut = asyncio.get_event_loop().create_future()
        self.waiters.append((method, fut))
        return fut

    async def eval(self, expr):
        r = await self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                                 "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS exception: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def navigate(self, url):
        loaded = self.event("Page.loadEventFired")
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(loaded, 30)

    async def close(self):
        await self.ws.close()


async def wait_for(cdp, expr, timeout=20.0, what=None):
    deadline = time.monotonic() + timeout
    while True:
        v = await cdp.eval(expr)
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what or expr}")
        await asyncio.sleep(0.05)


async def sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        await asyncio.sleep(d)


KEYS = {" ": ("Space", 32), ",": ("Comma", 188), ".": ("Period", 190)}


def key_params(c):
    if c.isalpha():
        return f"Key{c.upper()}", ord(c.upper())
    return KEYS[c]


class Bench:
    def __init__(self, session, viewer, http_port):
        self.session = session
        self.viewer = viewer
        self.base = f"http://127.0.0.1:{http_port}"
        self.origin = (0.0, 0.0)

    async def session_page(self, name):
        await self.session.navigate(f"{self.base}/{name}")
        await asyncio.sleep(SETTLE)

    async def now(self):
        return await self.viewer.eval("performance.now()")

    async def reset(self):
        await self.viewer.eval("(() => { const S = window.__bench; S.log.length = 0; S.flips.length = 0;"
                               " S.keys.length = 0; S.wheels.length = 0; return true; })()")

    async def window(self, t_from, t_to):
        """Bytes, ws messages, messages starting with byte 0, and flips in [t_from, t_to] (ms)."""
        return await self.viewer.eval(f"""(() => {{
          const S = window.__bench, a = {t_from}, b = {t_to};
          let bytes = 0, msgs = 0, zero = 0;
          for (const [t, n, f] of S.log) if (t >= a && t <= b) {{ bytes += n; msgs++; if (f === 0) zero++; }}
          const flips = S.flips.filter(t => t >= a && t <= b).length;
          return {{bytes, msgs, zero, flips}};
        }})()""")

    async def mouse(self, kind, sx, sy, **extra):
        """A mouse event at session-screen coordinates (sx, sy), dispatched into the viewer."""
        p = {"type": kind, "x": self.origin[0] + sx, "y": self.origin[1] + sy}
        p.update(extra)
        await self.viewer.send("Input.dispatchMouseEvent", p)

    async def click(self, sx, sy):
        await self.mouse("mouseMoved", sx, sy, buttons=0)
        await self.mouse("mousePressed", sx, sy, button="left", buttons=1, clickCount=1)
        await self.mouse("mouseReleased", sx, sy, button="left", buttons=0, clickCount=1)

    async def rate(self, seconds):
        t0 = await self.now()
        await asyncio.sleep(seconds)
        t1 = await self.now()
        w = await self.window(t0, t1)
        secs = (t1 - t0) / 1000.0
        return w, secs

    # -- workloads ---------------------------------------------------------------------

    async def idle(self):
        await self.session_page("text.html")
        # Click into the textarea through VNC so the session window really has focus,
        # then let the screen settle before measuring.
        await self.click(300, 60)
        await asyncio.sleep(SETTLE)
        active = await self.session.eval("document.activeElement && document.activeElement.id")
        w, secs = await self.rate(RATE_SECONDS)
        return {"idle_kb_per_s": w["bytes"] / 1000.0 / secs, "idle_seconds": secs,
                "idle_flips_per_s": w["flips"] / secs, "idle_textarea_focused": active == "t"}

    async def typing(self):
        # Same page as idle; the textarea still has focus (checked before typing).
        await self.session.eval("document.getElementById('t').value = ''")
        await asyncio.sleep(1.0)
        focused = await self.session.eval("document.activeElement && document.activeElement.id")
        await self.reset()
        start = time.monotonic()
        for i, c in enumerate(SENTENCE):
            await sleep_until(start + i / TYPE_CPS)
            code, vk = key_params(c)
            down = {"type": "keyDown", "key": c, "code": code, "text": c, "unmodifiedText": c,
                    "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
            up = {"type": "keyUp", "key": c, "code": code, "windowsVirtualKeyCode": vk,
                  "nativeVirtualKeyCode": vk}
            await self.viewer.send("Input.dispatchKeyEvent", down)
            await self.viewer.send("Input.dispatchKeyEvent", up)
        keys = await self.viewer.eval("window.__bench.keys.slice()")
        t_first, t_last = keys[0], keys[-1]
        # wait until TAIL after the last key (viewer clock), then count
        while await self.now() < t_last + TAIL * 1000 + 50:
            await asyncio.sleep(0.05)
        w = await self.window(t_first, t_last + TAIL * 1000)
        await asyncio.sleep(1.0)
        value = await self.session.eval("document.getElementById('t').value")
        ok = value == SENTENCE
        if not ok:
            log(f"typing: textarea holds {value!r} (focused before typing: {focused!r})")
        return {"typing_kb": w["bytes"] / 1000.0 if ok else None,
                "typing_kb_unverified": w["bytes"] / 1000.0,
                "typing_chars": len(SENTENCE), "typing_keydowns_seen": len(keys),
                "typing_seconds": (t_last - t_first) / 1000.0 + TAIL,
                "typing_flips": w["flips"], "typing_text_arrived": ok}

    async def scroll(self):
        await self.session_page("long.html")
        y0 = await self.session.eval("scrollY")
        await self.mouse("mouseMoved", 640, 360, buttons=0)
        await asyncio.sleep(0.5)
        await self.reset()
        start = time.monotonic()
        for i in range(WHEEL_TICKS):
            await sleep_until(start + i * WHEEL_GAP)
            await self.mouse("mouseWheel", 640, 360, deltaX=0, deltaY=WHEEL_DELTA)
        wheels = await self.viewer.eval("window.__bench.wheels.slice()")
        t_first, t_last = wheels[0], wheels[-1]
        while await self.now() < t_last + TAIL * 1000 + 50:
            await asyncio.sleep(0.05)
        w = await self.window(t_first, t_last + TAIL * 1000)
        await asyncio.sleep(1.0)
        y1 = await self.session.eval("scrollY")
        ok = y1 > y0
        if not ok:
            log(f"scroll: scrollY {y0} -> {y1}")
        return {"scroll_kb": w["bytes"] / 1000.0 if ok else None,
                "scroll_kb_unverified": w["bytes"] / 1000.0,
                "scroll_ticks_seen": len(wheels), "scroll_y_before": y0, "scroll_y_after": y1,
                "scroll_seconds": (t_last - t_first) / 1000.0 + TAIL,
                "scroll_flips": w["flips"]}

    async def animation(self):
        await self.session_page("animate.html")
        w, secs = await self.rate(RATE_SECONDS)
        return {"animation_fps": w["flips"] / secs,
                "animation_kb_per_s": w["bytes"] / 1000.0 / secs,
                "animation_ws_msgs_per_s": w["msgs"] / secs,
                "animation_ws_msgs_starting_with_0_per_s": w["zero"] / secs,
                "animation_seconds": secs}

    async def animation_rotate(self):
        """Not in cobrowse's bench: a rotating gradient box, i.e. content the VNC encoders
        cannot send as solid fills."""
        await self.session_page("animate-rotate.html")
        w, secs = await self.rate(RATE_SECONDS)
        return {"animation_rotate_fps": w["flips"] / secs,
                "animation_rotate_kb_per_s": w["bytes"] / 1000.0 / secs}

    async def click_latency(self):
        await self.session_page("click.html")
        # the page itself (white) must be on the viewer's canvas first
        await wait_for(self.viewer, "(() => { const c = document.querySelector('#screen canvas');"
                       " const d = c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data;"
                       " return d[0] > 240 && d[1] > 240 && d[2] > 240; })()", what="white click page")
        await self.mouse("mouseMoved", 640, 360, buttons=0)
        await asyncio.sleep(0.5)
        await self.viewer.eval("(() => { const S = window.__bench; S.lat.length = 0; S.latRaf.length = 0;"
                               " S.probe = true; return true; })()")
        misses = 0
        for i in range(CLICKS):
            await self.mouse("mousePressed", 640, 360, button="left", buttons=1, clickCount=1)
            await self.mouse("mouseReleased", 640, 360, button="left", buttons=0, clickCount=1)
            try:
                await wait_for(self.viewer, f"window.__bench.latRaf.length > {i}", timeout=6,
                               what="click paint")
            except RuntimeError:
                misses += 1
                log(f"click {i}: no changed pixel within 6 s")
            await asyncio.sleep(0.15)
        await self.viewer.eval("window.__bench.probe = false")
        lat = sorted(await self.viewer.eval("window.__bench.lat.slice()"))
        raf = sorted(v for v in await self.viewer.eval("window.__bench.latRaf.slice()") if v is not None)
        return {"click_p50_ms": pct(lat, 50), "click_p95_ms": pct(lat, 95),
                "click_raf_p50_ms": pct(raf, 50), "click_raf_p95_ms": pct(raf, 95),
                "clicks": CLICKS, "clicks_measured": len(lat), "click_ms_all": [round(v, 1) for v in lat]}


def pct(sorted_values, p):
    """Nearest-rank percentile, as cobrowse's benches/pipeline.rs computes it."""
    if not sorted_values:
        return None
    rank = round(p / 100.0 * (len(sorted_values) - 1))
    return sorted_values[min(rank, len(sorted_values) - 1)]


def rounded(v, digits=1):
    """Floats rounded for the report (performance.now() differences carry float noise)."""
    if isinstance(v, float):
        return round(v, digits)
    if isinstance(v, dict):
        return {k: rounded(x, digits) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x, digits) for x in v]
    return v


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except OSError:
        return None


async def main():
    session_port, viewer_port, http_port, ws_port = map(int, sys.argv[1:5])
    out_path = sys.argv[5]
    session = await CDP.page(session_port)
    viewer = await CDP.page(viewer_port)
    for c in (session, viewer):
        await c.send("Page.enable")
        await c.send("Runtime.enable")
    await viewer.send("Page.addScriptToEvaluateOnNewDocument", {"source": VIEWER_JS})
    # Optional cross-check of the in-page byte counter against CDP's own view of the frames
    # (off by default: shipping every frame's payload to this script costs viewer CPU).
    cdp_bytes = {"frames": 0, "bytes": 0}
    if os.environ.get("BENCH_CDP_CROSSCHECK"):
        def on_event(msg):
            if msg.get("method") == "Network.webSocketFrameReceived":
                r = msg["params"]["response"]
                data = r.get("payloadData", "")
                cdp_bytes["frames"] += 1
                cdp_bytes["bytes"] += len(base64.b64decode(data)) if r.get("opcode") == 2 else len(data.encode())
        viewer.on_event = on_event
        await viewer.send("Network.enable")
    await viewer.navigate(f"http://127.0.0.1:{ws_port}/vnc_lite.html?host=127.0.0.1&port={ws_port}")
    await wait_for(viewer, "(document.getElementById('status').textContent || '').startsWith('Connected')"
                   " && document.querySelector('#screen canvas') && document.querySelector('#screen canvas').width",
                   what="noVNC to connect")
    canvas = await viewer.eval("(() => { const c = document.querySelector('#screen canvas');"
                               " const r = c.getBoundingClientRect();"
                               " return {w: c.width, h: c.height, left: r.left, top: r.top, cw: r.width, ch: r.height}; })()")
    log("noVNC connected, canvas", canvas)
    if canvas["w"] != 1280 or canvas["h"] != 720 or abs(canvas["cw"] - 1280) > 0.5:
        raise RuntimeError(f"unexpected noVNC canvas {canvas}")
    bench = Bench(session, viewer, http_port)
    bench.origin = (canvas["left"], canvas["top"])
    viewport = await session.eval("[innerWidth, innerHeight, devicePixelRatio]")
    log("session viewport", viewport)
    if viewport[:2] != [1280, 720]:
        log("WARNING: session viewport is not 1280x720")

    results = {}
    for name in ("idle", "typing", "scroll", "animation", "animation_rotate", "click_latency"):
        log(f"{name}…")
        try:
            r = await getattr(bench, name)()
        except Exception as e:  # a failed workload is reported as null, never faked
            log(f"{name} failed: {e!r}")
            r = {f"{name}_error": repr(e)}
        log(name, json.dumps(r))
        results.update(r)
        shots = os.environ.get("BENCH_SCREENSHOTS")
        if shots:
            img = await viewer.send("Page.captureScreenshot", {"format": "png"})
            with open(os.path.join(shots, f"viewer-{name}.png"), "wb") as f:
                f.write(base64.b64decode(img["data"]))
    if os.environ.get("BENCH_CDP_CROSSCHECK"):
        await asyncio.sleep(0.5)
        js = await viewer.eval("[window.__bench.totalMsgs, window.__bench.totalBytes]")
        results["crosscheck"] = {"js_msgs": js[0], "js_bytes": js[1],
                                 "cdp_frames": cdp_bytes["frames"], "cdp_bytes": cdp_bytes["bytes"]}
        log("cross-check", results["crosscheck"])

    out = {
        "typing_kb": results.get("typing_kb"),
        "scroll_kb": results.get("scroll_kb"),
        "idle_kb_per_s": results.get("idle_kb_per_s"),
        "animation_fps": results.get("animation_fps"),
        "animation_kb_per_s": results.get("animation_kb_per_s"),
        "click_p50_ms": results.get("click_p50_ms"),
        "click_p95_ms": results.get("click_p95_ms"),
        "animation_rotate_fps": results.get("animation_rotate_fps"),
        "animation_rotate_kb_per_s": results.get("animation_rotate_kb_per_s"),
        "click_raf_p50_ms": results.get("click_raf_p50_ms"),
        "click_raf_p95_ms": results.get("click_raf_p95_ms"),
        "novnc_version": version(["dpkg-query", "-W", "-f", "${Version}", "novnc"]),
        "x11vnc_version": version(["sh", "-c", "x11vnc -version 2>&1 | head -1"]),
        "websockify_version": version(["dpkg-query", "-W", "-f", "${Version}", "websockify"]),
        "chromium_version": version(["/usr/lib/chromium/chromium", "--version"]),
        "session_viewport": viewport,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "details": rounded(results, 3),
    }
    out = rounded(out, 2)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(json.dumps(out, indent=2))
    await session.close()
    await viewer.close()


if __name__ == "__main__":
    asyncio.run(main())
