// Masking: runs in the isolated world "cobrowse" of every document of a session's page (the
// page's scripts cannot see or change it). The top document finds the elements to mask (the
// session's selectors, in its own document and every same-origin frame it can reach) and reports
// their rectangles through the `cobrowseMask` binding whenever they change, before the page
// paints the change: mutations, resizes and scrolls are observed by callbacks that run before
// paint, and while anything animates a requestAnimationFrame loop measures every frame. Reports
// are sent only when something changed. The server (src/mask.rs) checks them as untrusted input.
(() => {
  // Installed once per world; asked again (a tab being shown), it reports at once.
  if (globalThis.__cobrowseMaskReport) {
    globalThis.__cobrowseMaskReport(true);
    return;
  }
  // Copy and cut (native.js, same world) ask this first: text from a masked element (focused,
  // inside one, or any part of one selected) never goes to anyone's clipboard; the pixels hide it.
  const MASKED = /*SELECTORS*/[];
  globalThis.__cobrowseCopyTouchesMask = () => {
    const active = document.activeElement;
    const selection = getSelection();
    for (const selector of MASKED) {
      let found;
      try {
        found = document.querySelectorAll(selector);
      } catch {
        continue;
      }
      for (const el of found) {
        if (active && (el === active || el.contains(active))) return true;
        if (selection && selection.rangeCount && selection.containsNode(el, true)) return true;
      }
    }
    return false;
  };
  // Recordings (native.js) ask this before sending a field's value: a masked field's never goes.
  globalThis.__cobrowseIsMasked = (el) => {
    for (const selector of MASKED) {
      try {
        if (el.closest(selector)) return true;
      } catch {
        // a selector this browser does not parse masks nothing
      }
    }
    return false;
  };
  // Frames are measured by the top document (it knows where they sit); a cross-origin frame it
  // cannot reach is a documented limit (mask the <iframe> itself with a selector).
  if (window !== window.top) return;
  const SELECTORS = /*SELECTORS*/[];
  const MAX_RECTS = 256;
  // Animations and recent events keep the per-frame loop running this long.
  const ACTIVE_MS = 1000;
  // A last resort for changes no callback sees (a style sheet rule edited, say).
  const POLL_MS = 500;

  // Only selectors this browser parses: one bad selector must not hide the others.
  const valid = SELECTORS.filter((s) => {
    try {
      document.createDocumentFragment().querySelector(s);
      return true;
    } catch {
      return false;
    }
  });
  const selector = valid.join(', ');

  let last = '';
  let focusSeq = 0;
  let activeUntil = 0;
  let looping = false;
  const observed = new WeakSet();

  const send = (message) => {
    try {
      globalThis.cobrowseMask(message);
    } catch {
      // binding not installed: the server masks the whole screen of a tab that never reported
    }
  };

  const matches = (el) => {
    try {
      return Boolean(selector) && el instanceof Element && el.matches(selector);
    } catch {
      return false;
    }
  };

  // 0: scrolls with the page; 1: fixed to the viewport; 2: cannot tell (sticky, or fixed under a
  // transformed ancestor, which makes "fixed" scroll with that ancestor).
  function anchorOf(el, outer) {
    if (outer !== 0) return outer;
    let fixed = false;
    for (let e = el; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (style.position === 'sticky') return 2;
      if (fixed) {
        if (style.transform !== 'none' || style.filter !== 'none' || style.perspective !== 'none'
          || style.willChange.includes('transform') || /paint|layout|strict|content/.test(style.contain)) return 2;
      } else if (style.position === 'fixed') {
        fixed = true;
      }
    }
    return fixed ? 1 : 0;
  }

  function observe(doc) {
    if (observed.has(doc)) return;
    observed.add(doc);
    try {
      for (const type of ['focusin', 'focusout']) {
        doc.addEventListener(type, () => {
          focusSeq += 1;
        }, { capture: true, passive: true });
      }
      mutations.observe(doc, { subtree: true, childList: true, attributes: true, characterData: true });
      for (const type of ['scroll', 'focusin', 'focusout', 'load', 'transitionrun', 'animationstart', 'input']) {
        doc.addEventListener(type, wake, { capture: true, passive: true });
      }
    } catch {
      // a document going away
    }
  }

  // Viewport CSS px of the top document; (ox, oy) is where `doc`'s viewport sits in it.
  function collect(doc, ox, oy, outer, out) {
    observe(doc);
    // The root's size changes when content above a field grows (an image loading, say).
    if (doc.documentElement) resizes.observe(doc.documentElement);
    let found = [];
    try {
      found = selector ? doc.querySelectorAll(selector) : [];
    } catch {
      found = [];
    }
    for (const el of found) {
      if (out.rects.length >= MAX_RECTS) {
        out.overflow = true;
        return;
      }
      const r = el.getBoundingClientRect();
      if (!(r.width > 0 && r.height > 0)) continue;
      try {
        resizes.observe(el);
      } catch {
        // not an element we can watch
      }
      out.rects.push([ox + r.left, oy + r.top, r.width, r.height, anchorOf(el, outer)]);
    }
    for (const frame of doc.querySelectorAll('iframe, frame')) {
      let inner = null;
      try {
        inner = frame.contentDocument;
      } catch {
        inner = null;
      }
      if (!inner) continue;
      const r = frame.getBoundingClientRect();
      const style = getComputedStyle(frame);
      const fx = ox + r.left + frame.clientLeft + (parseFloat(style.paddingLeft) || 0);
      const fy = oy + r.top + frame.clientTop + (parseFloat(style.paddingTop) || 0);
      collect(inner, fx, fy, anchorOf(frame, outer), out);
      if (out.overflow) return;
    }
  }

  function focused() {
    let el = document.activeElement;
    for (let depth = 0; el && depth < 10; depth += 1) {
      if (el.tagName !== 'IFRAME' && el.tagName !== 'FRAME') break;
      try {
        el = el.contentDocument ? el.contentDocument.activeElement : null;
      } catch {
        el = null;
      }
    }
    return Boolean(el) && matches(el);
  }

  function measure(force) {
    const out = { rects: [], overflow: false };
    collect(document, 0, 0, 0, out);
    const sx = window.scrollX;
    const sy = window.scrollY;
    // Page coordinates for what scrolls with the page: a plain scroll changes nothing to report.
    const rects = out.rects.map(([x, y, w, h, a]) => {
      const r = a === 0 ? [x + sx, y + sy, w, h, a] : [x, y, w, h, a];
      return r.map((v, i) => (i < 4 ? Math.round(v * 100) / 100 : v));
    });
    const anyUnsure = rects.some((r) => r[4] === 2);
    // `focusSeq` changes with every focus move, masked or not: the server learns promptly that
    // a press moved the focus, and only then trusts `focus` for what is typed next.
    const report = { rects, scroll: anyUnsure ? [sx, sy] : [0, 0], overflow: out.overflow, focus: focused(), focusSeq };
    const json = JSON.stringify(report);
    if (json !== last || force) {
      last = json;
      send(json);
    }
  }

  function loop() {
    measure(false);
    let animating = false;
    try {
      animating = document.getAnimations().length > 0;
    } catch {
      animating = false;
    }
    if (animating || performance.now() < activeUntil) {
      requestAnimationFrame(loop);
    } else {
      looping = false;
    }
  }

  function wake() {
    measure(false);
    activeUntil = performance.now() + ACTIVE_MS;
    if (!looping) {
      looping = true;
      requestAnimationFrame(loop);
    }
  }

  // Mutation and resize observers run before the browser paints the change they saw.
  const mutations = new MutationObserver(() => wake());
  const resizes = new ResizeObserver(() => wake());

  globalThis.__cobrowseMaskReport = (force) => measure(Boolean(force));
  addEventListener('resize', wake, { capture: true, passive: true });
  addEventListener('scroll', wake, { capture: true, passive: true });
  addEventListener('pageshow', wake, { capture: true, passive: true });
  setInterval(() => measure(false), POLL_MS);
  // At the start of the document, before anything is painted: the server then knows this
  // document's (empty) list and stops masking what the previous one had.
  measure(true);
  wake();
})();
