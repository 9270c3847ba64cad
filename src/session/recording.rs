//! A session's recording (`docs/recording.md`): who starts and stops it, and the recorder task
//! that writes it. The recorder is one more viewer of the **masked** screen, with its own pacer
//! that acknowledges at once: the file holds the updates viewers get (the tile stream, shared
//! through the masked screen's encode cache), a keyframe every few seconds for seeking, and
//! every event of the session, each stamped with its time.
//!
//! Architecture Invariant: recording never slows a session. Everything reaches the recorder
//! through a bounded queue with `try_send` (a full queue drops the event and counts it); the
//! recorder task alone touches the file; a write error stops the recording, not the session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{Participant, SessionHandle};
use crate::input::{Input, KeyKind, MouseButton, MouseKind};
use crate::lock;
use crate::pacing::Pacer;
use crate::protocol::{encode_update, flags, ServerMessage, UpdateHeader};
use crate::recording::event::{Actor, Button, Event, InputRecord, Meta};
use crate::recording::format::{self, Kind};
use crate::recording::store::{self, Store};

/// Events waiting for the recorder; beyond this they are dropped (and counted).
const EVENT_QUEUE: usize = 4096;
/// Keyframes (seeking starts from one): after a change, a new one is written once the updates
/// since the last one weigh as much as it did (a seek then never applies more than about one
/// keyframe's worth of updates), but not sooner than `KEYFRAME_MIN_GAP`; and at the latest
/// `KEYFRAME_MAX_GAP` after the last one. Typing makes a keyframe a minute, scrolling one every
/// few seconds.
const KEYFRAME_MIN_GAP: Duration = Duration::from_secs(5);
pub const KEYFRAME_MAX_GAP: Duration = Duration::from_secs(60);
/// Written data reaches the file (the OS) at least this often: what a crash can lose.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The file's write buffer.
const WRITE_BUFFER: usize = 256 * 1024;
/// How long stopping waits for the recorder to write its last records.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A recording in progress.
struct Active {
    id: String,
    /// Unix ms of `t = 0`.
    started_at: u64,
    started: Instant,
    by: String,
    events: mpsc::Sender<(u32, Event)>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

/// The session's part: where recordings go and the one in progress.
pub(super) struct Recordings {
    store: Option<Arc<Store>>,
    active: Mutex<Option<Active>>,
}

impl Recordings {
    pub(super) fn new(store: Option<Arc<Store>>) -> Recordings {
        Recordings {
            store,
            active: Mutex::new(None),
        }
    }
}

/// Whether and what a session records, for viewers and the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStatus {
    pub on: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name of who started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Events the recorder could not keep up with (dropped, not written).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a recording cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording is not available: the server has no data directory")]
    Unavailable,
    #[error("cannot create the recording file: {0}")]
    Io(#[from] std::io::Error),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Participant {
    /// This participant as a recording names them.
    pub fn record_actor(&self) -> Actor {
        Actor {
            id: self.id().to_string(),
            name: self.name().to_string(),
            role: self.role().as_str().to_string(),
        }
    }
}

/// The management API or the server as a recording names them.
pub fn system_actor(id: &str) -> Actor {
    Actor {
        id: id.to_string(),
        name: id.to_string(),
        role: id.to_string(),
    }
}

impl SessionHandle {
    fn recordings(&self) -> &Recordings {
        &self.shared.recordings
    }

    /// Where this server keeps recordings (`None`: recording is off for want of a data dir).
    pub fn recording_store(&self) -> Option<&Arc<Store>> {
        self.recordings().store.as_ref()
    }

    pub fn recording_status(&self) -> RecordingStatus {
        match &*lock(&self.recordings().active) {
            Some(a) => RecordingStatus {
                on: true,
                id: Some(a.id.clone()),
                by: Some(a.by.clone()),
                since: Some(a.started_at),
                dropped: a.dropped.load(Ordering::Relaxed),
            },
            None => RecordingStatus::default(),
        }
    }

    /// The id of the recording being written, if any.
    pub fn recording_id(&self) -> Option<String> {
        lock(&self.recordings().active)
            .as_ref()
            .map(|a| a.id.clone())
    }

    /// Starts recording (or returns the recording already running).
    pub fn start_recording(&self, by: Actor) -> Result<String, RecordError> {
        let store = self
            .recording_store()
            .ok_or(RecordError::Unavailable)?
            .clone();
        let mut active = lock(&self.recordings().active);
        if let Some(a) = &*active {
            return Ok(a.id.clone());
        }
        let suffix = crate::token::random_string(6).map_err(std::io::Error::other)?;
        let id = format!("{}-{}", self.id(), suffix);
        let path = store.path(&id).ok_or(RecordError::Unavailable)?;
        let now = SystemTime::now();
        let started_at = unix_ms(now);
        let viewport = self.viewport();
        let meta = Meta {
            version: format::VERSION,
            id: id.clone(),
            session: self.id().to_string(),
            started_at,
            start_url: self.page_info().url,
            viewport: [viewport.width, viewport.height],
            scale: self.scale(),
            masked: true,
            keyframe_every_ms: KEYFRAME_MAX_GAP.as_millis() as u32,
            server: env!("CARGO_PKG_VERSION").to_string(),
        };
        // Created here, synchronously, so that a failure is the caller's answer; the header and
        // `Meta` are on disk before anyone is told, so a listing finds the file at once.
        let file = {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path)?;
            store::write_start(&mut file, &meta)?;
            file
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let stop = CancellationToken::new();
        let dropped = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        // The first event: who started it (t = 0, before anything else queued).
        let _ = tx.try_send((
            0,
            Event::Recording {
                state: "started".into(),
                by: by.clone(),
            },
        ));
        let task = tokio::spawn(
            run_recorder(
                self.clone(),
                tokio::fs::File::from_std(file),
                started,
                rx,
                stop.clone(),
            )
            .instrument(tracing::info_span!("recorder", session_id = %self.id(), recording = %id)),
        );
        info!(session_id = %self.id(), recording = %id, by = %by.id, "recording started");
        self.audit(
            "recording.started",
            serde_json::json!({ "recording": id, "by": by.id }),
        );
        *active = Some(Active {
            id: id.clone(),
            started_at,
            started,
            by: by.name,
            events: tx,
            stop,
            task: Some(task),
            dropped,
        });
        drop(active);
        self.broadcast_recording();
        Ok(id)
    }

    /// Stops the recording in progress and waits (a bounded time) until its file is complete.
    /// Returns its id, or `None` when nothing was recording.
    pub async fn stop_recording(&self, by: Actor) -> Option<String> {
        let mut active = lock(&self.recordings().active).take()?;
        let t = active.started.elapsed().as_millis() as u32;
        // Queued after every event before it; the recorder writes it last. If the queue is full
        // the recorder still ends the file cleanly, without it.
        let _ = active.events.try_send((
            t,
            Event::Recording {
                state: "stopped".into(),
                by: by.clone(),
            },
        ));
        active.stop.cancel();
        if let Some(task) = active.task.take() {
            if tokio::time::timeout(STOP_WAIT, task).await.is_err() {
                warn!(session_id = %self.id(), recording = %active.id, "recorder did not finish in time");
            }
        }
        let dropped = active.dropped.load(Ordering::Relaxed);
        info!(session_id = %self.id(), recording = %active.id, by = %by.id, dropped, "recording stopped");
        self.audit(
            "recording.stopped",
            serde_json::json!({ "recording": active.id, "by": by.id, "droppedEvents": dropped }),
        );
        self.broadcast_recording();
        Some(active.id)
    }

    /// Queues `event` for the recording, stamped now; nothing when not recording.
    pub fn record(&self, event: Event) {
        let active = lock(&self.recordings().active);
        let Some(a) = &*active else { return };
        let t = a.started.elapsed().as_millis() as u32;
        if a.events.try_send((t, event)).is_err() {
            a.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a recording is in progress (cheap; callers skip building events otherwise).
    pub fn recording(&self) -> bool {
        lock(&self.recordings().active).is_some()
    }

    /// Records an input `p` sent. What is typed while a masked field has focus is redacted.
    pub fn record_input(&self, p: &Participant, input: &Input) {
        if !self.recording() {
            return;
        }
        let moves_focus = match input {
            Input::Mouse { kind, .. } => *kind == MouseKind::Pressed,
            Input::Key(k) => k.kind != KeyKind::KeyUp && k.key == "Tab",
            _ => false,
        };
        if moves_focus {
            self.focus_may_move();
        }
        let redact = self.masked_typing();
        let input = input_record(input, redact);
        self.record(Event::Input {
            by: p.record_actor(),
            input,
        });
    }

    /// Records something `p` asked of the session (navigate, back, a tab, a dialog answer…).
    pub fn record_action(&self, p: &Participant, action: &str, fill: impl FnOnce(&mut Event)) {
        if !self.recording() {
            return;
        }
        let mut event = Event::Action {
            by: p.record_actor(),
            action: action.to_string(),
            url: None,
            tab: None,
            accept: None,
            index: None,
            value: None,
            files: Vec::new(),
        };
        fill(&mut event);
        self.record(event);
    }

    fn broadcast_recording(&self) {
        let status = self.recording_status();
        self.broadcast(&ServerMessage::Recording { status: &status });
    }
}

/// The recorded form of an input; `redact`: a masked field has focus.
fn input_record(input: &Input, redact: bool) -> InputRecord {
    let dots = |s: &str| "•".repeat(s.chars().count());
    match input {
        Input::Mouse {
            kind,
            x,
            y,
            button,
            click_count,
            modifiers,
            ..
        } => InputRecord::Mouse {
            action: match kind {
                MouseKind::Moved => "moved",
                MouseKind::Pressed => "pressed",
                MouseKind::Released => "released",
            }
            .into(),
            x: *x,
            y: *y,
            button: match button {
                MouseButton::None => Button::None,
                MouseButton::Left => Button::Left,
                MouseButton::Middle => Button::Middle,
                MouseButton::Right => Button::Right,
            },
            click_count: *click_count,
            modifiers: *modifiers,
        },
        Input::Wheel {
            x,
            y,
            delta_x,
            delta_y,
            modifiers,
        } => InputRecord::Wheel {
            x: *x,
            y: *y,
            delta_x: *delta_x,
            delta_y: *delta_y,
            modifiers: *modifiers,
        },
        Input::Key(k) => {
            // A key that types (one character, or carrying text) is what must not be kept.
            let types = k.text.is_some() || k.key.chars().count() == 1;
            let hide = redact && types && k.key != "Enter";
            InputRecord::Key {
                action: if k.kind == KeyKind::KeyUp {
                    "up"
                } else {
                    "down"
                }
                .into(),
                key: if hide { "•".into() } else { k.key.clone() },
                code: if hide { "•".into() } else { k.code.clone() },
                text: if hide {
                    k.text.as_ref().map(|_| "•".to_string())
                } else {
                    k.text.clone()
                },
                modifiers: k.modifiers,
                redacted: hide,
            }
        }
        Input::Text(text) => InputRecord::Text {
            text: if redact { dots(text) } else { text.clone() },
            redacted: redact,
        },
        Input::Compose { text, .. } => InputRecord::Compose {
            text: if redact { dots(text) } else { text.clone() },
            redacted: redact,
        },
    }
}

/// Appends records to the file, buffered; keeps times non-decreasing.
struct FileWriter {
    out: tokio::io::BufWriter<tokio::fs::File>,
    last_t: u32,
    dirty: bool,
    scratch: Vec<u8>,
}

impl FileWriter {
    async fn write(&mut self, kind: Kind, t: u32, payload: &[u8]) -> std::io::Result<()> {
        let t = t.max(self.last_t);
        self.last_t = t;
        self.scratch.clear();
        format::write_record(&mut self.scratch, kind, t, payload)?;
        self.out.write_all(&self.scratch).await?;
        self.dirty = true;
        Ok(())
    }

    async fn event(&mut self, t: u32, event: &Event) -> std::io::Result<()> {
        let json = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        self.write(Kind::Event, t, &json).await
    }

    /// A message all viewers got, as they got it.
    async fn server_json(&mut self, t: u32, json: &str) -> std::io::Result<()> {
        match serde_json::from_str(json) {
            Ok(message) => self.event(t, &Event::Server { message }).await,
            Err(e) => {
                debug!(error = %e, "event not JSON; not recorded");
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.out.flush().await?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// The recorder: one masked-screen viewer that acknowledges at once, plus every event.
async fn run_recorder(
    session: SessionHandle,
    file: tokio::fs::File,
    started: Instant,
    mut queued: mpsc::Receiver<(u32, Event)>,
    stop: CancellationToken,
) {
    let mut w = FileWriter {
        out: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file),
        last_t: 0,
        dirty: true,
        scratch: Vec::new(),
    };
    let result = record_loop(&session, &mut w, started, &mut queued, &stop).await;
    // Whatever ended it, what was queued and the file's tail are written out.
    let mut end = async {
        let mut stopped = false;
        while let Ok((t, event)) = queued.try_recv() {
            stopped |= matches!(&event, Event::Recording { state, .. } if state == "stopped");
            w.event(t, &event).await?;
        }
        // The session ended before anyone stopped the recording: the server did.
        if !stopped {
            let t = started.elapsed().as_millis() as u32;
            let by = system_actor("server");
            let event = Event::Recording {
                state: "stopped".into(),
                by,
            };
            w.event(t, &event).await?;
        }
        w.flush().await?;
        w.out.get_ref().sync_all().await
    }
    .await;
    if let Err(e) = result {
        end = Err(e);
    }
    if let Err(e) = end {
        warn!(error = %e, "recording stopped: cannot write its file");
        // Stop it for everyone (the status would lie otherwise); the session goes on.
        if lock(&session.recordings().active).take().is_some() {
            session.broadcast_recording();
            session.audit(
                "recording.failed",
                serde_json::json!({ "error": e.to_string() }),
            );
        }
    }
}

async fn record_loop(
    session: &SessionHandle,
    w: &mut FileWriter,
    started: Instant,
    queued: &mut mpsc::Receiver<(u32, Event)>,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    // Where the session is as recording starts, as a joining viewer would learn it.
    for json in session.state_messages() {
        w.server_json(0, &json).await?;
    }
    let (mut screen, encoder) = session.screen_for(true);
    let mut events = session.events();
    let ended = session.cancelled();
    let mut pacer = Pacer::new(Instant::now());
    let mut masks_written: Option<Arc<[crate::tiles::PixelRect]>> = None;
    let mut last_keyframe = Instant::now();
    // Whether the screen changed since the last keyframe, what those updates weighed, and what
    // the last keyframe did.
    let mut since_keyframe = false;
    let mut bytes_since = 0usize;
    let mut keyframe_bytes = usize::MAX;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let ms = |at: Instant| at.saturating_duration_since(started).as_millis() as u32;
    loop {
        let latest = screen.borrow_and_update().clone();
        let keyframe_due = since_keyframe.then(|| {
            last_keyframe
                + if bytes_since >= keyframe_bytes {
                    KEYFRAME_MIN_GAP
                } else {
                    KEYFRAME_MAX_GAP
                }
        });
        if keyframe_due.is_some_and(|due| Instant::now() >= due) {
            pacer.resync();
            since_keyframe = false;
        }
        if let Some(snapshot) = &latest {
            if let Some(plan) = pacer.plan(snapshot) {
                if masks_written.as_ref() != Some(&snapshot.masks) {
                    let rects: Vec<[u32; 4]> = snapshot
                        .masks
                        .iter()
                        .map(|r| [r.x, r.y, r.w, r.h])
                        .collect();
                    let json = ServerMessage::Masks { rects: &rects }.to_json();
                    w.server_json(ms(Instant::now()), &json).await?;
                    masks_written = Some(snapshot.masks.clone());
                }
                let Some(encoded) = encoder.get(snapshot.clone(), plan.clone()).await else {
                    return Err(std::io::Error::other("screen update could not be encoded"));
                };
                let refine_only = !plan.keyframe && plan.copies.is_empty() && plan.dirty.is_empty();
                let number = pacer.next_number();
                let header = UpdateHeader {
                    flags: if plan.keyframe { flags::KEYFRAME } else { 0 }
                        | if refine_only { flags::REFINE } else { 0 },
                    ops: encoded.ops,
                    number,
                    version: plan.version,
                    width: snapshot.grid.width as u16,
                    height: snapshot.grid.height as u16,
                };
                let message = encode_update(&header, &encoded.body);
                let now = Instant::now();
                w.write(Kind::Update, ms(now), &message).await?;
                pacer.sent(snapshot, &plan, &encoded, now);
                pacer.acked(number, now);
                if plan.keyframe {
                    last_keyframe = now;
                    keyframe_bytes = message.len();
                    bytes_since = 0;
                    w.flush().await?;
                } else {
                    since_keyframe = true;
                    bytes_since += message.len();
                }
                continue;
            }
        }
        let settle = latest.as_ref().and_then(|s| pacer.settle_at(s));
        let wake = match (keyframe_due, settle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = ended.cancelled() => return Ok(()),
            changed = screen.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            Some((t, event)) = queued.recv() => w.event(t, &event).await?,
            event = events.recv() => match event {
                Ok(json) => w.server_json(ms(Instant::now()), &json).await?,
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    debug!(skipped, "recorder lagged behind events; writing the state");
                    let t = ms(Instant::now());
                    for json in session.state_messages() {
                        w.server_json(t, &json).await?;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = super::sleep_until_or_never(wake) => {}
            _ = flush.tick() => w.flush().await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::KeyEvent;

    fn key(key: &str, text: Option<&str>) -> Input {
        Input::Key(KeyEvent {
            kind: KeyKind::KeyDown,
            key: key.into(),
            code: "KeyX".into(),
            windows_virtual_key_code: 0,
            text: text.map(str::to_string),
            location: 0,
            modifiers: 0,
            auto_repeat: false,
        })
    }

    #[test]
    fn typing_in_a_masked_field_is_redacted_but_named_keys_are_kept() {
        let InputRecord::Key {
            key: k,
            text,
            redacted,
            ..
        } = input_record(&key("s", Some("s")), true)
        else {
            panic!("a key")
        };
        assert_eq!(
            (k.as_str(), text.as_deref(), redacted),
            ("•", Some("•"), true)
        );
        let InputRecord::Key {
            key: k, redacted, ..
        } = input_record(&key("Tab", None), true)
        else {
            panic!("a key")
        };
        assert_eq!((k.as_str(), redacted), ("Tab", false));
        let InputRecord::Key { key: k, text, .. } = input_record(&key("s", Some("s")), false)
        else {
            panic!("a key")
        };
        assert_eq!((k.as_str(), text.as_deref()), ("s", Some("s")));
        let InputRecord::Text { text, redacted } =
            input_record(&Input::Text("hunter2".into()), true)
        else {
            panic!("text")
        };
        assert_eq!((text.as_str(), redacted), ("•••••••", true));
    }
}
