// Files the page downloaded (docs/protocol.md, `downloads`): listed in a small box; Save fetches
// one from the server with this participant's token and hands it to their own browser's
// downloads. Nothing is saved without a click.

export class Downloads {
  #els;
  #session;
  #token;
  #stats;
  #seen = new Set();

  /**
   * @param els   {box, list, close}
   * @param join  {id, token} of this session
   * @param stats window.cobrowse (mirrors `downloads` and `saved` for tests)
   */
  constructor(els, join, stats) {
    this.#els = els;
    this.#session = join.id;
    this.#token = join.token;
    this.#stats = stats;
    stats.downloads = [];
    stats.saved = [];
    els.close.addEventListener('click', () => {
      els.box.hidden = true;
    });
  }

  update(msg) {
    const downloads = Array.isArray(msg.downloads)
      ? msg.downloads.filter((d) => d && Number.isInteger(d.id)).slice(-20)
      : [];
    this.#stats.downloads = downloads;
    // A new or newly finished download shows the box again.
    const fresh = downloads.some((d) => !this.#seen.has(`${d.id}:${d.state}`));
    for (const d of downloads) this.#seen.add(`${d.id}:${d.state}`);
    this.#els.list.replaceChildren(...downloads.map((d) => this.#item(d)));
    if (downloads.length === 0) this.#els.box.hidden = true;
    else if (fresh) this.#els.box.hidden = false;
  }

  #item(d) {
    const li = document.createElement('li');
    li.className = 'download';
    const name = document.createElement('span');
    name.className = 'download-name';
    name.textContent = typeof d.name === 'string' ? d.name : 'file';
    const status = document.createElement('span');
    status.className = 'download-status';
    if (d.state === 'done') {
      status.textContent = size(d.size);
      const save = document.createElement('button');
      save.type = 'button';
      save.id = `download-save-${d.id}`;
      save.textContent = 'Save';
      save.addEventListener('click', () => this.#save(d, save));
      li.append(name, status, save);
    } else if (d.state === 'failed') {
      status.textContent = `failed: ${typeof d.reason === 'string' ? d.reason : 'unknown'}`;
      li.append(name, status);
    } else {
      status.textContent = 'downloading…';
      li.append(name, status);
    }
    return li;
  }

  async #save(d, button) {
    button.disabled = true;
    try {
      const reply = await fetch(`/s/${encodeURIComponent(this.#session)}/downloads/${d.id}`, {
        headers: { Authorization: `Bearer ${this.#token}` },
      });
      if (!reply.ok) throw new Error(String(reply.status));
      const blob = await reply.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = typeof d.name === 'string' ? d.name : 'download';
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      this.#stats.saved.push({ id: d.id, name: a.download, size: blob.size });
      dispatchEvent(new Event('cobrowse:saved'));
    } catch {
      button.textContent = 'Retry';
    } finally {
      button.disabled = false;
    }
  }
}

function size(bytes) {
  if (!Number.isFinite(bytes)) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
