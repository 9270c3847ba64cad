// Runs in the isolated world "cobrowse" of every document of a session's page (the page's own
// scripts cannot see or change it). Headless Chromium draws no <select> popup anyone could see:
// opening one is intercepted here and described to the server through the `cobrowseNative`
// binding; the participant's choice comes back through `__cobrowseChoose`.
(() => {
  // Installed once per world: a popup's first document can get it twice (see Browser::adopt).
  if (globalThis.__cobrowseChoose) return;
  const MAX_OPTIONS = 1000;
  const MAX_LABEL = 200;
  let seq = 0;
  let open = null; // {id, select}

  const send = (message) => {
    try {
      globalThis.cobrowseNative(JSON.stringify(message));
    } catch {
      // binding not installed in this frame: the page keeps its own (invisible) popup
    }
  };

  // Popup selects only: a `multiple` or `size > 1` select is a list drawn in the page itself.
  const isPopupSelect = (el) =>
    el instanceof HTMLSelectElement && !el.multiple && el.size <= 1 && !el.disabled;

  const selectOf = (target) => {
    if (isPopupSelect(target)) return target;
    const select = target instanceof Element ? target.closest('select') : null;
    return select && isPopupSelect(select) ? select : null;
  };

  function describe(select, id) {
    const options = [];
    for (const option of select.options) {
      if (options.length >= MAX_OPTIONS) break;
      const group = option.parentElement instanceof HTMLOptGroupElement ? option.parentElement : null;
      options.push({
        label: (option.label || option.text || '').slice(0, MAX_LABEL),
        disabled: option.disabled || Boolean(group && group.disabled),
        group: group ? String(group.label || '').slice(0, MAX_LABEL) : null,
      });
    }
    const r = select.getBoundingClientRect();
    return { kind: 'select', id, selected: select.selectedIndex, options, rect: [r.left, r.top, r.width, r.height] };
  }

  function openSelect(select, event) {
    event.preventDefault(); // no native popup: nobody would see it
    select.focus({ preventScroll: true });
    seq += 1;
    open = { id: seq, select };
    send(describe(select, seq));
  }

  addEventListener('mousedown', (e) => {
    const select = e.button === 0 ? selectOf(e.target) : null;
    if (select) openSelect(select, e);
  }, true);

  addEventListener('keydown', (e) => {
    const select = selectOf(e.target);
    if (!select) return;
    const opens = (e.altKey && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) || e.key === 'F4' || e.key === ' ';
    if (opens) openSelect(select, e);
  }, true);

  // Colour, date and time fields: their pickers are popups nobody would see either. A click on
  // one (typing into a date or time field still works as in any field) asks the participant who
  // clicked with the same kind of field in their own browser, which has a real picker.
  const PICKERS = new Set(['color', 'date', 'time', 'datetime-local', 'month', 'week']);
  const MAX_VALUE = 100;
  const isPicker = (el) =>
    el instanceof HTMLInputElement && PICKERS.has(el.type) && !el.disabled && !el.readOnly;
  addEventListener('click', (e) => {
    const input = e.button === 0 && isPicker(e.target) ? e.target : null;
    if (!input) return;
    e.preventDefault();
    seq += 1;
    open = { id: seq, input };
    const r = input.getBoundingClientRect();
    send({
      kind: 'picker',
      id: seq,
      type: input.type,
      value: input.value.slice(0, MAX_VALUE),
      min: input.min.slice(0, MAX_VALUE),
      max: input.max.slice(0, MAX_VALUE),
      step: input.step.slice(0, MAX_VALUE),
      rect: [r.left, r.top, r.width, r.height],
    });
  }, true);

  // The value picked for picker `id`, or null to close it unchanged. The field takes it as
  // its own sanitising allows (a malformed value is refused, the old one kept).
  globalThis.__cobrowsePick = (id, value) => {
    if (!open || open.id !== id || !open.input) return false;
    const { input } = open;
    open = null;
    if (value === null) return true;
    const before = input.value;
    input.value = String(value);
    if (input.value !== String(value)) {
      input.value = before;
      return false;
    }
    if (before !== input.value) {
      input.dispatchEvent(new Event('input', { bubbles: true, composed: true }));
      input.dispatchEvent(new Event('change', { bubbles: true }));
    }
    return true;
  };

  // Copy and cut: the text copied goes to the participant who pressed the keys, for their own
  // clipboard. Never from a password field (browsers do not copy those either) nor a masked one.
  const MAX_COPY = 100000;
  const copied = () => {
    const el = document.activeElement;
    let text = '';
    if (el instanceof HTMLInputElement && el.type === 'password') return;
    // Nor from a masked element (mask.js): the clipboard must not carry what the pixels hide.
    if (globalThis.__cobrowseCopyTouchesMask?.()) return;
    if ((el instanceof HTMLTextAreaElement || el instanceof HTMLInputElement) && el.selectionStart !== null) {
      text = el.value.slice(el.selectionStart, el.selectionEnd);
    } else {
      text = String(getSelection() ?? '');
    }
    if (text) send({ kind: 'copy', text: text.slice(0, MAX_COPY) });
  };
  addEventListener('copy', copied, true);
  addEventListener('cut', copied, true);

  // Recordings: what a press landed on and what fields now hold, from the top document, so a
  // bug bundle's script can name elements instead of coordinates. The server keeps these only
  // while recording. Never a password's or a masked field's value.
  if (window === window.top) {
    const unique = (selector) => {
      try {
        return document.querySelectorAll(selector).length === 1;
      } catch {
        return false;
      }
    };
    const text = (el) => (el.textContent || '').trim().replace(/\s+/g, ' ');
    // Ids that look generated (long digit runs, framework prefixes) change between page loads.
    const stableId = (id) => id && id.length <= 64 && !/\d{4,}|^(ember|react|ng-|mui-|radix-|:r)/.test(id);
    const ACTIONABLE = 'a[href],button,input,select,textarea,label,summary,option,[role=button],[role=link],[role=checkbox],[role=tab],[role=menuitem],[contenteditable=""],[contenteditable=true]';
    const selectorFor = (target) => {
      if (!(target instanceof Element)) return null;
      const el = target.closest(ACTIONABLE) || target;
      const tag = el.localName;
      if (stableId(el.id) && unique('#' + CSS.escape(el.id))) return '#' + CSS.escape(el.id);
      for (const attr of ['data-testid', 'data-test-id', 'data-test', 'data-cy', 'data-qa']) {
        const v = el.getAttribute(attr);
        const s = v && `[${attr}="${CSS.escape(v)}"]`;
        if (s && unique(s)) return s;
      }
      for (const attr of ['name', 'aria-label', 'placeholder']) {
        const v = el.getAttribute(attr);
        const s = v && `${tag}[${attr}="${CSS.escape(v)}"]`;
        if (s && unique(s)) return s;
      }
      if (['a', 'button', 'summary', 'label'].includes(tag)) {
        const t = text(el);
        if (t && t.length <= 80 && [...document.querySelectorAll(tag)].filter((e) => text(e) === t).length === 1) {
          return `${tag}:text-is(${JSON.stringify(t)})`;
        }
      }
      return null;
    };
    const MAX_VALUE = 10000;
    addEventListener('mousedown', (e) => {
      if (!e.isTrusted) return;
      const target = e.composedPath()[0];
      send({
        kind: 'target',
        x: e.clientX,
        y: e.clientY,
        selector: selectorFor(target),
        tag: target instanceof Element ? target.localName : '',
      });
    }, true);
    addEventListener('change', (e) => {
      const el = e.composedPath()[0];
      if (!(el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement)) return;
      const inputType = el instanceof HTMLInputElement ? el.type : '';
      const masked = inputType === 'password' || Boolean(globalThis.__cobrowseIsMasked?.(el));
      const checkable = inputType === 'checkbox' || inputType === 'radio';
      send({
        kind: 'field',
        selector: selectorFor(el),
        tag: el.localName,
        inputType,
        value: masked || inputType === 'file' ? null : String(el.value).slice(0, MAX_VALUE),
        checked: checkable ? el.checked : null,
        masked,
      });
    }, true);
  }

  // The choice for popup `id`: option `index`, or -1 to close it unchanged. Fires `input` and
  // `change` as a local browser does when the choice changes the value.
  globalThis.__cobrowseChoose = (id, index) => {
    if (!open || open.id !== id || !open.select) return false;
    const { select } = open;
    open = null;
    if (index < 0 || index >= select.options.length || select.options[index].disabled) return false;
    if (select.selectedIndex !== index) {
      select.selectedIndex = index;
      select.dispatchEvent(new Event('input', { bubbles: true, composed: true }));
      select.dispatchEvent(new Event('change', { bubbles: true }));
    }
    return true;
  };
})();
