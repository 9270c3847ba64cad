//! Masking end to end: a real Chromium behind the real server, a page with a password field, a
//! card number field and an element masked by a session selector, each in a colour found nowhere
//! else on the page. Every update a masked participant receives is decoded on its own (on a blank
//! canvas: exactly the pixels that update carried) and as part of its screen, and must contain
//! none of those colours, while the clear screen (the typist's, the API's) shows them. Checked
//! while typing, after the page moves the fields by script and by a CSS transition, after
//! scrolling and after resizes.

mod support;

use std::time::Duration;

use cobrowse::protocol;
use serde_json::json;
use support::{close_to, Participant, TestServer, TestSite};

/// The masked elements' colours (see `support::MASK_PAGE`).
const MAGENTA: [u8; 3] = [255, 0, 200];
const GREEN: [u8; 3] = [0, 255, 0];
const CYAN: [u8; 3] = [0, 200, 255];
const FIELDS: [[u8; 3]; 3] = [MAGENTA, GREEN, CYAN];
/// JPEG and lossy WebP move colours a little; these colours are far from anything else.
const TOLERANCE: u8 = 40;

fn count_colour(img: &image::RgbImage, colour: [u8; 3]) -> usize {
    img.pixels()
        .filter(|p| close_to(p.0, colour, TOLERANCE))
        .count()
}

fn field_pixels(img: &image::RgbImage) -> usize {
    pixels_of(img, &FIELDS)
}

/// Which colours leaked, and where (bounding box).
fn describe(img: &image::RgbImage, colours: &[[u8; 3]]) -> String {
    let mut out = String::new();
    for &c in colours {
        let hits: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| close_to(p.0, c, TOLERANCE))
            .map(|(x, y, _)| (x, y))
            .collect();
        if let (Some(x0), Some(x1), Some(y0), Some(y1)) = (
            hits.iter().map(|h| h.0).min(),
            hits.iter().map(|h| h.0).max(),
            hits.iter().map(|h| h.1).min(),
            hits.iter().map(|h| h.1).max(),
        ) {
            out += &format!("{c:?}: {} px in x {x0}..={x1}, y {y0}..={y1}; ", hits.len());
        }
    }
    out
}

fn pixels_of(img: &image::RgbImage, colours: &[[u8; 3]]) -> usize {
    colours.iter().map(|&c| count_colour(img, c)).sum()
}

/// What a masked participant was checked on.
#[derive(Default, Debug)]
struct Checked {
    updates: usize,
    keyframes: usize,
    bytes: usize,
}

/// Reads, applies and acknowledges `p`'s updates until none came for `quiet` (or for at most
/// 8 × `quiet`: a blinking caret keeps a screen changing, and the other participants must not
/// stay silent for the server's read timeout meanwhile); every update must carry none of the
/// fields' pixels, alone (decoded onto a blank canvas) or applied to the screen. Updates not
/// read yet are read by the next call: every update is checked.
async fn drain_masked(p: &mut Participant, quiet: Duration, checked: &mut Checked, phase: &str) {
    drain_without(p, quiet, checked, phase, &FIELDS).await;
}

async fn drain_without(
    p: &mut Participant,
    quiet: Duration,
    checked: &mut Checked,
    phase: &str,
    colours: &[[u8; 3]],
) {
    let end = tokio::time::Instant::now() + quiet * 8;
    while tokio::time::Instant::now() < end {
        let Ok(raw) = tokio::time::timeout(quiet, p.next_frame_raw()).await else {
            return;
        };
        let header = protocol::decode_update_header(&raw).expect("update header");
        let mut alone = image::RgbImage::new(u32::from(header.width), u32::from(header.height));
        cobrowse::encode::apply(&mut alone, &raw[protocol::UPDATE_HEADER_LEN..])
            .expect("update decodes");
        let leaked = pixels_of(&alone, colours);
        if leaked > 0 {
            let _ = alone.save(format!("/tmp/masking-leak-{}.png", header.number));
        }
        assert_eq!(
            leaked,
            0,
            "{phase}: update {} (version {}) carried {leaked} pixels of a masked field: {}",
            header.number,
            header.version,
            describe(&alone, colours)
        );
        checked.bytes += raw.len();
        if header.flags & protocol::flags::KEYFRAME != 0 {
            checked.keyframes += 1;
        }
        let frame = p.apply(raw);
        p.ack(frame.header.number).await;
        let on_screen = pixels_of(&frame.image, colours);
        assert_eq!(
            on_screen, 0,
            "{phase}: the screen after update {} shows {on_screen} pixels of a masked field",
            frame.header.number
        );
        checked.updates += 1;
    }
}

/// The API's screenshot (`?masked=1` for the masked screen); `None` before the first paint.
async fn screenshot_of(server: &TestServer, id: &str, masked: bool) -> Option<image::RgbImage> {
    let query = if masked { "?masked=1" } else { "" };
    let (status, _, body) = server
        .http
        .raw_bytes(
            "GET",
            &format!("/api/sessions/{id}/screenshot{query}"),
            &[],
            None,
        )
        .await;
    (status == 200).then(|| image::load_from_memory(&body).expect("png").to_rgb8())
}

async fn screenshot_masked(server: &TestServer, id: &str) -> image::RgbImage {
    screenshot_of(server, id, true)
        .await
        .expect("a masked screen")
}

/// Dark pixels (the password's dots) inside the password field at its place on the screen.
fn dots_in_password(img: &image::RgbImage) -> usize {
    let mut n = 0;
    for y in 122..158 {
        for x in 102..398 {
            if close_to(img.get_pixel(x, y).0, [0, 0, 0], 70) {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_fields_never_reach_a_masked_participant() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server
        .create_session_with(json!({"url": site.url("/mask"), "mask": ["#ssn"]}))
        .await;
    let mut viewer = server.join(&id, &links.viewer).await;
    let mut owner = server.join(&id, &links.owner).await;
    site.report_of("ready").await;
    let mut checked = Checked::default();
    let quiet = Duration::from_millis(800);

    // The page is up: the clear screen shows every field; the masked one, none; the viewer
    // (masked) sees the page but not the fields, and gets the overlay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let clear = loop {
        drain_masked(
            &mut viewer,
            Duration::from_millis(200),
            &mut checked,
            "load",
        )
        .await;
        let clear = screenshot_of(&server, &id, false).await;
        if let Some(clear) = clear.filter(|c| FIELDS.iter().all(|&f| count_colour(c, f) > 4000)) {
            break clear;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed its fields"
        );
    };
    drain_masked(&mut viewer, quiet, &mut checked, "load").await;
    let masked = screenshot_masked(&server, &id).await;
    assert_eq!(field_pixels(&masked), 0, "the masked screen shows a field");
    // Masked where the fields are: the unmasked render's field pixels are all painted over.
    let under_fields = clear
        .enumerate_pixels()
        .filter(|(_, _, p)| FIELDS.iter().any(|&c| close_to(p.0, c, TOLERANCE)))
        .filter(|&(x, y, _)| {
            let m = masked.get_pixel(x, y).0;
            !(close_to(m, cobrowse::mask::STRIPE_DARK, 0)
                || close_to(m, cobrowse::mask::STRIPE_LIGHT, 0))
        })
        .count();
    assert_eq!(under_fields, 0, "field pixels not painted over");
    let screen = viewer.screen.clone().expect("viewer has a screen");
    assert!(
        support::differing_pixels(&screen, &masked) == 0,
        "the masked participant converged on the masked screen"
    );
    let overlay = viewer
        .json_seen
        .iter()
        .rev()
        .find(|m| m["t"] == "masks")
        .cloned()
        .expect("a masks message");
    assert_eq!(
        overlay["rects"].as_array().map(Vec::len),
        Some(3),
        "{overlay}"
    );
    // The owner, not typing, is masked too (default: only the typist sees the fields).
    drain_masked(&mut owner, quiet, &mut checked, "owner before typing").await;

    // The owner clicks into the password field and types: they alone see the field, dots and
    // all; the viewer still sees none of it.
    owner.click(250.0, 140.0).await;
    site.report_where(|r| r["type"] == "focus").await;
    owner.type_text("secret").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "secret")
        .await;
    let typed = owner
        .frame_where(|f| count_colour(&f.image, MAGENTA) > 4000 && dots_in_password(&f.image) > 40)
        .await;
    assert!(
        count_colour(&typed.image, GREEN) > 4000,
        "the typist sees every field"
    );
    drain_masked(&mut viewer, quiet, &mut checked, "typing").await;

    // The owner clicks the page's Move button: focus leaves the field, the owner is masked
    // again, and the page jumps the card field around by script and slides #ssn.
    owner.click(660.0, 240.0).await;
    // Updates of the clear screen already on their way are the typist's; from the keyframe of
    // the masked screen on, the owner is checked like the viewer.
    owner.frame_where(|f| field_pixels(&f.image) == 0).await;
    site.report_of("moved").await;
    drain_masked(&mut viewer, quiet, &mut checked, "fields moved").await;
    drain_masked(&mut owner, quiet, &mut checked, "owner after typing").await;
    let (_, clear) = server.screenshot(&id).await;
    assert!(
        count_colour(&clear, GREEN) > 4000,
        "the card field is on screen"
    );
    assert!(count_colour(&clear, CYAN) > 4000, "#ssn is on screen");

    // Scrolling: the fields move up the screen, then off it and back.
    for dy in [90.0, 90.0, 300.0, -250.0, 500.0, -730.0] {
        owner
            .send(json!({"t": "wheel", "x": 640.0, "y": 360.0, "dx": 0.0, "dy": dy, "mods": 0}))
            .await;
        site.report_of("scroll").await;
        drain_masked(
            &mut viewer,
            Duration::from_millis(300),
            &mut checked,
            "scroll",
        )
        .await;
    }
    drain_masked(&mut viewer, quiet, &mut checked, "scroll").await;

    // Resizes: the page is laid out again at each new size. While a resize is under way,
    // Chromium may send the old layout stretched into the new size with the new size's metadata
    // (a few resizes in ten here): such a frame must be masked whole. Shrinking to the same
    // shape (640×360) stretches the old layout without changing its proportions.
    for (width, height) in [(900, 600), (1280, 720), (640, 360), (1280, 720), (900, 600)] {
        owner
            .send(json!({"t": "viewport", "width": width, "height": height}))
            .await;
        for _ in 0..20 {
            drain_masked(&mut viewer, quiet, &mut checked, "resize").await;
            if viewer.screen.as_ref().map(|s| s.dimensions()) == Some((width, height)) {
                break;
            }
        }
        assert_eq!(
            viewer.screen.as_ref().map(|s| s.dimensions()),
            Some((width, height)),
            "the masked participant's screen took the new size"
        );
    }
    let (_, clear) = server.screenshot(&id).await;
    assert_eq!(clear.dimensions(), (900, 600));
    assert!(
        field_pixels(&clear) > 4000,
        "fields on the resized clear screen"
    );
    let masked = screenshot_masked(&server, &id).await;
    assert_eq!(field_pixels(&masked), 0);
    let screen = viewer.screen.clone().expect("screen");
    assert_eq!(support::differing_pixels(&screen, &masked), 0);

    assert!(checked.updates >= 10, "{checked:?}");
    tracing::info!(?checked, "masked participant checked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveal_to_roles_serves_them_the_clear_screen() {
    let mut site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.mask_reveal = cobrowse::mask::Reveal::parse("owner").expect("valid");
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/mask")).await;
    let mut owner = server.join(&id, &links.owner).await;
    let mut controller = server.join(&id, &links.controller).await;
    site.report_of("ready").await;
    // The owner always sees the fields (without typing anything).
    owner
        .frame_where(|f| {
            count_colour(&f.image, MAGENTA) > 4000 && count_colour(&f.image, GREEN) > 4000
        })
        .await;
    // The controller never does, even while typing in the password field.
    let mut checked = Checked::default();
    controller.click(250.0, 140.0).await;
    site.report_where(|r| r["type"] == "focus").await;
    controller.type_text("hunter2").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "hunter2")
        .await;
    drain_without(
        &mut controller,
        Duration::from_millis(800),
        &mut checked,
        "controller",
        &[MAGENTA, GREEN],
    )
    .await;
    assert!(checked.updates >= 1);
    // #ssn is not masked here (no session selector): the controller sees it.
    let screen = controller.screen.clone().expect("screen");
    assert_eq!(count_colour(&screen, MAGENTA), 0);
    server.stop().await;
}

/// The real viewer in a browser: the masked fields carry a visible "hidden" label over the
/// painted pixels, and its canvas holds none of the fields' pixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_labels_masked_fields_hidden() {
    use support::viewer::{canvas_pixels, eval, until, ViewerBrowser};
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/mask")).await;
    site.report_of("ready").await;
    let browser = ViewerBrowser::launch(1400, 900).await;
    let page = browser.open(&server.join_link(&id, &links.viewer)).await;
    // The password and card fields (no session selector here: #ssn stays visible).
    until(
        &page,
        "document.querySelectorAll('#masks .mask-label').length === 2",
        "cobrowse:paint",
    )
    .await;
    let labels = eval(
        &page,
        "(() => { const c = document.getElementById('screen').getBoundingClientRect();
           return [...document.querySelectorAll('#masks .mask-box')].map(b => {
             const r = b.getBoundingClientRect();
             const l = b.querySelector('.mask-label');
             const lr = l.getBoundingClientRect();
             // The overlay ignores the pointer (clicks go to the screen): hit-test the label alone.
             l.style.pointerEvents = 'auto';
             const top = document.elementFromPoint(lr.left + lr.width / 2, lr.top + lr.height / 2);
             l.style.pointerEvents = '';
             return { text: l.textContent, w: lr.width, h: lr.height,
                      visible: getComputedStyle(l).visibility === 'visible' && getComputedStyle(b).display !== 'none',
                      onTop: top === l,
                      inside: r.left >= c.left - 1 && r.right <= c.right + 1 && r.top >= c.top - 1 && r.bottom <= c.bottom + 1 };
           }); })()",
    )
    .await;
    let labels = labels.as_array().expect("a list").clone();
    assert_eq!(labels.len(), 2, "{labels:?}");
    for l in &labels {
        assert_eq!(l["text"], "hidden", "{l}");
        assert!(l["w"].as_f64().unwrap_or(0.0) > 10.0, "{l}");
        assert!(l["h"].as_f64().unwrap_or(0.0) > 5.0, "{l}");
        assert_eq!(l["visible"], true, "{l}");
        assert_eq!(l["onTop"], true, "the label is not covered: {l}");
        assert_eq!(l["inside"], true, "over the screen: {l}");
    }
    let canvas = canvas_pixels(&page).await;
    assert_eq!(pixels_of(&canvas, &[MAGENTA, GREEN]), 0);
    assert!(
        count_colour(&canvas, CYAN) > 4000,
        "an unmasked element shows"
    );
    browser.close().await;
    server.stop().await;
}

/// Copying never takes text out of a masked field: the clipboard must not carry what the pixels
/// hide (the card number is in the field's value, selectable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_from_a_masked_field_copies_nothing() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/mask")).await;
    let mut agent = server.join(&id, &links.controller).await;
    site.report_of("ready").await;
    // Ctrl+A, Ctrl+C in the card field (CSS 100,220 300×40; the screen is 1:1).
    agent.click(250.0, 240.0).await;
    agent.press("a", "KeyA", 65, 2).await;
    agent.press("c", "KeyC", 67, 2).await;
    // Then in a plain field: this copy arrives, and it is the first one.
    agent.click(750.0, 140.0).await;
    agent.send(json!({"t": "text", "text": "visible"})).await;
    agent.press("a", "KeyA", 65, 2).await;
    agent.press("c", "KeyC", 67, 2).await;
    let copied = agent.json_where("clipboard", |_| true).await;
    assert_eq!(
        copied["text"], "visible",
        "the card field's text was copied out"
    );
}
