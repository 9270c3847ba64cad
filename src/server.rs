//! The HTTP server: routes, and `run`, which serves until shutdown and then ends every session.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::registry::Registry;
use crate::{assets, files, ws};

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
            "/sessions/{id}/participants/{pid}",
            axum::routing::delete(api::remove_participant),
        )
        .fallback(api::api_not_found)
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES));
    Router::new()
        .route("/", get(assets::index))
        .route("/s/{id}", get(assets::session_page))
        .route("/s/{id}/check", get(ws::check))
        .route(
            "/s/{id}/files/{chooser}",
            axum::routing::post(files::upload).layer(DefaultBodyLimit::max(files::body_limit(
                state.config.max_upload_bytes,
            ))),
        )
        .route("/s/{id}/downloads/{n}", get(files::download))
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
    let registry = Registry::new(Arc::clone(&config), shutdown.child_token());
    let state = AppState {
        registry: Arc::clone(&registry),
        config: Arc::clone(&config),
    };
    info!(address = %listener.local_addr()?, chromium = %config.chromium.display(), "listening");
    // Upgraded WebSockets are not waited for by axum's graceful shutdown; they end themselves when
    // their session's token (a child of `shutdown`) fires.
    // Interactive traffic: without TCP_NODELAY a small message (an update, a notice) written while
    // the previous one is unacknowledged waits for the peer's delayed ACK (up to 40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    info!("no longer accepting connections");
    registry.shutdown(config.shutdown_grace).await;
    served
}
