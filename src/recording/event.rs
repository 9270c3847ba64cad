//! What a recording's JSON records hold (`docs/recording.md`). Every field is data the page or a
//! participant produced, so readers treat them as untrusted: a bundle or the replay page escapes
//! them wherever they go.

use serde::{Deserialize, Serialize};

/// The first record of every recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Format version (the same as the file header's).
    pub version: u32,
    /// The recording's id (file name without extension).
    pub id: String,
    pub session: String,
    /// Wall-clock time of `t = 0`, Unix milliseconds.
    pub started_at: u64,
    /// The page the session was on when recording started.
    pub start_url: String,
    /// The session's viewport (CSS pixels) when recording started.
    pub viewport: [u32; 2],
    /// The session's device scale factor (image pixels per CSS pixel).
    pub scale: f64,
    /// Always true: recordings hold the masked screen, whoever may see the clear one.
    pub masked: bool,
    /// How often a keyframe was written (ms).
    pub keyframe_every_ms: u32,
    /// The cobrowse version that wrote it.
    pub server: String,
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Participant id (`p1`, …), `api` for the management API, `server` for the server itself.
    pub id: String,
    pub name: String,
    /// `owner`, `controller`, `viewer`, or `api` / `server`.
    pub role: String,
}

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Button {
    None,
    Left,
    Middle,
    Right,
}

/// One input a participant sent into the page, in page CSS pixels (viewport coordinates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum InputRecord {
    #[serde(rename_all = "camelCase")]
    Mouse {
        /// `moved`, `pressed` or `released`.
        action: String,
        x: f64,
        y: f64,
        button: Button,
        click_count: u8,
        /// Alt 1, Ctrl 2, Meta 4, Shift 8 (CDP's bits).
        modifiers: u8,
    },
    #[serde(rename_all = "camelCase")]
    Wheel {
        x: f64,
        y: f64,
        delta_x: f64,
        delta_y: f64,
        modifiers: u8,
    },
    /// A key. While a masked field has focus, a key that types text is recorded with
    /// `key`, `code` and `text` all `"•"` and `redacted: true`; named keys (Enter, Tab,
    /// Backspace, arrows…) are kept.
    #[serde(rename_all = "camelCase")]
    Key {
        /// `down` or `up`.
        action: String,
        key: String,
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        modifiers: u8,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        redacted: bool,
    },
    /// Text inserted (paste, an IME commit). Redacted as a key is: `text` is one `"•"` per
    /// character.
    #[serde(rename_all = "camelCase")]
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        redacted: bool,
    },
    /// An IME composition in progress (not replayed by scripts: its commit is a `text`).
    #[serde(rename_all = "camelCase")]
    Compose {
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        redacted: bool,
    },
}

/// A console message's or log entry's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Log,
    Info,
    Warning,
    Error,
}

/// One HTTP header (HAR's shape). `Cookie`, `Set-Cookie`, `Authorization` and
/// `Proxy-Authorization` values are recorded as `"[redacted]"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// One JSON record's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// Recording started (the record right after `Meta`) or stopped (the last record of a
    /// recording that was stopped, rather than cut off).
    #[serde(rename_all = "camelCase")]
    Recording {
        /// `started` or `stopped`.
        state: String,
        by: Actor,
    },
    /// An input a participant sent.
    #[serde(rename_all = "camelCase")]
    Input { by: Actor, input: InputRecord },
    /// Something a participant asked of the session rather than the page: `navigate` (`url`:
    /// what they typed), `back`, `forward`, `reload`, `tab-switch` / `tab-close` / `tab-new`
    /// (`tab`), `dialog` (`accept`; a prompt's text is not recorded), `choose` (an option of a
    /// `<select>`: `index`), `pick` (a date/colour picker: `value`), `upload` (`files`: names).
    #[serde(rename_all = "camelCase")]
    Action {
        by: Actor,
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tab: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accept: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<String>,
    },
    /// A message every viewer got (the session's event stream: `page` (navigations, titles),
    /// `tabs`, `dialog`, `chat`, `presence`, `control`, `downloads`, `annotate`, …) or the masks
    /// of the masked screen (`masks`), exactly as sent on the WebSocket.
    #[serde(rename_all = "camelCase")]
    Server { message: serde_json::Value },
    /// What the element under a press was, as the page saw it (cobrowse's page script, top
    /// document only): the best selector it found (`None`: nothing robust, use coordinates) and
    /// where the press landed (CSS pixels, viewport).
    #[serde(rename_all = "camelCase")]
    Target {
        x: f64,
        y: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selector: Option<String>,
        /// Lower-case tag name.
        tag: String,
    },
    /// A form field's value changed (`input`/`change`, top document only). `value` is `None`
    /// for masked fields and passwords.
    #[serde(rename_all = "camelCase")]
    Field {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selector: Option<String>,
        tag: String,
        /// The `type` of an `<input>`, else empty.
        #[serde(default)]
        input_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// For checkboxes and radios.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checked: Option<bool>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        masked: bool,
    },
    /// A console API call (`console.log` …) or a browser log entry (`Log.entryAdded`).
    #[serde(rename_all = "camelCase")]
    Console {
        level: Level,
        text: String,
        /// `console-api`, or the log entry's source (`network`, `javascript`, `security`…).
        source: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<u32>,
    },
    /// An uncaught exception (or unhandled rejection) in the page.
    #[serde(rename_all = "camelCase")]
    Exception {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        column: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stack: Option<String>,
    },
    /// A request the page made (`Network.requestWillBeSent`). `id` ties it to its response.
    #[serde(rename_all = "camelCase")]
    Request {
        id: String,
        method: String,
        url: String,
        /// CDP's resource type (`Document`, `Script`, `XHR`, `Fetch`, …).
        resource_type: String,
        headers: Vec<Header>,
        /// Unix ms (CDP's wall time), for HAR's `startedDateTime`.
        wall_ms: u64,
        /// The request body's length, when it had one (the body itself is not recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body_bytes: Option<u64>,
    },
    /// Its response's head arrived.
    #[serde(rename_all = "camelCase")]
    Response {
        id: String,
        status: u16,
        status_text: String,
        mime_type: String,
        headers: Vec<Header>,
        /// HTTP version as CDP reports it (`http/1.1`, `h2`).
        protocol: String,
    },
    /// It finished: bytes received on the wire.
    #[serde(rename_all = "camelCase")]
    Finished { id: String, bytes: u64 },
    /// It failed (`error`: Chromium's reason, e.g. `net::ERR_CONNECTION_REFUSED`; `canceled`;
    /// `blocked`: refused by cobrowse's egress policy or Chromium).
    #[serde(rename_all = "camelCase")]
    Failed {
        id: String,
        error: String,
        canceled: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blocked: Option<String>,
    },
}
