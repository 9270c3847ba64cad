//! A cobrowsing session: one Chromium, its screen, its participants. One driver task owns the
//! browser; everyone else holds a cloneable [`SessionHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::browser::{Browser, PageProbe};
use crate::config::Viewport;
use crate::control::{Actor, Control, ControlView, Outcome, Refusal};
use crate::encode::EncodeCache;
use crate::input::{FrameGeometry, Input, KeyKind, MouseKind};
use crate::lock;
use crate::metrics::{Histogram, Summary};
use crate::people::{self, ChatLog, ChatMessage};
use crate::protocol::{AnnotationKind, ControlAction};
use crate::protocol::{Links, ServerMessage};
use crate::screen::{FrameSource, RawFrame, ScreenModel, ScreenWatch};
use crate::token::constant_time_eq;

/// Input events queued between the participants and the browser. A full queue makes the sending
/// participant's reader wait (backpressure on that participant), it never drops input.
const INPUT_QUEUE: usize = 256;
/// Events (presence, navigation) buffered per participant. A participant that lags further
/// behind gets a fresh snapshot of the state instead (see `ws`).
pub const EVENT_BUFFER: usize = 64;
/// Delay before retrying a screencast start or stop that Chromium refused.
const SCREENCAST_RETRY: Duration = Duration::from_millis(100);
/// A started screencast that painted nothing within this long is restarted.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(1);
/// A running screencast that delivered nothing for this long is checked: a screenshot is
/// compared with the screen. If the page shows something the screen does not, the screencast
/// missed a change: it is broken for this page (seen under load: one frame, then nothing, even
/// from an animation, while the page paints and runs `requestAnimationFrame`; restarting it
/// brought back only a stale frame). If not, the page is still, and the next check waits twice
/// as long, up to [`QUIET_CHECK_MAX`].
const QUIET_CHECK: Duration = Duration::from_secs(2);
const QUIET_CHECK_MAX: Duration = Duration::from_secs(30);
/// An input whose screen change has not come within this long is not timed.
const INPUT_ANSWER_WINDOW: Duration = Duration::from_secs(1);
/// Screencast frames within this long after a check are taken for its echo (the screenshot
/// makes Chromium paint); longer than the 1 s the driver looks at the frame count.
const CHECK_ECHO: Duration = Duration::from_millis(1500);
/// How long a check that saw a difference waits for a frame a healthy screencast would send.
const CHECK_GRACE: Duration = Duration::from_millis(300);
/// While the screencast is broken (until the next main-frame navigation, which brings a new
/// renderer and a screencast restarted on it), the screen is captured as screenshots at this
/// interval (at most; each capture takes tens of ms): a slower screen instead of a frozen one.
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// A screenshot not taken within this long is given up (the next one is tried).
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// What a participant may do; decided by the server from the join token, never by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Controller,
    Viewer,
}

impl Role {
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

/// The join capability of each role. Secret: never logged, never sent to other roles.
pub struct Tokens {
    pub owner: String,
    pub controller: String,
    pub viewer: String,
}

impl Tokens {
    /// The token of `role`, replaced by `fresh`: links with the old one stop working.
    fn rotate(&mut self, role: Role, fresh: String) {
        match role {
            Role::Owner => self.owner = fresh,
            Role::Controller => self.controller = fresh,
            Role::Viewer => self.viewer = fresh,
        }
    }

    /// The role a token grants. Compares against every role's token in constant time.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let t = token.as_bytes();
        let owner = constant_time_eq(t, self.owner.as_bytes());
        let controller = constant_time_eq(t, self.controller.as_bytes());
        let viewer = constant_time_eq(t, self.viewer.as_bytes());
        match (owner, controller, viewer) {
            (true, _, _) => Some(Role::Owner),
            (_, true, _) => Some(Role::Controller),
            (_, _, true) => Some(Role::Viewer),
            _ => None,
        }
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

struct State {
    /// Connected participants by id. Written by `join`, `rename` and `Participant::drop`.
    participants: HashMap<String, Member>,
    /// Text messages between participants, kept for late joiners.
    chat: ChatLog,
    /// Numbers participant ids; only grows.
    next_participant: u64,
    /// URL of the page's main frame. Written by the driver on every navigation.
    url: String,
    /// Why the session ended; set once, before `cancel` fires.
    end_reason: Option<String>,
}

/// Everything the tasks of a session share. Lives as long as any handle or participant.
struct Shared {
    id: String,
    created: SystemTime,
    start_url: String,
    viewport: Viewport,
    /// Rotated when a participant is removed, so that their link stops working.
    tokens: Mutex<Tokens>,
    /// Bumped when a join link changes; owners' writers send the new links.
    links_changed: watch::Sender<u64>,
    /// Where each participant points, in page CSS pixels (latest wins: state, not events).
    pointers: watch::Sender<Pointers>,
    /// Who may act on the page.
    control: Mutex<Control>,
    /// Asks the page things (the cursor under a pointer) without going through the driver.
    probe: PageProbe,
    /// Scheme/host/port join links start with.
    links_base: String,
    max_participants: usize,
    screen: ScreenWatch,
    /// Updates encoded for the latest versions, shared by every participant.
    encoder: EncodeCache,
    input: mpsc::Sender<Input>,
    /// JSON events for every participant (serialised once).
    events: broadcast::Sender<Arc<str>>,
    /// Number of connected participants; the driver starts/stops the screencast on it.
    participant_count: watch::Sender<usize>,
    state: Mutex<State>,
    stats: Stats,
    browser_pid: Option<u32>,
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
    pub links: Links,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("participant limit reached")]
    Full,
    #[error("session ended")]
    Ended,
}

/// What the registry needs to build a session around a launched browser.
pub struct NewSession {
    pub id: String,
    pub start_url: String,
    pub viewport: Viewport,
    pub tokens: Tokens,
    pub links_base: String,
    pub max_participants: usize,
    pub idle_timeout: Duration,
    pub close_grace: Duration,
    pub control: crate::control::Policy,
    pub control_idle: Duration,
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
        let (frames_tx, frames_rx) = watch::channel(None);
        // The driver's screenshots, when the screencast stalls, go the same way as its frames.
        let frames = frames_tx.clone();
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let cancel = server_shutdown.child_token();
        let shared = Arc::new(Shared {
            id: new.id,
            created: SystemTime::now(),
            start_url: new.start_url.clone(),
            viewport: new.viewport,
            tokens: Mutex::new(new.tokens),
            links_changed: watch::Sender::new(0),
            pointers: watch::Sender::new(Pointers::new()),
            control: Mutex::new(Control::new(new.control, new.control_idle, Instant::now())),
            probe: browser.probe(),
            links_base: new.links_base,
            max_participants: new.max_participants,
            screen,
            encoder: EncodeCache::default(),
            input: input_tx,
            events,
            participant_count: watch::Sender::new(0),
            state: Mutex::new(State {
                participants: HashMap::new(),
                chat: ChatLog::default(),
                next_participant: 1,
                url: new.start_url.clone(),
                end_reason: None,
            }),
            stats: Stats::default(),
            browser_pid: browser.pid(),
            cancel: cancel.clone(),
            server_shutdown: server_shutdown.clone(),
            finished: CancellationToken::new(),
        });
        let handle = SessionHandle { shared };
        // Listeners are registered before anything can paint or navigate.
        let listeners = async {
            let pump = browser.spawn_frame_pump(frames_tx, cancel.clone()).await?;
            Ok::<_, crate::browser::BrowserError>((pump, browser.navigations().await?))
        };
        let (pump, navigations) = match listeners.await {
            Ok(listeners) => listeners,
            Err(e) => {
                browser.close(new.close_grace).await;
                return Err(e);
            }
        };
        let input = browser.spawn_input(input_rx, cancel.clone());
        let screen_task = tokio::spawn(
            run_screen(model, frames_rx, handle.clone())
                .instrument(tracing::info_span!("screen", session_id = %handle.id())),
        );
        browser.navigate(&new.start_url);
        let span = tracing::info_span!("session", session_id = %handle.id());
        let driver = Driver {
            handle: handle.clone(),
            idle_timeout: new.idle_timeout,
            close_grace: new.close_grace,
        };
        tracker.spawn(
            async move {
                driver
                    .run(browser, navigations, frames, vec![pump, input, screen_task])
                    .await;
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

    pub fn role_of(&self, token: &str) -> Option<Role> {
        lock(&self.shared.tokens).role_of(token)
    }

    pub fn links(&self) -> Links {
        let link = |token: &str| {
            format!(
                "{}/s/{}#token={}",
                self.shared.links_base, self.shared.id, token
            )
        };
        let t = lock(&self.shared.tokens);
        Links {
            owner: link(&t.owner),
            controller: link(&t.controller),
            viewer: link(&t.viewer),
        }
    }

    pub fn viewport(&self) -> Viewport {
        self.shared.viewport
    }

    pub fn url(&self) -> String {
        self.state().url.clone()
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
            None => FrameGeometry::identity(self.shared.viewport),
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
                state.url.clone(),
                link_infos(&state),
            )
        };
        SessionInfo {
            id: self.shared.id.clone(),
            created: self.shared.created,
            start_url: self.shared.start_url.clone(),
            url,
            viewport: self.shared.viewport,
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
            browser_pid: self.shared.browser_pid,
            links: self.links(),
        }
    }

    /// Adds a participant under `name` (cleaned; a default from the role when absent or empty).
    /// The returned guard removes it when dropped.
    pub fn join(&self, role: Role, name: Option<&str>) -> Result<Participant, JoinError> {
        if self.shared.cancel.is_cancelled() {
            return Err(JoinError::Ended);
        }
        let (participant, count, entry) = {
            let mut state = self.state();
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
            let member = Member {
                role,
                name: name.clone(),
                color,
                joined_at: unix_ms(),
                number,
                link: Arc::new(LinkStats::default()),
                removed: CancellationToken::new(),
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
    pub fn remove(&self, id: &str) -> Result<(), RemoveError> {
        let role = {
            let state = self.state();
            let member = state.participants.get(id).ok_or(RemoveError::NotFound)?;
            if member.role == Role::Owner {
                return Err(RemoveError::Owner);
            }
            member.removed.cancel();
            member.role
        };
        let fresh = crate::token::random_string(crate::token::TOKEN_BYTES)
            .map_err(|_| RemoveError::Random)?;
        lock(&self.shared.tokens).rotate(role, fresh);
        self.shared.links_changed.send_modify(|n| *n += 1);
        info!(session_id = %self.id(), participant = %id, role = role.as_str(), "participant removed; their role's link replaced");
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
        self.control_changed(outcome);
        Ok(())
    }

    /// Releases control from an idle holder; called by the driver every second.
    fn control_tick(&self) {
        let outcome = lock(&self.shared.control).tick(Instant::now());
        if outcome == Outcome::Changed {
            info!(session_id = %self.id(), "control released: its holder was idle");
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
        let probe = self.shared.probe.cursor_at(x, y);
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

    fn broadcast(&self, message: &ServerMessage<'_>) {
        // No receivers is fine: nobody is connected.
        let _ = self.shared.events.send(Arc::from(message.to_json()));
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
}

/// Why a participant could not be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    #[error("no such participant")]
    NotFound,
    #[error("the owner cannot be removed")]
    Owner,
    #[error("no randomness for a new link")]
    Random,
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

/// The screen task: turns the latest screencast frame into a screen version, off the async
/// workers. Frames that arrive while one is being processed supersede each other (each is a
/// whole screen); the newest is always processed.
async fn run_screen(
    mut model: ScreenModel,
    mut frames: watch::Receiver<Option<RawFrame>>,
    session: SessionHandle,
) {
    while frames.changed().await.is_ok() {
        let Some(frame) = frames.borrow_and_update().clone() else {
            continue;
        };
        let stats = &session.shared.stats;
        match frame.source {
            FrameSource::Screencast => &stats.frames_in,
            FrameSource::Screenshot => &stats.frames_polled,
        }
        .fetch_add(1, Ordering::Relaxed);
        let polled = frame.source == FrameSource::Screenshot;
        if !polled && stats.polling.load(Ordering::Relaxed) {
            continue;
        }
        let applied = tokio::task::spawn_blocking(move || {
            let result = model.apply(frame);
            (model, result)
        })
        .await;
        match applied {
            Ok((m, result)) => {
                model = m;
                match result {
                    Ok(Some(s)) => {
                        {
                            let mut pending = lock(&stats.pending_input);
                            if let Some(at) = pending.filter(|&at| s.arrived > at) {
                                *pending = None;
                                let answer = s.arrived - at;
                                if answer <= INPUT_ANSWER_WINDOW {
                                    stats.input_ms.record(answer);
                                }
                            }
                        }
                        let took = s.arrived.elapsed();
                        session.shared.stats.screen_ms.record(took);
                        tracing::trace!(version = s.version, ?took, "screen version");
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "screencast frame dropped"),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "screen processing failed; the screen stops here");
                session.end("the screen could not be processed");
                return;
            }
        }
    }
}

/// Whether the page, as a screenshot shows it now, differs from the screen by more than encoding
/// noise. Sends nothing when it cannot tell (no screen yet, a failed screenshot).
async fn check_quiet_screencast(probe: PageProbe, screen: ScreenWatch, answer: mpsc::Sender<bool>) {
    let shot = match tokio::time::timeout(POLL_TIMEOUT, probe.capture()).await {
        Ok(Ok(shot)) => shot,
        Ok(Err(e)) => {
            debug!(error = %e, "screenshot for a screencast check failed");
            let _ = answer.send(false).await;
            return;
        }
        Err(_) => {
            debug!("screenshot for a screencast check took longer than {POLL_TIMEOUT:?}");
            let _ = answer.send(false).await;
            return;
        }
    };
    let Some(current) = screen.borrow().clone() else {
        let _ = answer.send(false).await;
        return;
    };
    let compared = tokio::task::spawn_blocking(move || {
        let pixels = crate::screen::decode_jpeg(&shot.jpeg).ok()?;
        Some(crate::screen::tiles_visibly_different(
            &current.pixels,
            &pixels,
        ))
    })
    .await;
    let differing = compared.ok().flatten().unwrap_or(0);
    debug!(differing, "screencast check");
    if differing > 0 {
        // A healthy screencast may have that change's frame in flight: give it a moment, the
        // driver then looks whether any frame came.
        tokio::time::sleep(CHECK_GRACE).await;
    }
    let _ = answer.send(differing > 0).await;
}

/// The driver's watchdog counts frames received, changed or not.
fn frames_received(shared: &Shared) -> u64 {
    shared.stats.frames_in.load(Ordering::Relaxed)
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The task that owns a session's browser.
struct Driver {
    handle: SessionHandle,
    idle_timeout: Duration,
    close_grace: Duration,
}

impl Driver {
    /// Takes a screenshot and hands it to the screen like a frame.
    async fn capture(&self, probe: &PageProbe, frames: &watch::Sender<Option<RawFrame>>) {
        match tokio::time::timeout(POLL_TIMEOUT, probe.capture()).await {
            Ok(Ok(frame)) => {
                frames.send_replace(Some(frame));
            }
            Ok(Err(e)) => debug!(error = %e, "screenshot failed"),
            Err(_) => debug!("screenshot took longer than {POLL_TIMEOUT:?}"),
        }
    }

    async fn run(
        &self,
        browser: Browser,
        mut navigations: std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>,
        frames: watch::Sender<Option<RawFrame>>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) {
        let shared = &self.handle.shared;
        let gone = browser.gone();
        let mut count = shared.participant_count.subscribe();
        // Participants may have joined before this task first ran: act on the count as it is now.
        count.mark_changed();
        let mut screencasting = false;
        // When a screencast start failed (Chromium refuses commands while the first navigation
        // swaps the page's renderer), the time to try again.
        let mut retry_at: Option<Instant> = None;
        // Screen version when the screencast last started, until its first frame is checked for.
        let mut started_at_seq: Option<u64> = None;
        let mut idle_deadline = Some(Instant::now() + self.idle_timeout);
        // Frames received when last looked at, and since when that count has not moved.
        let mut quiet = (frames_received(shared), Instant::now());
        let mut quiet_check = tokio::time::interval(Duration::from_secs(1));
        quiet_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // How long the screencast may stay quiet before the next check.
        let mut check_after = QUIET_CHECK;
        // A check of a quiet screencast in flight: the frames received when it began. Its
        // task answers whether the page shows something the screen does not.
        let mut checking: Option<u64> = None;
        let (check_tx, mut check_rx) = mpsc::channel::<bool>(1);
        // Until when screencast frames are the echo of a check's screenshot.
        let mut own_frames_until = Instant::now();
        let probe = shared.probe.clone();
        // Whether the screen comes from screenshots because the screencast is broken.
        let mut polling = false;
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(url = %shared.start_url, pid = ?shared.browser_pid, "session started");
        loop {
            let idle = sleep_until_or_never(idle_deadline);
            let retry = sleep_until_or_never(retry_at);
            let sync;
            tokio::select! {
                _ = shared.cancel.cancelled() => break,
                _ = gone.cancelled() => {
                    warn!("Chromium exited unexpectedly");
                    self.handle.end("the browser stopped unexpectedly");
                    break;
                }
                _ = idle => {
                    self.handle.end("nobody was connected for too long");
                    break;
                }
                _ = quiet_check.tick() => {
                    self.handle.control_tick();
                    let now_seen = frames_received(shared);
                    if now_seen != quiet.0 {
                        // A screenshot makes Chromium paint, so a check brings a screencast frame
                        // of its own: that one does not make the page busy again.
                        if checking.is_none() && Instant::now() > own_frames_until {
                            check_after = QUIET_CHECK;
                        }
                        quiet = (now_seen, Instant::now());
                    } else if screencasting && !polling && checking.is_none() && quiet.1.elapsed() >= check_after {
                        debug!(frames = now_seen, version = current_version(&shared.screen), "no frame for {check_after:?}; checking with a screenshot");
                        checking = Some(now_seen);
                        quiet.1 = Instant::now();
                        tokio::spawn(check_quiet_screencast(probe.clone(), self.handle.screen(), check_tx.clone()));
                    }
                    sync = false;
                }
                Some(differs) = check_rx.recv() => {
                    shared.stats.screencast_checks.fetch_add(1, Ordering::Relaxed);
                    let before = checking.take();
                    if differs && before == Some(frames_received(shared)) && screencasting && !polling {
                        let page = browser.page_state().await;
                        warn!(?page, "the screencast missed a change of the page; taking screenshots until the next navigation");
                        polling = true;
                        shared.stats.polling.store(true, Ordering::Relaxed);
                    } else if !differs {
                        check_after = (check_after * 2).min(QUIET_CHECK_MAX);
                        own_frames_until = Instant::now() + CHECK_ECHO;
                    }
                    sync = false;
                }
                _ = poll.tick(), if polling && *count.borrow() > 0 => {
                    self.capture(&probe, &frames).await;
                    sync = false;
                }
                _ = retry => {
                    // Fired once; a new deadline is set below if something is still to do (an
                    // old deadline left in place would fire on every turn of this loop).
                    retry_at = None;
                    // A screencast start always paints one frame, even on a static page. None
                    // since the start means Chromium lost it (seen under load around the first
                    // navigation): start it again.
                    if let Some(seq) = started_at_seq.take() {
                        if screencasting && frames_received(shared) == seq {
                            debug!("no frame since the screencast started; restarting it");
                            screencasting = false;
                        }
                    }
                    sync = true;
                }
                changed = count.changed() => {
                    if changed.is_err() { break; }
                    let connected = *count.borrow_and_update();
                    idle_deadline = (connected == 0).then(|| Instant::now() + self.idle_timeout);
                    sync = true;
                }
                Some(url) = navigations.next() => {
                    debug!(%url, "navigated");
                    if polling {
                        // A new page, a new renderer: give the screencast another chance.
                        info!("navigated: restarting the screencast, screenshots stop");
                        polling = false;
                        shared.stats.polling.store(false, Ordering::Relaxed);
                        screencasting = false;
                        check_after = QUIET_CHECK;
                    }
                    self.handle.state().url = url.clone();
                    self.handle.broadcast(&ServerMessage::Page { url: &url });
                    // A navigation that swaps the page's renderer can lose a screencast started
                    // just before it. The new page always paints, so expect a frame soon, and
                    // restart only if none comes (restarts themselves can stall the screencast).
                    if screencasting {
                        started_at_seq = Some(frames_received(shared));
                        retry_at = Some(Instant::now() + FIRST_FRAME_TIMEOUT);
                    }
                    sync = !screencasting;
                }
            }
            if sync {
                // One screencast per session, running only while someone watches.
                let wanted = *count.borrow() > 0;
                if wanted != screencasting {
                    retry_at = None;
                    let result = if wanted {
                        browser.start_screencast().await
                    } else {
                        browser.stop_screencast().await
                    };
                    match result {
                        Ok(()) => {
                            debug!(wanted, "screencast changed");
                            screencasting = wanted;
                            if wanted {
                                started_at_seq = Some(frames_received(shared));
                                retry_at = Some(Instant::now() + FIRST_FRAME_TIMEOUT);
                            }
                        }
                        Err(e) => {
                            debug!(error = %e, wanted, "screencast change failed; retrying");
                            retry_at = Some(Instant::now() + SCREENCAST_RETRY);
                        }
                    }
                }
            }
        }
        let reason = self.handle.end_reason();
        info!(%reason, "session ending");
        browser.close(self.close_grace).await;
        for task in tasks {
            task.abort();
        }
        info!("session ended; browser closed");
    }
}
