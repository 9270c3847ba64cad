//! Who is in a session, as the others see them: display names, colours, the chat log, and the
//! rate limits that keep one participant from flooding the rest. Pure logic, no I/O.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

/// Longest display name kept, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest chat message accepted, in characters.
pub const MAX_CHAT_CHARS: usize = 1000;
/// Chat messages kept for late joiners (the oldest go first).
pub const CHAT_HISTORY: usize = 200;
/// Chat messages a participant may send: a burst of this many, then [`CHAT_PER_SEC`].
pub const CHAT_BURST: f64 = 10.0;
pub const CHAT_PER_SEC: f64 = 1.0;

/// Participant colours: distinct on the dark toolbar and over typical pages.
pub const COLORS: [&str; 8] = [
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
];

/// A display name as given (link parameter, viewer field), made safe to show: control and
/// format characters removed, whitespace collapsed, at most [`MAX_NAME_CHARS`]. `None` when
/// nothing is left.
pub fn clean_name(raw: &str) -> Option<String> {
    let words: Vec<&str> = raw
        .split(|c: char| c.is_whitespace() || c.is_control() || is_format(c))
        .filter(|w| !w.is_empty())
        .collect();
    let name: String = words.join(" ").chars().take(MAX_NAME_CHARS).collect();
    let name = name.trim_end().to_string();
    (!name.is_empty()).then_some(name)
}

/// Invisible formatting characters (bidirectional overrides, zero-width joiners…) that could
/// make one name look like another or reorder the text around it.
fn is_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// The first colour no present participant has; when all are taken, by join order.
pub fn pick_color<'a>(in_use: impl Iterator<Item = &'a str>, joined: u64) -> &'static str {
    let used: Vec<&str> = in_use.collect();
    COLORS
        .iter()
        .copied()
        .find(|c| !used.contains(c))
        .unwrap_or(COLORS[(joined % COLORS.len() as u64) as usize])
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("empty message")]
    Empty,
    #[error("message longer than {MAX_CHAT_CHARS} characters")]
    TooLong,
    #[error("too many messages; wait a moment")]
    TooFast,
}

/// Chat text as sent, checked: trimmed, not empty, not too long, control characters other than
/// newlines and tabs removed. Never HTML: viewers show it as text.
pub fn clean_chat(raw: &str) -> Result<String, ChatError> {
    let text: String = raw
        .trim()
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !(c.is_control() || is_format(c)))
        .collect();
    if text.is_empty() {
        return Err(ChatError::Empty);
    }
    if text.chars().count() > MAX_CHAT_CHARS {
        return Err(ChatError::TooLong);
    }
    Ok(text)
}

/// One chat message, as every participant receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// Increases by one per message of the session.
    pub id: u64,
    /// Sender's participant id, name and colour when it was sent.
    pub from: String,
    pub name: String,
    pub color: &'static str,
    pub text: String,
    /// Unix time in milliseconds.
    pub at: u64,
}

/// The session's chat: the last [`CHAT_HISTORY`] messages, in order.
#[derive(Debug, Default)]
pub struct ChatLog {
    messages: VecDeque<Arc<ChatMessage>>,
    next_id: u64,
}

impl ChatLog {
    /// Appends a message (its text already checked) and returns it as stored.
    pub fn post(
        &mut self,
        from: &str,
        name: &str,
        color: &'static str,
        text: String,
        at: u64,
    ) -> Arc<ChatMessage> {
        self.next_id += 1;
        let message = Arc::new(ChatMessage {
            id: self.next_id,
            from: from.to_string(),
            name: name.to_string(),
            color,
            text,
            at,
        });
        if self.messages.len() == CHAT_HISTORY {
            self.messages.pop_front();
        }
        self.messages.push_back(message.clone());
        message
    }

    pub fn history(&self) -> Vec<Arc<ChatMessage>> {
        self.messages.iter().cloned().collect()
    }
}

/// A token bucket: `burst` at once, then `per_sec`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(burst: f64, per_sec: f64, now: Instant) -> Self {
        RateLimit {
            burst,
            per_sec,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_cleaned_and_bounded() {
        assert_eq!(
            clean_name("  Ada   Lovelace \n").as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(
            clean_name("\u{202E}evil\u{200B}name").as_deref(),
            Some("evil name")
        );
        assert_eq!(clean_name(" \t\u{7}\n"), None);
        let long = "x".repeat(100);
        assert_eq!(
            clean_name(&long).map(|n| n.chars().count()),
            Some(MAX_NAME_CHARS)
        );
        // Kept as text; showing it safely is the viewer's job (textContent).
        assert_eq!(clean_name("<b>Bo</b>").as_deref(), Some("<b>Bo</b>"));
    }

    #[test]
    fn colours_are_distinct_while_there_are_enough() {
        assert_eq!(pick_color([].into_iter(), 1), COLORS[0]);
        assert_eq!(pick_color([COLORS[0], COLORS[2]].into_iter(), 3), COLORS[1]);
        assert_eq!(pick_color(COLORS.iter().copied(), 10), COLORS[2]);
    }

    #[test]
    fn chat_text_is_checked() {
        assert_eq!(
            clean_chat("  hi\u{0}\n there "),
            Ok("hi\n there".to_string())
        );
        assert_eq!(clean_chat(" \u{1b} "), Err(ChatError::Empty));
        assert_eq!(
            clean_chat(&"é".repeat(MAX_CHAT_CHARS)).map(|t| t.chars().count()),
            Ok(MAX_CHAT_CHARS)
        );
        assert_eq!(
            clean_chat(&"é".repeat(MAX_CHAT_CHARS + 1)),
            Err(ChatError::TooLong)
        );
    }

    #[test]
    fn chat_log_keeps_the_latest_in_order() {
        let mut log = ChatLog::default();
        for i in 0..CHAT_HISTORY + 5 {
            log.post("p1", "Ada", COLORS[0], format!("m{i}"), i as u64);
        }
        let h = log.history();
        assert_eq!(h.len(), CHAT_HISTORY);
        assert_eq!(h[0].text, "m5");
        assert_eq!(h[0].id, 6);
        assert!(h.windows(2).all(|w| w[0].id + 1 == w[1].id));
    }

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(3.0, 2.0, t0);
        assert!((0..3).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_millis(500)));
        assert!(!r.allow(t0 + Duration::from_millis(600)));
        // Idle time refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| r.allow(later)));
        assert!(!r.allow(later));
    }
}
