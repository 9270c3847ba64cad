//! Bug bundles end to end: a recording of a session on the test site's order form, with the
//! events a real session there produces and a real keyframe, is bundled; every file of the zip
//! is checked, and its Playwright script is run for real (Playwright driving Debian's Chromium,
//! `tests/playwright`) against the live test site, which must receive the same order.

mod support;

use std::collections::HashMap;

use cobrowse::encode::{self, Quality};
use cobrowse::protocol::{self, flags, UpdateHeader};
use cobrowse::recording::bundle::bundle;
use cobrowse::recording::event::{Actor, Button, Event, Header, InputRecord, Level, Meta};
use cobrowse::recording::format::{self, Kind};
use cobrowse::recording::read::Recording;
use cobrowse::screen::{FrameSource, RawFrame, ScreenModel};
use cobrowse::tiles::TileSet;
use serde_json::json;
use support::TestSite;

/// What the participants typed into the password field; the recording holds only "•"s, so the
/// script types it from COBROWSE_MASKED_TEXT.
const PASSWORD: &str = "hunter2";

fn alice() -> Actor {
    Actor {
        id: "p1".into(),
        name: "Alice".into(),
        role: "owner".into(),
    }
}

/// A participant whose name tries to break out of the script's comments and strings: the
/// script must still run (and must not throw).
fn mallory() -> Actor {
    Actor {
        id: "p2".into(),
        name: "Mallory */\nthrow new Error('escaped the comment'); /* \u{2028}".into(),
        role: "controller".into(),
    }
}

/// The session's recording, event by event, with the `t` each happened at.
struct Session {
    t: u32,
    records: Vec<(Kind, u32, Vec<u8>)>,
}

impl Session {
    fn new() -> Self {
        Session {
            t: 0,
            records: Vec::new(),
        }
    }

    fn at(&mut self, ms: u32) -> &mut Self {
        self.t += ms;
        self
    }

    fn event(&mut self, e: Event) -> &mut Self {
        self.t += 1;
        let json = serde_json::to_vec(&e).expect("json");
        self.records.push((Kind::Event, self.t, json));
        self
    }

    fn input(&mut self, by: &Actor, input: InputRecord) -> &mut Self {
        self.event(Event::Input {
            by: by.clone(),
            input,
        })
    }

    fn page(&mut self, url: &str, title: &str) -> &mut Self {
        // Exactly as `ServerMessage::Page` is sent to viewers.
        self.event(Event::Server {
            message: json!({"t": "page", "url": url, "title": title, "loading": false,
                "canGoBack": false, "canGoForward": false}),
        })
    }

    /// A left click at (x, y) on the element `selector`, as the page script reports it.
    fn click(&mut self, by: &Actor, x: f64, y: f64, selector: &str, tag: &str) -> &mut Self {
        let mouse = |action: &str| InputRecord::Mouse {
            action: action.into(),
            x,
            y,
            button: Button::Left,
            click_count: 1,
            modifiers: 0,
        };
        self.input(by, mouse("pressed"))
            .input(by, mouse("released"))
            .event(Event::Target {
                x,
                y,
                selector: Some(selector.into()),
                tag: tag.into(),
            })
    }

    fn key(&mut self, by: &Actor, key: &str, text: Option<&str>, redacted: bool) -> &mut Self {
        for action in ["down", "up"] {
            self.input(
                by,
                InputRecord::Key {
                    action: action.into(),
                    key: key.into(),
                    code: String::new(),
                    text: text.filter(|_| action == "down").map(str::to_string),
                    modifiers: 0,
                    redacted,
                },
            );
        }
        self
    }

    fn type_text(&mut self, by: &Actor, text: &str) -> &mut Self {
        for c in text.chars() {
            let c = c.to_string();
            self.key(by, &c, Some(&c), false);
        }
        self
    }

    fn field(
        &mut self,
        selector: &str,
        tag: &str,
        input_type: &str,
        value: Option<&str>,
        checked: Option<bool>,
    ) -> &mut Self {
        self.event(Event::Field {
            selector: Some(selector.into()),
            tag: tag.into(),
            input_type: input_type.into(),
            value: value.map(str::to_string),
            checked,
            masked: false,
        })
    }

    fn update(&mut self, update: Vec<u8>) -> &mut Self {
        self.t += 1;
        self.records.push((Kind::Update, self.t, update));
        self
    }

    fn file(&self, site: &TestSite) -> Vec<u8> {
        let meta = Meta {
            version: format::VERSION,
            id: "rec-form".into(),
            session: "s-form".into(),
            started_at: 1_795_990_000_000,
            start_url: site.url("/form"),
            viewport: [800, 600],
            scale: 1.0,
            masked: true,
            keyframe_every_ms: 5000,
            server: "test".into(),
        };
        let mut out = Vec::new();
        format::write_header(&mut out).expect("header");
        let meta = serde_json::to_vec(&meta).expect("meta");
        format::write_record(&mut out, Kind::Meta, 0, &meta).expect("meta record");
        for (kind, t, payload) in &self.records {
            format::write_record(&mut out, *kind, *t, payload).expect("record");
        }
        out
    }
}

/// The screen the recording starts with: a real keyframe, made by the server's own screen model
/// and encoder from a Chromium-like JPEG (white with a blue bar).
fn keyframe() -> (Vec<u8>, image::RgbImage) {
    let mut img = image::RgbImage::from_pixel(800, 600, image::Rgb([255, 255, 255]));
    for y in 0..64 {
        for x in 0..800 {
            img.put_pixel(x, y, image::Rgb([20, 60, 200]));
        }
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .expect("jpeg");
    let (mut model, _watch) = ScreenModel::new();
    let snapshot = model
        .apply(RawFrame {
            jpeg: jpeg.into(),
            css_width: 800.0,
            css_height: 600.0,
            offset_top: 0.0,
            scroll_x: 0.0,
            scroll_y: 0.0,
            arrived: tokio::time::Instant::now(),
            source: FrameSource::Screencast,
            mask_seq: 0,
        })
        .expect("frame")
        .expect("a first version");
    let plan = encode::Plan {
        version: snapshot.version,
        keyframe: true,
        copies: Vec::new(),
        dirty: TileSet::full(snapshot.grid.len()),
        refine: TileSet::empty(snapshot.grid.len()),
        quality: Quality::High,
    };
    let encoded = encode::encode(&snapshot, &plan);
    let header = UpdateHeader {
        flags: flags::KEYFRAME,
        ops: encoded.ops,
        number: 1,
        version: snapshot.version,
        width: 800,
        height: 600,
    };
    (
        protocol::encode_update(&header, &encoded.body).to_vec(),
        snapshot.pixels.clone(),
    )
}

/// The final URL the order form leads to with these values (a GET form, fields in order).
fn thanks_url(site: &TestSite, fullname: &str) -> String {
    site.url(&format!(
        "/thanks?fullname={}&email=ada%40example.com&size=large&gift=yes&notes=",
        fullname.replace(' ', "+")
    ))
}

/// What a session on `/form` records: Alice fills in the order (a click into the name field, the
/// name, Tab to the email field, the email, the size "large", the password into the masked
/// field), Mallory ticks the gift wrap, Alice presses "Log an error" and "Load a missing file"
/// (with the console, exception and network events they cause), then, if `submit`, sends the
/// order and the page becomes `final_url`.
fn order_session(site: &TestSite, submit: bool, final_url: Option<&str>) -> Session {
    let (update, _) = keyframe();
    let alice = alice();
    let mut s = Session::new();
    s.event(Event::Recording {
        state: "started".into(),
        by: alice.clone(),
    })
    .update(update)
    .page(&site.url("/form"), "Order form")
    .at(800)
    .click(&alice, 300.0, 31.0, "#fullname", "input")
    .type_text(&alice, "Ada Lovelace")
    .field("#fullname", "input", "text", Some("Ada Lovelace"), None)
    .key(&alice, "Tab", None, false)
    .type_text(&alice, "ada@example.com")
    .field(
        "input[name=email]",
        "input",
        "email",
        Some("ada@example.com"),
        None,
    )
    .at(500)
    .click(&alice, 300.0, 98.0, "#size", "select")
    .event(Event::Action {
        by: alice.clone(),
        action: "choose".into(),
        url: None,
        tab: None,
        accept: None,
        index: Some(2),
        value: None,
        files: Vec::new(),
    })
    .field("#size", "select", "", Some("large"), None)
    .at(400)
    .click(&mallory(), 195.0, 130.0, "#gift", "input")
    .field("#gift", "input", "checkbox", Some("yes"), Some(true))
    .click(&alice, 300.0, 165.0, "#secret", "input");
    for _ in PASSWORD.chars() {
        s.key(&alice, "•", Some("•"), true);
    }
    s.field("#secret", "input", "password", None, None)
        .at(300)
        .click(&alice, 80.0, 330.0, "#oops", "button")
        .event(Event::Console {
            level: Level::Error,
            text: "order form: something broke".into(),
            source: "console-api".into(),
            url: Some(site.url("/form")),
            line: Some(17),
        })
        .event(Event::Exception {
            text: "Uncaught Error: order form exploded".into(),
            url: Some(site.url("/form")),
            line: Some(18),
            column: Some(41),
            stack: Some("Error: order form exploded\n    at http://x/form:18:41".into()),
        })
        .click(&alice, 260.0, 330.0, "#fail", "button")
        .event(Event::Request {
            id: "req-7".into(),
            method: "GET".into(),
            url: site.url("/missing.json"),
            resource_type: "Fetch".into(),
            headers: vec![Header {
                name: "Accept".into(),
                value: "*/*".into(),
            }],
            wall_ms: 1_795_990_002_500,
            body_bytes: None,
        })
        .at(12)
        .event(Event::Response {
            id: "req-7".into(),
            status: 404,
            status_text: "Not Found".into(),
            mime_type: "text/plain".into(),
            headers: vec![Header {
                name: "content-length".into(),
                value: "0".into(),
            }],
            protocol: "http/1.1".into(),
        })
        .event(Event::Finished {
            id: "req-7".into(),
            bytes: 0,
        });
    if submit {
        s.at(600).click(&alice, 250.0, 260.0, "#send", "button");
    }
    if let Some(url) = final_url {
        s.at(200).page(url, "Thanks");
    }
    s.at(100).event(Event::Recording {
        state: "stopped".into(),
        by: alice,
    });
    s
}

fn text(files: &HashMap<String, Vec<u8>>, name: &str) -> String {
    String::from_utf8(
        files
            .get(name)
            .unwrap_or_else(|| panic!("{name} in the bundle"))
            .clone(),
    )
    .expect("utf-8")
}

/// Runs `spec` with the harness; the masked password comes from COBROWSE_MASKED_TEXT.
async fn run_playwright(spec: &str) -> (bool, String) {
    support::playwright::run(spec, PASSWORD).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_holds_the_session_and_its_script_replays_the_order() {
    let mut site = TestSite::start().await;
    let final_url = thanks_url(&site, "Ada Lovelace");
    let file = order_session(&site, true, Some(&final_url)).file(&site);
    let rec = Recording::parse(file.clone()).expect("the recording reads");
    assert_eq!(rec.skipped, 0);
    assert!(!rec.truncated);

    let files = support::playwright::unzip(&bundle(&rec).expect("bundle"));
    let mut names: Vec<&str> = files.keys().map(String::as_str).collect();
    names.sort_unstable();
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
    assert_eq!(
        files["recording.cbrec"], file,
        "the recording, byte for byte"
    );

    let log = text(&files, "console.log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].ends_with(&format!(
            "ERROR [console-api] order form: something broke ({}:17)",
            site.url("/form")
        )),
        "{log}"
    );
    // meta.startedAt is 2026-11-29T22:06:40Z; the console error came about 2 s later.
    assert!(
        lines[0].starts_with("2026-11-29T22:06:42."),
        "UTC wall-clock time: {log}"
    );
    assert!(
        lines[1].contains("ERROR [exception] Uncaught Error: order form exploded"),
        "{log}"
    );
    assert!(
        lines[2].ends_with(&format!(
            "ERROR [network] GET {}: HTTP 404 Not Found",
            site.url("/missing.json")
        )),
        "{log}"
    );

    let har: serde_json::Value =
        serde_json::from_slice(&files["network.har"]).expect("HAR is JSON");
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["request"]["url"],
        site.url("/missing.json").as_str()
    );
    assert_eq!(entries[0]["response"]["status"], 404);
    // Response head 13 ms after the request, finished 1 ms later.
    assert_eq!(entries[0]["time"], 14);
    assert_eq!(entries[0]["timings"]["wait"], 13);
    assert_eq!(entries[0]["timings"]["receive"], 1);

    let png = image::load_from_memory_with_format(&files["final.png"], image::ImageFormat::Png)
        .expect("final.png is a PNG")
        .to_rgb8();
    let (_, pixels) = keyframe();
    assert_eq!(png.dimensions(), (800, 600));
    assert!(
        png == pixels,
        "the final screen is the recorded keyframe, decoded"
    );

    assert_eq!(
        text(&files, "urls.txt"),
        format!("{}\n{final_url}\n", site.url("/form"))
    );
    let readme = text(&files, "README.txt");
    for name in names.iter().filter(|n| **n != "README.txt") {
        assert!(readme.contains(name), "README explains {name}");
    }
    assert!(readme.contains("npx playwright test repro.spec.ts"));

    let spec = text(&files, "repro.spec.ts");
    for call in [
        "await page.locator(\"#fullname\").click();",
        "await page.keyboard.type(\"Ada Lovelace\");",
        "await page.keyboard.press(\"Tab\");",
        "await page.keyboard.type(\"ada@example.com\");",
        "await page.locator(\"#size\").selectOption(\"large\");",
        "await page.locator(\"#gift\").click();",
        "await page.keyboard.type(process.env.COBROWSE_MASKED_TEXT ?? '');",
        "await page.locator(\"#send\").click();",
    ] {
        assert!(spec.contains(call), "{call} in:\n{spec}");
    }

    let (ok, output) = run_playwright(&spec).await;
    assert!(ok, "the script passes:\n{output}\n{spec}");
    let submitted = site.report_of("submitted").await;
    let query = submitted["query"].as_str().expect("query");
    assert_eq!(
        query, "?fullname=Ada+Lovelace&email=ada%40example.com&size=large&gift=yes&notes=",
        "the site got the recorded order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_whose_session_ended_elsewhere_fails() {
    let site = TestSite::start().await;
    // The recorded session ended on another order than the one its inputs make.
    let elsewhere = thanks_url(&site, "Someone Else");
    let rec =
        Recording::parse(order_session(&site, true, Some(&elsewhere)).file(&site)).expect("reads");
    let spec = cobrowse::recording::playwright::script(&rec);
    let (ok, output) = run_playwright(&spec).await;
    assert!(!ok, "the script must fail:\n{output}");
    assert!(output.contains("toHaveURL"), "{output}");
    assert!(output.contains("1 failed"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_checks_the_final_fields() {
    let site = TestSite::start().await;
    // Not sent: the session ended on the filled-in form, whose fields the script checks.
    let rec = Recording::parse(order_session(&site, false, None).file(&site)).expect("reads");
    let spec = cobrowse::recording::playwright::script(&rec);
    for check in [
        "await expect(page.locator(\"#fullname\")).toHaveValue(\"Ada Lovelace\");",
        "await expect(page.locator(\"input[name=email]\")).toHaveValue(\"ada@example.com\");",
        "await expect(page.locator(\"#size\")).toHaveValue(\"large\");",
        "await expect(page.locator(\"#gift\")).toBeChecked();",
    ] {
        assert!(spec.contains(check), "{check} in:\n{spec}");
    }
    assert!(
        !spec.contains("#secret\")).toHaveValue"),
        "a masked field's value is unknown"
    );
    let (ok, output) = run_playwright(&spec).await;
    assert!(ok, "the script passes:\n{output}\n{spec}");
}
