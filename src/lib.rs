//! cobrowse: a server-side headless-browser cobrowsing proxy. One Chromium per session, its
//! screencast fanned out to every participant's web viewer, their input sent back into it.
//!
//! Module map (see `ARCHITECTURE.md` for the data flow and invariants):
//! - [`config`]: command line / `COBROWSE_*` environment, validated into one [`config::Config`].
//! - [`server`]: the HTTP router and [`server::run_until`], which serves until shutdown, then drains.
//! - [`api`]: the management API (`/api/sessions`) and the HTTP error type.
//! - [`ws`]: a participant's WebSocket: checks before the upgrade, writer and reader tasks.
//! - [`protocol`]: the viewer wire format (binary frames, JSON messages), `docs/protocol.md`.
//! - [`registry`]: the table of sessions, admission control, readiness, the drain and shutdown.
//! - [`pool`]: the warm pool of launched browsers, one session each.
//! - [`observe`]: `/healthz`, `/readyz` and Prometheus `/metrics`.
//! - [`procfs`]: memory and CPU of process trees, memory left to the machine or container.
//! - [`cluster`]: scale-out behind nginx: its consistent-hash ring, ids this node owns, 421 for others'.
//! - [`session`]: one session: participants, roles, the driver task that owns the browser.
//! - [`screen`]: the latest frame of a session, versioned and encoded once for all viewers.
//! - [`egress`]: the egress policy (what the session browser may reach) and its forward proxy.
//! - [`browser`]: Chromium processes and every CDP call; the only module that speaks CDP.
//! - [`tabs`]: the browser's tabs as participants see them, which one is active (pure logic).
//! - [`files`]: uploads into the page's file fields (HTTP route, file names).
//! - [`mask`]: masked elements: the page script's reports (checked), placement on a frame, paint (pure logic).
//! - [`native`]: reports of native UI (`<select>` popups) from the page script, checked (pure logic).
//! - [`navigation`]: start URLs and the URL bar's reading of typed addresses (pure logic).
//! - [`input`]: viewer input mapped to page coordinates and key events (pure logic).
//! - [`control`]: the control policy (shared / exclusive) and its state machine (pure logic).
//! - [`people`]: display names, colours, the chat log, rate limits (pure logic).
//! - [`metrics`]: lock-free latency histograms, server-wide counters, the Prometheus text format.
//! - [`token`]: random ids, constant-time comparison.
//! - [`capability`]: signed, expiring, revocable join links and each session's book of them.
//! - [`audit`]: the append-only, hash-chained audit log and its verification.
//! - [`tls`]: HTTPS/WSS served directly (rustls), handshakes off the accept loop.
//! - [`assets`]: the viewer's files, embedded in the binary.

pub mod api;
pub mod assets;
pub mod audit;
pub mod browser;
pub mod capability;
pub mod cluster;
pub mod config;
pub mod control;
pub mod egress;
pub mod encode;
pub mod files;
pub mod input;
pub mod mask;
pub mod metrics;
pub mod native;
pub mod navigation;
pub mod observe;
pub mod pacing;
pub mod people;
pub mod pool;
pub mod procfs;
pub mod protocol;
pub mod recording;
pub mod recordings;
pub mod registry;
pub mod screen;
pub mod server;
pub mod session;
pub mod tabs;
pub mod tiles;
pub mod tls;
pub mod token;
pub mod ws;

/// Locks a mutex whose data every writer leaves consistent (single assignments or map
/// operations), so a panic elsewhere while it was held does not make it unusable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
