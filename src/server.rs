//! The HTTP server: routes, and `run`, which serves until shutdown and then ends every session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::{self, AppState};
use crate::audit::Audit;
use crate::config::Config;
use crate::registry::Registry;
use crate::{assets, files, observe, recordings, ws};

/// How often recordings past their retention are looked for.
const RETENTION_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The address a connection comes from (TCP or TLS), for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A plain TCP listener whose connections have `TCP_NODELAY` set. Interactive traffic: without
/// it a small message (an update, a notice) written while the previous one is unacknowledged
/// waits for the peer's delayed ACK (up to 40 ms on Linux).
pub struct NoDelay(pub TcpListener);

impl axum::serve::Listener for NoDelay {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
        (stream, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelay>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, NoDelay>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/sessions",
            get(api::list_sessions).post(api::create_session),
        )
        .route(
            "/sessions/{id}",
            get(api::get_session).delete(api::delete_session),
        )
        .route("/sessions/{id}/screenshot", get(api::screenshot))
        .route(
            "/sessions/{id}/links",
            get(api::list_links).post(api::mint_link),
        )
        .route(
            "/sessions/{id}/links/{link}",
            axum::routing::delete(api::revoke_link),
        )
        .route("/auth", get(api::auth_check))
        .route("/recordings", get(recordings::list_all))
        .route(
            "/recordings/{rid}",
            get(recordings::get_one).delete(recordings::delete_one),
        )
        .route("/recordings/{rid}/file", get(recordings::api_file))
        .route("/recordings/{rid}/bundle", get(recordings::api_bundle))
        .route(
            "/sessions/{id}/recordings",
            get(recordings::list_for_session),
        )
        .route(
            "/sessions/{id}/recording",
            axum::routing::post(recordings::set_recording),
        )
        .route(
            "/sessions/{id}/participants/{pid}",
            axum::routing::delete(api::remove_participant),
        )
        .fallback(api::api_not_found)
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::require_api_key,
        ));
    // /metrics names sessions: it asks for the API key as /api/ does. The probes are open.
    let metrics = Router::new()
        .route("/metrics", get(observe::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::require_api_key,
        ));
    Router::new()
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .merge(metrics)
        .route("/", get(assets::index))
        .route("/s/{id}", get(assets::session_page))
        .route("/replay/{id}", get(assets::replay_page))
        .route("/s/{id}/check", get(ws::check))
        .route(
            "/s/{id}/files/{chooser}",
            axum::routing::post(files::upload).layer(DefaultBodyLimit::max(files::body_limit(
                state.config.max_upload_bytes,
            ))),
        )
        .route("/s/{id}/downloads/{n}", get(files::download))
        .route("/s/{id}/recordings", get(recordings::owner_list))
        .route("/r/{rid}/recording", get(recordings::replay_file))
        .route("/r/{rid}/bundle", get(recordings::replay_bundle))
        .route("/ws/{id}", get(ws::upgrade))
        .route("/{*path}", get(assets::static_file))
        .nest("/api", api)
        // In a cluster, other nodes' sessions are answered 421 before any handler runs.
        .layer(axum::middleware::from_fn_with_state(
            state.config.cluster.clone(),
            crate::cluster::misdirected,
        ))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` fires, then shuts down as [`run_until`] does, with no
/// way to cut the grace period short. Tests call this on `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    run_until(listener, config, shutdown, CancellationToken::new()).await
}

/// Serves on `listener` until `shutdown` fires, then drains: new sessions are refused (503, and
/// `/readyz` not ready), participants are told, each session ends once everyone has left it, and
/// the listener stays open meanwhile (people may still reconnect). When every session has ended,
/// the grace period (`--shutdown-grace`) has passed or `now` fires, the sessions left are cut off
/// (logged and audited), the listener closes and every browser is closed.
pub async fn run_until(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    now: CancellationToken,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()
        .map_err(std::io::Error::other)?;
    let audit = Audit::start(&config.audit)?;
    // Fired after the drain: stops the listener and every session (their tokens are children).
    let stop = CancellationToken::new();
    let registry = Registry::new(Arc::clone(&config), Arc::clone(&audit), stop.child_token());
    registry.start_background();
    let state = AppState {
        registry: Arc::clone(&registry),
        config: Arc::clone(&config),
        audit: Arc::clone(&audit),
    };
    // Recordings past their retention go at start and then hourly.
    {
        let registry = Arc::clone(&registry);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RETENTION_SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {
                        let registry = Arc::clone(&registry);
                        let _ = tokio::task::spawn_blocking(move || registry.sweep_recordings()).await;
                    }
                }
            }
        });
    }
    let address = listener.local_addr()?;
    info!(%address, tls = tls.is_some(), api_keys = config.api_keys.len(), chromium = %config.chromium.display(), warm_browsers = config.warm_browsers, "listening");
    if let Some(ring) = &config.cluster {
        info!(node = ring.this_node(), nodes = ?ring.nodes(), "cluster node: session ids are drawn for this node, other nodes' sessions are answered 421");
    }
    audit.record(
        "server.started",
        serde_json::json!({ "listen": address.to_string(), "tls": tls.is_some(), "apiKeys": config.api_keys.len() }),
    );
    // Upgraded WebSockets are not waited for by axum's graceful shutdown; they end themselves when
    // their session's token (a child of `stop`) fires. The peer address goes to the audit log.
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    let mut serving = match tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls, stop.clone())?;
            tokio::spawn(std::future::IntoFuture::into_future(
                axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned()),
            ))
        }
        None => tokio::spawn(std::future::IntoFuture::into_future(
            axum::serve(NoDelay(listener), app)
                .with_graceful_shutdown(stop.clone().cancelled_owned()),
        )),
    };
    let listener_failed = tokio::select! {
        // The listener failing on its own ends the server without a drain.
        served = &mut serving => Some(served),
        _ = shutdown.cancelled() => None,
    };
    let cut = match listener_failed {
        Some(_) => Vec::new(),
        None => drain(&registry, &audit, config.shutdown_grace, &now).await,
    };
    stop.cancel();
    // axum's graceful shutdown: requests in flight finish (upgraded sockets end with their
    // sessions, whose tokens `stop` fired).
    let served = match listener_failed {
        Some(served) => served,
        None => serving.await,
    };
    info!("no longer accepting connections");
    registry.shutdown().await;
    audit.record("server.stopped", serde_json::json!({ "cutOff": cut }));
    audit.close().await;
    served.map_err(std::io::Error::other).and_then(|r| r)
}

/// The drain: new sessions refused, participants told, each session ended once everyone left;
/// waits until all have ended, `grace` passed or `now` fired. Returns the sessions cut off.
async fn drain(
    registry: &Arc<Registry>,
    audit: &Audit,
    grace: std::time::Duration,
    now: &CancellationToken,
) -> Vec<crate::registry::CutOff> {
    let running = registry.list().len();
    info!(
        sessions = running,
        grace_secs = grace.as_secs(),
        "shutting down: draining"
    );
    audit.record(
        "server.draining",
        serde_json::json!({ "sessions": running, "graceSecs": grace.as_secs() }),
    );
    registry.begin_drain(grace);
    let cut = registry.wait_drained(grace, now).await;
    if cut.is_empty() {
        info!("every session ended before the grace period ran out");
    } else {
        let ids: Vec<&str> = cut.iter().map(|c| c.session.as_str()).collect();
        let participants: usize = cut.iter().map(|c| c.participants).sum();
        warn!(sessions = cut.len(), participants, cut_off = ?ids, "ending the sessions still running");
    }
    cut
}
