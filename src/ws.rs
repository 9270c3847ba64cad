//! The participant's WebSocket: everything is checked before the upgrade, then one writer task
//! (screen, events, notices) and one reader task (acks, input) per participant. Leaving happens in
//! one place: when either task ends, the [`Participant`] guard is dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, Instrument};

use crate::api::{AppError, AppState};
use crate::control::Refusal;
use crate::input::{self, Input, MouseKind};
use crate::pacing::Pacer;
use crate::people::{self, ChatError, RateLimit};
use crate::protocol::{
    close, encode_update, flags, parse_client_message, ClientMessage, ServerMessage, UpdateHeader,
    WirePointer, WireViewport, MAX_ANNOTATION_POINTS, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
    SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX,
};
use crate::session::{sleep_until_or_never, JoinError, Participant, Role, SessionHandle};

/// A send to a participant that takes longer than this means it stopped reading: it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The server pings every participant this often (browsers answer by themselves).
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A participant silent (not even a pong) for this long is gone.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages from a participant's reader to its writer; notices beyond this are dropped (they
/// are advisory).
const NOTICE_BUFFER: usize = 8;
/// How long a writer may take to send a close frame after its reader saw a protocol violation.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a participant's link figures are published (and sent to owners).
const LINK_REPORT_EVERY: Duration = Duration::from_secs(1);
/// Others' pointers are sent to a participant at most this often (~30 Hz).
const POINTER_EVERY: Duration = Duration::from_millis(33);
/// Pointer messages a participant may send: a burst, then this many per second (viewers send
/// one per animation frame at most; the rest is dropped).
const POINTER_BURST: f64 = 30.0;
const POINTER_PER_SEC: f64 = 60.0;
/// How long a pointer position over the limit waits before it is applied anyway.
const POINTER_HOLD: Duration = Duration::from_millis(50);
/// The page's cursor under a participant's mouse is looked up at most this often.
const CURSOR_PROBE_EVERY: Duration = Duration::from_millis(100);
/// Input events (keys, presses, moves, wheel, text) a participant may send: a burst, then this
/// many per second. Far above a person (a fast typist sends ~15 keys a second, a mouse ~60 moves,
/// a trackpad ~60 wheel events); a script flooding the page is cut to this. Releases (key up,
/// button up) have a bucket of their own twice as big, so a held key or button is never left
/// down because its release was dropped.
pub const INPUT_BURST: f64 = 500.0;
pub const INPUT_PER_SEC: f64 = 250.0;
/// Notices about dropped input are sent at most this often.
const INPUT_NOTICE_EVERY: Duration = Duration::from_secs(2);
/// Annotation messages a participant may send: a burst, then this many per second.
const ANNOTATE_BURST: f64 = 30.0;
const ANNOTATE_PER_SEC: f64 = 30.0;

/// What a participant's reader tells its writer about acknowledgements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Acks {
    /// Highest update number painted.
    seq: u32,
    /// How many times the viewer asked for a whole screen.
    resyncs: u32,
}

/// What a participant's reader asks its writer to send.
enum Outgoing {
    Notice(Arc<str>),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
}

/// `GET /ws/{id}`: joins a session.
/// Optional query parameters of the WebSocket URL.
#[derive(Debug, Default, serde::Deserialize)]
pub struct JoinQuery {
    /// Display name (from the join link's `name` parameter or the viewer's name field).
    name: Option<String>,
}

pub async fn upgrade(
    State(app): State<AppState>,
    axum::extract::ConnectInfo(crate::server::Peer(remote)): axum::extract::ConnectInfo<
        crate::server::Peer,
    >,
    Path(id): Path<String>,
    query: Result<Query<JoinQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return AppError::BadRequest(rejection.body_text()).into_response(),
    };
    if !origin_allowed(&headers, &app.config) {
        info!(session_id = %truncate(&id, 40), origin = ?headers.get(header::ORIGIN), "WebSocket refused: origin not allowed");
        return AppError::Forbidden("origin not allowed".into()).into_response();
    }
    let token = offered_token(&headers);
    let (session, role, link) = match authorize(&app, &id, token.as_deref()) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    // A malformed query string costs the name, not the join.
    let name = query.ok().and_then(|Query(q)| q.name);
    let client = client_address(remote, &headers, &app.config.trusted_proxies);
    let participant = match session.join(role, name.as_deref(), &link, Some(client)) {
        Ok(p) => p,
        Err(JoinError::Full) => {
            return AppError::Unavailable("participant limit reached".into()).into_response()
        }
        Err(JoinError::Ended) => return AppError::NotFound("session not found").into_response(),
        Err(JoinError::Revoked) => {
            return AppError::Unauthorized("missing, invalid, expired or revoked link")
                .into_response()
        }
    };
    let span = tracing::info_span!("participant", session_id = %session.id(), participant = %participant.id());
    ws.protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_failed_upgrade(|e| debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve(socket, participant).instrument(span))
}

/// Keeps a participant told of the page's cursor under their mouse: the page is asked at most
/// every [`CURSOR_PROBE_EVERY`], one question at a time, always for the latest position, and
/// only a change is sent.
#[derive(Default)]
struct CursorProbe {
    /// The latest mouse position not asked about yet (viewport CSS pixels), and when to ask.
    pending: Option<((f64, f64), Instant)>,
    last_asked: Option<Instant>,
    busy: Arc<std::sync::atomic::AtomicBool>,
    shown: Arc<std::sync::Mutex<&'static str>>,
}

impl CursorProbe {
    fn at(&mut self, x: f64, y: f64) {
        let due = self
            .last_asked
            .map_or_else(Instant::now, |t| t + CURSOR_PROBE_EVERY);
        self.pending = Some(((x, y), due));
    }

    fn due(&self) -> Option<Instant> {
        self.pending.map(|(_, due)| due)
    }

    fn fire(&mut self, session: &SessionHandle, to_writer: &mpsc::Sender<Outgoing>) {
        let Some(((x, y), _)) = self.pending else {
            return;
        };
        if self.busy.swap(true, Ordering::AcqRel) {
            // The previous answer is not in yet: ask again shortly.
            self.pending = Some(((x, y), Instant::now() + CURSOR_PROBE_EVERY));
            return;
        }
        self.pending = None;
        self.last_asked = Some(Instant::now());
        let (session, to_writer) = (session.clone(), to_writer.clone());
        let (busy, shown) = (self.busy.clone(), self.shown.clone());
        tokio::spawn(async move {
            if let Some(shape) = session.cursor_at(x, y).await {
                let changed = {
                    let mut shown = crate::lock(&shown);
                    std::mem::replace(&mut *shown, shape) != shape
                };
                if changed {
                    let json = ServerMessage::Cursor { shape }.to_json();
                    // Advisory, like notices: a full queue loses one cursor change.
                    let _ = to_writer.try_send(Outgoing::Notice(Arc::from(json)));
                }
            }
            busy.store(false, Ordering::Release);
        });
    }
}

/// Whether input may go on; otherwise tells the participant why, once per reason (a viewer
/// clicking away is told once, not per click), and logs it.
fn input_allowed(
    verdict: Result<(), Refusal>,
    told: &mut Option<Refusal>,
    notice: &dyn Fn(&str, &str),
) -> bool {
    match verdict {
        Ok(()) => {
            *told = None;
            true
        }
        Err(refusal) => {
            if told.as_ref() != Some(&refusal) {
                info!(reason = %refusal, "input dropped");
                let code = match refusal {
                    Refusal::ViewOnly => "input-not-allowed",
                    _ => "no-control",
                };
                notice(code, &format!("Input ignored: {refusal}."));
                *told = Some(refusal);
            }
            false
        }
    }
}

/// The pointers of everyone but `me`, in pixels of `screen` (the session's geometry before the
/// first screen); pointers scrolled out of view are left out. Rounded to a tenth of a pixel.
fn place_pointers(
    pointers: &crate::session::Pointers,
    me: &str,
    screen: Option<&crate::screen::Snapshot>,
    session: &SessionHandle,
) -> Vec<(String, f64, f64)> {
    let geometry = screen.map_or_else(|| session.geometry(), |s| s.geometry);
    pointers
        .iter()
        .filter(|(id, _)| id.as_str() != me)
        .filter_map(|(id, &(px, py))| {
            let (x, y) = geometry.from_page(px, py)?;
            Some((
                id.clone(),
                (x * 10.0).round() / 10.0,
                (y * 10.0).round() / 10.0,
            ))
        })
        .collect()
}

/// `GET /s/{id}/check` with `Authorization: Bearer {token}`: tells a viewer whose socket failed
/// whether its link is still good.
pub async fn check(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match authorize_request(&app, &id, &headers) {
        Ok((_, role, _)) => (
            StatusCode::OK,
            Json(serde_json::json!({ "role": role.as_str() })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The session, role and link id a request's `Authorization: Bearer <join token>` grants.
pub fn authorize_request(
    app: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<(SessionHandle, Role, String), AppError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    authorize(app, id, token)
}

/// The client's address for the audit log: the peer's, or, when the peer is a trusted reverse
/// proxy, the right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries
/// further left were written by the client and prove nothing).
pub fn client_address(
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    if !trusted.contains(&peer.ip()) {
        return peer.ip();
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .map(|entry| entry.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_none_or(|ip| !trusted.contains(&ip)))
        .flatten()
        .unwrap_or(peer.ip())
}

/// Every refusal is the same 401 whatever the reason (a wrong signature, another session's
/// token, an expired or revoked link), so a guesser learns nothing; the reason is logged, the
/// token never is.
fn authorize(
    app: &AppState,
    id: &str,
    token: Option<&str>,
) -> Result<(SessionHandle, Role, String), AppError> {
    let session = app
        .registry
        .get(id)
        .ok_or(AppError::NotFound("session not found"))?;
    let refused = AppError::Unauthorized("missing, invalid, expired or revoked link");
    let Some(token) = token else {
        return Err(refused);
    };
    match session.admit(token) {
        Ok((role, link)) => Ok((session, role, link)),
        Err(reason) => {
            info!(session_id = %session.id(), %reason, "join link refused");
            session.audit_refusal(reason);
            Err(refused)
        }
    }
}

/// The join token offered as a `cobrowse.token.{token}` subprotocol.
fn offered_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix(TOKEN_SUBPROTOCOL_PREFIX)
                .map(str::to_string)
        })
}

/// Browsers always send `Origin` on WebSocket handshakes: it must be this server's own origin
/// (as the `Host` header or the configured public URL names it) or one of the configured
/// `--allowed-origin`s (pages that embed the viewer). Clients that send no `Origin` are not
/// browsers, so no other site's page can be riding on a user's link.
pub fn origin_allowed(headers: &HeaderMap, config: &crate::config::Config) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if config
        .public_url
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(origin))
        || config
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some_and(|h| h.eq_ignore_ascii_case(host))
}

async fn serve(socket: WebSocket, participant: Participant) {
    let (sink, stream) = socket.split();
    let (notices_tx, notices_rx) = mpsc::channel(NOTICE_BUFFER);
    let (acked_tx, acked_rx) = watch::channel(Acks::default());
    let writer = write_loop(sink, &participant, notices_rx, acked_rx);
    let reader = read_loop(stream, &participant, notices_tx, acked_tx);
    tokio::pin!(writer);
    tokio::pin!(reader);
    // Either side ending ends the connection; the other side is dropped with it. A reader that
    // saw a protocol violation first lets the writer send the close frame it asked for. A writer
    // that sent a close frame lets the reader finish the closing handshake (the participant's
    // own close frame, briefly): dropping a socket with unread input (acks in flight) resets
    // the connection, and the participant would lose the close code and reason.
    let outcome = tokio::select! {
        r = &mut writer => {
            if r.is_ok() {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await;
            }
            r.map(|()| "closed by the server")
        }
        r = &mut reader => {
            if let Err(ConnError::TooBig) = r {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await;
            }
            r.map(|()| "closed by the participant")
        }
    };
    let link = participant.link();
    let (updates, bytes) = (
        link.updates.load(Ordering::Relaxed),
        link.bytes.load(Ordering::Relaxed),
    );
    let rtt = link.rtt_ms.load(Ordering::Relaxed);
    let rtt_ms = (rtt != u32::MAX).then_some(rtt);
    match outcome {
        Ok(how) => info!(how, updates, bytes, ?rtt_ms, "connection ended"),
        Err(e) => info!(error = %e, updates, bytes, ?rtt_ms, "connection dropped"),
    }
    // `participant` drops here, after both tasks: the one place a participant leaves.
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("participant stopped reading (send timed out)")]
    WriteTimeout,
    #[error("participant silent for too long")]
    ReadTimeout,
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooBig,
    #[error("socket error: {0}")]
    Socket(axum::Error),
    #[error("screen update could not be encoded")]
    Encode,
    #[error("a second writer for the same participant")]
    SecondWriter,
}

impl From<axum::Error> for ConnError {
    fn from(e: axum::Error) -> Self {
        let inner = e.into_inner();
        match inner.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => ConnError::TooBig,
            _ => ConnError::Socket(axum::Error::new(inner)),
        }
    }
}

struct Writer<'a> {
    sink: SplitSink<WebSocket, Message>,
    session: &'a SessionHandle,
}

impl Writer<'_> {
    async fn send(&mut self, message: Message) -> Result<(), ConnError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.sink.send(message)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ConnError::WriteTimeout),
        }
    }

    async fn send_json(&mut self, message: &ServerMessage<'_>) -> Result<(), ConnError> {
        self.send(Message::Text(Utf8Bytes::from(message.to_json())))
            .await
    }

    /// The session's state as it is now; sent on join and after lagging behind events.
    async fn send_state(&mut self) -> Result<(), ConnError> {
        for json in self.session.state_messages() {
            self.send(Message::Text(Utf8Bytes::from(json))).await?;
        }
        Ok(())
    }
}

async fn write_loop(
    sink: SplitSink<WebSocket, Message>,
    participant: &Participant,
    mut from_reader: mpsc::Receiver<Outgoing>,
    mut acked: watch::Receiver<Acks>,
) -> Result<(), ConnError> {
    let session = participant.session();
    let mut w = Writer { sink, session };
    // Masking: the screen this participant is served from (masked or clear) may change while it
    // is connected (a typist); the choice is made here only, and a change starts it over with
    // a whole screen of the other one.
    let mut masked = session.sees_masked(participant);
    let (mut screen, mut encoder) = session.screen_for(masked);
    let mut audience = session.mask_audience();
    let mut masks_sent: Option<std::sync::Arc<[crate::tiles::PixelRect]>> = None;
    let mut events = session.events();
    let ended = session.cancelled();
    let is_owner = participant.role() == Role::Owner;
    let links = is_owner.then(|| session.links());
    let viewport = session.viewport();
    w.send_json(&ServerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        session: session.id(),
        participant: participant.id(),
        role: participant.role().as_str(),
        can_input: participant.role().can_input(),
        viewport: WireViewport {
            width: viewport.width,
            height: viewport.height,
        },
        links: links.as_ref(),
        url: &session.url(),
        name: participant.name(),
        color: participant.color(),
    })
    .await?;
    w.send_state().await?;
    let removed = participant.removed();
    let mut direct = participant.take_direct().ok_or(ConnError::SecondWriter)?;
    let mut links_changed = session.links_changed();

    let mut pacer = Pacer::new(Instant::now());
    let mut resyncs = 0;
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.reset();
    let mut report = tokio::time::interval(LINK_REPORT_EVERY);
    let mut pointers = session.pointers();
    // The others' pointers as last sent (screen pixels), and when the next send may go.
    let mut pointers_sent: Vec<(String, f64, f64)> = Vec::new();
    let mut pointers_not_before = Instant::now();
    // Where the page sat on the screen when last told (`view`).
    let mut view_sent: Option<[f64; 4]> = None;
    loop {
        // Which screen this participant may see is decided before anything is planned from one:
        // a participant who stopped typing in a masked field must not get one more clear frame.
        if session.sees_masked(participant) != masked {
            masked = !masked;
            debug!(masked, "participant moves to the other screen");
            (screen, encoder) = session.screen_for(masked);
            pacer.resync();
            if !masked && masks_sent.take().is_some_and(|m| !m.is_empty()) {
                w.send_json(&ServerMessage::Masks { rects: &[] }).await?;
            }
        }
        // The screen: while the window is open, whatever this participant lacks goes out as one
        // update (see `pacing` for the slow-viewer policy).
        let latest = screen.borrow_and_update().clone();
        // Decided once per turn: the send below and the wake-ups after it must agree.
        let may_send = pacer.may_send(Instant::now());
        if may_send {
            if let Some(snapshot) = &latest {
                if let Some(plan) = pacer.plan(snapshot) {
                    if masked && masks_sent.as_ref() != Some(&snapshot.masks) {
                        let rects: Vec<[u32; 4]> = snapshot
                            .masks
                            .iter()
                            .map(|r| [r.x, r.y, r.w, r.h])
                            .collect();
                        w.send_json(&ServerMessage::Masks { rects: &rects }).await?;
                        masks_sent = Some(snapshot.masks.clone());
                    }
                    let encoded = encoder
                        .get(snapshot.clone(), plan.clone())
                        .await
                        .ok_or(ConnError::Encode)?;
                    // Encoding took a while: if this participant's screen changed meanwhile, this
                    // update is of the wrong one. Drop it; the top of the loop switches.
                    if session.sees_masked(participant) != masked {
                        continue;
                    }
                    let refine_only =
                        !plan.keyframe && plan.copies.is_empty() && plan.dirty.is_empty();
                    let header = UpdateHeader {
                        flags: if plan.keyframe { flags::KEYFRAME } else { 0 }
                            | if refine_only { flags::REFINE } else { 0 },
                        ops: encoded.ops,
                        number: pacer.next_number(),
                        version: plan.version,
                        width: snapshot.grid.width as u16,
                        height: snapshot.grid.height as u16,
                    };
                    let message = encode_update(&header, &encoded.body);
                    let bytes = message.len();
                    w.send(Message::Binary(message)).await?;
                    let now = Instant::now();
                    pacer.sent(snapshot, &plan, &encoded, now);
                    let stats = session.stats();
                    if !refine_only {
                        stats
                            .send_ms
                            .record(now.saturating_duration_since(snapshot.arrived));
                    }
                    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                    stats.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
                    let link = participant.link();
                    link.updates.fetch_add(1, Ordering::Relaxed);
                    link.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                    // Sending may have taken a while: look at the screen again at once.
                    continue;
                }
            }
        }
        // The others' pointers, placed on the newest screen: re-sent when one moves or the page
        // scrolls under them, at most every POINTER_EVERY.
        let placed = place_pointers(
            &pointers.borrow_and_update(),
            participant.id(),
            latest.as_deref(),
            session,
        );
        let view = latest.as_ref().map(|s| {
            let g = &s.geometry;
            [g.scroll_x, g.scroll_y, g.css_width, g.css_height]
        });
        let view_due = view.is_some() && view != view_sent;
        let pointer_wake = if placed == pointers_sent && !view_due {
            None
        } else if Instant::now() >= pointers_not_before {
            if let Some([scroll_x, scroll_y, css_width, css_height]) = view.filter(|_| view_due) {
                w.send_json(&ServerMessage::View {
                    scroll_x,
                    scroll_y,
                    css_width,
                    css_height,
                })
                .await?;
                view_sent = view;
            }
            if placed != pointers_sent {
                let wire: Vec<WirePointer<'_>> = placed
                    .iter()
                    .map(|(id, x, y)| WirePointer { id, x: *x, y: *y })
                    .collect();
                w.send_json(&ServerMessage::Pointers { pointers: &wire })
                    .await?;
                pointers_sent = placed;
            }
            pointers_not_before = Instant::now() + POINTER_EVERY;
            None
        } else {
            Some(pointers_not_before)
        };
        // Wake for a new screen only when something may be sent; otherwise for the ack that opens
        // the window, the moment the rate allows a send, or a refinement coming due.
        let wake_at = if !pacer.window_open() {
            None
        } else if !may_send {
            pacer.not_before()
        } else {
            latest.as_ref().and_then(|s| pacer.settle_at(s))
        };
        tokio::select! {
            biased;
            _ = removed.cancelled() => {
                let reason = "The session owner removed you from this session.";
                w.send_json(&ServerMessage::Removed { reason }).await?;
                w.send(Message::Close(Some(CloseFrame { code: close::REMOVED, reason: Utf8Bytes::from_static("removed") }))).await?;
                return Ok(());
            }
            _ = ended.cancelled() => {
                let reason = session.end_reason();
                let code = if session.server_shutting_down() { close::SHUTTING_DOWN } else { close::SESSION_ENDED };
                w.send_json(&ServerMessage::Ended { reason: &reason }).await?;
                w.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(truncate(&reason, 120)) }))).await?;
                return Ok(());
            }
            Some(json) = direct.recv() => w.send(Message::Text(Utf8Bytes::from(json.to_string()))).await?,
            Some(outgoing) = from_reader.recv() => match outgoing {
                Outgoing::Notice(json) => w.send(Message::Text(Utf8Bytes::from(json.to_string()))).await?,
                Outgoing::Close(code, reason) => {
                    w.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))).await?;
                    return Ok(());
                }
            },
            changed = acked.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let acks = *acked.borrow_and_update();
                let quality = pacer.quality;
                pacer.acked(acks.seq, Instant::now());
                if acks.resyncs != resyncs {
                    resyncs = acks.resyncs;
                    info!("viewer could not paint an update; sending it the whole screen");
                    pacer.resync();
                }
                if pacer.quality != quality {
                    info!(from = quality.as_str(), to = pacer.quality.as_str(), "viewer quality changed");
                }
            }
            event = events.recv() => match event {
                Ok(json) => w.send(Message::Text(Utf8Bytes::from(json.to_string()))).await?,
                // Fell behind the event buffer: skip to the current state instead of a backlog.
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    debug!(skipped, "participant lagged behind events");
                    w.send_state().await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            changed = screen.changed(), if may_send => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            changed = audience.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                // The top of the loop switches screens.
                audience.borrow_and_update();
            }
            _ = sleep_until_or_never(wake_at) => {}
            _ = sleep_until_or_never(pointer_wake) => {}
            changed = pointers.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            changed = links_changed.changed(), if is_owner => {
                if changed.is_ok() {
                    w.send_json(&ServerMessage::JoinLinks { links: &session.links() }).await?;
                }
            }
            _ = report.tick() => {
                let r = pacer.report(latest.as_deref(), Instant::now());
                let link = participant.link();
                link.rtt_ms.store(r.rtt_ms.unwrap_or(u32::MAX), Ordering::Relaxed);
                link.lag_ms.store(r.lag_ms, Ordering::Relaxed);
                session.metrics().viewer_lag.record(Duration::from_millis(u64::from(r.lag_ms)));
                link.quality.store(r.quality as u32, Ordering::Relaxed);
                if is_owner {
                    let participants = session.link_infos();
                    w.send_json(&ServerMessage::Links { participants: &participants }).await?;
                }
            }
            _ = ping.tick() => w.send(Message::Ping(Default::default())).await?,
        }
    }
}

/// The optional fields of a recorded action.
#[derive(Default)]
struct ActionFields {
    url: Option<String>,
    tab: Option<u32>,
    accept: Option<bool>,
    index: Option<u32>,
    value: Option<String>,
}

/// Fills a recorded `action` event's optional fields.
fn set_action(event: &mut crate::recording::event::Event, fill: impl FnOnce(&mut ActionFields)) {
    let mut f = ActionFields::default();
    fill(&mut f);
    if let crate::recording::event::Event::Action {
        url,
        tab,
        accept,
        index,
        value,
        ..
    } = event
    {
        *url = f.url;
        *tab = f.tab;
        *accept = f.accept;
        *index = f.index;
        *value = f.value;
    }
}

fn truncate(s: &str, max_bytes: usize) -> String {
    let mut end = s.len().min(max_bytes);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    participant: &Participant,
    to_writer: mpsc::Sender<Outgoing>,
    acked: watch::Sender<Acks>,
) -> Result<(), ConnError> {
    let session = participant.session();
    let notice = |code: &str, message: &str| {
        let json = ServerMessage::Notice {
            level: "warn",
            code,
            message,
        }
        .to_json();
        // Advisory: if this participant's notice queue is full, it will not miss anything else.
        let _ = to_writer.try_send(Outgoing::Notice(Arc::from(json)));
    };
    // The last reason input was refused, told once until the reason changes.
    let mut told_refusal: Option<Refusal> = None;
    let mut chat_limit = RateLimit::new(people::CHAT_BURST, people::CHAT_PER_SEC, Instant::now());
    let mut pointer_limit = RateLimit::new(POINTER_BURST, POINTER_PER_SEC, Instant::now());
    let mut annotate_limit = RateLimit::new(ANNOTATE_BURST, ANNOTATE_PER_SEC, Instant::now());
    let mut input_limit = RateLimit::new(INPUT_BURST, INPUT_PER_SEC, Instant::now());
    let mut release_limit = RateLimit::new(2.0 * INPUT_BURST, 2.0 * INPUT_PER_SEC, Instant::now());
    let mut input_dropped = 0u64;
    let mut input_told: Option<Instant> = None;
    let mut cursor_probe = CursorProbe::default();
    // A pointer position over the rate limit, and when it may be applied.
    let mut held_pointer: Option<(Instant, Option<(f64, f64)>)> = None;
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout(READ_TIMEOUT, stream.next()) => read,
            // The newest pointer position held back by the rate limit goes out in its turn: a
            // pointer always ends where the participant left it.
            _ = sleep_until_or_never(cursor_probe.due()) => {
                cursor_probe.fire(session, &to_writer);
                continue;
            }
            _ = sleep_until_or_never(held_pointer.map(|(due, _)| due)) => {
                if let Some((_, at)) = held_pointer.take() {
                    pointer_limit.allow(Instant::now());
                    session.point(participant.id(), at);
                }
                continue;
            }
        };
        let message = match read {
            Err(_) => return Err(ConnError::ReadTimeout),
            Ok(None) => return Ok(()),
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => {
                let e = ConnError::from(e);
                if let ConnError::TooBig = e {
                    // The writer may be waiting on a full send; this request waits for nothing.
                    let _ = to_writer
                        .try_send(Outgoing::Close(close::MESSAGE_TOO_BIG, "message too big"));
                }
                return Err(e);
            }
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                notice("bad-message", "binary messages are not accepted");
                continue;
            }
            Message::Close(_) => return Ok(()),
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let message = match parse_client_message(&text) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "malformed message");
                notice(
                    "bad-message",
                    &format!("message ignored: {}", truncate(&e, 200)),
                );
                continue;
            }
        };
        let geometry = || session.geometry();
        let input = match message {
            ClientMessage::Ack { seq, resync } => {
                acked.send_modify(|a| {
                    a.seq = seq;
                    if resync {
                        a.resyncs = a.resyncs.wrapping_add(1);
                    }
                });
                continue;
            }
            ClientMessage::Chat { text } => {
                if !chat_limit.allow(Instant::now()) {
                    notice("chat-rate", &ChatError::TooFast.to_string());
                    continue;
                }
                match people::clean_chat(&text) {
                    Ok(text) => {
                        session.post_chat(participant.id(), text);
                    }
                    Err(e) => notice("chat-rejected", &format!("message not sent: {e}")),
                }
                continue;
            }
            ClientMessage::Pointer { x, y, gone } => {
                let at = if gone {
                    None
                } else if x.is_finite() && y.is_finite() {
                    Some(geometry().to_page(x, y))
                } else {
                    notice("bad-message", "pointer coordinates must be finite numbers");
                    continue;
                };
                // A flood is thinned, silently: over the limit only the newest position is kept,
                // and applied when the limit allows.
                let now = Instant::now();
                if pointer_limit.allow(now) {
                    held_pointer = None;
                    session.point(participant.id(), at);
                } else {
                    let due = held_pointer.map_or(now + POINTER_HOLD, |(due, _)| due);
                    held_pointer = Some((due, at));
                }
                continue;
            }
            ClientMessage::Annotate {
                stroke,
                kind,
                points,
            } => {
                if points.is_empty()
                    || points.len() > MAX_ANNOTATION_POINTS
                    || points.iter().flatten().any(|v| !v.is_finite())
                {
                    notice(
                        "bad-message",
                        &format!("an annotation needs 1 to {MAX_ANNOTATION_POINTS} finite points"),
                    );
                    continue;
                }
                if !annotate_limit.allow(Instant::now()) {
                    // Dropped silently: a drawing is decoration, and fades anyway.
                    continue;
                }
                let g = geometry();
                let page: Vec<[f64; 2]> = points
                    .iter()
                    .map(|&[x, y]| {
                        let (px, py) = g.to_page(x, y);
                        [(px * 10.0).round() / 10.0, (py * 10.0).round() / 10.0]
                    })
                    .collect();
                session.annotate(participant.id(), stroke, kind, &page);
                continue;
            }
            ClientMessage::Name { name } => {
                if session.rename(participant.id(), &name).is_none() {
                    notice("bad-name", "a name needs at least one visible character");
                }
                continue;
            }
            ClientMessage::End => {
                if participant.role() == Role::Owner {
                    info!("the owner ended the session");
                    session.end("the owner ended the session");
                } else {
                    notice("not-allowed", "only the session owner can end the session");
                }
                continue;
            }
            ClientMessage::Record { on } => {
                if participant.role() != Role::Owner {
                    notice(
                        "not-allowed",
                        "only the session owner can record the session",
                    );
                } else if let Err(e) =
                    crate::recordings::set(session, on, participant.record_actor()).await
                {
                    notice("record-refused", &e.to_string());
                }
                continue;
            }
            ClientMessage::Remove { id } => {
                if participant.role() != Role::Owner {
                    notice(
                        "not-allowed",
                        "only the session owner can remove participants",
                    );
                } else if let Err(e) = session.remove(&id, participant.id()) {
                    notice(
                        "remove-failed",
                        &format!("cannot remove {}: {e}", truncate(&id, 40)),
                    );
                }
                continue;
            }
            ClientMessage::Control(action) => {
                if let Err(refusal) = session.control_action(participant, &action) {
                    notice("control-refused", &refusal.to_string());
                }
                continue;
            }
            // The owner's, whoever holds control (checked in `resize`).
            ClientMessage::Viewport { width, height } => {
                let viewport = crate::config::Viewport { width, height };
                if let Err(e) = session.resize(participant, viewport) {
                    notice("viewport-refused", &e);
                }
                continue;
            }
            _ if !input_allowed(session.may_act(participant), &mut told_refusal, &notice) => {
                continue
            }
            ClientMessage::Navigate { url } => {
                match session.navigate(participant, &url) {
                    Ok(url) => session.record_action(participant, "navigate", |e| {
                        set_action(e, |a| a.url = Some(url))
                    }),
                    Err(e) => notice("navigate-refused", &e),
                }
                continue;
            }
            ClientMessage::History { action } => {
                match session.history(participant, action).await {
                    Ok(()) => session.record_action(participant, action.as_str(), |_| {}),
                    Err(e) => notice("history-refused", &e),
                }
                continue;
            }
            ClientMessage::Tab { action, id } => {
                match session.tab(participant, action, id) {
                    Ok(()) => session.record_action(participant, action.record_name(), |e| {
                        set_action(e, |a| a.tab = id)
                    }),
                    Err(e) => notice("tab-refused", &e),
                }
                continue;
            }
            ClientMessage::Pick { id, value } => {
                let picked = value.clone();
                match session.pick(participant, id, value).await {
                    Ok(()) => session.record_action(participant, "pick", |e| {
                        set_action(e, |a| a.value = picked)
                    }),
                    Err(e) => notice("pick-refused", &e),
                }
                continue;
            }
            ClientMessage::Choose { id, index } => {
                match session.choose(participant, id, index).await {
                    Ok(()) => session.record_action(participant, "choose", |e| {
                        set_action(e, |a| a.index = index)
                    }),
                    Err(e) => notice("choose-refused", &e),
                }
                continue;
            }
            ClientMessage::Dialog { id, accept, text } => {
                match session.answer_dialog(participant, id, accept, text).await {
                    Ok(()) => session.record_action(participant, "dialog", |e| {
                        set_action(e, |a| a.accept = Some(accept))
                    }),
                    Err(e) => notice("dialog-refused", &e),
                }
                continue;
            }
            ClientMessage::Mouse(m) => input::mouse(&m, &geometry()),
            ClientMessage::Wheel(m) => input::wheel(&m, &geometry()),
            ClientMessage::Key(m) => input::key(&m),
            ClientMessage::Text { text } => input::text(&text),
            ClientMessage::Compose { text, start, end } => input::compose(&text, start, end),
        };
        match input {
            Ok(input) => {
                let release = matches!(
                    &input,
                    Input::Mouse {
                        kind: MouseKind::Released,
                        ..
                    }
                ) || matches!(&input, Input::Key(k) if k.kind == crate::input::KeyKind::KeyUp);
                let bucket = if release {
                    &mut release_limit
                } else {
                    &mut input_limit
                };
                if !bucket.allow(Instant::now()) {
                    input_dropped += 1;
                    if input_told.is_none_or(|t| t.elapsed() >= INPUT_NOTICE_EVERY) {
                        info!(dropped = input_dropped, "input over the rate limit dropped");
                        notice(
                            "input-rate-limited",
                            "Input is arriving faster than a person types or moves: some was dropped.",
                        );
                        input_told = Some(Instant::now());
                    }
                    continue;
                }
                participant.typed.count(&input);
                if let Input::Mouse { x, y, kind, .. } = &input {
                    if *kind != MouseKind::Released {
                        cursor_probe.at(*x, *y);
                    }
                }
                let presses = match &input {
                    Input::Mouse { kind, .. } => *kind == MouseKind::Pressed,
                    Input::Key(k) => k.kind != crate::input::KeyKind::KeyUp,
                    _ => false,
                };
                if presses {
                    session.acted(participant);
                }
                session.record_input(participant, &input);
                if session.send_input(input).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                debug!(error = %e, "input rejected");
                notice("bad-message", &format!("input ignored: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let proxy: std::net::SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let stranger: std::net::SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        let trusted = [
            "127.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ];
        let forwarded = headers(&[(
            header::HeaderName::from_static("x-forwarded-for"),
            "6.6.6.6, 198.51.100.7, 10.0.0.2",
        )]);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        // Through two trusted proxies: the address the first one saw.
        assert_eq!(
            client_address(proxy, &forwarded, &trusted),
            ip("198.51.100.7")
        );
        // Not from a trusted proxy: the header is the client's own word.
        assert_eq!(
            client_address(stranger, &forwarded, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_address(proxy, &forwarded, &[]), ip("127.0.0.1"));
        // Garbage in the right-most place: the proxy's own address, not a guess.
        let garbage = headers(&[(
            header::HeaderName::from_static("x-forwarded-for"),
            "1.2.3.4, nonsense",
        )]);
        assert_eq!(client_address(proxy, &garbage, &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_address(proxy, &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn origin_must_match_host_public_url_or_allow_list() {
        let plain = crate::config::Config::with_chromium("/bin/sh");
        let mut public = plain.clone();
        public.public_url = Some("https://co.example.com".into());
        let mut embedding = plain.clone();
        embedding.allowed_origins = vec!["https://portal.example.com".into()];
        let same = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ]);
        assert!(origin_allowed(&same, &plain));
        let other = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert!(!origin_allowed(&other, &plain));
        assert!(!origin_allowed(&other, &embedding));
        let proxied = headers(&[
            (header::HOST, "10.0.0.5:8080"),
            (header::ORIGIN, "https://co.example.com"),
        ]);
        assert!(origin_allowed(&proxied, &public));
        assert!(!origin_allowed(&proxied, &plain));
        let embedded = headers(&[
            (header::HOST, "10.0.0.5:8080"),
            (header::ORIGIN, "https://portal.example.com"),
        ]);
        assert!(origin_allowed(&embedded, &embedding));
        assert!(!origin_allowed(&embedded, &plain));
        // Not a browser: no Origin header.
        assert!(origin_allowed(&headers(&[(header::HOST, "x")]), &plain));
    }

    #[test]
    fn token_comes_from_the_subprotocol_list() {
        let h = headers(&[(
            header::SEC_WEBSOCKET_PROTOCOL,
            "cobrowse.v1, cobrowse.token.abc_-1",
        )]);
        assert_eq!(offered_token(&h).as_deref(), Some("abc_-1"));
        let h = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "cobrowse.v1")]);
        assert_eq!(offered_token(&h), None);
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
