//! The replay page and `cobrowse replay`, end to end: a recording file made of real screen
//! updates (synthetic 1280×720 screens through the crate's own pipeline: `ScreenModel` →
//! `Pacer` → `EncodeCache`, framed by `protocol::encode_update`, written with
//! `format::write_record`, a keyframe every 5 s) and events, served in-process by
//! `recording::replay::serve` and opened in a real headless Chromium.
//!
//! What the canvas must show after a seek is the screen fed in at that time: exactly, pixel for
//! pixel, on every tile the pipeline delivered losslessly (lossless WebP: the frames are fed as
//! pixels with no JPEG to forward). On the tiles the pacer counts as held lossy (lossy WebP of a
//! "video" that keeps changing, not yet refined) the screen fed in is not what anyone gets: there
//! the canvas must equal the same updates applied by the crate's reference decoder
//! (`encode::apply`, libwebp), within [`LOSSY_DECODER_ROUNDING`].

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chromiumoxide::cdp::browser_protocol::input::MouseButton;
use chromiumoxide::Page;
use image::{Rgb, RgbImage};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use cobrowse::encode::{apply, EncodeCache};
use cobrowse::pacing::Pacer;
use cobrowse::protocol::{self, flags, UpdateHeader};
use cobrowse::recording::format::{self, Kind};
use cobrowse::recording::replay;
use cobrowse::screen::{FrameSource, RawFrame, ScreenModel};
use cobrowse::tiles::Grid;
use support::viewer::{canvas_pixels, click, eval, until, ViewerBrowser};

const W: u32 = 1280;
const H: u32 = 720;
/// A new screen every this many ms.
const STEP_MS: u32 = 250;
const KEYFRAME_EVERY_MS: u32 = 5000;
/// Lossy tiles: largest channel difference between the browser's decoding of the lossy WebP and
/// the server-side reference decoding of the same updates (`encode::apply`, libwebp).
const LOSSY_DECODER_ROUNDING: u8 = 2;

const START_URL: &str = "https://shop.example/";
const CHECKOUT_URL: &str = "https://shop.example/checkout";

fn hash(a: u32, b: u32, c: u32) -> u32 {
    let mut h = a
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add(b.wrapping_mul(0x85EB_CA77))
        .wrapping_add(c.wrapping_mul(0xC2B2_AE3D));
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h
}

/// The page's scroll position at frame `i`: still, down, still, up (24 px a frame).
fn scroll_y(i: u32) -> u32 {
    match i % 80 {
        0..20 => 0,
        p @ 20..40 => (p - 20) * 24,
        40..60 => 480,
        p => 480 - (p - 60) * 24,
    }
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

/// The screen at frame `i`: a page of coloured blocks (some change every 3 s) scrolled to
/// `scroll_y(i)`, under a fixed header with a block that moves every frame, and a fixed video.
fn screen(i: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let sy = scroll_y(i);
    let epoch = i / 12;
    let (cw, ch) = (64u32, 48u32);
    let first_row = sy / ch;
    for cy in first_row..=(sy + H) / ch {
        for cx in 0..W / cw {
            let h = hash(cx, cy, 7);
            let colour = if h.is_multiple_of(4) {
                Some(h)
            } else if h % 9 == 1 {
                Some(hash(cx, cy, epoch + 100))
            } else {
                None
            };
            let top = i64::from(cy * ch) - i64::from(sy);
            let (y0, hh) = if top < 0 {
                (0, (i64::from(ch) + top).max(0) as u32)
            } else {
                (top as u32, ch)
            };
            // A light grid line on each block's top and left edge.
            fill(&mut img, cx * cw, y0, cw, hh, Rgb([235, 235, 235]));
            if let Some(c) = colour {
                let [r, g, b, _] = c.to_le_bytes();
                fill(&mut img, cx * cw + 1, y0, cw - 1, hh, Rgb([r, g, b]));
            } else {
                fill(&mut img, cx * cw + 1, y0, cw - 1, hh, Rgb([255, 255, 255]));
            }
            if top >= 0 {
                fill(&mut img, cx * cw, top as u32, cw, 1, Rgb([235, 235, 235]));
            }
        }
    }
    // A fixed "video" (photo-like: sent lossy while it plays, refined once it pauses): plays for
    // 25 frames of every 40.
    let v = if i % 40 < 25 { i } else { i - i % 40 + 24 };
    for y in 0..180u32 {
        for x in 0..320u32 {
            let p = Rgb([
                ((x * 3 + v * 37) % 256) as u8,
                ((y * 2 + x + v * 53) % 256) as u8,
                (((x ^ y) + v * 71) % 256) as u8,
            ]);
            img.put_pixel(900 + x, 500 + y, p);
        }
    }
    // The fixed header and its moving block.
    fill(&mut img, 0, 0, W, 40, Rgb([30, 34, 48]));
    let x = 20 + (i % 60) * 20;
    fill(&mut img, x, 8, 60, 24, Rgb([250, (i * 37 % 256) as u8, 40]));
    img
}

/// One update of the recording and what the viewer has once it painted it.
struct Painted {
    t: u32,
    /// The frame (`screen(frame)`) it brings the screen to.
    frame: u32,
    /// Tiles held lossy afterwards, with their pixels as the reference decoder paints them.
    lossy: Vec<(usize, RgbImage)>,
    keyframe: bool,
}

struct Synthetic {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    painted: Vec<Painted>,
    /// (offset, t) of each record after the header.
    records: Vec<(usize, u32)>,
}

impl Synthetic {
    /// What the screen is at `t`: the frame and the lossy tiles of the last update at or before it.
    fn truth(&self, t: u32) -> &Painted {
        self.painted
            .iter()
            .rev()
            .find(|p| p.t <= t)
            .expect("an update at or before t")
    }
}

fn actor(id: &str, name: &str, role: &str) -> Value {
    json!({ "id": id, "name": name, "role": role })
}

/// The events of a recording of `duration` ms: a navigation, a click, errors, chat, masks.
fn events(duration: u32) -> Vec<(u32, Value)> {
    let ann = actor("p1", "Ann", "owner");
    let mut ev = vec![
        (
            0,
            json!({"type": "recording", "state": "started", "by": actor("api", "API", "api")}),
        ),
        (
            0,
            json!({"type": "server", "message": {"t": "page", "url": START_URL, "title": "Shop", "loading": false, "canGoBack": false, "canGoForward": false}}),
        ),
        (
            6000,
            json!({"type": "input", "by": ann, "input": {"kind": "mouse", "action": "pressed", "x": 100.0, "y": 200.0, "button": "left", "clickCount": 1, "modifiers": 0}}),
        ),
        (
            6080,
            json!({"type": "input", "by": ann, "input": {"kind": "mouse", "action": "released", "x": 100.0, "y": 200.0, "button": "left", "clickCount": 1, "modifiers": 0}}),
        ),
        (
            7900,
            json!({"type": "action", "by": ann, "action": "navigate", "url": CHECKOUT_URL}),
        ),
        (
            8000,
            json!({"type": "server", "message": {"t": "page", "url": CHECKOUT_URL, "title": "Checkout", "loading": true, "canGoBack": true, "canGoForward": false}}),
        ),
        (
            8500,
            json!({"type": "server", "message": {"t": "page", "url": CHECKOUT_URL, "title": "Checkout", "loading": false, "canGoBack": true, "canGoForward": false}}),
        ),
        (
            9000,
            json!({"type": "server", "message": {"t": "masks", "rects": [[100, 300, 200, 40]]}}),
        ),
        (
            12000,
            json!({"type": "console", "level": "error", "text": "TypeError: cart is undefined", "source": "console-api"}),
        ),
        (
            12500,
            json!({"type": "console", "level": "log", "text": "just a log", "source": "console-api"}),
        ),
        (
            14000,
            json!({"type": "request", "id": "r1", "method": "POST", "url": "https://shop.example/api/pay", "resourceType": "Fetch", "headers": [], "wallMs": 0}),
        ),
        (
            14100,
            json!({"type": "response", "id": "r1", "status": 500, "statusText": "Internal Server Error", "mimeType": "text/plain", "headers": [], "protocol": "http/1.1"}),
        ),
        (
            14900,
            json!({"type": "request", "id": "r2", "method": "GET", "url": "https://cdn.example/a.js", "resourceType": "Script", "headers": [], "wallMs": 0}),
        ),
        (
            15000,
            json!({"type": "failed", "id": "r2", "error": "net::ERR_CONNECTION_REFUSED", "canceled": false}),
        ),
        (
            15100,
            json!({"type": "failed", "id": "r3", "error": "net::ERR_ABORTED", "canceled": true}),
        ),
        (
            17000,
            json!({"type": "server", "message": {"t": "chat", "id": 1, "from": "p2", "name": "Bob", "color": "#3ecf8e", "text": "<img src=x onerror=\"document.title='pwned'\"> can you see the error?", "at": 0}}),
        ),
        (
            20000,
            json!({"type": "server", "message": {"t": "masks", "rects": []}}),
        ),
        (
            22000,
            json!({"type": "exception", "text": "Uncaught ReferenceError: total is not defined"}),
        ),
    ];
    ev.retain(|(t, _)| *t < duration);
    ev.push((
        duration,
        json!({"type": "recording", "state": "stopped", "by": actor("p1", "Ann", "owner")}),
    ));
    ev
}

/// Markers the page must show for [`events`]: (kind, t).
const MARKERS: &[(&str, u32)] = &[
    ("click", 6000),
    ("nav", 8000),
    ("error", 12000),
    ("error", 14100),
    ("error", 15000),
    ("chat", 17000),
    ("error", 22000),
];

/// Builds a recording of `duration` ms through the real screen pipeline, on a paused clock (the
/// pipeline's timing decisions, like refining a still lossy tile, follow recording time).
fn build(duration: u32) -> Synthetic {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(build_paused(duration))
    })
    .join()
    .expect("recording built")
}

async fn build_paused(duration: u32) -> Synthetic {
    let (mut model, _watch) = ScreenModel::new();
    let cache = EncodeCache::default();
    let mut pacer = Pacer::new(tokio::time::Instant::now());
    let mut records: Vec<(Kind, u32, Vec<u8>)> = Vec::new();
    let meta = json!({
        "version": format::VERSION, "id": "rec-test", "session": "s-test", "startedAt": 0,
        "startUrl": START_URL, "viewport": [W, H], "scale": 1.0, "masked": true,
        "keyframeEveryMs": KEYFRAME_EVERY_MS, "server": "test",
    });
    records.push((Kind::Meta, 0, serde_json::to_vec(&meta).expect("json")));
    for (t, e) in events(duration) {
        records.push((Kind::Event, t, serde_json::to_vec(&e).expect("json")));
    }
    let mut painted = Vec::new();
    let mut latest = None;
    let mut reference = RgbImage::new(W, H);
    let grid = Grid::new(W, H);
    let mut i = 0u32;
    while i * STEP_MS < duration {
        let t = i * STEP_MS;
        if i > 0 {
            tokio::time::advance(Duration::from_millis(u64::from(STEP_MS))).await;
        }
        let frame = RawFrame {
            jpeg: Bytes::new(),
            css_width: f64::from(W),
            css_height: f64::from(H),
            offset_top: 0.0,
            scroll_x: 0.0,
            scroll_y: f64::from(scroll_y(i)),
            arrived: tokio::time::Instant::now(),
            source: FrameSource::Screencast,
            mask_seq: 0,
        };
        if let Some(s) = model.apply_decoded(screen(i), &frame, Bytes::new(), Arc::from([])) {
            latest = Some(s);
        }
        let snapshot = latest.clone().expect("a screen");
        if t.is_multiple_of(KEYFRAME_EVERY_MS) {
            pacer.resync();
        }
        if let Some(plan) = pacer.plan(&snapshot) {
            let encoded = cache
                .get(snapshot.clone(), plan.clone())
                .await
                .expect("encoded");
            let number = pacer.next_number();
            let refine_only = !plan.keyframe && plan.copies.is_empty() && plan.dirty.is_empty();
            let header = UpdateHeader {
                flags: if plan.keyframe { flags::KEYFRAME } else { 0 }
                    | if refine_only { flags::REFINE } else { 0 },
                ops: encoded.ops,
                number,
                version: plan.version,
                width: W as u16,
                height: H as u16,
            };
            let now = tokio::time::Instant::now();
            pacer.sent(&snapshot, &plan, &encoded, now);
            pacer.acked(number, now);
            records.push((
                Kind::Update,
                t,
                protocol::encode_update(&header, &encoded.body).to_vec(),
            ));
            apply(&mut reference, &encoded.body).expect("reference decoding");
            let lossy = pacer
                .held_lossy()
                .iter()
                .map(|tile| {
                    let r = grid.tile_rect(tile);
                    let pixels = image::imageops::crop_imm(&reference, r.x, r.y, r.w, r.h);
                    (tile, pixels.to_image())
                })
                .collect();
            painted.push(Painted {
                t,
                frame: i,
                lossy,
                keyframe: plan.keyframe,
            });
        }
        i += 1;
    }
    // Time order; at the same time, metadata first, then events, then the update.
    records.sort_by_key(|(kind, t, _)| (*t, *kind as u8 != Kind::Meta as u8));
    let mut bytes = Vec::new();
    format::write_header(&mut bytes).expect("header");
    let mut offsets = Vec::new();
    for (kind, t, payload) in &records {
        offsets.push((bytes.len(), *t));
        format::write_record(&mut bytes, *kind, *t, payload).expect("record");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rec-test.cbrec");
    std::fs::write(&path, &bytes).expect("write recording");
    Synthetic {
        _dir: dir,
        path,
        bytes,
        painted,
        records: offsets,
    }
}

/// `recording::replay::serve` on a loopback port, until the token is cancelled.
async fn serve(path: &Path) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    tokio::spawn(replay::serve(
        path.to_path_buf(),
        listener,
        shutdown.clone(),
    ));
    (base, shutdown)
}

async fn open(browser: &ViewerBrowser, base: &str) -> Page {
    browser
        .browser
        .new_page(format!("{base}/replay/local"))
        .await
        .expect("open the replay page")
}

/// Waits for `__replay.ready`; returns what it resolved to, or `{"error": message}`.
async fn ready(page: &Page) -> Value {
    eval(
        page,
        "new Promise(r => { const w = () => window.__replay ? window.__replay.ready.then(r, e => r({error: String(e && e.message || e)})) : setTimeout(w, 10); w(); })",
    )
    .await
}

async fn state(page: &Page) -> Value {
    eval(page, "window.__replay.state()").await
}

/// Compares the canvas with the screen at `t`; returns (lossless tiles compared, lossy tiles).
async fn assert_canvas_is_screen_at(page: &Page, rec: &Synthetic, t: u32) -> (usize, usize) {
    let truth = rec.truth(t);
    let expected = screen(truth.frame);
    let canvas = canvas_pixels(page).await;
    assert_eq!(
        canvas.dimensions(),
        expected.dimensions(),
        "t={t}: canvas size"
    );
    let grid = Grid::new(W, H);
    let lossy: std::collections::HashMap<usize, &RgbImage> =
        truth.lossy.iter().map(|(tile, px)| (*tile, px)).collect();
    let mut exact_tiles = 0;
    for tile in 0..grid.len() {
        let r = grid.tile_rect(tile);
        let mut max = 0u8;
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                let a = canvas.get_pixel(x, y).0;
                let b = match lossy.get(&tile) {
                    Some(reference) => reference.get_pixel(x - r.x, y - r.y).0,
                    None => expected.get_pixel(x, y).0,
                };
                for c in 0..3 {
                    max = max.max(a[c].abs_diff(b[c]));
                }
            }
        }
        if lossy.contains_key(&tile) {
            assert!(
                max <= LOSSY_DECODER_ROUNDING,
                "t={t} (frame {}): lossy tile {tile} at ({},{}) differs from the reference decoding by {max}",
                truth.frame,
                r.x,
                r.y
            );
        } else {
            assert_eq!(
                max, 0,
                "t={t} (frame {}): lossless tile {tile} at ({},{}) differs by up to {max}",
                truth.frame, r.x, r.y
            );
            exact_tiles += 1;
        }
    }
    (exact_tiles, lossy.len())
}

/// From now on, what the page hands to the browser's download (a link with `download`) is kept
/// for [`saved`]: its file name and the blob's bytes (read here: the page's CSP lets nothing
/// fetch the blob).
async fn capture_saves(page: &Page) {
    eval(
        page,
        "window.__saved = new Promise(resolve => {
           const blobs = new Map();
           const create = URL.createObjectURL;
           URL.createObjectURL = (blob) => { const url = create(blob); blobs.set(url, blob); return url; };
           const click = HTMLAnchorElement.prototype.click;
           HTMLAnchorElement.prototype.click = function () {
             if (!this.download) return click.call(this);
             const name = this.download;
             const reader = new FileReader();
             reader.onload = () => resolve({ name, base64: String(reader.result).split(',')[1] });
             reader.readAsDataURL(blobs.get(this.href));
           };
         }); true",
    )
    .await;
}

/// The first file the page saved since [`capture_saves`]: (name, bytes).
async fn saved(page: &Page) -> (String, Vec<u8>) {
    let saved = eval(page, "window.__saved").await;
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        saved["base64"].as_str().expect("base64"),
    )
    .expect("base64");
    (saved["name"].as_str().expect("name").to_string(), bytes)
}

async fn seek(page: &Page, t: u32) {
    eval(page, &format!("window.__replay.seek({t}).then(() => true)")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_page_shows_the_recorded_screen_events_and_controls() {
    support::init_logs();
    let rec = build(30_000);
    let keyframes = rec.painted.iter().filter(|p| p.keyframe).count();
    assert_eq!(keyframes, 6, "a keyframe every 5 s");
    assert!(
        rec.painted.iter().any(|p| !p.lossy.is_empty()),
        "some tiles held lossy (so the tolerance is exercised)"
    );
    let (base, shutdown) = serve(&rec.path).await;
    let browser = ViewerBrowser::launch(1400, 1000).await;
    let page = open(&browser, &base).await;
    let loaded = ready(&page).await;
    assert!(loaded.get("error").is_none(), "loaded: {loaded}");
    assert_eq!(loaded["truncated"], false);
    assert_eq!(eval(&page, "window.__replay.duration").await, json!(30_000));
    assert_eq!(
        eval(&page, "document.getElementById('time').textContent").await,
        json!("00:00 / 00:30")
    );

    // Seeks: between keyframes, onto one, backwards, during a scroll, to the start and the end.
    let mut lossy_seen = 0;
    for t in [
        12_300, 3_100, 27_900, 5_000, 9_900, 6_420, 0, 14_999, 21_130, 30_000,
    ] {
        seek(&page, t).await;
        let (_, lossy) = assert_canvas_is_screen_at(&page, &rec, t).await;
        lossy_seen += lossy;
        let s = state(&page).await;
        assert_eq!(s["t"], json!(t));
        let url = if t >= 8000 { CHECKOUT_URL } else { START_URL };
        assert_eq!(s["url"], url, "t={t}");
        assert_eq!(
            eval(&page, "document.getElementById('replay-url').textContent").await,
            url
        );
        let title = if t >= 8000 { "Checkout" } else { "Shop" };
        assert_eq!(
            eval(&page, "document.getElementById('replay-title').textContent").await,
            title
        );
        // The masks message of 9 s holds until the empty one of 20 s.
        let boxes = eval(
            &page,
            "document.querySelectorAll('#masks .mask-box').length",
        )
        .await;
        let expected_boxes = u64::from((9000..20_000).contains(&t));
        assert_eq!(boxes, json!(expected_boxes), "t={t}: mask boxes");
    }
    assert!(lossy_seen > 0, "some seeks landed where tiles were lossy");
    screenshot(&page, "desktop").await;

    // Markers of each kind at their times, with tooltips, and a legend.
    let s = state(&page).await;
    let markers: Vec<(String, u64)> = s["markers"]
        .as_array()
        .expect("markers")
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().expect("kind").to_string(),
                m["t"].as_u64().expect("t"),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = MARKERS
        .iter()
        .map(|(k, t)| (k.to_string(), u64::from(*t)))
        .collect();
    assert_eq!(markers, expected);
    let dom = eval(
        &page,
        "[...document.querySelectorAll('#markers .marker')].map(m => [m.dataset.kind, Number(m.dataset.t), m.title, getComputedStyle(m).backgroundColor])",
    )
    .await;
    let dom = dom.as_array().expect("markers");
    assert_eq!(dom.len(), MARKERS.len());
    let mut colours = std::collections::HashMap::new();
    for (m, (kind, t)) in dom.iter().zip(MARKERS) {
        assert_eq!(m[0], *kind);
        assert_eq!(m[1], json!(t));
        assert!(
            m[2].as_str().expect("title").starts_with(&format!(
                "{:02}:{:02} ",
                t / 60_000,
                t / 1000 % 60
            )),
            "tooltip {m}"
        );
        colours.insert(kind.to_string(), m[3].as_str().expect("colour").to_string());
    }
    let distinct: std::collections::HashSet<_> = colours.values().collect();
    assert_eq!(distinct.len(), 4, "four kinds, four colours: {colours:?}");
    assert_eq!(
        eval(&page, "document.querySelectorAll('.legend li').length").await,
        json!(4)
    );
    // Tooltips and list say what happened, the page's and participants' text kept as text.
    let list = eval(
        &page,
        "[...document.querySelectorAll('#event-list li')].map(li => li.textContent)",
    )
    .await;
    let list: Vec<String> = serde_json::from_value(list).expect("strings");
    assert_eq!(list.len(), MARKERS.len());
    assert!(
        list[0].contains("Ann") && list[0].contains("100, 200"),
        "{list:?}"
    );
    assert!(list[1].contains(CHECKOUT_URL), "{list:?}");
    assert!(list[2].contains("TypeError: cart is undefined"), "{list:?}");
    assert!(
        list[3].contains("500") && list[3].contains("/api/pay"),
        "{list:?}"
    );
    assert!(list[4].contains("ERR_CONNECTION_REFUSED"), "{list:?}");
    assert!(
        list[5].contains("Bob") && list[5].contains("<img src=x onerror="),
        "{list:?}"
    );
    assert_eq!(
        eval(&page, "document.querySelectorAll('#event-list img').length").await,
        json!(0),
        "chat text is not markup"
    );

    // Clicking the chat entry seeks there.
    let at = eval(
        &page,
        "(() => { const b = document.querySelector('#event-list li[data-kind=chat] button'); b.scrollIntoView(); const r = b.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()",
    )
    .await;
    let at = (
        at[0].as_f64().expect("x").round(),
        at[1].as_f64().expect("y").round(),
    );
    click(&page, at, MouseButton::Left, 1).await;
    until(
        &page,
        "window.__replay.state().t === 17000 && window.__replay.state().caughtUp",
        "replay:state",
    )
    .await;
    assert_canvas_is_screen_at(&page, &rec, 17_000).await;
    assert_eq!(
        eval(
            &page,
            "document.querySelector('#event-list li.current').dataset.kind"
        )
        .await,
        "chat"
    );

    // Keyboard: → is 5 s on, ← 5 s back.
    support::viewer::key(&page, "ArrowRight", "ArrowRight", 39, None).await;
    until(
        &page,
        "window.__replay.state().t === 22000 && window.__replay.state().caughtUp",
        "replay:state",
    )
    .await;
    assert_canvas_is_screen_at(&page, &rec, 22_000).await;
    support::viewer::key(&page, "ArrowLeft", "ArrowLeft", 37, None).await;
    until(
        &page,
        "window.__replay.state().t === 17000 && window.__replay.state().caughtUp",
        "replay:state",
    )
    .await;
    // Space plays and pauses, even with the focus on the events list.
    support::viewer::key(&page, " ", "Space", 32, Some(" ")).await;
    until(&page, "window.__replay.state().playing", "replay:state").await;
    support::viewer::key(&page, " ", "Space", 32, Some(" ")).await;
    until(&page, "!window.__replay.state().playing", "replay:state").await;
    assert!(state(&page).await["t"].as_f64().expect("t") >= 17_000.0);

    // Play at 8× from 20 s: it reaches the end and stops there, showing the last screen.
    seek(&page, 20_000).await;
    eval(&page, "document.getElementById('speed').value = '8'; document.getElementById('speed').dispatchEvent(new Event('change')); true").await;
    eval(&page, "window.__replay.play(); true").await;
    assert_eq!(state(&page).await["playing"], true);
    until(
        &page,
        "!window.__replay.state().playing && window.__replay.state().t === 30000 && window.__replay.state().caughtUp",
        "replay:state",
    )
    .await;
    assert_canvas_is_screen_at(&page, &rec, 30_000).await;
    assert_eq!(
        eval(&page, "document.getElementById('time').textContent").await,
        json!("00:30 / 00:30")
    );

    // A press on the timeline seeks to where it was pressed.
    let at = eval(
        &page,
        "(() => { const r = document.getElementById('timeline').getBoundingClientRect(); return [r.left + r.width * 0.25, r.top + r.height / 2]; })()",
    )
    .await;
    click(
        &page,
        (at[0].as_f64().expect("x"), at[1].as_f64().expect("y")),
        MouseButton::Left,
        1,
    )
    .await;
    until(
        &page,
        "Math.abs(window.__replay.state().t - 7500) < 150 && window.__replay.state().caughtUp",
        "replay:state",
    )
    .await;
    let t = state(&page).await["t"].as_f64().expect("t") as u32;
    assert_canvas_is_screen_at(&page, &rec, t).await;

    // `cobrowse replay` builds the bug bundle from the file: the page saves it as local.zip, a
    // zip that holds the recording itself.
    capture_saves(&page).await;
    eval(&page, "document.getElementById('bundle').click(); true").await;
    let (name, zip) = saved(&page).await;
    assert_eq!(name, "local.zip");
    let files = support::playwright::unzip(&zip);
    assert_eq!(
        files["recording.cbrec"], rec.bytes,
        "the bundle holds the recording"
    );
    assert!(files.contains_key("repro.spec.ts") && files.contains_key("network.har"));
    assert_eq!(
        eval(&page, "document.title")
            .await
            .as_str()
            .map(|t| t.contains("pwned")),
        Some(false)
    );

    browser.close().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_cut_off_plays_up_to_its_cut_and_says_so() {
    support::init_logs();
    let rec = build(20_000);
    // Cut in the middle of the first record at or after 12.6 s.
    let (offset, _) = *rec
        .records
        .iter()
        .find(|(_, t)| *t >= 12_600)
        .expect("a record after 12.6 s");
    let last_whole = rec
        .records
        .iter()
        .take_while(|(o, _)| *o < offset)
        .map(|(_, t)| *t)
        .max()
        .expect("records before the cut");
    let dir = tempfile::tempdir().expect("temp dir");
    let cut = dir.path().join("cut.cbrec");
    std::fs::write(&cut, &rec.bytes[..offset + 7]).expect("write");
    let (base, shutdown) = serve(&cut).await;
    let browser = ViewerBrowser::launch(1400, 1000).await;
    let page = open(&browser, &base).await;
    let loaded = ready(&page).await;
    assert_eq!(loaded["truncated"], true, "{loaded}");
    assert_eq!(
        eval(&page, "window.__replay.duration").await,
        json!(last_whole)
    );
    let notice = eval(
        &page,
        "document.getElementById('replay-notice').textContent",
    )
    .await;
    let cut_at = format!("Recording cut off at 00:{:02}", last_whole / 1000);
    assert!(
        notice.as_str().expect("text").starts_with(&cut_at),
        "{notice} / {cut_at}"
    );
    eval(
        &page,
        "window.__replay.seek(8000); window.__replay.setSpeed(8); window.__replay.play(); true",
    )
    .await;
    until(
        &page,
        &format!("!window.__replay.state().playing && window.__replay.state().t === {last_whole} && window.__replay.state().caughtUp"),
        "replay:state",
    )
    .await;
    assert_canvas_is_screen_at(&page, &rec, last_whole).await;
    shutdown.cancel();

    // One changed byte in a record (its CRC no longer matches): the same, from that record on.
    let mut corrupt = rec.bytes.clone();
    corrupt[offset + 12] ^= 0x40;
    let bad = dir.path().join("corrupt.cbrec");
    std::fs::write(&bad, &corrupt).expect("write");
    let (base, shutdown) = serve(&bad).await;
    let page = open(&browser, &base).await;
    let loaded = ready(&page).await;
    assert_eq!(loaded["truncated"], true, "{loaded}");
    assert_eq!(
        eval(&page, "window.__replay.duration").await,
        json!(last_whole)
    );
    seek(&page, last_whole).await;
    assert_canvas_is_screen_at(&page, &rec, last_whole).await;
    browser.close().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_files_are_refused_by_the_command_and_the_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a recording\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cobrowse"))
        .arg("replay")
        .arg(&text)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run cobrowse");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not a cobrowse recording"), "{stderr}");

    let public = std::process::Command::new(env!("CARGO_BIN_EXE_cobrowse"))
        .arg("replay")
        .arg(&text)
        .args(["--listen", "0.0.0.0:8090"])
        .output()
        .expect("run cobrowse");
    assert_eq!(public.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&public.stderr).contains("no authentication"));

    // Served anyway (the in-process server does not check), the page says what it is.
    let (base, shutdown) = serve(&text).await;
    let browser = ViewerBrowser::launch(800, 600).await;
    let page = open(&browser, &base).await;
    let loaded = ready(&page).await;
    assert!(loaded.get("error").is_some(), "{loaded}");
    assert_eq!(
        eval(
            &page,
            "document.getElementById('overlay-title').textContent"
        )
        .await,
        "Not a recording"
    );
    assert_eq!(
        eval(&page, "document.getElementById('overlay').hidden").await,
        false
    );
    browser.close().await;
    shutdown.cancel();
}

/// Seek time: the median of 15 seeks to random times in a 2-minute recording with a keyframe
/// every 5 s, measured in the page (from the call to the promise resolving: painted).
/// `cargo test --test replay -- --ignored --nocapture seek_time`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn seek_time() {
    let rec = build(120_000);
    let (base, shutdown) = serve(&rec.path).await;
    let browser = ViewerBrowser::launch(1400, 1000).await;
    let page = open(&browser, &base).await;
    ready(&page).await;
    let times = eval(
        &page,
        "(async () => {
           let seed = 12345;
           const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
           const out = [];
           for (let i = 0; i < 15; i++) {
             const t = Math.floor(rand() * window.__replay.duration);
             const start = performance.now();
             await window.__replay.seek(t);
             out.push(performance.now() - start);
           }
           return out;
         })()",
    )
    .await;
    let mut times: Vec<f64> = serde_json::from_value(times).expect("numbers");
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    eprintln!(
        "seek time over 15 random seeks in a 2-minute recording (keyframe every 5 s, {} updates, {} bytes): median {median:.1} ms, min {:.1} ms, max {:.1} ms",
        rec.painted.len(),
        rec.bytes.len(),
        times[0],
        times[times.len() - 1]
    );
    browser.close().await;
    shutdown.cancel();
}

/// Saves a screenshot of the page to `$REPLAY_SCREENSHOTS/{name}.png` when that is set (for
/// looking at the page; not a check).
async fn screenshot(page: &Page, name: &str) {
    let Ok(dir) = std::env::var("REPLAY_SCREENSHOTS") else {
        return;
    };
    let png = page
        .screenshot(chromiumoxide::page::ScreenshotParams::builder().build())
        .await
        .expect("screenshot");
    std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_controls_wrap_and_a_touch_on_the_timeline_seeks() {
    use chromiumoxide::cdp::browser_protocol::input::{
        DispatchTouchEventParams, DispatchTouchEventType, TouchPoint,
    };
    let rec = build(30_000);
    let (base, shutdown) = serve(&rec.path).await;
    let browser = ViewerBrowser::launch(390, 844).await;
    let page = open(&browser, &base).await;
    let loaded = ready(&page).await;
    assert!(loaded.get("error").is_none(), "loaded: {loaded}");
    let layout = eval(
        &page,
        "(() => {
           const rect = (id) => document.getElementById(id).getBoundingClientRect();
           const t = rect('timeline'), c = rect('screen'), p = rect('play');
           return { width: innerWidth, scrollWidth: document.documentElement.scrollWidth,
                    timelineWidth: t.width, timelineHeight: t.height, timelineTop: t.top, playTop: p.top,
                    canvasWidth: c.width, canvasHeight: c.height };
         })()",
    )
    .await;
    let f = |k: &str| layout[k].as_f64().expect(k);
    assert!(f("width") <= 500.0, "a phone-sized window: {layout}");
    assert!(
        f("scrollWidth") <= f("width"),
        "nothing wider than the window: {layout}"
    );
    assert!(
        f("timelineWidth") >= 0.8 * f("width"),
        "the timeline has a row of its own: {layout}"
    );
    assert!(
        f("timelineTop") > f("playTop"),
        "controls wrapped: {layout}"
    );
    assert!(
        f("timelineHeight") >= 30.0,
        "a finger-sized timeline: {layout}"
    );
    assert!(
        f("canvasWidth") >= 0.9 * f("width") && f("canvasHeight") > 150.0,
        "the screen fits the width: {layout}"
    );
    screenshot(&page, "phone").await;

    // A finger on the middle of the timeline, slid to three quarters, lifted: a seek to 22.5 s.
    let at = eval(
        &page,
        "(() => { const r = document.getElementById('timeline').getBoundingClientRect(); return [r.left, r.width, r.top + r.height / 2]; })()",
    )
    .await;
    let (left, width, y) = (
        at[0].as_f64().expect("left"),
        at[1].as_f64().expect("width"),
        at[2].as_f64().expect("y"),
    );
    for (kind, x) in [
        (DispatchTouchEventType::TouchStart, left + width * 0.5),
        (DispatchTouchEventType::TouchMove, left + width * 0.6),
        (DispatchTouchEventType::TouchMove, left + width * 0.75),
        (DispatchTouchEventType::TouchEnd, left + width * 0.75),
    ] {
        let mut finger = TouchPoint::new(x, y);
        finger.id = Some(1.0);
        page.execute(DispatchTouchEventParams::new(kind, vec![finger]))
            .await
            .expect("touch event");
    }
    until(
        &page,
        "Math.abs(window.__replay.state().t - 22500) < 200 && window.__replay.state().caughtUp",
        "replay:state",
    )
    .await;
    let t = state(&page).await["t"].as_f64().expect("t") as u32;
    assert_canvas_is_screen_at(&page, &rec, t).await;
    browser.close().await;
    shutdown.cancel();
}

/// A server like the main one: the replay page under another id, its data behind a bearer token,
/// and a bug bundle. The page must send the fragment's token and save the bundle as `{id}.zip`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_sends_its_token_and_saves_the_bug_bundle() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;

    const TOKEN: &str = "s3cret-Token_1";
    const ZIP: &[u8] = b"PK\x03\x04 a bundle";
    let rec = build(6_000);
    let bytes = Arc::new(rec.bytes.clone());
    let allowed = |headers: &HeaderMap| {
        headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    };
    let app = axum::Router::new()
        .route("/replay/{id}", get(cobrowse::assets::replay_page))
        .route(
            "/r/rec-42/recording",
            get(move |headers: HeaderMap| async move {
                if allowed(&headers) {
                    bytes.as_ref().clone().into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        )
        .route(
            "/r/rec-42/bundle",
            get(move |headers: HeaderMap| async move {
                if allowed(&headers) {
                    ZIP.into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        )
        .route("/{*path}", get(cobrowse::assets::static_file));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let browser = ViewerBrowser::launch(1200, 900).await;

    // Without the token: refused, and the page says why.
    let page = browser
        .browser
        .new_page(format!("{base}/replay/rec-42"))
        .await
        .expect("open");
    let loaded = ready(&page).await;
    assert!(loaded.get("error").is_some(), "{loaded}");
    let detail = eval(
        &page,
        "document.getElementById('overlay-detail').textContent",
    )
    .await;
    assert!(
        detail.as_str().expect("text").contains("does not allow"),
        "{detail}"
    );

    // With it: the recording plays and the bundle is saved as rec-42.zip, with the server's bytes.
    let page = browser
        .browser
        .new_page(format!("{base}/replay/rec-42#token={TOKEN}"))
        .await
        .expect("open");
    let loaded = ready(&page).await;
    assert!(loaded.get("error").is_none(), "{loaded}");
    seek(&page, 3_000).await;
    assert_canvas_is_screen_at(&page, &rec, 3_000).await;
    // What the page hands to the browser's download: the link's file name and its content (the
    // blob, read here: the page's CSP lets nothing fetch it).
    capture_saves(&page).await;
    eval(&page, "document.getElementById('bundle').click(); true").await;
    let (name, bytes) = saved(&page).await;
    assert_eq!(name, "rec-42.zip");
    assert_eq!(bytes, ZIP);

    // And Chromium saves it as that file.
    use chromiumoxide::cdp::browser_protocol::browser::{
        DownloadProgressState, EventDownloadProgress, SetDownloadBehaviorBehavior,
        SetDownloadBehaviorParams,
    };
    use futures::StreamExt;
    let downloads = tempfile::tempdir().expect("download dir");
    browser
        .browser
        .execute(
            SetDownloadBehaviorParams::builder()
                .behavior(SetDownloadBehaviorBehavior::Allow)
                .download_path(downloads.path().to_string_lossy().into_owned())
                .events_enabled(true)
                .build()
                .expect("download behaviour"),
        )
        .await
        .expect("downloads allowed");
    let mut progress = browser
        .browser
        .event_listener::<EventDownloadProgress>()
        .await
        .expect("download events");
    let page = browser
        .browser
        .new_page(format!("{base}/replay/rec-42#token={TOKEN}"))
        .await
        .expect("open");
    ready(&page).await;
    eval(&page, "document.getElementById('bundle').click(); true").await;
    tokio::time::timeout(support::WAIT, async {
        while let Some(event) = progress.next().await {
            if event.state == DownloadProgressState::Completed {
                return;
            }
        }
    })
    .await
    .expect("the download completes");
    let saved = std::fs::read(downloads.path().join("rec-42.zip")).expect("rec-42.zip saved");
    assert_eq!(saved, ZIP);
    browser.close().await;
    server.abort();
}
