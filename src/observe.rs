//! What operators and orchestrators ask a node: `/healthz` (the process serves HTTP), `/readyz`
//! (it would take a new session now) and `/metrics` (Prometheus).
//!
//! `/healthz` and `/readyz` are open (probes carry no credentials) and say nothing secret.
//! `/metrics` names sessions, so it asks for the API key like `/api/` does when keys are set.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::AppState;
use crate::metrics::{Exposition, Refusal};

/// `GET /healthz`: 200 while the process serves HTTP, draining included (a liveness probe that
/// failed during a drain would get the node killed before its grace period).
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when a new session would be taken now; 503 with every reason otherwise
/// (shutting down, session limit, low memory, Chromium does not start).
pub async fn readyz(State(app): State<AppState>) -> Response {
    let readiness = app.registry.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

/// `GET /metrics`: the node's figures in Prometheus' text format. Reading each session's Chromium
/// memory walks `/proc`, so the work runs off the async threads.
pub async fn metrics(State(app): State<AppState>) -> Response {
    match tokio::task::spawn_blocking(move || render(&app)).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => crate::api::AppError::Internal(format!("metrics: {e}")).into_response(),
    }
}

fn render(app: &AppState) -> String {
    let registry = &app.registry;
    let m = registry.metrics();
    let sessions = registry.list();
    let infos: Vec<_> = sessions.iter().map(|s| s.info()).collect();
    let retired = m.retired();
    let mut e = Exposition::new();

    e.single(
        "cobrowse_sessions",
        "gauge",
        "Sessions running (each one a Chromium).",
        infos.len() as f64,
    );
    e.single(
        "cobrowse_sessions_launching",
        "gauge",
        "Sessions whose browser is starting.",
        registry.load().saturating_sub(infos.len()) as f64,
    );
    e.single(
        "cobrowse_sessions_max",
        "gauge",
        "The session limit (--max-sessions).",
        app.config.max_sessions as f64,
    );
    e.family(
        "cobrowse_sessions_started_total",
        "counter",
        "Sessions started, by how their browser was started.",
        [
            (
                vec![("browser", "warm")],
                m.sessions_warm.load(Ordering::Relaxed) as f64,
            ),
            (
                vec![("browser", "cold")],
                m.sessions_cold.load(Ordering::Relaxed) as f64,
            ),
        ],
    );
    e.family(
        "cobrowse_sessions_refused_total",
        "counter",
        "New sessions refused, by reason.",
        Refusal::ALL
            .iter()
            .map(|&why| (vec![("reason", why.label())], m.refusals(why) as f64)),
    );
    e.single(
        "cobrowse_participants",
        "gauge",
        "Participants connected, all sessions together.",
        infos.iter().map(|i| i.participants).sum::<usize>() as f64,
    );
    e.family(
        "cobrowse_session_participants",
        "gauge",
        "Participants connected to a session.",
        infos
            .iter()
            .map(|i| (vec![("session", i.id.as_str())], i.participants as f64)),
    );
    let sum = |f: fn(&crate::session::SessionInfo) -> u64| infos.iter().map(f).sum::<u64>();
    e.single(
        "cobrowse_frames_in_total",
        "counter",
        "Screencast frames received from Chromium.",
        (retired.frames_in + sum(|i| i.frames_in)) as f64,
    );
    e.single(
        "cobrowse_frames_out_total",
        "counter",
        "Screen updates sent to participants (all participants together).",
        (retired.frames_sent + sum(|i| i.frames_sent)) as f64,
    );
    e.single(
        "cobrowse_bytes_out_total",
        "counter",
        "Bytes of screen data sent to participants.",
        (retired.bytes_sent + sum(|i| i.bytes_sent)) as f64,
    );
    e.single(
        "cobrowse_blocked_requests_total",
        "counter",
        "Requests of session browsers the egress policy blocked.",
        (retired.blocked_requests + sum(|i| i.blocked_requests)) as f64,
    );
    e.single(
        "cobrowse_browser_launches_total",
        "counter",
        "Chromium launches: for sessions, the warm pool, probes and restarts after a crash.",
        m.browser_launches.load(Ordering::Relaxed) as f64,
    );
    e.single(
        "cobrowse_browser_launch_failures_total",
        "counter",
        "Chromium launches that failed.",
        m.browser_launch_failures.load(Ordering::Relaxed) as f64,
    );
    e.single(
        "cobrowse_browser_crashes_total",
        "counter",
        "Session browsers (or their page's renderer) that crashed and were restarted.",
        (retired.crashes + sum(|i| u64::from(i.restarts))) as f64,
    );
    e.single(
        "cobrowse_warm_browsers",
        "gauge",
        "Browsers ready in the warm pool.",
        registry.warm_ready() as f64,
    );
    e.histograms(
        "cobrowse_viewer_lag_seconds",
        "Each participant's lag behind the newest screen, sampled once a second per participant.",
        [(vec![], &m.viewer_lag)],
    );
    e.histograms(
        "cobrowse_input_to_frame_seconds",
        "A click, key or text input to the first changed frame from Chromium.",
        [(vec![], &m.input_to_frame)],
    );

    // Each session's Chromium: its whole process tree (renderers, GPU and utility processes).
    let usage: Vec<_> = infos
        .iter()
        .filter_map(|i| {
            let pid = i.browser_pid?;
            Some((i.id.as_str(), crate::procfs::tree_usage(pid)?))
        })
        .collect();
    e.family(
        "cobrowse_session_chromium_memory_bytes",
        "gauge",
        "Proportional set size (PSS) of a session's Chromium processes.",
        usage
            .iter()
            .map(|(id, u)| (vec![("session", *id)], u.pss_bytes as f64)),
    );
    e.family(
        "cobrowse_session_chromium_cpu_seconds_total",
        "counter",
        "CPU time used by a session's Chromium processes (those running now).",
        usage
            .iter()
            .map(|(id, u)| (vec![("session", *id)], u.cpu_seconds)),
    );
    e.family(
        "cobrowse_session_chromium_processes",
        "gauge",
        "Processes of a session's Chromium.",
        usage
            .iter()
            .map(|(id, u)| (vec![("session", *id)], u.processes as f64)),
    );
    if let Some(own) = crate::procfs::this_process() {
        e.single(
            "cobrowse_process_memory_bytes",
            "gauge",
            "Resident set size of the cobrowse process itself (browsers excluded).",
            own.rss_bytes as f64,
        );
        e.single(
            "cobrowse_process_cpu_seconds_total",
            "counter",
            "CPU time of the cobrowse process itself (browsers excluded).",
            own.cpu_seconds,
        );
    }
    let readiness = registry.readiness();
    if let Some(available) = readiness.available_memory {
        e.single(
            "cobrowse_available_memory_bytes",
            "gauge",
            "Memory available to new sessions (the machine's, or the container's limit).",
            available as f64,
        );
    }
    e.single(
        "cobrowse_ready",
        "gauge",
        "1 when a new session would be taken now (as /readyz).",
        if readiness.ready { 1.0 } else { 0.0 },
    );
    e.single(
        "cobrowse_draining",
        "gauge",
        "1 while the server shuts down.",
        if readiness.draining { 1.0 } else { 0.0 },
    );
    e.finish()
}
