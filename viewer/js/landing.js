// Entry point of index.html: creates a session and sends the creator to its owner link.

const DEFAULT_WIDTH = 1280;
const DEFAULT_HEIGHT = 720;

const form = document.getElementById('start-form');
const urlInput = document.getElementById('url');
const widthInput = document.getElementById('width');
const heightInput = document.getElementById('height');
const startButton = document.getElementById('start');
const errorBox = document.getElementById('error');
const keyForm = document.getElementById('key-form');
const keyInput = document.getElementById('api-key');
const keyError = document.getElementById('key-error');

// The API key this tab signed in with (sessionStorage: gone when the tab closes).
const KEY_STORE = 'cobrowse.apiKey';

function apiHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Asks the server whether this tab may use the API; shows the start form or the sign-in form. */
async function checkAccess() {
  let status = 0;
  try {
    status = (await fetch('/api/auth', { headers: apiHeaders() })).status;
  } catch {
    status = 0;
  }
  const allowed = status === 200;
  if (status === 401) sessionStorage.removeItem(KEY_STORE);
  form.hidden = !allowed;
  keyForm.hidden = allowed || status !== 401;
  if (allowed) urlInput.focus();
  else if (status === 401) keyInput.focus();
  else {
    form.hidden = false;
    showError('Could not reach the server. Check your connection and try again.');
  }
  return status;
}

async function signIn(event) {
  event.preventDefault();
  keyError.hidden = true;
  sessionStorage.setItem(KEY_STORE, keyInput.value.trim());
  keyInput.value = '';
  if ((await checkAccess()) === 401) {
    keyError.textContent = 'That key was not accepted.';
    keyError.hidden = false;
  }
}

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
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...apiHeaders() },
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
    if (res.status === 401) {
      await checkAccess();
    }
    showError(body?.error || `The server answered ${res.status} ${res.statusText}`.trim());
  } catch {
    showError('Could not reach the server. Check your connection and try again.');
  }
  startButton.disabled = false;
  startButton.textContent = 'Start';
}

form.addEventListener('submit', start);
keyForm.addEventListener('submit', signIn);
checkAccess();
