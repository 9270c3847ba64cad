// File fields of the page: headless Chromium opens no picker. When the page asks this participant
// for files (`fileChooser`), a box offers the local picker (a person's click is what lets a
// browser open it); the files picked are uploaded to the server, which gives them to the field.

export class FileAsk {
  #els;
  #session;
  #token;
  #stats;
  #open = null; // {id, multiple, accept, maxBytes}

  /**
   * @param els     {box, label, input, status, cancel}
   * @param join    {id, token} of this session
   * @param stats   window.cobrowse (mirrors `fileChooser` and `uploaded` for tests)
   */
  constructor(els, join, stats) {
    this.#els = els;
    this.#session = join.id;
    this.#token = join.token;
    this.#stats = stats;
    stats.fileChooser = null;
    stats.uploaded = 0;
    els.cancel.addEventListener('click', () => this.#close());
    els.input.addEventListener('change', () => this.#upload());
    els.box.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.#close();
    });
  }

  ask(msg) {
    if (!Number.isInteger(msg.id)) return;
    this.#open = {
      id: msg.id,
      multiple: msg.multiple === true,
      accept: typeof msg.accept === 'string' ? msg.accept : '',
      maxBytes: Number.isFinite(msg.maxBytes) ? msg.maxBytes : 0,
    };
    this.#stats.fileChooser = { ...this.#open };
    const els = this.#els;
    els.input.value = '';
    els.input.multiple = this.#open.multiple;
    els.input.accept = this.#open.accept;
    els.input.disabled = false;
    els.label.textContent = this.#open.multiple
      ? `The page asks for files (at most ${megabytes(this.#open.maxBytes)} together)`
      : `The page asks for a file (at most ${megabytes(this.#open.maxBytes)})`;
    els.status.textContent = '';
    els.box.hidden = false;
    els.input.focus();
  }

  async #upload() {
    const open = this.#open;
    const els = this.#els;
    const files = [...els.input.files];
    if (!open || files.length === 0) return;
    const total = files.reduce((sum, f) => sum + f.size, 0);
    if (open.maxBytes && total > open.maxBytes) {
      els.status.textContent = `Too large: ${megabytes(total)}; this server takes at most ${megabytes(open.maxBytes)}.`;
      els.input.value = '';
      return;
    }
    const form = new FormData();
    for (const file of files) form.append('file', file, file.name);
    els.input.disabled = true;
    els.status.textContent = 'Uploading…';
    let reply;
    try {
      reply = await fetch(`/s/${encodeURIComponent(this.#session)}/files/${open.id}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.#token}` },
        body: form,
      });
    } catch {
      reply = null;
    }
    if (reply && reply.ok) {
      this.#stats.uploaded += files.length;
      this.#close();
      dispatchEvent(new Event('cobrowse:uploaded'));
      return;
    }
    let reason = 'the upload failed';
    try {
      reason = (await reply.json()).error || reason;
    } catch {
      // no JSON reason
    }
    els.status.textContent = `Not uploaded: ${reason}.`;
    els.input.disabled = false;
    els.input.value = '';
  }

  #close() {
    this.#open = null;
    this.#stats.fileChooser = null;
    this.#els.box.hidden = true;
  }
}

function megabytes(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 1024 * 1024 ? 2 : 0)} MB`;
}
