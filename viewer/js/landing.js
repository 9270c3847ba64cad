// Entry point of index.html: creates a session and sends the creator to its owner link.

const DEFAULT_WIDTH = 1280;
const DEFAULT_HEIGHT = 720;

const form = document.getElementById('start-form');
const urlInput = document.getElementById('url');
const widthInput = document.getElementById('width');
const heightInput = document.getElementById('height');
const startButton = document.getElementById('start');
const errorBox = document.getElementById('error');

/** Completes a bare host ("example.com/path") with https://; anything with a scheme is left to the server to judge. */
export function normalizeUrl(raw) {
  const url = raw.trim();
  if (url === '') return url;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url) || /^about:/i.test(url)) return url;
  return 'https://' + url.replace(/^\/+/, '');
}

function dimension(input, fallback) {
  const n = Number.parseInt(input.value, 10);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

async function start(event) {
  event.preventDefault();
  errorBox.hidden = true;
  const url = normalizeUrl(urlInput.value);
  if (url === '') {
    showError('Enter the address of the page to open.');
    urlInput.focus();
    return;
  }
  urlInput.value = url;

  startButton.disabled = true;
  startButton.textContent = 'Starting…';
  try {
    const res = await fetch('/api/sessions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({
        url,
        width: dimension(widthInput, DEFAULT_WIDTH),
        height: dimension(heightInput, DEFAULT_HEIGHT),
      }),
    });
    // Error bodies are {"error": "..."}; a proxy's HTML error page is not, hence the fallback.
    const body = await res.json().catch(() => null);
    if (res.ok && body?.links?.owner) {
      location.href = body.links.owner;
      return; // keep the button disabled while the browser navigates
    }
    showError(body?.error || `The server answered ${res.status} ${res.statusText}`.trim());
  } catch {
    showError('Could not reach the server. Check your connection and try again.');
  }
  startButton.disabled = false;
  startButton.textContent = 'Start';
}

form.addEventListener('submit', start);
