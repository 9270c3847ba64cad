//! Viewer input turned into browser input: coordinates mapped from the viewer's frame image to the
//! page's CSS pixels, keys given the fields Chromium needs. Pure logic; `browser` sends the result.

use crate::protocol::{
    KeyAction, KeyMessage, MouseAction, MouseMessage, WheelMessage, WireButton, MAX_TEXT_CHARS,
};

/// Modifier bits, as CDP and the wire protocol both define them.
pub const MOD_ALT: u8 = 1;
pub const MOD_CTRL: u8 = 2;
pub const MOD_META: u8 = 4;
pub const MOD_SHIFT: u8 = 8;
const MOD_ALL: u8 = MOD_ALT | MOD_CTRL | MOD_META | MOD_SHIFT;

/// Longest `key` or `code` string accepted (the longest real one, "AudioVolumeMute"-like, is < 32).
const MAX_KEY_NAME: usize = 32;
/// Largest wheel delta accepted per message, in CSS pixels.
const MAX_WHEEL_DELTA: f64 = 10_000.0;

/// How a frame image maps onto the page, from the screencast frame's metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameGeometry {
    /// Size of the frame image in pixels.
    pub image_width: f64,
    pub image_height: f64,
    /// Size of the page area the image shows, in CSS pixels (`deviceWidth/deviceHeight`).
    pub css_width: f64,
    pub css_height: f64,
    /// Top offset of the captured area in CSS pixels (`offsetTop`).
    pub offset_top: f64,
    /// The page's scroll position in CSS pixels: page point = viewport point + scroll.
    pub scroll_x: f64,
    pub scroll_y: f64,
}

impl FrameGeometry {
    /// The page at 1:1: used for input before the first frame arrives.
    pub fn identity(viewport: crate::config::Viewport) -> Self {
        let (w, h) = (f64::from(viewport.width), f64::from(viewport.height));
        FrameGeometry {
            image_width: w,
            image_height: h,
            css_width: w,
            css_height: h,
            offset_top: 0.0,
            scroll_x: 0.0,
            scroll_y: 0.0,
        }
    }

    /// Maps a point in image pixels to page CSS pixels (scroll included): a point on the page
    /// that stays put when the page scrolls.
    pub fn to_page(&self, x: f64, y: f64) -> (f64, f64) {
        let (cx, cy) = self.to_css(x, y);
        (cx + self.scroll_x, cy - self.offset_top + self.scroll_y)
    }

    /// Maps a page point back to image pixels of this frame; `None` when it is not on screen.
    pub fn from_page(&self, px: f64, py: f64) -> Option<(f64, f64)> {
        if self.css_width <= 0.0 || self.css_height <= 0.0 {
            return None;
        }
        let x = (px - self.scroll_x) * self.image_width / self.css_width;
        let y = (py - self.scroll_y) * self.image_height / self.css_height;
        ((0.0..self.image_width).contains(&x) && (0.0..self.image_height).contains(&y))
            .then_some((x, y))
    }

    /// Maps a point in image pixels to page CSS pixels, clamped to the page.
    pub fn to_css(&self, x: f64, y: f64) -> (f64, f64) {
        let sx = if self.image_width > 0.0 {
            self.css_width / self.image_width
        } else {
            1.0
        };
        let sy = if self.image_height > 0.0 {
            self.css_height / self.image_height
        } else {
            1.0
        };
        let cx = (x * sx).clamp(0.0, (self.css_width - 1.0).max(0.0));
        let cy = (y * sy).clamp(0.0, (self.css_height - 1.0).max(0.0)) + self.offset_top;
        (cx, cy)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MouseButton {
    None,
    Left,
    Middle,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MouseKind {
    Moved,
    Pressed,
    Released,
}

/// How a key event is dispatched: `KeyDown` carries text, `RawKeyDown` does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    KeyDown,
    RawKeyDown,
    KeyUp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyEvent {
    pub kind: KeyKind,
    pub key: String,
    pub code: String,
    pub windows_virtual_key_code: u32,
    /// Text the key types; `Some` only for `KeyDown`.
    pub text: Option<String>,
    pub location: u8,
    pub modifiers: u8,
    pub auto_repeat: bool,
}

/// One input event for the page, in page CSS pixels.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Mouse {
        kind: MouseKind,
        x: f64,
        y: f64,
        button: MouseButton,
        buttons: u8,
        click_count: u8,
        modifiers: u8,
    },
    Wheel {
        x: f64,
        y: f64,
        delta_x: f64,
        delta_y: f64,
        modifiers: u8,
    },
    Key(KeyEvent),
    /// Text inserted as if typed by an IME (commits a composition in progress).
    Text(String),
    /// An IME composition in progress (`Input.imeSetComposition`): the composing text and the
    /// selection in it, in UTF-16 code units. Empty text cancels the composition.
    Compose {
        text: String,
        start: u32,
        end: u32,
    },
}

/// Why an input message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("coordinates must be finite numbers")]
    BadCoordinates,
    #[error("key name too long or empty")]
    BadKey,
    #[error("text longer than {MAX_TEXT_CHARS} characters")]
    TextTooLong,
    #[error("a browser shortcut, not for the page")]
    BrowserShortcut,
}

fn finite(values: &[f64]) -> Result<(), InputError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(InputError::BadCoordinates)
    }
}

pub fn mouse(msg: &MouseMessage, geometry: &FrameGeometry) -> Result<Input, InputError> {
    finite(&[msg.x, msg.y])?;
    let (x, y) = geometry.to_css(msg.x, msg.y);
    let buttons = msg.buttons & 0b111;
    let kind = match msg.action {
        MouseAction::Move => MouseKind::Moved,
        MouseAction::Down => MouseKind::Pressed,
        MouseAction::Up => MouseKind::Released,
    };
    let button = match msg.button {
        // A move with a button held is a drag: Chromium's own mouse moves carry the button
        // held (the DOM's `buttons` bitmask alone does not start text selection or drag and
        // drop). Left first, as Chromium picks it.
        WireButton::None if kind == MouseKind::Moved => held_button(buttons),
        WireButton::None => MouseButton::None,
        WireButton::Left => MouseButton::Left,
        WireButton::Middle => MouseButton::Middle,
        WireButton::Right => MouseButton::Right,
    };
    // A press or release always counts at least one click; Chromium ignores a press with 0.
    let click_count = match kind {
        MouseKind::Moved => 0,
        _ => msg.clicks.clamp(1, 3),
    };
    Ok(Input::Mouse {
        kind,
        x,
        y,
        button,
        buttons,
        click_count,
        modifiers: msg.mods & MOD_ALL,
    })
}

/// The button a move reports while `buttons` (DOM bitmask: 1 left, 2 right, 4 middle) are held.
fn held_button(buttons: u8) -> MouseButton {
    if buttons & 1 != 0 {
        MouseButton::Left
    } else if buttons & 4 != 0 {
        MouseButton::Middle
    } else if buttons & 2 != 0 {
        MouseButton::Right
    } else {
        MouseButton::None
    }
}

pub fn wheel(msg: &WheelMessage, geometry: &FrameGeometry) -> Result<Input, InputError> {
    finite(&[msg.x, msg.y, msg.dx, msg.dy])?;
    let (x, y) = geometry.to_css(msg.x, msg.y);
    Ok(Input::Wheel {
        x,
        y,
        delta_x: msg.dx.clamp(-MAX_WHEEL_DELTA, MAX_WHEEL_DELTA),
        delta_y: msg.dy.clamp(-MAX_WHEEL_DELTA, MAX_WHEEL_DELTA),
        modifiers: msg.mods & MOD_ALL,
    })
}

pub fn text(text: &str) -> Result<Input, InputError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(InputError::TextTooLong);
    }
    Ok(Input::Text(text.to_string()))
}

/// An IME composition update. The selection is clamped into the text (UTF-16 code units, as
/// the viewer's `selectionStart`/`selectionEnd` and CDP count).
pub fn compose(text: &str, start: u32, end: u32) -> Result<Input, InputError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(InputError::TextTooLong);
    }
    let len = u32::try_from(text.encode_utf16().count()).unwrap_or(u32::MAX);
    let end = end.min(len);
    Ok(Input::Compose {
        text: text.to_string(),
        start: start.min(end),
        end,
    })
}

/// Builds the key event Chromium needs from what the viewer's browser reported. Printable keys
/// without Ctrl/Alt/Meta are `keyDown` with text (so the page gets `keypress`/`input`); everything
/// else is `rawKeyDown` without text (so Ctrl+A is a shortcut, not an "a").
pub fn key(msg: &KeyMessage) -> Result<Input, InputError> {
    let bad = |s: &str| s.len() > MAX_KEY_NAME || s.chars().any(char::is_control);
    if msg.key.is_empty() || bad(&msg.key) || bad(&msg.code) {
        return Err(InputError::BadKey);
    }
    let modifiers = msg.mods & MOD_ALL;
    if browser_shortcut(&msg.code, modifiers) {
        return Err(InputError::BrowserShortcut);
    }
    let windows_virtual_key_code = key_code(&msg.key, &msg.code).unwrap_or(msg.key_code.min(255));
    let kind = match msg.action {
        KeyAction::Up => KeyKind::KeyUp,
        KeyAction::Down => match key_text(&msg.key, modifiers) {
            Some(_) => KeyKind::KeyDown,
            None => KeyKind::RawKeyDown,
        },
    };
    let text = match kind {
        KeyKind::KeyDown => key_text(&msg.key, modifiers),
        _ => None,
    };
    Ok(Input::Key(KeyEvent {
        kind,
        key: msg.key.clone(),
        code: msg.code.clone(),
        windows_virtual_key_code,
        text,
        location: msg.location.min(3),
        modifiers,
        auto_repeat: msg.repeat,
    }))
}

/// Shortcuts a browser keeps for itself, which a page in a local browser never sees: opening
/// developer tools, closing, opening and switching tabs and windows, quitting. Sent to the
/// session's browser they would act on it: Ctrl+Shift+C opened (hidden) developer tools there,
/// which then took the browser's clipboard shortcuts (Shift+Delete, Ctrl+Insert, Shift+Insert)
/// away from the page.
pub fn browser_shortcut(code: &str, modifiers: u8) -> bool {
    let ctrl = modifiers & MOD_CTRL != 0;
    let shift = modifiers & MOD_SHIFT != 0;
    let alt = modifiers & MOD_ALT != 0;
    let meta = modifiers & MOD_META != 0;
    let devtools =
        matches!(code, "KeyI" | "KeyJ" | "KeyC") && (((ctrl || meta) && shift) || (meta && alt));
    let tabs = ctrl
        && matches!(
            code,
            "KeyW" | "KeyT" | "KeyN" | "Tab" | "PageUp" | "PageDown" | "F4"
        );
    let quit = ctrl && shift && code == "KeyQ";
    devtools || tabs || quit || code == "F12" || (alt && code == "F4")
}

/// The text a key press types, if any.
fn key_text(key: &str, modifiers: u8) -> Option<String> {
    if modifiers & (MOD_CTRL | MOD_ALT | MOD_META) != 0 {
        return None;
    }
    if key == "Enter" {
        return Some("\r".to_string());
    }
    let mut chars = key.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_control() => Some(key.to_string()),
        _ => None,
    }
}

/// The `keyCode` Chromium gives a key press, from its `key` and `code`. The viewer's own
/// `keyCode` is not trusted first: Firefox and Safari number some keys differently (`;` is 59 in
/// Firefox, 186 in Chromium). Rules, as Chromium on Windows and Linux applies them:
/// - a key that types an ASCII letter has that letter's code, whatever key it is on (the Q key
///   of an AZERTY keyboard types `a`: 65);
/// - keypad keys with NumLock off report the navigation key they act as (`Numpad7` as `Home`
///   is 36, `Numpad5` as `Clear` is 12, `NumpadDecimal` as `Delete` is 46);
/// - everything else by its physical key on a US layout ([`virtual_key_code`]).
///
/// `None` when neither says (the viewer's `keyCode` is used).
pub fn key_code(key: &str, code: &str) -> Option<u32> {
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if c.is_ascii_alphabetic() {
            return Some(c.to_ascii_uppercase() as u32);
        }
    }
    let keypad = code
        .strip_prefix("Numpad")
        .is_some_and(|rest| single_digit(rest).is_some() || rest == "Decimal");
    if keypad && key.chars().count() > 1 {
        if let Some(vk) = named_key_code(key) {
            return Some(vk);
        }
    }
    virtual_key_code(code)
}

/// Virtual key codes of the named keys a keypad key with NumLock off stands for.
fn named_key_code(key: &str) -> Option<u32> {
    Some(match key {
        "Clear" => 12,
        "PageUp" => 33,
        "PageDown" => 34,
        "End" => 35,
        "Home" => 36,
        "ArrowLeft" => 37,
        "ArrowUp" => 38,
        "ArrowRight" => 39,
        "ArrowDown" => 40,
        "Insert" => 45,
        "Delete" => 46,
        _ => return None,
    })
}

/// Windows virtual key code of a physical key (`KeyboardEvent.code`) on a US layout: what Chromium
/// reports as `keyCode`. `None` for codes not on a US keyboard (the viewer's `keyCode` is used).
pub fn virtual_key_code(code: &str) -> Option<u32> {
    if let Some(letter) = code.strip_prefix("Key") {
        let mut chars = letter.chars();
        if let (Some(c @ 'A'..='Z'), None) = (chars.next(), chars.next()) {
            return Some(c as u32);
        }
    }
    if let Some(digit) = code.strip_prefix("Digit") {
        return single_digit(digit).map(|d| 0x30 + d);
    }
    if let Some(digit) = code.strip_prefix("Numpad") {
        if let Some(d) = single_digit(digit) {
            return Some(0x60 + d);
        }
    }
    if let Some(n) = code.strip_prefix('F').and_then(|n| n.parse::<u32>().ok()) {
        return (1..=24).contains(&n).then_some(0x6F + n);
    }
    let vk = match code {
        "Backspace" => 8,
        "Tab" => 9,
        "Enter" | "NumpadEnter" => 13,
        "ShiftLeft" | "ShiftRight" => 16,
        "ControlLeft" | "ControlRight" => 17,
        "AltLeft" | "AltRight" => 18,
        "Pause" => 19,
        "CapsLock" => 20,
        "Escape" => 27,
        "Space" => 32,
        "PageUp" => 33,
        "PageDown" => 34,
        "End" => 35,
        "Home" => 36,
        "ArrowLeft" => 37,
        "ArrowUp" => 38,
        "ArrowRight" => 39,
        "ArrowDown" => 40,
        "PrintScreen" => 44,
        "Insert" => 45,
        "Delete" => 46,
        "MetaLeft" => 91,
        "MetaRight" => 92,
        "ContextMenu" => 93,
        "NumpadMultiply" => 106,
        "NumpadAdd" => 107,
        "NumpadSubtract" => 109,
        "NumpadDecimal" => 110,
        "NumpadDivide" => 111,
        "NumLock" => 144,
        "ScrollLock" => 145,
        "Semicolon" => 186,
        "Equal" => 187,
        "Comma" => 188,
        "Minus" => 189,
        "Period" => 190,
        "Slash" => 191,
        "Backquote" => 192,
        "BracketLeft" => 219,
        "Backslash" => 220,
        "BracketRight" => 221,
        "Quote" => 222,
        "IntlBackslash" => 226,
        _ => return None,
    };
    Some(vk)
}

fn single_digit(s: &str) -> Option<u32> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => c.to_digit(10),
        _ => None,
    }
}

/// CSS cursor keywords a viewer may show. Anything else the page asks for (`url(…)` images
/// included: they would make viewers fetch from the page's origin) falls back to its last
/// keyword, else `default`.
const CURSORS: [&str; 36] = [
    "default",
    "pointer",
    "text",
    "crosshair",
    "move",
    "grab",
    "grabbing",
    "not-allowed",
    "wait",
    "progress",
    "help",
    "col-resize",
    "row-resize",
    "n-resize",
    "s-resize",
    "e-resize",
    "w-resize",
    "ne-resize",
    "nw-resize",
    "se-resize",
    "sw-resize",
    "ew-resize",
    "ns-resize",
    "nesw-resize",
    "nwse-resize",
    "zoom-in",
    "zoom-out",
    "context-menu",
    "cell",
    "vertical-text",
    "alias",
    "copy",
    "no-drop",
    "all-scroll",
    "none",
    "auto",
];

/// The cursor keyword to show for a computed CSS `cursor` value.
pub fn cursor_keyword(raw: &str) -> &'static str {
    let last = raw
        .rsplit(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match CURSORS.iter().find(|&&c| c == last) {
        Some(&"auto") | None => "default",
        Some(c) => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEOMETRY: FrameGeometry = FrameGeometry {
        image_width: 640.0,
        image_height: 360.0,
        css_width: 1280.0,
        css_height: 720.0,
        offset_top: 0.0,
        scroll_x: 0.0,
        scroll_y: 0.0,
    };

    fn key_msg(action: KeyAction, key: &str, code: &str, mods: u8) -> KeyMessage {
        KeyMessage {
            action,
            key: key.into(),
            code: code.into(),
            key_code: 0,
            location: 0,
            mods,
            repeat: false,
        }
    }

    fn key_event(input: Input) -> KeyEvent {
        match input {
            Input::Key(k) => k,
            other => panic!("not a key: {other:?}"),
        }
    }

    #[test]
    fn maps_image_pixels_to_css_pixels() {
        assert_eq!(GEOMETRY.to_css(320.0, 180.0), (640.0, 360.0));
        // Clamped inside the page.
        assert_eq!(GEOMETRY.to_css(-5.0, 9999.0), (0.0, 719.0));
        let offset = FrameGeometry {
            offset_top: 50.0,
            ..GEOMETRY
        };
        assert_eq!(offset.to_css(0.0, 10.0), (0.0, 70.0));
    }

    #[test]
    fn cursors_are_keywords_only() {
        assert_eq!(cursor_keyword("pointer"), "pointer");
        assert_eq!(cursor_keyword("TEXT"), "text");
        assert_eq!(
            cursor_keyword("url(https://evil.example/c.png) 4 4, pointer"),
            "pointer"
        );
        assert_eq!(cursor_keyword("url(x.cur)"), "default");
        assert_eq!(cursor_keyword("-webkit-grab"), "default");
        assert_eq!(cursor_keyword("auto"), "default");
        assert_eq!(cursor_keyword(""), "default");
    }

    #[test]
    fn page_points_follow_the_scroll() {
        let scrolled = FrameGeometry {
            scroll_x: 10.0,
            scroll_y: 500.0,
            ..GEOMETRY
        };
        // Image (320, 180) is viewport (640, 360), page (650, 860).
        assert_eq!(scrolled.to_page(320.0, 180.0), (650.0, 860.0));
        assert_eq!(scrolled.from_page(650.0, 860.0), Some((320.0, 180.0)));
        // After scrolling 200 px further, the same page point sits 100 image px higher.
        let further = FrameGeometry {
            scroll_y: 700.0,
            ..scrolled
        };
        assert_eq!(further.from_page(650.0, 860.0), Some((320.0, 80.0)));
        // Scrolled out of view.
        assert_eq!(further.from_page(650.0, 600.0), None);
    }

    #[test]
    fn mouse_press_counts_clicks() {
        let msg = MouseMessage {
            action: MouseAction::Down,
            x: 10.0,
            y: 10.0,
            button: WireButton::Left,
            buttons: 1,
            clicks: 0,
            mods: 0xff,
        };
        let Input::Mouse {
            click_count,
            modifiers,
            x,
            ..
        } = mouse(&msg, &GEOMETRY).expect("ok")
        else {
            panic!()
        };
        assert_eq!((click_count, modifiers, x), (1, MOD_ALL, 20.0));
        let nan = MouseMessage { x: f64::NAN, ..msg };
        assert_eq!(mouse(&nan, &GEOMETRY), Err(InputError::BadCoordinates));
    }

    #[test]
    fn moves_with_a_button_held_are_drags() {
        let mv = |button, buttons| {
            let msg = MouseMessage {
                action: MouseAction::Move,
                x: 1.0,
                y: 1.0,
                button,
                buttons,
                clicks: 0,
                mods: 0,
            };
            match mouse(&msg, &GEOMETRY).expect("ok") {
                Input::Mouse { button, .. } => button,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(mv(WireButton::None, 0), MouseButton::None);
        assert_eq!(mv(WireButton::None, 1), MouseButton::Left);
        assert_eq!(mv(WireButton::None, 2), MouseButton::Right);
        assert_eq!(mv(WireButton::None, 4), MouseButton::Middle);
        assert_eq!(mv(WireButton::None, 3), MouseButton::Left);
        assert_eq!(mv(WireButton::Right, 1), MouseButton::Right);
    }

    #[test]
    fn printable_keys_carry_text() {
        let k = key_event(key(&key_msg(KeyAction::Down, "a", "KeyA", 0)).expect("ok"));
        assert_eq!(
            (k.kind, k.text.as_deref(), k.windows_virtual_key_code),
            (KeyKind::KeyDown, Some("a"), 65)
        );
        let k = key_event(key(&key_msg(KeyAction::Down, "A", "KeyA", MOD_SHIFT)).expect("ok"));
        assert_eq!(k.text.as_deref(), Some("A"));
        let k = key_event(key(&key_msg(KeyAction::Down, "Enter", "Enter", 0)).expect("ok"));
        assert_eq!(
            (k.kind, k.text.as_deref(), k.windows_virtual_key_code),
            (KeyKind::KeyDown, Some("\r"), 13)
        );
        let k = key_event(key(&key_msg(KeyAction::Down, " ", "Space", 0)).expect("ok"));
        assert_eq!(k.text.as_deref(), Some(" "));
    }

    #[test]
    fn shortcuts_and_named_keys_are_raw() {
        let k = key_event(key(&key_msg(KeyAction::Down, "a", "KeyA", MOD_CTRL)).expect("ok"));
        assert_eq!((k.kind, k.text), (KeyKind::RawKeyDown, None));
        for (name, vk) in [
            ("Backspace", 8),
            ("Tab", 9),
            ("ArrowLeft", 37),
            ("Delete", 46),
            ("Escape", 27),
        ] {
            let k = key_event(key(&key_msg(KeyAction::Down, name, name, 0)).expect("ok"));
            assert_eq!(
                (k.kind, k.windows_virtual_key_code),
                (KeyKind::RawKeyDown, vk),
                "{name}"
            );
        }
        let k = key_event(key(&key_msg(KeyAction::Up, "a", "KeyA", 0)).expect("ok"));
        assert_eq!((k.kind, k.text), (KeyKind::KeyUp, None));
    }

    #[test]
    fn browser_shortcuts_stay_out_of_the_page() {
        for (code, mods) in [
            ("KeyC", MOD_CTRL | MOD_SHIFT),
            ("KeyI", MOD_CTRL | MOD_SHIFT),
            ("KeyJ", MOD_META | MOD_ALT),
            ("F12", 0),
            ("KeyW", MOD_CTRL),
            ("KeyT", MOD_CTRL | MOD_SHIFT),
            ("Tab", MOD_CTRL),
            ("PageDown", MOD_CTRL),
            ("KeyQ", MOD_CTRL | MOD_SHIFT),
            ("F4", MOD_ALT),
        ] {
            assert_eq!(
                key(&key_msg(KeyAction::Down, "x", code, mods)),
                Err(InputError::BrowserShortcut),
                "{code} {mods}"
            );
        }
        // Editing shortcuts and plain keys reach the page.
        for (code, mods) in [
            ("KeyC", MOD_CTRL),
            ("KeyW", 0),
            ("Tab", MOD_SHIFT),
            ("PageDown", MOD_SHIFT),
            ("KeyQ", MOD_CTRL),
            ("F4", 0),
            ("KeyI", MOD_ALT | MOD_SHIFT),
        ] {
            assert!(
                key(&key_msg(KeyAction::Down, "x", code, mods)).is_ok(),
                "{code} {mods}"
            );
        }
    }

    #[test]
    fn key_codes_follow_what_the_key_types() {
        let vk = |k: &str, code: &str| {
            key_event(key(&key_msg(KeyAction::Down, k, code, 0)).expect("ok"))
                .windows_virtual_key_code
        };
        // The keypad with NumLock off acts as navigation keys, with their codes.
        assert_eq!(vk("Home", "Numpad7"), 36);
        assert_eq!(vk("Clear", "Numpad5"), 12);
        assert_eq!(vk("Insert", "Numpad0"), 45);
        assert_eq!(vk("Delete", "NumpadDecimal"), 46);
        assert_eq!(vk("7", "Numpad7"), 0x67);
        assert_eq!(vk(".", "NumpadDecimal"), 110);
        // Letters by the letter typed (AZERTY's A sits on the Q key), other keys by position.
        assert_eq!(vk("a", "KeyQ"), 65);
        assert_eq!(vk("A", "KeyA"), 65);
        assert_eq!(vk("&", "Digit1"), 0x31);
        assert_eq!(vk("é", "KeyE"), 69);
        assert_eq!(vk("Dead", "Quote"), 222);
    }

    #[test]
    fn compositions_keep_their_selection_inside_the_text() {
        assert_eq!(
            compose("日本", 0, 2),
            Ok(Input::Compose {
                text: "日本".into(),
                start: 0,
                end: 2
            })
        );
        // UTF-16 units: an emoji counts 2.
        assert_eq!(
            compose("🙂", 9, 9),
            Ok(Input::Compose {
                text: "🙂".into(),
                start: 2,
                end: 2
            })
        );
        assert_eq!(
            compose("ab", 2, 1),
            Ok(Input::Compose {
                text: "ab".into(),
                start: 1,
                end: 1
            })
        );
        assert_eq!(
            compose("", 3, 3),
            Ok(Input::Compose {
                text: String::new(),
                start: 0,
                end: 0
            })
        );
        assert_eq!(
            compose(&"x".repeat(MAX_TEXT_CHARS + 1), 0, 0),
            Err(InputError::TextTooLong)
        );
    }

    #[test]
    fn dead_keys_type_nothing_themselves() {
        let k = key_event(key(&key_msg(KeyAction::Down, "Dead", "Quote", 0)).expect("ok"));
        assert_eq!((k.kind, k.text), (KeyKind::RawKeyDown, None));
        let k = key_event(key(&key_msg(KeyAction::Down, "é", "KeyE", 0)).expect("ok"));
        assert_eq!((k.kind, k.text.as_deref()), (KeyKind::KeyDown, Some("é")));
    }

    #[test]
    fn virtual_key_codes_follow_the_us_layout() {
        assert_eq!(virtual_key_code("Digit7"), Some(0x37));
        assert_eq!(virtual_key_code("Numpad7"), Some(0x67));
        assert_eq!(virtual_key_code("F1"), Some(112));
        assert_eq!(virtual_key_code("F24"), Some(135));
        assert_eq!(virtual_key_code("F25"), None);
        assert_eq!(virtual_key_code("Semicolon"), Some(186));
        assert_eq!(virtual_key_code("KeyAB"), None);
        // Unknown code: the viewer's keyCode is used.
        let mut msg = key_msg(KeyAction::Down, "ü", "Unknown", 0);
        msg.key_code = 186;
        assert_eq!(
            key_event(key(&msg).expect("ok")).windows_virtual_key_code,
            186
        );
    }

    #[test]
    fn rejects_bad_keys_and_long_text() {
        assert_eq!(
            key(&key_msg(KeyAction::Down, "", "KeyA", 0)),
            Err(InputError::BadKey)
        );
        assert_eq!(
            key(&key_msg(KeyAction::Down, &"x".repeat(40), "KeyA", 0)),
            Err(InputError::BadKey)
        );
        assert_eq!(
            key(&key_msg(KeyAction::Down, "\u{7}", "KeyA", 0)),
            Err(InputError::BadKey)
        );
        assert!(text(&"é".repeat(MAX_TEXT_CHARS)).is_ok());
        assert_eq!(
            text(&"é".repeat(MAX_TEXT_CHARS + 1)),
            Err(InputError::TextTooLong)
        );
    }
}
