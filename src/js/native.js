// Runs in the isolated world "cobrowse" of every document of a session's page (the page's own
// scripts cannot see or change it). Headless Chromium draws no <select> popup anyone could see:
// opening one is intercepted here and described to the server through the `cobrowseNative`
// binding; the participant's choice comes back through `__cobrowseChoose`.
(() => {
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

  // Copy and cut: the text copied goes to the participant who pressed the keys, for their own
  // clipboard. Never from a password field (browsers do not copy those either).
  const MAX_COPY = 100000;
  const copied = () => {
    const el = document.activeElement;
    let text = '';
    if (el instanceof HTMLInputElement && el.type === 'password') return;
    if ((el instanceof HTMLTextAreaElement || el instanceof HTMLInputElement) && el.selectionStart !== null) {
      text = el.value.slice(el.selectionStart, el.selectionEnd);
    } else {
      text = String(getSelection() ?? '');
    }
    if (text) send({ kind: 'copy', text: text.slice(0, MAX_COPY) });
  };
  addEventListener('copy', copied, true);
  addEventListener('cut', copied, true);

  // The choice for popup `id`: option `index`, or -1 to close it unchanged. Fires `input` and
  // `change` as a local browser does when the choice changes the value.
  globalThis.__cobrowseChoose = (id, index) => {
    if (!open || open.id !== id) return false;
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
