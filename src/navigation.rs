//! Where a session's page may go, as typed by a person or given by the API: URL checks and the
//! URL bar's reading of what was typed (pure logic; `browser` navigates).

/// Longest URL a session may start on or navigate to.
pub const MAX_URL_LEN: usize = 8 * 1024;

/// Checks a start URL given through the API: absolute, http or https, with a host.
pub fn validate_url(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("url longer than {MAX_URL_LEN} bytes"));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("url '{}' is not valid: {e}", raw.trim()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url scheme '{}' not allowed: use http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("url has no host".into());
    }
    Ok(url.to_string())
}

/// Reads what someone typed into the viewer's URL bar as a browser's address bar would: a full
/// `http(s)://` URL as it is; a bare host (`example.com/path`, `localhost:8080`) gets `https://`,
/// or `http://` for `localhost` and IP addresses (local services rarely have certificates);
/// `about:blank` is allowed. Every other scheme (`javascript:`, `file:`, `data:`, `chrome:`,
/// `view-source:` …) is refused: the URL bar never runs script or opens local files. Words
/// without a dot are refused too (there is no search engine to send them to).
pub fn typed_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("type a web address".into());
    }
    if raw.eq_ignore_ascii_case("about:blank") {
        return Ok("about:blank".into());
    }
    if has_scheme(raw) {
        return validate_url(raw);
    }
    if raw.chars().any(char::is_whitespace) {
        return Err(format!("'{raw}' is not a web address"));
    }
    let authority = raw.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let local = host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok();
    if !local && !host.contains('.') {
        return Err(format!("'{raw}' is not a web address"));
    }
    let scheme = if local { "http" } else { "https" };
    validate_url(&format!("{scheme}://{raw}"))
}

/// Whether `s` starts with `scheme:` (and not `host:port`, whose part after the colon is digits).
fn has_scheme(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    let scheme_like = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let port_like = rest
        .split(['/', '?', '#'])
        .next()
        .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    scheme_like && !port_like
}

/// Back and forward as the page's history allows them, and the current entry's title.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub can_go_back: bool,
    pub can_go_forward: bool,
    pub title: String,
}

impl History {
    /// From Chromium's navigation history: the current entry's index, every entry's URL and
    /// the current entry's title. The `about:blank` every session's browser opens first is not
    /// somewhere to go back to.
    pub fn new(current: i64, urls: &[&str], title: String) -> Self {
        let entries = i64::try_from(urls.len()).unwrap_or(i64::MAX);
        let first = i64::from(urls.first() == Some(&"about:blank") && urls.len() > 1);
        History {
            can_go_back: current > first,
            can_go_forward: current >= 0 && current + 1 < entries,
            title: title
                .chars()
                .take(crate::protocol::MAX_TITLE_CHARS)
                .collect(),
        }
    }

    /// Whether entry `index` may be gone to with back/forward.
    pub fn may_go_to(urls: &[&str], index: i64) -> bool {
        let Ok(i) = usize::try_from(index) else {
            return false;
        };
        i < urls.len() && !(i == 0 && urls[0] == "about:blank")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_urls_are_http_only() {
        assert_eq!(
            validate_url("https://example.com").as_deref(),
            Ok("https://example.com/")
        );
        assert!(validate_url(" http://127.0.0.1:9/x?y ").is_ok());
        for bad in [
            "",
            "example.com",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "data:text/html,x",
            "chrome://version",
            "http://",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn the_url_bar_reads_addresses_like_a_browser() {
        let ok = |typed: &str, expected: &str| {
            assert_eq!(typed_url(typed).as_deref(), Ok(expected), "{typed}");
        };
        ok("https://example.com/a?b#c", "https://example.com/a?b#c");
        ok("example.com", "https://example.com/");
        ok("  example.com/path?q=1 ", "https://example.com/path?q=1");
        ok("localhost:8080/x", "http://localhost:8080/x");
        ok("127.0.0.1:3000", "http://127.0.0.1:3000/");
        ok("[::1]:3000/", "http://[::1]:3000/");
        ok("example.com:8443/x", "https://example.com:8443/x");
        ok("About:Blank", "about:blank");
        for bad in [
            "",
            "   ",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "file:///etc/passwd",
            "data:text/html,<b>x</b>",
            "chrome://settings",
            "view-source:https://example.com",
            "about:config",
            "search words",
            "intranet",
        ] {
            assert!(typed_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn history_buttons_follow_the_entries() {
        let three = ["https://a/", "https://b/", "https://c/"];
        assert_eq!(
            History::new(0, &three[..1], String::new()),
            History::default()
        );
        let middle = History::new(1, &three, "Middle".into());
        assert!(middle.can_go_back && middle.can_go_forward);
        let last = History::new(2, &three, String::new());
        assert!(last.can_go_back && !last.can_go_forward);
        assert_eq!(History::new(-1, &[], String::new()), History::default());
        // The blank page the browser opened with is not "back".
        let started = ["about:blank", "https://a/"];
        assert!(!History::new(1, &started, String::new()).can_go_back);
        assert!(!History::may_go_to(&started, 0));
        assert!(History::may_go_to(&started, 1));
        assert!(History::may_go_to(&three, 0));
        assert!(!History::may_go_to(&three, 3));
        assert!(!History::may_go_to(&three, -1));
    }
}
