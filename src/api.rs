//! The management HTTP API (`/api/*`, documented in `docs/api.md`) and the one error type every
//! HTTP handler returns.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use crate::config::{Config, Viewport, DEFAULT_VIEWPORT};
use crate::control::Policy;
use crate::navigation::validate_url;
use crate::protocol::{Links, WireViewport};
use crate::registry::{CreateError, CreateRequest, Registry};
use crate::session::{RemoveError, SessionHandle, SessionInfo};

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub audit: Arc<crate::audit::Audit>,
}

/// Who called the API, for the audit log: the fingerprint of their key (the first 12 hex digits
/// of its SHA-256; never the key), or `open` when no key is configured.
#[derive(Debug, Clone)]
pub struct ApiClient(pub String);

/// The key an `Authorization: Bearer` header presents, compared with every configured key in
/// constant time; `None` when it matches none.
pub(crate) fn api_key_of<'a>(config: &'a Config, headers: &HeaderMap) -> Option<&'a str> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    // Every key is compared (no early exit), so timing says nothing about which one matched.
    config.api_keys.iter().fold(None, |found, key| {
        let same = crate::token::constant_time_eq(presented.as_bytes(), key.as_bytes());
        if same && found.is_none() {
            Some(key.as_str())
        } else {
            found
        }
    })
}

fn key_fingerprint(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Middleware of `/api/*`: with API keys configured, a request must present one.
pub async fn require_api_key(
    State(app): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = if app.config.api_keys.is_empty() {
        "open".to_string()
    } else {
        match api_key_of(&app.config, request.headers()) {
            Some(key) => key_fingerprint(key),
            None => {
                let mut response =
                    AppError::Unauthorized("missing or invalid API key").into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
        }
    };
    request.extensions_mut().insert(ApiClient(client));
    next.run(request).await
}

/// `GET /api/auth`: 200 when the caller may use the API (open, or a valid key); the landing
/// page asks before offering "Start".
pub async fn auth_check(State(app): State<AppState>) -> Json<serde_json::Value> {
    let mode = if app.config.api_keys.is_empty() {
        "open"
    } else {
        "key"
    };
    Json(serde_json::json!({ "auth": mode }))
}

/// Errors as HTTP responses: a status and `{"error": "..."}`. Internal details are logged, not
/// sent.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(detail) => {
                error!(%detail, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl From<CreateError> for AppError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Full(_) | CreateError::LowMemory { .. } | CreateError::ShuttingDown => {
                AppError::Unavailable(e.to_string())
            }
            // Another node may well start one: 503 lets a router try elsewhere. The detail
            // (Chromium's own words) is logged, not sent.
            CreateError::Browser(detail) => {
                error!(error = %detail, "cannot start a browser for a new session");
                AppError::Unavailable("the browser could not be started on this server".into())
            }
            CreateError::Random(_) | CreateError::Links(_) => AppError::Internal(e.to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSessionBody {
    url: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    /// `shared` (default) or `exclusive`.
    control: Option<Policy>,
    /// Seconds a control holder may stay idle (exclusive policy); default 120.
    #[serde(rename = "controlIdleSecs")]
    control_idle_secs: Option<u64>,
    /// Device pixels per CSS pixel of the screen, 1 to 3 (default 1): sharper text for high-DPI
    /// viewers, at the cost of bigger frames.
    #[serde(rename = "deviceScaleFactor")]
    device_scale_factor: Option<f64>,
    /// Seconds the session's join links admit people; default the server's `--link-ttl`.
    #[serde(rename = "linkTtlSecs")]
    link_ttl_secs: Option<u64>,
    /// CSS selectors of elements masked in this session, on top of the deployment's.
    mask: Option<Vec<String>>,
    /// Record the session from its start.
    record: Option<bool>,
}

/// Largest device scale factor a session may ask for.
const MAX_SCALE: f64 = 3.0;

/// What a create request asks for, checked.
struct CreateOptions {
    url: String,
    viewport: Viewport,
    scale: f64,
    control: Policy,
    control_idle: std::time::Duration,
    link_ttl: Option<std::time::Duration>,
    mask: Vec<String>,
    record: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    id: String,
    url: String,
    start_url: String,
    viewport: WireViewport,
    /// Device pixels per CSS pixel of the screen.
    device_scale_factor: f64,
    created_at: u64,
    participants: usize,
    /// Everyone connected, in join order: id, name, colour, role, join time (Unix ms).
    presence: Vec<crate::session::PresenceEntry>,
    /// Who may act: policy, holder, requests.
    control: crate::control::ControlView,
    frames_produced: u32,
    frames_in: u64,
    /// Screenshots taken because the screencast stalled (normally 0).
    frames_polled: u64,
    /// Checks of a quiet screencast against a screenshot.
    screencast_checks: u64,
    /// `screencast`, or `screenshots` while the screencast is broken.
    screen_source: &'static str,
    frames_sent: u64,
    bytes_sent: u64,
    browser_pid: Option<u32>,
    /// Times the page's renderer or the browser crashed and was restarted.
    browser_restarts: u32,
    /// Requests of the page (documents, images, scripts, WebSockets …) the egress policy
    /// blocked.
    blocked_requests: u64,
    /// The page: URL, title, loading, back/forward.
    page: crate::session::PageInfo,
    /// The browser's tabs in strip order (the active one's page is `page`).
    tabs: Vec<crate::tabs::TabInfo>,
    links: Links,
    /// Each connected participant's link: round trip, lag, quality, updates and bytes sent.
    participant_links: Vec<crate::session::LinkInfo>,
    /// The server's share of the latency: frame arrival → screen version, → update written.
    pipeline: crate::session::PipelineInfo,
}

impl From<SessionInfo> for SessionView {
    fn from(i: SessionInfo) -> Self {
        SessionView {
            id: i.id,
            url: i.url,
            start_url: i.start_url,
            viewport: WireViewport {
                width: i.viewport.width,
                height: i.viewport.height,
            },
            device_scale_factor: i.scale,
            created_at: i
                .created
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            participants: i.participants,
            presence: i.people,
            control: i.control,
            frames_produced: i.frames_produced,
            frames_in: i.frames_in,
            frames_polled: i.frames_polled,
            screencast_checks: i.screencast_checks,
            screen_source: if i.polling {
                "screenshots"
            } else {
                "screencast"
            },
            frames_sent: i.frames_sent,
            bytes_sent: i.bytes_sent,
            browser_pid: i.browser_pid,
            browser_restarts: i.restarts,
            blocked_requests: i.blocked_requests,
            page: i.page,
            tabs: i.tabs,
            links: i.links,
            participant_links: i.participant_links,
            pipeline: i.pipeline,
        }
    }
}

/// `deployment_masks`: how many selectors the deployment masks already (they share the limit).
fn parse_create(body: &[u8], deployment_masks: usize) -> Result<CreateOptions, AppError> {
    let body: CreateSessionBody = serde_json::from_slice(body)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))?;
    let url = body
        .url
        .ok_or_else(|| AppError::BadRequest("missing field 'url'".into()))?;
    let url = validate_url(&url).map_err(AppError::BadRequest)?;
    let viewport = Viewport {
        width: body.width.unwrap_or(DEFAULT_VIEWPORT.width),
        height: body.height.unwrap_or(DEFAULT_VIEWPORT.height),
    }
    .validate()
    .map_err(AppError::BadRequest)?;
    let control_idle = match body.control_idle_secs {
        None => crate::control::DEFAULT_IDLE,
        Some(s @ 1..=86_400) => std::time::Duration::from_secs(s),
        Some(_) => {
            return Err(AppError::BadRequest(
                "controlIdleSecs must be between 1 and 86400".into(),
            ))
        }
    };
    let scale = match body.device_scale_factor {
        None => 1.0,
        Some(s) if (1.0..=MAX_SCALE).contains(&s) => s,
        Some(_) => {
            return Err(AppError::BadRequest(format!(
                "deviceScaleFactor must be between 1 and {MAX_SCALE}"
            )))
        }
    };
    let viewport = viewport
        .validate_scaled(scale)
        .map_err(AppError::BadRequest)?;
    let mask = body.mask.unwrap_or_default();
    if mask.len() + deployment_masks > crate::mask::MAX_SELECTORS {
        return Err(AppError::BadRequest(format!(
            "mask: at most {} selectors with the server's own {deployment_masks}",
            crate::mask::MAX_SELECTORS
        )));
    }
    let mask = crate::mask::validate_selectors(&mask)
        .map_err(|e| AppError::BadRequest(format!("mask: {e}")))?;
    Ok(CreateOptions {
        record: body.record.unwrap_or(false),
        mask,
        url,
        viewport,
        scale,
        control: body.control.unwrap_or(Policy::Shared),
        control_idle,
        link_ttl: body.link_ttl_secs.map(link_ttl).transpose()?,
    })
}

/// A link lifetime asked for through the API.
fn link_ttl(secs: u64) -> Result<std::time::Duration, AppError> {
    if !(60..=crate::config::MAX_LINK_TTL_SECS).contains(&secs) {
        return Err(AppError::BadRequest(format!(
            "link lifetimes must be between 60 and {} seconds",
            crate::config::MAX_LINK_TTL_SECS
        )));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Scheme, host and port for links: the configured public URL, else this request's Host.
pub(crate) fn links_base(config: &Config, headers: &HeaderMap) -> String {
    if let Some(public) = &config.public_url {
        return public.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map_or_else(|| config.listen.to_string(), str::to_string);
    format!("http://{host}")
}

/// `POST /api/sessions`
pub async fn create_session(
    State(app): State<AppState>,
    axum::Extension(client): axum::Extension<ApiClient>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let options = parse_create(&body, app.config.mask.len())?;
    let start_url = options.url.clone();
    let links_base = links_base(&app.config, &headers);
    let session = app
        .registry
        .create(CreateRequest {
            url: options.url,
            viewport: options.viewport,
            scale: options.scale,
            links_base,
            control: options.control,
            control_idle: options.control_idle,
            link_ttl: options.link_ttl.unwrap_or(app.config.link_ttl),
            mask: options.mask,
            record: options.record,
        })
        .await?;
    info!(session_id = %session.id(), "session created");
    app.audit.record(
        "session.created",
        serde_json::json!({ "session": session.id(), "url": start_url, "apiClient": client.0 }),
    );
    let view = serde_json::json!({
        "id": session.id(),
        "links": session.links(),
        "linksExpireAt": session.default_links_expire(),
    });
    let location = format!("/api/sessions/{}", session.id());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

/// `GET /api/sessions`
pub async fn list_sessions(State(app): State<AppState>) -> Json<serde_json::Value> {
    let sessions: Vec<SessionView> = app
        .registry
        .list()
        .iter()
        .map(|s| s.info().into())
        .collect();
    Json(serde_json::json!({ "sessions": sessions }))
}

fn find(app: &AppState, id: &str) -> Result<SessionHandle, AppError> {
    app.registry
        .get(id)
        .ok_or(AppError::NotFound("session not found"))
}

/// `GET /api/sessions/{id}`
pub async fn get_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, AppError> {
    Ok(Json(find(&app, &id)?.info().into()))
}

/// Query of the screenshot route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenshotQuery {
    /// `1`: the masked screen (what masked participants converge on) instead of the clear one.
    #[serde(default)]
    masked: Option<u8>,
}

/// `GET /api/sessions/{id}/screenshot[?masked=1]`: the server's current screen of the session, as
/// a lossless PNG (exactly the pixels every viewer of that screen converges on). The clear
/// screen by default: the management API is operator-level (with an API key, it is the
/// operator's), as the browser itself is; `?masked=1` gives what masked participants see.
pub async fn screenshot(
    State(app): State<AppState>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ScreenshotQuery>,
) -> Result<Response, AppError> {
    let session = find(&app, &id)?;
    let screen = match query.masked {
        None | Some(0) => session.screen(),
        Some(_) => session.masked_screen(),
    };
    let snapshot = screen
        .borrow()
        .clone()
        .ok_or(AppError::Unavailable("the page has not painted yet".into()))?;
    let png = tokio::task::spawn_blocking(move || {
        let mut out = std::io::Cursor::new(Vec::new());
        snapshot
            .pixels
            .write_to(&mut out, image::ImageFormat::Png)
            .map(|()| (out.into_inner(), snapshot.version))
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(|e| AppError::Internal(e.to_string()))?;
    let (png, version) = png;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/png".to_string()),
            (
                axum::http::header::HeaderName::from_static("x-screen-version"),
                version.to_string(),
            ),
            (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
        ],
        png,
    )
        .into_response())
}

/// `DELETE /api/sessions/{id}`: ends the session and answers once its browser is closed.
pub async fn delete_session(
    State(app): State<AppState>,
    axum::Extension(client): axum::Extension<ApiClient>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let session = find(&app, &id)?;
    app.audit.record(
        "session.end-requested",
        serde_json::json!({ "session": id, "apiClient": client.0 }),
    );
    session.end("the session was ended through the API");
    let limit = app.config.shutdown_grace * 2;
    if !session.wait_finished(limit).await {
        return Err(AppError::Internal(format!(
            "session {id} did not finish within {limit:?}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/sessions/{id}/participants/{pid}`: removes a participant (their connection
/// closes, the join link of their role is replaced). `409` for the owner.
pub async fn remove_participant(
    State(app): State<AppState>,
    axum::Extension(client): axum::Extension<ApiClient>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let session = find(&app, &id)?;
    match session.remove(&pid, &format!("api:{}", client.0)) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(RemoveError::NotFound) => Err(AppError::NotFound("participant not found")),
        Err(RemoveError::Owner) => Err(AppError::Conflict("the owner cannot be removed")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    role: String,
    #[serde(rename = "ttlSecs")]
    ttl_secs: Option<u64>,
    label: Option<String>,
}

/// `GET /api/sessions/{id}/links`: every link the session minted, revoked ones included.
pub async fn list_links(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let session = find(&app, &id)?;
    Ok(Json(serde_json::json!({ "links": session.link_views() })))
}

/// `POST /api/sessions/{id}/links` `{"role", "ttlSecs"?, "label"?}`: a new join link.
pub async fn mint_link(
    State(app): State<AppState>,
    axum::Extension(client): axum::Extension<ApiClient>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let session = find(&app, &id)?;
    let body: MintBody = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))?;
    let role = crate::session::Role::parse(&body.role)
        .ok_or_else(|| AppError::BadRequest("role must be owner, controller or viewer".into()))?;
    let ttl = body
        .ttl_secs
        .map(link_ttl)
        .transpose()?
        .unwrap_or(app.config.link_ttl);
    let label = body
        .label
        .as_deref()
        .map(|l| {
            crate::people::clean_name(l)
                .filter(|_| l.chars().count() <= crate::capability::MAX_LABEL_CHARS)
                .ok_or_else(|| {
                    AppError::BadRequest(format!(
                        "label must be 1 to {} printable characters",
                        crate::capability::MAX_LABEL_CHARS
                    ))
                })
        })
        .transpose()?;
    let view = session
        .mint_link(role, ttl, label, &format!("api:{}", client.0))
        .map_err(|e| match e {
            crate::capability::MintError::Full => {
                AppError::Conflict("this session has too many links")
            }
            crate::capability::MintError::Random => AppError::Internal(e.to_string()),
        })?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `DELETE /api/sessions/{id}/links/{link}`: the link stops admitting anyone, and whoever
/// joined with it is disconnected.
pub async fn revoke_link(
    State(app): State<AppState>,
    axum::Extension(client): axum::Extension<ApiClient>,
    Path((id, link)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let session = find(&app, &id)?;
    if session.revoke_link(&link, &format!("api:{}", client.0)) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("link not found"))
    }
}

/// Any other `/api/*` path.
pub async fn api_not_found() -> AppError {
    AppError::NotFound("no such API endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_is_strict() {
        assert!(parse_create(br#"{"url":"https://e.com"}"#, 0).is_ok());
        for bad in [
            &b"not json"[..],
            br#"{}"#,
            br#"{"url": 5}"#,
            br#"{"url":"https://e.com","width":-1}"#,
            br#"{"url":"https://e.com","width":100000}"#,
            br#"{"url":"https://e.com","height":1.5}"#,
            br#"{"url":"https://e.com","widht":800}"#,
            br#"{"url":"https://e.com","mask":[""]}"#,
            br#"{"url":"https://e.com","mask":["a{}"]}"#,
            br##"{"url":"https://e.com","mask":"#ssn"}"##,
        ] {
            assert!(
                matches!(parse_create(bad, 0), Err(AppError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = parse_create(br##"{"url":"https://e.com","mask":["#ssn"," .x "]}"##, 0);
        assert_eq!(
            ok.map(|o| o.mask).ok(),
            Some(vec!["#ssn".into(), ".x".into()])
        );
        // Session selectors share the limit with the deployment's.
        let body = br##"{"url":"https://e.com","mask":["#a","#b"]}"##;
        assert!(parse_create(body, crate::mask::MAX_SELECTORS - 2).is_ok());
        assert!(parse_create(body, crate::mask::MAX_SELECTORS - 1).is_err());
    }
}
