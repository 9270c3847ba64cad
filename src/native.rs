//! Native UI the headless browser cannot show, described by cobrowse's page script and shown by
//! the viewer instead: `<select>` popups, and text copied in the page (for the participant's own
//! clipboard). Parsing and checking what the page script reports
//! (pure logic): the page can reach that code, so its reports are untrusted input.

use serde::{Deserialize, Serialize};

/// Options shown at most; more are cut (the page script already stops there).
pub const MAX_OPTIONS: usize = 1000;
/// Characters of an option or group label shown at most.
pub const MAX_LABEL: usize = 200;
/// Characters of copied text passed on at most.
pub const MAX_COPY: usize = 100_000;
/// Largest report accepted from the page script, in bytes.
pub const MAX_REPORT: usize = 512 * 1024;

/// What the page script reports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum NativeReport {
    /// A `<select>` popup opened: its options, the selected one, where it is (viewport CSS px).
    Select {
        id: u32,
        selected: i64,
        options: Vec<SelectOption>,
        rect: [f64; 4],
    },
    /// A colour, date or time field was clicked: its kind, value and limits, where it is.
    Picker {
        id: u32,
        #[serde(rename = "type")]
        input_type: String,
        value: String,
        #[serde(default)]
        min: String,
        #[serde(default)]
        max: String,
        #[serde(default)]
        step: String,
        rect: [f64; 4],
    },
    /// Text was copied or cut in the page.
    Copy { text: String },
    /// For recordings: the element under a mouse press (top document), with the most robust
    /// selector the script found (`None`: none unique), and where the press landed.
    Target {
        x: f64,
        y: f64,
        #[serde(default)]
        selector: Option<String>,
        #[serde(default)]
        tag: String,
    },
    /// For recordings: a form field's value changed (`value` is `None` for passwords and
    /// masked fields; the script never sends them).
    #[serde(rename_all = "camelCase")]
    Field {
        #[serde(default)]
        selector: Option<String>,
        #[serde(default)]
        tag: String,
        #[serde(default)]
        input_type: String,
        #[serde(default)]
        value: Option<String>,
        #[serde(default)]
        checked: Option<bool>,
        #[serde(default)]
        masked: bool,
    },
}

/// Characters of a selector kept at most (longer: not robust anyway, coordinates are used).
pub const MAX_SELECTOR: usize = 300;
/// Characters of a field value kept at most.
pub const MAX_FIELD_VALUE: usize = 10_000;

/// Tags are short lower-case words; anything else is cut to that.
fn clean_tag(tag: &str) -> String {
    tag.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The fields with a picker popup the viewer stands in for.
pub const PICKER_TYPES: &[&str] = &["color", "date", "time", "datetime-local", "month", "week"];
/// Characters of a picker's value or limit passed on at most.
pub const MAX_PICKER_VALUE: usize = 100;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SelectOption {
    pub label: String,
    #[serde(default)]
    pub disabled: bool,
    /// The `<optgroup>` label, if the option is in one.
    #[serde(default)]
    pub group: Option<String>,
}

/// Reads a report, cutting labels and lists to size and refusing what makes no sense.
pub fn parse_report(payload: &str) -> Result<NativeReport, String> {
    if payload.len() > MAX_REPORT {
        return Err(format!("report longer than {MAX_REPORT} bytes"));
    }
    let mut report: NativeReport = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    match &mut report {
        NativeReport::Picker {
            input_type,
            value,
            min,
            max,
            step,
            rect,
            ..
        } => {
            if !PICKER_TYPES.contains(&input_type.as_str()) {
                return Err(format!("no picker for fields of type {}", clip(input_type)));
            }
            if !rect.iter().all(|v| v.is_finite()) {
                return Err("field position is not a number".into());
            }
            for text in [value, min, max, step] {
                *text = text.chars().take(MAX_PICKER_VALUE).collect();
            }
        }
        NativeReport::Select {
            options,
            rect,
            selected,
            ..
        } => {
            if !rect.iter().all(|v| v.is_finite()) {
                return Err("select position is not a number".into());
            }
            options.truncate(MAX_OPTIONS);
            for option in options.iter_mut() {
                option.label = clip(&option.label);
                option.group = option.group.as_deref().map(clip);
            }
            if *selected >= options.len() as i64 {
                *selected = -1;
            }
        }
        NativeReport::Copy { text } => {
            if text.chars().count() > MAX_COPY {
                *text = text.chars().take(MAX_COPY).collect();
            }
        }
        NativeReport::Target {
            x,
            y,
            selector,
            tag,
        } => {
            if !x.is_finite() || !y.is_finite() {
                return Err("press position is not a number".into());
            }
            if selector
                .as_ref()
                .is_some_and(|s| s.chars().count() > MAX_SELECTOR)
            {
                *selector = None;
            }
            *tag = clean_tag(tag);
        }
        NativeReport::Field {
            selector,
            tag,
            input_type,
            value,
            masked,
            ..
        } => {
            if selector
                .as_ref()
                .is_some_and(|s| s.chars().count() > MAX_SELECTOR)
            {
                *selector = None;
            }
            *tag = clean_tag(tag);
            *input_type = clean_tag(input_type);
            // Belt and braces: the page script never sends these, a page could.
            if *masked || input_type == "password" {
                *value = None;
            }
            if let Some(v) = value {
                if v.chars().count() > MAX_FIELD_VALUE {
                    *v = v.chars().take(MAX_FIELD_VALUE).collect();
                }
            }
        }
    }
    Ok(report)
}

/// A label as shown: at most [`MAX_LABEL`] characters, control characters as spaces.
fn clip(label: &str) -> String {
    label
        .chars()
        .take(MAX_LABEL)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_select_report() {
        let report = parse_report(
            r#"{"kind":"select","id":3,"selected":1,"rect":[10,20,200,30],
                "options":[{"label":"Red","disabled":false,"group":null},
                           {"label":"Gre\u0007en","disabled":true,"group":"Warm"}]}"#,
        )
        .expect("valid");
        let NativeReport::Select {
            id,
            selected,
            options,
            rect,
        } = report
        else {
            panic!("not a select: {report:?}");
        };
        assert_eq!((id, selected, rect), (3, 1, [10.0, 20.0, 200.0, 30.0]));
        assert_eq!(options[1].label, "Gre en");
        assert!(options[1].disabled);
        assert_eq!(options[1].group.as_deref(), Some("Warm"));
    }

    #[test]
    fn refuses_or_trims_what_a_page_could_forge() {
        assert!(parse_report("not json").is_err());
        assert!(parse_report(r#"{"kind":"other"}"#).is_err());
        assert!(parse_report(&"x".repeat(MAX_REPORT + 1)).is_err());
        let long = format!(
            r#"{{"kind":"select","id":1,"selected":5000,"rect":[0,0,1,1],"options":[{}]}}"#,
            vec![format!(r#"{{"label":"{}"}}"#, "y".repeat(500)); MAX_OPTIONS + 5].join(",")
        );
        let NativeReport::Select {
            options, selected, ..
        } = parse_report(&long).expect("trimmed")
        else {
            panic!("not a select");
        };
        assert_eq!(options.len(), MAX_OPTIONS);
        assert_eq!(options[0].label.chars().count(), MAX_LABEL);
        assert_eq!(selected, -1, "an index past the options selects nothing");
        let copy = parse_report(&format!(
            r#"{{"kind":"copy","text":"{}"}}"#,
            "é".repeat(MAX_COPY + 3)
        ))
        .expect("copy");
        assert_eq!(
            copy,
            NativeReport::Copy {
                text: "é".repeat(MAX_COPY)
            }
        );
    }

    #[test]
    fn pickers_are_known_kinds_with_bounded_values() {
        let picker = parse_report(&format!(
            r#"{{"kind":"picker","id":3,"type":"date","value":"2026-11-24","min":"{}","rect":[1,2,3,4]}}"#,
            "9".repeat(500)
        ))
        .expect("picker");
        let NativeReport::Picker {
            id,
            input_type,
            value,
            min,
            max,
            ..
        } = picker
        else {
            panic!("not a picker");
        };
        assert_eq!(
            (id, input_type.as_str(), value.as_str()),
            (3, "date", "2026-11-24")
        );
        assert_eq!(min.chars().count(), MAX_PICKER_VALUE);
        assert_eq!(max, "");
        assert!(parse_report(
            r#"{"kind":"picker","id":1,"type":"file","value":"","rect":[0,0,1,1]}"#
        )
        .is_err());
        assert!(parse_report(
            r#"{"kind":"picker","id":1,"type":"color","value":"","rect":[0,0,1e999,1]}"#
        )
        .is_err());
    }
}
