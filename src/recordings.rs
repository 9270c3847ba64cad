//! HTTP for recordings (`docs/recording.md`, `docs/api.md`): the management API's
//! `/api/recordings…` and `/api/sessions/{id}/recording(s)`, the owner's list at
//! `/s/{id}/recordings` (join token), and the replay data at `/r/{id}/…`, which a signed replay
//! link (or an API key) opens, also after the session ended.

use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::api::{ApiClient, AppError, AppState};
use crate::recording::store::{RecordingInfo, Store};
use crate::session::{system_actor, Role, SessionHandle};

/// How long a replay link handed out in a listing opens its recording.
const REPLAY_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// A recording as listed: the file's facts, whether it is still being written, and a replay link.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingView {
    #[serde(flatten)]
    info: RecordingInfo,
    /// Still being written (its session is recording into it).
    active: bool,
    /// Opens the replay page; signed, expires at `replayExpiresAt` (Unix seconds).
    replay_url: String,
    replay_expires_at: u64,
}

fn store(app: &AppState) -> Result<&std::sync::Arc<Store>, AppError> {
    app.registry.recordings().ok_or(AppError::Unavailable(
        "recording is off on this server".into(),
    ))
}

fn base(app: &AppState, headers: &HeaderMap) -> String {
    crate::api::links_base(&app.config, headers)
}

fn view(app: &AppState, base: &str, info: RecordingInfo) -> RecordingView {
    let expires = crate::capability::unix_secs(SystemTime::now() + REPLAY_LINK_TTL);
    let token = crate::capability::mint_replay(&app.config.secret, &info.id, expires);
    let active = app
        .registry
        .get(&info.session)
        .and_then(|s| s.recording_id())
        .is_some_and(|id| id == info.id);
    RecordingView {
        replay_url: format!("{base}/replay/{}#token={token}", info.id),
        replay_expires_at: expires,
        active,
        info,
    }
}

fn views(app: &AppState, headers: &HeaderMap, list: Vec<RecordingInfo>) -> Vec<RecordingView> {
    let base = base(app, headers);
    list.into_iter().map(|i| view(app, &base, i)).collect()
}

/// `GET /api/recordings`: every recording, newest first, with the total size.
pub async fn list_all(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let store = store(&app)?.clone();
    let list = tokio::task::spawn_blocking(move || store.list(None))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let total: u64 = list.iter().map(|r| r.bytes).sum();
    let retention = app
        .registry
        .recordings()
        .and_then(|s| s.retention())
        .map(|d| d.as_secs() / 86_400);
    Ok(Json(serde_json::json!({
        "recordings": views(&app, &headers, list),
        "totalBytes": total,
        "retentionDays": retention,
    })))
}

/// `GET /api/sessions/{id}/recordings`: one session's recordings (it may have ended).
pub async fn list_for_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    session_list(&app, &id, &headers).await
}

async fn session_list(
    app: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let store = store(app)?.clone();
    let session = id.to_string();
    let list = tokio::task::spawn_blocking(move || store.list(Some(&session)))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let status = app.registry.get(id).map(|s| s.recording_status());
    Ok(Json(serde_json::json!({
        "recording": status,
        "recordings": views(app, headers, list),
    })))
}

/// `GET /s/{id}/recordings` with the owner's join token: what the owner's viewer lists.
pub async fn owner_list(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let (_, role, _) = crate::ws::authorize_request(&app, &id, &headers)?;
    if role != Role::Owner {
        return Err(AppError::Forbidden(
            "only the session owner lists recordings".into(),
        ));
    }
    session_list(&app, &id, &headers).await
}

#[derive(Deserialize)]
pub struct RecordBody {
    on: bool,
}

/// `POST /api/sessions/{id}/recording` `{"on": true|false}`: starts or stops recording.
pub async fn set_recording(
    State(app): State<AppState>,
    axum::Extension(client): axum::Extension<ApiClient>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, AppError> {
    let body: RecordBody = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("expected {{\"on\": true|false}}: {e}")))?;
    let session = app
        .registry
        .get(&id)
        .ok_or(AppError::NotFound("session not found"))?;
    let mut by = system_actor("api");
    by.name = format!("api {}", client.0);
    set(&session, body.on, by).await?;
    Ok(Json(
        serde_json::json!({ "recording": session.recording_status() }),
    ))
}

/// Starts or stops `session`'s recording for `by`.
pub async fn set(
    session: &SessionHandle,
    on: bool,
    by: crate::recording::event::Actor,
) -> Result<(), AppError> {
    if on {
        session.start_recording(by).map_err(|e| match e {
            crate::session::RecordError::Unavailable => AppError::Unavailable(e.to_string()),
            crate::session::RecordError::Io(io) => AppError::Internal(io.to_string()),
        })?;
    } else {
        session.stop_recording(by).await;
    }
    Ok(())
}

/// `GET /api/recordings/{rid}`
pub async fn get_one(
    State(app): State<AppState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RecordingView>, AppError> {
    let info = find(&app, &rid).await?;
    Ok(Json(view(&app, &base(&app, &headers), info)))
}

async fn find(app: &AppState, rid: &str) -> Result<RecordingInfo, AppError> {
    let store = store(app)?.clone();
    let rid = rid.to_string();
    tokio::task::spawn_blocking(move || store.info(&rid))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .ok_or(AppError::NotFound("recording not found"))
}

/// `DELETE /api/recordings/{rid}`: 204; 409 while it is being written (stop it first).
pub async fn delete_one(
    State(app): State<AppState>,
    axum::Extension(client): axum::Extension<ApiClient>,
    Path(rid): Path<String>,
) -> Result<Response, AppError> {
    let info = find(&app, &rid).await?;
    if app
        .registry
        .get(&info.session)
        .and_then(|s| s.recording_id())
        .is_some_and(|id| id == rid)
    {
        return Err(AppError::Conflict(
            "the recording is in progress: stop it first",
        ));
    }
    let store = store(&app)?.clone();
    let id = rid.clone();
    let deleted = tokio::task::spawn_blocking(move || store.delete(&id))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(e.to_string()))?;
    if !deleted {
        return Err(AppError::NotFound("recording not found"));
    }
    info!(recording = %rid, "recording deleted through the API");
    app.audit.record(
        "recording.deleted",
        serde_json::json!({ "recording": rid, "session": info.session, "bytes": info.bytes, "apiClient": client.0 }),
    );
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/recordings/{rid}/file`: the recording file itself.
pub async fn api_file(
    State(app): State<AppState>,
    Path(rid): Path<String>,
) -> Result<Response, AppError> {
    file_response(&app, &rid).await
}

/// Whether a request may read recording `rid`: a replay link for it, or (on a keyed server) an
/// API key; an open server's API is open to loopback callers anyway.
fn replay_allowed(app: &AppState, rid: &str, headers: &HeaderMap) -> Result<(), AppError> {
    let refused = AppError::Unauthorized("missing, invalid or expired replay link");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(refused)?;
    if crate::capability::verify_replay(&app.config.secret, token, rid, SystemTime::now()).is_ok() {
        return Ok(());
    }
    if !app.config.api_keys.is_empty() && crate::api::api_key_of(&app.config, headers).is_some() {
        return Ok(());
    }
    info!(recording = %truncated(rid), "replay link refused");
    Err(AppError::Unauthorized(
        "missing, invalid or expired replay link",
    ))
}

fn truncated(s: &str) -> &str {
    let mut end = s.len().min(100);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `GET /r/{rid}/recording` with a replay link: the file, for the replay page.
pub async fn replay_file(
    State(app): State<AppState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    replay_allowed(&app, &rid, &headers)?;
    file_response(&app, &rid).await
}

async fn file_response(app: &AppState, rid: &str) -> Result<Response, AppError> {
    let store = store(app)?;
    let path = store
        .path(rid)
        .ok_or(AppError::NotFound("recording not found"))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| AppError::NotFound("recording not found"))?;
    let size = file.metadata().await.map(|m| m.len()).ok();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(size) = size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{rid}.{}\"",
        crate::recording::store::EXTENSION
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// `GET /api/recordings/{rid}/bundle`: the bug bundle (zip).
pub async fn api_bundle(
    State(app): State<AppState>,
    Path(rid): Path<String>,
) -> Result<Response, AppError> {
    bundle(&app, &rid).await
}

/// `GET /r/{rid}/bundle` with a replay link: the bug bundle, for the replay page's button.
pub async fn replay_bundle(
    State(app): State<AppState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    replay_allowed(&app, &rid, &headers)?;
    bundle(&app, &rid).await
}

async fn bundle(app: &AppState, rid: &str) -> Result<Response, AppError> {
    let path = store(app)?
        .path(rid)
        .filter(|p| p.exists())
        .ok_or(AppError::NotFound("recording not found"))?;
    info!(recording = %rid, "bug bundle requested");
    Ok(crate::recording::replay::bundle_response(path, rid.to_string()).await)
}
