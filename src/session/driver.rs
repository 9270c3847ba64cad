//! The driver: the one task that owns a session's browser. It starts and stops the screencast
//! with the participants, checks a quiet screencast against screenshots, follows the page
//! (navigations, title, loading, dialogs) and restarts a crashed renderer or browser. Also the
//! screen task, which turns frames into screen versions.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::*;
use crate::browser::PageEvent;

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
/// A screenshot not taken within this long is given up (the next one is tried).
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// The screen task: turns the latest screencast frame into a screen version, off the async
/// workers. Frames that arrive while one is being processed supersede each other (each is a
/// whole screen); the newest is always processed.
pub(super) async fn run_screen(
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

/// A browser wired to the session: its frame pump, input task and page events.
pub(super) struct Attached {
    browser: Browser,
    events: std::pin::Pin<Box<dyn futures::Stream<Item = PageEvent> + Send>>,
    /// Ends this browser's pump and input task.
    cancel: CancellationToken,
    pump: tokio::task::JoinHandle<()>,
    /// Gives the input queue back when it ends, for the next browser.
    input: tokio::task::JoinHandle<mpsc::Receiver<Input>>,
}

impl Attached {
    pub(super) fn navigate(&self, url: &str) {
        self.browser.navigate(url);
    }

    /// Stops this browser's tasks; returns the browser (to close) and the input queue.
    async fn detach(self) -> (Browser, Option<mpsc::Receiver<Input>>) {
        self.cancel.cancel();
        self.pump.abort();
        let inputs = match self.input.await {
            Ok(inputs) => Some(inputs),
            Err(e) => {
                tracing::error!(error = %e, "the input task failed");
                None
            }
        };
        (self.browser, inputs)
    }
}

/// Why one browser's turn of the driver ended.
enum Exit {
    /// The session ended (or must end): close the browser and stop.
    Ended,
    /// The browser process died: start another one.
    BrowserDied,
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
}

impl Driver {
    pub(super) fn new(
        handle: SessionHandle,
        idle_timeout: Duration,
        close_grace: Duration,
        frames: watch::Sender<Option<RawFrame>>,
    ) -> Self {
        Driver {
            handle,
            idle_timeout,
            close_grace,
            frames,
            crashes: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Wires `browser` to the session: frame pump, input task (taking `inputs`), page events;
    /// makes it the page participants' commands go to. Closes the browser on failure.
    pub(super) async fn attach(
        &self,
        browser: Browser,
        inputs: mpsc::Receiver<Input>,
    ) -> Result<Attached, crate::browser::BrowserError> {
        let shared = &self.handle.shared;
        let cancel = shared.cancel.child_token();
        let listeners = async {
            let pump = browser
                .spawn_frame_pump(self.frames.clone(), cancel.clone())
                .await?;
            Ok::<_, crate::browser::BrowserError>((pump, browser.page_events().await?))
        };
        let (pump, events) = match listeners.await {
            Ok(listeners) => listeners,
            Err(e) => {
                browser.close(self.close_grace).await;
                return Err(e);
            }
        };
        let input = browser.spawn_input(inputs, cancel.clone());
        *lock(&shared.page) = browser.page();
        shared
            .browser_pid
            .store(browser.pid().unwrap_or(0), Ordering::Relaxed);
        Ok(Attached {
            browser,
            events,
            cancel,
            pump,
            input,
        })
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
                    let relaunched = match Browser::launch(options).await {
                        Ok(browser) => self.attach(browser, inputs).await,
                        Err(e) => Err(e),
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
        match tokio::time::timeout(POLL_TIMEOUT, probe.capture()).await {
            Ok(Ok(frame)) => {
                self.frames.send_replace(Some(frame));
            }
            Ok(Err(e)) => debug!(error = %e, "screenshot failed"),
            Err(_) => debug!("screenshot took longer than {POLL_TIMEOUT:?}"),
        }
    }

    /// Applies a change to the page info and tells everyone when something changed.
    fn update_page(&self, change: impl FnOnce(&mut PageInfo)) {
        let changed = {
            let mut state = self.handle.state();
            let before = state.page.clone();
            change(&mut state.page);
            (state.page != before).then(|| state.page.clone())
        };
        if let Some(page) = changed {
            self.handle.broadcast(&ServerMessage::Page(&page));
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
                let dialog = {
                    let mut state = self.handle.state();
                    let id = state.next_dialog;
                    state.next_dialog = state.next_dialog.wrapping_add(1);
                    state.dialog_answered_by = None;
                    let dialog = OpenDialog {
                        id,
                        kind: *kind,
                        message: message.chars().take(MAX_TEXT_CHARS).collect(),
                        default_prompt: default_prompt.chars().take(MAX_TEXT_CHARS).collect(),
                        origin: url::Url::parse(url)
                            .map(|u| u.origin().ascii_serialization())
                            .unwrap_or_default(),
                    };
                    state.dialog = Some(dialog.clone());
                    dialog
                };
                info!(id = dialog.id, kind = ?dialog.kind, "the page opened a dialog");
                self.handle.broadcast(&ServerMessage::Dialog {
                    dialog: Some(&dialog),
                    answered_by: None,
                });
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
            }
            PageEvent::Crashed => {}
            PageEvent::Native { context, payload } => match crate::native::parse_report(payload) {
                Ok(crate::native::NativeReport::Copy { text }) => {
                    self.handle.copied(&text);
                }
                Ok(report) => {
                    if !self.handle.select_opened(report, *context) {
                        debug!("a list opened in the page with nobody to show it to");
                    }
                }
                Err(e) => warn!(error = %e, "bad report from the page script ignored"),
            },
        }
    }

    /// One browser's turn: runs until the session ends or the browser dies.
    async fn drive(&self, attached: &mut Attached) -> Exit {
        let shared = &self.handle.shared;
        let browser = &attached.browser;
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
        let probe = browser.page();
        // Whether the screen comes from screenshots because the screencast is broken.
        let mut polling = false;
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Listeners were registered before this browser's first navigation: every load is seen.
        let mut loads = 0;
        loop {
            let idle = sleep_until_or_never(idle_deadline);
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
                    idle_deadline = (connected == 0).then(|| Instant::now() + self.idle_timeout);
                    sync = true;
                }
                Some(event) = attached.events.next() => {
                    self.page_event(&event, &mut loads);
                    sync = match event {
                        PageEvent::Navigated { url, new_document: true } => {
                            debug!(%url, "navigated");
                            self.refresh_history(&probe).await;
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
                        PageEvent::Navigated { new_document: false, .. } | PageEvent::Loading(false) => {
                            self.refresh_history(&probe).await;
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
                            loads = 0;
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
                    let change = async {
                        if wanted {
                            browser.start_screencast().await
                        } else {
                            browser.stop_screencast().await
                        }
                    };
                    // A command to a browser that just died waits for chromiumoxide's 30 s
                    // timeout: the death is noticed at once instead.
                    let result = tokio::select! {
                        result = change => result,
                        _ = gone.cancelled() => return Exit::BrowserDied,
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
    }
}
