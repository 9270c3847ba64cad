//! The viewer wire protocol, version 1 (documented in `docs/protocol.md`). This module is the only
//! place that knows its byte layout and JSON shapes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Protocol version announced in `hello` and in the subprotocol name.
pub const PROTOCOL_VERSION: u32 = 2;
/// WebSocket subprotocol the server selects.
pub const SUBPROTOCOL: &str = "cobrowse.v2";
/// Prefix of the subprotocol that carries the join token.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "cobrowse.token.";
/// Largest message a viewer may send; the socket is closed (1009) beyond.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest `text` input, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest page or tab title passed on to viewers, in characters.
pub const MAX_TITLE_CHARS: usize = 300;

/// Binary message kinds (byte 0).
pub const KIND_UPDATE: u8 = 2;
/// Update flags (byte 1).
pub mod flags {
    /// The update paints the whole screen; the viewer sizes its canvas to it first.
    pub const KEYFRAME: u8 = 1;
    /// The update only refines content already shown (lossless after lossy).
    pub const REFINE: u8 = 2;
}
/// Length of an update header; the operations follow (see `encode`).
pub const UPDATE_HEADER_LEN: usize = 16;

/// WebSocket close codes of the application range.
pub mod close {
    /// A message exceeded [`super::MAX_MESSAGE_BYTES`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The session ended; do not reconnect.
    pub const SESSION_ENDED: u16 = 4000;
    /// The server is shutting down; reconnecting later may work.
    pub const SHUTTING_DOWN: u16 = 4003;
    /// The owner removed this participant; do not reconnect (the link no longer works).
    pub const REMOVED: u16 = 4004;
}

/// Header of a binary update message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateHeader {
    pub flags: u8,
    /// Number of operations in the body.
    pub ops: u16,
    /// Per-connection update number: what the viewer acknowledges.
    pub number: u32,
    /// The screen version the viewer has after painting this update.
    pub version: u32,
    /// Screen size.
    pub width: u16,
    pub height: u16,
}

/// Builds an update message: this viewer's header, then the shared encoded body.
pub fn encode_update(header: &UpdateHeader, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(UPDATE_HEADER_LEN + body.len());
    buf.put_u8(KIND_UPDATE);
    buf.put_u8(header.flags);
    buf.put_u16_le(header.ops);
    buf.put_u32_le(header.number);
    buf.put_u32_le(header.version);
    buf.put_u16_le(header.width);
    buf.put_u16_le(header.height);
    buf.put_slice(body);
    buf.freeze()
}

/// Parses an update header; `None` when the message is too short or not an update.
pub fn decode_update_header(msg: &[u8]) -> Option<UpdateHeader> {
    if msg.len() < UPDATE_HEADER_LEN || msg[0] != KIND_UPDATE {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([msg[i], msg[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
    Some(UpdateHeader {
        flags: msg[1],
        ops: u16_at(2),
        number: u32_at(4),
        version: u32_at(8),
        width: u16_at(12),
        height: u16_at(14),
    })
}

/// Join links of a session, one per role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Links {
    pub owner: String,
    pub controller: String,
    pub viewer: String,
}

/// Viewport as sent to viewers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireViewport {
    pub width: u32,
    pub height: u32,
}

/// JSON messages from the server to a viewer.
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum ServerMessage<'a> {
    #[serde(rename_all = "camelCase")]
    Hello {
        protocol: u32,
        session: &'a str,
        participant: &'a str,
        role: &'a str,
        can_input: bool,
        viewport: WireViewport,
        links: Option<&'a Links>,
        url: &'a str,
        name: &'a str,
        color: &'a str,
    },
    /// Everyone connected, in join order; sent on every join, leave and rename.
    Presence {
        count: usize,
        participants: &'a [crate::session::PresenceEntry],
    },
    Joined {
        participant: &'a crate::session::PresenceEntry,
    },
    Left {
        id: &'a str,
        name: &'a str,
    },
    /// One chat message, to everyone (the sender included).
    Chat(&'a crate::people::ChatMessage),
    /// The chat so far, sent once after `hello`.
    ChatHistory {
        messages: &'a [std::sync::Arc<crate::people::ChatMessage>],
    },
    /// The owner's join links changed (a participant was removed); owners only.
    JoinLinks {
        links: &'a Links,
    },
    /// Where the other participants point, in pixels of the current screen (like input
    /// coordinates); those pointing at something scrolled out of view are left out. Sent when a
    /// pointer moves or the page scrolls, at most every 33 ms.
    Pointers {
        pointers: &'a [WirePointer<'a>],
    },
    /// Who may act: the policy, the holder and the requests; sent after `hello` and on every
    /// change. `denied`: that participant's request was just turned down.
    Control {
        #[serde(flatten)]
        state: &'a crate::control::ControlView,
        #[serde(skip_serializing_if = "Option::is_none")]
        denied: Option<&'a str>,
    },
    /// Part of a participant's annotation stroke, in page CSS pixels (scroll included), so it
    /// stays on what it was drawn on; `view` says where the page is on the screen.
    Annotation {
        id: &'a str,
        stroke: u32,
        kind: AnnotationKind,
        points: &'a [[f64; 2]],
    },
    /// Masked participants only: where the screen they are sent is painted over (image pixels
    /// of the update that follows, `[x, y, w, h]`), for a labelled "hidden" overlay; empty when
    /// nothing is. Sent before the first update whose masks differ from the last sent.
    Masks {
        rects: &'a [[u32; 4]],
    },
    /// Where the page sits on the screen: its scroll offset and the CSS size the screen shows.
    /// Sent when it changes (at most every 33 ms), for placing annotations.
    View {
        #[serde(rename = "scrollX")]
        scroll_x: f64,
        #[serde(rename = "scrollY")]
        scroll_y: f64,
        #[serde(rename = "cssWidth")]
        css_width: f64,
        #[serde(rename = "cssHeight")]
        css_height: f64,
    },
    /// The page's own cursor where this participant's mouse is (a CSS keyword: `default`,
    /// `pointer`, `text`, …), for them only; sent when it changes.
    Cursor {
        shape: &'a str,
    },
    /// This participant was removed by the owner; the socket closes next.
    Removed {
        reason: &'a str,
    },
    /// The page: URL, title, loading, whether back/forward can go anywhere. Sent after `hello`
    /// and whenever one of them changes.
    Page(&'a crate::session::PageInfo),
    /// The page's size in CSS pixels changed (the owner resized it); the page lays out again and
    /// the next screen has the new size.
    Viewport {
        width: u32,
        height: u32,
    },
    /// The browser's tabs in strip order and the one the screen shows; sent after `hello` and
    /// whenever a tab opens, closes, changes or another becomes active.
    Tabs {
        tabs: &'a [crate::tabs::TabInfo],
        active: u32,
    },
    /// A JavaScript dialog (`alert`, `confirm`, `prompt`, `beforeunload`) the page opened, or
    /// `null` once it was answered (`answeredBy`: the participant's name). The page's scripts
    /// wait until someone who may act answers. Sent after `hello` while one is open.
    #[serde(rename_all = "camelCase")]
    Dialog {
        dialog: Option<&'a crate::session::OpenDialog>,
        #[serde(skip_serializing_if = "Option::is_none")]
        answered_by: Option<&'a str>,
    },
    /// A `<select>` popup this participant opened (sent to them alone): its options, the
    /// selected index (-1: none) and where the select sits on the screen (screen pixels, like
    /// input: x, y, width, height). Answer with `choose`.
    Select {
        id: u32,
        selected: i64,
        options: &'a [crate::native::SelectOption],
        rect: [f64; 4],
    },
    /// A file field this participant clicked asks for files (sent to them alone): `multiple`
    /// files or one, of the types in `accept` (the field's attribute, "" for any), at most
    /// `maxBytes` together. Answer by uploading them to `/s/{session}/files/{id}`.
    #[serde(rename_all = "camelCase")]
    FileChooser {
        id: u32,
        multiple: bool,
        accept: &'a str,
        max_bytes: u64,
    },
    /// Files the page downloaded, newest last (at most 20): `state` `started`, `done` (fetch it
    /// from `/s/{session}/downloads/{id}`) or `failed` with a `reason`. Sent after `hello` and
    /// whenever one starts, finishes or fails.
    Downloads {
        downloads: &'a [crate::session::DownloadInfo],
    },
    /// A colour, date or time field this participant clicked (sent to them alone): its `type`,
    /// value and limits as the field has them, and where it is on the screen. Answer with `pick`.
    Picker {
        id: u32,
        #[serde(rename = "type")]
        input_type: &'a str,
        value: &'a str,
        min: &'a str,
        max: &'a str,
        step: &'a str,
        rect: [f64; 4],
    },
    /// Text copied (or cut) in the page by this participant, for their own clipboard (sent to
    /// them alone).
    Clipboard {
        text: &'a str,
    },
    Notice {
        level: &'a str,
        code: &'a str,
        message: &'a str,
    },
    Ended {
        reason: &'a str,
    },
    /// Whether the session is being recorded, by whom and since when; sent after `hello` and
    /// whenever it starts or stops. Everyone is told: participants know they are recorded.
    Recording {
        #[serde(flatten)]
        status: &'a crate::session::RecordingStatus,
    },
    /// Every participant's link figures; sent to the owner once a second.
    Links {
        participants: &'a [crate::session::LinkInfo],
    },
}

impl ServerMessage<'_> {
    /// Serialises the message; these shapes cannot fail to serialise.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// How an annotation looks and how long it lasts (the viewer fades it out).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationKind {
    /// A short bright trail that fades within a second.
    Laser,
    /// A translucent freehand stroke that fades after a few seconds.
    Highlight,
}

/// The kinds of JavaScript dialog a page can open.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DialogKind {
    Alert,
    Confirm,
    Prompt,
    #[serde(rename = "beforeunload")]
    BeforeUnload,
}

/// Moves in the page's history.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum HistoryAction {
    Back,
    Forward,
    Reload,
}

impl HistoryAction {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryAction::Back => "back",
            HistoryAction::Forward => "forward",
            HistoryAction::Reload => "reload",
        }
    }
}

/// Points per `annotate` message at most.
pub const MAX_ANNOTATION_POINTS: usize = 64;

/// A control action (`{"t":"control","action":"grant","id":"p3"}`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum ControlAction {
    Request,
    Grant { id: String },
    Deny { id: String },
    Release,
    Take,
    Policy { policy: crate::control::Policy },
}

impl ControlAction {
    /// The action's wire name (for logs and the audit log).
    pub fn name(&self) -> &'static str {
        match self {
            ControlAction::Request => "request",
            ControlAction::Grant { .. } => "grant",
            ControlAction::Deny { .. } => "deny",
            ControlAction::Release => "release",
            ControlAction::Take => "take",
            ControlAction::Policy { .. } => "policy",
        }
    }
}

/// One participant's pointer, in screen pixels.
#[derive(Debug, Serialize)]
pub struct WirePointer<'a> {
    pub id: &'a str,
    pub x: f64,
    pub y: f64,
}

/// JSON messages from a viewer to the server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum ClientMessage {
    /// Painted every update up to number `seq`. `resync`: something could not be painted; the
    /// viewer needs a whole screen.
    Ack {
        seq: u32,
        #[serde(default)]
        resync: bool,
    },
    Mouse(MouseMessage),
    Wheel(WheelMessage),
    Key(KeyMessage),
    Text {
        text: String,
    },
    /// An IME composition in progress: the composing text, and the selection (caret) in it in
    /// UTF-16 code units. Empty `text` cancels the composition; `text` commits it.
    Compose {
        text: String,
        #[serde(default)]
        start: u32,
        #[serde(default)]
        end: u32,
    },
    /// A chat message to everyone.
    Chat {
        text: String,
    },
    /// A new display name for this participant.
    Name {
        name: String,
    },
    /// Owner only: remove participant `id`.
    Remove {
        id: String,
    },
    /// Owner only: end the session for everyone.
    End,
    /// Owner only: start (`on`) or stop recording the session.
    Record {
        on: bool,
    },
    /// Asks for, grants, denies, releases or takes control, or (owner) sets the policy.
    Control(ControlAction),
    /// Part of an annotation stroke: points (screen pixels) added to stroke `stroke` of this
    /// participant. Any role: drawing over the screen is not acting on the page.
    Annotate {
        stroke: u32,
        kind: AnnotationKind,
        points: Vec<[f64; 2]>,
    },
    /// Where this participant points on the screen (screen pixels, like `mouse`), or `gone`
    /// when the pointer left the screen. Any role: pointing is not acting.
    /// Go to what was typed into the URL bar (read like a browser's address bar).
    Navigate {
        url: String,
    },
    /// Back, forward or reload.
    History {
        action: HistoryAction,
    },
    /// Owner only: the page's new size in CSS pixels.
    Viewport {
        width: u32,
        height: u32,
    },
    /// Switches to tab `id`, closes it, or opens a new blank tab.
    Tab {
        action: TabAction,
        #[serde(default)]
        id: Option<u32>,
    },
    /// The choice in `<select>` popup `id`: option `index`, or none (`null`) to close it.
    Choose {
        id: u32,
        #[serde(default)]
        index: Option<u32>,
    },
    /// The value for picker `id` (as the field's type writes it: `#rrggbb`, `2026-11-24`,
    /// `09:30`…), or none (`null`) to close it.
    Pick {
        id: u32,
        #[serde(default)]
        value: Option<String>,
    },
    /// Answers JavaScript dialog `id`: OK (`accept`) or Cancel, with `text` for a prompt.
    Dialog {
        id: u32,
        accept: bool,
        #[serde(default)]
        text: Option<String>,
    },
    Pointer {
        #[serde(default)]
        x: f64,
        #[serde(default)]
        y: f64,
        #[serde(default)]
        gone: bool,
    },
}

/// What a `tab` message does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TabAction {
    Switch,
    Close,
    New,
}

impl TabAction {
    /// The action's name in a recording.
    pub fn record_name(self) -> &'static str {
        match self {
            TabAction::Switch => "tab-switch",
            TabAction::Close => "tab-close",
            TabAction::New => "tab-new",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum MouseAction {
    Move,
    Down,
    Up,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WireButton {
    None,
    Left,
    Middle,
    Right,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MouseMessage {
    #[serde(rename = "type")]
    pub action: MouseAction,
    pub x: f64,
    pub y: f64,
    #[serde(default = "no_button")]
    pub button: WireButton,
    #[serde(default)]
    pub buttons: u8,
    #[serde(default)]
    pub clicks: u8,
    #[serde(default)]
    pub mods: u8,
}

fn no_button() -> WireButton {
    WireButton::None
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WheelMessage {
    pub x: f64,
    pub y: f64,
    #[serde(default)]
    pub dx: f64,
    #[serde(default)]
    pub dy: f64,
    #[serde(default)]
    pub mods: u8,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum KeyAction {
    Down,
    Up,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyMessage {
    #[serde(rename = "type")]
    pub action: KeyAction,
    pub key: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub key_code: u32,
    #[serde(default)]
    pub location: u8,
    #[serde(default)]
    pub mods: u8,
    #[serde(default)]
    pub repeat: bool,
}

/// Parses a text message from a viewer.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_header_round_trips() {
        let header = UpdateHeader {
            flags: flags::KEYFRAME,
            ops: 3,
            number: 0x0102_0304,
            version: 77,
            width: 1280,
            height: 720,
        };
        let msg = encode_update(&header, b"ops");
        assert_eq!(decode_update_header(&msg), Some(header));
        assert_eq!(&msg[UPDATE_HEADER_LEN..], b"ops");
        // Little-endian on the wire, as docs/protocol.md says.
        assert_eq!(&msg[4..8], &[4, 3, 2, 1]);
        assert!(decode_update_header(&msg[..15]).is_none());
    }

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            parse_client_message(r#"{"t":"ack","seq":7}"#),
            Ok(ClientMessage::Ack {
                seq: 7,
                resync: false
            })
        );
        assert_eq!(
            parse_client_message(r#"{"t":"ack","seq":7,"resync":true}"#),
            Ok(ClientMessage::Ack {
                seq: 7,
                resync: true
            })
        );
        let m = parse_client_message(
            r#"{"t":"mouse","type":"down","x":10.5,"y":20,"button":"left","buttons":1,"clicks":2,"mods":8}"#,
        )
        .expect("mouse");
        let ClientMessage::Mouse(m) = m else {
            panic!("not mouse")
        };
        assert_eq!(
            (m.action, m.button, m.clicks, m.mods),
            (MouseAction::Down, WireButton::Left, 2, 8)
        );
        let k = parse_client_message(
            r#"{"t":"key","type":"down","key":"a","code":"KeyA","keyCode":65,"location":0,"mods":0,"repeat":false}"#,
        )
        .expect("key");
        assert!(matches!(
            k,
            ClientMessage::Key(KeyMessage { key_code: 65, .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "null",
            "[]",
            r#"{"t":"nope"}"#,
            r#"{"t":"ack"}"#,
            r#"{"t":"ack","seq":-1}"#,
            "{\"t\":\"mouse\"}",
        ] {
            assert!(parse_client_message(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_are_tagged() {
        let json = ServerMessage::Presence {
            count: 0,
            participants: &[],
        }
        .to_json();
        assert_eq!(json, r#"{"t":"presence","count":0,"participants":[]}"#);
        let chat = crate::people::ChatMessage {
            id: 1,
            from: "p1".into(),
            name: "Ada".into(),
            color: "#e6194b",
            text: "<b>hi</b>".into(),
            at: 5,
        };
        // The chat message's own fields sit beside the tag.
        assert_eq!(
            ServerMessage::Chat(&chat).to_json(),
            r##"{"t":"chat","id":1,"from":"p1","name":"Ada","color":"#e6194b","text":"<b>hi</b>","at":5}"##
        );
        let json = ServerMessage::Notice {
            level: "warn",
            code: "input-not-allowed",
            message: "m",
        }
        .to_json();
        assert!(json.contains(r#""t":"notice""#), "{json}");
    }
}
