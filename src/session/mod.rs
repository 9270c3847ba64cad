//! A cobrowsing session: one Chromium, its screen, its participants. One driver task owns the
//! browser; everyone else holds a cloneable [`SessionHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::audit::Audit;
use crate::browser::{Browser, PageHandle};
use crate::capability::{self, Claims, LinkBook, LinkEntry, MintError, Secret, TokenError};
use crate::config::Viewport;
use crate::control::{Actor, Control, ControlView, Outcome, Refusal};
use crate::encode::EncodeCache;
use crate::input::{FrameGeometry, Input, KeyKind, MouseKind};
use crate::lock;
use crate::metrics::{Histogram, Summary};
use crate::navigation::{typed_url, History};
use crate::people::{self, ChatLog, ChatMessage};
use crate::protocol::{
    AnnotationKind, ControlAction, DialogKind, HistoryAction, TabAction, MAX_TEXT_CHARS,
};
use crate::protocol::{Links, ServerMessage};
use crate::screen::{FrameSource, RawFrame, ScreenModel, ScreenWatch};
use crate::tabs::{TabInfo, Tabs};

mod driver;
mod masking;
mod recording;
pub use driver::POLL_EVERY;
use driver::{run_screen, Driver};
pub use recording::{system_actor, RecordError, RecordingStatus, KEYFRAME_MAX_GAP};

/// Input events queued between the participants and the browser. A full queue makes the sending
/// participant's reader wait (backpressure on that participant), it never drops input.
const INPUT_QUEUE: usize = 256;
/// Events (presence, navigation) buffered per participant. A participant that lags further
/// behind gets a fresh snapshot of the state instead (see `ws`).
pub const EVENT_BUFFER: usize = 64;
/// An input whose screen change has not come within this long is not timed.
const INPUT_ANSWER_WINDOW: Duration = Duration::from_secs(1);
/// Messages for one participant alone buffered; beyond, they are dropped (a popup they would
/// see late anyway).
const DIRECT_BUFFER: usize = 8;
/// Tab commands (switch, close, new) waiting for the driver; beyond, participants are told to
/// try again.
const TAB_COMMANDS: usize = 16;
/// How long a page command (history, dialog answer) may take before the participant is told.
const PAGE_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a participant may do; decided by the server from the join token, never by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Controller,
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "controller" => Some(Role::Controller),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Controller => "controller",
            Role::Viewer => "viewer",
        }
    }

    /// Whether input from this role reaches the page.
    /// How the role reads in a default display name.
    fn title(self) -> &'static str {
        match self {
            Role::Owner => "Host",
            Role::Controller => "Guest",
            Role::Viewer => "Observer",
        }
    }

    pub fn can_input(self) -> bool {
        matches!(self, Role::Owner | Role::Controller)
    }
}

/// Counters of a session, written by its tasks, read by the API.
#[derive(Default)]
pub struct Stats {
    /// Frames sent to participants (all participants together). Written by each writer task.
    pub frames_sent: AtomicU64,
    /// Bytes of screen data sent to participants. Written by each writer task.
    pub bytes_sent: AtomicU64,
    /// Screencast frames received from Chromium (changed or not). Written by the screen task.
    pub frames_in: AtomicU64,
    /// Screenshots taken as the screen while the screencast is broken (see [`QUIET_CHECK`]).
    /// Written by the screen task.
    pub frames_polled: AtomicU64,
    /// Checks of a quiet screencast made. Written by the driver.
    pub screencast_checks: AtomicU64,
    /// A press, key or text input → the arrival of the first frame that changed the screen
    /// after it (Chromium's share: it includes the page's own reaction). Written by the screen
    /// task; inputs that change nothing within [`INPUT_ANSWER_WINDOW`] are not counted.
    pub input_ms: Histogram,
    /// When the oldest input not yet answered by a changed frame was queued.
    pub pending_input: Mutex<Option<Instant>>,
    /// Whether the screencast is broken and the screen comes from screenshots: the screen task
    /// then drops screencast frames (which would bring back stale content). Written by the driver.
    pub polling: AtomicBool,
    /// A frame's arrival → its screen version published (decoded and compared). Written by the
    /// screen task.
    pub screen_ms: Histogram,
    /// A frame's arrival → the first update carrying it written to a participant's socket, for
    /// every participant: the server's share of the latency, waits for slow viewers included.
    /// Written by each writer task.
    pub send_ms: Histogram,
}

/// The server's share of the latency, for the API.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInfo {
    pub input: Summary,
    pub screen: Summary,
    pub send: Summary,
}

/// How one participant's link performs, written by its writer task.
#[derive(Debug)]
pub struct LinkStats {
    /// Smoothed round trip of an update, ms; `u32::MAX` before the first.
    pub rtt_ms: AtomicU32,
    /// Age of the newest screen the participant painted when a newer one exists, ms.
    pub lag_ms: AtomicU32,
    /// Current lossy quality level (0 high, 1 medium, 2 low).
    pub quality: AtomicU32,
    /// Updates and bytes of screen data sent.
    pub updates: AtomicU64,
    pub bytes: AtomicU64,
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats {
            rtt_ms: AtomicU32::new(u32::MAX),
            lag_ms: AtomicU32::new(0),
            quality: AtomicU32::new(0),
            updates: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

/// A participant's link figures, for the API and the owner's viewer.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkInfo {
    pub id: String,
    pub role: &'static str,
    pub rtt_ms: Option<u32>,
    pub lag_ms: u32,
    pub quality: &'static str,
    pub updates: u64,
    pub bytes: u64,
}

/// Mutable state behind a short lock; never held across an `.await`.
/// A connected participant as the session keeps it.
struct Member {
    role: Role,
    name: String,
    color: &'static str,
    /// Unix time in milliseconds.
    joined_at: u64,
    /// Participant number, for ordering (ids are `p{number}`).
    number: u64,
    link: Arc<LinkStats>,
    /// Fired when the owner removes this participant.
    removed: CancellationToken,
    /// Messages for this participant alone (a `<select>` popup they opened).
    direct: mpsc::Sender<Arc<str>>,
    /// Id of the join link they came in with (revoked when they are removed).
    grant: String,
}

impl Member {
    fn entry(&self, id: &str) -> PresenceEntry {
        PresenceEntry {
            id: id.to_string(),
            name: self.name.clone(),
            color: self.color,
            role: self.role.as_str(),
            joined_at: self.joined_at,
        }
    }
}

/// Participants' pointers by id, in page CSS pixels.
pub type Pointers = std::collections::BTreeMap<String, (f64, f64)>;

/// A participant as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEntry {
    pub id: String,
    pub name: String,
    pub color: &'static str,
    pub role: &'static str,
    /// Unix time in milliseconds.
    pub joined_at: u64,
}

/// The page as participants see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    /// URL of the main frame.
    pub url: String,
    pub title: String,
    /// Whether the main frame is loading.
    pub loading: bool,
    pub can_go_back: bool,
    pub can_go_forward: bool,
}

impl PageInfo {
    fn set_history(&mut self, h: History) {
        self.can_go_back = h.can_go_back;
        self.can_go_forward = h.can_go_forward;
        if !h.title.is_empty() {
            self.title = h.title;
        }
    }
}

/// A JavaScript dialog the page waits on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenDialog {
    pub id: u32,
    pub kind: DialogKind,
    pub message: String,
    /// The prompt's preset answer ("" for other kinds).
    pub default_prompt: String,
    /// Origin of the frame that opened it (dialogs from another origin are a phishing trick: the
    /// viewer says whose it is).
    pub origin: String,
}

/// What a participant asked of the browser (tabs, page size); carried out by the driver, which
/// owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Switch(u32),
    Close(u32),
    New,
    /// The owner's new page size.
    Viewport(Viewport),
}

/// Downloads a session keeps (the oldest finished file is deleted beyond).
const MAX_DOWNLOADS: usize = 20;
/// Downloads that may run at once; more are cancelled.
const MAX_RUNNING_DOWNLOADS: usize = 5;

/// A file the page downloaded, as participants see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DownloadInfo {
    pub id: u32,
    pub name: String,
    /// Bytes (received so far while `started`).
    pub size: u64,
    /// `started`, `done` or `failed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A download and Chromium's name for it.
#[derive(Debug, Clone)]
struct Download {
    guid: String,
    info: DownloadInfo,
}

/// A file field of the page waiting for files.
#[derive(Clone)]
struct OpenChooser {
    id: u32,
    /// The field, for `DOM.setFileInputFiles`, in this tab's current document.
    node: i64,
    tab: PageHandle,
    /// The participant it was offered to.
    opener: String,
}

/// A `<select>` popup the page opened, waiting for a choice.
#[derive(Debug, Clone, PartialEq)]
struct OpenSelect {
    /// The page script's number for it.
    id: u32,
    /// The isolated world to answer in.
    context: crate::browser::ExecutionContextId,
    /// The participant it is shown to.
    opener: String,
    /// A colour/date/time picker rather than a `<select>`.
    picker: bool,
}

struct State {
    /// Connected participants by id. Written by `join`, `rename` and `Participant::drop`.
    participants: HashMap<String, Member>,
    /// Text messages between participants, kept for late joiners.
    chat: ChatLog,
    /// Numbers participant ids; only grows.
    next_participant: u64,
    /// The page of the active tab as participants see it (URL, title, loading, history).
    /// Written by the driver.
    page: PageInfo,
    /// The browser's tabs and the active one. Written by the driver.
    tabs: Tabs,
    /// The JavaScript dialog the active tab's page waits on, if any. Written by the driver.
    dialog: Option<OpenDialog>,
    /// Numbers dialogs, so an answer meant for an earlier one is not applied to the next.
    next_dialog: u32,
    /// Who answered the open dialog (their name), until Chromium says it closed.
    dialog_answered_by: Option<String>,
    /// The `<select>` popup open in the page, shown to the participant who opened it.
    select: Option<OpenSelect>,
    /// The file field waiting for files, offered to the participant who clicked it.
    chooser: Option<OpenChooser>,
    /// Numbers file choosers (upload URLs name them).
    next_chooser: u32,
    /// Uploads so far (each gets its own directory).
    uploads: u64,
    /// The page's downloads, oldest first (at most [`MAX_DOWNLOADS`]).
    downloads: Vec<Download>,
    /// Numbers downloads.
    next_download: u32,
    /// Who last pressed a mouse button or key on the page: the one a popup belongs to.
    last_actor: Option<String>,
    /// Why the session ended; set once, before `cancel` fires.
    end_reason: Option<String>,
}

/// Everything the tasks of a session share. Lives as long as any handle or participant.
struct Shared {
    id: String,
    created: SystemTime,
    start_url: String,
    /// The page size; the owner may change it (written by the driver once applied).
    viewport: Mutex<Viewport>,
    /// Device pixels per CSS pixel of the screen (fixed per session).
    scale: f64,
    /// The join links minted for this session; a link is revoked when its participant is
    /// removed (a default link is then replaced) or through the API.
    links: Mutex<LinkBook>,
    /// Signs join links (the server's).
    secret: Secret,
    /// How long new default links admit people.
    link_ttl: Duration,
    /// The deployment's audit log.
    audit: Arc<Audit>,
    /// Refused join attempts that may be audited, and how many were not since the last one.
    refusals: Mutex<(people::RateLimit, u64)>,
    /// The same for requests the egress policy blocked.
    blocks: Mutex<(people::RateLimit, u64)>,
    /// Bumped when a join link changes; owners' writers send the new links.
    links_changed: watch::Sender<u64>,
    /// Where each participant points, in page CSS pixels (latest wins: state, not events).
    pointers: watch::Sender<Pointers>,
    /// Who may act on the page.
    control: Mutex<Control>,
    /// The page of the current browser: asked things (the cursor under a pointer) and told where
    /// to go without going through the driver. Replaced when the driver restarts the browser.
    page: Mutex<PageHandle>,
    /// Scheme/host/port join links start with.
    links_base: String,
    max_participants: usize,
    screen: ScreenWatch,
    /// The masked screen and who gets it (see `masking`).
    masking: masking::Masking,
    /// Where recordings go and the one in progress (see `recording`).
    recordings: recording::Recordings,
    /// Updates encoded for the latest versions, shared by every participant.
    encoder: EncodeCache,
    input: mpsc::Sender<Input>,
    /// Tab commands for the driver.
    tab_commands: mpsc::Sender<Command>,
    /// JSON events for every participant (serialised once).
    events: broadcast::Sender<Arc<str>>,
    /// Number of connected participants; the driver starts/stops the screencast on it.
    participant_count: watch::Sender<usize>,
    state: Mutex<State>,
    stats: Stats,
    /// Where uploaded files are kept for the page; removed with the session.
    files: tempfile::TempDir,
    /// Largest upload, bytes (0: none).
    max_upload_bytes: u64,
    /// Largest download, bytes (0: none).
    max_download_bytes: u64,
    /// Process id of the current browser (0: unknown); replaced on a restart.
    browser_pid: AtomicU32,
    /// Browser restarts after a crash (renderer or whole browser).
    restarts: AtomicU32,
    /// Requests the egress proxy blocked; the proxy's own counter (it writes, the API reads).
    blocked_requests: Arc<AtomicU64>,
    /// The server-wide figures of `/metrics`.
    metrics: Arc<crate::metrics::ServerMetrics>,
    /// Set when the server starts shutting down: what participants are told.
    shutdown_notice: std::sync::OnceLock<String>,
    /// Fired to end the session (API, idle, browser death, server shutdown).
    cancel: CancellationToken,
    /// The server's shutdown token (the parent of `cancel`).
    server_shutdown: CancellationToken,
    /// Fired by the driver once the browser is closed and the session unregistered.
    finished: CancellationToken,
}

/// A cloneable reference to a live (or just ended) session.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

/// A snapshot of a session for the API.
pub struct SessionInfo {
    pub id: String,
    pub created: SystemTime,
    pub start_url: String,
    pub url: String,
    pub viewport: Viewport,
    pub scale: f64,
    pub participants: usize,
    /// Everyone connected, in join order.
    pub people: Vec<PresenceEntry>,
    pub control: ControlView,
    /// Screen versions made (frames that changed something).
    pub frames_produced: u32,
    /// Screencast frames received from Chromium.
    pub frames_in: u64,
    /// Screenshots taken while the screencast was broken.
    pub frames_polled: u64,
    /// Checks of a quiet screencast made.
    pub screencast_checks: u64,
    /// Whether the screen comes from screenshots (the screencast is broken) right now.
    pub polling: bool,
    pub participant_links: Vec<LinkInfo>,
    pub pipeline: PipelineInfo,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub browser_pid: Option<u32>,
    /// Times the browser or its renderer crashed and was restarted.
    pub restarts: u32,
    /// Requests of the page the egress policy blocked.
    pub blocked_requests: u64,
    pub page: PageInfo,
    pub tabs: Vec<TabInfo>,
    pub links: Links,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("participant limit reached")]
    Full,
    #[error("session ended")]
    Ended,
    #[error("the link was revoked")]
    Revoked,
}

/// What the registry needs to build a session around a launched browser.
pub struct NewSession {
    pub id: String,
    pub start_url: String,
    pub viewport: Viewport,
    pub scale: f64,
    pub secret: Secret,
    /// The default links, one per role, minted by the registry.
    pub links: LinkBook,
    /// Lifetime of the default links minted at creation (and of their replacements).
    pub link_ttl: Duration,
    pub audit: Arc<Audit>,
    pub links_base: String,
    pub max_participants: usize,
    pub idle_timeout: Duration,
    pub close_grace: Duration,
    pub control: crate::control::Policy,
    pub control_idle: Duration,
    pub max_upload_bytes: u64,
    pub max_download_bytes: u64,
    /// The session's egress proxy, already running (the browser was launched through it). It
    /// stops when the session's driver ends.
    pub egress: crate::egress::EgressProxy,
    /// What the proxy blocked, for the driver (explanation page) and later the audit log.
    pub egress_reports: mpsc::Receiver<crate::egress::BlockedRequest>,
    /// Who sees masked elements in clear.
    pub mask_reveal: crate::mask::Reveal,
    /// Where recordings go (`None`: no data directory, recording unavailable).
    pub recordings: Option<Arc<crate::recording::store::Store>>,
    /// The server-wide figures of `/metrics` this session adds to.
    pub metrics: Arc<crate::metrics::ServerMetrics>,
}

impl SessionHandle {
    /// Wires a session around its browser and starts the driver task. `on_finished` runs once the
    /// browser is closed (the registry unregisters the session there).
    pub(crate) async fn start(
        new: NewSession,
        browser: Browser,
        server_shutdown: &CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
        on_finished: impl FnOnce(&str) + Send + 'static,
    ) -> Result<SessionHandle, crate::browser::BrowserError> {
        let (model, screen) = ScreenModel::new();
        let (masked_model, masked_screen) = ScreenModel::new();
        let (mask_sink, mask_reports) = crate::mask::MaskSink::new();
        let (frames_tx, frames_rx) = watch::channel(None);
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (tab_tx, tab_rx) = mpsc::channel(TAB_COMMANDS);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let cancel = server_shutdown.child_token();
        let files = tempfile::Builder::new()
            .prefix("cobrowse-files-")
            .tempdir()
            .map_err(crate::browser::BrowserError::Profile)?;
        let shared = Arc::new(Shared {
            id: new.id,
            created: SystemTime::now(),
            start_url: new.start_url.clone(),
            viewport: Mutex::new(new.viewport),
            scale: new.scale,
            links: Mutex::new(new.links),
            secret: new.secret,
            link_ttl: new.link_ttl,
            audit: new.audit,
            refusals: Mutex::new((people::RateLimit::new(20.0, 1.0, Instant::now()), 0)),
            blocks: Mutex::new((people::RateLimit::new(50.0, 5.0, Instant::now()), 0)),
            links_changed: watch::Sender::new(0),
            pointers: watch::Sender::new(Pointers::new()),
            control: Mutex::new(Control::new(new.control, new.control_idle, Instant::now())),
            page: Mutex::new(browser.page()),
            links_base: new.links_base,
            max_participants: new.max_participants,
            screen,
            masking: masking::Masking::new(new.mask_reveal, masked_screen, mask_sink),
            recordings: recording::Recordings::new(new.recordings),
            encoder: EncodeCache::default(),
            input: input_tx,
            tab_commands: tab_tx,
            events,
            participant_count: watch::Sender::new(0),
            state: Mutex::new(State {
                participants: HashMap::new(),
                chat: ChatLog::default(),
                next_participant: 1,
                page: PageInfo {
                    url: new.start_url.clone(),
                    ..PageInfo::default()
                },
                tabs: Tabs::default(),
                dialog: None,
                next_dialog: 1,
                dialog_answered_by: None,
                select: None,
                chooser: None,
                next_chooser: 1,
                uploads: 0,
                downloads: Vec::new(),
                next_download: 1,
                last_actor: None,
                end_reason: None,
            }),
            stats: Stats::default(),
            files,
            max_upload_bytes: new.max_upload_bytes,
            max_download_bytes: new.max_download_bytes,
            browser_pid: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
            blocked_requests: new.egress.blocked_counter(),
            metrics: new.metrics,
            shutdown_notice: std::sync::OnceLock::new(),
            cancel: cancel.clone(),
            server_shutdown: server_shutdown.clone(),
            finished: CancellationToken::new(),
        });
        let handle = SessionHandle { shared };
        let screen_task = tokio::spawn(
            run_screen(
                model,
                masking::Masker::new(masked_model, mask_reports, handle.shared.scale),
                frames_rx,
                handle.clone(),
            )
            .instrument(tracing::info_span!("screen", session_id = %handle.id())),
        );
        let driver = Driver::new(
            handle.clone(),
            new.idle_timeout,
            new.close_grace,
            frames_tx,
            tab_rx,
            new.egress_reports,
        );
        let egress = new.egress;
        // Listeners are registered before anything can paint or navigate.
        let attached = match driver.attach(browser, input_rx).await {
            Ok(attached) => attached,
            Err(e) => {
                screen_task.abort();
                return Err(e);
            }
        };
        attached.navigate(&new.start_url);
        let span = tracing::info_span!("session", session_id = %handle.id());
        tracker.spawn(
            async move {
                driver.run(attached, screen_task).await;
                // The recording ends with the session, complete, before the session is gone.
                driver.handle.stop_recording(system_actor("server")).await;
                // The browser is closed: nothing uses the proxy any more.
                drop(egress);
                on_finished(driver.handle.id());
                driver.handle.shared.finished.cancel();
            }
            .instrument(span),
        );
        Ok(handle)
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// The role and link id a join token grants: signed by this server, for this session, not
    /// expired, and a live link of this session's book.
    pub fn admit(&self, token: &str) -> Result<(Role, String), TokenError> {
        let claims = capability::verify(&self.shared.secret, token, SystemTime::now())?;
        if claims.session != self.shared.id {
            return Err(TokenError::OtherSession);
        }
        lock(&self.shared.links).admits(&claims)?;
        Ok((claims.role, claims.link))
    }

    fn url_of(&self, entry: &LinkEntry) -> String {
        let token = capability::mint(
            &self.shared.secret,
            &Claims {
                session: self.shared.id.clone(),
                link: entry.id.clone(),
                role: entry.role,
                expires: entry.expires,
            },
        );
        format!(
            "{}/s/{}#token={token}",
            self.shared.links_base, self.shared.id
        )
    }

    /// The current default link of each role (what Share shows the owner).
    pub fn links(&self) -> Links {
        let book = lock(&self.shared.links);
        let link = |role| {
            book.default_of(role)
                .map(|e| self.url_of(e))
                .unwrap_or_default()
        };
        Links {
            owner: link(Role::Owner),
            controller: link(Role::Controller),
            viewer: link(Role::Viewer),
        }
    }

    /// When the earliest default link stops admitting people (Unix seconds).
    pub fn default_links_expire(&self) -> u64 {
        let book = lock(&self.shared.links);
        [Role::Owner, Role::Controller, Role::Viewer]
            .into_iter()
            .filter_map(|r| book.default_of(r).map(|e| e.expires))
            .min()
            .unwrap_or(0)
    }

    fn link_view(&self, e: &LinkEntry) -> serde_json::Value {
        let live = !e.revoked && e.expires > capability::unix_secs(SystemTime::now());
        serde_json::json!({
            "id": e.id,
            "role": e.role.as_str(),
            "label": e.label,
            "expiresAt": e.expires,
            "revoked": e.revoked,
            "default": e.default,
            "url": live.then(|| self.url_of(e)),
        })
    }

    /// Every link minted for the session, for the API (URLs of live links only).
    pub fn link_views(&self) -> Vec<serde_json::Value> {
        let book = lock(&self.shared.links);
        book.entries().iter().map(|e| self.link_view(e)).collect()
    }

    /// A new link for `role`, recorded in the audit log as minted `by`.
    pub fn mint_link(
        &self,
        role: Role,
        ttl: Duration,
        label: Option<String>,
        by: &str,
    ) -> Result<serde_json::Value, MintError> {
        let entry = lock(&self.shared.links).mint(role, ttl, label, false, SystemTime::now())?;
        self.audit(
            "link.minted",
            serde_json::json!({"link": entry.id, "role": role.as_str(), "expiresAt": entry.expires, "by": by}),
        );
        Ok(self.link_view(&entry))
    }

    /// Revokes a link: it admits nobody from now on, whoever joined with it is disconnected, and
    /// a revoked default link is replaced by a fresh one (owners get the new links). `false`
    /// for an unknown link.
    pub fn revoke_link(&self, link: &str, by: &str) -> bool {
        let Some(entry) = lock(&self.shared.links).revoke(link) else {
            return false;
        };
        let disconnected: Vec<String> = {
            let state = self.state();
            state
                .participants
                .iter()
                .filter(|(_, m)| m.grant == entry.id)
                .map(|(id, m)| {
                    m.removed.cancel();
                    id.clone()
                })
                .collect()
        };
        let replaced = entry.default && self.replace_default(entry.role);
        self.audit(
            "link.revoked",
            serde_json::json!({"link": entry.id, "role": entry.role.as_str(), "by": by, "disconnected": disconnected, "replaced": replaced}),
        );
        info!(session_id = %self.id(), link = %entry.id, role = entry.role.as_str(), disconnected = disconnected.len(), "join link revoked");
        true
    }

    /// Mints a new default link for `role`; `false` if the book is full (revoked links keep
    /// their place, so the role then has no working default link; logged).
    fn replace_default(&self, role: Role) -> bool {
        let minted = lock(&self.shared.links).mint(
            role,
            self.shared.link_ttl,
            None,
            true,
            SystemTime::now(),
        );
        match minted {
            Ok(_) => {
                self.shared.links_changed.send_modify(|n| *n += 1);
                true
            }
            Err(e) => {
                warn!(session_id = %self.id(), role = role.as_str(), error = %e, "no new default link");
                false
            }
        }
    }

    /// Records a refused join link, at most a burst of 20 then one a second per session (a
    /// guesser must not fill the disk); the next record says how many were left out.
    pub fn audit_refusal(&self, reason: TokenError) {
        self.audit_bounded(
            &self.shared.refusals,
            "link.refused",
            serde_json::json!({ "reason": reason.to_string() }),
        );
    }

    /// Records a request the egress policy blocked, at most a burst of 50 then 5 a second per
    /// session (a page can ask for thousands); the next record says how many were left out.
    pub(crate) fn audit_blocked(&self, report: &crate::egress::BlockedRequest) {
        self.audit_bounded(
            &self.shared.blocks,
            "request.blocked",
            serde_json::json!({
                "host": report.host,
                "port": report.port,
                "address": report.address.map(|a| a.to_string()),
                "reason": report.reason,
                "kind": report.kind.as_str(),
                "resource": report.resource,
            }),
        );
    }

    fn audit_bounded(
        &self,
        limiter: &Mutex<(people::RateLimit, u64)>,
        event: &'static str,
        mut fields: serde_json::Value,
    ) {
        let allowed = {
            let mut r = lock(limiter);
            if r.0.allow(Instant::now()) {
                Some(std::mem::take(&mut r.1))
            } else {
                r.1 += 1;
                None
            }
        };
        if let (Some(suppressed), Some(map)) = (allowed, fields.as_object_mut()) {
            map.insert("suppressedBefore".into(), suppressed.into());
            self.audit(event, fields);
        }
    }

    /// Records an audit event of this session.
    pub fn audit(&self, event: &'static str, mut fields: serde_json::Value) {
        if let Some(map) = fields.as_object_mut() {
            map.insert("session".into(), self.shared.id.clone().into());
        }
        self.shared.audit.record(event, fields);
    }

    pub fn viewport(&self) -> Viewport {
        *lock(&self.shared.viewport)
    }

    /// Device pixels per CSS pixel of the screen.
    pub fn scale(&self) -> f64 {
        self.shared.scale
    }

    /// The owner's new page size; applied by the driver, then everyone is told (`viewport`).
    pub fn resize(&self, p: &Participant, viewport: Viewport) -> Result<(), String> {
        if p.role() != Role::Owner {
            return Err("only the session owner can change the page size".into());
        }
        let viewport = viewport.validate()?.validate_scaled(self.shared.scale)?;
        info!(session_id = %self.id(), width = viewport.width, height = viewport.height, "page size change asked");
        self.shared
            .tab_commands
            .try_send(Command::Viewport(viewport))
            .map_err(|_| "the browser is busy; try again".to_string())
    }

    pub fn url(&self) -> String {
        self.state().page.url.clone()
    }

    pub fn screen(&self) -> ScreenWatch {
        self.shared.screen.clone()
    }

    /// Every participant's link figures.
    pub fn link_infos(&self) -> Vec<LinkInfo> {
        link_infos(&self.state())
    }

    /// Updates encoded for this session's latest versions.
    pub fn encoder(&self) -> &EncodeCache {
        &self.shared.encoder
    }

    /// Geometry of the current screen, for mapping input coordinates.
    pub fn geometry(&self) -> FrameGeometry {
        match self.shared.screen.borrow().as_ref() {
            Some(snapshot) => snapshot.geometry,
            None => FrameGeometry::identity(self.viewport()),
        }
    }

    pub fn events(&self) -> broadcast::Receiver<Arc<str>> {
        self.shared.events.subscribe()
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn participant_count(&self) -> usize {
        *self.shared.participant_count.borrow()
    }

    /// Waits until nobody is connected (at once if nobody is).
    pub async fn wait_empty(&self) {
        let mut count = self.shared.participant_count.subscribe();
        let _ = count.wait_for(|&n| n == 0).await;
    }

    /// The server-wide figures this session adds to.
    pub fn metrics(&self) -> &crate::metrics::ServerMetrics {
        &self.shared.metrics
    }

    /// Tells everyone connected (and whoever joins from now on) that the server is going away
    /// and when the session will end at the latest.
    pub fn announce_shutdown(&self, within: Duration) {
        let message = format!(
            "This server is shutting down: the session ends when everyone has left, or in {} s at the latest.",
            within.as_secs()
        );
        let message = self.shared.shutdown_notice.get_or_init(|| message);
        self.broadcast(&shutdown_notice(message));
    }

    /// What this session added to the server-wide counters, for when it is gone.
    pub fn totals(&self) -> crate::metrics::Retired {
        let stats = &self.shared.stats;
        crate::metrics::Retired {
            frames_in: stats.frames_in.load(Ordering::Relaxed),
            frames_sent: stats.frames_sent.load(Ordering::Relaxed),
            bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
            crashes: u64::from(self.shared.restarts.load(Ordering::Relaxed)),
            blocked_requests: self.shared.blocked_requests.load(Ordering::Relaxed),
        }
    }

    /// Queues input for the page. Waits while the queue is full; fails only once the session ended.
    pub async fn send_input(&self, input: Input) -> Result<(), JoinError> {
        let discrete = match &input {
            Input::Mouse { kind, .. } => *kind == MouseKind::Pressed,
            Input::Key(key) => key.kind != KeyKind::KeyUp,
            Input::Text(_) | Input::Compose { .. } => true,
            Input::Wheel { .. } => false,
        };
        if discrete {
            // The first input the screen has not answered yet starts the clock.
            let mut pending = lock(&self.shared.stats.pending_input);
            if pending.is_none_or(|at| at.elapsed() > INPUT_ANSWER_WINDOW) {
                *pending = Some(Instant::now());
            }
        }
        self.shared
            .input
            .send(input)
            .await
            .map_err(|_| JoinError::Ended)
    }

    /// Fired when the session ends.
    pub fn cancelled(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }

    /// Whether the session ends because the whole server shuts down.
    pub fn server_shutting_down(&self) -> bool {
        self.shared.server_shutdown.is_cancelled()
    }

    pub fn end_reason(&self) -> String {
        match self.state().end_reason.clone() {
            Some(reason) => reason,
            None if self.server_shutting_down() => "the server is shutting down".to_string(),
            None => "the session ended".to_string(),
        }
    }

    /// Ends the session (idempotent). The first reason given wins.
    pub fn end(&self, reason: &str) {
        {
            let mut state = self.state();
            if state.end_reason.is_none() {
                state.end_reason = Some(reason.to_string());
            }
        }
        self.shared.cancel.cancel();
    }

    /// Waits until the browser is closed, at most `limit`. Returns whether it finished.
    pub async fn wait_finished(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.shared.finished.cancelled())
            .await
            .is_ok()
    }

    pub fn info(&self) -> SessionInfo {
        let (participants, people, url, links) = {
            let state = self.state();
            (
                state.participants.len(),
                presence(&state),
                state.page.url.clone(),
                link_infos(&state),
            )
        };
        SessionInfo {
            id: self.shared.id.clone(),
            created: self.shared.created,
            start_url: self.shared.start_url.clone(),
            url,
            viewport: self.viewport(),
            scale: self.shared.scale,
            participants,
            people,
            control: self.control(),
            frames_produced: current_version(&self.shared.screen),
            frames_in: self.shared.stats.frames_in.load(Ordering::Relaxed),
            frames_polled: self.shared.stats.frames_polled.load(Ordering::Relaxed),
            screencast_checks: self.shared.stats.screencast_checks.load(Ordering::Relaxed),
            polling: self.shared.stats.polling.load(Ordering::Relaxed),
            participant_links: links,
            pipeline: PipelineInfo {
                input: self.shared.stats.input_ms.summary(),
                screen: self.shared.stats.screen_ms.summary(),
                send: self.shared.stats.send_ms.summary(),
            },
            frames_sent: self.shared.stats.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.shared.stats.bytes_sent.load(Ordering::Relaxed),
            browser_pid: self.browser_pid(),
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            blocked_requests: self.shared.blocked_requests.load(Ordering::Relaxed),
            page: self.page_info(),
            tabs: self.tabs().0,
            links: self.links(),
        }
    }

    /// Adds a participant under `name` (cleaned; a default from the role when absent or empty).
    /// The returned guard removes it when dropped.
    /// Adds a participant who came in with join link `grant` from `remote` (for the audit log).
    pub fn join(
        &self,
        role: Role,
        name: Option<&str>,
        grant: &str,
        remote: Option<std::net::IpAddr>,
    ) -> Result<Participant, JoinError> {
        if self.shared.cancel.is_cancelled() {
            return Err(JoinError::Ended);
        }
        let (participant, count, entry) = {
            let mut state = self.state();
            // Checked again under the state lock: a revocation between the token check and here
            // has either already cancelled everyone in the list, or is seen now.
            // (`revoke_link` takes the links lock and releases it before the state lock.)
            if lock(&self.shared.links)
                .get(grant)
                .is_none_or(|e| e.revoked)
            {
                return Err(JoinError::Revoked);
            }
            if state.participants.len() >= self.shared.max_participants {
                return Err(JoinError::Full);
            }
            let number = state.next_participant;
            state.next_participant += 1;
            let id = format!("p{number}");
            let name = name
                .and_then(people::clean_name)
                .unwrap_or_else(|| format!("{} {number}", role.title()));
            let color = people::pick_color(state.participants.values().map(|m| m.color), number);
            let (direct_tx, direct_rx) = mpsc::channel(DIRECT_BUFFER);
            let member = Member {
                role,
                name: name.clone(),
                color,
                joined_at: unix_ms(),
                number,
                link: Arc::new(LinkStats::default()),
                removed: CancellationToken::new(),
                direct: direct_tx,
                grant: grant.to_string(),
            };
            let entry = member.entry(&id);
            let participant = Participant {
                session: self.clone(),
                id: id.clone(),
                role,
                name,
                color,
                link: member.link.clone(),
                removed: member.removed.clone(),
                direct: Mutex::new(Some(direct_rx)),
                typed: InputCounts::default(),
            };
            state.participants.insert(id, member);
            (participant, state.participants.len(), entry)
        };
        self.shared.participant_count.send_replace(count);
        self.broadcast(&ServerMessage::Joined {
            participant: &entry,
        });
        self.broadcast_presence();
        info!(session_id = %self.id(), participant = %participant.id, role = role.as_str(), "participant joined");
        self.audit(
            "participant.joined",
            serde_json::json!({
                "participant": participant.id,
                "name": participant.name,
                "role": role.as_str(),
                "link": grant,
                "remote": remote.map(|a| a.to_string()),
            }),
        );
        Ok(participant)
    }

    /// Everyone connected, in join order.
    pub fn presence(&self) -> Vec<PresenceEntry> {
        presence(&self.state())
    }

    fn broadcast_presence(&self) {
        let participants = self.presence();
        self.broadcast(&ServerMessage::Presence {
            count: participants.len(),
            participants: &participants,
        });
    }

    /// Changes a participant's display name; `None` if the name is empty once cleaned.
    pub fn rename(&self, id: &str, raw: &str) -> Option<String> {
        let name = people::clean_name(raw)?;
        {
            let mut state = self.state();
            let member = state.participants.get_mut(id)?;
            member.name = name.clone();
        }
        self.broadcast_presence();
        Some(name)
    }

    /// Posts a chat message from participant `id` (text already cleaned) to everyone.
    pub fn post_chat(&self, id: &str, text: String) -> Option<Arc<ChatMessage>> {
        let message = {
            let mut state = self.state();
            let (name, color) = {
                let m = state.participants.get(id)?;
                (m.name.clone(), m.color)
            };
            state.chat.post(id, &name, color, text, unix_ms())
        };
        self.broadcast(&ServerMessage::Chat(&message));
        Some(message)
    }

    /// The chat so far (the last [`people::CHAT_HISTORY`] messages).
    pub fn chat_history(&self) -> Vec<Arc<ChatMessage>> {
        self.state().chat.history()
    }

    /// Removes a participant: their connection is closed and the join link of their role is
    /// replaced, so the link they used no longer works (the owner gets the new links). Others of
    /// that role stay connected. The owner cannot be removed.
    pub fn remove(&self, id: &str, by: &str) -> Result<(), RemoveError> {
        let (role, grant) = {
            let state = self.state();
            let member = state.participants.get(id).ok_or(RemoveError::NotFound)?;
            if member.role == Role::Owner {
                return Err(RemoveError::Owner);
            }
            member.removed.cancel();
            (member.role, member.grant.clone())
        };
        info!(session_id = %self.id(), participant = %id, role = role.as_str(), "participant removed; the link they used is revoked");
        self.audit(
            "participant.removed",
            serde_json::json!({ "participant": id, "role": role.as_str(), "by": by }),
        );
        self.revoke_link(&grant, by);
        Ok(())
    }

    /// The control state as participants see it.
    pub fn control(&self) -> ControlView {
        lock(&self.shared.control).view()
    }

    /// Whether `p` may send input now (an allowed input keeps their control from idling out).
    pub fn may_act(&self, p: &Participant) -> Result<(), Refusal> {
        lock(&self.shared.control).may_act(p.actor(), Instant::now())
    }

    /// A control request, grant, denial, release, take-back or policy change from `p`;
    /// everyone is told the new state.
    pub fn control_action(&self, p: &Participant, action: &ControlAction) -> Result<(), Refusal> {
        let now = Instant::now();
        let outcome = {
            let mut c = lock(&self.shared.control);
            let actor = p.actor();
            match action {
                ControlAction::Request => c.request(actor, now)?,
                ControlAction::Grant { id } => c.grant(actor, id, now)?,
                ControlAction::Deny { id } => c.deny(actor, id)?,
                ControlAction::Release => c.release(actor),
                ControlAction::Take => c.take(actor, now)?,
                ControlAction::Policy { policy } => c.set_policy(actor, *policy, now)?,
            }
        };
        if outcome != Outcome::Unchanged {
            let view = self.control();
            self.audit(
                "control.changed",
                serde_json::json!({
                    "participant": p.id(),
                    "action": action.name(),
                    "policy": view.policy.as_str(),
                    "holder": view.holder,
                }),
            );
        }
        self.control_changed(outcome);
        Ok(())
    }

    /// Releases control from an idle holder; called by the driver every second.
    fn control_tick(&self) {
        let outcome = lock(&self.shared.control).tick(Instant::now());
        if outcome == Outcome::Changed {
            info!(session_id = %self.id(), "control released: its holder was idle");
            self.audit(
                "control.changed",
                serde_json::json!({ "action": "idle-release" }),
            );
        }
        self.control_changed(outcome);
    }

    fn control_changed(&self, outcome: Outcome) {
        let denied = match &outcome {
            Outcome::Unchanged => return,
            Outcome::Changed => None,
            Outcome::Denied(id) => Some(id.as_str()),
        };
        let state = self.control();
        self.broadcast(&ServerMessage::Control {
            state: &state,
            denied,
        });
    }

    /// The cursor keyword the page shows at viewport point (`x`, `y`) (CSS pixels); `None` when
    /// the page does not answer within 500 ms.
    pub async fn cursor_at(&self, x: f64, y: f64) -> Option<&'static str> {
        let page = self.page();
        let probe = page.cursor_at(x, y);
        match tokio::time::timeout(Duration::from_millis(500), probe).await {
            Ok(Ok(raw)) => Some(crate::input::cursor_keyword(&raw)),
            Ok(Err(e)) => {
                debug!(error = %e, "cursor probe failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Broadcasts part of an annotation stroke (page points) drawn by participant `id`.
    pub fn annotate(&self, id: &str, stroke: u32, kind: AnnotationKind, points: &[[f64; 2]]) {
        self.broadcast(&ServerMessage::Annotation {
            id,
            stroke,
            kind,
            points,
        });
    }

    /// Moves participant `id`'s pointer to page point `at`, or hides it (`None`).
    pub fn point(&self, id: &str, at: Option<(f64, f64)>) {
        self.shared.pointers.send_if_modified(|p| match at {
            Some(at) => p.insert(id.to_string(), at) != Some(at),
            None => p.remove(id).is_some(),
        });
    }

    pub fn pointers(&self) -> watch::Receiver<Pointers> {
        self.shared.pointers.subscribe()
    }

    /// Changes whenever a join link is replaced.
    pub fn links_changed(&self) -> watch::Receiver<u64> {
        self.shared.links_changed.subscribe()
    }

    /// The current browser's page.
    fn page(&self) -> PageHandle {
        lock(&self.shared.page).clone()
    }

    fn browser_pid(&self) -> Option<u32> {
        match self.shared.browser_pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// The page as participants see it.
    pub fn page_info(&self) -> PageInfo {
        self.state().page.clone()
    }

    /// The tabs in strip order and the active one's number.
    pub fn tabs(&self) -> (Vec<TabInfo>, u32) {
        let state = self.state();
        (state.tabs.list(), state.tabs.active_id().unwrap_or(0))
    }

    fn broadcast_tabs(&self) {
        let (tabs, active) = self.tabs();
        self.broadcast(&ServerMessage::Tabs {
            tabs: &tabs,
            active,
        });
    }

    /// Switches to, closes or opens a tab. The caller checked that `p` may act. Carried out by
    /// the driver; everyone sees the outcome in `tabs`.
    pub fn tab(&self, p: &Participant, action: TabAction, id: Option<u32>) -> Result<(), String> {
        let command = match (action, id) {
            (TabAction::New, _) => Command::New,
            (TabAction::Switch | TabAction::Close, None) => {
                return Err("which tab? (`id` is missing)".into())
            }
            (TabAction::Switch, Some(id)) => Command::Switch(id),
            (TabAction::Close, Some(id)) => Command::Close(id),
        };
        if let Command::Switch(id) | Command::Close(id) = command {
            if self.state().tabs.target_of(id).is_none() {
                return Err("that tab is no longer open".into());
            }
        }
        info!(session_id = %self.id(), participant = %p.id(), ?command, "tab command");
        self.shared
            .tab_commands
            .try_send(command)
            .map_err(|_| "the browser is busy with tabs; try again".to_string())
    }

    /// The JavaScript dialog the page waits on, if any.
    pub fn open_dialog(&self) -> Option<OpenDialog> {
        self.state().dialog.clone()
    }

    /// Goes where `typed` (from the URL bar) leads; refused with the reason shown to the
    /// participant. The caller checked that they may act.
    /// Returns the URL it goes to.
    pub fn navigate(&self, p: &Participant, typed: &str) -> Result<String, String> {
        let url = typed_url(typed)?;
        info!(session_id = %self.id(), participant = %p.id(), %url, "navigating (URL bar)");
        self.audit(
            "page.navigate-requested",
            serde_json::json!({ "participant": p.id(), "url": url }),
        );
        self.page().navigate(&url);
        Ok(url)
    }

    /// Back, forward or reload. The caller checked that `p` may act.
    pub async fn history(&self, p: &Participant, action: HistoryAction) -> Result<(), String> {
        debug!(session_id = %self.id(), participant = %p.id(), ?action, "history");
        let page = self.page();
        let step = |delta| async move {
            match tokio::time::timeout(PAGE_COMMAND_TIMEOUT, page.go(delta)).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err("there is no page to go to".to_string()),
                Ok(Err(e)) => {
                    debug!(error = %e, "history command failed");
                    Err("the browser did not answer".to_string())
                }
                Err(_) => Err("the browser did not answer in time".to_string()),
            }
        };
        match action {
            HistoryAction::Back => step(-1).await,
            HistoryAction::Forward => step(1).await,
            HistoryAction::Reload => {
                self.page().reload();
                Ok(())
            }
        }
    }

    /// Answers dialog `id` (OK or Cancel, with the text of a prompt). The caller checked that
    /// `p` may act. Refused when that dialog is no longer open (someone else answered first).
    pub async fn answer_dialog(
        &self,
        p: &Participant,
        id: u32,
        accept: bool,
        text: Option<String>,
    ) -> Result<(), String> {
        if text
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS)
        {
            return Err(format!("answer longer than {MAX_TEXT_CHARS} characters"));
        }
        {
            let mut state = self.state();
            match &state.dialog {
                Some(d) if d.id == id && state.dialog_answered_by.is_none() => {}
                _ => return Err("that dialog was already answered".into()),
            }
            state.dialog_answered_by = Some(p.name().to_string());
        }
        info!(session_id = %self.id(), participant = %p.id(), accept, "answering a page dialog");
        let page = self.page();
        let answer = page.answer_dialog(accept, text);
        let result = match tokio::time::timeout(PAGE_COMMAND_TIMEOUT, answer).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(error = %e, "dialog answer failed");
                Err("the browser did not take the answer".to_string())
            }
            Err(_) => Err("the browser did not answer in time".to_string()),
        };
        match &result {
            Ok(()) => self.audit(
                "dialog.answered",
                serde_json::json!({ "participant": p.id(), "dialog": id, "accepted": accept }),
            ),
            Err(_) => self.state().dialog_answered_by = None,
        }
        result
    }

    /// Remembers who last pressed something on the page (a popup that opens is theirs).
    pub fn acted(&self, p: &Participant) {
        {
            let mut state = self.state();
            if state.last_actor.as_deref() != Some(p.id()) {
                state.last_actor = Some(p.id().to_string());
            }
        }
        self.mask_acted(p);
    }

    /// A `<select>` popup, or a colour/date/time picker, opened in the page: shown to whoever
    /// last pressed something. Returns whether someone was there to show it to.
    fn popup_opened(
        &self,
        report: crate::native::NativeReport,
        context: crate::browser::ExecutionContextId,
    ) -> bool {
        use crate::native::NativeReport;
        // Viewport CSS pixels → pixels of the screen the viewer paints.
        let g = self.geometry();
        let (sx, sy) = (
            g.image_width / g.css_width.max(1.0),
            g.image_height / g.css_height.max(1.0),
        );
        let on_screen = |r: [f64; 4]| [r[0] * sx, r[1] * sy, r[2] * sx, r[3] * sy];
        let (id, picker, json) = match &report {
            NativeReport::Select {
                id,
                selected,
                options,
                rect,
            } => (
                *id,
                false,
                ServerMessage::Select {
                    id: *id,
                    selected: *selected,
                    options,
                    rect: on_screen(*rect),
                }
                .to_json(),
            ),
            NativeReport::Picker {
                id,
                input_type,
                value,
                min,
                max,
                step,
                rect,
            } => (
                *id,
                true,
                ServerMessage::Picker {
                    id: *id,
                    input_type,
                    value,
                    min,
                    max,
                    step,
                    rect: on_screen(*rect),
                }
                .to_json(),
            ),
            NativeReport::Copy { .. }
            | NativeReport::Target { .. }
            | NativeReport::Field { .. } => return false,
        };
        let mut state = self.state();
        let Some(opener) = state.last_actor.clone() else {
            return false;
        };
        let Some(member) = state.participants.get(&opener) else {
            return false;
        };
        if member.direct.try_send(Arc::from(json)).is_err() {
            return false;
        }
        state.select = Some(OpenSelect {
            id,
            context,
            opener,
            picker,
        });
        true
    }

    /// A file field asked for files: offered to whoever last pressed something on the page.
    fn file_chooser_opened(&self, tab: PageHandle, node: i64, multiple: bool, accept: &str) {
        let mut state = self.state();
        let Some(opener) = state.last_actor.clone() else {
            debug!("a file field opened with nobody to offer it to");
            return;
        };
        let id = state.next_chooser;
        state.next_chooser = state.next_chooser.wrapping_add(1);
        let Some(member) = state.participants.get(&opener) else {
            return;
        };
        let json = if self.shared.max_upload_bytes == 0 {
            ServerMessage::Notice {
                level: "info",
                code: "upload-off",
                message: "The page asks for a file, but uploads are turned off on this server.",
            }
            .to_json()
        } else {
            let accept: String = accept.chars().take(1000).collect();
            ServerMessage::FileChooser {
                id,
                multiple,
                accept: &accept,
                max_bytes: self.shared.max_upload_bytes,
            }
            .to_json()
        };
        if member.direct.try_send(Arc::from(json)).is_ok() && self.shared.max_upload_bytes > 0 {
            state.chooser = Some(OpenChooser {
                id,
                node,
                tab,
                opener,
            });
        }
    }

    /// Whether file chooser `chooser` waits for files from a participant of `role` who may act
    /// now (checked before an upload is read). Join links are per role, so the uploader is
    /// known by role: the one the field was offered to must have it and hold control.
    pub fn chooser_waiting(&self, chooser: u32, role: Role) -> Result<(), crate::api::AppError> {
        use crate::api::AppError;
        let state = self.state();
        let Some(open) = state.chooser.as_ref().filter(|c| c.id == chooser) else {
            return Err(AppError::Conflict(
                "that file field no longer waits for files",
            ));
        };
        let Some(member) = state.participants.get(&open.opener) else {
            return Err(AppError::Conflict(
                "the file field was offered to someone who left",
            ));
        };
        if member.role != role {
            return Err(AppError::Forbidden(
                "the file field was offered to another participant".into(),
            ));
        }
        let actor = Actor {
            id: &open.opener,
            can_input: role.can_input(),
            owner: role == Role::Owner,
        };
        lock(&self.shared.control)
            .may_act(actor, Instant::now())
            .map_err(|refusal| AppError::Forbidden(refusal.to_string()))
    }

    /// Files for file chooser `chooser` (names already cleaned): saved in the session's
    /// directory and given to the page's field. The caller checked the role and the size.
    pub async fn upload(
        &self,
        chooser: u32,
        files: Vec<(String, bytes::Bytes)>,
    ) -> Result<(), crate::api::AppError> {
        use crate::api::AppError;
        let (open, n) = {
            let mut state = self.state();
            match state.chooser.take() {
                Some(c) if c.id == chooser => {
                    state.uploads += 1;
                    (c, state.uploads)
                }
                other => {
                    state.chooser = other;
                    return Err(AppError::Conflict(
                        "that file field no longer waits for files",
                    ));
                }
            }
        };
        let dir = self.shared.files.path().join(n.to_string());
        self.audit(
            "file.uploaded",
            serde_json::json!({
                "participant": open.opener,
                "files": files.len(),
                "bytes": files.iter().map(|(_, d)| d.len() as u64).sum::<u64>(),
            }),
        );
        let write = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let mut paths = Vec::new();
                for (i, (name, data)) in files.iter().enumerate() {
                    // One directory per file: two files of the same name both keep it.
                    let sub = dir.join(i.to_string());
                    std::fs::create_dir_all(&sub)?;
                    let path = sub.join(name);
                    std::fs::write(&path, data)?;
                    paths.push(path.to_string_lossy().into_owned());
                }
                Ok::<_, std::io::Error>(paths)
            })
        };
        let paths = match write.await {
            Ok(Ok(paths)) => paths,
            Ok(Err(e)) => return Err(AppError::Internal(format!("saving an upload: {e}"))),
            Err(e) => return Err(AppError::Internal(format!("saving an upload: {e}"))),
        };
        // The tab the field is in, whichever is active now.
        let set = open.tab.set_files(open.node, paths);
        match tokio::time::timeout(PAGE_COMMAND_TIMEOUT, set).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(error = %e, "setting the files failed");
                Err(AppError::Conflict("the page's file field is gone"))
            }
            Err(_) => Err(AppError::Unavailable(
                "the page did not answer in time".into(),
            )),
        }
    }

    /// Where downloads are saved (`None`: downloads refused).
    fn downloads_dir(&self) -> Option<std::path::PathBuf> {
        (self.shared.max_download_bytes > 0).then(|| self.shared.files.path().join("downloads"))
    }

    /// The page's downloads, oldest first.
    pub fn downloads(&self) -> Vec<DownloadInfo> {
        self.state()
            .downloads
            .iter()
            .map(|d| d.info.clone())
            .collect()
    }

    fn broadcast_downloads(&self) {
        let downloads = self.downloads();
        self.broadcast(&ServerMessage::Downloads {
            downloads: &downloads,
        });
    }

    /// The page started download `guid`. Returns whether it must be cancelled (too many at
    /// once: each one in progress is watched against the size limit, so none is ever dropped
    /// from the list while it runs).
    fn download_started(&self, guid: &str, name: &str) -> bool {
        let (evicted, refused) = {
            let mut state = self.state();
            let id = state.next_download;
            state.next_download = state.next_download.wrapping_add(1);
            let running = state
                .downloads
                .iter()
                .filter(|d| d.info.state == "started")
                .count();
            let reason = if self.shared.max_download_bytes == 0 {
                Some("downloads are turned off on this server".to_string())
            } else if running >= MAX_RUNNING_DOWNLOADS {
                Some(format!(
                    "more than {MAX_RUNNING_DOWNLOADS} downloads at once"
                ))
            } else {
                None
            };
            let refused = reason.is_some() && self.shared.max_download_bytes > 0;
            state.downloads.push(Download {
                guid: guid.to_string(),
                info: DownloadInfo {
                    id,
                    name: crate::files::clean_name(name),
                    size: 0,
                    state: if reason.is_some() {
                        "failed"
                    } else {
                        "started"
                    },
                    reason,
                },
            });
            // The oldest finished or failed ones go; those in progress stay.
            let mut evicted = Vec::new();
            while state.downloads.len() > MAX_DOWNLOADS {
                let Some(i) = state
                    .downloads
                    .iter()
                    .position(|d| d.info.state != "started")
                else {
                    break;
                };
                evicted.push(state.downloads.remove(i));
            }
            (evicted, refused)
        };
        if let Some(dir) = self.downloads_dir() {
            for old in evicted {
                let _ = std::fs::remove_file(dir.join(&old.guid));
            }
        }
        info!(session_id = %self.id(), refused, "the page started a download");
        self.audit(
            "download.started",
            serde_json::json!({ "refused": refused }),
        );
        self.broadcast_downloads();
        refused
    }

    /// Download `guid` progressed. Returns whether it must be cancelled (over the limit).
    fn download_progress(
        &self,
        guid: &str,
        received: u64,
        total: u64,
        done: bool,
        cancelled: bool,
    ) -> bool {
        let limit = self.shared.max_download_bytes;
        let (changed, cancel) = {
            let mut state = self.state();
            let Some(d) = state.downloads.iter_mut().find(|d| d.guid == guid) else {
                return false;
            };
            if d.info.state != "started" {
                return false;
            }
            d.info.size = received;
            if received.max(total) > limit {
                d.info.state = "failed";
                d.info.reason = Some(format!(
                    "larger than this server allows ({} MB)",
                    limit / (1024 * 1024)
                ));
                (true, true)
            } else if done {
                d.info.state = "done";
                (true, false)
            } else if cancelled {
                d.info.state = "failed";
                d.info.reason = Some("cancelled".into());
                (true, false)
            } else {
                (false, false)
            }
        };
        if changed {
            info!(session_id = %self.id(), bytes = received, done, cancel, "download finished");
            self.audit(
                "download.finished",
                serde_json::json!({ "bytes": received, "done": done, "overLimit": cancel }),
            );
            self.broadcast_downloads();
        }
        if cancel {
            if let Some(dir) = self.downloads_dir() {
                let _ = std::fs::remove_file(dir.join(guid));
            }
        }
        cancel
    }

    /// The file of finished download `id`: its path and name.
    pub fn download_file(&self, id: u32) -> Option<(std::path::PathBuf, String)> {
        let dir = self.downloads_dir()?;
        let state = self.state();
        let d = state
            .downloads
            .iter()
            .find(|d| d.info.id == id && d.info.state == "done")?;
        Some((dir.join(&d.guid), d.info.name.clone()))
    }

    /// Text was copied in the page: it goes to whoever last pressed something on it (the one
    /// who copied), for their own clipboard. Logged by size, never by content.
    fn copied(&self, text: &str) {
        let state = self.state();
        let Some(member) = state
            .last_actor
            .as_ref()
            .and_then(|id| state.participants.get(id))
        else {
            return;
        };
        let json = ServerMessage::Clipboard { text }.to_json();
        let sent = member.direct.try_send(Arc::from(json)).is_ok();
        info!(session_id = %self.id(), participant = ?state.last_actor, chars = text.chars().count(), sent, "text copied out of the page");
        self.audit(
            "clipboard.copied",
            serde_json::json!({ "participant": state.last_actor, "chars": text.chars().count(), "delivered": sent }),
        );
    }

    /// `p`'s choice in popup `id`: option `index`, or `None` to close it unchanged. The caller
    /// checked that `p` may act.
    pub async fn choose(&self, p: &Participant, id: u32, index: Option<u32>) -> Result<(), String> {
        let open = self.take_popup(p, id, false)?;
        let index = index.map_or(-1, i64::from);
        let page = self.page();
        let choose = page.choose(open.context, id, index);
        self.popup_answer(
            choose,
            if index < 0 {
                "the list was closed"
            } else {
                "the page did not take that choice"
            },
        )
        .await
    }

    /// `p`'s value for picker `id` (as the field's type writes it), or `None` to close it
    /// unchanged. The caller checked that `p` may act.
    pub async fn pick(
        &self,
        p: &Participant,
        id: u32,
        value: Option<String>,
    ) -> Result<(), String> {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > crate::native::MAX_PICKER_VALUE)
        {
            return Err("that value is too long".into());
        }
        let open = self.take_popup(p, id, true)?;
        let page = self.page();
        let pick = page.pick(open.context, id, value);
        self.popup_answer(pick, "the field did not take that value")
            .await
    }

    /// Takes popup `id` if it is open, of that kind, and `p`'s.
    fn take_popup(&self, p: &Participant, id: u32, picker: bool) -> Result<OpenSelect, String> {
        let mut state = self.state();
        match state.select.take() {
            Some(s) if s.id == id && s.opener == p.id() && s.picker == picker => Ok(s),
            other => {
                state.select = other;
                Err(if picker {
                    "that picker is no longer open".into()
                } else {
                    "that list is no longer open".into()
                })
            }
        }
    }

    async fn popup_answer(
        &self,
        answer: impl std::future::Future<Output = Result<bool, crate::browser::BrowserError>>,
        refused: &str,
    ) -> Result<(), String> {
        match tokio::time::timeout(PAGE_COMMAND_TIMEOUT, answer).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(refused.into()),
            Ok(Err(e)) => {
                debug!(error = %e, "popup answer failed");
                Err("the page is gone".into())
            }
            Err(_) => Err("the page did not answer in time".into()),
        }
    }

    /// What a joining viewer learns about the session's state, as JSON messages: presence, page,
    /// tabs, downloads, an open dialog, control, recording, chat history.
    pub fn state_messages(&self) -> Vec<String> {
        let participants = self.presence();
        let (tabs, active) = self.tabs();
        let downloads = self.downloads();
        let dialog = self.open_dialog();
        let mut out = vec![
            ServerMessage::Presence {
                count: participants.len(),
                participants: &participants,
            }
            .to_json(),
            ServerMessage::Page(&self.page_info()).to_json(),
            ServerMessage::Tabs {
                tabs: &tabs,
                active,
            }
            .to_json(),
        ];
        if !downloads.is_empty() {
            out.push(
                ServerMessage::Downloads {
                    downloads: &downloads,
                }
                .to_json(),
            );
        }
        if let Some(dialog) = &dialog {
            out.push(
                ServerMessage::Dialog {
                    dialog: Some(dialog),
                    answered_by: None,
                }
                .to_json(),
            );
        }
        out.push(
            ServerMessage::Control {
                state: &self.control(),
                denied: None,
            }
            .to_json(),
        );
        out.push(
            ServerMessage::Recording {
                status: &self.recording_status(),
            }
            .to_json(),
        );
        out.push(
            ServerMessage::ChatHistory {
                messages: &self.chat_history(),
            }
            .to_json(),
        );
        // Who joins during a shutdown is told too.
        if let Some(message) = self.shared.shutdown_notice.get() {
            out.push(shutdown_notice(message).to_json());
        }
        out
    }

    fn broadcast(&self, message: &ServerMessage<'_>) {
        // No receivers is fine: nobody is connected.
        let _ = self.shared.events.send(Arc::from(message.to_json()));
    }
}

/// The notice of a server shutdown (code `server-shutdown`: the viewer keeps it on screen).
fn shutdown_notice(message: &str) -> ServerMessage<'_> {
    ServerMessage::Notice {
        level: "warning",
        code: "server-shutdown",
        message,
    }
}

/// A connected participant. Dropping it is the one place a participant leaves.
pub struct Participant {
    session: SessionHandle,
    id: String,
    role: Role,
    name: String,
    color: &'static str,
    link: Arc<LinkStats>,
    removed: CancellationToken,
    /// Messages for this participant alone; taken by its writer.
    direct: Mutex<Option<mpsc::Receiver<Arc<str>>>>,
    /// What they sent into the page, counted for the audit log (never what it was).
    pub typed: InputCounts,
}

/// Input a participant sent into the page, by kind; written by their reader task.
#[derive(Debug, Default)]
pub struct InputCounts {
    pub keys: AtomicU64,
    /// Characters of text inserted (typed through an IME, pasted).
    pub text_chars: AtomicU64,
    pub clicks: AtomicU64,
    pub other: AtomicU64,
}

impl InputCounts {
    /// Counts one input.
    pub fn count(&self, input: &Input) {
        let counter = match input {
            Input::Key(k) if k.kind != KeyKind::KeyUp => &self.keys,
            Input::Mouse { kind, .. } if *kind == MouseKind::Pressed => &self.clicks,
            Input::Text(t) => {
                self.text_chars
                    .fetch_add(t.chars().count() as u64, Ordering::Relaxed);
                return;
            }
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a participant could not be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    #[error("no such participant")]
    NotFound,
    #[error("the owner cannot be removed")]
    Owner,
}

impl Participant {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Name and colour when joining (a rename shows in presence, not here).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn color(&self) -> &'static str {
        self.color
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            id: &self.id,
            can_input: self.role.can_input(),
            owner: self.role == Role::Owner,
        }
    }

    /// Fired when the owner removes this participant.
    pub fn removed(&self) -> CancellationToken {
        self.removed.clone()
    }

    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// The messages for this participant alone (once: its writer takes them).
    pub fn take_direct(&self) -> Option<mpsc::Receiver<Arc<str>>> {
        lock(&self.direct).take()
    }

    /// This participant's link figures, written by its writer task.
    pub fn link(&self) -> &LinkStats {
        &self.link
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let (count, name) = {
            let mut state = self.session.state();
            let name = state.participants.remove(&self.id).map(|m| m.name);
            (state.participants.len(), name)
        };
        self.session.shared.participant_count.send_replace(count);
        self.session.point(&self.id, None);
        let outcome = lock(&self.session.shared.control).left(&self.id);
        self.session.control_changed(outcome);
        self.session.broadcast(&ServerMessage::Left {
            id: &self.id,
            name: name.as_deref().unwrap_or(&self.name),
        });
        self.session.broadcast_presence();
        info!(session_id = %self.session.id(), participant = %self.id, "participant left");
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.session.audit(
            "participant.left",
            serde_json::json!({
                "participant": self.id,
                "removed": self.removed.is_cancelled(),
                "keys": n(&self.typed.keys),
                "textChars": n(&self.typed.text_chars),
                "clicks": n(&self.typed.clicks),
                "otherInput": n(&self.typed.other),
            }),
        );
    }
}

/// Version of the latest screen, 0 before the first.
fn current_version(screen: &ScreenWatch) -> u32 {
    screen.borrow().as_ref().map_or(0, |s| s.version)
}

fn presence(state: &State) -> Vec<PresenceEntry> {
    let mut members: Vec<(&String, &Member)> = state.participants.iter().collect();
    members.sort_by_key(|(_, m)| m.number);
    members.into_iter().map(|(id, m)| m.entry(id)).collect()
}

/// Now, in Unix milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn link_infos(state: &State) -> Vec<LinkInfo> {
    let mut links: Vec<LinkInfo> = state
        .participants
        .iter()
        .map(|(id, m)| {
            let l = &m.link;
            let rtt = l.rtt_ms.load(Ordering::Relaxed);
            LinkInfo {
                id: id.clone(),
                role: m.role.as_str(),
                rtt_ms: (rtt != u32::MAX).then_some(rtt),
                lag_ms: l.lag_ms.load(Ordering::Relaxed),
                quality: match l.quality.load(Ordering::Relaxed) {
                    0 => "high",
                    1 => "medium",
                    _ => "low",
                },
                updates: l.updates.load(Ordering::Relaxed),
                bytes: l.bytes.load(Ordering::Relaxed),
            }
        })
        .collect();
    links.sort_by(|a, b| a.id.cmp(&b.id));
    links
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
