//! The bug bundle (`docs/recording.md`): one zip with everything a developer needs to look at a
//! session's problem: the recording itself, the console and failed requests as text, the network
//! as HAR, the last screen, the URLs visited and a Playwright script that replays the inputs.
//!
//! Everything in it comes from the recording, which is untrusted: text files get one line per
//! entry whatever the entry holds (control characters are escaped), HAR is JSON built by
//! serde_json, and the script escapes as `playwright` says.

use std::collections::HashMap;
use std::io::{Cursor, Write};

use serde_json::{json, Value};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use super::event::{Event, Header, Level};
use super::read::Recording;

/// Why a bundle could not be built (only writing into memory can fail).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("writing the zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("writing the zip: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding the final screen: {0}")]
    Png(#[from] image::ImageError),
}

/// Builds the bug bundle of a recording: a zip of `recording.cbrec`, `console.log`,
/// `network.har`, `final.png` (when the recording holds a screen), `urls.txt`,
/// `repro.spec.ts` and `README.txt`.
pub fn bundle(rec: &Recording) -> Result<Vec<u8>, BundleError> {
    let started = rec.meta.started_at;
    let modified = zip_time(started);
    let deflated = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(modified);
    // Already compressed: stored as they are.
    let stored = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(modified);

    let final_png = match rec.final_screen() {
        Some(screen) => {
            let mut png = Vec::new();
            screen.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)?;
            Some(png)
        }
        None => None,
    };
    let har = serde_json::to_vec_pretty(&har(rec)).map_err(std::io::Error::other)?;

    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("README.txt", deflated)?;
    zip.write_all(readme(rec, final_png.is_some()).as_bytes())?;
    zip.start_file("recording.cbrec", deflated)?;
    zip.write_all(rec.bytes())?;
    zip.start_file("console.log", deflated)?;
    zip.write_all(console_log(rec).as_bytes())?;
    zip.start_file("network.har", deflated)?;
    zip.write_all(&har)?;
    if let Some(png) = final_png {
        zip.start_file("final.png", stored)?;
        zip.write_all(&png)?;
    }
    zip.start_file("urls.txt", deflated)?;
    zip.write_all(urls_txt(rec).as_bytes())?;
    zip.start_file("repro.spec.ts", deflated)?;
    zip.write_all(super::playwright::script(rec).as_bytes())?;
    Ok(zip.finish()?.into_inner())
}

fn readme(rec: &Recording, has_png: bool) -> String {
    let mut out = format!(
        "cobrowse bug bundle\n\
         recording {id}, session {session}, started {started}, {secs:.1} s long{cut}.\n\n\
         recording.cbrec  the session recording itself (masked screen, inputs, page events);\n\
         \x20                open it in cobrowse's replay page.\n\
         console.log      console errors and messages, uncaught exceptions and failed requests\n\
         \x20                (HTTP status 400 or more, or no response), one per line, UTC times.\n\
         network.har      every request the page made with its response (HAR 1.2; bodies are not\n\
         \x20                recorded; cookie and authorization headers are redacted).\n",
        id = line_safe(&rec.meta.id),
        session = line_safe(&rec.meta.session),
        started = rfc3339(rec.meta.started_at),
        secs = f64::from(rec.duration_ms()) / 1000.0,
        cut = if rec.truncated {
            ", cut off (the file ends in a partial record)"
        } else {
            ""
        },
    );
    if has_png {
        out.push_str(
            "final.png        the screen at the end of the recording, masked as recorded.\n",
        );
    } else {
        out.push_str("(final.png is absent: the recording holds no screen.)\n");
    }
    out.push_str(
        "urls.txt         the pages the session visited, in order.\n\
         repro.spec.ts    a Playwright test that replays the participants' inputs from the start\n\
         \x20                URL and checks the final URL and field values.\n\n\
         Running the script (Node.js 20 or later), with this zip unpacked into a directory `bundle`:\n\
         \x20 cd bundle && npm i -D @playwright/test && npx playwright test repro.spec.ts\n\
         (the first time, `npx playwright install chromium` fetches Playwright's browser).\n\n\
         Text typed into masked fields (passwords…) is not in the recording: the script types\n\
         the value of the environment variable COBROWSE_MASKED_TEXT there (empty if unset).\n\
         Not reproduced: tab switches, file uploads, date/colour pickers, mouse moves without a\n\
         button, IME compositions in progress, and the timing between inputs.\n",
    );
    out
}

/// `console.log`: console messages, exceptions and failed requests in time order, one per line:
/// `TIME LEVEL [source] text (url:line)`.
fn console_log(rec: &Recording) -> String {
    let started = rec.meta.started_at;
    let mut requests: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut out = String::new();
    let mut line = |t: u32, level: &str, text: String| {
        out.push_str(&rfc3339(started.saturating_add(u64::from(t))));
        out.push(' ');
        out.push_str(level);
        out.push(' ');
        out.push_str(&line_safe(&text));
        out.push('\n');
    };
    for (t, event) in &rec.events {
        match event {
            Event::Console {
                level,
                text,
                source,
                url,
                line: at,
            } => line(
                *t,
                level_name(*level),
                format!("[{source}] {text}{}", location(url.as_deref(), *at)),
            ),
            Event::Exception {
                text,
                url,
                line: at,
                stack,
                ..
            } => {
                let stack = stack
                    .as_deref()
                    .map(|s| format!(" | {}", s.trim()))
                    .unwrap_or_default();
                line(
                    *t,
                    "ERROR",
                    format!("[exception] {text}{}{stack}", location(url.as_deref(), *at)),
                );
            }
            Event::Request {
                id, method, url, ..
            } => {
                requests.insert(id, (method, url));
            }
            Event::Response {
                id,
                status,
                status_text,
                ..
            } if *status >= 400 => {
                let (method, url) = requests.get(id.as_str()).copied().unwrap_or(("?", "?"));
                line(
                    *t,
                    "ERROR",
                    format!("[network] {method} {url}: HTTP {status} {status_text}"),
                );
            }
            Event::Failed {
                id,
                error,
                canceled,
                blocked,
            } => {
                let (method, url) = requests.get(id.as_str()).copied().unwrap_or(("?", "?"));
                let why = match (blocked, canceled) {
                    (Some(b), _) => format!("{error} (blocked: {b})"),
                    (None, true) => format!("{error} (canceled)"),
                    (None, false) => error.clone(),
                };
                line(
                    *t,
                    "ERROR",
                    format!("[network] {method} {url}: failed: {why}"),
                );
            }
            _ => {}
        }
    }
    out
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "DEBUG",
        Level::Log => "LOG",
        Level::Info => "INFO",
        Level::Warning => "WARNING",
        Level::Error => "ERROR",
    }
}

fn location(url: Option<&str>, line: Option<u32>) -> String {
    match (url.filter(|u| !u.is_empty()), line) {
        (Some(url), Some(line)) => format!(" ({url}:{line})"),
        (Some(url), None) => format!(" ({url})"),
        _ => String::new(),
    }
}

/// Text on one line: control characters (newlines included) and Unicode line separators are
/// escaped as `\n`, `\u{…}`.
fn line_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// `urls.txt`: one URL per line.
fn urls_txt(rec: &Recording) -> String {
    rec.visited_urls()
        .into_iter()
        .map(|u| line_safe(u) + "\n")
        .collect()
}

/// One request being put together from its events.
struct Entry<'a> {
    t: u32,
    wall_ms: u64,
    method: &'a str,
    url: &'a str,
    headers: &'a [Header],
    body_bytes: Option<u64>,
    response: Option<(u32, ResponseHead<'a>)>,
    /// When it finished or failed, and the bytes received.
    end: Option<(u32, u64)>,
    failure: Option<(&'a str, bool, Option<&'a str>)>,
}

struct ResponseHead<'a> {
    status: u16,
    status_text: &'a str,
    mime_type: &'a str,
    headers: &'a [Header],
    protocol: &'a str,
}

/// `network.har`: HAR 1.2, one entry per request, in the order they were sent.
fn har(rec: &Recording) -> Value {
    let mut entries: Vec<Entry> = Vec::new();
    // A request id's latest entry (a redirect reuses the id for the next request).
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (t, event) in &rec.events {
        match event {
            Event::Request {
                id,
                method,
                url,
                headers,
                wall_ms,
                body_bytes,
                ..
            } => {
                by_id.insert(id, entries.len());
                entries.push(Entry {
                    t: *t,
                    wall_ms: *wall_ms,
                    method,
                    url,
                    headers,
                    body_bytes: *body_bytes,
                    response: None,
                    end: None,
                    failure: None,
                });
            }
            Event::Response {
                id,
                status,
                status_text,
                mime_type,
                headers,
                protocol,
            } => {
                if let Some(e) = by_id.get(id.as_str()).and_then(|&i| entries.get_mut(i)) {
                    e.response = Some((
                        *t,
                        ResponseHead {
                            status: *status,
                            status_text,
                            mime_type,
                            headers,
                            protocol,
                        },
                    ));
                }
            }
            Event::Finished { id, bytes } => {
                if let Some(e) = by_id.get(id.as_str()).and_then(|&i| entries.get_mut(i)) {
                    e.end = Some((*t, *bytes));
                }
            }
            Event::Failed {
                id,
                error,
                canceled,
                blocked,
            } => {
                if let Some(e) = by_id.get(id.as_str()).and_then(|&i| entries.get_mut(i)) {
                    e.end = Some((*t, 0));
                    e.failure = Some((error, *canceled, blocked.as_deref()));
                }
            }
            _ => {}
        }
    }
    let started = rec.meta.started_at;
    let entries: Vec<Value> = entries.iter().map(|e| har_entry(e, started)).collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "cobrowse", "version": rec.meta.server },
            "pages": [],
            "entries": entries,
        }
    })
}

fn har_entry(e: &Entry, started: u64) -> Value {
    let response_t = e.response.as_ref().map(|(t, _)| *t);
    let end_t = e.end.map(|(t, _)| t).or(response_t).unwrap_or(e.t);
    let wait = response_t.unwrap_or(end_t).saturating_sub(e.t);
    let receive = response_t.map_or(0, |r| end_t.saturating_sub(r));
    let http_version = e
        .response
        .as_ref()
        .map_or("", |(_, r)| r.protocol)
        .to_string();
    let started_ms = if e.wall_ms > 0 {
        e.wall_ms
    } else {
        started.saturating_add(u64::from(e.t))
    };
    let query: Vec<Value> = url::Url::parse(e.url)
        .map(|u| {
            u.query_pairs()
                .map(|(name, value)| json!({ "name": name, "value": value }))
                .collect()
        })
        .unwrap_or_default();
    let received = e.end.map(|(_, bytes)| bytes);
    let response = match &e.response {
        Some((_, r)) => json!({
            "status": r.status,
            "statusText": r.status_text,
            "httpVersion": r.protocol,
            "cookies": [],
            "headers": headers(r.headers),
            "content": { "size": received.unwrap_or(0), "mimeType": r.mime_type },
            "redirectURL": header(r.headers, "location").unwrap_or(""),
            "headersSize": -1,
            "bodySize": received.map_or(-1, |b| b as i64),
        }),
        None => json!({
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "content": { "size": 0, "mimeType": "x-unknown" },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        }),
    };
    let mut entry = json!({
        "startedDateTime": rfc3339(started_ms),
        "time": end_t.saturating_sub(e.t),
        "request": {
            "method": e.method,
            "url": e.url,
            "httpVersion": http_version,
            "cookies": [],
            "headers": headers(e.headers),
            "queryString": query,
            "headersSize": -1,
            "bodySize": e.body_bytes.map_or(0, |b| b as i64),
        },
        "response": response,
        "cache": {},
        "timings": { "send": 0, "wait": wait, "receive": receive },
    });
    if let (Some((error, canceled, blocked)), Some(map)) = (e.failure, entry.as_object_mut()) {
        map.insert("_failed".into(), json!(true));
        map.insert("_error".into(), json!(error));
        map.insert("_canceled".into(), json!(canceled));
        if let Some(blocked) = blocked {
            map.insert("_blocked".into(), json!(blocked));
        }
    }
    entry
}

fn headers(headers: &[Header]) -> Vec<Value> {
    headers
        .iter()
        .map(|h| json!({ "name": h.name, "value": h.value }))
        .collect()
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-24T22:40:16.123Z`.
pub(crate) fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        unix_ms % 1000
    )
}

/// The zip entries' modification time: when the recording started (zip times have no zone;
/// UTC is used), or zip's epoch when out of its range.
fn zip_time(unix_ms: u64) -> zip::DateTime {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    u16::try_from(year)
        .ok()
        .and_then(|year| {
            zip::DateTime::from_date_and_time(
                year,
                month as u8,
                day as u8,
                (s / 3600) as u8,
                (s / 60 % 60) as u8,
                (s % 60) as u8,
            )
            .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::event::Actor;
    use crate::recording::format::Kind;
    use crate::recording::read::tests::{event, meta, update, write_file};
    use std::io::Read;

    fn files(zip: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).expect("zip");
        let mut out = HashMap::new();
        for i in 0..archive.len() {
            let mut f = archive.by_index(i).expect("entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("read");
            out.insert(f.name().to_string(), data);
        }
        out
    }

    fn text(files: &HashMap<String, Vec<u8>>, name: &str) -> String {
        String::from_utf8(files.get(name).unwrap_or_else(|| panic!("{name}")).clone())
            .expect("utf-8")
    }

    fn sample() -> Vec<u8> {
        let h = |n: &str, v: &str| Header {
            name: n.into(),
            value: v.into(),
        };
        let request = |id: &str, url: &str| Event::Request {
            id: id.into(),
            method: "GET".into(),
            url: url.into(),
            resource_type: "Fetch".into(),
            headers: vec![h("Accept", "*/*"), h("Cookie", "[redacted]")],
            wall_ms: 1_700_000_000_100,
            body_bytes: None,
        };
        let response = |id: &str, status: u16, text: &str| Event::Response {
            id: id.into(),
            status,
            status_text: text.into(),
            mime_type: "application/json".into(),
            headers: vec![h("Content-Type", "application/json")],
            protocol: "http/1.1".into(),
        };
        let page = |url: &str| Event::Server {
            message: json!({"t": "page", "url": url, "title": "x"}),
        };
        write_file(
            &meta(),
            &[
                (
                    Kind::Update,
                    0,
                    update(true, 8, 8, &[(0, 0, 8, 8, [1, 2, 3])]),
                ),
                (Kind::Event, 1, event(&page("http://site.test/form"))),
                (Kind::Event, 2, event(&page("http://site.test/form"))),
                (
                    Kind::Event,
                    100,
                    event(&request("r1", "http://site.test/ok?a=1&b=x%20y")),
                ),
                (Kind::Event, 130, event(&response("r1", 200, "OK"))),
                (
                    Kind::Event,
                    150,
                    event(&Event::Finished {
                        id: "r1".into(),
                        bytes: 42,
                    }),
                ),
                (
                    Kind::Event,
                    200,
                    event(&request("r2", "http://site.test/missing.json")),
                ),
                (Kind::Event, 210, event(&response("r2", 404, "Not Found"))),
                (
                    Kind::Event,
                    215,
                    event(&Event::Finished {
                        id: "r2".into(),
                        bytes: 9,
                    }),
                ),
                (
                    Kind::Event,
                    300,
                    event(&request("r3", "http://down.test/x")),
                ),
                (
                    Kind::Event,
                    340,
                    event(&Event::Failed {
                        id: "r3".into(),
                        error: "net::ERR_CONNECTION_REFUSED".into(),
                        canceled: false,
                        blocked: None,
                    }),
                ),
                (
                    Kind::Event,
                    1500,
                    event(&Event::Console {
                        level: Level::Error,
                        text: "order form: something broke\nsecond line".into(),
                        source: "console-api".into(),
                        url: Some("http://site.test/form".into()),
                        line: Some(17),
                    }),
                ),
                (
                    Kind::Event,
                    1501,
                    event(&Event::Exception {
                        text: "Uncaught Error: order form exploded".into(),
                        url: Some("http://site.test/form".into()),
                        line: Some(18),
                        column: Some(3),
                        stack: None,
                    }),
                ),
                (
                    Kind::Event,
                    2000,
                    event(&page("http://site.test/thanks?x=1")),
                ),
                (
                    Kind::Event,
                    2001,
                    event(&Event::Recording {
                        state: "stopped".into(),
                        by: Actor {
                            id: "p1".into(),
                            name: "Alice".into(),
                            role: "owner".into(),
                        },
                    }),
                ),
            ],
        )
        .expect("file")
    }

    #[test]
    fn the_bundle_holds_every_file() {
        let bytes = sample();
        let rec = Recording::parse(bytes.clone()).expect("parses");
        let zip = bundle(&rec).expect("bundle");
        let files = files(&zip);
        let mut names: Vec<_> = files.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "README.txt",
                "console.log",
                "final.png",
                "network.har",
                "recording.cbrec",
                "repro.spec.ts",
                "urls.txt"
            ]
        );
        assert_eq!(files["recording.cbrec"], bytes, "the original bytes");
        let png = image::load_from_memory(&files["final.png"])
            .expect("png")
            .to_rgb8();
        assert_eq!(png.dimensions(), (8, 8));
        assert_eq!(png.get_pixel(4, 4).0, [1, 2, 3]);
        assert_eq!(
            text(&files, "urls.txt"),
            "http://site.test/form\nhttp://site.test/thanks?x=1\n"
        );
        assert!(text(&files, "repro.spec.ts").contains("test("));
        assert!(text(&files, "README.txt").contains("npx playwright test repro.spec.ts"));
    }

    #[test]
    fn console_log_has_errors_exceptions_and_failed_requests_with_times() {
        let rec = Recording::parse(sample()).expect("parses");
        let log = console_log(&rec);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        // meta.startedAt is 1_700_000_000_000 ms = 2023-11-14T22:13:20Z.
        assert_eq!(
            lines[0],
            "2023-11-14T22:13:20.210Z ERROR [network] GET http://site.test/missing.json: HTTP 404 Not Found"
        );
        assert_eq!(
            lines[1],
            "2023-11-14T22:13:20.340Z ERROR [network] GET http://down.test/x: failed: net::ERR_CONNECTION_REFUSED"
        );
        assert_eq!(
            lines[2],
            "2023-11-14T22:13:21.500Z ERROR [console-api] order form: something broke\\nsecond line (http://site.test/form:17)"
        );
        assert!(lines[3].starts_with("2023-11-14T22:13:21.501Z ERROR [exception] Uncaught Error: order form exploded (http://site.test/form:18)"));
    }

    #[test]
    fn har_pairs_requests_with_responses_and_marks_failures() {
        let rec = Recording::parse(sample()).expect("parses");
        let har = har(&rec);
        assert_eq!(har["log"]["version"], "1.2");
        let entries = har["log"]["entries"].as_array().expect("entries");
        assert_eq!(entries.len(), 3);
        let ok = &entries[0];
        assert_eq!(ok["request"]["url"], "http://site.test/ok?a=1&b=x%20y");
        assert_eq!(
            ok["request"]["queryString"][1],
            json!({"name": "b", "value": "x y"})
        );
        assert_eq!(
            ok["request"]["headers"][1],
            json!({"name": "Cookie", "value": "[redacted]"})
        );
        assert_eq!(ok["response"]["status"], 200);
        assert_eq!(ok["response"]["content"]["size"], 42);
        assert_eq!(ok["response"]["httpVersion"], "http/1.1");
        assert_eq!(ok["startedDateTime"], "2023-11-14T22:13:20.100Z");
        assert_eq!(ok["time"], 50);
        assert_eq!(ok["timings"], json!({"send": 0, "wait": 30, "receive": 20}));
        assert!(ok.get("_failed").is_none());
        assert_eq!(entries[1]["response"]["status"], 404);
        let failed = &entries[2];
        assert_eq!(failed["_failed"], true);
        assert_eq!(failed["_error"], "net::ERR_CONNECTION_REFUSED");
        assert_eq!(failed["response"]["status"], 0);
        assert_eq!(failed["time"], 40);
    }

    #[test]
    fn lines_stay_lines() {
        assert_eq!(
            line_safe("a\nb\r\u{2028}c\u{1b}"),
            "a\\nb\\r\\u{2028}c\\u{1b}"
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339(1_795_999_216_789), "2026-11-30T00:40:16.789Z");
    }

    #[test]
    fn a_recording_without_a_screen_has_no_final_png() {
        let bytes = write_file(&meta(), &[]).expect("file");
        let rec = Recording::parse(bytes).expect("parses");
        let files = files(&bundle(&rec).expect("bundle"));
        assert!(!files.contains_key("final.png"));
        assert!(text(&files, "README.txt").contains("final.png is absent"));
    }
}
