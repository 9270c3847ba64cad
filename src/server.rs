//! The HTTP server: routes, and `run`, which serves until shutdown and then ends every session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::api::{self, AppState};
use crate::audit::Audit;
use crate::config::Config;
use crate::registry::Registry;
use crate::{assets, files, recordings, ws};

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
    Router::new()
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
        .with_state(state)
}

/// Serves on `listener` until `shutdown` fires, then ends every session and closes every
/// browser (bounded by the configured grace period). Tests call this on `127.0.0.1:0`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()
        .map_err(std::io::Error::other)?;
    let audit = Audit::start(&config.audit)?;
    let registry = Registry::new(
        Arc::clone(&config),
        Arc::clone(&audit),
        shutdown.child_token(),
    );
    let state = AppState {
        registry: Arc::clone(&registry),
        config: Arc::clone(&config),
        audit: Arc::clone(&audit),
    };
    // Recordings past their retention go at start and then hourly.
    {
        let registry = Arc::clone(&registry);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RETENTION_SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => {
                        let registry = Arc::clone(&registry);
                        let _ = tokio::task::spawn_blocking(move || registry.sweep_recordings()).await;
                    }
                }
            }
        });
    }
    let address = listener.local_addr()?;
    info!(%address, tls = tls.is_some(), api_keys = config.api_keys.len(), chromium = %config.chromium.display(), "listening");
    audit.record(
        "server.started",
        serde_json::json!({ "listen": address.to_string(), "tls": tls.is_some(), "apiKeys": config.api_keys.len() }),
    );
    // Upgraded WebSockets are not waited for by axum's graceful shutdown; they end themselves when
    // their session's token (a child of `shutdown`) fires. The peer address goes to the audit log.
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    let served = match tls {
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, tls, shutdown.clone())?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
        }
        None => {
            axum::serve(NoDelay(listener), app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
        }
    };
    info!("no longer accepting connections");
    registry.shutdown(config.shutdown_grace).await;
    audit.record("server.stopped", serde_json::Value::Null);
    audit.close().await;
    served
}
