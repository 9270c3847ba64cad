//! The driver: the one task that owns a session's browser. It starts and stops the screencast
//! with the participants, checks a quiet screencast against screenshots, follows the page
//! (navigations, title, loading, dialogs) and restarts a crashed renderer or browser. Also the
//! screen task, which turns frames into screen versions.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::masking::Masker;
use super::*;
use crate::browser::{PageEvent, TabEvent};
use crate::tabs::MAX_TABS;

/// After a new document, the history (title) is read again after this long, then twice as long
/// each time up to [`HISTORY_REREAD_MAX`].
const HISTORY_REREAD: Duration = Duration::from_millis(250);
const HISTORY_REREAD_MAX: Duration = Duration::from_secs(2);
/// A main-frame load that fails within this long of the egress proxy refusing its host and port
/// is explained as that refusal.
const BLOCK_EXPLAIN_WINDOW: Duration = Duration::from_secs(10);
/// How long a tab command (take over a new tab, close one, stop a screencast) may take.
const TAB_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

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
/// Screencast frames within this long after a check are taken for its echo (the screenshot
/// makes Chromium paint); longer than the 1 s the driver looks at the frame count.
const CHECK_ECHO: Duration = Duration::from_millis(1500);
/// How long a check that saw a difference waits for a frame a healthy screencast would send.
const CHECK_GRACE: Duration = Duration::from_millis(300);
/// While the screencast is broken (until the next main-frame navigation, which brings a new
/// renderer and a screencast restarted on it), the screen is captured as screenshots at this
/// interval (at most; each capture takes tens of ms): a slower screen instead of a frozen one.
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for a resized page to paint at its new size (a hidden page never does).
const RESIZE_PAINT_TIMEOUT: Duration = Duration::from_secs(2);

/// A screenshot not taken within this long is given up (the next one is tried).
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `work` on the masker on the blocking pool (it copies and diffs whole screens). A panic
/// there ends the session (`None`): its masked screen could no longer be trusted.
async fn on_masker(
    mut masker: Masker,
    session: &SessionHandle,
    work: impl FnOnce(&mut Masker) + Send + 'static,
) -> Option<Masker> {
    let done = tokio::task::spawn_blocking(move || {
        work(&mut masker);
        masker
    })
    .await;
    match done {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(error = %e, "masking failed; the screen stops here");
            session.end("the screen could not be processed");
            None
        }
    }
}

/// The screen task: turns the latest screencast frame into a screen version, off the async
/// workers. Frames that arrive while one is being processed supersede each other (each is a
/// whole screen); the newest is always processed. Each new version of the clear screen is also
/// painted over into the masked screen (`masking::Masker`), and a mask report that changes the
/// masks of the current frame makes a new masked version on its own.
pub(super) async fn run_screen(
    mut model: ScreenModel,
    mut masker: Masker,
    mut frames: watch::Receiver<Option<RawFrame>>,
    session: SessionHandle,
) {
    loop {
        let settle_at = masker.settle_at();
        let frame = tokio::select! {
            biased;
            changed = frames.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(frame) = frames.borrow_and_update().clone() else {
                    continue;
                };
                frame
            }
            update = masker.reports.recv() => {
                let Some(update) = update else { return };
                masker.take(update, &session);
                masker.drain(&session);
                // The newest frame again with the masks as they are now.
                let Some(clear) = model.current().cloned() else { continue };
                let Some(m) = on_masker(masker, &session, move |m| m.derive(&clear, None)).await else {
                    return;
                };
                masker = m;
                continue;
            }
            _ = sleep_until_or_never(settle_at) => {
                // The page stayed still: mask its last frame with its own report only.
                let Some(clear) = model.current().cloned() else {
                    masker.settle_skipped();
                    continue;
                };
                let Some(m) = on_masker(masker, &session, move |m| m.settle(&clear)).await else {
                    return;
                };
                masker = m;
                continue;
            }
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
        // Every report the page sent before this frame is queued by now (the pump queued it
        // first): the frame's masks are known.
        masker.drain(&session);
        let applied = tokio::task::spawn_blocking(move || {
            let result = model.apply(frame.clone());
            // A refused frame left the previous screen: masks placed for the refused frame's
            // scroll and size would not fit it. An unchanged frame shows the same pixels, so
            // its placement holds.
            if let (Ok(_), Some(clear)) = (&result, model.current().cloned()) {
                masker.derive(&clear, Some(frame));
            }
            (model, masker, result)
        })
        .await;
        match applied {
            Ok((m, k, result)) => {
                model = m;
                masker = k;
                match result {
                    Ok(Some(s)) => {
                        {
                            let mut pending = lock(&stats.pending_input);
                            if let Some(at) = pending.filter(|&at| s.arrived > at) {
                                *pending = None;
                                let answer = s.arrived - at;
                                if answer <= INPUT_ANSWER_WINDOW {
                                    stats.input_ms.record(answer);
                                    session.shared.metrics.input_to_frame.record(answer);
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

/// Sleeps until `at`, or forever.
async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether the page, as a screenshot shows it now, differs from the screen by more than encoding
/// noise. Sends nothing when it cannot tell (no screen yet, a failed screenshot).
async fn check_quiet_screencast(
    probe: PageHandle,
    screen: ScreenWatch,
    answer: mpsc::Sender<bool>,
) {
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

/// Crashes (renderer or browser) the driver recovers from within [`RESTART_WINDOW`]; one more
/// ends the session: a page that kills its browser every time would otherwise loop forever.
const MAX_RESTARTS: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(300);
/// How long the driver waits for Chromium's navigation history after a navigation.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a crashed browser gets to go before it is killed.
const CRASHED_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Runs a browser command within [`TAB_COMMAND_TIMEOUT`]; `None` (logged) if it failed or took
/// longer.
async fn timed<T>(
    what: &str,
    command: impl std::future::Future<Output = Result<T, crate::browser::BrowserError>>,
) -> Option<T> {
    match tokio::time::timeout(TAB_COMMAND_TIMEOUT, command).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            debug!(error = %e, "{what} failed");
            None
        }
        Err(_) => {
            debug!("{what} timed out");
            None
        }
    }
}

/// A tab's page events, tagged with the tab's target.
type TabPageEvents = std::pin::Pin<Box<dyn futures::Stream<Item = (String, PageEvent)> + Send>>;

/// The active tab's pump and input task.
struct Wiring {
    /// Ends this tab's pump and input task.
    cancel: CancellationToken,
    pump: tokio::task::JoinHandle<()>,
    /// Gives the input queue back when it ends, for the next tab or browser.
    input: tokio::task::JoinHandle<mpsc::Receiver<Input>>,
}

impl Wiring {
    /// Stops the pump and the input task; returns the input queue (`None` if the task failed).
    async fn unwire(self) -> Option<mpsc::Receiver<Input>> {
        self.cancel.cancel();
        self.pump.abort();
        match self.input.await {
            Ok(inputs) => Some(inputs),
            Err(e) => {
                tracing::error!(error = %e, "the input task failed");
                None
            }
        }
    }
}

/// A browser wired to the session: its tabs, the active tab's frame pump and input task, and
/// the page events of every tab.
pub(super) struct Attached {
    browser: Browser,
    /// Page events of every tab; a tab's stream ends when it closes.
    events: futures::stream::SelectAll<TabPageEvents>,
    tab_events: std::pin::Pin<Box<dyn futures::Stream<Item = TabEvent> + Send>>,
    /// Every tab's page, by target.
    pages: HashMap<String, PageHandle>,
    /// Per tab: main-frame loads started minus stopped.
    loads: HashMap<String, i32>,
    /// Dialogs open in tabs other than the active one (the active one's is in the state).
    dialogs: HashMap<String, OpenDialog>,
    /// Tabs asked to close whose close Chromium has not reported yet.
    closing: HashSet<String>,
    /// Blank tabs opened whose opening Chromium has not reported yet (its reports of other tabs
    /// closing can come first).
    opening: HashSet<String>,
    /// The target of the active tab.
    active: String,
    /// `None` while being rewired, or after the tab to show closed before it could be shown.
    wiring: Option<Wiring>,
    /// The input queue while no tab is wired (the next switch takes it).
    parked: Option<mpsc::Receiver<Input>>,
    /// When the session ends for lack of participants (`None` while someone is connected);
    /// kept across tab switches.
    idle_deadline: Option<Instant>,
    /// The participant count the deadline was set for.
    last_count: Option<usize>,
}

impl Attached {
    pub(super) fn navigate(&self, url: &str) {
        self.browser.navigate(url);
    }

    /// Stops this browser's tasks; returns the browser (to close) and the input queue.
    async fn detach(mut self) -> (Browser, Option<mpsc::Receiver<Input>>) {
        let inputs = match self.wiring.take() {
            Some(wiring) => wiring.unwire().await,
            None => self.parked.take(),
        };
        (self.browser, inputs)
    }
}

/// Tags a tab's page events with its target.
fn tagged(
    target: &str,
    events: std::pin::Pin<Box<dyn futures::Stream<Item = PageEvent> + Send>>,
) -> TabPageEvents {
    let target = target.to_string();
    Box::pin(events.map(move |e| (target.clone(), e)))
}

/// Why one browser's turn of the driver ended.
enum Exit {
    /// The session ended (or must end): close the browser and stop.
    Ended,
    /// The browser process died: start another one.
    BrowserDied,
    /// Another tab (this target) becomes the active one.
    Switch(String),
}

/// The task that owns a session's browser.
pub(super) struct Driver {
    pub(super) handle: SessionHandle,
    idle_timeout: Duration,
    close_grace: Duration,
    /// Where frames go (the pump's) and screenshots (the driver's, when the screencast is broken).
    frames: watch::Sender<Option<RawFrame>>,
    /// When the recent crashes happened (at most [`MAX_RESTARTS`] kept).
    crashes: std::sync::Mutex<std::collections::VecDeque<Instant>>,
    /// Participants' tab commands.
    commands: tokio::sync::Mutex<mpsc::Receiver<Command>>,
    /// Requests the egress proxy blocked (see [`Driver::blocked`]).
    blocked: tokio::sync::Mutex<mpsc::Receiver<crate::egress::BlockedRequest>>,
    /// The last blocked request and when: a main-frame navigation that fails right after names
    /// it on the explanation page. Written and read by the driver only.
    last_blocked: std::sync::Mutex<Option<(crate::egress::BlockedRequest, Instant)>>,
}

impl Driver {
    pub(super) fn new(
        handle: SessionHandle,
        idle_timeout: Duration,
        close_grace: Duration,
        frames: watch::Sender<Option<RawFrame>>,
        commands: mpsc::Receiver<Command>,
        blocked: mpsc::Receiver<crate::egress::BlockedRequest>,
    ) -> Self {
        Driver {
            handle,
            idle_timeout,
            close_grace,
            frames,
            crashes: std::sync::Mutex::new(std::collections::VecDeque::new()),
            commands: tokio::sync::Mutex::new(commands),
            blocked: tokio::sync::Mutex::new(blocked),
            last_blocked: std::sync::Mutex::new(None),
        }
    }

    /// Wires `browser` to the session: its one tab's frame pump, input task (taking `inputs`) and
    /// page events, and the browser's tab events; makes it the page participants' commands go
    /// to. Closes the browser on failure.
    pub(super) async fn attach(
        &self,
        browser: Browser,
        inputs: mpsc::Receiver<Input>,
    ) -> Result<Attached, crate::browser::BrowserError> {
        let shared = &self.handle.shared;
        let first = browser.page();
        let target = first.target().to_string();
        let listeners = async {
            let tab_events = browser.tab_events().await?;
            let events = Browser::page_events(&first).await?;
            Ok::<_, crate::browser::BrowserError>((tab_events, events))
        };
        let (tab_events, events) = match listeners.await {
            Ok(listeners) => listeners,
            Err(e) => {
                browser.close(self.close_grace).await;
                return Err(e);
            }
        };
        let downloads = self.handle.downloads_dir();
        if let Some(dir) = &downloads {
            if let Err(e) = std::fs::create_dir_all(dir) {
                warn!(error = %e, "no directory for downloads");
            }
        }
        if let Err(e) = browser.set_downloads(downloads.as_deref()).await {
            browser.close(self.close_grace).await;
            return Err(e);
        }
        // A new browser's only tab is cobrowse's own about:blank: nothing to mask before the page
        // script's first report.
        let wiring = match self.wire(&browser, inputs, true).await {
            Ok(wiring) => wiring,
            Err((e, _)) => {
                browser.close(self.close_grace).await;
                return Err(e);
            }
        };
        *lock(&shared.page) = first.clone();
        shared
            .browser_pid
            .store(browser.pid().unwrap_or(0), Ordering::Relaxed);
        self.handle.state().tabs = Tabs::new(&target, "about:blank");
        self.handle.broadcast_tabs();
        let mut all_events = futures::stream::SelectAll::new();
        all_events.push(tagged(&target, events));
        Ok(Attached {
            browser,
            events: all_events,
            tab_events,
            pages: HashMap::from([(target.clone(), first)]),
            loads: HashMap::from([(target.clone(), 0)]),
            dialogs: HashMap::new(),
            closing: HashSet::new(),
            opening: HashSet::new(),
            active: target,
            wiring: Some(wiring),
            parked: None,
            idle_deadline: Some(Instant::now() + self.idle_timeout),
            last_count: None,
        })
    }

    /// Starts the frame pump and the input task on the browser's active tab. Gives the input
    /// queue back when the pump cannot start.
    async fn wire(
        &self,
        browser: &Browser,
        inputs: mpsc::Receiver<Input>,
        blank: bool,
    ) -> Result<Wiring, (crate::browser::BrowserError, mpsc::Receiver<Input>)> {
        let cancel = self.handle.shared.cancel.child_token();
        let pump = match browser
            .spawn_frame_pump(
                self.frames.clone(),
                self.handle.mask_sink(),
                blank,
                cancel.clone(),
            )
            .await
        {
            Ok(pump) => pump,
            Err(e) => return Err((e, inputs)),
        };
        let input = browser.spawn_input(inputs, cancel.clone());
        Ok(Wiring {
            cancel,
            pump,
            input,
        })
    }

    /// Makes tab `target` the one the screen shows and input goes to. `false` when the session
    /// cannot go on (the input task failed).
    async fn switch(&self, attached: &mut Attached, target: &str) -> bool {
        let Some(tab) = attached.pages.get(target).cloned() else {
            return true;
        };
        let Some(inputs) = (match attached.wiring.take() {
            Some(wiring) => wiring.unwire().await,
            None => attached.parked.take(),
        }) else {
            self.handle.end("the browser's input stopped");
            return false;
        };
        // The tab left behind stops painting for nobody (a closed one answers with an error).
        if tokio::time::timeout(TAB_COMMAND_TIMEOUT, attached.browser.stop_screencast())
            .await
            .is_err()
        {
            debug!("stopping the screencast of the previous tab timed out");
        }
        attached.browser.set_active(&tab);
        match self.wire(&attached.browser, inputs, false).await {
            Ok(wiring) => attached.wiring = Some(wiring),
            Err((e, inputs)) => {
                // Closed meanwhile (participants closing tabs fast): its close event comes next
                // and names the tab to show instead. Until then the previous tab stays wired if
                // it is still open; else input waits (a dead browser is noticed by the driver).
                debug!(error = %e, "the tab to show is gone; staying on the previous one");
                match attached.pages.get(&attached.active).cloned() {
                    Some(previous) if previous.target() != target => {
                        attached.browser.set_active(&previous);
                        match self.wire(&attached.browser, inputs, false).await {
                            Ok(wiring) => attached.wiring = Some(wiring),
                            Err((_, inputs)) => attached.parked = Some(inputs),
                        }
                    }
                    _ => attached.parked = Some(inputs),
                }
                return true;
            }
        }
        *lock(&self.handle.shared.page) = tab.clone();
        let old = std::mem::replace(&mut attached.active, target.to_string());
        let loading = attached.loads.get(target).copied().unwrap_or(0) > 0;
        let (page, dialog) = {
            let mut state = self.handle.state();
            if let Some(d) = state.dialog.take() {
                if attached.pages.contains_key(&old) {
                    attached.dialogs.insert(old, d);
                }
            }
            state.dialog_answered_by = None;
            state.select = None;
            state.chooser = None;
            state.dialog = attached.dialogs.remove(target);
            state.tabs.set_active(target);
            let info = state.tabs.info(target).unwrap_or_default();
            state.page = PageInfo {
                url: info.url,
                title: info.title,
                loading,
                can_go_back: false,
                can_go_forward: false,
            };
            (state.page.clone(), state.dialog.clone())
        };
        info!(tab = ?self.handle.tabs().1, url = %page.url, "switched tab");
        self.handle.broadcast(&ServerMessage::Page(&page));
        self.handle.broadcast(&ServerMessage::Dialog {
            dialog: dialog.as_ref(),
            answered_by: None,
        });
        self.handle.broadcast_tabs();
        self.refresh_history(&tab).await;
        true
    }

    /// A tab opened, closed or changed. Returns the tab to switch to, if any.
    async fn tab_event(&self, attached: &mut Attached, event: TabEvent) -> Option<String> {
        debug!(?event, "tab event");
        match event {
            TabEvent::Opened {
                target,
                opener,
                url,
            } => {
                attached.opening.remove(&target);
                if attached.pages.contains_key(&target) {
                    return None;
                }
                if self.handle.state().tabs.is_full() {
                    warn!(%url, "the page opened more tabs than allowed; closing the new one");
                    self.tell_everyone(
                        "too-many-tabs",
                        &format!("The page tried to open more than {MAX_TABS} tabs; the new one was closed."),
                    );
                    self.close_tab(&attached.browser, &target).await;
                    return None;
                }
                let adopted = async {
                    let page = attached.browser.adopt(&target).await?;
                    let events = Browser::page_events(&page).await?;
                    Ok::<_, crate::browser::BrowserError>((page, events))
                };
                match tokio::time::timeout(TAB_COMMAND_TIMEOUT, adopted).await {
                    Ok(Ok((page, events))) => {
                        attached.events.push(tagged(&target, events));
                        attached.pages.insert(target.clone(), page);
                        attached.loads.insert(target.clone(), 0);
                        self.handle
                            .state()
                            .tabs
                            .opened(&target, opener.as_deref(), &url);
                        info!(%url, popup = opener.is_some(), "tab opened");
                        Some(target)
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, %url, "a new tab could not be taken over; closing it");
                        self.close_tab(&attached.browser, &target).await;
                        None
                    }
                    Err(_) => {
                        warn!(%url, "a new tab did not answer in time; closing it");
                        self.close_tab(&attached.browser, &target).await;
                        None
                    }
                }
            }
            TabEvent::Closed { target } => {
                attached.closing.remove(&target);
                attached.opening.remove(&target);
                attached.pages.remove(&target)?;
                attached.loads.remove(&target);
                attached.dialogs.remove(&target);
                let (next, empty) = {
                    let mut state = self.handle.state();
                    let next = state.tabs.closed(&target);
                    (next, state.tabs.is_empty())
                };
                info!(left = attached.pages.len(), "tab closed");
                // A session always has a tab: the last one closed leaves a blank one, which
                // becomes active when Chromium reports it open. One opened before (the last tab
                // closed by a participant) may not be reported yet: the strip waits for it.
                if !empty {
                    self.handle.broadcast_tabs();
                } else if !attached.opening.is_empty() {
                    debug!("the last tab closed before the blank one opened was reported");
                } else {
                    self.handle.broadcast_tabs();
                    if !self.open_tab(attached).await {
                        warn!("no blank tab could be opened after the last one closed");
                    }
                }
                next
            }
            TabEvent::DownloadStarted { guid, url, name } => {
                debug!(%url, "download started");
                if self.handle.download_started(&guid, &name) {
                    timed(
                        "cancelling a download",
                        attached.browser.cancel_download(&guid),
                    )
                    .await;
                }
                None
            }
            TabEvent::Download {
                guid,
                received,
                total,
                done,
                cancelled,
            } => {
                if self
                    .handle
                    .download_progress(&guid, received, total, done, cancelled)
                {
                    timed(
                        "cancelling a download",
                        attached.browser.cancel_download(&guid),
                    )
                    .await;
                    self.tell_everyone(
                        "download-too-large",
                        "The page's download is larger than this server allows; it was stopped.",
                    );
                }
                None
            }
            TabEvent::Changed { target, url, title } => {
                if target == attached.active {
                    // The active tab's title comes from its history (while loading, the target's
                    // title is its URL). Its URL comes from its page events, except for the first
                    // navigation of a popup, which can happen before they were subscribed.
                    let known = self.handle.page_info();
                    let url_changed = url != known.url;
                    if url_changed {
                        self.update_page(|p| p.url = url.clone());
                    }
                    // A title Chromium reports that the page info does not have: read the
                    // history again. The reads after a navigation can fail while a renderer
                    // swap is under way ("Not attached to an active page"), and the page's
                    // load-stop may be missed then; this is the read that catches up.
                    let title_changed = title != known.title && title != url;
                    if url_changed || title_changed {
                        if let Some(page) = attached.pages.get(&target) {
                            self.refresh_history(page).await;
                        }
                    }
                    return None;
                }
                let changed =
                    self.handle
                        .state()
                        .tabs
                        .update(&target, Some(&url), Some(&title), None);
                if changed {
                    self.handle.broadcast_tabs();
                }
                None
            }
        }
    }

    /// A participant's tab command. Returns the tab to switch to, if any.
    async fn tab_command(&self, attached: &mut Attached, command: Command) -> Option<String> {
        match command {
            // Applied by `drive`, which restarts the screencast for the new size.
            Command::Viewport(_) => None,
            Command::Switch(id) => {
                let target = self.handle.state().tabs.target_of(id)?.to_string();
                (target != attached.active).then_some(target)
            }
            Command::Close(id) => {
                let (target, open) = {
                    let state = self.handle.state();
                    (state.tabs.target_of(id)?.to_string(), state.tabs.len())
                };
                if !attached.closing.insert(target.clone()) {
                    return None;
                }
                // Closes asked for in a row come before Chromium reports any of them: the tabs
                // still open are those not being closed.
                if open.saturating_sub(attached.closing.len()) == 0 {
                    // The blank tab first: a browser with no tab at all may quit.
                    if !self.open_tab(attached).await {
                        warn!("no blank tab could be opened; the last tab stays");
                        attached.closing.remove(&target);
                        return None;
                    }
                }
                if !self.close_tab(&attached.browser, &target).await {
                    attached.closing.remove(&target);
                }
                None
            }
            Command::New => {
                if self.handle.state().tabs.is_full() {
                    self.tell_everyone(
                        "too-many-tabs",
                        &format!("A session has at most {MAX_TABS} tabs."),
                    );
                } else if !self.open_tab(attached).await {
                    warn!("a new tab could not be opened");
                }
                None
            }
        }
    }

    /// Lays every tab out at the owner's new size and tells everyone. `false` if Chromium did
    /// not take it.
    ///
    /// Until the renderer has painted at the new size, Chromium may send the old layout
    /// stretched into it, with the new size's metadata: masks placed from the page's reports
    /// would miss the fields it shows. Frames are masked whole meanwhile (`MaskSink::set_blind`).
    async fn resize(&self, attached: &mut Attached, viewport: Viewport) -> bool {
        let tabs: Vec<PageHandle> = attached.pages.values().cloned().collect();
        let masks = self.handle.mask_sink();
        masks.set_blind(true);
        let resized = attached.browser.set_viewport(viewport, &tabs);
        let resized = timed("resizing the page", resized).await.is_some();
        if resized {
            // Everyone's size picker follows at once; frames of the new size are coming.
            *lock(&self.handle.shared.viewport) = viewport;
            info!(
                width = viewport.width,
                height = viewport.height,
                "page resized"
            );
            self.handle.broadcast(&ServerMessage::Viewport {
                width: viewport.width,
                height: viewport.height,
            });
            let painted = attached
                .browser
                .painted_then_report_masks(RESIZE_PAINT_TIMEOUT);
            // A tab that stopped answering holds the driver no longer than this: its frames
            // stay masked whole until it reports again.
            match tokio::time::timeout(RESIZE_PAINT_TIMEOUT * 2, painted).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(error = %e, "the page did not report its masks after a resize")
                }
                Err(_) => debug!("the page did not answer after a resize"),
            }
        }
        masks.set_blind(false);
        if !resized {
            warn!(
                width = viewport.width,
                height = viewport.height,
                "the page could not be resized"
            );
        }
        resized
    }

    /// Opens a blank tab (reported as opened, then shown); `false` if Chromium did not.
    async fn open_tab(&self, attached: &mut Attached) -> bool {
        match timed("opening a tab", attached.browser.open_tab()).await {
            Some(target) => {
                // Its report is handled after this command, like every event.
                attached.opening.insert(target);
                true
            }
            None => false,
        }
    }

    /// Closes tab `target` (reported as closed); `false` if Chromium did not.
    async fn close_tab(&self, browser: &Browser, target: &str) -> bool {
        timed("closing a tab", browser.close_tab(target))
            .await
            .is_some()
    }

    /// Something happened in a tab that is not the active one: its strip entry follows it; a
    /// dialog waits there until someone switches to it; a crashed one is loaded again.
    fn background_event(
        &self,
        attached: &mut Attached,
        target: &str,
        event: PageEvent,
    ) -> Option<Exit> {
        match event {
            PageEvent::Navigated { url, .. } => {
                if self
                    .handle
                    .state()
                    .tabs
                    .update(target, Some(&url), None, None)
                {
                    self.handle.broadcast_tabs();
                }
            }
            PageEvent::Loading(started) => {
                *attached.loads.entry(target.to_string()).or_default() +=
                    if started { 1 } else { -1 };
            }
            PageEvent::Dialog {
                kind,
                message,
                default_prompt,
                url,
            } => {
                let dialog = self.new_dialog(kind, &message, &default_prompt, &url);
                info!(id = dialog.id, kind = ?dialog.kind, "a page in another tab opened a dialog");
                attached.dialogs.insert(target.to_string(), dialog);
                self.mark_dialog_of(target, true);
            }
            PageEvent::DialogClosed { .. } => {
                attached.dialogs.remove(target);
                self.mark_dialog_of(target, false);
            }
            PageEvent::Crashed => {
                let url = self
                    .handle
                    .state()
                    .tabs
                    .info(target)
                    .map(|t| t.url)
                    .unwrap_or_default();
                if !self.may_restart() {
                    warn!(%url, "a page crashed again; giving up");
                    self.handle.end("the page crashed too many times");
                    return Some(Exit::Ended);
                }
                warn!(%url, "the page in another tab crashed; loading it again");
                attached.loads.insert(target.to_string(), 0);
                if let Some(page) = attached.pages.get(target) {
                    page.navigate(&url);
                }
            }
            // Popups, copies and file fields come from the tab participants act on.
            PageEvent::Native { .. } | PageEvent::FileChooser { .. } => {}
            // Recorded from every tab (a background tab's failed request is still evidence).
            PageEvent::Diagnostic(event) => self.handle.record(event.clone()),
            // A blocked HTTPS load in a background tab keeps Chromium's error page (plain HTTP
            // shows the proxy's own explanation); explaining it needs the tab's page, which
            // only the active tab's loop holds. Known gap, see docs/egress.md.
            PageEvent::LoadFailed { .. } => {}
        }
        None
    }

    /// Counts a crash; `false` when there were too many lately to try again.
    fn may_restart(&self) -> bool {
        let mut crashes = lock(&self.crashes);
        let now = Instant::now();
        while crashes
            .front()
            .is_some_and(|&t| now.duration_since(t) > RESTART_WINDOW)
        {
            crashes.pop_front();
        }
        if crashes.len() >= MAX_RESTARTS {
            return false;
        }
        crashes.push_back(now);
        self.handle.shared.restarts.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Tells every participant something happened to the browser.
    fn tell_everyone(&self, code: &str, message: &str) {
        self.handle.broadcast(&ServerMessage::Notice {
            level: "warning",
            code,
            message,
        });
    }

    /// Runs the session until it ends, restarting the browser when it dies; then closes it.
    pub(super) async fn run(
        &self,
        mut attached: Attached,
        screen_task: tokio::task::JoinHandle<()>,
    ) {
        let shared = &self.handle.shared;
        info!(url = %shared.start_url, pid = ?self.handle.browser_pid(), "session started");
        loop {
            match self.drive(&mut attached).await {
                Exit::Ended => break,
                Exit::Switch(target) => {
                    if !self.switch(&mut attached, &target).await {
                        break;
                    }
                }
                Exit::BrowserDied => {
                    let url = self.handle.page_info().url;
                    if !self.may_restart() {
                        warn!("Chromium exited unexpectedly again; giving up");
                        self.handle
                            .end("the browser stopped unexpectedly too many times");
                        break;
                    }
                    warn!(%url, "Chromium exited unexpectedly; starting a new one");
                    self.tell_everyone(
                        "browser-restarting",
                        "The browser stopped unexpectedly. Restarting it on the same page…",
                    );
                    let options = attached.browser.options().clone();
                    let (old, inputs) = attached.detach().await;
                    old.close(CRASHED_CLOSE_GRACE).await;
                    let Some(inputs) = inputs else {
                        self.handle.end("the browser stopped unexpectedly");
                        return self.finish(None, screen_task).await;
                    };
                    let metrics = &self.handle.shared.metrics;
                    metrics.browser_launches.fetch_add(1, Ordering::Relaxed);
                    let relaunched = match Browser::launch(options).await {
                        Ok(browser) => self.attach(browser, inputs).await,
                        Err(e) => {
                            metrics
                                .browser_launch_failures
                                .fetch_add(1, Ordering::Relaxed);
                            Err(e)
                        }
                    };
                    match relaunched {
                        Ok(again) => {
                            attached = again;
                            self.reset_page(&url);
                            attached.navigate(&url);
                            info!(pid = ?self.handle.browser_pid(), "browser restarted");
                            self.tell_everyone(
                                "browser-restarted",
                                "The browser was restarted. Anything typed but not submitted on the page was lost.",
                            );
                        }
                        Err(e) => {
                            warn!(error = %e, "the browser could not be restarted");
                            self.handle
                                .end("the browser stopped and could not be restarted");
                            return self.finish(None, screen_task).await;
                        }
                    }
                }
            }
        }
        self.finish(Some(attached), screen_task).await;
    }

    async fn finish(&self, attached: Option<Attached>, screen_task: tokio::task::JoinHandle<()>) {
        let reason = self.handle.end_reason();
        info!(%reason, "session ending");
        self.handle
            .audit("session.ended", serde_json::json!({ "reason": reason }));
        if let Some(attached) = attached {
            let (browser, _) = attached.detach().await;
            browser.close(self.close_grace).await;
        }
        screen_task.abort();
        info!("session ended; browser closed");
    }

    /// A new browser (or renderer) shows `url`: no dialog, not loading, no title yet.
    fn reset_page(&self, url: &str) {
        let page = {
            let mut state = self.handle.state();
            state.dialog = None;
            state.dialog_answered_by = None;
            state.select = None;
            state.chooser = None;
            state.page.url = url.to_string();
            state.page.loading = true;
            state.page.clone()
        };
        self.handle.broadcast(&ServerMessage::Dialog {
            dialog: None,
            answered_by: None,
        });
        self.handle.broadcast(&ServerMessage::Page(&page));
    }

    /// Takes a screenshot and hands it to the screen like a frame.
    async fn capture(&self, probe: &PageHandle) {
        // Stamped before asking: every mask report newer than this may describe the picture.
        let stamp = self.handle.mask_stamp();
        match tokio::time::timeout(POLL_TIMEOUT, probe.capture()).await {
            Ok(Ok(mut frame)) => {
                frame.mask_seq = stamp;
                self.frames.send_replace(Some(frame));
            }
            Ok(Err(e)) => debug!(error = %e, "screenshot failed"),
            Err(_) => debug!("screenshot took longer than {POLL_TIMEOUT:?}"),
        }
    }

    /// Applies a change to the page info and tells everyone when something changed; the active
    /// tab's strip entry follows its URL and title.
    fn update_page(&self, change: impl FnOnce(&mut PageInfo)) {
        let mut navigated = None;
        let (changed, tab_changed) = {
            let mut state = self.handle.state();
            let before = state.page.clone();
            change(&mut state.page);
            let page = state.page.clone();
            let tab_changed = match state.tabs.active().map(str::to_string) {
                Some(active) => {
                    state
                        .tabs
                        .update(&active, Some(&page.url), Some(&page.title), None)
                }
                None => false,
            };
            if page.url != before.url {
                navigated = Some(page.url.clone());
            }
            ((page != before).then_some(page), tab_changed)
        };
        if let Some(url) = navigated {
            self.handle
                .audit("page.navigated", serde_json::json!({ "url": url }));
        }
        if let Some(page) = changed {
            self.handle.broadcast(&ServerMessage::Page(&page));
        }
        if tab_changed {
            self.handle.broadcast_tabs();
        }
    }

    /// Marks the active tab as waiting on a dialog, or not.
    fn mark_dialog(&self, open: bool) {
        let active = self.handle.state().tabs.active().map(str::to_string);
        if let Some(active) = active {
            self.mark_dialog_of(&active, open);
        }
    }

    /// Marks tab `target` as waiting on a dialog, or not; everyone sees it in the strip.
    fn mark_dialog_of(&self, target: &str, open: bool) {
        let changed = self
            .handle
            .state()
            .tabs
            .update(target, None, None, Some(open));
        if changed {
            self.handle.broadcast_tabs();
        }
    }

    /// A dialog a page opened, numbered, its texts capped.
    fn new_dialog(
        &self,
        kind: DialogKind,
        message: &str,
        default_prompt: &str,
        url: &str,
    ) -> OpenDialog {
        let mut state = self.handle.state();
        let id = state.next_dialog;
        state.next_dialog = state.next_dialog.wrapping_add(1);
        OpenDialog {
            id,
            kind,
            message: message.chars().take(MAX_TEXT_CHARS).collect(),
            default_prompt: default_prompt.chars().take(MAX_TEXT_CHARS).collect(),
            origin: url::Url::parse(url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
        }
    }

    /// Reads back/forward from Chromium's history (after navigations and loads).
    async fn refresh_history(&self, page: &PageHandle) {
        match tokio::time::timeout(HISTORY_TIMEOUT, page.history()).await {
            Ok(Ok(history)) => self.update_page(|p| p.set_history(history)),
            Ok(Err(e)) => debug!(error = %e, "navigation history not read"),
            Err(_) => debug!("navigation history not read in {HISTORY_TIMEOUT:?}"),
        }
    }

    /// What the page did that participants see (URL, title, loading, dialogs). `loads`: main
    /// frame loads started minus stopped. Chromium alternates the two strictly, but they come
    /// through separate listeners and may be seen out of order; their sum never is.
    fn page_event(&self, event: &PageEvent, loads: &mut i32) {
        match event {
            PageEvent::Navigated { url, .. } => {
                let url = url.clone();
                self.update_page(|p| p.url = url);
            }
            PageEvent::Loading(started) => {
                *loads += if *started { 1 } else { -1 };
                let loading = *loads > 0;
                self.update_page(|p| p.loading = loading);
            }
            PageEvent::Dialog {
                kind,
                message,
                default_prompt,
                url,
            } => {
                let dialog = self.new_dialog(*kind, message, default_prompt, url);
                {
                    let mut state = self.handle.state();
                    state.dialog_answered_by = None;
                    state.dialog = Some(dialog.clone());
                }
                info!(id = dialog.id, kind = ?dialog.kind, "the page opened a dialog");
                self.handle.broadcast(&ServerMessage::Dialog {
                    dialog: Some(&dialog),
                    answered_by: None,
                });
                self.mark_dialog(true);
            }
            PageEvent::DialogClosed { accepted } => {
                let by = {
                    let mut state = self.handle.state();
                    state.dialog = None;
                    state.dialog_answered_by.take()
                };
                info!(accepted, by = ?by, "page dialog closed");
                self.handle.broadcast(&ServerMessage::Dialog {
                    dialog: None,
                    answered_by: by.as_deref(),
                });
                self.mark_dialog(false);
            }
            PageEvent::Crashed | PageEvent::FileChooser { .. } | PageEvent::LoadFailed { .. } => {}
            PageEvent::Diagnostic(event) => self.handle.record(event.clone()),
            PageEvent::Native { context, payload } => match crate::native::parse_report(payload) {
                Ok(crate::native::NativeReport::Copy { text }) => {
                    self.handle.copied(&text);
                }
                Ok(crate::native::NativeReport::Target {
                    x,
                    y,
                    selector,
                    tag,
                }) => self.handle.record(crate::recording::event::Event::Target {
                    x,
                    y,
                    selector,
                    tag,
                }),
                Ok(crate::native::NativeReport::Field {
                    selector,
                    tag,
                    input_type,
                    value,
                    checked,
                    masked,
                }) => self.handle.record(crate::recording::event::Event::Field {
                    selector,
                    tag,
                    input_type,
                    value,
                    checked,
                    masked,
                }),
                Ok(report) => {
                    if !self.handle.popup_opened(report, *context) {
                        debug!("a list opened in the page with nobody to show it to");
                    }
                }
                Err(e) => warn!(error = %e, "bad report from the page script ignored"),
            },
        }
    }

    /// The reason the egress proxy just gave for refusing `url`'s host and port, if it did
    /// within [`BLOCK_EXPLAIN_WINDOW`]: a main-frame document for that address is then the
    /// refusal (the proxy's page, or Chromium's error page for a refused tunnel).
    fn recent_block(&self, url: &str) -> Option<(url::Url, String)> {
        let parsed = url::Url::parse(url).ok()?;
        let host = parsed
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let last = crate::lock(&self.last_blocked);
        let (report, at) = last.as_ref()?;
        (at.elapsed() < BLOCK_EXPLAIN_WINDOW
            && host == report.host
            && parsed.port_or_known_default() == Some(report.port))
        .then(|| (parsed.clone(), report.reason.clone()))
    }

    /// A new main-frame document for an address the proxy just refused: its title is the
    /// reason, set here rather than read back (Chromium's history sometimes kept an empty
    /// title for the proxy's page after a renderer swap).
    /// A request the egress proxy blocked: audited, and kept to explain a failed navigation.
    fn note_blocked(&self, report: crate::egress::BlockedRequest) {
        self.handle.audit_blocked(&report);
        *crate::lock(&self.last_blocked) = Some((report, Instant::now()));
    }

    fn title_blocked(&self, url: &str) {
        if let Some((_, reason)) = self.recent_block(url) {
            let title = format!("Blocked: {reason}");
            self.update_page(|p| p.title = title);
        }
    }

    /// Chromium's error page for `url` replaced by cobrowse's explanation when the egress proxy
    /// just refused that host and port (a refused tunnel: Chromium shows only "tunnel
    /// connection failed" and ignores the proxy's own page).
    async fn explain_block(&self, page: &PageHandle, url: &str) {
        let Some((mut shown, reason)) = self.recent_block(url) else {
            return;
        };
        shown.set_query(None);
        shown.set_fragment(None);
        let html = crate::egress::blocked_page(shown.as_str(), &reason);
        match tokio::time::timeout(TAB_COMMAND_TIMEOUT, page.show_document(&html)).await {
            Ok(Ok(())) => {
                info!(host = ?shown.host_str(), %reason, "blocked navigation explained");
                self.title_blocked(url);
            }
            Ok(Err(e)) => debug!(error = %e, "blocked page not shown"),
            Err(_) => debug!("blocked page not shown in time"),
        }
    }

    /// One browser's turn: runs until the session ends or the browser dies.
    async fn drive(&self, attached: &mut Attached) -> Exit {
        let shared = &self.handle.shared;
        let gone = attached.browser.gone();
        let mut commands = self.commands.lock().await;
        let mut blocked = self.blocked.lock().await;
        let mut count = shared.participant_count.subscribe();
        // Participants may have joined before this task first ran: act on the count as it is now.
        count.mark_changed();
        let mut screencasting = false;
        // When a screencast start failed (Chromium refuses commands while the first navigation
        // swaps the page's renderer), the time to try again.
        let mut retry_at: Option<Instant> = None;
        // Screen version when the screencast last started, until its first frame is checked for.
        let mut started_at_seq: Option<u64> = None;
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
        let probe = attached.browser.page();
        // Whether the screen comes from screenshots because the screencast is broken.
        let mut polling = false;
        // Reads of the history (title, back/forward) again after a new document: the reads at
        // its events can fail during a renderer swap ("Not attached to an active page") and its
        // load-stop can be missed then, which left a stale title. Next deadline and its delay.
        let mut history_at: Option<(Instant, Duration)> = None;
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle = sleep_until_or_never(attached.idle_deadline);
            let retry = sleep_until_or_never(retry_at);
            let sync;
            tokio::select! {
                _ = shared.cancel.cancelled() => return Exit::Ended,
                _ = gone.cancelled() => return Exit::BrowserDied,
                _ = idle => {
                    self.handle.end("nobody was connected for too long");
                    return Exit::Ended;
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
                        let page = attached.browser.page_state().await;
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
                    self.capture(&probe).await;
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
                    if changed.is_err() { return Exit::Ended; }
                    let connected = *count.borrow_and_update();
                    // Only a change of the count moves the deadline: a new turn of `drive` (a tab
                    // switch) looks at the count again without it.
                    if attached.last_count != Some(connected) {
                        attached.last_count = Some(connected);
                        attached.idle_deadline = (connected == 0).then(|| Instant::now() + self.idle_timeout);
                    }
                    sync = true;
                }
                Some(event) = attached.tab_events.next() => {
                    if let Some(target) = self.tab_event(attached, event).await {
                        return Exit::Switch(target);
                    }
                    sync = false;
                }
                _ = sleep_until_or_never(history_at.map(|(at, _)| at)) => {
                    self.refresh_history(&probe).await;
                    history_at = history_at
                        .map(|(_, delay)| delay * 2)
                        .filter(|delay| *delay <= HISTORY_REREAD_MAX)
                        .map(|delay| (Instant::now() + delay, delay));
                    sync = false;
                }
                Some(report) = blocked.recv() => {
                    self.note_blocked(report);
                    sync = false;
                }
                Some(command) = commands.recv() => {
                    sync = match command {
                        Command::Viewport(viewport) => {
                            if self.resize(attached, viewport).await {
                                // A restart forces a frame: a page that shrank may
                                // send none otherwise.
                                screencasting = false;
                            }
                            true
                        }
                        command => {
                            if let Some(target) = self.tab_command(attached, command).await {
                                return Exit::Switch(target);
                            }
                            false
                        }
                    };
                }
                Some((target, event)) = attached.events.next() => {
                    if target != attached.active {
                        if let Some(exit) = self.background_event(attached, &target, event) {
                            return exit;
                        }
                        continue;
                    }
                    let loads = attached.loads.entry(target).or_default();
                    self.page_event(&event, loads);
                    sync = match event {
                        PageEvent::Navigated { url, new_document: true } => {
                            debug!(%url, "navigated");
                            // The proxy's report is sent before its refusal reaches Chromium, but
                            // may still wait in the channel behind this event.
                            while let Ok(report) = blocked.try_recv() {
                                self.note_blocked(report);
                            }
                            self.title_blocked(&url);
                            // A new document: an open list, picker or file field is gone with it.
                            {
                                let mut state = self.handle.state();
                                state.select = None;
                                state.chooser = None;
                            }
                            self.refresh_history(&probe).await;
                            history_at = Some((Instant::now() + HISTORY_REREAD, HISTORY_REREAD));
                            if polling {
                                // A new page, a new renderer: give the screencast another chance.
                                info!("navigated: restarting the screencast, screenshots stop");
                                polling = false;
                                shared.stats.polling.store(false, Ordering::Relaxed);
                                screencasting = false;
                                check_after = QUIET_CHECK;
                            }
                            // A navigation that swaps the page's renderer can lose a screencast
                            // started just before it. The new page always paints, so expect a
                            // frame soon, and restart only if none comes (restarts themselves can
                            // stall the screencast).
                            if screencasting {
                                started_at_seq = Some(frames_received(shared));
                                retry_at = Some(Instant::now() + FIRST_FRAME_TIMEOUT);
                            }
                            !screencasting
                        }
                        PageEvent::FileChooser { node, multiple } => {
                            let accept = match tokio::time::timeout(HISTORY_TIMEOUT, probe.file_accept(node)).await {
                                Ok(Ok(accept)) => accept,
                                _ => String::new(),
                            };
                            self.handle.file_chooser_opened(probe.clone(), node, multiple, &accept);
                            false
                        }
                        PageEvent::Navigated { new_document: false, .. } | PageEvent::Loading(false) => {
                            self.refresh_history(&probe).await;
                            false
                        }
                        PageEvent::LoadFailed { url } => {
                            self.explain_block(&probe, &url).await;
                            history_at = Some((Instant::now() + HISTORY_REREAD, HISTORY_REREAD));
                            false
                        }
                        PageEvent::Crashed => {
                            let url = self.handle.page_info().url;
                            if !self.may_restart() {
                                warn!(%url, "the page crashed again; giving up");
                                self.handle.end("the page crashed too many times");
                                return Exit::Ended;
                            }
                            warn!(%url, "the page crashed; loading it again");
                            self.tell_everyone("page-crashed", "The page crashed. Loading it again…");
                            self.reset_page(&url);
                            attached.loads.insert(attached.active.clone(), 0);
                            probe.navigate(&url);
                            // A new renderer: the screencast starts on it once it navigated.
                            polling = false;
                            shared.stats.polling.store(false, Ordering::Relaxed);
                            screencasting = false;
                            false
                        }
                        _ => false,
                    };
                }
            }
            if sync {
                // One screencast per session, running only while someone watches.
                let wanted = *count.borrow() > 0;
                if wanted != screencasting {
                    retry_at = None;
                    let browser = &attached.browser;
                    let change = async {
                        if wanted {
                            browser.start_screencast().await
                        } else {
                            browser.stop_screencast().await
                        }
                    };
                    // A command to a browser that just died waits for chromiumoxide's 30 s
                    // timeout: the death is noticed at once instead.
                    // A tab that stopped answering is given up on like a refusal (and retried).
                    let result = tokio::select! {
                        result = tokio::time::timeout(TAB_COMMAND_TIMEOUT, change) => result,
                        _ = gone.cancelled() => return Exit::BrowserDied,
                    };
                    let result =
                        result.unwrap_or_else(|_| Err(crate::browser::BrowserError::Timeout));
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
    }
}
