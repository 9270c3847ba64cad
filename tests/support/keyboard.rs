//! A US keyboard for tests, dispatched the way a real keyboard reaches Chromium (the model
//! Puppeteer uses): a key table (key, code, keyCode, text, location, shifted variants), modifier
//! state that a modifier key's own down already includes and its up already excludes, `keyDown`
//! with text for keys that type (no Ctrl/Alt/Meta held), `rawKeyDown` otherwise, then `keyUp`.
//! Plus IME input (`Input.imeSetComposition`, `Input.insertText`).
//!
//! Also the key-log test page (`/keylog` on the test site): it records every keyboard, input
//! and composition event with the fields a page can see, and posts the whole log when the
//! sentinel (F24 with Ctrl+Alt+Shift+Meta) is released.

use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, ImeSetCompositionParams, InsertTextParams,
};
use chromiumoxide::Page;

/// One physical key of a US keyboard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyDef {
    pub key: &'static str,
    pub code: &'static str,
    pub key_code: i64,
    /// What the key types, if anything.
    pub text: Option<&'static str>,
    pub location: i64,
    /// `key` and `text` with Shift held (None: the same as without).
    pub shift_key: Option<&'static str>,
}

const fn k(key: &'static str, code: &'static str, key_code: i64) -> KeyDef {
    KeyDef {
        key,
        code,
        key_code,
        text: None,
        location: 0,
        shift_key: None,
    }
}

/// A key that types its `key` (and its shifted `key` with Shift).
const fn t(key: &'static str, shifted: &'static str, code: &'static str, key_code: i64) -> KeyDef {
    KeyDef {
        key,
        code,
        key_code,
        text: Some(key),
        location: 0,
        shift_key: Some(shifted),
    }
}

const fn at(mut def: KeyDef, location: i64) -> KeyDef {
    def.location = location;
    def
}

const fn typing(mut def: KeyDef, text: &'static str) -> KeyDef {
    def.text = Some(text);
    def
}

/// Every key of a US 104-key keyboard, by name (its `code`, or for the numpad with NumLock off
/// `code:key`, e.g. `Numpad7:Home`).
pub fn us_keys() -> Vec<(&'static str, KeyDef)> {
    let mut keys: Vec<(&'static str, KeyDef)> = Vec::new();
    const LETTERS: [(&str, &str, &str); 26] = [
        ("a", "A", "KeyA"),
        ("b", "B", "KeyB"),
        ("c", "C", "KeyC"),
        ("d", "D", "KeyD"),
        ("e", "E", "KeyE"),
        ("f", "F", "KeyF"),
        ("g", "G", "KeyG"),
        ("h", "H", "KeyH"),
        ("i", "I", "KeyI"),
        ("j", "J", "KeyJ"),
        ("k", "K", "KeyK"),
        ("l", "L", "KeyL"),
        ("m", "M", "KeyM"),
        ("n", "N", "KeyN"),
        ("o", "O", "KeyO"),
        ("p", "P", "KeyP"),
        ("q", "Q", "KeyQ"),
        ("r", "R", "KeyR"),
        ("s", "S", "KeyS"),
        ("t", "T", "KeyT"),
        ("u", "U", "KeyU"),
        ("v", "V", "KeyV"),
        ("w", "W", "KeyW"),
        ("x", "X", "KeyX"),
        ("y", "Y", "KeyY"),
        ("z", "Z", "KeyZ"),
    ];
    for (i, (lower, upper, code)) in LETTERS.iter().enumerate() {
        keys.push((code, t(lower, upper, code, 65 + i as i64)));
    }
    const DIGITS: [(&str, &str, &str); 10] = [
        ("0", ")", "Digit0"),
        ("1", "!", "Digit1"),
        ("2", "@", "Digit2"),
        ("3", "#", "Digit3"),
        ("4", "$", "Digit4"),
        ("5", "%", "Digit5"),
        ("6", "^", "Digit6"),
        ("7", "&", "Digit7"),
        ("8", "*", "Digit8"),
        ("9", "(", "Digit9"),
    ];
    for (i, (digit, shifted, code)) in DIGITS.iter().enumerate() {
        keys.push((code, t(digit, shifted, code, 48 + i as i64)));
    }
    for def in [
        t("-", "_", "Minus", 189),
        t("=", "+", "Equal", 187),
        t("[", "{", "BracketLeft", 219),
        t("]", "}", "BracketRight", 221),
        t("\\", "|", "Backslash", 220),
        t(";", ":", "Semicolon", 186),
        t("'", "\"", "Quote", 222),
        t(",", "<", "Comma", 188),
        t(".", ">", "Period", 190),
        t("/", "?", "Slash", 191),
        t("`", "~", "Backquote", 192),
        t(" ", " ", "Space", 32),
        typing(k("Enter", "Enter", 13), "\r"),
        k("Tab", "Tab", 9),
        k("Backspace", "Backspace", 8),
        k("Escape", "Escape", 27),
        k("Insert", "Insert", 45),
        k("Delete", "Delete", 46),
        k("Home", "Home", 36),
        k("End", "End", 35),
        k("PageUp", "PageUp", 33),
        k("PageDown", "PageDown", 34),
        k("ArrowLeft", "ArrowLeft", 37),
        k("ArrowUp", "ArrowUp", 38),
        k("ArrowRight", "ArrowRight", 39),
        k("ArrowDown", "ArrowDown", 40),
        k("CapsLock", "CapsLock", 20),
        k("NumLock", "NumLock", 144),
        k("ScrollLock", "ScrollLock", 145),
        k("Pause", "Pause", 19),
        k("PrintScreen", "PrintScreen", 44),
        k("ContextMenu", "ContextMenu", 93),
        at(k("Shift", "ShiftLeft", 16), 1),
        at(k("Shift", "ShiftRight", 16), 2),
        at(k("Control", "ControlLeft", 17), 1),
        at(k("Control", "ControlRight", 17), 2),
        at(k("Alt", "AltLeft", 18), 1),
        at(k("Alt", "AltRight", 18), 2),
        at(k("Meta", "MetaLeft", 91), 1),
        at(k("Meta", "MetaRight", 92), 2),
        // The numpad with NumLock on.
        at(t("/", "/", "NumpadDivide", 111), 3),
        at(t("*", "*", "NumpadMultiply", 106), 3),
        at(t("-", "-", "NumpadSubtract", 109), 3),
        at(t("+", "+", "NumpadAdd", 107), 3),
        at(t(".", ".", "NumpadDecimal", 110), 3),
        at(typing(k("Enter", "NumpadEnter", 13), "\r"), 3),
    ] {
        keys.push((def.code, def));
    }
    const NUMPAD: [(&str, &str); 10] = [
        ("0", "Numpad0"),
        ("1", "Numpad1"),
        ("2", "Numpad2"),
        ("3", "Numpad3"),
        ("4", "Numpad4"),
        ("5", "Numpad5"),
        ("6", "Numpad6"),
        ("7", "Numpad7"),
        ("8", "Numpad8"),
        ("9", "Numpad9"),
    ];
    for (i, (digit, code)) in NUMPAD.iter().enumerate() {
        keys.push((code, at(t(digit, digit, code, 96 + i as i64), 3)));
    }
    // The numpad with NumLock off: navigation keys on keypad codes.
    for (name, key, code, key_code) in [
        ("Numpad0:Insert", "Insert", "Numpad0", 45),
        ("Numpad1:End", "End", "Numpad1", 35),
        ("Numpad2:ArrowDown", "ArrowDown", "Numpad2", 40),
        ("Numpad3:PageDown", "PageDown", "Numpad3", 34),
        ("Numpad4:ArrowLeft", "ArrowLeft", "Numpad4", 37),
        ("Numpad5:Clear", "Clear", "Numpad5", 12),
        ("Numpad6:ArrowRight", "ArrowRight", "Numpad6", 39),
        ("Numpad7:Home", "Home", "Numpad7", 36),
        ("Numpad8:ArrowUp", "ArrowUp", "Numpad8", 38),
        ("Numpad9:PageUp", "PageUp", "Numpad9", 33),
        ("NumpadDecimal:Delete", "Delete", "NumpadDecimal", 46),
    ] {
        keys.push((name, at(k(key, code, key_code), 3)));
    }
    const F_KEYS: [&str; 24] = [
        "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F10", "F11", "F12", "F13", "F14",
        "F15", "F16", "F17", "F18", "F19", "F20", "F21", "F22", "F23", "F24",
    ];
    for (i, name) in F_KEYS.iter().enumerate() {
        keys.push((name, k(name, name, 112 + i as i64)));
    }
    keys
}

/// The key named `name` (see [`us_keys`]).
pub fn us_key(name: &str) -> KeyDef {
    us_keys()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no key {name:?} on a US keyboard"))
        .1
}

/// The key (and whether Shift is needed) that types `c` on a US keyboard.
pub fn key_for_char(c: char) -> (&'static str, bool) {
    for (name, def) in us_keys() {
        if def.location != 0 {
            continue;
        }
        if def.text.is_some() && def.key.chars().eq([c]) {
            return (name, false);
        }
        if def.shift_key.is_some_and(|s| s.chars().eq([c])) {
            return (name, true);
        }
    }
    if c == '\n' {
        return ("Enter", false);
    }
    panic!("no US key types {c:?}")
}

pub const ALT: i64 = 1;
pub const CTRL: i64 = 2;
pub const META: i64 = 4;
pub const SHIFT: i64 = 8;

fn modifier_bit(key: &str) -> i64 {
    match key {
        "Alt" => ALT,
        "Control" => CTRL,
        "Meta" => META,
        "Shift" => SHIFT,
        _ => 0,
    }
}

/// What a test does with the keyboard.
#[derive(Debug, Clone)]
pub enum Step {
    /// Down then up.
    Press(&'static str),
    Down(&'static str),
    Up(&'static str),
    /// Down, `n` auto-repeated downs (a key held), then up.
    Hold(&'static str, usize),
    /// A key that is not in the US table (dead keys, a layout's accented letters), pressed.
    PressDef(KeyDef),
    /// `Input.insertText`: text from an IME, an emoji picker, a paste…
    InsertText(&'static str),
    /// `Input.imeSetComposition`: the IME's composing text with the caret/selection in it.
    Compose(&'static str, i64, i64),
}

impl Step {
    pub fn label(&self) -> String {
        format!("{self:?}")
    }
}

/// A keyboard plugged into one page: tracks the modifiers held.
pub struct Keyboard<'a> {
    page: &'a Page,
    modifiers: i64,
}

impl<'a> Keyboard<'a> {
    pub fn new(page: &'a Page) -> Self {
        Keyboard { page, modifiers: 0 }
    }

    async fn send(&self, params: DispatchKeyEventParams) {
        tokio::time::timeout(super::WAIT, self.page.execute(params))
            .await
            .expect("key event in time")
            .expect("key event");
    }

    pub async fn down_def(&mut self, def: KeyDef, repeat: bool) {
        self.modifiers |= modifier_bit(def.key);
        let shift = self.modifiers & SHIFT != 0;
        let key = match def.shift_key {
            Some(shifted) if shift => shifted,
            _ => def.key,
        };
        let text = match def.text {
            // Only Shift may be held for a key to type.
            Some(_) if self.modifiers & !SHIFT != 0 => None,
            Some(_) if def.shift_key.is_some() => Some(key),
            other => other,
        };
        let mut params = DispatchKeyEventParams::builder()
            .r#type(if text.is_some() {
                DispatchKeyEventType::KeyDown
            } else {
                DispatchKeyEventType::RawKeyDown
            })
            .modifiers(self.modifiers)
            .windows_virtual_key_code(def.key_code)
            .code(def.code)
            .key(key)
            .auto_repeat(repeat)
            .location(def.location)
            .is_keypad(def.location == 3);
        if let Some(text) = text {
            params = params.text(text).unmodified_text(text);
        }
        self.send(params.build().expect("key down")).await;
    }

    pub async fn up_def(&mut self, def: KeyDef) {
        self.modifiers &= !modifier_bit(def.key);
        let key = match def.shift_key {
            Some(shifted) if self.modifiers & SHIFT != 0 => shifted,
            _ => def.key,
        };
        let params = DispatchKeyEventParams::builder()
            .r#type(DispatchKeyEventType::KeyUp)
            .modifiers(self.modifiers)
            .windows_virtual_key_code(def.key_code)
            .code(def.code)
            .key(key)
            .location(def.location)
            .is_keypad(def.location == 3);
        self.send(params.build().expect("key up")).await;
    }

    pub async fn press(&mut self, name: &str) {
        let def = us_key(name);
        self.down_def(def, false).await;
        self.up_def(def).await;
    }

    /// Types `text` key by key, holding Shift where a character needs it.
    pub async fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            let (name, shift) = key_for_char(c);
            if shift {
                self.down_def(us_key("ShiftLeft"), false).await;
            }
            self.press(name).await;
            if shift {
                self.up_def(us_key("ShiftLeft")).await;
            }
        }
    }

    pub async fn step(&mut self, step: &Step) {
        match step {
            Step::Press(name) => self.press(name).await,
            Step::Down(name) => self.down_def(us_key(name), false).await,
            Step::Up(name) => self.up_def(us_key(name)).await,
            Step::Hold(name, n) => {
                let def = us_key(name);
                self.down_def(def, false).await;
                for _ in 0..*n {
                    self.down_def(def, true).await;
                }
                self.up_def(def).await;
            }
            Step::PressDef(def) => {
                self.down_def(*def, false).await;
                self.up_def(*def).await;
            }
            Step::InsertText(text) => {
                tokio::time::timeout(super::WAIT, self.page.execute(InsertTextParams::new(*text)))
                    .await
                    .expect("insertText in time")
                    .expect("insertText");
            }
            Step::Compose(text, start, end) => {
                let params = ImeSetCompositionParams::new(*text, *start, *end);
                tokio::time::timeout(super::WAIT, self.page.execute(params))
                    .await
                    .expect("imeSetComposition in time")
                    .expect("imeSetComposition");
            }
        }
    }

    /// The sentinel the key-log page waits for: F24 with Ctrl+Alt+Shift+Meta. The page posts its
    /// log when it is released; every key before it has been handled by then.
    pub async fn sentinel(&mut self) {
        for m in ["ControlLeft", "AltLeft", "ShiftLeft", "MetaLeft"] {
            self.down_def(us_key(m), false).await;
        }
        self.press("F24").await;
        for m in ["MetaLeft", "ShiftLeft", "AltLeft", "ControlLeft"] {
            self.up_def(us_key(m)).await;
        }
    }
}

/// A dead key (´ on a US-International layout): no text of its own.
pub const DEAD_ACUTE: KeyDef = KeyDef {
    key: "Dead",
    code: "Quote",
    key_code: 222,
    text: None,
    location: 0,
    shift_key: None,
};

/// What the key after a dead key types on Windows-style layouts: é from the E key.
pub const E_ACUTE: KeyDef = KeyDef {
    key: "é",
    code: "KeyE",
    key_code: 69,
    text: Some("é"),
    location: 0,
    shift_key: Some("É"),
};

/// Keys a browser keeps for itself, so they never reach a page (and cannot reach the viewer):
/// closing, opening and switching tabs and windows.
pub fn browser_reserved(name: &str, modifiers: i64) -> bool {
    let ctrl = modifiers & CTRL != 0;
    (ctrl
        && matches!(
            name,
            "KeyW" | "KeyT" | "KeyN" | "KeyQ" | "Tab" | "PageUp" | "PageDown"
        ))
        || (modifiers & ALT != 0 && name == "F4")
}

/// Keys the viewer deliberately keeps local (`isReservedKey` and `isPasteKey` in
/// viewer/js/input.js): reload, fullscreen and developer tools (Ctrl/Meta+Shift+I/J/C; the
/// server refuses those and Meta+Alt+I/J/C too, see `input::browser_shortcut`), and paste
/// (Ctrl/Meta+V without Alt: the participant's own clipboard goes to the page as text; tested in
/// viewer_e2e.rs).
pub fn viewer_reserved(name: &str, modifiers: i64) -> bool {
    matches!(name, "F5" | "F11" | "F12")
        || (modifiers & (CTRL | META) != 0 && modifiers & ALT == 0 && name == "KeyV")
        || (modifiers & (CTRL | META) != 0
            && modifiers & SHIFT != 0
            && matches!(name, "KeyI" | "KeyJ" | "KeyC"))
        || (modifiers & META != 0
            && modifiers & ALT != 0
            && matches!(name, "KeyI" | "KeyJ" | "KeyC"))
}

/// The long, broad key sequence of the differential test.
pub fn full_sequence() -> Vec<Step> {
    use Step::*;
    let mut s: Vec<Step> = Vec::new();
    let type_str = |s: &mut Vec<Step>, text: &'static str| {
        for c in text.chars() {
            let (name, shift) = key_for_char(c);
            if shift {
                s.push(Down("ShiftLeft"));
            }
            s.push(Press(name));
            if shift {
                s.push(Up("ShiftLeft"));
            }
        }
    };
    // Text, every printable key, unshifted and shifted (both Shift keys).
    type_str(
        &mut s,
        "The quick brown fox jumps over the lazy dog 0123456789\n",
    );
    type_str(&mut s, "-=[]\\;',./` ~!@#$%^&*()_+{}|:\"<>?\n");
    s.push(Down("ShiftRight"));
    for name in ["KeyQ", "Digit2", "Slash", "Quote", "Space", "Backquote"] {
        s.push(Press(name));
    }
    s.push(Up("ShiftRight"));
    s.push(Press("Enter"));
    s.push(Down("ShiftLeft"));
    s.push(Press("Enter"));
    s.push(Up("ShiftLeft"));
    s.push(Press("NumpadEnter"));
    // The numpad, NumLock on, then off.
    for name in [
        "Numpad0",
        "Numpad1",
        "Numpad2",
        "Numpad3",
        "Numpad4",
        "Numpad5",
        "Numpad6",
        "Numpad7",
        "Numpad8",
        "Numpad9",
        "NumpadDecimal",
        "NumpadAdd",
        "NumpadSubtract",
        "NumpadMultiply",
        "NumpadDivide",
        "NumLock",
        "Numpad7:Home",
        "Numpad1:End",
        "Numpad4:ArrowLeft",
        "Numpad6:ArrowRight",
        "Numpad8:ArrowUp",
        "Numpad2:ArrowDown",
        "Numpad9:PageUp",
        "Numpad3:PageDown",
        "Numpad5:Clear",
        "Numpad0:Insert",
        "NumpadDecimal:Delete",
        "NumLock",
    ] {
        s.push(Press(name));
    }
    // Navigation and editing keys, alone and with Shift, Ctrl, Ctrl+Shift.
    type_str(&mut s, "alpha beta gamma delta\n");
    let nav = [
        "ArrowLeft",
        "ArrowLeft",
        "ArrowRight",
        "ArrowUp",
        "ArrowDown",
        "Home",
        "End",
        "PageUp",
        "PageDown",
        "Insert",
    ];
    for mods in [
        &[][..],
        &["ShiftLeft"][..],
        &["ControlLeft"][..],
        &["ControlLeft", "ShiftLeft"][..],
    ] {
        let bits = mods
            .iter()
            .map(|m| modifier_bit(us_key(m).key))
            .fold(0, |a, b| a | b);
        for m in mods {
            s.push(Down(m));
        }
        for name in nav {
            if !browser_reserved(name, bits) {
                s.push(Press(name));
            }
        }
        for m in mods.iter().rev() {
            s.push(Up(m));
        }
        type_str(&mut s, "x");
    }
    // Shift+arrows select, typing replaces; Shift+Home/End.
    s.push(Down("ShiftLeft"));
    for name in ["ArrowLeft", "ArrowLeft", "ArrowLeft", "ArrowRight"] {
        s.push(Press(name));
    }
    s.push(Up("ShiftLeft"));
    type_str(&mut s, "REPLACED");
    for (m, name) in [
        ("ShiftLeft", "Home"),
        ("ShiftRight", "End"),
        ("ShiftLeft", "ArrowUp"),
    ] {
        s.push(Down(m));
        s.push(Press(name));
        s.push(Up(m));
    }
    s.push(Press("ArrowRight"));
    // Word moves and word deletes.
    type_str(&mut s, " one two three four five six");
    for name in [
        "ArrowLeft",
        "ArrowLeft",
        "ArrowRight",
        "Backspace",
        "ArrowLeft",
        "Delete",
        "Home",
        "End",
    ] {
        s.push(Down("ControlLeft"));
        s.push(Press(name));
        s.push(Up("ControlLeft"));
    }
    s.push(Down("ControlRight"));
    s.push(Press("ArrowLeft"));
    s.push(Press("Backspace"));
    s.push(Up("ControlRight"));
    s.push(Press("Backspace"));
    s.push(Press("Delete"));
    // Select all, type over it, undo and redo three ways.
    type_str(&mut s, "\nkeep this line\n");
    s.push(Down("ControlLeft"));
    s.push(Press("KeyA"));
    s.push(Up("ControlLeft"));
    type_str(&mut s, "fresh start");
    for (mods, name) in [
        (&["ControlLeft"][..], "KeyZ"),
        (&["ControlLeft"][..], "KeyZ"),
        (&["ControlLeft", "ShiftLeft"][..], "KeyZ"),
        (&["ControlLeft"][..], "KeyZ"),
        (&["ControlLeft"][..], "KeyY"),
    ] {
        for m in mods {
            s.push(Down(m));
        }
        s.push(Press(name));
        for m in mods.iter().rev() {
            s.push(Up(m));
        }
    }
    // Clipboard keys the page sees: copy everything, then cut the last word. (Paste is the
    // participant's own clipboard, kept local by the viewer: see `viewer_reserved`.)
    for name in ["KeyA", "KeyC", "End"] {
        s.push(Down("ControlLeft"));
        s.push(Press(name));
        s.push(Up("ControlLeft"));
    }
    s.push(Down("ControlLeft"));
    s.push(Down("ShiftLeft"));
    s.push(Press("ArrowLeft"));
    s.push(Up("ShiftLeft"));
    s.push(Press("KeyX"));
    s.push(Up("ControlLeft"));
    // Held keys repeat: a letter, Backspace, Shift+ArrowLeft, Space.
    s.push(Hold("KeyK", 6));
    s.push(Hold("Backspace", 3));
    s.push(Down("ShiftLeft"));
    s.push(Hold("ArrowLeft", 4));
    s.push(Up("ShiftLeft"));
    s.push(Hold("Space", 2));
    // Rollover: the next key goes down before the previous one is up.
    s.push(Down("KeyR"));
    s.push(Down("KeyO"));
    s.push(Up("KeyR"));
    s.push(Down("KeyL"));
    s.push(Up("KeyO"));
    s.push(Up("KeyL"));
    // Modifier keys alone, lock keys, and keys that type nothing.
    for name in [
        "ShiftLeft",
        "ShiftRight",
        "ControlLeft",
        "ControlRight",
        "AltLeft",
        "AltRight",
        "MetaLeft",
        "MetaRight",
        "CapsLock",
        "CapsLock",
        "ScrollLock",
        "ScrollLock",
        "Pause",
        "PrintScreen",
        "ContextMenu",
        "Escape",
    ] {
        s.push(Press(name));
    }
    // Function keys, alone and with modifiers (F5, F11, F12 stay with the viewer's browser).
    for i in 1..=24 {
        let name: &'static str = [
            "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F10", "F11", "F12", "F13",
            "F14", "F15", "F16", "F17", "F18", "F19", "F20", "F21", "F22", "F23", "F24",
        ][i - 1];
        if viewer_reserved(name, 0) {
            continue;
        }
        s.push(Press(name));
    }
    for (m, name) in [
        ("ShiftLeft", "F1"),
        ("ControlLeft", "F2"),
        ("AltLeft", "F3"),
        ("MetaLeft", "F6"),
        ("ShiftRight", "F10"),
    ] {
        s.push(Down(m));
        s.push(Press(name));
        s.push(Up(m));
    }
    // Every letter, digit and punctuation key with each modifier combination a page can see.
    let printable: Vec<&'static str> = us_keys()
        .into_iter()
        .filter(|(_, d)| d.location == 0 && d.text.is_some() && d.code != "Enter")
        .map(|(n, _)| n)
        .collect();
    let combos: [&[&'static str]; 9] = [
        &["ControlLeft"],
        &["AltLeft"],
        &["MetaLeft"],
        &["ControlLeft", "ShiftLeft"],
        &["AltRight", "ShiftRight"],
        &["ControlRight", "AltLeft"],
        &["MetaRight", "ShiftLeft"],
        &["ControlLeft", "AltLeft", "ShiftLeft"],
        &["ControlLeft", "AltLeft", "MetaLeft", "ShiftLeft"],
    ];
    for mods in combos {
        let bits = mods
            .iter()
            .map(|m| modifier_bit(us_key(m).key))
            .fold(0, |a, b| a | b);
        for m in mods {
            s.push(Down(m));
        }
        for name in &printable {
            // Editing shortcuts are exercised above; here they would only scramble the text.
            let editing =
                bits & CTRL != 0 && matches!(*name, "KeyA" | "KeyX" | "KeyV" | "KeyZ" | "KeyY");
            if browser_reserved(name, bits) || viewer_reserved(name, bits) || editing {
                continue;
            }
            s.push(Press(name));
        }
        for m in mods.iter().rev() {
            s.push(Up(m));
        }
    }
    // Other keys with modifiers: Alt+arrows, Ctrl+Enter, Shift+Tab…
    for (mods, name) in [
        (&["AltLeft"][..], "ArrowLeft"),
        (&["AltLeft"][..], "ArrowRight"),
        (&["ControlLeft"][..], "Enter"),
        (&["AltLeft"][..], "Enter"),
        (&["MetaLeft"][..], "Enter"),
        (&["ShiftLeft"][..], "Backspace"),
        (&["ShiftLeft"][..], "Delete"),
        (&["ControlLeft"][..], "Insert"),
        (&["ShiftLeft"][..], "Insert"),
        (&["ShiftLeft"][..], "Escape"),
        (&["ShiftLeft"][..], "Space"),
        (&["ControlLeft"][..], "Space"),
        (&["ControlLeft"][..], "Numpad5"),
        (&["ShiftLeft"][..], "Numpad5"),
        (&["AltLeft"][..], "NumpadAdd"),
        (&["ControlLeft"][..], "Escape"),
    ] {
        for m in mods {
            s.push(Down(m));
        }
        s.push(Press(name));
        for m in mods.iter().rev() {
            s.push(Up(m));
        }
    }
    // A modifier released before the key it modified (the order a hand often uses).
    s.push(Down("MetaLeft"));
    s.push(Down("KeyB"));
    s.push(Up("MetaLeft"));
    s.push(Up("KeyB"));
    s.push(Down("ControlLeft"));
    s.push(Down("KeyG"));
    s.push(Up("ControlLeft"));
    s.push(Up("KeyG"));
    s.push(Down("ShiftLeft"));
    s.push(Down("KeyH"));
    s.push(Up("ShiftLeft"));
    s.push(Up("KeyH"));
    // Text no US key types: accented letters, other scripts, emoji.
    type_str(&mut s, "\n");
    s.push(InsertText("héllo wörld ñ ç ß"));
    s.push(InsertText("Ελληνικά кириллица עברית"));
    s.push(InsertText("日本語 中文 한국어"));
    s.push(InsertText("🙂👍🏽👨‍👩‍👧"));
    // A dead key then E, as Windows-style layouts deliver é.
    s.push(PressDef(DEAD_ACUTE));
    s.push(PressDef(E_ACUTE));
    s.push(Down("ShiftLeft"));
    s.push(PressDef(DEAD_ACUTE));
    s.push(PressDef(E_ACUTE));
    s.push(Up("ShiftLeft"));
    // An IME composition, committed: にほん → 日本.
    type_str(&mut s, " ");
    s.push(Compose("に", 1, 1));
    s.push(Compose("にほ", 2, 2));
    s.push(Compose("にほん", 3, 3));
    s.push(Compose("日本", 0, 2));
    s.push(InsertText("日本"));
    // A composition cancelled.
    s.push(Compose("か", 1, 1));
    s.push(Compose("かん", 2, 2));
    s.push(Compose("", 0, 0));
    // A dead key composed (as macOS/Linux layouts do it): ´ then é.
    s.push(Compose("´", 1, 1));
    s.push(InsertText("é"));
    // Keys right after a composition still work.
    type_str(&mut s, "ok");
    s.push(Compose("한", 1, 1));
    s.push(Compose("한글", 2, 2));
    s.push(InsertText("한글"));
    type_str(&mut s, "!");
    // Tab moves focus to the next field and Shift+Tab back; Enter in a one-line field.
    s.push(Press("Tab"));
    type_str(&mut s, "field");
    s.push(Press("Enter"));
    s.push(Press("Backspace"));
    s.push(Down("ShiftLeft"));
    s.push(Press("Tab"));
    s.push(Up("ShiftLeft"));
    s.push(Down("ControlLeft"));
    s.push(Press("End"));
    s.push(Up("ControlLeft"));
    type_str(&mut s, " end.");
    s
}

/// The key-log page: a textarea (focused) and a one-line field after it.
pub fn keylog_page() -> &'static str {
    r#"<body style="margin:0;background:#fff">
<textarea id=t autofocus style="position:absolute;left:20px;top:20px;width:600px;height:240px;font:14px monospace"></textarea>
<input id=f style="position:absolute;left:20px;top:300px;width:300px;font:14px monospace">
<script>
const t = document.getElementById('t');
const f = document.getElementById('f');
const log = [];
const MODS = ['Shift', 'Control', 'Alt', 'Meta', 'AltGraph', 'CapsLock', 'NumLock', 'ScrollLock', 'Fn', 'Symbol'];
// Shortcuts that edit text; any other Ctrl/Alt/Meta combination or F-key is the page's (its
// default, a browser command, is prevented), as a web app with its own shortcuts would do.
const EDITING = new Set(['KeyA', 'KeyC', 'KeyX', 'KeyV', 'KeyZ', 'KeyY', 'ArrowLeft', 'ArrowRight',
  'ArrowUp', 'ArrowDown', 'Home', 'End', 'Backspace', 'Delete', 'Insert', 'Enter', 'Space']);
const state = () => ({ focus: document.activeElement ? document.activeElement.id : null,
  value: t.value, start: t.selectionStart, end: t.selectionEnd, dir: t.selectionDirection,
  field: f.value, fieldStart: f.selectionStart, fieldEnd: f.selectionEnd });
const target = (e) => e.target.id || e.target.nodeName;
for (const type of ['keydown', 'keypress', 'keyup']) {
  document.addEventListener(type, (e) => {
    if (type === 'keydown' && ((e.ctrlKey && !EDITING.has(e.code)) || e.altKey || e.metaKey || /^F\d+$/.test(e.key))) {
      e.preventDefault();
    }
    const entry = { type, target: target(e), key: e.key, code: e.code, keyCode: e.keyCode, which: e.which,
      charCode: e.charCode, location: e.location, repeat: e.repeat, shift: e.shiftKey, ctrl: e.ctrlKey,
      alt: e.altKey, meta: e.metaKey, mods: MODS.filter((m) => e.getModifierState(m)).join('+'),
      isComposing: e.isComposing };
    // After a key's default action: where the caret is (the text itself is logged with each input).
    if (type === 'keyup') Object.assign(entry, { focus: state().focus, start: t.selectionStart, end: t.selectionEnd, length: t.value.length });
    log.push(entry);
    if (type === 'keyup' && e.code === 'F24' && e.ctrlKey && e.altKey && e.shiftKey && e.metaKey) {
      report({ type: 'keylog', events: log, final: state() });
    }
  }, true);
}
for (const type of ['beforeinput', 'input']) {
  document.addEventListener(type, (e) => {
    const entry = { type, target: target(e), inputType: e.inputType, data: e.data, isComposing: e.isComposing };
    if (type === 'input') Object.assign(entry, state());
    log.push(entry);
  }, true);
}
for (const type of ['compositionstart', 'compositionupdate', 'compositionend']) {
  document.addEventListener(type, (e) => log.push({ type, target: target(e), data: e.data }), true);
}
for (const type of ['cut', 'copy', 'paste', 'contextmenu']) {
  document.addEventListener(type, (e) => {
    if (type === 'contextmenu') e.preventDefault();
    log.push({ type, target: target(e) });
  }, true);
}
window.keylog = log;
</script></body>"#
}
