//! A Playwright test (`@playwright/test`) that replays a recording's inputs (`docs/recording.md`):
//! from the start URL, with the session's viewport, each participant's clicks, drags, wheel
//! turns, keys and the session actions (navigate, back, a `<select>` choice, dialog answers),
//! then checks the final URL and the last values of the final page's fields.
//!
//! The recording is untrusted, and the script is code someone will run: every string from it
//! enters the script as a JSON string literal (serde_json, plus the two line separators JSON
//! leaves raw), and every comment built from it is one line with no `*/`. Steps are capped at
//! [`MAX_STEPS`].

use std::fmt::Write as _;

use super::event::{Actor, Button, Event, InputRecord};
use super::read::{page_url, Recording};

/// Most steps a script gets; a longer recording's script stops there, with a comment.
pub const MAX_STEPS: usize = 5000;
/// A press and a release at most this far apart (CSS px) are a click, farther a drag.
const CLICK_SLOP: f64 = 5.0;
/// A `target` event describes a press if it comes this soon after it (ms)…
const TARGET_WINDOW_MS: u32 = 1000;
/// …at the same spot, give or take this (CSS px).
const TARGET_SLOP: f64 = 2.0;
/// A `field` event of a select this soon after a `choose` (ms) gives the chosen value.
const CHOOSE_WINDOW_MS: u32 = 1000;

/// CDP's modifier bits.
const ALT: u8 = 1;
const CTRL: u8 = 2;
const META: u8 = 4;
const SHIFT: u8 = 8;

/// Named keys Playwright's keyboard knows (its US layout); others cannot be pressed by name.
const NAMED_KEYS: &[&str] = &[
    "Enter",
    "Tab",
    "Backspace",
    "Delete",
    "Escape",
    "ArrowUp",
    "ArrowDown",
    "ArrowLeft",
    "ArrowRight",
    "Home",
    "End",
    "PageUp",
    "PageDown",
    "Insert",
    "F1",
    "F2",
    "F3",
    "F4",
    "F5",
    "F6",
    "F7",
    "F8",
    "F9",
    "F10",
    "F11",
    "F12",
];

/// Keys that only modify others (their state is in each key's modifiers), and those whose effect
/// arrives as another input (a dead key's or an IME's text is a `text` or a later key).
const SILENT_KEYS: &[&str] = &[
    "Shift",
    "Control",
    "Alt",
    "Meta",
    "AltGraph",
    "CapsLock",
    "Dead",
    "Process",
    "Unidentified",
];

/// One step of the script.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Click {
        selector: Option<String>,
        x: f64,
        y: f64,
        button: Button,
        count: u8,
        modifiers: u8,
    },
    Drag {
        from: (f64, f64),
        to: (f64, f64),
        button: Button,
    },
    Type(String),
    /// A run of redacted keys.
    MaskedKeys(usize),
    InsertText(String),
    MaskedText,
    Press(String),
    Wheel {
        x: f64,
        y: f64,
        dx: f64,
        dy: f64,
    },
    Goto(String),
    Back,
    Forward,
    Reload,
    Select {
        selector: String,
        value: String,
    },
    /// The page got to this URL before the next step (a click navigated): wait for it.
    WaitUrl(String),
    /// Something not reproduced, said in a comment.
    Note(String),
}

struct Item {
    t: u32,
    who: String,
    step: Step,
}

/// A press waiting for its release.
struct Press {
    index: usize,
    t: u32,
    x: f64,
    y: f64,
    button: Button,
    count: u8,
    modifiers: u8,
}

/// A field's last recorded state.
struct FieldState {
    selector: String,
    input_type: String,
    value: String,
    checked: Option<bool>,
}

/// The script replaying `rec`'s inputs.
pub fn script(rec: &Recording) -> String {
    let plan = Plan::build(rec);
    plan.render(rec)
}

#[derive(Default)]
struct Plan {
    items: Vec<Item>,
    dialogs: Vec<bool>,
    cut: bool,
    fields: Vec<FieldState>,
}

impl Plan {
    fn build(rec: &Recording) -> Plan {
        let mut plan = Plan::default();
        let events = &rec.events;
        let mut press: Option<Press> = None;
        let mut used_targets = vec![false; events.len()];
        let mut url = rec.meta.start_url.clone();
        let mut wait_for: Option<String> = None;
        let mut last_select: Option<String> = None;
        for (index, (t, event)) in events.iter().enumerate() {
            if plan.items.len() >= MAX_STEPS {
                plan.cut = true;
                break;
            }
            let t = *t;
            // Before the next step that acts on the page, wait for the page the session had
            // got to (a click that navigated, say).
            let mut step = |plan: &mut Plan, by: &Actor, step: Step| {
                if !matches!(step, Step::Note(_)) {
                    if let Some(u) = wait_for.take() {
                        plan.push(t, by, Step::WaitUrl(u));
                    }
                }
                plan.push(t, by, step);
            };
            match event {
                Event::Server { message } => {
                    if let Some(new) = page_url(message) {
                        if without_fragment(new) != without_fragment(&url) {
                            // Another document: the fields seen so far are gone.
                            plan.fields.clear();
                        }
                        if new != url {
                            wait_for = Some(new.to_string());
                            url = new.to_string();
                        }
                    }
                }
                Event::Field {
                    selector: Some(selector),
                    tag,
                    input_type,
                    value,
                    checked,
                    masked,
                } => {
                    plan.fields.retain(|f| f.selector != *selector);
                    if let (Some(value), false) = (value, masked) {
                        plan.fields.push(FieldState {
                            selector: selector.clone(),
                            input_type: if tag == "input" {
                                input_type.clone()
                            } else {
                                tag.clone()
                            },
                            value: value.clone(),
                            checked: *checked,
                        });
                    }
                }
                Event::Input { by, input } => match input {
                    InputRecord::Mouse {
                        action,
                        x,
                        y,
                        button,
                        click_count,
                        modifiers,
                    } => match action.as_str() {
                        "pressed" if *button != Button::None => {
                            press = Some(Press {
                                index,
                                t,
                                x: *x,
                                y: *y,
                                button: *button,
                                count: *click_count,
                                modifiers: *modifiers,
                            });
                        }
                        "released" => {
                            let Some(p) = press.take_if(|p| p.button == *button) else {
                                continue;
                            };
                            if (x - p.x).hypot(y - p.y) > CLICK_SLOP {
                                step(
                                    &mut plan,
                                    by,
                                    Step::Drag {
                                        from: (p.x, p.y),
                                        to: (*x, *y),
                                        button: p.button,
                                    },
                                );
                                continue;
                            }
                            let target = find_target(events, &p, &mut used_targets);
                            if let Some((selector, tag)) = &target {
                                if tag == "select" {
                                    last_select = Some(selector.clone());
                                }
                            }
                            step(
                                &mut plan,
                                by,
                                Step::Click {
                                    selector: target.map(|(s, _)| s),
                                    x: p.x,
                                    y: p.y,
                                    button: p.button,
                                    count: p.count.max(1),
                                    modifiers: p.modifiers,
                                },
                            );
                        }
                        _ => {}
                    },
                    InputRecord::Wheel {
                        x,
                        y,
                        delta_x,
                        delta_y,
                        ..
                    } => step(
                        &mut plan,
                        by,
                        Step::Wheel {
                            x: *x,
                            y: *y,
                            dx: *delta_x,
                            dy: *delta_y,
                        },
                    ),
                    InputRecord::Key {
                        action,
                        key,
                        text,
                        modifiers,
                        redacted,
                        ..
                    } if action == "down" => {
                        if let Some(s) = key_step(key, text.as_deref(), *modifiers, *redacted) {
                            step(&mut plan, by, s);
                        }
                    }
                    InputRecord::Text { text, redacted } => {
                        let s = if *redacted {
                            Step::MaskedText
                        } else {
                            Step::InsertText(text.clone())
                        };
                        step(&mut plan, by, s);
                    }
                    _ => {}
                },
                Event::Action {
                    by,
                    action,
                    url: to,
                    accept,
                    index: option,
                    ..
                } => {
                    let s = match action.as_str() {
                        "navigate" => match to {
                            Some(to) => Step::Goto(to.clone()),
                            None => {
                                Step::Note("navigated (no URL recorded): not reproduced".into())
                            }
                        },
                        "back" => Step::Back,
                        "forward" => Step::Forward,
                        "reload" => Step::Reload,
                        "dialog" => {
                            let accept = accept.unwrap_or(true);
                            plan.dialogs.push(accept);
                            Step::Note(format!(
                                "{} a dialog (answered by the dialog handler above)",
                                if accept { "accepted" } else { "dismissed" }
                            ))
                        }
                        "choose" => choose_step(events, index, t, last_select.as_deref(), *option),
                        other => Step::Note(format!(
                            "{}: not reproduced by this script",
                            match other {
                                "tab-switch" => "switched tabs",
                                "tab-new" => "opened a tab",
                                "tab-close" => "closed a tab",
                                "upload" => "uploaded files",
                                "pick" => "picked a date, time or colour",
                                _ => "a session action",
                            }
                        )),
                    };
                    let s = match (s, action.as_str()) {
                        (Step::Note(n), a) if !matches!(a, "dialog") => {
                            Step::Note(format!("{n} (action {})", comment(a)))
                        }
                        (s, _) => s,
                    };
                    step(&mut plan, by, s);
                }
                _ => {}
            }
        }
        plan
    }

    /// Adds a step, merging it into the previous one where a run continues (typing, masked
    /// keys, wheel turns, the second click of a double click).
    fn push(&mut self, t: u32, by: &Actor, step: Step) {
        let who = who(by);
        if let Some(last) = self.items.last_mut().filter(|l| l.who == who) {
            match (&mut last.step, &step) {
                (Step::Type(run), Step::Type(more)) => {
                    run.push_str(more);
                    return;
                }
                (Step::MaskedKeys(n), Step::MaskedKeys(more)) => {
                    *n += more;
                    return;
                }
                (
                    Step::Wheel { dx, dy, .. },
                    Step::Wheel {
                        dx: more_x,
                        dy: more_y,
                        ..
                    },
                ) => {
                    *dx += more_x;
                    *dy += more_y;
                    return;
                }
                (
                    Step::Click {
                        selector,
                        x,
                        y,
                        button,
                        count,
                        ..
                    },
                    Step::Click {
                        selector: s2,
                        x: x2,
                        y: y2,
                        button: b2,
                        count: c2,
                        ..
                    },
                ) if *c2 == *count + 1
                    && button == b2
                    && selector == s2
                    && (*x - x2).hypot(*y - y2) <= CLICK_SLOP =>
                {
                    // CDP reports a double click as a click then a press with clickCount 2.
                    *count = *c2;
                    return;
                }
                (Step::WaitUrl(a), Step::WaitUrl(b)) => {
                    a.clone_from(b);
                    return;
                }
                _ => {}
            }
        }
        self.items.push(Item { t, who, step });
    }

    fn render(&self, rec: &Recording) -> String {
        let meta = &rec.meta;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "// Replays cobrowse recording {} (session {}, started {}): the participants'",
            comment(&meta.id),
            comment(&meta.session),
            super::bundle::rfc3339(meta.started_at),
        );
        out.push_str(
            "// inputs from the start URL, then checks where the session ended.\n\
             // Run: npm i -D @playwright/test && npx playwright test repro.spec.ts\n\
             // Text typed into masked fields is not in the recording: set COBROWSE_MASKED_TEXT\n\
             // to the text to type there. Inputs follow each other without the recorded pauses.\n\
             import { test, expect } from '@playwright/test';\n\n",
        );
        let scale = if meta.scale.is_finite() && meta.scale > 0.0 && meta.scale <= 8.0 {
            meta.scale
        } else {
            1.0
        };
        let _ = writeln!(
            out,
            "test.use({{ viewport: {{ width: {}, height: {} }}, deviceScaleFactor: {} }});\n",
            meta.viewport[0].clamp(1, 16_384),
            meta.viewport[1].clamp(1, 16_384),
            num(scale),
        );
        let _ = writeln!(
            out,
            "test({}, async ({{ page }}) => {{",
            js(&format!("replays recording {}", meta.id))
        );
        if !self.dialogs.is_empty() {
            let answers: Vec<&str> = self
                .dialogs
                .iter()
                .map(|&a| if a { "true" } else { "false" })
                .collect();
            let _ = writeln!(
                out,
                "  // The dialogs' answers, in order (true: accepted); any further dialog is dismissed.\n  \
                 const dialogAnswers: boolean[] = [{}];\n  \
                 page.on('dialog', async (dialog) => {{\n    \
                 if (dialogAnswers.shift() === true) await dialog.accept();\n    \
                 else await dialog.dismiss();\n  \
                 }});",
                answers.join(", ")
            );
        }
        let _ = writeln!(out, "  await page.goto({});", js(&meta.start_url));
        for item in &self.items {
            let _ = writeln!(out, "  // {}, {}", seconds(item.t), item.who);
            render_step(&mut out, &item.step);
        }
        if self.cut {
            let _ = writeln!(
                out,
                "  // The recording has more than {MAX_STEPS} steps: the script stops here, and does\n  \
                 // not check the final state (the session's end was not replayed)."
            );
        } else {
            self.render_checks(&mut out, rec);
        }
        out.push_str("});\n");
        out
    }

    fn render_checks(&self, out: &mut String, rec: &Recording) {
        let final_url = rec.final_url();
        if final_url.is_none() && self.fields.is_empty() {
            return;
        }
        out.push_str("  // Where the recorded session ended.\n");
        if let Some(url) = final_url {
            let _ = writeln!(out, "  await expect(page).toHaveURL({});", js(url));
        }
        for field in &self.fields {
            let locator = format!("page.locator({})", js(&field.selector));
            match (field.input_type.as_str(), field.checked) {
                ("checkbox", Some(true)) => {
                    let _ = writeln!(out, "  await expect({locator}).toBeChecked();");
                }
                ("checkbox", Some(false)) => {
                    let _ = writeln!(out, "  await expect({locator}).not.toBeChecked();");
                }
                // A radio's last event may be stale (checking another one of its group sends
                // no event for it): not checked.
                ("radio", _) | ("checkbox", None) => {}
                _ => {
                    let _ = writeln!(
                        out,
                        "  await expect({locator}).toHaveValue({});",
                        js(&field.value)
                    );
                }
            }
        }
    }
}

fn render_step(out: &mut String, step: &Step) {
    let _ = match step {
        Step::Click {
            selector,
            x,
            y,
            button,
            count,
            modifiers,
        } => {
            let mut options = Vec::new();
            if *button != Button::Left {
                options.push(format!("button: '{}'", button_name(*button)));
            }
            if *count > 2 {
                options.push(format!("clickCount: {count}"));
            }
            let method = if *count == 2 { "dblclick" } else { "click" };
            match selector {
                Some(selector) => {
                    let mods = modifier_names(*modifiers);
                    if !mods.is_empty() {
                        options.push(format!(
                            "modifiers: [{}]",
                            mods.iter()
                                .map(|m| format!("'{m}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    writeln!(
                        out,
                        "  await page.locator({}).{method}({});",
                        js(selector),
                        object(&options)
                    )
                }
                None => {
                    let mods = modifier_names(*modifiers);
                    for m in &mods {
                        let _ = writeln!(out, "  await page.keyboard.down('{m}');");
                    }
                    let _ = writeln!(
                        out,
                        "  await page.mouse.{method}({}, {}{});",
                        num(*x),
                        num(*y),
                        if options.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", object(&options))
                        }
                    );
                    for m in mods.iter().rev() {
                        let _ = writeln!(out, "  await page.keyboard.up('{m}');");
                    }
                    Ok(())
                }
            }
        }
        Step::Drag { from, to, button } => writeln!(
            out,
            "  await page.mouse.move({}, {});\n  \
             await page.mouse.down({{ button: '{b}' }});\n  \
             await page.mouse.move({}, {}, {{ steps: 10 }});\n  \
             await page.mouse.up({{ button: '{b}' }});",
            num(from.0),
            num(from.1),
            num(to.0),
            num(to.1),
            b = button_name(*button),
        ),
        Step::Type(text) => writeln!(out, "  await page.keyboard.type({});", js(text)),
        Step::MaskedKeys(n) => writeln!(
            out,
            "  // {n} key(s) typed into a masked field: the recording does not hold them.\n  \
             await page.keyboard.type(process.env.COBROWSE_MASKED_TEXT ?? '');"
        ),
        Step::InsertText(text) => {
            writeln!(out, "  await page.keyboard.insertText({});", js(text))
        }
        Step::MaskedText => writeln!(
            out,
            "  // Text pasted into a masked field: the recording does not hold it.\n  \
             await page.keyboard.insertText(process.env.COBROWSE_MASKED_TEXT ?? '');"
        ),
        Step::Press(keys) => writeln!(out, "  await page.keyboard.press({});", js(keys)),
        Step::Wheel { x, y, dx, dy } => writeln!(
            out,
            "  await page.mouse.move({}, {});\n  await page.mouse.wheel({}, {});",
            num(*x),
            num(*y),
            num(*dx),
            num(*dy)
        ),
        Step::Goto(url) => writeln!(out, "  await page.goto({});", js(url)),
        Step::Back => writeln!(out, "  await page.goBack();"),
        Step::Forward => writeln!(out, "  await page.goForward();"),
        Step::Reload => writeln!(out, "  await page.reload();"),
        Step::Select { selector, value } => writeln!(
            out,
            "  await page.locator({}).selectOption({});",
            js(selector),
            js(value)
        ),
        Step::WaitUrl(url) => writeln!(out, "  await page.waitForURL({});", js(url)),
        Step::Note(text) => writeln!(out, "  // {}", comment(text)),
    };
}

/// The step of a key pressed down, if it is one (modifier keys alone are not).
fn key_step(key: &str, text: Option<&str>, modifiers: u8, redacted: bool) -> Option<Step> {
    if SILENT_KEYS.contains(&key) {
        return None;
    }
    if redacted {
        return Some(Step::MaskedKeys(1));
    }
    let named = key.chars().count() > 1;
    // Ctrl+Alt with text is AltGr on Windows layouts (`@` on a German keyboard): typing.
    let alt_gr = modifiers & (CTRL | ALT) == CTRL | ALT && text.is_some_and(|t| !t.is_empty());
    let chord = modifiers & (CTRL | ALT | META) != 0 && !alt_gr;
    if named || chord {
        if named && !NAMED_KEYS.contains(&key) {
            return Some(Step::Note(format!("key {key}: not reproduced")));
        }
        let mut combo = modifier_names(modifiers).join("+");
        if !combo.is_empty() {
            combo.push('+');
        }
        combo.push_str(key);
        return Some(Step::Press(combo));
    }
    let typed = text.filter(|t| !t.is_empty()).unwrap_or(key);
    if typed.chars().any(char::is_control) {
        return None;
    }
    Some(Step::Type(typed.to_string()))
}

/// The target event describing press `p`: the first unused one within [`TARGET_WINDOW_MS`] after
/// it, at its spot; `(selector, tag)` when it has a selector.
fn find_target(events: &[(u32, Event)], p: &Press, used: &mut [bool]) -> Option<(String, String)> {
    for (i, (t, event)) in events.iter().enumerate().skip(p.index + 1) {
        if *t > p.t.saturating_add(TARGET_WINDOW_MS) {
            break;
        }
        if let Event::Target {
            x,
            y,
            selector,
            tag,
        } = event
        {
            if used[i] || (x - p.x).abs() > TARGET_SLOP || (y - p.y).abs() > TARGET_SLOP {
                continue;
            }
            used[i] = true;
            return selector.clone().map(|s| (s, tag.clone()));
        }
    }
    None
}

/// A `choose` (an option of a select popup): the value from the select's `field` event, the
/// next one within `CHOOSE_WINDOW_MS`, else the one just before (the page's change report can
/// reach the recording before the participant's `choose` does: the page acted on it first).
fn choose_step(
    events: &[(u32, Event)],
    index: usize,
    t: u32,
    last_select: Option<&str>,
    option: Option<u32>,
) -> Step {
    let select_value = |event: &Event| match event {
        Event::Field {
            selector,
            tag,
            value: Some(value),
            ..
        } if tag == "select" => selector
            .as_deref()
            .or(last_select)
            .map(|selector| Step::Select {
                selector: selector.to_string(),
                value: value.clone(),
            }),
        _ => None,
    };
    let after = events
        .iter()
        .skip(index + 1)
        .take_while(|(ft, _)| *ft <= t.saturating_add(CHOOSE_WINDOW_MS))
        .find_map(|(_, e)| select_value(e));
    let is_choose = |e: &Event| matches!(e, Event::Action { action, .. } if action == "choose");
    // A field event just before, unless an earlier `choose` (within the window before it) owns it.
    let before = || {
        let head = &events[..index.min(events.len())];
        head.iter()
            .enumerate()
            .rev()
            .take_while(|(_, (ft, _))| ft.saturating_add(CHOOSE_WINDOW_MS) >= t)
            .take_while(|(_, (_, e))| !is_choose(e))
            .find_map(|(j, (ft, e))| {
                let owned = head[..j]
                    .iter()
                    .rev()
                    .take_while(|(ct, _)| ct.saturating_add(CHOOSE_WINDOW_MS) >= *ft)
                    .any(|(_, c)| is_choose(c));
                if owned {
                    None
                } else {
                    select_value(e)
                }
            })
    };
    after.or_else(before).unwrap_or_else(|| {
        Step::Note(format!(
            "chose option {} of a select, but no value was recorded for it: not reproduced",
            option.map_or_else(|| "?".to_string(), |i| format!("#{i}"))
        ))
    })
}

fn modifier_names(modifiers: u8) -> Vec<&'static str> {
    [
        (CTRL, "Control"),
        (ALT, "Alt"),
        (META, "Meta"),
        (SHIFT, "Shift"),
    ]
    .into_iter()
    .filter(|(bit, _)| modifiers & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

fn button_name(button: Button) -> &'static str {
    match button {
        Button::Right => "right",
        Button::Middle => "middle",
        Button::Left | Button::None => "left",
    }
}

fn object(options: &[String]) -> String {
    if options.is_empty() {
        String::new()
    } else {
        format!("{{ {} }}", options.join(", "))
    }
}

/// `Alice (owner)`, for a comment.
fn who(by: &Actor) -> String {
    let name = if by.name.trim().is_empty() {
        &by.id
    } else {
        &by.name
    };
    comment(&format!("{name} ({})", by.role))
}

fn seconds(t: u32) -> String {
    format!("{:.1} s", f64::from(t) / 1000.0)
}

fn without_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(u, _)| u)
}

/// A JavaScript string literal of `s`: JSON's, with U+2028 and U+2029 escaped too (JSON allows
/// them raw; older JavaScript parsers end a line there).
fn js(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|_| String::from("\"\""))
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Text for inside a `//` comment: one line (control characters and line separators become
/// spaces), no `*/`, at most 200 characters.
fn comment(s: &str) -> String {
    let line: String = s
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .take(200)
        .collect();
    line.replace("*/", "* /")
}

/// A coordinate or delta as a JavaScript number (two decimals at most; 0 if not finite).
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let r = (v * 100.0).round() / 100.0;
    format!("{}", if r == 0.0 { 0.0 } else { r })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::format::Kind;
    use crate::recording::read::tests::{alice, event, meta, write_file};
    use serde_json::json;

    fn actor(name: &str, role: &str) -> Actor {
        Actor {
            id: "p2".into(),
            name: name.into(),
            role: role.into(),
        }
    }

    fn mouse(action: &str, x: f64, y: f64, button: Button, count: u8) -> Event {
        Event::Input {
            by: alice(),
            input: InputRecord::Mouse {
                action: action.into(),
                x,
                y,
                button,
                click_count: count,
                modifiers: 0,
            },
        }
    }

    fn key(k: &str, text: Option<&str>, modifiers: u8, redacted: bool) -> Event {
        Event::Input {
            by: alice(),
            input: InputRecord::Key {
                action: "down".into(),
                key: k.into(),
                code: String::new(),
                text: text.map(str::to_string),
                modifiers,
                redacted,
            },
        }
    }

    fn key_up(k: &str) -> Event {
        Event::Input {
            by: alice(),
            input: InputRecord::Key {
                action: "up".into(),
                key: k.into(),
                code: String::new(),
                text: None,
                modifiers: 0,
                redacted: false,
            },
        }
    }

    fn typed(s: &str) -> Vec<Event> {
        s.chars()
            .flat_map(|c| {
                let c = c.to_string();
                [key(&c, Some(&c), 0, false), key_up(&c)]
            })
            .collect()
    }

    fn target(x: f64, y: f64, selector: Option<&str>, tag: &str) -> Event {
        Event::Target {
            x,
            y,
            selector: selector.map(str::to_string),
            tag: tag.into(),
        }
    }

    fn field(
        selector: &str,
        tag: &str,
        input_type: &str,
        value: Option<&str>,
        checked: Option<bool>,
    ) -> Event {
        Event::Field {
            selector: Some(selector.into()),
            tag: tag.into(),
            input_type: input_type.into(),
            value: value.map(str::to_string),
            checked,
            masked: false,
        }
    }

    fn action(name: &str) -> Event {
        Event::Action {
            by: alice(),
            action: name.into(),
            url: None,
            tab: None,
            accept: None,
            index: None,
            value: None,
            files: Vec::new(),
        }
    }

    /// A choice of option `index` in a `<select>` popup.
    fn choose_option(index: u32) -> Event {
        let mut choose = action("choose");
        if let Event::Action { index: i, .. } = &mut choose {
            *i = Some(index);
        }
        choose
    }

    fn page(url: &str) -> Event {
        Event::Server {
            message: json!({"t": "page", "url": url, "title": "t"}),
        }
    }

    fn script_of(events: Vec<Event>) -> String {
        let records: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (Kind::Event, i as u32 * 10, event(e)))
            .collect();
        let rec = Recording::parse(write_file(&meta(), &records).expect("file")).expect("parses");
        script(&rec)
    }

    /// The script's code lines (comments and blank lines left out), trimmed.
    fn code(script: &str) -> Vec<String> {
        script
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_form_session_becomes_the_expected_calls() {
        let mut events = vec![
            page("http://site.test/form"),
            mouse("pressed", 300.0, 30.0, Button::Left, 1),
            mouse("released", 300.0, 31.0, Button::Left, 1),
            target(300.0, 30.0, Some("#fullname"), "input"),
        ];
        events.extend(typed("Ada L"));
        events.push(key("Tab", None, 0, false));
        events.extend(typed("a@b.c"));
        events.push(key("Dead", None, 0, false));
        events.push(key("@", Some("@"), CTRL | ALT, false));
        events.push(key("a", Some("a"), CTRL, false));
        events.push(key("ArrowLeft", None, SHIFT, false));
        events.extend([
            key("•", Some("•"), 0, true),
            key("•", Some("•"), 0, true),
            key("Enter", Some("\r"), 0, false),
            mouse("pressed", 10.0, 10.0, Button::Right, 1),
            mouse("released", 10.0, 10.0, Button::Right, 1),
            target(10.0, 10.0, None, "body"),
            mouse("pressed", 50.0, 50.0, Button::Left, 1),
            mouse("released", 50.0, 50.0, Button::Left, 1),
            mouse("pressed", 50.0, 50.0, Button::Left, 2),
            mouse("released", 50.0, 50.0, Button::Left, 2),
            mouse("pressed", 100.0, 100.0, Button::Left, 1),
            mouse("moved", 150.0, 120.0, Button::Left, 0),
            mouse("released", 200.0, 140.0, Button::Left, 1),
            Event::Input {
                by: alice(),
                input: InputRecord::Wheel {
                    x: 5.0,
                    y: 6.0,
                    delta_x: 0.0,
                    delta_y: 100.0,
                    modifiers: 0,
                },
            },
            Event::Input {
                by: alice(),
                input: InputRecord::Wheel {
                    x: 5.0,
                    y: 6.0,
                    delta_x: 0.0,
                    delta_y: 20.5,
                    modifiers: 0,
                },
            },
            Event::Input {
                by: alice(),
                input: InputRecord::Text {
                    text: "pasted".into(),
                    redacted: false,
                },
            },
            Event::Input {
                by: alice(),
                input: InputRecord::Compose {
                    text: "ko".into(),
                    redacted: false,
                },
            },
            action("back"),
            action("forward"),
            action("reload"),
            action("tab-switch"),
            action("upload"),
            field("#fullname", "input", "text", Some("Ada L"), None),
            field("input[name=email]", "input", "email", Some("a@b.c"), None),
            field("#gift", "input", "checkbox", Some("yes"), Some(true)),
            field("#secret", "input", "password", None, None),
        ]);
        let s = script_of(events);
        let lines = code(&s);
        let expected = [
            "import { test, expect } from '@playwright/test';",
            "test.use({ viewport: { width: 800, height: 600 }, deviceScaleFactor: 1 });",
            "test(\"replays recording rec1\", async ({ page }) => {",
            "await page.goto(\"http://site.test/form\");",
            "await page.locator(\"#fullname\").click();",
            "await page.keyboard.type(\"Ada L\");",
            "await page.keyboard.press(\"Tab\");",
            "await page.keyboard.type(\"a@b.c@\");",
            "await page.keyboard.press(\"Control+a\");",
            "await page.keyboard.press(\"Shift+ArrowLeft\");",
            "await page.keyboard.type(process.env.COBROWSE_MASKED_TEXT ?? '');",
            "await page.keyboard.press(\"Enter\");",
            "await page.mouse.click(10, 10, { button: 'right' });",
            "await page.mouse.dblclick(50, 50);",
            "await page.mouse.move(100, 100);",
            "await page.mouse.down({ button: 'left' });",
            "await page.mouse.move(200, 140, { steps: 10 });",
            "await page.mouse.up({ button: 'left' });",
            "await page.mouse.move(5, 6);",
            "await page.mouse.wheel(0, 120.5);",
            "await page.keyboard.insertText(\"pasted\");",
            "await page.goBack();",
            "await page.goForward();",
            "await page.reload();",
            "await expect(page).toHaveURL(\"http://site.test/form\");",
            "await expect(page.locator(\"#fullname\")).toHaveValue(\"Ada L\");",
            "await expect(page.locator(\"input[name=email]\")).toHaveValue(\"a@b.c\");",
            "await expect(page.locator(\"#gift\")).toBeChecked();",
            "});",
        ];
        assert_eq!(lines, expected, "{s}");
        assert!(s.contains("// 0.0 s, Alice (owner)"), "{s}");
        assert!(
            s.contains("// switched tabs: not reproduced by this script (action tab-switch)"),
            "{s}"
        );
        assert!(s.contains("// uploaded files: not reproduced"), "{s}");
        assert!(s.contains("// 2 key(s) typed into a masked field"), "{s}");
    }

    #[test]
    fn a_select_change_reported_before_its_choose_still_gives_the_value() {
        let choose = choose_option(2);
        let s = script_of(vec![
            mouse("pressed", 20.0, 20.0, Button::Left, 1),
            target(20.0, 20.0, Some("#size"), "select"),
            mouse("released", 20.0, 20.0, Button::Left, 1),
            field("#size", "select", "", Some("large"), None),
            choose,
        ]);
        assert!(
            code(&s)
                .contains(&"await page.locator(\"#size\").selectOption(\"large\");".to_string()),
            "{s}"
        );
    }

    #[test]
    fn a_select_choice_a_navigation_and_dialogs() {
        let mut nav = action("navigate");
        if let Event::Action { url, .. } = &mut nav {
            *url = Some("http://site.test/other".into());
        }
        let dialog = |accept: bool| Event::Action {
            by: actor("Bob", "controller"),
            action: "dialog".into(),
            url: None,
            tab: None,
            accept: Some(accept),
            index: None,
            value: None,
            files: Vec::new(),
        };
        let choose = choose_option(2);
        let s = script_of(vec![
            mouse("pressed", 20.0, 20.0, Button::Left, 1),
            target(20.0, 20.0, Some("#size"), "select"),
            mouse("released", 20.0, 20.0, Button::Left, 1),
            choose.clone(),
            field("#size", "select", "", Some("large"), None),
            choose,
            nav,
            page("http://site.test/other"),
            dialog(true),
            dialog(false),
            mouse("pressed", 1.0, 1.0, Button::Left, 1),
            mouse("released", 1.0, 1.0, Button::Left, 1),
        ]);
        let lines = code(&s);
        assert!(
            lines.contains(&"await page.locator(\"#size\").click();".to_string()),
            "{s}"
        );
        assert!(
            lines.contains(&"await page.locator(\"#size\").selectOption(\"large\");".to_string()),
            "{s}"
        );
        assert!(
            s.contains("// chose option #2 of a select, but no value was recorded for it"),
            "{s}"
        );
        assert!(
            lines.contains(&"await page.goto(\"http://site.test/other\");".to_string()),
            "{s}"
        );
        assert!(
            lines.contains(&"const dialogAnswers: boolean[] = [true, false];".to_string()),
            "{s}"
        );
        assert!(s.contains("// 0.1 s, Bob (controller)\n"), "{s}");
        // The page moved before the next click: the script waits for it first.
        let wait = lines
            .iter()
            .position(|l| l == "await page.waitForURL(\"http://site.test/other\");");
        let click = lines
            .iter()
            .position(|l| l == "await page.mouse.click(1, 1);");
        assert!(wait.is_some() && wait < click, "{s}");
        // The final page has no field recorded: only the URL is checked.
        assert!(!s.contains("toHaveValue"), "{s}");
        assert!(lines
            .contains(&"await expect(page).toHaveURL(\"http://site.test/other\");".to_string()));
    }

    #[test]
    fn hostile_strings_stay_inside_literals_and_comments() {
        let evil = "x\"); process.exit(7); (\"\n*/ process.exit(8) /*\u{2028}process.exit(9)";
        let mut nav = action("navigate");
        if let Event::Action { url, by, .. } = &mut nav {
            *url = Some(evil.into());
            by.name = evil.into();
        }
        let mut weird = action(evil);
        if let Event::Action { by, .. } = &mut weird {
            by.role = evil.into();
        }
        let mut events = vec![
            page(evil),
            mouse("pressed", 5.0, 5.0, Button::Left, 1),
            mouse("released", 5.0, 5.0, Button::Left, 1),
            target(5.0, 5.0, Some(evil), "input"),
            nav,
            weird,
            key(evil, None, 0, false),
            key("x", Some(evil), CTRL, false),
            Event::Input {
                by: alice(),
                input: InputRecord::Text {
                    text: evil.into(),
                    redacted: false,
                },
            },
            field(evil, "input", "text", Some(evil), None),
        ];
        events.extend(typed("\"'`${}"));
        let s = script_of(events);
        for line in s.lines() {
            assert!(!line.trim_start().starts_with("process.exit"), "{line}");
            assert!(!line.contains('\u{2028}'), "{line}");
            if let Some(pos) = line.find("//") {
                // A comment's text has no way out of it; code lines hold the string escaped.
                assert!(!line[pos..].contains("*/"), "{line}");
            }
            if line.contains("process.exit") && !line.trim_start().starts_with("//") {
                assert!(
                    line.contains(&js(evil)),
                    "only as the escaped literal: {line}"
                );
            }
        }
        let escaped = js(evil);
        assert!(escaped.contains("\\u2028") && escaped.contains("\\n") && escaped.contains("\\\""));
        assert!(
            s.contains(&format!("await page.locator({escaped}).click();")),
            "{s}"
        );
        assert!(s.contains(&format!("await page.goto({escaped});")), "{s}");
        assert!(
            s.contains("await page.keyboard.type(\"\\\"'`${}\");"),
            "{s}"
        );
    }

    #[test]
    fn steps_are_capped() {
        let events: Vec<Event> = (0..MAX_STEPS + 10)
            .flat_map(|i| {
                let x = (i % 500) as f64 * 3.0;
                [
                    mouse("pressed", x, 1.0, Button::Left, 1),
                    mouse("released", x, 1.0, Button::Left, 1),
                ]
            })
            .collect();
        let s = script_of(events);
        assert_eq!(s.matches("page.mouse.click(").count(), MAX_STEPS);
        assert!(s.contains(&format!("more than {MAX_STEPS} steps")));
        assert!(!s.contains("toHaveURL"));
    }

    #[test]
    fn numbers_are_plain() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(f64::NAN), "0");
    }
}
