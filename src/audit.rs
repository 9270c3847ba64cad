//! The audit log: append-only JSON lines, one per event that matters to an auditor (sessions,
//! participants, control, navigation, dialogs, files, clipboard, links, refused requests), each
//! chained to the previous line by its SHA-256, so that `cobrowse audit verify FILE` finds the
//! first line changed, inserted or deleted.
//!
//! A line reads `{"seq":N,"time":"…Z","event":"…",<fields…>,"prev":"<hex>","hash":"<hex>"}`:
//! `prev` is the previous line's `hash` (64 zeros for the first line of a file), and `hash` is the
//! SHA-256 of the line as written without its `,"hash":"…"` member. Typed text, clipboard
//! contents, file contents and tokens are never recorded: only counts and sizes.
//!
//! Writing never blocks a session: events go through a bounded queue to one writer task, which
//! syncs the file after each batch. When the queue is full the event is counted, logged as an
//! error, and an `audit.dropped` line records how many were lost once there is room again.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{error, warn};

/// Events waiting for the writer; beyond, they are dropped and counted.
pub const QUEUE: usize = 4096;
/// `prev` of a file's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest tail of an existing file read to find the chain's last link on startup.
const TAIL_BYTES: u64 = 64 * 1024;

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Appended to this file (created 0600 when missing).
    File(PathBuf),
    /// Written to standard output (the server's logs go to standard error).
    Stdout,
    /// Nowhere: tests that do not look at the audit log.
    Off,
}

struct Event {
    at: SystemTime,
    event: &'static str,
    fields: Map<String, Value>,
}

enum Msg {
    Event(Event),
    /// Write everything queued before this, then stop and say so.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// A handle to the audit log; cheap to clone through its `Arc`.
pub struct Audit {
    tx: Option<mpsc::Sender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("on", &self.tx.is_some())
            .finish()
    }
}

impl Audit {
    /// An audit log that records nothing.
    pub fn off() -> Arc<Self> {
        Arc::new(Audit {
            tx: None,
            dropped: Arc::default(),
        })
    }

    /// Opens the sink (continuing an existing file's chain) and starts the writer task, which
    /// ends once every handle is dropped and the queue is drained.
    pub fn start(sink: &Sink) -> std::io::Result<Arc<Self>> {
        let mut out: Box<dyn std::io::Write + Send> = match sink {
            Sink::Off => return Ok(Self::off()),
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(path) => Box::new(open_append(path)?),
        };
        let (mut seq, mut prev) = match sink {
            Sink::File(path) => chain_end(path)?,
            _ => (0, GENESIS.to_string()),
        };
        let sync_file = match sink {
            Sink::File(path) => Some(std::fs::OpenOptions::new().append(true).open(path)?),
            _ => None,
        };
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = Arc::clone(&dropped);
        // A thread of its own: writes and syncs block, and must not hold a runtime worker.
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                let mut batch = Vec::new();
                let mut closing = None;
                while closing.is_none() {
                    let Some(first) = rx.blocking_recv() else {
                        break;
                    };
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Event(e) => batch.push(e),
                            Msg::Close(done) => {
                                closing = Some(done);
                                break;
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    let missed = lost.swap(0, Ordering::AcqRel);
                    if missed > 0 {
                        let mut fields = Map::new();
                        fields.insert("count".into(), missed.into());
                        batch.push(Event {
                            at: SystemTime::now(),
                            event: "audit.dropped",
                            fields,
                        });
                    }
                    let mut text = String::new();
                    for e in batch.drain(..) {
                        seq += 1;
                        let line = render(seq, &e, &prev);
                        prev = line_hash(&line).unwrap_or_default().to_string();
                        text.push_str(&line);
                        text.push('\n');
                    }
                    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                    let synced =
                        written.and_then(|()| sync_file.as_ref().map_or(Ok(()), |f| f.sync_data()));
                    if let Err(e) = synced {
                        error!(error = %e, "cannot write the audit log");
                    }
                }
                if let Some(done) = closing {
                    let _ = done.send(());
                }
            })?;
        Ok(Arc::new(Audit {
            tx: Some(tx),
            dropped,
        }))
    }

    /// Writes every event recorded so far, then stops the writer (later events are dropped).
    pub async fn close(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, written) = tokio::sync::oneshot::channel();
        if tx.send(Msg::Close(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Records `event` with `fields` (an object; other values are recorded under `value`).
    pub fn record(&self, event: &'static str, fields: Value) {
        let Some(tx) = &self.tx else { return };
        let fields = match fields {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                let mut map = Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        let e = Event {
            at: SystemTime::now(),
            event,
            fields,
        };
        if tx.try_send(Msg::Event(e)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::AcqRel) + 1;
            if n.is_power_of_two() {
                error!(dropped = n, event, "audit queue full: events dropped");
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The sequence number and hash of an existing file's last complete line, so that appending
/// continues the chain. A file cut mid-line (a crash during a write) is completed with a newline;
/// `verify` will report that line.
fn chain_end(path: &Path) -> std::io::Result<(u64, String)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, GENESIS.to_string()));
    }
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() != Some(&b'\n') {
        warn!(path = %path.display(), "the audit log ends in a partial line; continuing after it");
        open_append(path)?.write_all(b"\n")?;
    }
    let text = String::from_utf8_lossy(&tail);
    for line in text.lines().rev() {
        if let (Some(hash), Ok(Value::Object(obj))) =
            (line_hash_field(line), serde_json::from_str::<Value>(line))
        {
            let seq = obj.get("seq").and_then(Value::as_u64).unwrap_or(0);
            return Ok((seq, hash.to_string()));
        }
    }
    Err(std::io::Error::other(format!(
        "{}: no audit line found in its last {TAIL_BYTES} bytes; move the file away to start a new chain",
        path.display()
    )))
}

fn render(seq: u64, e: &Event, prev: &str) -> String {
    let mut line = format!(
        "{{\"seq\":{seq},\"time\":\"{}\",\"event\":{}",
        rfc3339(e.at),
        Value::from(e.event)
    );
    for (k, v) in &e.fields {
        if matches!(k.as_str(), "seq" | "time" | "event" | "prev" | "hash") {
            continue;
        }
        let _ = write!(line, ",{}:{}", Value::from(k.as_str()), v);
    }
    let _ = write!(line, ",\"prev\":\"{prev}\"}}");
    let hash = hex(&Sha256::digest(line.as_bytes()));
    line.pop();
    let _ = write!(line, ",\"hash\":\"{hash}\"}}");
    line
}

const HASH_SUFFIX_LEN: usize = ",\"hash\":\"\"}".len() + 64;

/// The `hash` member a line ends with, if it ends with one.
fn line_hash_field(line: &str) -> Option<&str> {
    let start = line.len().checked_sub(HASH_SUFFIX_LEN)?;
    let suffix = line.get(start..)?;
    let hash = suffix.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// The line's hash as recorded, if it matches its content.
fn line_hash(line: &str) -> Option<&str> {
    let hash = line_hash_field(line)?;
    let body = format!("{}}}", &line[..line.len() - HASH_SUFFIX_LEN]);
    (hex(&Sha256::digest(body.as_bytes())) == hash).then_some(hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every line is intact and chained: this many lines.
    Intact(u64),
    /// The first bad line (1-based) and what is wrong with it.
    Broken { line: u64, why: String },
}

/// Checks a whole audit log: every line's own hash, its link to the line before, and its
/// sequence number.
pub fn verify(text: &str) -> Verdict {
    let mut prev = GENESIS.to_string();
    let mut seq = None::<u64>;
    let mut n = 0;
    for (i, line) in text.split_terminator('\n').enumerate() {
        let number = i as u64 + 1;
        n = number;
        let broken = |why: &str| Verdict::Broken {
            line: number,
            why: why.to_string(),
        };
        let obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            _ => return broken("not a JSON object"),
        };
        let Some(hash) = line_hash(line) else {
            return broken("its content does not match its hash (the line was changed)");
        };
        let Some(this_prev) = obj.get("prev").and_then(Value::as_str) else {
            return broken("no prev");
        };
        // A file's first line may continue a chain whose beginning was rotated away.
        if i > 0 && this_prev != prev {
            return broken(
                "it does not follow the line before (a line was removed, inserted or changed)",
            );
        }
        let Some(this_seq) = obj.get("seq").and_then(Value::as_u64) else {
            return broken("no seq");
        };
        if seq.is_some_and(|s| this_seq != s + 1) {
            return broken("its sequence number does not follow the line before");
        }
        seq = Some(this_seq);
        prev = hash.to_string();
    }
    Verdict::Intact(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &'static str, fields: Value) -> Event {
        let Value::Object(fields) = fields else {
            panic!("object")
        };
        Event {
            at: UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123),
            event: name,
            fields,
        }
    }

    fn log(n: u64) -> String {
        let mut prev = GENESIS.to_string();
        let mut text = String::new();
        for seq in 1..=n {
            let line = render(
                seq,
                &event(
                    "participant.joined",
                    json!({"session": "s1", "participant": format!("p{seq}"), "name": "Ann \"A\" \n"}),
                ),
                &prev,
            );
            prev = line_hash(&line).expect("own hash").to_string();
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    #[test]
    fn lines_are_json_with_a_chain() {
        let text = log(3);
        let lines: Vec<&str> = text.lines().collect();
        let first: Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["time"], "2025-11-24T16:00:00.123Z");
        assert_eq!(first["name"], "Ann \"A\" \n");
        let second: Value = serde_json::from_str(lines[1]).expect("json");
        assert_eq!(second["prev"], first["hash"]);
        assert_eq!(verify(&text), Verdict::Intact(3));
    }

    #[test]
    fn the_first_changed_line_is_reported() {
        let text = log(4);
        let changed = text.replacen("\"p2\"", "\"p9\"", 1);
        assert!(matches!(verify(&changed), Verdict::Broken { line: 2, .. }));
        let last = text.replacen("\"p4\"", "\"p5\"", 1);
        assert!(matches!(verify(&last), Verdict::Broken { line: 4, .. }));
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        let removed = lines.join("\n");
        assert!(matches!(verify(&removed), Verdict::Broken { line: 2, .. }));
        let garbage = text.replacen("{\"seq\":3", "x{\"seq\":3", 1);
        assert!(matches!(verify(&garbage), Verdict::Broken { line: 3, .. }));
    }

    #[test]
    fn reserved_fields_cannot_be_overridden() {
        let line = render(
            1,
            &event("x", json!({"hash": "0", "prev": "1", "seq": 9, "ok": true})),
            GENESIS,
        );
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["ok"], true);
        assert!(line_hash(&line).is_some());
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[tokio::test]
    async fn a_file_continues_its_chain_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        for round in 0..2 {
            let audit = Audit::start(&Sink::File(path.clone())).expect("start");
            audit.record("session.created", json!({"session": format!("s{round}")}));
            audit.record("session.ended", json!({"session": format!("s{round}")}));
            audit.close().await;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(verify(&text), Verdict::Intact(4), "{text}");
    }
}
