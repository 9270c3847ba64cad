// Recording files (docs/recording.md, src/recording/format.rs): parses a whole file's bytes into
// its metadata, events and screen updates, up to the last whole record. Everything in a recording
// is untrusted: callers put its text in the page with textContent only.

const MAGIC = [0x43, 0x42, 0x52, 0x45, 0x43, 0x0d, 0x0a, 0x1a]; // "CBREC\r\n\x1a"
const VERSION = 1;
const FILE_HEADER_BYTES = MAGIC.length + 4;
const MAX_PAYLOAD = 64 * 1024 * 1024;
const KIND_META = 1;
const KIND_UPDATE = 2;
const KIND_EVENT = 3;
const UPDATE_HEADER_BYTES = 16;
const FLAG_KEYFRAME = 1;

/** The file is not a recording this viewer can read. */
export class RecordingError extends Error {}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE, as zlib and crc32fast compute it) of `bytes[start, end)`. */
export function crc32(bytes, start = 0, end = bytes.length) {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * Parses a recording. Returns `{ meta, updates, keyframes, events, duration, truncated, end }`:
 * `updates` are `{ t, offset, length, keyframe }` (payload bytes in `buffer`, in file order),
 * `keyframes` the indices of keyframe updates, `events` `{ t, event }` with the JSON parsed,
 * `truncated` whether the file ends in a partial or corrupt record (a recording cut off), `end`
 * the time of its last whole record. Throws RecordingError when the file is not a recording.
 */
export function parseRecording(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < FILE_HEADER_BYTES || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new RecordingError('This file is not a cobrowse recording.');
  }
  const view = new DataView(buffer);
  const version = view.getUint32(MAGIC.length, true);
  if (version !== VERSION) {
    throw new RecordingError(`This recording has format version ${version}; this viewer reads version ${VERSION}.`);
  }
  const out = { meta: null, updates: [], keyframes: [], events: [], duration: 0, truncated: false, end: 0 };
  const decoder = new TextDecoder();
  let at = FILE_HEADER_BYTES;
  while (at < bytes.length) {
    // length (u32: kind + t + payload), kind (u8), t (u32), payload, crc (u32 of kind, t, payload)
    if (at + 4 > bytes.length) break;
    const length = view.getUint32(at, true);
    if (length < 5 || length > 5 + MAX_PAYLOAD || at + 4 + length + 4 > bytes.length) break;
    const bodyStart = at + 4;
    const bodyEnd = bodyStart + length;
    if (crc32(bytes, bodyStart, bodyEnd) !== view.getUint32(bodyEnd, true)) break;
    const kind = bytes[bodyStart];
    if (kind !== KIND_META && kind !== KIND_UPDATE && kind !== KIND_EVENT) break;
    const t = view.getUint32(bodyStart + 1, true);
    const offset = bodyStart + 5;
    const size = bodyEnd - offset;
    at = bodyEnd + 4;
    if (kind === KIND_UPDATE) {
      // Only well-formed screen updates: what the live viewer would not paint is skipped.
      if (size < UPDATE_HEADER_BYTES || bytes[offset] !== 2) continue;
      const keyframe = (bytes[offset + 1] & FLAG_KEYFRAME) !== 0;
      if (keyframe) out.keyframes.push(out.updates.length);
      out.updates.push({ t, offset, length: size, keyframe });
    } else {
      let value;
      try {
        value = JSON.parse(decoder.decode(bytes.subarray(offset, offset + size)));
      } catch {
        continue; // a record that is whole but not JSON: skip it, keep the rest
      }
      if (value === null || typeof value !== 'object') continue;
      if (kind === KIND_META) {
        if (!out.meta) out.meta = value;
      } else {
        out.events.push({ t, event: value });
      }
    }
    out.end = Math.max(out.end, t);
  }
  out.truncated = at < bytes.length;
  if (!out.meta && !out.truncated && out.updates.length + out.events.length > 0) {
    throw new RecordingError('This file is not a cobrowse recording (it has no metadata).');
  }
  out.duration = out.end;
  return out;
}
