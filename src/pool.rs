//! The warm pool (`--warm-browsers N`): browsers launched ahead of demand, each with its own fresh
//! profile, egress proxy and session id, on a blank page, so a new session skips Chromium's start
//! (most of its time to first frame). A pooled browser serves exactly one session: it is taken
//! out of the pool for good, and the registry launches a replacement.
//!
//! The pool only holds browsers; [`crate::registry::Registry`] fills it (one launch at a time,
//! so refilling never competes with itself for the CPU) and takes from it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::browser::Browser;
use crate::egress::{BlockedRequest, EgressProxy};

/// A launched browser waiting for its session, with what a session needs around it.
pub struct WarmBrowser {
    /// The id the session will have (its egress proxy is named after it).
    pub id: String,
    pub egress: EgressProxy,
    pub reports: mpsc::Receiver<BlockedRequest>,
    pub browser: Browser,
}

pub struct Pool {
    /// How many browsers the pool keeps ready.
    pub size: usize,
    ready: Mutex<VecDeque<WarmBrowser>>,
    /// Wakes the filler: a browser was taken or died.
    pub wanted: Notify,
    /// Fired when the pool closes (shutdown): nothing is added any more.
    closed: CancellationToken,
}

impl Pool {
    pub fn new(size: usize) -> Arc<Pool> {
        Arc::new(Pool {
            size,
            ready: Mutex::new(VecDeque::new()),
            wanted: Notify::new(),
            closed: CancellationToken::new(),
        })
    }

    /// Browsers ready now.
    pub fn ready(&self) -> usize {
        crate::lock(&self.ready).len()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// A live browser out of the pool, if one is ready. Its replacement is launched at once.
    pub fn take(&self) -> Option<WarmBrowser> {
        let taken = {
            let mut ready = crate::lock(&self.ready);
            // A browser that died in the pool is dropped (which kills what is left of it).
            ready.retain(|w| !w.browser.gone().is_cancelled());
            ready.pop_front()
        };
        self.wanted.notify_one();
        taken
    }

    /// Adds a freshly launched browser, and watches it: one that dies while waiting is removed
    /// and replaced. Refused (and returned) once the pool is closed.
    pub fn add(self: &Arc<Self>, warm: WarmBrowser) -> Result<(), Box<WarmBrowser>> {
        if self.is_closed() {
            return Err(Box::new(warm));
        }
        let gone = warm.browser.gone();
        crate::lock(&self.ready).push_back(warm);
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = gone.cancelled() => {
                    info!("a warm browser died in the pool; replacing it");
                    crate::lock(&pool.ready).retain(|w| !w.browser.gone().is_cancelled());
                    pool.wanted.notify_one();
                }
                _ = pool.closed.cancelled() => {}
            }
        });
        Ok(())
    }

    /// Closes the pool and every browser in it (each given `grace` to exit politely).
    pub async fn close(&self, grace: Duration) {
        self.closed.cancel();
        let browsers: Vec<WarmBrowser> = crate::lock(&self.ready).drain(..).collect();
        if !browsers.is_empty() {
            debug!(count = browsers.len(), "closing the warm browsers");
        }
        futures::future::join_all(browsers.into_iter().map(|w| async move {
            w.browser.close(grace).await;
            drop(w.egress);
        }))
        .await;
    }
}
