//! The table of live sessions: creation (with its capacity limit), lookup, and ending them all at
//! shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::audit::Audit;
use crate::browser::{Browser, BrowserError, LaunchOptions};
use crate::capability::LinkBook;
use crate::config::{Config, Viewport};
use crate::egress::EgressProxy;
use crate::recording::store::Store;
use crate::session::{NewSession, SessionHandle};
use crate::token::{random_string, ID_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("session limit reached ({0} sessions)")]
    Full(usize),
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
        })
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
        if self.shutdown.is_cancelled() {
            return Err(CreateError::ShuttingDown);
        }
        {
            let mut table = self.table();
            if table.sessions.len() + table.launching >= self.config.max_sessions {
                return Err(CreateError::Full(self.config.max_sessions));
            }
            table.launching += 1;
        }
        let this = Arc::clone(self);
        let launch = self.tracker.spawn(async move {
            let result = this.launch(request).await;
            this.table().launching -= 1;
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
        let id = random_string(ID_BYTES).map_err(CreateError::Random)?;
        let record = request.record || self.config.record_sessions;
        // The proxy first: the browser is launched pointing at it, and it lives as long as the
        // session (browser restarts included); dropping it (here on failure, or when the
        // session's driver ends) stops it.
        let (reports_tx, reports) = mpsc::channel(crate::egress::REPORT_QUEUE);
        let egress = EgressProxy::start(Arc::clone(&self.config.egress), &id, reports_tx)
            .await
            .map_err(BrowserError::Profile)?;
        let browser = Browser::launch(LaunchOptions {
            chromium: self.config.chromium.clone(),
            viewport: request.viewport,
            scale: request.scale,
            jpeg_quality: self.config.jpeg_quality,
            mask_script: {
                let mut selectors = self.config.mask.clone();
                selectors.extend(request.mask.iter().cloned());
                crate::mask::page_script(&selectors).into()
            },
            fault_stall_screencast: self.config.fault_stall_screencast,
            proxy: Some(egress.addr()),
        })
        .await?;
        if self.shutdown.is_cancelled() {
            browser.close(self.config.shutdown_grace).await;
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
            close_grace: self.config.shutdown_grace,
            control: request.control,
            control_idle: request.control_idle,
            max_upload_bytes: self.config.max_upload_bytes,
            max_download_bytes: self.config.max_download_bytes,
            egress,
            egress_reports: reports,
            mask_reveal: self.config.mask_reveal,
            recordings: self.recordings.clone(),
        };
        let registry = Arc::downgrade(self);
        let on_finished = move |id: &str| {
            if let Some(registry) = registry.upgrade() {
                registry.table().sessions.remove(id);
            }
        };
        let handle =
            SessionHandle::start(new, browser, &self.shutdown, &self.tracker, on_finished).await?;
        self.table().sessions.insert(id.clone(), handle.clone());
        // A session that died before it was inserted has already run `on_finished`; its cancel
        // token fired before that, so this check cannot miss it.
        if handle.cancelled().is_cancelled() {
            self.table().sessions.remove(&id);
        } else if record {
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

    /// Ends every session and waits up to `grace` (plus the browsers' own close time) for their
    /// browsers to close. Browsers still running after that are killed when their owner drops.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        let count = self.table().sessions.len();
        info!(sessions = count, "ending every session");
        if tokio::time::timeout(grace * 2, self.tracker.wait())
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
