//! Mouse fidelity through the viewer in a real browser: what a person does with a mouse on the
//! shared screen (double and triple clicks, drag-selecting, the right and middle buttons,
//! sideways scrolling, dragging and dropping) does the same on the remote page.

mod support;

use chromiumoxide::cdp::browser_protocol::input::{
    DispatchMouseEventParams, DispatchMouseEventType, MouseButton,
};
use chromiumoxide::Page;
use serde_json::Value;
use std::time::Duration;
use support::viewer::{aim, click, eval, mouse_held, ViewerBrowser};
use support::{TestServer, TestSite};

struct Setup {
    site: TestSite,
    server: TestServer,
    browser: ViewerBrowser,
    page: Page,
    /// Word → [left, top, width, height] on the remote page, in CSS pixels.
    words: Value,
}

async fn open_mouse_page() -> Setup {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/mouse")).await;
    let words = site.report_of("layout").await["words"].clone();
    let browser = ViewerBrowser::launch(1280, 900).await;
    let page = browser
        .open(&server.join_link(&id, &links.controller))
        .await;
    Setup {
        site,
        server,
        browser,
        page,
        words,
    }
}

impl Setup {
    /// A point inside `word` on the remote page: `at` 0.0 is its left edge, 1.0 its right edge.
    fn word(&self, word: &str, at: f64) -> (f64, f64) {
        let b = &self.words[word];
        let f = |i: usize| b[i].as_f64().expect("number");
        (f(0) + f(2) * at, f(1) + f(3) / 2.0)
    }

    async fn close(self) {
        self.browser.close().await;
        self.server.stop().await;
    }
}

/// Presses the left button at `from`, moves to `to` in `steps` moves, releases: a drag.
async fn drag(page: &Page, from: (f64, f64), to: (f64, f64), steps: u32) {
    use DispatchMouseEventType::*;
    mouse_held(page, MouseMoved, from, MouseButton::None, 0, 0).await;
    mouse_held(page, MousePressed, from, MouseButton::Left, 1, 1).await;
    for i in 1..=steps {
        let t = f64::from(i) / f64::from(steps);
        let at = (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t);
        mouse_held(page, MouseMoved, at, MouseButton::None, 1, 0).await;
        // Each move its own animation frame in the viewer, as a hand's would be.
        eval(
            page,
            "new Promise(r => requestAnimationFrame(() => r(true)))",
        )
        .await;
    }
    mouse_held(page, MouseReleased, to, MouseButton::Left, 0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_triple_click_and_drag_select_text() {
    let mut s = open_mouse_page().await;

    // Double click on a word selects it; the page sees the click count.
    let at = aim(&s.page, s.word("charlie", 0.5).0, s.word("charlie", 0.5).1).await;
    click(&s.page, at.client, MouseButton::Left, 2).await;
    let dbl = s.site.report_of("dblclick").await;
    assert_eq!(dbl["detail"], 2);
    assert_eq!(dbl["selection"], "charlie");

    // Triple click selects the whole paragraph.
    let at = aim(&s.page, s.word("hotel", 0.5).0, s.word("hotel", 0.5).1).await;
    click(&s.page, at.client, MouseButton::Left, 3).await;
    let triple = s
        .site
        .report_where(|r| r["type"] == "mouseup" && r["detail"] == 3)
        .await;
    assert_eq!(
        triple["selection"].as_str().map(str::trim_end),
        Some("golf hotel india juliet")
    );

    // Pressing at the start of one word and dragging to the end of another selects between.
    let from = s.word("bravo", 0.02);
    let to = s.word("delta", 0.98);
    let from = aim(&s.page, from.0, from.1).await.client;
    let to = aim(&s.page, to.0, to.1).await.client;
    drag(&s.page, from, to, 8).await;
    let up = s
        .site
        .report_where(|r| r["type"] == "mouseup" && r["detail"] == 1)
        .await;
    assert_eq!(up["selection"], "bravo charlie delta");
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_and_middle_buttons_wheel_sideways_and_drag_and_drop() {
    let mut s = open_mouse_page().await;

    // Right click: the page's own contextmenu handler runs; the viewer shows no menu of its own
    // (its contextmenu event is cancelled).
    eval(
        &s.page,
        "(() => { window.__menus = []; addEventListener('contextmenu', (e) => __menus.push(e.defaultPrevented)); return true; })()",
    )
    .await;
    let at = aim(&s.page, 900.0, 600.0).await;
    click(&s.page, at.client, MouseButton::Right, 1).await;
    let menu = s.site.report_of("contextmenu").await;
    assert_eq!(menu["button"], 2);
    assert_eq!(
        eval(&s.page, "window.__menus").await,
        serde_json::json!([true])
    );

    // Middle click: mousedown and auxclick with button 1, no click.
    let at = aim(&s.page, 900.0, 500.0).await;
    click(&s.page, at.client, MouseButton::Middle, 1).await;
    let down = s.site.report_of("mousedown").await;
    assert_eq!(down["button"], 1);
    let aux = s.site.report_of("auxclick").await;
    assert_eq!(aux["button"], 1);

    // Drag and drop inside the page: the draggable box onto the drop zone. As a hand does, the
    // drop waits until the drag has visibly started: Chromium starts a drag asynchronously after
    // the first moves, and a release before that (a loaded machine, moves a frame apart) is a
    // plain mouseup.
    use DispatchMouseEventType::*;
    let from = aim(&s.page, 150.0, 330.0).await.client;
    let to = aim(&s.page, 600.0, 360.0).await.client;
    let via = ((from.0 + to.0) / 2.0, (from.1 + to.1) / 2.0);
    mouse_held(&s.page, MouseMoved, from, MouseButton::None, 0, 0).await;
    mouse_held(&s.page, MousePressed, from, MouseButton::Left, 1, 1).await;
    for step in 1..=5 {
        let t = f64::from(step) / 5.0;
        let at = (from.0 + (via.0 - from.0) * t, from.1 + (via.1 - from.1) * t);
        mouse_held(&s.page, MouseMoved, at, MouseButton::None, 1, 0).await;
    }
    let start = s.site.report_of("dragstart").await;
    assert_eq!(start["target"], "src");
    for step in 1..=5 {
        let t = f64::from(step) / 5.0;
        let at = (via.0 + (to.0 - via.0) * t, via.1 + (to.1 - via.1) * t);
        mouse_held(&s.page, MouseMoved, at, MouseButton::None, 1, 0).await;
        eval(
            &s.page,
            "new Promise(r => requestAnimationFrame(() => r(true)))",
        )
        .await;
    }
    // And the release waits until the drop zone has seen the drag over it (a hand waits for
    // it to light up): the drag runs in Chromium's browser process, which may lag behind the
    // moves on a loaded machine, and a release it has not seen over the zone drops nothing.
    // Meanwhile the pointer keeps moving a pixel back and forth over the zone, as a hand does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut wiggle = 0.0;
    // What the page reported meanwhile, for the failure message.
    let mut seen: Vec<String> = Vec::new();
    loop {
        let reports = s.site.drain();
        if reports
            .iter()
            .any(|r| r["type"] == "dragenter" && r["target"] == "dst")
        {
            break;
        }
        seen.extend(
            reports
                .iter()
                .map(|r| format!("{}:{}", r["type"], r["target"]))
                .take(40usize.saturating_sub(seen.len())),
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drag never entered the drop zone; the page reported {seen:?}"
        );
        wiggle = 1.0 - wiggle;
        let at = (to.0 + wiggle, to.1);
        mouse_held(&s.page, MouseMoved, at, MouseButton::None, 1, 0).await;
        eval(
            &s.page,
            "new Promise(r => requestAnimationFrame(() => r(true)))",
        )
        .await;
    }
    mouse_held(&s.page, MouseReleased, to, MouseButton::Left, 0, 1).await;
    let drop = s.site.report_of("drop").await;
    assert_eq!(drop["target"], "dst");
    assert_eq!(drop["data"], "payload");
    s.site.report_of("dragend").await;

    // A sideways wheel (a trackpad swipe, Shift+wheel) scrolls the wide page sideways.
    let at = aim(&s.page, 640.0, 500.0).await.client;
    let wheel = DispatchMouseEventParams::builder()
        .r#type(DispatchMouseEventType::MouseWheel)
        .x(at.0)
        .y(at.1)
        .delta_x(300.0)
        .delta_y(0.0)
        .build()
        .expect("wheel");
    s.page.execute(wheel).await.expect("wheel");
    let scrolled = s
        .site
        .report_where(|r| r["type"] == "scroll" && r["x"] == 300)
        .await;
    assert_eq!(scrolled["y"], 0);
    s.close().await;
}
