//! Chromium: one process per session, launched and terminated here, and every CDP call cobrowse
//! makes. No other module spawns processes or speaks CDP.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chromiumoxide::browser::{Browser as CdpBrowser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::browser::{
    CancelDownloadParams, DownloadProgressState, EventDownloadProgress, EventDownloadWillBegin,
    SetDownloadBehaviorBehavior, SetDownloadBehaviorParams,
};
use chromiumoxide::cdp::browser_protocol::dom::{
    BackendNodeId, DescribeNodeParams, SetFileInputFilesParams,
};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    ImeSetCompositionParams, InsertTextParams, MouseButton as CdpMouseButton,
};
use chromiumoxide::cdp::browser_protocol::inspector::EventTargetCrashed;
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, BringToFrontParams, CaptureScreenshotFormat,
    CaptureScreenshotParams, CreateIsolatedWorldParams, DialogType, EventFileChooserOpened,
    EventFrameNavigated, EventFrameStartedLoading, EventFrameStoppedLoading,
    EventJavascriptDialogClosed, EventJavascriptDialogOpening, EventNavigatedWithinDocument,
    EventScreencastFrame, FileChooserOpenedMode, GetLayoutMetricsParams,
    GetNavigationHistoryParams, HandleJavaScriptDialogParams, NavigateParams,
    NavigateToHistoryEntryParams, ReloadParams, ScreencastFrameAckParams, SetDocumentContentParams,
    SetInterceptFileChooserDialogParams, StartScreencastFormat, StartScreencastParams,
    StopScreencastParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    CloseTargetParams, CreateTargetParams, EventAttachedToTarget, EventTargetDestroyed,
    EventTargetInfoChanged, GetTargetsParams, TargetId,
};
pub use chromiumoxide::cdp::js_protocol::runtime::ExecutionContextId;
use chromiumoxide::cdp::js_protocol::runtime::{
    AddBindingParams, EvaluateParams, EventBindingCalled, RunIfWaitingForDebuggerParams,
};
use chromiumoxide::Page;
use futures::stream::FuturesUnordered;
use futures::{Future, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::config::Viewport;
use crate::input::{Input, KeyKind, MouseButton, MouseKind};
use crate::navigation::History;
use crate::protocol::DialogKind;
use crate::screen::{FrameSource, RawFrame};

/// The isolated world cobrowse's own page script runs in, and the binding it reports through.
const NATIVE_WORLD: &str = "cobrowse";
const NATIVE_BINDING: &str = "cobrowseNative";
/// Intercepts `<select>` popups (see the file).
const NATIVE_JS: &str = include_str!("js/native.js");
/// The binding the masking part of the page script reports through (`src/js/mask.js`), in the
/// same isolated world. Its own name: the frame pump listens for it, not the driver.
const MASK_BINDING: &str = "cobrowseMask";

/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// CDP commands of one session's input that may await their reply at once.
const MAX_INPUT_IN_FLIGHT: usize = 64;

/// Flags every session's Chromium gets on top of chromiumoxide's defaults (which already include
/// `--disable-background-networking`, `--disable-sync`, `--no-first-run`,
/// `--disable-background-timer-throttling` and `--disable-backgrounding-occluded-windows`).
/// Written without the leading `--` (chromiumoxide adds it).
const EXTRA_FLAGS: &[&str] = &[
    "disable-component-update",
    "disable-quic",
    // Keep animations and timers running at full rate in a page nobody "looks at" locally.
    "disable-renderer-backgrounding",
    // Containers often have a 64 MB /dev/shm; Chromium then crashes on big pages.
    "disable-dev-shm-usage",
    // Frames carry the page's colours unchanged (tests compare them; so do users).
    "force-color-profile=srgb",
];

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("could not prepare a browser profile: {0}")]
    Profile(#[from] std::io::Error),
    #[error("could not configure Chromium: {0}")]
    Config(String),
    #[error("Chromium failed to start: {0}")]
    Launch(chromiumoxide::error::CdpError),
    #[error("Chromium did not answer: {0}")]
    Cdp(#[from] chromiumoxide::error::CdpError),
    #[error("Chromium did not answer in time")]
    Timeout,
    #[error("Chromium sent a frame that cannot be read: {0}")]
    Frame(String),
}

/// What a session needs to launch its browser.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub chromium: PathBuf,
    pub viewport: Viewport,
    /// Device pixels per CSS pixel (`--force-device-scale-factor`: Chromium then renders and
    /// screencasts that many pixels per CSS pixel; emulation alone does not enlarge frames).
    pub scale: f64,
    pub jpeg_quality: u8,
    /// The masking page script with the session's selectors (`mask::page_script`).
    pub mask_script: std::sync::Arc<str>,
    /// Test fault injection: drop every screencast frame after the first (see `Config`).
    pub fault_stall_screencast: bool,
    /// The session's egress proxy (see [`crate::egress`]): every connection of the browser
    /// goes through it. `None` only for tools that launch a browser without a session.
    pub proxy: Option<std::net::SocketAddr>,
}

/// Something that happened to the session's page (see [`Browser::page_events`]).
#[derive(Debug, Clone, PartialEq)]
pub enum PageEvent {
    /// The main frame shows `url`: a new document, or the same one (anchor, `pushState`).
    Navigated { url: String, new_document: bool },
    /// The main frame started (`true`) or stopped (`false`) loading.
    Loading(bool),
    /// A JavaScript dialog opened: the page's scripts wait until it is answered.
    Dialog {
        kind: DialogKind,
        message: String,
        default_prompt: String,
        /// The URL of the frame that opened it.
        url: String,
    },
    /// The open dialog was answered (by a participant, or by the page navigating away).
    DialogClosed { accepted: bool },
    /// The page's renderer process crashed: the page shows nothing until it is reloaded.
    Crashed,
    /// The main frame shows Chromium's error page for `url` (a refused or failed load; it also
    /// comes as [`PageEvent::Navigated`] to `url`).
    LoadFailed { url: String },
    /// A file field asked for files (the page shows no picker: cobrowse intercepts it). `node`
    /// names the field for [`PageHandle::set_files`].
    FileChooser { node: i64, multiple: bool },
    /// cobrowse's page script asks for native UI (a `<select>` popup): `payload` is its JSON,
    /// `context` the isolated world to answer in. Untrusted: the page can reach that code.
    Native {
        context: ExecutionContextId,
        payload: String,
    },
    /// For a recording: a console message, an uncaught exception, or a network request's
    /// progress (`Runtime`, `Log` and `Network` events, which chromiumoxide enables).
    Diagnostic(crate::recording::event::Event),
}

/// Whether a target is a tab: a page, not a prerender (`subtype`) or another kind of target.
fn is_tab(info: &chromiumoxide::cdp::browser_protocol::target::TargetInfo) -> bool {
    info.r#type == "page" && info.subtype.is_none()
}

/// A tab of the browser opened, closed or changed (browser-wide target events; see
/// [`Browser::tab_events`]). Targets are named by their CDP target id.
#[derive(Debug, Clone, PartialEq)]
pub enum TabEvent {
    /// A page target is ready to be driven: a popup, a link opened in a new tab, or a tab
    /// cobrowse opened. `opener`: the tab whose page opened it.
    Opened {
        target: String,
        opener: Option<String>,
        url: String,
    },
    /// A target is gone (not necessarily a page: the session ignores targets it does not know).
    Closed { target: String },
    /// A page target's URL or title changed.
    Changed {
        target: String,
        url: String,
        title: String,
    },
    /// A page started a download (see [`Browser::set_downloads`]); `guid` names it.
    DownloadStarted {
        guid: String,
        url: String,
        name: String,
    },
    /// A download progressed, finished (`done`, saved as `{dir}/{guid}`) or was cancelled.
    Download {
        guid: String,
        received: u64,
        total: u64,
        done: bool,
        cancelled: bool,
    },
}

/// A running Chromium and the page (tab) the session shows now. Owned by the session task;
/// dropping it kills the process (chromiumoxide sets `kill_on_drop`), [`Browser::close`] does it
/// politely.
pub struct Browser {
    browser: CdpBrowser,
    /// The active tab's page: the screencast, input and page commands go to it.
    page: Page,
    /// Polls chromiumoxide's handler; it ends (and cancels `gone`) when the browser is gone.
    handler_task: tokio::task::JoinHandle<()>,
    gone: CancellationToken,
    pid: Option<u32>,
    options: LaunchOptions,
    /// Profile and launcher script; removed from disk when the browser is dropped.
    _workdir: tempfile::TempDir,
}

impl Browser {
    /// Launches Chromium with a fresh profile and opens a blank page of the session's size.
    pub async fn launch(options: LaunchOptions) -> Result<Self, BrowserError> {
        let workdir = tempfile::Builder::new().prefix("cobrowse-").tempdir()?;
        let executable = launcher(workdir.path(), &options.chromium)?;
        if options.proxy.is_some() {
            write_egress_preferences(&workdir.path().join("profile"))?;
        }
        let Viewport { width, height } = options.viewport;
        let config = || {
            let mut builder = BrowserConfig::builder()
                .chrome_executable(executable.clone())
                .new_headless_mode()
                .user_data_dir(workdir.path().join("profile"))
                .viewport(None)
                .window_size(width, height)
                .respect_https_errors()
                .launch_timeout(LAUNCH_TIMEOUT)
                .args(EXTRA_FLAGS.iter().copied())
                // Merged with chromiumoxide's own `--disable-features` list. Paint holding keeps
                // the previous page on screen after a navigation until the new one paints
                // "contentful" content or gets input: on a loaded machine a page of plain boxes
                // stayed blank for good (rAF running, screenshots blank too) until a key press.
                // The cross-origin variant is a feature of its own, and the first navigation
                // (from about:blank) is cross-origin.
                // Memory flags measured (docs/benchmarks.md, Density) are not added: each saved
                // < 2%, broke pages (no WebGL without the software rasterizer), weakened site
                // isolation, or (the spare renderer off: -2 to -3%) made drag and drop fail now
                // and then (the mouse test: 3 runs of 17 with it, 0 of 12 without; but a later CI
                // simulation failed it without the flag too: the link is not established).
                .arg((
                    "disable-features",
                    ["PaintHolding", "PaintHoldingCrossOrigin"].as_slice(),
                ));
            if let Some(proxy) = options.proxy {
                builder = builder.args(proxy_flags(proxy));
            }
            if options.scale != 1.0 {
                builder = builder.arg(format!("force-device-scale-factor={}", options.scale));
            }
            if rustix::process::geteuid().is_root() {
                // Chromium refuses to start as root with its sandbox on.
                builder = builder.no_sandbox();
            }
            builder.build().map_err(BrowserError::Config)
        };
        // Executing a script this process just wrote fails with ETXTBSY while another thread's
        // fork (another session launching) still holds the inherited write descriptor; that
        // child execs or exits within milliseconds, so a short retry is the cure.
        let mut attempt = 0u64;
        let (mut browser, mut handler) = loop {
            match CdpBrowser::launch(config()?).await {
                Ok(launched) => break launched,
                Err(chromiumoxide::error::CdpError::Io(e))
                    if e.raw_os_error() == Some(rustix::io::Errno::TXTBSY.raw_os_error())
                        && attempt < 5 =>
                {
                    attempt += 1;
                    debug!(attempt, "launcher busy (being forked elsewhere); retrying");
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                    // backoff
                }
                Err(e) => return Err(BrowserError::Launch(e)),
            }
        };
        let pid = browser.get_mut_child().and_then(|c| c.as_mut_inner().id());

        let gone = CancellationToken::new();
        watch_exit(pid, gone.clone());
        let handler_gone = gone.clone();
        let handler_task = tokio::spawn(async move {
            // Keep polling after errors: breaking out would make every later call hang.
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    debug!(error = %e, "CDP handler error");
                }
            }
            handler_gone.cancel();
        });

        let page = match open_page(
            &browser,
            options.viewport,
            options.scale,
            &options.mask_script,
        )
        .await
        {
            Ok(page) => page,
            Err(e) => {
                shutdown(&mut browser, &handler_task, pid, Duration::from_secs(2)).await;
                return Err(e);
            }
        };
        Ok(Browser {
            browser,
            page,
            handler_task,
            gone,
            pid,
            options,
            _workdir: workdir,
        })
    }

    /// What it was launched with (to launch another one like it).
    pub fn options(&self) -> &LaunchOptions {
        &self.options
    }

    /// Process id of the Chromium browser process.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Cancelled when the browser process exits or its CDP connection ends.
    pub fn gone(&self) -> CancellationToken {
        self.gone.clone()
    }

    /// Starts navigating the page (see [`PageHandle::navigate`]).
    pub fn navigate(&self, url: &str) {
        self.page().navigate(url);
    }

    /// Lays the active tab, then the others in `tabs`, out at a new size (the owner resized the
    /// page); new tabs and a restarted browser get it too. Fails only if the active tab did not
    /// take it. The screencast must be restarted for its frame size.
    pub async fn set_viewport(
        &mut self,
        viewport: Viewport,
        tabs: &[PageHandle],
    ) -> Result<(), BrowserError> {
        size_page(&self.page, viewport, self.options.scale).await?;
        self.options.viewport = viewport;
        for tab in tabs
            .iter()
            .filter(|t| t.page.target_id() != self.page.target_id())
        {
            // A background tab that does not take it now (closing, held by a dialog) keeps its
            // size; the screen shows the active one.
            if let Err(e) = size_page(&tab.page, viewport, self.options.scale).await {
                debug!(error = %e, "a background tab was not resized");
            }
        }
        Ok(())
    }

    /// Makes `tab` the active tab: the screencast, the input and page commands go to it from
    /// now on (the caller rewires the pump and input tasks).
    pub fn set_active(&mut self, tab: &PageHandle) {
        self.page = tab.page.clone();
    }

    /// Tabs opened, closed or changed anywhere in the browser, and downloads. Subscribe before
    /// anything can open a tab.
    pub async fn tab_events(
        &self,
    ) -> Result<Pin<Box<dyn Stream<Item = TabEvent> + Send>>, BrowserError> {
        // A page that is attached (not merely created) can be driven at once.
        let opened = self
            .browser
            .event_listener::<EventAttachedToTarget>()
            .await?
            .filter_map(|e| async move {
                let info = &e.target_info;
                is_tab(info).then(|| TabEvent::Opened {
                    target: info.target_id.inner().clone(),
                    opener: info.opener_id.as_ref().map(|o| o.inner().clone()),
                    url: info.url.clone(),
                })
            });
        let closed = self
            .browser
            .event_listener::<EventTargetDestroyed>()
            .await?
            .map(|e| TabEvent::Closed {
                target: e.target_id.inner().clone(),
            });
        let changed = self
            .browser
            .event_listener::<EventTargetInfoChanged>()
            .await?
            .filter_map(|e| async move {
                let info = &e.target_info;
                is_tab(info).then(|| TabEvent::Changed {
                    target: info.target_id.inner().clone(),
                    url: info.url.clone(),
                    title: info.title.clone(),
                })
            });
        let started = self
            .browser
            .event_listener::<EventDownloadWillBegin>()
            .await?
            .map(|e| TabEvent::DownloadStarted {
                guid: e.guid.clone(),
                url: e.url.clone(),
                name: e.suggested_filename.clone(),
            });
        let progress = self
            .browser
            .event_listener::<EventDownloadProgress>()
            .await?
            .map(|e| TabEvent::Download {
                guid: e.guid.clone(),
                // Byte counts as CDP gives them (doubles); negative or NaN reads as 0.
                received: e.received_bytes.max(0.0) as u64,
                total: e.total_bytes.max(0.0) as u64,
                done: e.state == DownloadProgressState::Completed,
                cancelled: e.state == DownloadProgressState::Canceled,
            });
        Ok(Box::pin(futures::stream::select_all([
            opened.boxed(),
            closed.boxed(),
            changed.boxed(),
            started.boxed(),
            progress.boxed(),
        ])))
    }

    /// Downloads are saved into `dir`, each under its guid, and reported as events; `None`
    /// refuses them.
    pub async fn set_downloads(&self, dir: Option<&Path>) -> Result<(), BrowserError> {
        let builder = SetDownloadBehaviorParams::builder().events_enabled(true);
        let builder = match dir {
            Some(dir) => builder
                .behavior(SetDownloadBehaviorBehavior::AllowAndName)
                .download_path(dir.to_string_lossy()),
            None => builder.behavior(SetDownloadBehaviorBehavior::Deny),
        };
        self.browser
            .execute(builder.build().map_err(BrowserError::Config)?)
            .await?;
        Ok(())
    }

    /// Stops download `guid` (too large).
    pub async fn cancel_download(&self, guid: &str) -> Result<(), BrowserError> {
        self.browser
            .execute(CancelDownloadParams::new(guid.to_string()))
            .await?;
        Ok(())
    }

    /// The page of tab `target`, made ready like the first one (viewport, page script). For a
    /// tab Chromium just attached ([`TabEvent::Opened`]).
    pub async fn adopt(&self, target: &str) -> Result<PageHandle, BrowserError> {
        let page = self
            .browser
            .get_page(TargetId::from(target.to_string()))
            .await?;
        prepare_page(
            &page,
            self.options.viewport,
            self.options.scale,
            &self.options.mask_script,
        )
        .await?;
        // A popup's first document may have started before the page script was registered
        // (chromiumoxide lets a held popup run as soon as its opener sees it): install the
        // script in the current document too. It installs itself once per world.
        if let Some(frame) = page.mainframe().await? {
            let world = CreateIsolatedWorldParams::builder()
                .frame_id(frame)
                .world_name(NATIVE_WORLD)
                .build()
                .map_err(BrowserError::Config)?;
            let world = page.execute(world).await?;
            for source in [NATIVE_JS, &*self.options.mask_script] {
                let mut script = EvaluateParams::new(source);
                script.context_id = Some(world.result.execution_context_id);
                page.execute(script).await?;
            }
        }
        // Harmless for a tab that is not held.
        page.execute(RunIfWaitingForDebuggerParams::default())
            .await?;
        Ok(self.handle_of(&page))
    }

    /// Opens a blank tab; it is reported as [`TabEvent::Opened`]. Returns its target.
    pub async fn open_tab(&self) -> Result<String, BrowserError> {
        let params = CreateTargetParams::builder()
            .url("about:blank")
            .build()
            .map_err(BrowserError::Config)?;
        let reply = self.browser.execute(params).await?;
        Ok(reply.result.target_id.inner().clone())
    }

    /// Closes tab `target`; it is reported as [`TabEvent::Closed`].
    pub async fn close_tab(&self, target: &str) -> Result<(), BrowserError> {
        self.browser
            .execute(CloseTargetParams::new(TargetId::from(target.to_string())))
            .await?;
        Ok(())
    }

    fn handle_of(&self, page: &Page) -> PageHandle {
        PageHandle {
            page: page.clone(),
            quality: self.options.jpeg_quality,
        }
    }

    /// Starts the screencast, or restarts it on the page's current renderer. Chromium refuses a
    /// second start ("Screencast is already active"), and a start just before a navigation swaps
    /// the renderer can be lost with the old one; stopping first covers both.
    pub async fn start_screencast(&self) -> Result<(), BrowserError> {
        // A page Chromium considers hidden paints only the one frame a start forces (seen on a
        // loaded machine right after the first navigation): make it the visible one first.
        self.page.execute(BringToFrontParams::default()).await?;
        let _ = self.page.execute(StopScreencastParams::default()).await;
        // Frames come at their own size, never scaled down to a limit: a frame's pixels are then
        // its metadata's CSS size at the device scale, and one that is not (the old layout's
        // surface stretched into a new size while a resize is under way) can be told apart
        // (`mask::frame_fits`). A restart after a resize still matters: it forces a frame.
        let Viewport { width, height } = crate::config::MAX_VIEWPORT;
        let scale = self.options.scale;
        let params = StartScreencastParams::builder()
            .format(StartScreencastFormat::Jpeg)
            .quality(i64::from(self.options.jpeg_quality))
            .max_width((f64::from(width) * scale).round() as i64)
            .max_height((f64::from(height) * scale).round() as i64)
            .every_nth_frame(1)
            .build();
        self.page.execute(params).await?;
        Ok(())
    }

    /// Returns once the shown tab's renderer has run [`PAINTS_AFTER_RESIZE`] animation frames
    /// (at the size it has now), or after `limit` (a hidden page runs none); then has the page
    /// script report its masked elements. Used after a resize: until the renderer has painted
    /// at the new size, Chromium may send the old layout stretched into it (see
    /// `mask::frame_fits`).
    pub async fn painted_then_report_masks(&self, limit: Duration) -> Result<(), BrowserError> {
        let frames = format!(
            "new Promise(r => {{ let n = 0; const f = () => (++n >= {PAINTS_AFTER_RESIZE} ? r(true) : requestAnimationFrame(f)); requestAnimationFrame(f); }})"
        );
        if let Err(e) = eval_in_native_world(&self.page, &frames, true, limit).await {
            debug!(error = %e, "no animation frames after a resize");
        }
        ask_for_masks(&self.page, &self.options.mask_script).await
    }

    /// What the page says of its own visibility, focus and animation frames, for diagnostics.
    pub async fn page_state(&self) -> Result<String, BrowserError> {
        let js = "(async () => { const raf = await Promise.race([new Promise(r => requestAnimationFrame(() => r('raf fired'))), new Promise(r => setTimeout(() => r('no raf in 500 ms'), 500))]); return `${document.visibilityState} focus=${document.hasFocus()} ${raf}`; })()";
        let eval = self.page.evaluate(js);
        match tokio::time::timeout(Duration::from_secs(2), eval).await {
            Ok(result) => Ok(result?.into_value::<String>().unwrap_or_default()),
            Err(_) => Ok("no answer in 2 s".into()),
        }
    }

    /// A handle that asks the page things (a screenshot, the cursor under a point), usable from
    /// other tasks.
    pub fn page(&self) -> PageHandle {
        self.handle_of(&self.page)
    }

    pub async fn stop_screencast(&self) -> Result<(), BrowserError> {
        self.page.execute(StopScreencastParams::default()).await?;
        Ok(())
    }

    /// Starts the task that hands screencast frames to the screen (latest frame wins: the screen
    /// task drops a frame superseded before it got to it). It acks each frame as soon as it
    /// arrives (Chromium stops capturing with 3 unacked) and ends with `cancel`.
    ///
    /// The page script's mask reports go through the pump too (to `masks`), and each frame is
    /// stamped with the newest report seen before it: chromiumoxide's handler puts CDP events
    /// into their listeners in the order Chromium sent them, so draining the reports already
    /// queued before taking a frame gives every report the page sent before that frame.
    pub async fn spawn_frame_pump(
        &self,
        frames_out: watch::Sender<Option<RawFrame>>,
        masks: crate::mask::MaskSink,
        blank: bool,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, BrowserError> {
        let mut frames = self.page.event_listener::<EventScreencastFrame>().await?;
        let mut reports = self.page.event_listener::<EventBindingCalled>().await?;
        let page = self.page.clone();
        let stall = self.options.fault_stall_screencast;
        // A tab shown after others (switched to, a popup) may show anything: its geometry is
        // unknown until its page script reports, and it is masked whole till then. `blank`: the
        // tab is cobrowse's own about:blank, about to be navigated (a new session or browser):
        // its next document reports before it paints.
        if !blank {
            masks.push(None);
        }
        let ask = page.clone();
        let mask_script = self.options.mask_script.clone();
        tokio::spawn(async move {
            if let Err(e) = ask_for_masks(&ask, &mask_script).await {
                debug!(error = %e, "asking the page for its masked elements failed");
            }
        });
        let is_mask = |e: &EventBindingCalled| e.name == MASK_BINDING;
        Ok(tokio::spawn(async move {
            let mut delivered = 0u64;
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    report = reports.next() => match report {
                        Some(e) if is_mask(&e) => {
                            masks.push(Some(e.payload.clone()));
                            continue;
                        }
                        Some(_) => continue,
                        None => {
                            // Without reports nothing could be masked: resubscribe, and mask
                            // everything until the page reports again.
                            masks.push(None);
                            match resubscribe(&page, "mask reports").await {
                                Some(again) => {
                                    reports = again;
                                    continue;
                                }
                                None => break,
                            }
                        }
                    },
                    frame = frames.next() => match frame {
                        Some(f) => f,
                        None => {
                            // chromiumoxide dropped the subscription: subscribe again, or the
                            // screen would freeze while everything else still works.
                            match resubscribe(&page, "screencast frames").await {
                                Some(again) => {
                                    frames = again;
                                    continue;
                                }
                                None => break,
                            }
                        }
                    },
                };
                let arrived = tokio::time::Instant::now();
                trace!(session = frame.session_id, "screencast frame arrived");
                // Reports Chromium sent before this frame are already queued: take them first.
                while let Some(Some(e)) = futures::FutureExt::now_or_never(reports.next()) {
                    if is_mask(&e) {
                        masks.push(Some(e.payload.clone()));
                    }
                }
                // Ack at once, in a task of its own: the pump never waits for Chromium's reply
                // (a lost reply would otherwise stall the screen for chromiumoxide's 30 s timeout).
                let ack_page = page.clone();
                let ack = ScreencastFrameAckParams::new(frame.session_id);
                tokio::spawn(async move {
                    if let Err(e) = ack_page.execute(ack).await {
                        debug!(error = %e, "screencast ack failed");
                    }
                });
                delivered += 1;
                if stall && delivered > 1 {
                    continue;
                }
                let data: &str = frame.data.as_ref();
                match base64::engine::general_purpose::STANDARD.decode(data) {
                    Ok(jpeg) => {
                        let m = &frame.metadata;
                        trace!(
                            bytes = jpeg.len(),
                            css_w = m.device_width,
                            css_h = m.device_height,
                            top = m.offset_top,
                            scroll_y = m.scroll_offset_y,
                            "frame"
                        );
                        frames_out.send_replace(Some(RawFrame {
                            jpeg: Bytes::from(jpeg),
                            css_width: m.device_width,
                            css_height: m.device_height,
                            offset_top: m.offset_top,
                            scroll_x: m.scroll_offset_x,
                            scroll_y: m.scroll_offset_y,
                            arrived,
                            source: FrameSource::Screencast,
                            mask_seq: masks.stamp_frame(),
                        }));
                    }
                    Err(e) => warn!(error = %e, "screencast frame with bad base64 dropped"),
                }
            }
        }))
    }

    /// What happens to the page that the session shows participants or must react to:
    /// main-frame navigations (new documents and in-document ones), loading, JavaScript dialogs,
    /// renderer crashes. (Titles are read with the history after navigations and loads:
    /// `Target.targetInfoChanged` reports the URL as the title while a page loads, and not
    /// always the title after.) One stream per tab, in arrival order per kind; it ends when the
    /// tab closes.
    pub async fn page_events(
        tab: &PageHandle,
    ) -> Result<Pin<Box<dyn Stream<Item = PageEvent> + Send>>, BrowserError> {
        let page = &tab.page;
        let main_frame = |page: &Page| {
            let page = page.clone();
            move |frame_id: chromiumoxide::cdp::browser_protocol::page::FrameId| {
                let page = page.clone();
                async move { page.mainframe().await.ok().flatten() == Some(frame_id) }
            }
        };
        let navigated = page
            .event_listener::<EventFrameNavigated>()
            .await?
            .flat_map(|e| {
                let events = if e.frame.parent_id.is_some() {
                    Vec::new()
                } else if let Some(failed) = &e.frame.unreachable_url {
                    // Chromium's error page commits as `chrome-error://chromewebdata/`; the
                    // participant reads the address that failed, as in a local browser.
                    vec![
                        PageEvent::Navigated {
                            url: failed.clone(),
                            new_document: true,
                        },
                        PageEvent::LoadFailed {
                            url: failed.clone(),
                        },
                    ]
                } else {
                    vec![PageEvent::Navigated {
                        url: e.frame.url.clone() + e.frame.url_fragment.as_deref().unwrap_or(""),
                        new_document: true,
                    }]
                };
                futures::stream::iter(events)
            });
        let is_main = main_frame(page);
        let within = page
            .event_listener::<EventNavigatedWithinDocument>()
            .await?
            .filter_map(move |e| {
                let check = is_main(e.frame_id.clone());
                async move {
                    check.await.then(|| PageEvent::Navigated {
                        url: e.url.clone(),
                        new_document: false,
                    })
                }
            });
        let is_main = main_frame(page);
        let started = page
            .event_listener::<EventFrameStartedLoading>()
            .await?
            .filter_map(move |e| {
                let check = is_main(e.frame_id.clone());
                async move { check.await.then_some(PageEvent::Loading(true)) }
            });
        let is_main = main_frame(page);
        let stopped = page
            .event_listener::<EventFrameStoppedLoading>()
            .await?
            .filter_map(move |e| {
                let check = is_main(e.frame_id.clone());
                async move { check.await.then_some(PageEvent::Loading(false)) }
            });
        let dialogs = page
            .event_listener::<EventJavascriptDialogOpening>()
            .await?
            .map(|e| PageEvent::Dialog {
                kind: match e.r#type {
                    DialogType::Alert => DialogKind::Alert,
                    DialogType::Confirm => DialogKind::Confirm,
                    DialogType::Prompt => DialogKind::Prompt,
                    DialogType::Beforeunload => DialogKind::BeforeUnload,
                },
                message: e.message.clone(),
                default_prompt: e.default_prompt.clone().unwrap_or_default(),
                url: e.url.clone(),
            });
        let dialogs_closed = page
            .event_listener::<EventJavascriptDialogClosed>()
            .await?
            .map(|e| PageEvent::DialogClosed { accepted: e.result });
        let crashed = page
            .event_listener::<EventTargetCrashed>()
            .await?
            .map(|_| PageEvent::Crashed);
        let files = page
            .event_listener::<EventFileChooserOpened>()
            .await?
            .filter_map(|e| async move {
                e.backend_node_id.map(|node| PageEvent::FileChooser {
                    node: *node.inner(),
                    multiple: e.mode == FileChooserOpenedMode::SelectMultiple,
                })
            });
        let native = page
            .event_listener::<EventBindingCalled>()
            .await?
            .filter_map(|e| async move {
                (e.name == NATIVE_BINDING).then(|| PageEvent::Native {
                    context: e.execution_context_id,
                    payload: e.payload.clone(),
                })
            });
        let mut streams = diagnostics(page).await?;
        streams.extend([
            native.boxed(),
            navigated.boxed(),
            within.boxed(),
            started.boxed(),
            stopped.boxed(),
            dialogs.boxed(),
            dialogs_closed.boxed(),
            crashed.boxed(),
            files.boxed(),
        ]);
        Ok(Box::pin(futures::stream::select_all(streams)))
    }

    /// Starts the task that sends input into the page, in order, until `inputs` closes or
    /// `cancel` fires. Coordinates are already page CSS pixels.
    /// The task gives the input queue back when it ends, for the next browser after a crash.
    pub fn spawn_input(
        &self,
        inputs: mpsc::Receiver<Input>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<mpsc::Receiver<Input>> {
        tokio::spawn(run_input(self.page.clone(), inputs, cancel))
    }

    /// Closes the browser: asks Chromium to quit, waits up to `grace`, then kills it. Removes the
    /// profile. Never leaves a process behind.
    pub async fn close(mut self, grace: Duration) {
        shutdown(&mut self.browser, &self.handler_task, self.pid, grace).await;
    }
}

/// The session's page, for the tasks that ask it things (a screenshot, the cursor under a point)
/// or tell it where to go (navigation, history, dialog answers) without going through the driver
/// (see [`Browser::page`]).
#[derive(Clone)]
pub struct PageHandle {
    page: Page,
    quality: u8,
}

impl PageHandle {
    /// The CDP target id of the tab.
    pub fn target(&self) -> &str {
        self.page.target_id().inner()
    }

    /// Starts navigating the page. Returns at once: the outcome shows on the screen (Chromium
    /// renders its own error page) and in the page events.
    pub fn navigate(&self, url: &str) {
        let page = self.page.clone();
        let params = NavigateParams::new(url);
        tokio::spawn(async move {
            match page.execute(params).await {
                Ok(reply) => {
                    if let Some(error) = &reply.result.error_text {
                        info!(%error, "navigation failed");
                    }
                }
                Err(e) => debug!(error = %e, "navigate command failed"),
            }
        });
    }

    /// Replaces the main frame's document with `html` (the explanation of a blocked address
    /// over Chromium's error page); the URL stays the address that failed.
    pub async fn show_document(&self, html: &str) -> Result<(), BrowserError> {
        let frame = self
            .page
            .mainframe()
            .await?
            .ok_or_else(|| BrowserError::Config("the page has no main frame".into()))?;
        self.page
            .execute(SetDocumentContentParams::new(frame, html))
            .await?;
        Ok(())
    }

    /// Whether the page's history has entries before and after the current one.
    pub async fn history(&self) -> Result<History, BrowserError> {
        let h = self
            .page
            .execute(GetNavigationHistoryParams::default())
            .await?;
        let title = usize::try_from(h.result.current_index)
            .ok()
            .and_then(|i| h.result.entries.get(i))
            .map(|e| e.title.clone())
            .unwrap_or_default();
        let urls: Vec<&str> = h.result.entries.iter().map(|e| e.url.as_str()).collect();
        Ok(History::new(h.result.current_index, &urls, title))
    }

    /// Goes `delta` entries back (negative) or forward in the page's history, if there is such
    /// an entry. Returns whether there was.
    pub async fn go(&self, delta: i64) -> Result<bool, BrowserError> {
        let h = self
            .page
            .execute(GetNavigationHistoryParams::default())
            .await?;
        let target = h.result.current_index + delta;
        let urls: Vec<&str> = h.result.entries.iter().map(|e| e.url.as_str()).collect();
        let entry = usize::try_from(target)
            .ok()
            .and_then(|i| h.result.entries.get(i));
        let Some(entry) = entry.filter(|_| History::may_go_to(&urls, target)) else {
            return Ok(false);
        };
        let params = NavigateToHistoryEntryParams::new(entry.id);
        let page = self.page.clone();
        // Like `navigate`: the outcome shows in the page events, a slow page must not hold the caller.
        tokio::spawn(async move {
            if let Err(e) = page.execute(params).await {
                debug!(error = %e, "history navigation failed");
            }
        });
        Ok(true)
    }

    /// Reloads the page.
    pub fn reload(&self) {
        let page = self.page.clone();
        tokio::spawn(async move {
            if let Err(e) = page.execute(ReloadParams::default()).await {
                debug!(error = %e, "reload failed");
            }
        });
    }

    /// Applies the choice for popup `id` (option `index`, or -1: closed unchanged) in the
    /// isolated world that reported it. Returns whether the page took it.
    pub async fn choose(
        &self,
        context: ExecutionContextId,
        id: u32,
        index: i64,
    ) -> Result<bool, BrowserError> {
        let mut params = EvaluateParams::new(format!("__cobrowseChoose({id}, {index})"));
        params.context_id = Some(context);
        params.return_by_value = Some(true);
        let reply = self.page.execute(params).await?;
        Ok(reply.result.result.value == Some(serde_json::Value::Bool(true)))
    }

    /// The `accept` attribute of file field `node` ("" when it has none).
    pub async fn file_accept(&self, node: i64) -> Result<String, BrowserError> {
        let params = DescribeNodeParams::builder()
            .backend_node_id(BackendNodeId::new(node))
            .build();
        let described = self.page.execute(params).await?;
        let attributes = described.result.node.attributes.clone().unwrap_or_default();
        Ok(attributes
            .chunks(2)
            .find(|pair| pair[0].eq_ignore_ascii_case("accept"))
            .and_then(|pair| pair.get(1).cloned())
            .unwrap_or_default())
    }

    /// Puts `files` (paths on this machine) into file field `node`; the page gets `input` and
    /// `change` as if a person had picked them.
    pub async fn set_files(&self, node: i64, files: Vec<String>) -> Result<(), BrowserError> {
        let params = SetFileInputFilesParams::builder()
            .files(files)
            .backend_node_id(BackendNodeId::new(node))
            .build()
            .map_err(BrowserError::Config)?;
        self.page.execute(params).await?;
        Ok(())
    }

    /// Applies `value` to picker `id` (`None`: closed unchanged) in the isolated world that
    /// reported it. Returns whether the field took it.
    pub async fn pick(
        &self,
        context: ExecutionContextId,
        id: u32,
        value: Option<String>,
    ) -> Result<bool, BrowserError> {
        // The value goes in as a JSON string literal: never as code.
        let literal =
            serde_json::to_string(&value).map_err(|e| BrowserError::Config(e.to_string()))?;
        let mut params = EvaluateParams::new(format!("__cobrowsePick({id}, {literal})"));
        params.context_id = Some(context);
        params.return_by_value = Some(true);
        let reply = self.page.execute(params).await?;
        Ok(reply.result.result.value == Some(serde_json::Value::Bool(true)))
    }

    /// Answers the open JavaScript dialog: OK (`accept`) or Cancel; `prompt_text` for a prompt.
    pub async fn answer_dialog(
        &self,
        accept: bool,
        prompt_text: Option<String>,
    ) -> Result<(), BrowserError> {
        let mut params = HandleJavaScriptDialogParams::new(accept);
        params.prompt_text = prompt_text;
        self.page.execute(params).await?;
        Ok(())
    }

    /// The CSS cursor the page shows at viewport point (`x`, `y`) in CSS pixels, as computed
    /// (`auto` resolved to `text` over text and editable fields, like a browser does). Raw: pass
    /// it through [`crate::input::cursor_keyword`] before showing it anywhere.
    pub async fn cursor_at(&self, x: f64, y: f64) -> Result<String, BrowserError> {
        let js = format!(
            "((x, y) => {{ const el = document.elementFromPoint(x, y); if (!el) return 'default'; \
             const c = getComputedStyle(el).cursor; if (c !== 'auto') return c; \
             const plain = ['button','submit','reset','checkbox','radio','range','color','file','image']; \
             if (el.isContentEditable || el.tagName === 'TEXTAREA' || (el.tagName === 'INPUT' && !plain.includes(el.type))) return 'text'; \
             const r = document.caretRangeFromPoint && document.caretRangeFromPoint(x, y); \
             return r && r.startContainer.nodeType === 3 && r.startContainer.textContent.trim() ? 'text' : 'default'; }})({x}, {y})"
        );
        let result = self.page.evaluate(js).await?;
        Ok(result.into_value::<String>().unwrap_or_default())
    }

    /// One frame taken as a screenshot, with the scroll position: for checking a quiet
    /// screencast, and instead of it while it is broken. Slower than a screencast frame (tens of
    /// ms of Chromium's time).
    /// The scroll position is read before and after: a page that scrolled meanwhile gives no
    /// frame (masks are placed by that position, it must be the picture's).
    pub async fn capture(&self) -> Result<RawFrame, BrowserError> {
        let metrics = self.page.execute(GetLayoutMetricsParams::default()).await?;
        let shot = self
            .page
            .execute(
                CaptureScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Jpeg)
                    .quality(i64::from(self.quality))
                    .optimize_for_speed(true)
                    .build(),
            )
            .await?;
        let arrived = tokio::time::Instant::now();
        let after = self.page.execute(GetLayoutMetricsParams::default()).await?;
        let (v, w) = (
            &metrics.result.css_visual_viewport,
            &after.result.css_visual_viewport,
        );
        if (v.page_x, v.page_y, v.client_width) != (w.page_x, w.page_y, w.client_width) {
            return Err(BrowserError::Frame(
                "the page scrolled during the screenshot".into(),
            ));
        }
        let data: &str = shot.result.data.as_ref();
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| BrowserError::Frame(e.to_string()))?;
        let v = &metrics.result.css_visual_viewport;
        Ok(RawFrame {
            jpeg: Bytes::from(jpeg),
            css_width: v.client_width,
            css_height: v.client_height,
            offset_top: 0.0,
            scroll_x: v.page_x,
            scroll_y: v.page_y,
            arrived,
            source: FrameSource::Screenshot,
            // Stamped by whoever publishes it (the driver), before it asked.
            mask_seq: 0,
        })
    }
}

async fn open_page(
    browser: &CdpBrowser,
    viewport: Viewport,
    scale: f64,
    mask_script: &str,
) -> Result<Page, BrowserError> {
    let target = CreateTargetParams::builder()
        .url("about:blank")
        .new_window(true)
        .build()
        .map_err(BrowserError::Config)?;
    let page = browser.new_page(target).await?;
    // Chromium starts with a tab of its own; it would only cost memory.
    if let Ok(targets) = browser.execute(GetTargetsParams::default()).await {
        for target in &targets.target_infos {
            if target.r#type == "page" && &target.target_id != page.target_id() {
                let _ = browser
                    .execute(CloseTargetParams::new(target.target_id.clone()))
                    .await;
            }
        }
    }
    prepare_page(&page, viewport, scale, mask_script).await?;
    Ok(page)
}

/// Lays the page out at `viewport` CSS pixels, `scale` device pixels each.
async fn size_page(page: &Page, viewport: Viewport, scale: f64) -> Result<(), BrowserError> {
    page.execute(SetDeviceMetricsOverrideParams::new(
        viewport.width,
        viewport.height,
        scale,
        false,
    ))
    .await?;
    Ok(())
}

/// What every tab gets before participants see it: the session's viewport (a popup's window may
/// be any size; the screen is not) and cobrowse's page script, for every new document, in a world
/// the page cannot see.
async fn prepare_page(
    page: &Page,
    viewport: Viewport,
    scale: f64,
    mask_script: &str,
) -> Result<(), BrowserError> {
    size_page(page, viewport, scale).await?;
    for name in [NATIVE_BINDING, MASK_BINDING] {
        let mut binding = AddBindingParams::new(name);
        binding.execution_context_name = Some(NATIVE_WORLD.into());
        page.execute(binding).await?;
    }
    for source in [NATIVE_JS, mask_script] {
        let mut script = AddScriptToEvaluateOnNewDocumentParams::new(source);
        script.world_name = Some(NATIVE_WORLD.into());
        page.execute(script).await?;
    }
    // File fields open no picker on the server's screen: the participant picks on their device.
    page.execute(SetInterceptFileChooserDialogParams::new(true))
        .await?;
    Ok(())
}

/// Longest console message, exception text or URL kept in a recording, in characters.
const MAX_DIAGNOSTIC_TEXT: usize = 4096;
/// Headers kept per request or response in a recording.
const MAX_HEADERS: usize = 64;
/// Headers whose values a recording never holds.
const SECRET_HEADERS: &[&str] = &[
    "cookie",
    "set-cookie",
    "authorization",
    "proxy-authorization",
];

fn clip_text(s: &str) -> String {
    if s.chars().count() <= MAX_DIAGNOSTIC_TEXT {
        s.to_string()
    } else {
        s.chars().take(MAX_DIAGNOSTIC_TEXT).collect::<String>() + "…"
    }
}

/// A CDP enum's wire name (`"Document"`, `"network"` …).
fn wire_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn headers_of(
    headers: &chromiumoxide::cdp::browser_protocol::network::Headers,
) -> Vec<crate::recording::event::Header> {
    let Some(map) = headers.inner().as_object() else {
        return Vec::new();
    };
    map.iter()
        .take(MAX_HEADERS)
        .map(|(name, value)| crate::recording::event::Header {
            name: clip_text(name),
            value: if SECRET_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                "[redacted]".into()
            } else {
                clip_text(value.as_str().unwrap_or_default())
            },
        })
        .collect()
}

/// A console argument as `console.log` would print it.
fn console_arg(arg: &chromiumoxide::cdp::js_protocol::runtime::RemoteObject) -> String {
    match &arg.value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => arg
            .description
            .clone()
            .or_else(|| arg.unserializable_value.as_ref().map(|u| u.inner().clone()))
            .unwrap_or_else(|| wire_name(&arg.r#type)),
    }
}

fn line(n: i64) -> Option<u32> {
    u32::try_from(n.saturating_add(1)).ok()
}

/// The page's console, exceptions and network activity, as recording events.
async fn diagnostics(
    page: &Page,
) -> Result<Vec<futures::stream::BoxStream<'static, PageEvent>>, BrowserError> {
    use crate::recording::event::{Event, Level};
    use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
    use chromiumoxide::cdp::browser_protocol::network::{
        EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent, EventResponseReceived,
    };
    use chromiumoxide::cdp::js_protocol::runtime::{
        ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
    };
    let console = page
        .event_listener::<EventConsoleApiCalled>()
        .await?
        .map(|e| {
            let level = match e.r#type {
                ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert => Level::Error,
                ConsoleApiCalledType::Warning => Level::Warning,
                ConsoleApiCalledType::Info => Level::Info,
                ConsoleApiCalledType::Debug => Level::Debug,
                _ => Level::Log,
            };
            let text = e.args.iter().map(console_arg).collect::<Vec<_>>().join(" ");
            let top = e.stack_trace.as_ref().and_then(|s| s.call_frames.first());
            PageEvent::Diagnostic(Event::Console {
                level,
                text: clip_text(&text),
                source: "console-api".into(),
                url: top.map(|f| clip_text(&f.url)).filter(|u| !u.is_empty()),
                line: top.and_then(|f| line(f.line_number)),
            })
        });
    let log = page.event_listener::<EventEntryAdded>().await?.map(|e| {
        let entry = &e.entry;
        PageEvent::Diagnostic(Event::Console {
            level: match entry.level {
                LogEntryLevel::Error => Level::Error,
                LogEntryLevel::Warning => Level::Warning,
                LogEntryLevel::Info => Level::Info,
                LogEntryLevel::Verbose => Level::Debug,
            },
            text: clip_text(&entry.text),
            source: wire_name(&entry.source),
            url: entry.url.as_deref().map(clip_text),
            line: entry.line_number.and_then(line),
        })
    });
    let exceptions = page
        .event_listener::<EventExceptionThrown>()
        .await?
        .map(|e| {
            let d = &e.exception_details;
            // The exception's own description ("Error: boom\n    at …") says more than `text`
            // ("Uncaught").
            let described = d.exception.as_ref().and_then(|x| x.description.clone());
            let text = match &described {
                Some(desc) => format!("{} {}", d.text, desc.lines().next().unwrap_or_default()),
                None => d.text.clone(),
            };
            PageEvent::Diagnostic(Event::Exception {
                text: clip_text(&text),
                url: d.url.as_deref().map(clip_text),
                line: line(d.line_number),
                column: line(d.column_number),
                stack: described.map(|s| clip_text(&s)),
            })
        });
    let requests = page
        .event_listener::<EventRequestWillBeSent>()
        .await?
        .map(|e| {
            let body_bytes = e.request.post_data_entries.as_ref().map(|entries| {
                entries
                    .iter()
                    .filter_map(|p| p.bytes.as_ref())
                    .map(|b| {
                        let b: &str = b.as_ref();
                        (b.len() as u64) * 3 / 4
                    })
                    .sum()
            });
            PageEvent::Diagnostic(Event::Request {
                id: e.request_id.inner().clone(),
                method: clip_text(&e.request.method),
                url: clip_text(
                    &(e.request.url.clone() + e.request.url_fragment.as_deref().unwrap_or("")),
                ),
                resource_type: e.r#type.as_ref().map(wire_name).unwrap_or_default(),
                headers: headers_of(&e.request.headers),
                wall_ms: (*e.wall_time.inner() * 1000.0) as u64,
                body_bytes,
            })
        });
    let responses = page
        .event_listener::<EventResponseReceived>()
        .await?
        .map(|e| {
            let r = &e.response;
            PageEvent::Diagnostic(Event::Response {
                id: e.request_id.inner().clone(),
                status: u16::try_from(r.status).unwrap_or(0),
                status_text: clip_text(&r.status_text),
                mime_type: clip_text(&r.mime_type),
                headers: headers_of(&r.headers),
                protocol: r.protocol.clone().unwrap_or_default(),
            })
        });
    let finished = page
        .event_listener::<EventLoadingFinished>()
        .await?
        .map(|e| {
            PageEvent::Diagnostic(Event::Finished {
                id: e.request_id.inner().clone(),
                bytes: e.encoded_data_length.max(0.0) as u64,
            })
        });
    let failed = page.event_listener::<EventLoadingFailed>().await?.map(|e| {
        PageEvent::Diagnostic(Event::Failed {
            id: e.request_id.inner().clone(),
            error: clip_text(&e.error_text),
            canceled: e.canceled.unwrap_or(false),
            blocked: e.blocked_reason.as_ref().map(wire_name),
        })
    });
    Ok(vec![
        console.boxed(),
        log.boxed(),
        exceptions.boxed(),
        requests.boxed(),
        responses.boxed(),
        finished.boxed(),
        failed.boxed(),
    ])
}

/// Animation frames a renderer runs after a resize before its frames are trusted to show the
/// new layout: its compositor pipeline is a few frames deep, and the browser draws the old
/// layout stretched until the first new one arrives.
const PAINTS_AFTER_RESIZE: u32 = 4;

/// Runs the masking script in the main frame's isolated world: it installs itself where it is
/// missing, and otherwise reports at once (a tab being shown must say where its fields are).
async fn ask_for_masks(page: &Page, mask_script: &str) -> Result<(), BrowserError> {
    eval_in_native_world(page, mask_script, false, Duration::from_secs(5)).await
}

/// Evaluates `source` in cobrowse's isolated world of the page's main frame (the page's own
/// scripts cannot change what it calls), awaiting the promise it returns when `await_promise`.
/// Nothing to do without a main frame.
async fn eval_in_native_world(
    page: &Page,
    source: &str,
    await_promise: bool,
    limit: Duration,
) -> Result<(), BrowserError> {
    let Some(frame) = page.mainframe().await? else {
        return Ok(());
    };
    let world = CreateIsolatedWorldParams::builder()
        .frame_id(frame)
        .world_name(NATIVE_WORLD)
        .build()
        .map_err(BrowserError::Config)?;
    let world = tokio::time::timeout(limit, page.execute(world))
        .await
        .map_err(|_| BrowserError::Timeout)??;
    let mut script = EvaluateParams::new(source);
    script.context_id = Some(world.result.execution_context_id);
    script.await_promise = Some(await_promise);
    tokio::time::timeout(limit, page.execute(script))
        .await
        .map_err(|_| BrowserError::Timeout)??;
    Ok(())
}

/// Asks Chromium to quit, waits up to `grace`, then kills it and reaps the process.
async fn shutdown(
    browser: &mut CdpBrowser,
    handler_task: &tokio::task::JoinHandle<()>,
    pid: Option<u32>,
    grace: Duration,
) {
    if let Ok(Some(status)) = browser.try_wait() {
        // Already gone (crashed or killed): nothing to ask, nothing to wait for.
        debug!(?pid, %status, "Chromium had already exited");
        handler_task.abort();
        return;
    }
    if tokio::time::timeout(grace, browser.close()).await.is_err() {
        debug!(?pid, "Browser.close timed out");
    }
    match tokio::time::timeout(grace, browser.wait()).await {
        Ok(_) => debug!(?pid, "Chromium exited"),
        Err(_) => {
            warn!(?pid, "Chromium did not exit in time; killing it");
            let _ = browser.kill().await;
        }
    }
    handler_task.abort();
}

/// Cancels `gone` when process `pid` exits. chromiumoxide's handler does not end when Chromium
/// dies (it waits forever on the closed connection), so the process itself is watched: a pidfd
/// becomes readable when the process exits. One small detached thread per browser, living exactly
/// as long as that browser (not a `spawn_blocking` task: those hold up the runtime's shutdown).
fn watch_exit(pid: Option<u32>, gone: CancellationToken) {
    use rustix::event::{poll, PollFd, PollFlags};
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        warn!("Chromium's pid is unknown: its death is noticed only when CDP fails");
        return;
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "pidfd_open failed: Chromium's death is noticed only when CDP fails");
            return;
        }
    };
    let watcher = std::thread::Builder::new()
        .name("chromium-exit".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            while let Err(rustix::io::Errno::INTR) = poll(&mut fds, None) {}
            gone.cancel();
        });
    if let Err(e) = watcher {
        warn!(error = %e, "cannot watch Chromium's process: its death is noticed only when CDP fails");
    }
}

type Reply = Pin<Box<dyn Future<Output = Result<(), chromiumoxide::error::CdpError>> + Send>>;

/// Subscribes again to events of `page` whose stream ended. A tab that closed (the usual
/// reason) refuses: `None` then, and only a debug line.
async fn resubscribe<E: chromiumoxide::cdp::IntoEventKind + Unpin>(
    page: &Page,
    what: &str,
) -> Option<chromiumoxide::listeners::EventStream<E>> {
    match page.event_listener::<E>().await {
        Ok(again) => {
            warn!("{what} stopped although the tab is open; subscribed again");
            Some(again)
        }
        Err(e) => {
            debug!(error = %e, "{what} stopped: the tab is gone");
            None
        }
    }
}

async fn run_input(
    page: Page,
    mut inputs: mpsc::Receiver<Input>,
    cancel: CancellationToken,
) -> mpsc::Receiver<Input> {
    let mut in_flight: FuturesUnordered<Reply> = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = result {
                    debug!(error = %e, "input command failed");
                }
            }
            input = inputs.recv(), if in_flight.len() < MAX_INPUT_IN_FLIGHT => {
                let Some(input) = input else { break };
                let mut reply = match command_for(&page, input) {
                    Ok(reply) => reply,
                    Err(e) => { debug!(error = %e, "input command not built"); continue; }
                };
                // chromiumoxide sends a command to Chromium on its future's first poll. Polling here,
                // before the next input is read, keeps input in order while the replies (a mouse move
                // waits ~16 ms for a frame) are awaited concurrently.
                if let Poll::Ready(Err(e)) = futures::poll!(reply.as_mut()) {
                    debug!(error = %e, "input command failed");
                } else {
                    in_flight.push(reply);
                }
            }
        }
    }
    inputs
}

fn command_for(page: &Page, input: Input) -> Result<Reply, chromiumoxide::error::CdpError> {
    fn boxed<T>(fut: chromiumoxide::handler::commandfuture::CommandFuture<T>) -> Reply
    where
        T: chromiumoxide::types::Command + Send + 'static,
        T::Response: Send,
    {
        Box::pin(async move { fut.await.map(|_| ()) })
    }
    Ok(match input {
        Input::Mouse {
            kind,
            x,
            y,
            button,
            buttons,
            click_count,
            modifiers,
        } => {
            let kind = match kind {
                MouseKind::Moved => DispatchMouseEventType::MouseMoved,
                MouseKind::Pressed => DispatchMouseEventType::MousePressed,
                MouseKind::Released => DispatchMouseEventType::MouseReleased,
            };
            let params = DispatchMouseEventParams::builder()
                .r#type(kind)
                .x(x)
                .y(y)
                .button(cdp_button(button))
                .buttons(i64::from(buttons))
                .click_count(i64::from(click_count))
                .modifiers(i64::from(modifiers))
                .build()
                .map_err(chromiumoxide::error::CdpError::msg)?;
            boxed(page.command_future(params)?)
        }
        Input::Wheel {
            x,
            y,
            delta_x,
            delta_y,
            modifiers,
        } => {
            let params = DispatchMouseEventParams::builder()
                .r#type(DispatchMouseEventType::MouseWheel)
                .x(x)
                .y(y)
                .delta_x(delta_x)
                .delta_y(delta_y)
                .modifiers(i64::from(modifiers))
                .build()
                .map_err(chromiumoxide::error::CdpError::msg)?;
            boxed(page.command_future(params)?)
        }
        Input::Key(key) => {
            let kind = match key.kind {
                KeyKind::KeyDown => DispatchKeyEventType::KeyDown,
                KeyKind::RawKeyDown => DispatchKeyEventType::RawKeyDown,
                KeyKind::KeyUp => DispatchKeyEventType::KeyUp,
            };
            let mut builder = DispatchKeyEventParams::builder()
                .r#type(kind)
                .key(key.key)
                .code(key.code)
                .windows_virtual_key_code(i64::from(key.windows_virtual_key_code))
                .native_virtual_key_code(i64::from(key.windows_virtual_key_code))
                .location(i64::from(key.location))
                .modifiers(i64::from(key.modifiers))
                .auto_repeat(key.auto_repeat)
                .is_keypad(key.location == 3);
            if let Some(text) = key.text {
                builder = builder.unmodified_text(text.clone()).text(text);
            }
            let params = builder
                .build()
                .map_err(chromiumoxide::error::CdpError::msg)?;
            boxed(page.command_future(params)?)
        }
        Input::Text(text) => boxed(page.command_future(InsertTextParams::new(text))?),
        Input::Compose { text, start, end } => {
            boxed(page.command_future(ImeSetCompositionParams::new(text, start, end))?)
        }
    })
}

fn cdp_button(button: MouseButton) -> CdpMouseButton {
    match button {
        MouseButton::None => CdpMouseButton::None,
        MouseButton::Left => CdpMouseButton::Left,
        MouseButton::Middle => CdpMouseButton::Middle,
        MouseButton::Right => CdpMouseButton::Right,
    }
}

/// The flags that send every connection of the browser through the egress proxy at `proxy`.
/// Without `<-loopback>` Chromium connects to loopback addresses directly (its implicit bypass
/// rules), which would leave the server's own ports open to every page. WebRTC is the one
/// network path that ignores the proxy: its UDP would reach private addresses directly, so only
/// proxied (TCP) WebRTC is allowed. The page cannot see or change these settings.
fn proxy_flags(proxy: std::net::SocketAddr) -> Vec<String> {
    vec![
        format!("proxy-server=http://{proxy}"),
        "proxy-bypass-list=<-loopback>".to_string(),
        "force-webrtc-ip-handling-policy=disable_non_proxied_udp".to_string(),
    ]
}

/// Limits WebRTC to proxied transports through the profile's preferences: its UDP ignores
/// HTTP proxies, so a page could otherwise send packets to private addresses (a "TURN server"
/// at 10.0.0.5). Measured on this Chromium: the `--force-webrtc-ip-handling-policy` flag alone
/// left UDP host candidates; the preference is what the browser's own settings write.
fn write_egress_preferences(profile: &Path) -> Result<(), BrowserError> {
    let default = profile.join("Default");
    std::fs::create_dir_all(&default)?;
    let prefs = serde_json::json!({
        "webrtc": {
            "ip_handling_policy": "disable_non_proxied_udp",
            "multiple_routes_enabled": false,
            "nonproxied_udp_enabled": false,
        }
    });
    std::fs::write(default.join("Preferences"), prefs.to_string())?;
    Ok(())
}

/// Writes a launcher script that starts Chromium with `setpriv --pdeathsig KILL`, so the kernel
/// kills Chromium if the cobrowse process dies without closing it (SIGKILL, OOM, crash): no
/// orphaned browser, ever. Without `setpriv` on the machine, Chromium is started directly.
///
/// The death signal fires when the *thread* that spawned the process exits; Chromium is spawned
/// from a tokio worker thread, which lives as long as the runtime.
fn launcher(dir: &Path, chromium: &Path) -> Result<PathBuf, BrowserError> {
    let Some(setpriv) = crate::config::resolve_executable("setpriv") else {
        warn!("setpriv not found: Chromium will not be killed if cobrowse dies abruptly");
        return Ok(chromium.to_path_buf());
    };
    let script = dir.join("chromium-launcher");
    let body = format!(
        "#!/bin/sh\nexec {} --pdeathsig KILL -- {} \"$@\"\n",
        shell_quote(&setpriv.to_string_lossy()),
        shell_quote(&chromium.to_string_lossy())
    );
    std::fs::write(&script, body)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
    Ok(script)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
