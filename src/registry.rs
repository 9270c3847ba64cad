//! The table of live sessions: creation (with admission control: the session limit, free
//! memory, shutdown), the warm pool, readiness, lookup, and draining them all at shutdown.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::audit::Audit;
use crate::browser::{Browser, BrowserError, LaunchOptions};
use crate::capability::LinkBook;
use crate::config::{Config, Viewport};
use crate::egress::{BlockedRequest, EgressProxy};
use crate::metrics::{Refusal, ServerMetrics};
use crate::pool::{Pool, WarmBrowser};
use crate::recording::store::Store;
use crate::session::{NewSession, SessionHandle};

/// How long a browser gets to close politely before it is killed.
pub const BROWSER_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After a failed launch, `/readyz` launches a probe browser at most this often, so a node
/// notices on its own when Chromium can start again.
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// Longest wait between two attempts to refill the warm pool after failed launches.
const POOL_BACKOFF_MAX: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("session limit reached ({0} sessions)")]
    Full(usize),
    #[error(
        "not enough memory for another session ({available_mib} MiB available, {needed_mib} MiB required)"
    )]
    LowMemory { available_mib: u64, needed_mib: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Browser(#[from] BrowserError),
    #[error("no randomness available: {0}")]
    Random(getrandom::Error),
    #[error("cannot mint join links: {0}")]
    Links(crate::capability::MintError),
}

/// A validated request for a new session.
pub struct CreateRequest {
    pub url: String,
    pub viewport: Viewport,
    /// Device pixels per CSS pixel of the screen (1 to 3).
    pub scale: f64,
    /// Scheme/host/port the join links start with.
    pub links_base: String,
    /// Who may act: everyone with control rights, or one at a time.
    pub control: crate::control::Policy,
    /// How long a control holder may stay idle before control is released.
    pub control_idle: Duration,
    /// How long the session's default join links admit people.
    pub link_ttl: Duration,
    /// Selectors masked in this session on top of the deployment's (validated by the caller;
    /// together at most `mask::MAX_SELECTORS`).
    pub mask: Vec<String>,
    /// Record the session from its start (also when the server records every session).
    pub record: bool,
}

struct Table {
    sessions: HashMap<String, SessionHandle>,
    /// Sessions whose browser is launching; they count against the limit.
    launching: usize,
}

impl Table {
    fn load(&self) -> usize {
        self.sessions.len() + self.launching
    }
}

/// What the last browser launch (for a session, the warm pool or a probe) said about Chromium.
#[derive(Debug, Default)]
struct LaunchHealth {
    /// `Some(Ok)` after a launch succeeded, `Some(Err(why))` after one failed; `None` before any.
    last: Option<Result<(), String>>,
    /// When a probe was last started (`None`: never).
    probed_at: Option<Instant>,
    probing: bool,
}

/// Whether this node can take a new session now (`/readyz`), and why not.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub ready: bool,
    /// Every reason it cannot, for the operator.
    pub reasons: Vec<String>,
    pub sessions: usize,
    pub max_sessions: usize,
    /// Browsers ready in the warm pool.
    pub warm_browsers: usize,
    /// Memory available to the server, bytes (`None`: unknown on this system).
    pub available_memory: Option<u64>,
    pub draining: bool,
}

/// A session still running when the shutdown's grace period ran out.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CutOff {
    pub session: String,
    pub participants: usize,
    pub age_secs: u64,
    pub recording: Option<String>,
}

pub struct Registry {
    config: Arc<Config>,
    audit: Arc<Audit>,
    /// Where recordings go (`None`: recording refused or its directory unusable).
    recordings: Option<Arc<Store>>,
    table: Mutex<Table>,
    /// Cancelled when the server shuts down; every session's token is a child of it.
    shutdown: CancellationToken,
    /// Tracks launches and session drivers, so shutdown can wait for them.
    tracker: TaskTracker,
    /// Fired when a shutdown starts: new sessions are refused from then on.
    draining: CancellationToken,
    /// Sessions plus launches, published on every change (shutdown waits for 0).
    load: watch::Sender<usize>,
    pool: Option<Arc<Pool>>,
    health: Mutex<LaunchHealth>,
    metrics: Arc<ServerMetrics>,
}

impl Registry {
    pub fn new(config: Arc<Config>, audit: Arc<Audit>, shutdown: CancellationToken) -> Arc<Self> {
        let recordings = config.recordings_dir.as_ref().and_then(|dir| {
            match Store::open(dir.clone(), config.recording_retention) {
                Ok(store) => Some(Arc::new(store)),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "recordings directory unusable: recording is off");
                    None
                }
            }
        });
        let warm = config.warm_browsers;
        Arc::new(Registry {
            recordings,
            config,
            audit,
            table: Mutex::new(Table {
                sessions: HashMap::new(),
                launching: 0,
            }),
            shutdown,
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
            load: watch::Sender::new(0),
            pool: (warm > 0).then(|| Pool::new(warm)),
            health: Mutex::new(LaunchHealth::default()),
            metrics: Arc::new(ServerMetrics::default()),
        })
    }

    /// Starts what runs beside the sessions: the warm pool's filler, or (without a pool) the
    /// start-up probe that tells `/readyz` whether Chromium starts.
    pub fn start_background(self: &Arc<Self>) {
        if let Some(pool) = &self.pool {
            let this = Arc::clone(self);
            let pool = Arc::clone(pool);
            self.tracker
                .spawn(async move { this.fill_pool(pool).await });
        } else if self.config.probe_chromium {
            self.spawn_probe();
        }
    }

    /// The server-wide figures of `/metrics`.
    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.metrics
    }

    /// Browsers ready in the warm pool.
    pub fn warm_ready(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.ready())
    }

    /// Sessions running or launching.
    pub fn load(&self) -> usize {
        self.table().load()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    fn publish_load(&self, table: &Table) {
        self.load.send_replace(table.load());
    }

    /// Removes a session from the table, adding its figures to the server's totals.
    fn unregister(&self, id: &str) {
        let mut table = self.table();
        if let Some(handle) = table.sessions.remove(id) {
            self.metrics.retire(handle.totals());
        }
        self.publish_load(&table);
    }

    /// Why a new session cannot be taken now, if it cannot (the checks of admission control),
    /// with `available` bytes of memory.
    fn refusal(&self, table: &Table, available: Option<u64>) -> Option<(Refusal, CreateError)> {
        if self.draining.is_cancelled() || self.shutdown.is_cancelled() {
            return Some((Refusal::Draining, CreateError::ShuttingDown));
        }
        if table.load() >= self.config.max_sessions {
            return Some((Refusal::Full, CreateError::Full(self.config.max_sessions)));
        }
        self.memory_refusal(available)
    }

    fn memory_refusal(&self, available: Option<u64>) -> Option<(Refusal, CreateError)> {
        let needed = self.config.min_free_memory;
        match available {
            Some(available) if needed > 0 && available < needed => Some((
                Refusal::Memory,
                CreateError::LowMemory {
                    available_mib: available / MIB,
                    needed_mib: needed.div_ceil(MIB),
                },
            )),
            _ => None,
        }
    }

    /// Whether a new session would be taken now (`/readyz`).
    pub fn readiness(self: &Arc<Self>) -> Readiness {
        let available = crate::procfs::available_memory();
        let mut reasons = Vec::new();
        let sessions = {
            let table = self.table();
            // Memory is checked below, so that both reasons show when both hold.
            if let Some((_, e)) = self.refusal(&table, None) {
                reasons.push(e.to_string());
            }
            table.sessions.len()
        };
        if let Some((_, e)) = self.memory_refusal(available) {
            reasons.push(e.to_string());
        }
        let probe = {
            let mut health = crate::lock(&self.health);
            match &health.last {
                Some(Err(why)) => reasons.push(format!("Chromium does not start: {why}")),
                // The warm pool's first launch, or the start-up probe, has not finished yet.
                None if health.probing || self.pool.is_some() => {
                    reasons.push("checking that Chromium starts".into())
                }
                _ => {}
            }
            // Without a pool (which retries on its own) a failed Chromium is tried again now
            // and then, so the node comes back by itself once it is fixed.
            let due = health
                .probed_at
                .is_none_or(|at| at.elapsed() >= PROBE_EVERY);
            let failed = matches!(health.last, Some(Err(_)));
            let probe = failed && self.pool.is_none() && !health.probing && due;
            if probe {
                health.probing = true;
            }
            probe
        };
        if probe && !self.is_draining() {
            self.spawn_probe_marked();
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            sessions,
            max_sessions: self.config.max_sessions,
            warm_browsers: self.warm_ready(),
            available_memory: available,
            draining: self.is_draining(),
        }
    }

    /// Records what a launch said about Chromium.
    fn launched(&self, result: Result<(), &BrowserError>) {
        self.metrics
            .browser_launches
            .fetch_add(1, Ordering::Relaxed);
        let mut health = crate::lock(&self.health);
        health.last = Some(match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics
                    .browser_launch_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(e.to_string())
            }
        });
    }

    fn spawn_probe(self: &Arc<Self>) {
        crate::lock(&self.health).probing = true;
        self.spawn_probe_marked();
    }

    /// Launches and closes one browser, to learn whether Chromium starts (`probing` is set).
    fn spawn_probe_marked(self: &Arc<Self>) {
        let this = Arc::clone(self);
        crate::lock(&self.health).probed_at = Some(Instant::now());
        self.tracker.spawn(async move {
            let options = this.launch_options(crate::config::DEFAULT_VIEWPORT, 1.0, &[], None);
            match Browser::launch(options).await {
                Ok(browser) => {
                    this.launched(Ok(()));
                    browser.close(BROWSER_CLOSE_GRACE).await;
                    info!("Chromium starts");
                }
                Err(e) => {
                    warn!(error = %e, "Chromium does not start: this node is not ready");
                    this.launched(Err(&e));
                }
            }
            crate::lock(&this.health).probing = false;
        });
    }

    /// How a session's browser is launched.
    fn launch_options(
        &self,
        viewport: Viewport,
        scale: f64,
        extra_mask: &[String],
        proxy: Option<std::net::SocketAddr>,
    ) -> LaunchOptions {
        let mut selectors = self.config.mask.clone();
        selectors.extend(extra_mask.iter().cloned());
        LaunchOptions {
            chromium: self.config.chromium.clone(),
            viewport,
            scale,
            jpeg_quality: self.config.jpeg_quality,
            mask_script: crate::mask::page_script(&selectors).into(),
            fault_stall_screencast: self.config.fault_stall_screencast,
            proxy,
        }
    }

    /// A new session id: one the router sends back to this node when there are several.
    fn new_id(&self) -> Result<String, CreateError> {
        crate::cluster::new_session_id(self.config.cluster.as_deref()).map_err(CreateError::Random)
    }

    /// A session's egress proxy and browser, launched for it (not from the pool).
    async fn launch_cold(
        &self,
        id: &str,
        viewport: Viewport,
        scale: f64,
        extra_mask: &[String],
    ) -> Result<(EgressProxy, mpsc::Receiver<BlockedRequest>, Browser), CreateError> {
        // The proxy first: the browser is launched pointing at it, and it lives as long as the
        // session (browser restarts included); dropping it (here on failure, or when the
        // session's driver ends) stops it.
        let (reports_tx, reports) = mpsc::channel(crate::egress::REPORT_QUEUE);
        let egress = EgressProxy::start(Arc::clone(&self.config.egress), id, reports_tx)
            .await
            .map_err(BrowserError::Profile)?;
        let options = self.launch_options(viewport, scale, extra_mask, Some(egress.addr()));
        match Browser::launch(options).await {
            Ok(browser) => {
                self.launched(Ok(()));
                Ok((egress, reports, browser))
            }
            Err(e) => {
                self.launched(Err(&e));
                Err(e.into())
            }
        }
    }

    /// Keeps the pool full: one launch at a time, backing off after failures, until the pool
    /// closes (shutdown).
    async fn fill_pool(self: Arc<Self>, pool: Arc<Pool>) {
        let closed = pool.closed();
        let mut backoff = Duration::from_secs(1);
        loop {
            // Registered before the check, so a take between the check and the wait is not missed.
            let wanted = pool.wanted.notified();
            if closed.is_cancelled() {
                return;
            }
            if pool.ready() >= pool.size {
                tokio::select! {
                    _ = wanted => continue,
                    _ = closed.cancelled() => return,
                }
            }
            let launched = match self.new_id() {
                Ok(id) => self
                    .launch_cold(&id, crate::config::DEFAULT_VIEWPORT, 1.0, &[])
                    .await
                    .map(|(egress, reports, browser)| WarmBrowser {
                        id,
                        egress,
                        reports,
                        browser,
                    }),
                Err(e) => Err(e),
            };
            match launched {
                Ok(warm) => {
                    backoff = Duration::from_secs(1);
                    if let Err(warm) = pool.add(warm) {
                        warm.browser.close(BROWSER_CLOSE_GRACE).await;
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot launch a warm browser");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = closed.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(POOL_BACKOFF_MAX);
                }
            }
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every write under this lock is a single map or counter operation: a poisoned lock still
        // holds a consistent table.
        crate::lock(&self.table)
    }

    /// Where recordings are kept (`None`: recording is off).
    pub fn recordings(&self) -> Option<&Arc<Store>> {
        self.recordings.as_ref()
    }

    /// Deletes recordings past their retention, except those being written.
    pub fn sweep_recordings(&self) -> Vec<String> {
        let Some(store) = &self.recordings else {
            return Vec::new();
        };
        let active: Vec<String> = self
            .list()
            .iter()
            .filter_map(|s| s.recording_id())
            .collect();
        let deleted = store.sweep(std::time::SystemTime::now(), &active);
        for id in &deleted {
            self.audit.record(
                "recording.deleted",
                serde_json::json!({ "recording": id, "by": "retention" }),
            );
        }
        deleted
    }

    pub fn get(&self, id: &str) -> Option<SessionHandle> {
        self.table().sessions.get(id).cloned()
    }

    pub fn list(&self) -> Vec<SessionHandle> {
        let mut list: Vec<_> = self.table().sessions.values().cloned().collect();
        list.sort_by(|a, b| a.id().cmp(b.id()));
        list
    }

    /// Launches a browser and registers a session around it. The launch runs in its own task: a
    /// client that hangs up mid-launch neither aborts it halfway nor leaves a stray Chromium.
    pub async fn create(
        self: &Arc<Self>,
        request: CreateRequest,
    ) -> Result<SessionHandle, CreateError> {
        // Read before the lock: it reads a few /proc and cgroup files.
        let available = crate::procfs::available_memory();
        {
            let mut table = self.table();
            if let Some((why, e)) = self.refusal(&table, available) {
                self.metrics.refused(why);
                info!(reason = %e, "new session refused");
                return Err(e);
            }
            table.launching += 1;
            self.publish_load(&table);
        }
        let this = Arc::clone(self);
        let launch = self.tracker.spawn(async move {
            let result = this.launch(request).await;
            if let Err(CreateError::Browser(_)) = &result {
                this.metrics.refused(Refusal::LaunchFailed);
            }
            let mut table = this.table();
            table.launching -= 1;
            this.publish_load(&table);
            result
        });
        match launch.await {
            Ok(result) => result,
            Err(e) => {
                warn!(error = %e, "session launch task failed");
                Err(CreateError::ShuttingDown)
            }
        }
    }

    async fn launch(
        self: &Arc<Self>,
        request: CreateRequest,
    ) -> Result<SessionHandle, CreateError> {
        let record = request.record || self.config.record_sessions;
        // A warm browser fits when it was launched as this session would be: the default
        // viewport and scale, and the deployment's masks only.
        let fits_pool = request.viewport == crate::config::DEFAULT_VIEWPORT
            && request.scale == 1.0
            && request.mask.is_empty();
        let warm = if fits_pool {
            self.pool.as_ref().and_then(|p| p.take())
        } else {
            None
        };
        let (id, egress, reports, browser) = match warm {
            Some(w) => {
                self.metrics.sessions_warm.fetch_add(1, Ordering::Relaxed);
                (w.id, w.egress, w.reports, w.browser)
            }
            None => {
                let id = self.new_id()?;
                let (egress, reports, browser) = self
                    .launch_cold(&id, request.viewport, request.scale, &request.mask)
                    .await?;
                self.metrics.sessions_cold.fetch_add(1, Ordering::Relaxed);
                (id, egress, reports, browser)
            }
        };
        if self.shutdown.is_cancelled() {
            browser.close(BROWSER_CLOSE_GRACE).await;
            return Err(CreateError::ShuttingDown);
        }
        // Minted once the browser is up: a link's lifetime starts when it can be used.
        let links = LinkBook::with_defaults(request.link_ttl, std::time::SystemTime::now())
            .map_err(CreateError::Links)?;
        let new = NewSession {
            id: id.clone(),
            start_url: request.url,
            viewport: request.viewport,
            scale: request.scale,
            secret: self.config.secret.clone(),
            links,
            link_ttl: request.link_ttl,
            audit: Arc::clone(&self.audit),
            links_base: request.links_base,
            max_participants: self.config.max_participants,
            idle_timeout: self.config.idle_timeout,
            close_grace: BROWSER_CLOSE_GRACE,
            control: request.control,
            control_idle: request.control_idle,
            max_upload_bytes: self.config.max_upload_bytes,
            max_download_bytes: self.config.max_download_bytes,
            egress,
            egress_reports: reports,
            mask_reveal: self.config.mask_reveal,
            recordings: self.recordings.clone(),
            metrics: Arc::clone(&self.metrics),
        };
        let registry = Arc::downgrade(self);
        let on_finished = move |id: &str| {
            if let Some(registry) = registry.upgrade() {
                registry.unregister(id);
            }
        };
        let handle =
            SessionHandle::start(new, browser, &self.shutdown, &self.tracker, on_finished).await?;
        {
            let mut table = self.table();
            table.sessions.insert(id.clone(), handle.clone());
            self.publish_load(&table);
        }
        // A session that died before it was inserted has already run `on_finished`; its cancel
        // token fired before that, so this check cannot miss it.
        if handle.cancelled().is_cancelled() {
            self.unregister(&id);
            return Ok(handle);
        }
        if self.is_draining() {
            // Launched before the shutdown started: it drains like the others.
            self.drain_session(&handle, self.config.shutdown_grace);
        }
        if record {
            let by = crate::session::system_actor(if self.config.record_sessions {
                "server"
            } else {
                "api"
            });
            if let Err(e) = handle.start_recording(by) {
                warn!(session_id = %id, error = %e, "cannot record the session");
            }
        }
        Ok(handle)
    }

    /// Starts a shutdown: new sessions are refused from now on, the warm pool closes, everyone
    /// connected is told the session ends within `grace` at the latest, and each session ends as
    /// soon as nobody is connected to it.
    pub fn begin_drain(self: &Arc<Self>, grace: Duration) {
        if self.draining.is_cancelled() {
            return;
        }
        self.draining.cancel();
        if let Some(pool) = &self.pool {
            let pool = Arc::clone(pool);
            self.tracker
                .spawn(async move { pool.close(BROWSER_CLOSE_GRACE).await });
        }
        let sessions = self.list();
        info!(sessions = sessions.len(), grace = ?grace, "draining: new sessions are refused");
        for session in &sessions {
            self.drain_session(session, grace);
        }
    }

    /// Tells a session's participants the server is going away, and ends it once they have left.
    fn drain_session(&self, session: &SessionHandle, grace: Duration) {
        session.announce_shutdown(grace);
        let session = session.clone();
        self.tracker.spawn(async move {
            let ended = session.cancelled();
            tokio::select! {
                _ = session.wait_empty() => session.end("the server is shutting down"),
                _ = ended.cancelled() => {}
            }
        });
    }

    /// Waits until every session has ended, `grace` has passed or `now` fires. Returns the
    /// sessions still running (to be cut off).
    pub async fn wait_drained(&self, grace: Duration, now: &CancellationToken) -> Vec<CutOff> {
        let mut load = self.load.subscribe();
        tokio::select! {
            _ = load.wait_for(|&n| n == 0) => {}
            _ = tokio::time::sleep(grace) => {}
            _ = now.cancelled() => info!("shutting down at once"),
        }
        let now = SystemTime::now();
        self.list()
            .iter()
            .map(|s| {
                let info = s.info();
                CutOff {
                    session: info.id,
                    participants: info.participants,
                    age_secs: now
                        .duration_since(info.created)
                        .unwrap_or_default()
                        .as_secs(),
                    recording: s.recording_id(),
                }
            })
            .collect()
    }

    /// Ends every session and waits for their browsers to close (each gets
    /// [`BROWSER_CLOSE_GRACE`]; one still running after that is killed when its owner drops).
    pub async fn shutdown(&self) {
        self.draining.cancel();
        self.shutdown.cancel();
        if let Some(pool) = self.pool.as_ref().filter(|p| !p.is_closed()) {
            let pool = Arc::clone(pool);
            self.tracker
                .spawn(async move { pool.close(BROWSER_CLOSE_GRACE).await });
        }
        self.tracker.close();
        let count = self.table().sessions.len();
        info!(sessions = count, "ending every session");
        if tokio::time::timeout(BROWSER_CLOSE_GRACE * 2, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                left = self.table().sessions.len(),
                "sessions did not end within the grace period"
            );
        } else {
            info!("every session ended");
        }
    }
}
