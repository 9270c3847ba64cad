//! A participant's real browser, driven through CDP: opens join links, and clicks and types on
//! `#screen` as a person would.

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    MouseButton,
};
use chromiumoxide::Page;
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// A browser a participant would use, with its own profile.
pub struct ViewerBrowser {
    pub browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl ViewerBrowser {
    pub async fn launch(width: u32, height: u32) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut builder = BrowserConfig::builder()
            .chrome_executable(super::chromium())
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(width, height)
            .viewport(None)
            .args(["disable-component-update", "disable-quic"]);
        if rustix::process::geteuid().is_root() {
            builder = builder.no_sandbox();
        }
        let (browser, mut handler) = Browser::launch(builder.build().expect("config"))
            .await
            .expect("viewer browser starts");
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        ViewerBrowser {
            browser,
            handler,
            _profile: profile,
        }
    }

    /// Opens a join link in a new tab and waits until the viewer painted the screen.
    pub async fn open(&self, link: &str) -> Page {
        let page = self
            .browser
            .new_page(link)
            .await
            .expect("open the join link");
        painted(&page, 0).await;
        page
    }

    pub async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// Evaluates `expression` (which may return a promise) in the viewer page.
pub async fn eval(page: &Page, expression: &str) -> Value {
    tokio::time::timeout(super::WAIT, page.evaluate(expression))
        .await
        .expect("evaluation in time")
        .expect("evaluation succeeds")
        .into_value()
        .expect("JSON value")
}

/// Resolves once the viewer painted a screen version of at least `seq` (0: any); returns it.
pub async fn painted(page: &Page, seq: u64) -> u64 {
    let js = format!(
        "new Promise(resolve => {{
           const done = () => window.cobrowse && window.cobrowse.paints > 0 && window.cobrowse.version >= {seq};
           if (done()) return resolve(window.cobrowse.version);
           addEventListener('cobrowse:paint', function on() {{ if (done()) {{ removeEventListener('cobrowse:paint', on); resolve(window.cobrowse.version); }} }});
         }})"
    );
    eval(page, &js).await.as_u64().expect("seq")
}

/// Where a mouse pointing at remote page pixel (x, y) sits in the viewer page: whole viewer
/// pixels, as a real mouse reports them (`MouseEvent.clientX/Y` are integers in Chromium).
/// Returns that point and the page pixel it maps back to through the letterboxed canvas; on a
/// scaled-down screen one viewer pixel covers more than one page pixel.
pub async fn aim(page: &Page, x: f64, y: f64) -> Aim {
    let r = eval(page, "(() => { const c = document.getElementById('screen'); const r = c.getBoundingClientRect(); return {left: r.left, top: r.top, width: r.width, height: r.height, w: c.width, h: c.height}; })()").await;
    let f = |k: &str| r[k].as_f64().expect("number");
    let (sx, sy) = (f("width") / f("w"), f("height") / f("h"));
    let client = ((f("left") + x * sx).round(), (f("top") + y * sy).round());
    let expected = ((client.0 - f("left")) / sx, (client.1 - f("top")) / sy);
    assert!((expected.0 - x).abs() <= 1.0 / sx && (expected.1 - y).abs() <= 1.0 / sy);
    Aim { client, expected }
}

pub struct Aim {
    pub client: (f64, f64),
    /// The page pixel the viewer must deliver for `client`.
    pub expected: (f64, f64),
}

/// The page reported an event at the aimed pixel (it reports integer `clientX/Y`).
pub fn assert_hit(report: &Value, aim: &Aim) {
    let (x, y) = (
        report["x"].as_f64().expect("x"),
        report["y"].as_f64().expect("y"),
    );
    let (ex, ey) = aim.expected;
    assert!(
        (x - ex).abs() <= 1.0 && (y - ey).abs() <= 1.0,
        "{}: expected ({ex:.1},{ey:.1}), page got ({x},{y})",
        report["type"]
    );
}

pub async fn mouse(
    page: &Page,
    kind: DispatchMouseEventType,
    at: (f64, f64),
    button: MouseButton,
    clicks: i64,
) {
    // A real mouse reports the pressed button as held while it is down.
    let held = match (&kind, &button) {
        (DispatchMouseEventType::MousePressed, MouseButton::Left) => 1,
        (DispatchMouseEventType::MousePressed, MouseButton::Right) => 2,
        (DispatchMouseEventType::MousePressed, MouseButton::Middle) => 4,
        _ => 0,
    };
    mouse_held(page, kind, at, button, held, clicks).await;
}

/// A mouse event with the `buttons` bitmask given (1 left, 2 right, 4 middle), e.g. moves
/// during a drag.
pub async fn mouse_held(
    page: &Page,
    kind: DispatchMouseEventType,
    (x, y): (f64, f64),
    button: MouseButton,
    buttons: i64,
    clicks: i64,
) {
    let params = DispatchMouseEventParams::builder()
        .r#type(kind)
        .x(x)
        .y(y)
        .button(button)
        .buttons(buttons)
        .click_count(clicks)
        .build()
        .expect("mouse");
    page.execute(params).await.expect("mouse event");
}

pub async fn click(page: &Page, at: (f64, f64), button: MouseButton, clicks: i64) {
    mouse(
        page,
        DispatchMouseEventType::MouseMoved,
        at,
        MouseButton::None,
        0,
    )
    .await;
    for n in 1..=clicks {
        mouse(
            page,
            DispatchMouseEventType::MousePressed,
            at,
            button.clone(),
            n,
        )
        .await;
        mouse(
            page,
            DispatchMouseEventType::MouseReleased,
            at,
            button.clone(),
            n,
        )
        .await;
    }
}

/// Presses a key in the viewer page as a keyboard would.
pub async fn key(page: &Page, key: &str, code: &str, vk: i64, text: Option<&str>) {
    let mut down = DispatchKeyEventParams::builder()
        .r#type(if text.is_some() {
            DispatchKeyEventType::KeyDown
        } else {
            DispatchKeyEventType::RawKeyDown
        })
        .key(key)
        .code(code)
        .windows_virtual_key_code(vk);
    if let Some(text) = text {
        down = down.text(text).unmodified_text(text);
    }
    page.execute(down.build().expect("key"))
        .await
        .expect("key down");
    let up = DispatchKeyEventParams::builder()
        .r#type(DispatchKeyEventType::KeyUp)
        .key(key)
        .code(code)
        .windows_virtual_key_code(vk);
    page.execute(up.build().expect("key"))
        .await
        .expect("key up");
}

pub async fn type_text(page: &Page, text: &str) {
    for c in text.chars() {
        let (code, vk, _) = super::us_key(c);
        // Shifted letters arrive as their character; the page only checks the text.
        key(
            page,
            &c.to_string(),
            code,
            i64::from(vk),
            Some(&c.to_string()),
        )
        .await;
    }
}

/// The pixels of the viewer's `#screen` canvas, read back losslessly (PNG).
pub async fn canvas_pixels(page: &Page) -> image::RgbImage {
    let url = eval(
        page,
        "document.getElementById('screen').toDataURL('image/png')",
    )
    .await;
    let url = url.as_str().expect("data URL");
    let b64 = url.split_once(',').expect("data URL").1;
    let png =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).expect("base64");
    image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .expect("PNG")
        .to_rgb8()
}

/// Largest difference per colour channel between the browser's JPEG decoder (libjpeg-turbo) and
/// the server's (zune-jpeg) on the same JPEG bytes. Where cobrowse forwarded Chromium's own JPEG,
/// a browser's canvas can differ from the server's screen by this rounding; everywhere else it
/// is exact.
pub const JPEG_DECODER_ROUNDING: u8 = 4;

/// Waits until the viewer's canvas is the server's current screen of session `id`: exact where
/// cobrowse encoded the pixels, within [`JPEG_DECODER_ROUNDING`] where it forwarded Chromium's
/// JPEG (lossy regions and approximate moves refined). Returns the largest channel difference.
pub async fn canvas_converges(page: &Page, server: &super::TestServer, id: &str) -> u8 {
    let deadline = tokio::time::Instant::now() + super::WAIT;
    loop {
        let (_, truth) = server.screenshot(id).await;
        let canvas = canvas_pixels(page).await;
        let worst = if canvas.dimensions() == truth.dimensions() {
            canvas
                .as_raw()
                .iter()
                .zip(truth.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0)
        } else {
            u8::MAX
        };
        if worst <= JPEG_DECODER_ROUNDING {
            return worst;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the viewer's canvas never matched the server's screen: {} pixels differ, by up to {worst}",
            super::differing_pixels(&canvas, &truth)
        );
        // The next paint (or a moment's quiet) before looking again.
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            eval(
                page,
                "new Promise(r => addEventListener('cobrowse:paint', () => r(true), {once: true}))",
            ),
        )
        .await;
    }
}

/// Resolves once `condition` (a JS expression) holds in the viewer page, looking again on each
/// `event` the viewer dispatches (`cobrowse:page`, `cobrowse:dialog`, `cobrowse:paint`).
pub async fn until(page: &Page, condition: &str, event: &str) {
    let js = format!(
        "new Promise(resolve => {{
           const done = () => {{ try {{ return Boolean({condition}); }} catch {{ return false; }} }};
           if (done()) return resolve(true);
           addEventListener('{event}', function on() {{ if (done()) {{ removeEventListener('{event}', on); resolve(true); }} }});
         }})"
    );
    let waited = tokio::time::timeout(super::WAIT, page.evaluate(js)).await;
    assert!(
        matches!(waited, Ok(Ok(_))),
        "viewer never got to `{condition}` (waiting on {event})"
    );
}

/// Clicks the middle of the viewer's element `id` with the mouse, as a person would.
pub async fn click_element(page: &Page, id: &str) {
    let r = eval(
        page,
        &format!("(() => {{ const r = document.getElementById('{id}').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2, r.width]; }})()"),
    )
    .await;
    let at = (
        r[0].as_f64().expect("x").round(),
        r[1].as_f64().expect("y").round(),
    );
    assert!(r[2].as_f64().unwrap_or(0.0) > 0.0, "#{id} is visible");
    click(page, at, MouseButton::Left, 1).await;
}
