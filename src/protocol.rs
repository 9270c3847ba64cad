//! The viewer wire protocol, version 1 (documented in `docs/protocol.md`). This module is the only
//! place that knows its byte layout and JSON shapes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Protocol version announced in `hello` and in the subprotocol name.
pub const PROTOCOL_VERSION: u32 = 1;
/// WebSocket subprotocol the server selects.
pub const SUBPROTOCOL: &str = "cobrowse.v1";
/// Prefix of the subprotocol that carries the join token.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "cobrowse.token.";
/// Largest message a viewer may send; the socket is closed (1009) beyond.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest `text` input, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Frames a viewer may have unacknowledged before the server waits for an ack.
pub const ACK_WINDOW: usize = 2;

/// Binary message kinds (byte 0).
pub const KIND_FRAME: u8 = 1;
/// Image codecs (byte 1 of a frame).
pub const CODEC_JPEG: u8 = 1;
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 12;

/// WebSocket close codes of the application range.
pub mod close {
    /// A message exceeded [`super::MAX_MESSAGE_BYTES`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The session ended; do not reconnect.
    pub const SESSION_ENDED: u16 = 4000;
    /// The server is shutting down; reconnecting later may work.
    pub const SHUTTING_DOWN: u16 = 4003;
}

/// Builds a binary frame message around an encoded JPEG. Built once per screen version and shared
/// by every viewer.
pub fn encode_frame(seq: u32, width: u16, height: u16, jpeg: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + jpeg.len());
    buf.put_u8(KIND_FRAME);
    buf.put_u8(CODEC_JPEG);
    buf.put_u16_le(0);
    buf.put_u32_le(seq);
    buf.put_u16_le(width);
    buf.put_u16_le(height);
    buf.put_slice(jpeg);
    buf.freeze()
}

/// Header of a binary frame message, as a viewer reads it. Used by tests and benches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u8,
    pub codec: u8,
    pub seq: u32,
    pub width: u16,
    pub height: u16,
}

/// Parses a frame header; `None` when the message is too short.
pub fn decode_frame_header(msg: &[u8]) -> Option<FrameHeader> {
    if msg.len() < FRAME_HEADER_LEN {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([msg[i], msg[i + 1]]);
    Some(FrameHeader {
        kind: msg[0],
        codec: msg[1],
        seq: u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]),
        width: u16_at(8),
        height: u16_at(10),
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
    },
    Presence {
        count: usize,
    },
    Page {
        url: &'a str,
    },
    Notice {
        level: &'a str,
        code: &'a str,
        message: &'a str,
    },
    Ended {
        reason: &'a str,
    },
}

impl ServerMessage<'_> {
    /// Serialises the message; these shapes cannot fail to serialise.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// JSON messages from a viewer to the server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum ClientMessage {
    Ack { seq: u32 },
    Mouse(MouseMessage),
    Wheel(WheelMessage),
    Key(KeyMessage),
    Text { text: String },
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
    fn frame_header_round_trips() {
        let msg = encode_frame(0x0102_0304, 1280, 720, b"\xff\xd8jpeg");
        let h = decode_frame_header(&msg).expect("header");
        assert_eq!(
            h,
            FrameHeader {
                kind: KIND_FRAME,
                codec: CODEC_JPEG,
                seq: 0x0102_0304,
                width: 1280,
                height: 720
            }
        );
        assert_eq!(&msg[FRAME_HEADER_LEN..], b"\xff\xd8jpeg");
        // Little-endian on the wire, as docs/protocol.md says.
        assert_eq!(&msg[4..8], &[4, 3, 2, 1]);
        assert!(decode_frame_header(&msg[..11]).is_none());
    }

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            parse_client_message(r#"{"t":"ack","seq":7}"#),
            Ok(ClientMessage::Ack { seq: 7 })
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
        let json = ServerMessage::Presence { count: 3 }.to_json();
        assert_eq!(json, r#"{"t":"presence","count":3}"#);
        let json = ServerMessage::Notice {
            level: "warn",
            code: "input-not-allowed",
            message: "m",
        }
        .to_json();
        assert!(json.contains(r#""t":"notice""#), "{json}");
    }
}
