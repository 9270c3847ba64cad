//! Keyboard fidelity, differentially: one long sequence of key presses (every key of a US
//! keyboard, modifier combinations, held keys, editing shortcuts, IME compositions and inserted
//! text) is dispatched once straight into the key-log page in a real Chromium, and once into
//! the cobrowse viewer whose session shows the same page. Every event the page sees
//! (keydown/keypress/keyup/beforeinput/input/composition*, with every field a page can read) and
//! its final text must be the same.
//!
//! Not in the sequence: keys the viewer keeps for its own browser (F5, F11, F12,
//! Ctrl/Meta+Shift+I/J: `isReservedKey` in viewer/js/input.js) and keys a browser never gives a
//! page (Ctrl+W/T/N/Q, Ctrl+Tab, Ctrl+PageUp/PageDown, Alt+F4), which cannot reach a viewer.

mod support;

use chromiumoxide::cdp::browser_protocol::input::MouseButton;
use chromiumoxide::Page;
use serde_json::Value;
use support::keyboard::{full_sequence, Keyboard, Step};
use support::viewer::{aim, click, eval, painted, ViewerBrowser};
use support::{TestServer, TestSite};

/// Where the textarea of the key-log page is clicked, in page pixels.
const TEXTAREA: (f64, f64) = (100.0, 100.0);

/// Runs the sequence on `page`, then the sentinel. With `count_events`, returns after each step
/// how many events the page had logged (only possible on a page the test can evaluate in).
async fn run(page: &Page, steps: &[Step], count_events: bool) -> Vec<u64> {
    let mut keyboard = Keyboard::new(page);
    let mut boundaries = Vec::new();
    for step in steps {
        keyboard.step(step).await;
        if count_events {
            boundaries.push(
                eval(page, "window.keylog.length")
                    .await
                    .as_u64()
                    .expect("n"),
            );
        }
    }
    keyboard.sentinel().await;
    boundaries
}

fn describe(events: &[Value], i: usize) -> String {
    events
        .get(i)
        .map_or_else(|| "(none)".to_string(), ToString::to_string)
}

/// Fails with the first event that differs, the step that produced it and what came before.
fn compare(direct: &Value, viewer: &Value, steps: &[Step], boundaries: &[u64]) {
    let a = direct["events"].as_array().expect("direct events");
    let b = viewer["events"].as_array().expect("viewer events");
    let first = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i));
    if let Some(i) = first {
        let step = boundaries
            .iter()
            .position(|&n| n > i as u64)
            .map_or("(the sentinel)".to_string(), |s| {
                format!("step {s}: {}", steps[s].label())
            });
        let context: Vec<String> = (i.saturating_sub(4)..i)
            .map(|j| format!("  #{j}: {}", describe(a, j)))
            .collect();
        panic!(
            "event #{i} differs ({} events straight into Chromium, {} through the viewer), from {step}\n\
             before it (same on both):\n{}\n\
             straight into Chromium: {}\n\
             through the viewer:     {}\n\
             next through the viewer: {}",
            a.len(),
            b.len(),
            context.join("\n"),
            describe(a, i),
            describe(b, i),
            describe(b, i + 1),
        );
    }
    assert_eq!(direct["final"], viewer["final"], "final state differs");
}

/// What a person would check on the page typed straight into: the sequence did what it says.
fn check_reference(log: &Value) {
    let events = log["events"].as_array().expect("events");
    assert!(events.len() > 2000, "only {} events", events.len());
    let has = |pred: &dyn Fn(&Value) -> bool| events.iter().any(pred);
    assert!(has(&|e| e["type"] == "keydown" && e["repeat"] == true));
    assert!(has(
        &|e| e["type"] == "compositionupdate" && e["data"] == "にほん"
    ));
    assert!(has(
        &|e| e["type"] == "compositionend" && e["data"] == "日本"
    ));
    assert!(has(&|e| e["type"] == "keypress" && e["key"] == "é"));
    assert!(has(&|e| e["type"] == "keydown"
        && e["key"] == "Home"
        && e["code"] == "Numpad7"
        && e["keyCode"] == 36));
    assert!(has(&|e| e["type"] == "keydown"
        && e["code"] == "F24"
        && e["keyCode"] == 135));
    assert!(has(&|e| e["type"] == "paste"));
    assert!(has(
        &|e| e["type"] == "input" && e["inputType"] == "historyUndo"
    ));
    assert!(has(
        &|e| e["type"] == "input" && e["inputType"] == "deleteWordBackward"
    ));
    assert!(has(&|e| e["type"] == "keydown" && e["target"] == "f"));
    let value = log["final"]["value"].as_str().expect("value");
    for part in ["日本", "한글", "éÉ", "🙂👍🏽", "кириллица", "ok", " end."] {
        assert!(value.contains(part), "{part:?} missing from {value:?}");
    }
    assert!(
        !value.contains("かん"),
        "the cancelled composition stayed: {value:?}"
    );
    assert_eq!(log["final"]["field"], "fiel");
    assert_eq!(log["final"]["focus"], "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_reaches_the_page_as_if_pressed_in_chromium() {
    let started = std::time::Instant::now();
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/keylog")).await;
    site.report_of("ready").await;
    let steps = full_sequence();
    let browser = ViewerBrowser::launch(1280, 900).await;

    // Straight into Chromium: the page in a tab of its own.
    let direct = browser
        .browser
        .new_page(site.url("/keylog").as_str())
        .await
        .expect("open the page");
    site.report_of("ready").await;
    click(&direct, TEXTAREA, MouseButton::Left, 1).await;
    let boundaries = run(&direct, &steps, true).await;
    let reference = site.report_of("keylog").await;
    direct.close().await.expect("close tab");
    check_reference(&reference);

    // Through cobrowse: a controller's viewer, the remote page's textarea clicked on the screen.
    let viewer = browser
        .browser
        .new_page(server.join_link(&id, &links.controller).as_str())
        .await
        .expect("open the join link");
    painted(&viewer, 0).await;
    let target = aim(&viewer, TEXTAREA.0, TEXTAREA.1).await;
    click(&viewer, target.client, MouseButton::Left, 1).await;
    let focused = eval(&viewer, "document.activeElement.id").await;
    assert!(
        focused == "ime" || focused == "screen",
        "focus on {focused}"
    );
    run(&viewer, &steps, false).await;
    let remote = site.report_of("keylog").await;
    // KEYLOG_DUMP=dir keeps both logs for a closer look.
    if let Ok(dir) = std::env::var("KEYLOG_DUMP") {
        for (name, log) in [("direct", &reference), ("viewer", &remote)] {
            let path = std::path::Path::new(&dir).join(format!("keylog-{name}.json"));
            std::fs::write(path, serde_json::to_string_pretty(log).expect("JSON")).expect("dump");
        }
    }

    compare(&reference, &remote, &steps, &boundaries);
    eprintln!(
        "{} steps, {} events identical, in {:.1} s",
        steps.len(),
        reference["events"].as_array().map_or(0, Vec::len),
        started.elapsed().as_secs_f64()
    );
    browser.close().await;
    server.stop().await;
}
