//! Shared test harness: a cobrowse server on `127.0.0.1:0` with the real Chromium, a test site
//! whose pages report what they received, and a WebSocket participant client.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod keyboard;
pub mod playwright;
pub mod viewer;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use cobrowse::config::Config;
use cobrowse::protocol::{self, UpdateHeader};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits for; a failure, not a synchronisation.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn chromium() -> std::path::PathBuf {
    cobrowse::config::default_chromium()
        .expect("Chromium must be installed (apt-get install chromium)")
}

/// Server logs on stderr when `COBROWSE_TEST_LOG` is set (e.g. `COBROWSE_TEST_LOG=debug`).
pub fn init_logs() {
    if let Ok(filter) = std::env::var("COBROWSE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A configuration for tests, with the default egress policy: nothing on loopback (so not the
/// test site) is reachable. Tests that browse their site use [`site_config`].
pub fn test_config() -> Config {
    let mut config = Config::with_chromium(chromium());
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// [`test_config`] whose egress policy opens exactly `site` (its address and port), as an
/// operator's `--allow 127.0.0.1:PORT` would: every other loopback port stays closed.
pub fn site_config(site: &TestSite) -> Config {
    allowing(test_config(), &site.addr.to_string())
}

/// `config` with `entry` added to its `--allow` list.
pub fn allowing(mut config: Config, entry: &str) -> Config {
    let policy = (*config.egress)
        .clone()
        .allowing(entry)
        .expect("valid allow entry");
    config.egress = std::sync::Arc::new(policy);
    config
}

/// A cobrowse server running in this test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub http: reqwest_lite::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    /// A server whose browsers may reach `site` (and nothing else local).
    pub async fn for_site(site: &TestSite) -> Self {
        Self::start_with(site_config(site)).await
    }

    pub async fn start_with(config: Config) -> Self {
        init_logs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(cobrowse::server::run(listener, config, shutdown.clone()));
        TestServer {
            addr,
            shutdown,
            task,
            http: reqwest_lite::Client::new(addr),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The join link a viewer opens for session `id` with `token`.
    pub fn join_link(&self, id: &str, token: &str) -> String {
        format!("{}/s/{id}#token={token}", self.url(""))
    }

    /// Creates a session on `url`; returns (id, links).
    pub async fn create_session(&self, url: &str) -> (String, Links) {
        self.create_session_with(json!({ "url": url })).await
    }

    pub async fn create_session_with(&self, body: Value) -> (String, Links) {
        let (status, reply) = self.http.request("POST", "/api/sessions", Some(body)).await;
        assert_eq!(status, 201, "create session: {reply}");
        let id = reply["id"].as_str().expect("id").to_string();
        let links = &reply["links"];
        let token = |role: &str| {
            let link = links[role].as_str().expect("link");
            link.split_once("#token=")
                .expect("token in fragment")
                .1
                .to_string()
        };
        (
            id,
            Links {
                owner: token("owner"),
                controller: token("controller"),
                viewer: token("viewer"),
            },
        )
    }

    /// Starts or stops recording session `id` through the API; returns the answer (the status).
    pub async fn set_recording(&self, id: &str, on: bool) -> Value {
        let (status, body) = self
            .http
            .request(
                "POST",
                &format!("/api/sessions/{id}/recording"),
                Some(json!({ "on": on })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Session `id`'s only recording, through the API: its id and file.
    pub async fn recording_file(&self, id: &str) -> (String, Vec<u8>) {
        let (status, list) = self
            .http
            .request("GET", &format!("/api/sessions/{id}/recordings"), None)
            .await;
        assert_eq!(status, 200, "{list}");
        let recordings = list["recordings"].as_array().expect("recordings");
        assert_eq!(recordings.len(), 1, "{list}");
        let rid = recordings[0]["id"].as_str().expect("id").to_string();
        let (status, head, bytes) = self
            .http
            .raw_bytes("GET", &format!("/api/recordings/{rid}/file"), &[], None)
            .await;
        assert_eq!(status, 200, "{head}");
        (rid, bytes)
    }

    pub async fn session_json(&self, id: &str) -> (u16, Value) {
        self.http
            .request("GET", &format!("/api/sessions/{id}"), None)
            .await
    }

    /// Connects a participant with `token` and waits for its `hello`.
    /// The server's current screen of a session (lossless) and its version.
    pub async fn screenshot(&self, id: &str) -> (u32, image::RgbImage) {
        self.screenshot_of(id, false).await
    }

    /// The server's clear or masked (`masked`) screen of a session and its version.
    pub async fn screenshot_of(&self, id: &str, masked: bool) -> (u32, image::RgbImage) {
        let query = if masked { "?masked=1" } else { "" };
        let (status, head, body) = self
            .http
            .raw_bytes(
                "GET",
                &format!("/api/sessions/{id}/screenshot{query}"),
                &[],
                None,
            )
            .await;
        assert_eq!(status, 200, "{head}");
        let version = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-screen-version:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .expect("x-screen-version header");
        let image = image::load_from_memory_with_format(&body, image::ImageFormat::Png)
            .expect("PNG")
            .to_rgb8();
        (version, image)
    }

    pub async fn join(&self, id: &str, token: &str) -> Participant {
        Participant::connect(self.addr, id, token)
            .await
            .expect("join")
    }

    pub async fn join_named(&self, id: &str, token: &str, name: &str) -> Participant {
        Participant::connect_named(self.addr, id, token, Some(name))
            .await
            .expect("join")
    }

    /// Stops the server and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server run");
    }
}

/// Join tokens of a session, by role.
pub struct Links {
    pub owner: String,
    pub controller: String,
    pub viewer: String,
}

/// A screen update received, and the participant's screen after applying it.
pub struct Frame {
    pub header: UpdateHeader,
    /// The whole message as received.
    pub raw: Vec<u8>,
    /// The participant's reconstructed screen after this update.
    pub image: image::RgbImage,
    /// What the update did.
    pub ops: Vec<cobrowse::encode::AppliedOp>,
}

impl Frame {
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        self.image.get_pixel(x, y).0
    }
}

/// CPU time (user + system) this process has used so far, seconds (benches).
pub fn cpu_seconds() -> f64 {
    cobrowse::procfs::this_process().map_or(0.0, |u| u.cpu_seconds)
}

/// A port free on loopback now (for a process that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A bench setting from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median (of an even count, the upper middle value); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The nearest-rank percentile `p` (0 to 1): the smallest value with at least `p` of the values
/// at or below it; NaN for none.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Number of pixels that differ between two screens (all of them when sizes differ).
pub fn differing_pixels(a: &image::RgbImage, b: &image::RgbImage) -> usize {
    if a.dimensions() != b.dimensions() {
        return (a.width() * a.height()) as usize;
    }
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
}

/// Whether two colours differ by at most `tolerance` per channel (JPEG is lossy).
pub fn close_to(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

/// A participant connected over WebSocket, as a viewer would be.
pub struct Participant {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    /// JSON messages received while waiting for something else, oldest first.
    pub json_seen: Vec<Value>,
    /// Close code, once the server closed the socket.
    pub closed_with: Option<u16>,
    /// The screen as rebuilt from the updates applied so far (as a viewer's canvas).
    pub screen: Option<image::RgbImage>,
    /// Number of the newest update received, applied or skipped.
    pub newest_update: Option<u32>,
}

pub async fn ws_request(
    addr: SocketAddr,
    id: &str,
    protocols: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{addr}/ws/{id}")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocols).expect("header"),
    );
    request
}

impl Participant {
    pub async fn connect(
        addr: SocketAddr,
        id: &str,
        token: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        Self::connect_named(addr, id, token, None).await
    }

    /// Joins with a display name, as a join link's `name` parameter gives it.
    pub async fn connect_named(
        addr: SocketAddr,
        id: &str,
        token: &str,
        name: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let target = match name {
            Some(name) => format!(
                "{id}?name={}",
                url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
            ),
            None => id.to_string(),
        };
        let request = ws_request(
            addr,
            &target,
            &format!("cobrowse.v2, cobrowse.token.{token}"),
        )
        .await;
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("WebSocket handshake in time")?;
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("cobrowse.v2")
        );
        let mut p = Participant {
            ws,
            hello: Value::Null,
            json_seen: Vec::new(),
            closed_with: None,
            screen: None,
            newest_update: None,
        };
        p.hello = p.next_json("hello").await;
        Ok(p)
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(
        &mut self,
        message: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(message).await
    }

    /// Next message of any kind, or `None` once the socket closed.
    pub async fn next_message(&mut self) -> Option<Message> {
        self.message_within(WAIT).await.expect("message in time")
    }

    /// Next message of any kind (`Some(None)` once the socket closed), or `None` after `wait`
    /// without one; pings do not extend the wait.
    async fn message_within(&mut self, wait: Duration) -> Option<Option<Message>> {
        let deadline = tokio::time::Instant::now() + wait;
        Some(loop {
            let Ok(message) = tokio::time::timeout_at(deadline, self.ws.next()).await else {
                return None;
            };
            let Some(message) = message else {
                break None;
            };
            match message {
                Ok(Message::Close(frame)) => {
                    self.closed_with = frame.map(|f| u16::from(f.code));
                    break Some(Message::Close(None));
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(m) => break Some(m),
                Err(_) => break None,
            }
        })
    }

    /// How many JSON messages of `kind` satisfying `pred` were read and set aside so far.
    pub fn json_seen_count(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> usize {
        self.json_seen
            .iter()
            .filter(|v| v["t"] == kind && pred(v))
            .count()
    }

    pub async fn next_json(&mut self, kind: &str) -> Value {
        self.json_where(kind, |_| true).await
    }

    /// The next JSON message with `t == kind` that satisfies `pred`; earlier ones of that kind
    /// that do not are consumed.
    /// Fails after `WAIT` without any message, saying what was last seen of that kind.
    pub async fn json_where(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut rejected = None;
        while let Some(i) = self.json_seen.iter().position(|v| v["t"] == kind) {
            let value = self.json_seen.remove(i);
            if pred(&value) {
                return value;
            }
            rejected = Some(value);
        }
        let mut frames = 0;
        loop {
            let message = self.message_within(WAIT).await.unwrap_or_else(|| {
                panic!(
                    "nothing for {WAIT:?} while waiting for '{kind}' ({frames} frames \
                         meanwhile); the last '{kind}' that did not match: {rejected:?}"
                )
            });
            match message {
                Some(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("server sends JSON");
                    if value["t"] == kind && pred(&value) {
                        return value;
                    }
                    if value["t"] == kind {
                        rejected = Some(value);
                    } else {
                        self.json_seen.push(value);
                    }
                }
                Some(Message::Close(_)) | None => {
                    panic!("socket closed while waiting for '{kind}'")
                }
                Some(Message::Binary(raw)) => {
                    frames += 1;
                    self.newest_update = protocol::decode_update_header(&raw)
                        .map(|h| h.number)
                        .or(self.newest_update);
                }
                Some(_) => {}
            }
        }
    }

    /// Waits for the next update, applies it to this participant's screen, and acknowledges it
    /// (as a viewer does after painting).
    pub async fn next_frame(&mut self) -> Frame {
        let frame = self.next_frame_unacked().await;
        self.ack(frame.header.number).await;
        frame
    }

    /// The next update, applied, not acknowledged.
    pub async fn next_frame_unacked(&mut self) -> Frame {
        let raw = self.next_frame_raw().await;
        self.apply(raw)
    }

    /// Reads and applies updates until this participant's screen is, pixel for pixel, the
    /// server's current screen (lossless refinement included). Returns the number of updates
    /// read. Fails after `WAIT`.
    pub async fn converge(&mut self, server: &TestServer, id: &str) -> usize {
        self.converge_to(server, id, false).await
    }

    /// [`converge`](Self::converge) on the masked screen (`?masked=1`), for a participant
    /// served the masked screen.
    pub async fn converge_masked(&mut self, server: &TestServer, id: &str) -> usize {
        self.converge_to(server, id, true).await
    }

    async fn converge_to(&mut self, server: &TestServer, id: &str, masked: bool) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut updates = 0;
        if self.screen.is_none() {
            // The server has a screen once it sent one.
            self.next_frame().await;
            updates += 1;
        }
        loop {
            let (_, truth) = server.screenshot_of(id, masked).await;
            let differ = self
                .screen
                .as_ref()
                .map_or(usize::MAX, |s| differing_pixels(s, &truth));
            if differ == 0 {
                return updates;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "screen did not converge on the server's after {updates} updates: {differ} pixels differ"
            );
            // An update (applied and acknowledged), or a quiet moment before checking again:
            // reading a message is cancel-safe, applying and acking happen after it.
            if let Ok(raw) =
                tokio::time::timeout(Duration::from_millis(500), self.next_frame_raw()).await
            {
                let frame = self.apply(raw);
                self.ack(frame.header.number).await;
                updates += 1;
            }
        }
    }

    pub fn apply(&mut self, raw: Vec<u8>) -> Frame {
        let header = protocol::decode_update_header(&raw).expect("update header");
        let (w, h) = (u32::from(header.width), u32::from(header.height));
        let mut screen = match self.screen.take() {
            Some(s) if s.width() == w && s.height() == h => s,
            _ => {
                assert!(
                    header.flags & protocol::flags::KEYFRAME != 0,
                    "a new screen size comes with a keyframe"
                );
                image::RgbImage::new(w, h)
            }
        };
        let ops = cobrowse::encode::apply(&mut screen, &raw[protocol::UPDATE_HEADER_LEN..])
            .expect("update applies");
        self.screen = Some(screen.clone());
        Frame {
            header,
            raw,
            image: screen,
            ops,
        }
    }

    /// The next frame message, undecoded and unacknowledged.
    pub async fn next_frame_raw(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.next_message()).await {
                Ok(message) => message,
                Err(_) => panic!(
                    "no frame in time; JSON seen meanwhile: {:?}",
                    self.json_seen
                ),
            };
            match message {
                Some(Message::Binary(raw)) => {
                    self.newest_update = protocol::decode_update_header(&raw)
                        .map(|h| h.number)
                        .or(self.newest_update);
                    return raw.to_vec();
                }
                Some(Message::Text(text)) => {
                    self.json_seen
                        .push(serde_json::from_str(&text).expect("server sends JSON"));
                }
                Some(Message::Close(_)) | None => panic!("socket closed while waiting for a frame"),
                Some(other) => panic!("unexpected message while waiting for a frame: {other:?}"),
            }
        }
    }

    /// Acknowledges and skips frames until one satisfies `pred`. Fails after `WAIT` in all,
    /// saying what the skipped frames looked like.
    pub async fn frame_where(&mut self, pred: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = 0;
        let mut last: Option<(u32, [u8; 3])> = None;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Ok(frame) => frame,
                Err(_) => panic!("no matching frame in time; skipped {skipped}, last (version, centre pixel) {last:?}"),
            };
            if pred(&frame) {
                return frame;
            }
            skipped += 1;
            let (w, h) = (frame.image.width(), frame.image.height());
            last = Some((frame.header.version, frame.pixel(w / 2, h / 2)));
        }
    }

    /// What a viewer does after skipping updates: acknowledges everything received and asks
    /// for a whole screen, then applies updates from that keyframe on (with nothing received
    /// yet, the first update is a keyframe anyway). Returns the keyframe.
    pub async fn resync(&mut self) -> Frame {
        if let Some(seq) = self.newest_update {
            self.send(json!({ "t": "ack", "seq": seq, "resync": true }))
                .await;
        }
        self.screen = None;
        loop {
            let raw = self.next_frame_raw().await;
            let header = protocol::decode_update_header(&raw).expect("update header");
            if header.flags & protocol::flags::KEYFRAME != 0 {
                let frame = self.apply(raw);
                self.ack(frame.header.number).await;
                return frame;
            }
            // Sent before the resync: acknowledged, not painted.
            self.ack(header.number).await;
        }
    }

    /// Asks for a whole screen and waits until the screen satisfies `pred` (that one, or a later
    /// update).
    pub async fn screen_where(&mut self, pred: impl Fn(&Frame) -> bool) -> Frame {
        let keyframe = self.resync().await;
        if pred(&keyframe) {
            return keyframe;
        }
        self.frame_where(pred).await
    }

    pub async fn ack(&mut self, seq: u32) {
        self.send(json!({ "t": "ack", "seq": seq })).await;
    }

    pub async fn mouse(&mut self, kind: &str, x: f64, y: f64, button: &str, clicks: u8) {
        let buttons = match (kind, button) {
            ("down", "left") => 1,
            ("down", "right") => 2,
            ("down", "middle") => 4,
            _ => 0,
        };
        self.send(json!({ "t": "mouse", "type": kind, "x": x, "y": y, "button": button, "buttons": buttons, "clicks": clicks, "mods": 0 }))
            .await;
    }

    pub async fn click(&mut self, x: f64, y: f64) {
        self.mouse("move", x, y, "none", 0).await;
        self.mouse("down", x, y, "left", 1).await;
        self.mouse("up", x, y, "left", 1).await;
    }

    pub async fn key(&mut self, kind: &str, key: &str, code: &str, key_code: u32, mods: u8) {
        self.send(json!({ "t": "key", "type": kind, "key": key, "code": code, "keyCode": key_code, "location": 0, "mods": mods, "repeat": false }))
            .await;
    }

    /// Presses and releases one key, as a US keyboard would report it.
    pub async fn press(&mut self, key: &str, code: &str, key_code: u32, mods: u8) {
        self.key("down", key, code, key_code, mods).await;
        self.key("up", key, code, key_code, mods).await;
    }

    /// Types ASCII text key by key with a US layout, Shift held where the character needs it.
    pub async fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            let (code, key_code, shift) = us_key(c);
            if shift {
                self.key("down", "Shift", "ShiftLeft", 16, 8).await;
            }
            let mods = if shift { 8 } else { 0 };
            self.press(&c.to_string(), code, key_code, mods).await;
            if shift {
                self.key("up", "Shift", "ShiftLeft", 16, 0).await;
            }
        }
    }
}

/// (code, keyCode, needs Shift) of an ASCII character on a US keyboard.
pub fn us_key(c: char) -> (&'static str, u32, bool) {
    const LETTERS: [&str; 26] = [
        "KeyA", "KeyB", "KeyC", "KeyD", "KeyE", "KeyF", "KeyG", "KeyH", "KeyI", "KeyJ", "KeyK",
        "KeyL", "KeyM", "KeyN", "KeyO", "KeyP", "KeyQ", "KeyR", "KeyS", "KeyT", "KeyU", "KeyV",
        "KeyW", "KeyX", "KeyY", "KeyZ",
    ];
    const DIGITS: [&str; 10] = [
        "Digit0", "Digit1", "Digit2", "Digit3", "Digit4", "Digit5", "Digit6", "Digit7", "Digit8",
        "Digit9",
    ];
    match c {
        'a'..='z' => (
            LETTERS[(c as u8 - b'a') as usize],
            c.to_ascii_uppercase() as u32,
            false,
        ),
        'A'..='Z' => (LETTERS[(c as u8 - b'A') as usize], c as u32, true),
        '0'..='9' => (DIGITS[(c as u8 - b'0') as usize], c as u32, false),
        ' ' => ("Space", 32, false),
        ',' => ("Comma", 188, false),
        '.' => ("Period", 190, false),
        '!' => ("Digit1", 49, true),
        '@' => ("Digit2", 50, true),
        '?' => ("Slash", 191, true),
        '-' => ("Minus", 189, false),
        '<' => ("Comma", 188, true),
        '>' => ("Period", 190, true),
        '/' => ("Slash", 191, false),
        ':' => ("Semicolon", 186, true),
        ';' => ("Semicolon", 186, false),
        other => panic!("us_key: no key for {other:?}"),
    }
}

/// A website for the session's browser to visit. Its pages post what they observe to `/report`;
/// the test reads those reports in order.
pub struct TestSite {
    pub addr: SocketAddr,
    reports: mpsc::Receiver<Value>,
}

#[derive(serde::Deserialize)]
struct ColorQuery {
    c: Option<String>,
}

/// Script every page includes: `report(obj)` posts to the site, in order.
const REPORT_JS: &str = r#"<script>
let reportChain = Promise.resolve();
function report(o) {
  reportChain = reportChain.then(() => fetch('/report', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(o)}).catch(() => {}));
}
addEventListener('load', () => report({type: 'ready', page: location.pathname}));
</script>"#;

/// A text-heavy page, the same on every load: a heading, a focused textarea at the top, then
/// about 6,000 px of paragraphs. Reports `input` and `scroll`.
pub fn text_page() -> String {
    const WORDS: [&str; 24] = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
        "tempor",
        "incididunt",
        "ut",
        "labore",
        "et",
        "dolore",
        "magna",
        "aliqua",
        "enim",
        "minim",
        "veniam",
        "quis",
        "nostrud",
    ];
    let mut x: u32 = 7;
    let mut paragraphs = String::new();
    for _ in 0..60 {
        paragraphs.push_str("<p>");
        for _ in 0..90 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            paragraphs.push_str(WORDS[(x >> 16) as usize % WORDS.len()]);
            paragraphs.push(' ');
        }
        paragraphs.push_str("</p>");
    }
    format!(
        r#"<body style="margin:16px;font:15px/1.4 'DejaVu Sans',sans-serif;color:#222;background:#fff">
<h1>Release notes</h1>
<textarea id=t style="width:700px;height:60px;font:15px 'DejaVu Sans',sans-serif" autofocus></textarea>
{paragraphs}
<script>
const t = document.getElementById('t');
t.addEventListener('input', () => report({{type: 'input', value: t.value}}));
addEventListener('scroll', () => report({{type: 'scroll', y: scrollY}}));
</script></body>"#
    )
}

/// Mouse fidelity page: two paragraphs of words (their boxes reported on load), a draggable
/// box and a drop zone, 5,000 px of width to scroll sideways. Reports mouse buttons with the
/// selection at that moment, drag and drop, and scrolling.
const MOUSE_PAGE: &str = r#"<body style="margin:0;width:5000px;height:1500px;background:#fff;font:20px 'DejaVu Sans Mono',monospace">
<p id=p1 style="position:absolute;left:20px;top:20px;margin:0">alpha bravo charlie delta echo</p>
<p id=p2 style="position:absolute;left:20px;top:80px;margin:0">golf hotel india juliet</p>
<div id=src draggable=true style="position:absolute;left:100px;top:300px;width:100px;height:60px;background:#39c">drag me</div>
<div id=dst style="position:absolute;left:500px;top:300px;width:200px;height:120px;background:#eee">drop here</div>
<script>
const words = {};
for (const p of [p1, p2]) {
  const text = p.firstChild;
  let at = 0;
  for (const w of text.data.split(' ')) {
    const r = document.createRange();
    r.setStart(text, at); r.setEnd(text, at + w.length);
    const b = r.getBoundingClientRect();
    words[w] = [b.left, b.top, b.width, b.height];
    at += w.length + 1;
  }
}
addEventListener('load', () => report({type: 'layout', words}));
for (const type of ['mousedown', 'mouseup', 'click', 'dblclick', 'auxclick', 'contextmenu']) {
  addEventListener(type, (e) => {
    if (type === 'contextmenu') e.preventDefault();
    report({type, button: e.button, buttons: e.buttons, detail: e.detail, x: e.clientX, y: e.clientY,
      selection: getSelection().toString(), target: e.target.id});
  });
}
for (const type of ['dragstart', 'dragenter', 'drop', 'dragend']) {
  addEventListener(type, (e) => {
    if (type === 'drop') e.preventDefault();
    report({type, target: e.target.id, data: e.dataTransfer ? e.dataTransfer.getData('text/plain') : null});
  });
}
src.addEventListener('dragstart', (e) => e.dataTransfer.setData('text/plain', 'payload'));
dst.addEventListener('dragover', (e) => e.preventDefault());
addEventListener('scroll', () => report({type: 'scroll', x: scrollX, y: scrollY}));
</script></body>"#;

/// Masking page (tests/masking.rs): fields in colours found nowhere else on the page, so a leak
/// of any of their pixels is visible. A password field (magenta), a card number (green, by
/// `autocomplete`), an element masked by a session selector (`#ssn`, cyan, moved with a CSS
/// transition), a plain field, and a button that makes the page jump the card field around
/// by script. 3,000 px tall, for scrolling. Reports input, focus, moves and scrolls.
pub const MASK_PAGE: &str = r#"<body style="margin:0;height:3000px;background:#fff;font:16px 'DejaVu Sans',sans-serif">
<h1 style="margin:8px 20px;font-size:24px">Sign in</h1>
<input id=pw type=password style="position:absolute;left:100px;top:120px;width:300px;height:40px;background:rgb(255,0,200);border:0;outline:none;color:#000;font-size:28px">
<input id=cc autocomplete=cc-number value="4111 1111 1111 1111" style="position:absolute;left:100px;top:220px;width:300px;height:40px;background:rgb(0,255,0);border:0;outline:none;color:#000;font-size:20px">
<div id=ssn style="position:absolute;left:100px;top:320px;width:200px;height:40px;background:rgb(0,200,255);transition:left 400ms linear,top 400ms linear">123-45-6789</div>
<input id=plain style="position:absolute;left:600px;top:120px;width:300px;height:40px">
<button id=move style="position:absolute;left:600px;top:220px;width:120px;height:40px">Move</button>
<script>
pw.addEventListener('input', () => report({type: 'input', value: pw.value}));
pw.addEventListener('focus', () => report({type: 'focus', id: 'pw'}));
addEventListener('scroll', () => report({type: 'scroll', y: scrollY}));
move.addEventListener('click', () => {
  let i = 0;
  ssn.style.left = '700px';
  ssn.style.top = '420px';
  const jump = setInterval(() => {
    i += 1;
    cc.style.left = (100 + (i * 137) % 800) + 'px';
    cc.style.top = (220 + (i * 89) % 400) + 'px';
    if (i === 12) {
      clearInterval(jump);
      report({type: 'moved', left: cc.style.left, top: cc.style.top});
    }
  }, 60);
});
</script></body>"#;

/// A QA form (recordings, bug bundles): fields found by id, by name and by label only, a select,
/// a checkbox, a password, a button that logs a console error and throws, one whose request fails,
/// and a submit that navigates to `/thanks?…` (the site reports the query it got).
pub const FORM_PAGE: &str = r#"<title>Order form</title><body style="margin:0;background:#fff;font:16px 'DejaVu Sans',sans-serif">
<form id=order action="/thanks" method=get style="margin:20px;display:grid;grid-template-columns:160px 300px;gap:12px 8px">
<label for=fullname>Full name</label><input id=fullname name=fullname>
<label>Email <input name=email type=email style="margin-left:8px"></label><span></span>
<label for=size>Size</label><select id=size name=size><option>small</option><option>medium</option><option>large</option></select>
<label for=gift>Gift wrap</label><input id=gift name=gift type=checkbox value=yes>
<label for=secret>Password</label><input id=secret type=password>
<span></span><textarea data-testid=notes name=notes rows=3></textarea>
<span></span><button id=send type=submit>Send order</button>
</form>
<button id=oops style="margin:20px">Log an error</button>
<button id=fail style="margin:20px">Load a missing file</button>
<script>
oops.addEventListener('click', () => {
  console.error('order form: something broke');
  setTimeout(() => { throw new Error('order form exploded'); }, 0);
});
fail.addEventListener('click', () => {
  fetch('/missing.json').then(r => report({type: 'fetched', status: r.status})).catch(e => report({type: 'fetch-failed', error: String(e)}));
});
for (const el of document.querySelectorAll('input,select,textarea')) {
  el.addEventListener('change', () => report({type: 'change', name: el.name, value: el.type === 'checkbox' ? el.checked : el.value}));
}
addEventListener('focusin', (e) => report({type: 'focus', id: e.target.id, name: e.target.name || ''}));
// Where things are (viewport CSS px, centres), for tests that click them.
addEventListener('load', () => {
  const at = (el) => { const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; };
  report({type: 'layout', fullname: at(fullname), email: at(document.querySelector('[name=email]')), size: at(size), gift: at(gift), secret: at(secret), notes: at(document.querySelector('[data-testid=notes]')), send: at(send), oops: at(oops), fail: at(fail)});
});
</script><div style="height:1500px"></div></body>"#;

fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8>{REPORT_JS}</head>{body}</html>"
    ))
}

impl TestSite {
    pub async fn start() -> Self {
        let (tx, reports) = mpsc::channel(1024);
        let app = Router::new()
            .route("/report", post(|State(tx): State<mpsc::Sender<Value>>, Json(v): Json<Value>| async move {
                let _ = tx.send(v).await;
            }))
            .route("/color", get(|Query(q): Query<ColorQuery>| async move {
                let c = q.c.unwrap_or_else(|| "rgb(10,200,30)".into());
                page(&format!("<body style='margin:0;background:{c}'></body>"))
            }))
            .route("/click", get(|| async {
                page(r#"<body style="margin:0;height:100vh;background:#fff">
<script>
for (const type of ['mousedown', 'mouseup', 'click', 'dblclick', 'contextmenu', 'auxclick']) {
  addEventListener(type, e => {
    if (type === 'contextmenu') e.preventDefault();
    if (type === 'mousedown') document.body.style.background = document.body.style.background === 'rgb(255, 0, 0)' ? 'rgb(0, 0, 255)' : 'rgb(255, 0, 0)';
    report({type, x: e.clientX, y: e.clientY, button: e.button, detail: e.detail});
  });
}
</script></body>"#)
            }))
            .route("/type", get(|| async {
                page(r#"<body style="margin:0"><textarea id=t style="width:600px;height:300px" autofocus></textarea>
<script>
const t = document.getElementById('t');
t.addEventListener('input', () => report({type: 'input', value: t.value}));
t.addEventListener('keydown', e => report({type: 'keydown', key: e.key, code: e.code, keyCode: e.keyCode, ctrl: e.ctrlKey, shift: e.shiftKey}));
t.addEventListener('select', () => report({type: 'select', start: t.selectionStart, end: t.selectionEnd}));
</script></body>"#)
            }))
            .route("/scroll", get(|| async {
                page(r#"<body style="margin:0"><div style="height:6000px;background:linear-gradient(#fff,#000)"></div>
<script>addEventListener('scroll', () => report({type: 'scroll', y: scrollY, x: scrollX}));</script></body>"#)
            }))
            .route("/e2e", get(|| async {
                page(r#"<body style="margin:0;height:4000px;background:#fff">
<textarea id=t style="position:absolute;left:50px;top:50px;width:500px;height:150px"></textarea>
<script>
const t = document.getElementById('t');
t.addEventListener('input', () => report({type: 'input', value: t.value}));
for (const type of ['mousedown', 'dblclick', 'contextmenu']) {
  addEventListener(type, e => {
    if (type === 'contextmenu') e.preventDefault();
    report({type, x: e.clientX, y: e.clientY, button: e.button, detail: e.detail});
  });
}
addEventListener('scroll', () => report({type: 'scroll', y: scrollY}));
</script></body>"#)
            }))
            .route("/text", get(|| async { page(&text_page()) }))
            .route("/mask", get(|| async { page(MASK_PAGE) }))
            .route("/form", get(|| async { page(FORM_PAGE) }))
            // The site reports the order when it gets it, not the page once shown: a replay
            // script may close its browser right after the page loads, before a report the page
            // sent could arrive.
            .route("/thanks", get(|State(tx): State<mpsc::Sender<Value>>, axum::extract::RawQuery(raw): axum::extract::RawQuery, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let query = raw.map(|r| format!("?{r}")).unwrap_or_default();
                let _ = tx.send(serde_json::json!({"type": "submitted", "query": query})).await;
                let mut fields: Vec<_> = q.into_iter().collect();
                fields.sort();
                let list: String = fields.iter().map(|(k, v)| format!("<li>{k}: {v}</li>")).collect();
                page(&format!("<title>Thanks</title><body style='margin:0;background:#fff'><h1>Thanks</h1><ul id=got>{list}</ul></body>"))
            }))
            .route("/keylog", get(|| async { page(keyboard::keylog_page()) }))
            .route("/mouse", get(|| async { page(MOUSE_PAGE) }))
            // Areas with different cursors, left to right: text, pointer, a url() cursor with a
            // `move` fallback, then the plain page.
            .route("/cursors", get(|| async {
                page(r##"<body style="margin:0"><textarea style="position:absolute;left:0;top:0;width:300px;height:200px;border:0"></textarea><a href="#x" style="position:absolute;left:400px;top:0;display:block;width:200px;height:200px;background:#ccc">link</a><div style="position:absolute;left:700px;top:0;width:200px;height:200px;background:#eee;cursor:url(http://127.0.0.1:9/c.png) 2 2, move"></div></body>"##)
            }))
            // The same text, no textarea: no caret blinks, nothing changes once painted.
            .route("/article", get(|| async {
                let text = text_page();
                page(&text.replace("autofocus></textarea>", "hidden></textarea>"))
            }))
            .route("/animate", get(|| async {
                page(r#"<body style="margin:0;background:#fff"><div id=box style="width:200px;height:200px;background:#e33;position:absolute;top:100px;animation:slide 1s linear infinite alternate"></div>
<style>@keyframes slide { from { left: 0 } to { left: 1000px } }</style></body>"#)
            }))
            // Numbered pages with titles: a link to the next one fills the top-left corner
            // (0..300, 0..100), an in-page link sits below it (0..300, 100..200).
            .route("/nav/{n}", get(|axum::extract::Path(n): axum::extract::Path<u32>| async move {
                page(&format!(r##"<title>Page {n}</title><body style="margin:0;background:#fff"><a href="/nav/{next}" style="position:absolute;left:0;top:0;width:300px;height:100px;display:block;background:#9cf">next</a><a href="#part" style="position:absolute;left:0;top:100px;width:300px;height:100px;display:block;background:#fc9">part</a></body>"##, next = n + 1))
            }))
            // Buttons opening each kind of dialog, 200 px wide in a row at the top: alert,
            // confirm, prompt. Each reports what the page got back.
            .route("/dialogs", get(|| async {
                page(r#"<title>Dialogs</title><body style="margin:0;background:#fff">
<button id=a style="position:absolute;left:0;top:0;width:200px;height:100px" onclick="alert('Saved.\nAll good.'); report({type: 'alert-done'})">alert</button>
<button id=c style="position:absolute;left:200px;top:0;width:200px;height:100px" onclick="report({type: 'confirm', value: confirm('Delete the file?')})">confirm</button>
<button id=p style="position:absolute;left:400px;top:0;width:200px;height:100px" onclick="report({type: 'prompt', value: prompt('Your name?', 'Anonymous')})">prompt</button>
</body>"#)
            }))
            // A form that asks before leaving: a textarea (0..400, 0..100) and a link away
            // (0..300, 200..300).
            .route("/leave", get(|| async {
                page(r#"<title>Unsaved</title><body style="margin:0;background:#fff"><textarea id=t style="position:absolute;left:0;top:0;width:400px;height:100px"></textarea><a href="/nav/1" style="position:absolute;left:0;top:200px;width:300px;height:100px;display:block;background:#9cf">away</a>
<script>addEventListener('beforeunload', e => { e.preventDefault(); e.returnValue = ''; });
document.getElementById('t').addEventListener('input', e => report({type: 'input', value: e.target.value}));</script></body>"#)
            }))
            // A select at (0..300, 0..40) with option groups and a disabled option; reports
            // each input and change with the value chosen.
            .route("/select", get(|| async {
                page(r#"<title>Select</title><body style="margin:0;background:#fff"><select id=s style="position:absolute;left:0;top:0;width:300px;height:40px">
<option value=none>Choose a fruit</option>
<optgroup label="Red"><option value=apple>Apple</option><option value=cherry disabled>Cherry (sold out)</option></optgroup>
<optgroup label="Yellow"><option value=banana>Banana</option><option value=lemon>Lemon</option></optgroup>
</select>
<script>const s = document.getElementById('s');
for (const type of ['input', 'change']) s.addEventListener(type, () => report({type, value: s.value}));</script></body>"#)
            }))
            // Ways a page opens tabs, 200 px wide buttons in a row at the top of a blue page:
            // a popup (`window.open`) that hands a token back and closes itself, like an
            // OAuth window; a link to a new tab; a popup storm; a popup whose opener then asks
            // a question from the background.
            .route("/popups", get(|| async {
                page(r#"<title>Opener</title><body style="margin:0;background:rgb(30,60,200)">
<button style="position:absolute;left:0;top:0;width:200px;height:100px" onclick="window.open('/popup-child', 'login', 'width=500,height=600')">sign in</button>
<a href="/nav/5" target="_blank" style="position:absolute;left:200px;top:0;width:200px;height:100px;display:block;background:#9cf">new tab</a>
<button style="position:absolute;left:400px;top:0;width:200px;height:100px" onclick="for (let i = 0; i < 15; i++) window.open('/nav/' + (20 + i), '_blank')">storm</button>
<button style="position:absolute;left:600px;top:0;width:200px;height:100px" onclick="window.open('/nav/9', '_blank'); setTimeout(() => report({type: 'confirm', value: confirm('Still there?')}), 500)">ask later</button>
<script>addEventListener('message', e => report({type: 'message', data: e.data}));</script></body>"#)
            }))
            // A file field for several text files (0..300, 0..40); reports each pick's names, sizes
            // and contents.
            .route("/upload", get(|| async {
                page(r#"<title>Upload</title><body style="margin:0;background:#fff"><input id=f type=file multiple accept=".txt,text/plain" style="position:absolute;left:0;top:0;width:300px;height:40px">
<script>const f = document.getElementById('f');
f.addEventListener('change', async () => report({type: 'files', files: await Promise.all([...f.files].map(async x => ({name: x.name, size: x.size, text: await x.text()})))}));</script></body>"#)
            }))
            // Links to downloads: a small text file (0..300, 0..40) and 2 MiB (0..300, 50..90).
            .route("/download", get(|| async {
                page(r#"<title>Downloads</title><body style="margin:0;background:#fff"><a href="/file.txt" style="position:absolute;left:0;top:0;width:300px;height:40px;display:block;background:#9cf">notes</a><a href="/big.bin" style="position:absolute;left:0;top:50px;width:300px;height:40px;display:block;background:#fc9">big</a></body>"#)
            }))
            .route("/file.txt", get(|| async {
                ([(axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"notes.txt\"")], "hello download\n")
            }))
            .route("/big.bin", get(|| async {
                ([(axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"big.bin\"")], vec![7u8; 2 * 1024 * 1024])
            }))
            // Reports its size and pixel ratio on load and on every resize, and where clicks land.
            .route("/size", get(|| async {
                page(r#"<title>Size</title><body style="margin:0;background:rgb(240,240,240)">
<script>const size = () => report({type: 'size', w: innerWidth, h: innerHeight, dpr: devicePixelRatio});
addEventListener('load', size); addEventListener('resize', size);
addEventListener('mousedown', e => report({type: 'mousedown', x: e.clientX, y: e.clientY}));</script></body>"#)
            }))
            // A colour field (0..100, 0..40), a date field (120..320, 0..40) and a time field
            // (340..540, 0..40); each reports its input and change events with the value.
            .route("/pickers", get(|| async {
                page(r##"<title>Pickers</title><body style="margin:0;background:#fff">
<input id=c type=color value="#000000" style="position:absolute;left:0;top:0;width:100px;height:40px">
<input id=d type=date min="2020-01-01" max="2030-12-31" style="position:absolute;left:120px;top:0;width:200px;height:40px">
<input id=t type=time style="position:absolute;left:340px;top:0;width:200px;height:40px">
<script>for (const el of document.querySelectorAll('input')) for (const type of ['input', 'change', 'keydown', 'focus']) el.addEventListener(type, () => report({type, field: el.id, value: el.value}));</script></body>"##)
            }))
            // The popup: red; its button (0..200, 0..100) posts a token to its opener and closes
            // the window; a select (0..200, 150..190) reports its changes.
            .route("/popup-child", get(|| async {
                page(r#"<title>Sign in</title><body style="margin:0;background:rgb(200,30,30)">
<button style="position:absolute;left:0;top:0;width:200px;height:100px" onclick="opener.postMessage('token-123', '*'); window.close()">allow</button>
<select id=country style="position:absolute;left:0;top:150px;width:200px;height:40px"><option>France</option><option>Norway</option></select>
<script>document.getElementById('country').addEventListener('change', e => report({type: 'country', value: e.target.value}));</script></body>"#)
            }))
            // Egress probes: `?t=` a JSON list of URLs, each fetched (`ok`: the page read the
            // body `secret`) and loaded as an image; `?ws=` a WebSocket URL opened; `?rtc=1` WebRTC candidates gathered. Each outcome is
            // reported; `done` after all.
            .route("/probe", get(|| async {
                page(r#"<title>Probe</title><body style="margin:0;background:#fff">
<script>
const q = new URLSearchParams(location.search);
const targets = JSON.parse(q.get('t') || '[]');
const jobs = [];
for (const u of targets) {
  jobs.push(fetch(u, {cache: 'no-store'}).then(r => r.ok ? r.text() : '').then(t => report({type: 'fetch', url: u, ok: t === 'secret'}), () => report({type: 'fetch', url: u, ok: false})));
  jobs.push(new Promise(done => { const i = new Image(); i.onload = () => { report({type: 'img', url: u, ok: true}); done(); }; i.onerror = () => { report({type: 'img', url: u, ok: false}); done(); }; i.src = u; }));
}
const ws = q.get('ws');
if (ws) jobs.push(new Promise(done => { const s = new WebSocket(ws); s.onopen = () => { report({type: 'ws', url: ws, ok: true}); done(); }; s.onerror = () => { report({type: 'ws', url: ws, ok: false}); done(); }; }));
if (q.get('rtc')) jobs.push((async () => {
  // WebRTC gathers its own (UDP) candidates, outside any HTTP proxy, unless told not to.
  const pc = new RTCPeerConnection({iceServers: []});
  pc.createDataChannel('x');
  const candidates = [];
  const gathered = new Promise(done => { pc.onicecandidate = e => { if (e.candidate) candidates.push(e.candidate.candidate); else done(); }; });
  await pc.setLocalDescription(await pc.createOffer());
  await Promise.race([gathered, new Promise(r => setTimeout(r, 5000))]);
  report({type: 'rtc', candidates, state: pc.iceGatheringState});
})());
Promise.all(jobs).then(() => report({type: 'done'}));
</script></body>"#)
            }))
            // Redirects to `?to=`.
            .route("/redirect", get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let to = q.get("to").cloned().unwrap_or_else(|| "/nav/1".into());
                (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, to)], "")
            }))
            // The page tries to open `?u=` itself: a link it clicks, `window.open`, then
            // `location`; reports where it still is after each, then `done`.
            .route("/escape", get(|| async {
                page(r#"<title>Escape</title><body style="margin:0;background:#fff"><a id=a href="">link</a>
<script>
const u = new URLSearchParams(location.search).get('u');
addEventListener('load', async () => {
  const a = document.getElementById('a'); a.href = u; a.target = '_self';
  a.click();
  await new Promise(r => setTimeout(r, 300));
  report({type: 'after-link', href: location.href});
  const w = window.open(u, '_blank');
  report({type: 'after-open', opened: w !== null});
  await new Promise(r => setTimeout(r, 300));
  try { location.href = u; } catch (e) { report({type: 'threw', error: String(e)}); }
  await new Promise(r => setTimeout(r, 300));
  report({type: 'done', href: location.href});
});
</script></body>"#)
            }))
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestSite { addr, reports }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The next report from a page.
    pub async fn next_report(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.reports.recv())
            .await
            .expect("report in time")
            .expect("site running")
    }

    /// Every report received so far and not yet read, without waiting.
    pub fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(r) = self.reports.try_recv() {
            out.push(r);
        }
        out
    }

    /// Skips reports until one has `type == kind`.
    pub async fn report_of(&mut self, kind: &str) -> Value {
        self.report_where(|r| r["type"] == kind).await
    }

    /// Skips reports until one satisfies `pred`. On timeout, the failure lists what was skipped.
    pub async fn report_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let mut skipped = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.reports.recv()).await;
            let report = match next {
                Ok(Some(report)) => report,
                _ => panic!("no matching report in time; skipped: {skipped:?}"),
            };
            if pred(&report) {
                return report;
            }
            skipped.push(report);
        }
    }
}

/// Waits for a process (not our child) to exit, through a pidfd. `false` after `limit`.
pub async fn wait_pid_exit(pid: u32, limit: Duration) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return true;
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(_) => return true, // no such process
    };
    // A pidfd becomes readable when the process exits.
    tokio::task::spawn_blocking(move || {
        let timeout = rustix::event::Timespec::try_from(limit).expect("timeout");
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
    })
    .await
    .expect("poll task")
}

/// Whether a process exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every descendant of `pid` (children, grandchildren…), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut tree = cobrowse::procfs::tree(pid);
    tree.retain(|&p| p != pid);
    tree
}

/// A minimal HTTP/1.1 JSON client over tokio, enough for the API tests.
pub mod reqwest_lite {
    use std::net::SocketAddr;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client {
        addr: SocketAddr,
    }

    impl Client {
        pub fn new(addr: SocketAddr) -> Self {
            Client { addr }
        }

        /// Sends a request with a JSON body; returns the status and the JSON reply (Null if empty).
        pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
            let body = body.map(|b| b.to_string());
            let (status, text) = self.raw(method, path, &[], body.as_deref()).await;
            let value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            (status, value)
        }

        /// Sends a request with an arbitrary body and headers; returns status and body text.
        pub async fn raw(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: Option<&str>,
        ) -> (u16, String) {
            let (status, _, body) = self.raw_bytes(method, path, headers, body).await;
            (status, String::from_utf8_lossy(&body).to_string())
        }

        /// Like [`Client::raw`], with the response head and the body as bytes.
        pub async fn raw_bytes(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: Option<&str>,
        ) -> (u16, String, Vec<u8>) {
            let mut stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .expect("connect");
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                self.addr
            );
            for (k, v) in headers {
                request.push_str(&format!("{k}: {v}\r\n"));
            }
            let body = body.unwrap_or("");
            if !body.is_empty() || method == "POST" {
                request.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            request.push_str("\r\n");
            request.push_str(body);
            stream.write_all(request.as_bytes()).await.expect("write");
            Self::response(stream).await
        }

        /// Uploads `files` (name, content) as multipart fields `file` to `path`, with the join
        /// token `token`, as the viewer does; returns the status and body text.
        pub async fn upload(
            &self,
            path: &str,
            token: &str,
            files: &[(&str, &[u8])],
        ) -> (u16, String) {
            let boundary = "cobrowse-test-boundary-7d1f";
            let mut body = Vec::new();
            for (name, data) in files {
                body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
                self.addr,
                body.len()
            );
            let mut stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .expect("connect");
            stream.write_all(head.as_bytes()).await.expect("write");
            // A refused upload may be answered before the whole body is sent.
            let _ = stream.write_all(&body).await;
            let (status, _, body) = Self::response(stream).await;
            (status, String::from_utf8_lossy(&body).to_string())
        }

        async fn response(mut stream: tokio::net::TcpStream) -> (u16, String, Vec<u8>) {
            let mut response = Vec::new();
            // A reset after the reply (the server closing on an unread body) still leaves the
            // reply read.
            let _ = tokio::time::timeout(super::WAIT, stream.read_to_end(&mut response))
                .await
                .expect("reply in time");
            let split = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("http response");
            let head = String::from_utf8_lossy(&response[..split]).to_string();
            let rest = &response[split + 4..];
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status");
            let chunked = head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked");
            let body = if chunked {
                dechunk(rest)
            } else {
                rest.to_vec()
            };
            (status, head, body)
        }
    }

    fn dechunk(mut s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
            let size = String::from_utf8_lossy(&s[..eol]);
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let rest = &s[eol + 2..];
            if n == 0 || n > rest.len() {
                break;
            }
            out.extend_from_slice(&rest[..n]);
            s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
        }
        out
    }
}

/// The real binary, as an operator runs it.
pub fn cobrowse_bin() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cobrowse"));
    // A data directory of the test's own (the generated secret, the audit log), not ~/.local.
    let data = std::env::temp_dir().join(format!("cobrowse-test-data-{}", std::process::id()));
    cmd.env_remove("COBROWSE_LISTEN")
        .env_remove("COBROWSE_CHROMIUM")
        .env_remove("COBROWSE_API_KEY")
        .env("COBROWSE_DATA_DIR", data)
        .kill_on_drop(true);
    cmd
}

pub type LogLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// Starts the real binary on a free port with JSON logs, its browsers allowed to reach `site`
/// (through `COBROWSE_ALLOW`, as an operator would); returns it, the address it logged, and the
/// rest of its log.
pub async fn spawn_server(site: &TestSite) -> (tokio::process::Child, SocketAddr, LogLines) {
    spawn_server_with(site, &[]).await
}

/// [`spawn_server`] with more `serve` arguments.
pub async fn spawn_server_with(
    site: &TestSite,
    args: &[&str],
) -> (tokio::process::Child, SocketAddr, LogLines) {
    use tokio::io::AsyncBufReadExt;
    let mut server = cobrowse_bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .env("COBROWSE_ALLOW", site.addr.to_string())
        .env("COBROWSE_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cobrowse");
    let mut lines = tokio::io::BufReader::new(server.stderr.take().expect("stderr")).lines();
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("log in time")
            .expect("read")
            .expect("server running");
        let log: Value = serde_json::from_str(&line).expect("JSON log line");
        if log["fields"]["message"] == "listening" {
            let addr = log["fields"]["address"]
                .as_str()
                .expect("address")
                .parse()
                .expect("socket address");
            return (server, addr, lines);
        }
    }
}

/// Sends `signal` to a child process.
pub fn signal(child: &tokio::process::Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id().expect("running") as i32).expect("pid");
    rustix::process::kill_process(pid, signal).expect("signal");
}

/// Waits until something accepts connections on `addr` (a process's port has no other event).
pub async fn listening(addr: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
