//! A session end to end through the WebSocket protocol, with the real Chromium and a test site
//! whose pages report what they received.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{close_to, Participant, TestServer, TestSite};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_show_the_pages_colours() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server
        .create_session(&site.url("/color?c=rgb(10,200,30)"))
        .await;
    let mut owner = server.join(&id, &links.owner).await;
    assert_eq!(owner.hello["role"], "owner");
    assert_eq!(owner.hello["canInput"], true);
    assert_eq!(
        owner.hello["viewport"],
        json!({"width": 1280, "height": 720})
    );
    let frame = owner
        .frame_where(|f| close_to(f.pixel(640, 360), [10, 200, 30], 12))
        .await;
    assert_eq!((frame.header.width, frame.header.height), (1280, 720));
    // The whole screen is the page: corners too.
    for (x, y) in [(0, 0), (1279, 0), (0, 719), (1279, 719)] {
        assert!(
            close_to(frame.pixel(x, y), [10, 200, 30], 12),
            "pixel {x},{y}: {:?}",
            frame.pixel(x, y)
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_reaches_the_page_at_the_right_css_pixel() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server
        .create_session_with(json!({"url": site.url("/click"), "width": 1000, "height": 600}))
        .await;
    let mut owner = server.join(&id, &links.owner).await;
    site.report_of("ready").await;
    owner
        .frame_where(|f| close_to(f.pixel(500, 300), [255, 255, 255], 8))
        .await;

    owner.click(321.0, 123.0).await;
    let down = site.report_of("mousedown").await;
    assert_eq!(
        (
            down["x"].as_i64(),
            down["y"].as_i64(),
            down["button"].as_i64()
        ),
        (Some(321), Some(123), Some(0))
    );
    let click = site.report_of("click").await;
    assert_eq!(
        (click["x"].as_i64(), click["y"].as_i64()),
        (Some(321), Some(123))
    );
    // The page changed colour on mousedown and every participant sees it.
    owner
        .frame_where(|f| close_to(f.pixel(500, 300), [255, 0, 0], 12))
        .await;
    // The server timed it: press → changed frame, frame → screen, frame → update written.
    let pipeline = server.session_json(&id).await.1["pipeline"].clone();
    for stage in ["input", "screen", "send"] {
        let count = pipeline[stage]["count"].as_u64().unwrap_or(0);
        assert!(count >= 1, "{stage} not timed: {pipeline}");
        let p50 = pipeline[stage]["p50Ms"].as_f64().unwrap_or(f64::NAN);
        assert!(p50 > 0.0 && p50 <= 1000.0, "{stage} p50 {p50}: {pipeline}");
    }

    // Double click: the second press counts two clicks.
    owner.mouse("down", 10.0, 20.0, "left", 1).await;
    owner.mouse("up", 10.0, 20.0, "left", 1).await;
    owner.mouse("down", 10.0, 20.0, "left", 2).await;
    owner.mouse("up", 10.0, 20.0, "left", 2).await;
    let dbl = site.report_of("dblclick").await;
    assert_eq!(
        (dbl["x"].as_i64(), dbl["y"].as_i64(), dbl["detail"].as_i64()),
        (Some(10), Some(20), Some(2))
    );

    // Right click runs the page's own contextmenu handler.
    owner.mouse("down", 700.0, 500.0, "right", 1).await;
    owner.mouse("up", 700.0, 500.0, "right", 1).await;
    let menu = site.report_of("contextmenu").await;
    assert_eq!(
        (
            menu["x"].as_i64(),
            menu["y"].as_i64(),
            menu["button"].as_i64()
        ),
        (Some(700), Some(500), Some(2))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_text_enter_and_backspace_land_in_a_textarea() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/type")).await;
    let mut controller = server.join(&id, &links.controller).await;
    assert_eq!(controller.hello["role"], "controller");
    site.report_of("ready").await;
    controller.click(100.0, 100.0).await; // focus the textarea

    controller.type_text("Hello, World!").await;
    controller.press("Enter", "Enter", 13, 0).await;
    controller.type_text("abc").await;
    controller.press("Backspace", "Backspace", 8, 0).await;
    let value = site
        .report_where(|r| r["type"] == "input" && r["value"] == "Hello, World!\nab")
        .await;
    assert_eq!(value["value"], "Hello, World!\nab");

    // Shortcuts: Ctrl+A selects everything, then typing replaces it.
    controller.press("a", "KeyA", 65, 2).await;
    site.report_where(|r| r["type"] == "select" && r["start"] == 0 && r["end"] == 16)
        .await;
    controller.type_text("x").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "x")
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wheel_scrolls_the_page() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/scroll")).await;
    let mut owner = server.join(&id, &links.owner).await;
    site.report_of("ready").await;
    // The page's gradient at the top, not a blank frame from before it loaded.
    let top = owner.frame_where(|f| f.pixel(640, 360)[0] < 250).await;
    owner
        .send(json!({"t": "wheel", "x": 640, "y": 360, "dx": 0, "dy": 500, "mods": 0}))
        .await;
    let scrolled = site
        .report_where(|r| r["type"] == "scroll" && r["y"] == 500)
        .await;
    assert_eq!(scrolled["x"], 0);
    // The participant sees the scrolled page: a darker gradient than at the top.
    let before = i32::from(top.pixel(640, 360)[0]);
    owner
        .frame_where(|f| i32::from(f.pixel(640, 360)[0]) + 10 < before)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_participants_receive_the_same_screen() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/click")).await;
    let mut owner = server.join(&id, &links.owner).await;
    site.report_of("ready").await;
    let white = |f: &support::Frame| close_to(f.pixel(640, 360), [255, 255, 255], 8);
    owner.frame_where(white).await;
    let mut second = server.join(&id, &links.controller).await;
    let joined = second.frame_where(white).await;
    owner.json_where("presence", |p| p["count"] == 2).await;

    // The second participant clicks; both see the page turn red.
    second.click(50.0, 50.0).await;
    let red = |f: &support::Frame| close_to(f.pixel(640, 360), [255, 0, 0], 12);
    owner.frame_where(red).await;
    let b = second.frame_where(red).await;
    assert!(b.header.version > joined.header.version);
    // Once the screen is still, both hold exactly the server's screen, pixel for pixel.
    owner.converge(&server, &id).await;
    second.converge(&server, &id).await;
    let info = server.session_json(&id).await.1;
    assert_eq!(info["participants"], 2);
    assert!(info["framesSent"].as_u64().unwrap_or(0) >= 4, "{info}");
    let links_info = info["participantLinks"].as_array().expect("links");
    assert_eq!(links_info.len(), 2, "{info}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_scrolling_send_changes_and_moves_and_converge_exactly() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/text")).await;
    site.report_of("ready").await;
    let mut owner = server.join(&id, &links.owner).await;
    let mut watcher = server.join(&id, &links.viewer).await;
    let first = owner.next_frame().await;
    assert!(first.header.flags & cobrowse::protocol::flags::KEYFRAME != 0);
    // The text drawn: the first frame can be a blank page (before first paint), a later one comes.
    let painted = |img: &image::RgbImage| {
        let dark = img.pixels().filter(|p| p.0[0] < 128).count();
        dark > (img.width() * img.height() / 50) as usize
    };
    if !painted(&first.image) {
        owner.frame_where(|f| painted(&f.image)).await;
    }
    owner.click(200.0, 110.0).await; // into the textarea, as a person would before typing
    owner.converge(&server, &id).await;

    // Typing: the updates carry small rectangles, never the whole screen.
    let before = owner.screen.clone().expect("screen");
    let owner_bytes = |info: serde_json::Value| {
        info["participantLinks"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["role"] == "owner"))
            .and_then(|p| p["bytes"].as_u64())
            .expect("owner's link")
    };
    let sent_before = owner_bytes(server.session_json(&id).await.1);
    owner.type_text("Hi there").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "Hi there")
        .await;
    let typing = owner.frame_where(|f| f.image != before).await;
    let small = |f: &support::Frame| {
        f.ops.iter().all(|op| match op {
            cobrowse::encode::AppliedOp::Rect { w, h, .. } => w * h < 1280 * 720 / 4,
            cobrowse::encode::AppliedOp::Copy { .. } => false,
        })
    };
    assert!(
        small(&typing),
        "typing sent a large update: {:?} {:?}; differing pixels from before: {}",
        typing.header,
        typing.ops,
        support::differing_pixels(&before, &typing.image)
    );
    owner.converge(&server, &id).await;
    // Text and refinements included: far below one whole JPEG frame of this page (~120 kB) per
    // character.
    let sent = owner_bytes(server.session_json(&id).await.1) - sent_before;
    assert!(
        sent < 40_000,
        "typing 8 characters cost the owner {sent} bytes"
    );

    // Scrolling: the viewer is told to move what it has, then gets the revealed strip.
    let mut moved = false;
    for _ in 0..3 {
        owner
            .send(serde_json::json!({"t": "wheel", "x": 400, "y": 400, "dy": 200}))
            .await;
        let f = owner
            .frame_where(|f| {
                f.ops
                    .iter()
                    .any(|op| matches!(op, cobrowse::encode::AppliedOp::Copy { .. }))
            })
            .await;
        moved |= f
            .ops
            .iter()
            .any(|op| matches!(op, cobrowse::encode::AppliedOp::Copy { dy, .. } if *dy > 0));
    }
    assert!(moved, "a scroll down moves the content up");
    site.report_where(|r| r["type"] == "scroll" && r["y"] == 600)
        .await;
    owner.converge(&server, &id).await;
    // The viewer, which read everything at its own pace, ends on the same exact screen.
    watcher.converge(&server, &id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_viewer_gets_the_whole_screen() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/text")).await;
    site.report_of("ready").await;
    let mut owner = server.join(&id, &links.owner).await;
    owner.converge(&server, &id).await;
    let mut viewer = server.join(&id, &links.viewer).await;
    viewer.next_frame().await;
    drop(viewer);
    owner.click(200.0, 110.0).await; // into the textarea
    owner.type_text("x").await;
    site.report_where(|r| r["type"] == "input").await;
    let mut again = server.join(&id, &links.viewer).await;
    let first = again.next_frame().await;
    assert!(
        first.header.flags & cobrowse::protocol::flags::KEYFRAME != 0,
        "a new connection starts with a keyframe"
    );
    assert!(
        first.ops.iter().any(|op| matches!(
            op,
            cobrowse::encode::AppliedOp::Rect {
                x: 0,
                y: 0,
                w: 1280,
                h: 720,
                ..
            }
        )),
        "covering the whole screen: {:?}",
        first.ops
    );
    again.converge(&server, &id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_participant_sees_a_static_page_at_once() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server
        .create_session(&site.url("/color?c=rgb(200,30,200)"))
        .await;
    let mut first = server.join(&id, &links.owner).await;
    let current = first
        .frame_where(|f| close_to(f.pixel(10, 10), [200, 30, 200], 12))
        .await;
    // The page does not repaint any more; a newcomer still gets the current screen as its
    // first frame, without waiting for a repaint.
    let mut late = server.join(&id, &links.viewer).await;
    let seen = late.next_frame().await;
    assert!(seen.header.version >= current.header.version);
    assert!(close_to(seen.pixel(10, 10), [200, 30, 200], 12));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_link_cannot_send_input() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/click")).await;
    let mut viewer = server.join(&id, &links.viewer).await;
    assert_eq!(
        (
            viewer.hello["role"].as_str(),
            viewer.hello["canInput"].as_bool()
        ),
        (Some("viewer"), Some(false))
    );
    assert!(
        viewer.hello["links"].is_null(),
        "only the owner sees the join links"
    );
    site.report_of("ready").await;
    viewer.click(100.0, 100.0).await;
    viewer.press("a", "KeyA", 65, 0).await;
    let notice = viewer.next_json("notice").await;
    assert_eq!(notice["code"], "input-not-allowed");

    // The server has processed the viewer's input (it answered); now the owner clicks. The first
    // mousedown the page ever saw is the owner's.
    let mut owner = server.join(&id, &links.owner).await;
    owner.click(600.0, 400.0).await;
    let down = site.report_of("mousedown").await;
    assert_eq!(
        (down["x"].as_i64(), down["y"].as_i64()),
        (Some(600), Some(400))
    );
    // Told once per connection, not per message: more input, then a malformed message as a
    // marker (the server answers a connection's messages in order). Every notice up to the
    // marker's must be about the marker, none about input.
    viewer.click(1.0, 1.0).await;
    viewer
        .send_raw(Message::text("marker: not json"))
        .await
        .expect("send");
    loop {
        let notice = viewer.next_json("notice").await;
        assert_ne!(notice["code"], "input-not-allowed", "told twice: {notice}");
        if notice["code"] == "bad-message" {
            break;
        }
    }
    // And the page still saw no input from the viewer: the next mousedown is the owner's.
    owner.click(601.0, 401.0).await;
    let down = site.report_of("mousedown").await;
    assert_eq!(down["x"], 601);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_a_notice_and_disturb_nobody() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/click")).await;
    let mut rogue = server.join(&id, &links.controller).await;
    let mut owner = server.join(&id, &links.owner).await;
    site.report_of("ready").await;

    for bad in [
        "not json",
        "{}",
        r#"{"t":"mouse","type":"down"}"#,
        r#"{"t":"mouse","type":"down","x":"NaN","y":1}"#,
        r#"{"t":"key","type":"down","key":""}"#,
    ] {
        rogue.send_raw(Message::text(bad)).await.expect("send");
        assert_eq!(
            rogue.next_json("notice").await["code"],
            "bad-message",
            "{bad}"
        );
    }
    rogue
        .send_raw(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    assert_eq!(rogue.next_json("notice").await["code"], "bad-message");
    // Non-finite coordinates cannot be written in JSON; a huge number is clamped onto the page.
    rogue
        .send(json!({"t":"mouse","type":"move","x":1e308,"y":-1e308,"button":"none"}))
        .await;
    // Still connected and obeyed.
    rogue.click(30.0, 40.0).await;
    let down = site.report_of("mousedown").await;
    assert_eq!(
        (down["x"].as_i64(), down["y"].as_i64()),
        (Some(30), Some(40))
    );

    // An oversized message closes only that socket (1009).
    let _ = rogue
        .send_raw(Message::text(
            "x".repeat(cobrowse::protocol::MAX_MESSAGE_BYTES + 1),
        ))
        .await;
    while let Some(m) = rogue.next_message().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    assert_eq!(rogue.closed_with, Some(1009));

    // Everybody else carries on.
    owner.click(300.0, 200.0).await;
    let down = site
        .report_where(|r| r["type"] == "mousedown" && r["x"] == 300)
        .await;
    assert_eq!(down["y"], 200);
    owner.frame_where(|_| true).await;
    owner.json_where("presence", |p| p["count"] == 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_stops_reading_never_slows_the_others() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/animate")).await;
    // Join once the page has loaded: this test is about a participant that stops reading, not
    // about join timing.
    site.report_of("ready").await;
    // This one never acknowledges and never reads after its hello.
    let mut stalled = server.join(&id, &links.viewer).await;
    let mut live = server.join(&id, &links.owner).await;
    // Measure once the animation is on screen (the page may take a while to load on a busy machine).
    live.frame_where(|f| {
        (0..1280)
            .step_by(8)
            .any(|x| close_to(f.pixel(x, 200), [0xee, 0x33, 0x33], 40))
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut frames = 0;
    while started.elapsed() < Duration::from_secs(2) {
        live.next_frame().await;
        frames += 1;
    }
    // The animated page runs at ~60 fps; even a loaded CI machine delivers far more than this.
    assert!(
        frames >= 20,
        "live participant got only {frames} frames in 2 s"
    );
    // The stalled participant was sent at most its window of unacknowledged frames.
    let mut stalled_frames = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), stalled.next_message()).await {
            Ok(Some(Message::Binary(_))) => stalled_frames += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(
        stalled_frames <= cobrowse::pacing::ACK_WINDOW,
        "stalled participant got {stalled_frames} frames"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_is_checked_before_the_upgrade() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/color")).await;
    let status_of = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    };
    let wrong = Participant::connect(server.addr, &id, "not-a-token")
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(wrong), 401);
    let unknown = Participant::connect(server.addr, "nope", &links.owner)
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(unknown), 404);
    // Missing token subprotocol.
    let request = support::ws_request(server.addr, &id, "cobrowse.v1").await;
    let missing = tokio_tungstenite::connect_async(request)
        .await
        .expect_err("refused");
    assert_eq!(status_of(missing), 401);
    // A page of another origin cannot ride on a user's link.
    let mut request = support::ws_request(
        server.addr,
        &id,
        &format!("cobrowse.v1, cobrowse.token.{}", links.owner),
    )
    .await;
    request
        .headers_mut()
        .insert("Origin", "http://evil.example".parse().expect("header"));
    let foreign = tokio_tungstenite::connect_async(request)
        .await
        .expect_err("refused");
    assert_eq!(status_of(foreign), 403);

    // The check endpoint tells a viewer whether its link is still good.
    let bearer = format!("Bearer {}", links.viewer);
    let (status, body) = server
        .http
        .raw(
            "GET",
            &format!("/s/{id}/check"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!((status, body.contains("\"viewer\"")), (200, true));
    let (status, _) = server
        .http
        .raw(
            "GET",
            &format!("/s/{id}/check"),
            &[("Authorization", "Bearer x")],
            None,
        )
        .await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_participants_and_closes_the_browser() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/color")).await;
    let pid = server.session_json(&id).await.1["browserPid"]
        .as_u64()
        .expect("pid") as u32;
    let mut owner = server.join(&id, &links.owner).await;
    owner.next_frame().await;
    let children = support::descendants(pid);
    assert!(!children.is_empty(), "Chromium runs helper processes");
    server.shutdown.cancel();
    let ended = owner.next_json("ended").await;
    assert_eq!(ended["reason"], "the server is shutting down");
    while owner
        .next_message()
        .await
        .is_some_and(|m| !matches!(m, Message::Close(_)))
    {}
    assert_eq!(
        owner.closed_with,
        Some(cobrowse::protocol::close::SHUTTING_DOWN)
    );
    tokio::time::timeout(Duration::from_secs(30), server.task)
        .await
        .expect("run returns")
        .expect("task")
        .expect("ok");
    assert!(
        !support::pid_alive(pid),
        "browser process still alive after shutdown"
    );
    for child in children {
        assert!(
            support::wait_pid_exit(child, Duration::from_secs(10)).await,
            "Chromium helper {child} survived"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_keeps_crashing_ends_its_session_and_only_it() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/color")).await;
    let (other_id, other_links) = server
        .create_session(&site.url("/color?c=rgb(0,0,250)"))
        .await;
    let mut owner = server.join(&id, &links.owner).await;
    owner.next_frame().await;
    let kill = |pid: u32| {
        let victim = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        rustix::process::kill_process(victim, rustix::process::Signal::KILL)
            .expect("kill Chromium");
    };
    let browser_pid = || async {
        server.session_json(&id).await.1["browserPid"]
            .as_u64()
            .expect("pid") as u32
    };
    // Three crashes are recovered from: a new browser each time, the participant still there.
    for crash in 1..=3 {
        let pid = browser_pid().await;
        kill(pid);
        owner
            .json_where("notice", |v| v["code"] == "browser-restarted")
            .await;
        let (_, info) = server.session_json(&id).await;
        assert_ne!(info["browserPid"], pid, "crash {crash}: a new browser");
        assert_eq!(info["browserRestarts"], crash);
    }
    // A fourth within minutes is a page that kills its browser: the session ends.
    kill(browser_pid().await);
    let ended = owner.next_json("ended").await;
    assert_eq!(
        ended["reason"],
        "the browser stopped unexpectedly too many times"
    );
    while owner
        .next_message()
        .await
        .is_some_and(|m| !matches!(m, Message::Close(_)))
    {}
    assert_eq!(
        owner.closed_with,
        Some(cobrowse::protocol::close::SESSION_ENDED)
    );
    // The session is gone from the API; the other session is untouched and still serves frames.
    let gone = async {
        loop {
            if server.session_json(&id).await.0 == 404 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("session unregistered");
    let mut other = server.join(&other_id, &other_links.viewer).await;
    other
        .frame_where(|f| close_to(f.pixel(10, 10), [0, 0, 250], 12))
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_screencast_falls_back_to_screenshots() {
    let mut site = TestSite::start().await;
    let mut config = support::site_config(&site);
    // Every screencast frame after the first is dropped, as when Chromium's screencast stalls.
    config.fault_stall_screencast = true;
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/click")).await;
    site.report_of("ready").await;
    let mut owner = server.join(&id, &links.owner).await;
    owner.converge(&server, &id).await;

    // The page turns red on mousedown: the viewer sees it although no screencast frame comes.
    owner.click(300.0, 200.0).await;
    site.report_of("mousedown").await;
    owner
        .frame_where(|f| close_to(f.pixel(640, 360), [255, 0, 0], 12))
        .await;
    let (_, info) = server.session_json(&id).await;
    let polled = info["framesPolled"].as_u64().expect("framesPolled");
    assert!(polled > 0, "screenshots were taken: {info}");
    assert_eq!(
        info["framesIn"], 1,
        "the injected fault let one frame through"
    );

    // And it keeps following the page, exactly.
    owner.click(300.0, 200.0).await;
    owner
        .frame_where(|f| close_to(f.pixel(640, 360), [0, 0, 255], 12))
        .await;
    owner.converge(&server, &id).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_text_page_is_not_mistaken_for_a_stalled_screencast() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/article")).await;
    site.report_of("ready").await;
    let mut owner = server.join(&id, &links.owner).await;
    owner.converge(&server, &id).await;
    // The screencast goes quiet; the server checks it against screenshots (after 2 s, then 4 s).
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let info = loop {
        let (_, info) = server.session_json(&id).await;
        if info["screencastChecks"].as_u64().unwrap_or(0) >= 2 {
            break info;
        }
        assert!(tokio::time::Instant::now() < deadline, "no checks: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await; // polling the API, not syncing
    };
    // Two encoders' takes on the same text are the same page: no fallback.
    assert_eq!(info["screenSource"], "screencast", "{info}");
    assert_eq!(info["framesPolled"], 0, "{info}");
    server.stop().await;
}
