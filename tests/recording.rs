//! Recording (issue 7): a real session on the test site's order form, recorded by the server,
//! read back and replayed; the file survives the server being killed; the API lists, serves and
//! deletes recordings; retention removes old ones; the owner records from a real viewer.

mod support;

use std::time::{Duration, SystemTime};

use cobrowse::recording::event::{Event, InputRecord, Level};
use cobrowse::recording::read::Recording;
use serde_json::{json, Value};
use support::*;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A server for `site` that keeps recordings in `dir`.
async fn recording_server(site: &TestSite, dir: &std::path::Path) -> TestServer {
    let mut config = site_config(site);
    config.recordings_dir = Some(dir.to_path_buf());
    TestServer::start_with(config).await
}

fn at(layout: &Value, name: &str) -> (f64, f64) {
    let p = &layout[name];
    (
        p[0].as_f64().expect("x") + 0.0,
        p[1].as_f64().expect("y") + 0.0,
    )
}

/// Waits until the recording being written for `session` (as flushed so far) replays, at its
/// end, to `screen`, the server's masked screen `version`; returns the time of that end (the
/// recorder's own clock). `None` if the server's screen moved on first (a masked screen
/// settling, a late paint): the recording rightly follows it.
async fn recording_reaches(
    server: &TestServer,
    session: &str,
    version: u32,
    screen: &image::RgbImage,
) -> Option<u32> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, bytes) = server.recording_file(session).await;
        let rec = Recording::parse(bytes).expect("readable while written");
        let differ = rec
            .screen_at(rec.duration_ms())
            .map_or(usize::MAX, |r| differing_pixels(&r, screen));
        if differ == 0 {
            return Some(rec.duration_ms());
        }
        if server.screenshot_of(session, true).await.0 != version {
            return None;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recording never showed the viewer's screen: {differ} pixels differ at its end ({} ms, {} updates)",
            rec.duration_ms(),
            rec.updates.len()
        );
        // The recorder flushes every second: nothing to wait on but the file itself.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_replays_to_the_screens_viewers_had_with_every_event() {
    let mut site = TestSite::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = recording_server(&site, dir.path()).await;
    let (id, links) = server.create_session(&site.url("/form")).await;
    let layout = site.report_of("layout").await;
    let mut owner = server.join_named(&id, &links.owner, "Alice").await;
    // A viewer is always served the masked screen: what a recording holds.
    let mut viewer = server.join_named(&id, &links.viewer, "Vera").await;
    viewer.converge_masked(&server, &id).await;

    owner.send(json!({ "t": "record", "on": true })).await;
    let status = viewer.json_where("recording", |m| m["on"] == true).await;
    assert_eq!(
        status["by"], "Alice",
        "everyone is told who records: {status}"
    );

    // Checkpoints: (when the viewer's screen became the server's, when the recording file showed
    // it, the viewer's screen), ms since the recording started. The recorder is a viewer of its own
    // pace: before the next step, the file (flushed every second) must have caught up with the
    // viewer's screen, or lossy tiles the viewer already had refined could still be lossy there.
    let started_at = status["since"].as_u64().expect("since");
    let mut checkpoints: Vec<(u32, u32, image::RgbImage)> = Vec::new();
    // The server's screen must not change between the viewer's convergence and the next step
    // (a step's effect can paint late): if it did, the checkpoint is taken again.
    macro_rules! checkpoint {
        () => {{
            loop {
                viewer.converge_masked(&server, &id).await;
                let converged = (unix_ms() - started_at) as u32;
                let (before, _) = server.screenshot_of(&id, true).await;
                let screen = viewer.screen.clone().expect("screen");
                let Some(reached) = recording_reaches(&server, &id, before, &screen).await else {
                    continue;
                };
                let (after, now) = server.screenshot_of(&id, true).await;
                if before == after && differing_pixels(&now, &screen) == 0 {
                    checkpoints.push((converged, reached, screen));
                    break;
                }
            }
        }};
    }
    checkpoint!();

    // Like a person, the owner looks at the focused field before typing into it: what is typed
    // before the page said where the focus went is recorded redacted (the field could be masked).
    let (x, y) = at(&layout, "fullname");
    owner.click(x, y).await;
    site.report_where(|r| r["type"] == "focus" && r["id"] == "fullname")
        .await;
    viewer.converge_masked(&server, &id).await;
    owner.type_text("Ada Lovelace").await;
    let (x, y) = at(&layout, "email");
    owner.click(x, y).await;
    site.report_where(|r| r["type"] == "change" && r["name"] == "fullname")
        .await;
    site.report_where(|r| r["type"] == "focus" && r["name"] == "email")
        .await;
    viewer.converge_masked(&server, &id).await;
    owner.type_text("ada@example.com").await;
    owner.press("Tab", "Tab", 9, 0).await;
    site.report_where(|r| r["type"] == "change" && r["name"] == "email")
        .await;
    // A <select> popup (drawn by the viewer) and a checkbox.
    let (x, y) = at(&layout, "size");
    owner.click(x, y).await;
    let popup = owner.next_json("select").await;
    owner
        .send(json!({ "t": "choose", "id": popup["id"], "index": 2 }))
        .await;
    site.report_where(|r| r["type"] == "change" && r["name"] == "size")
        .await;
    let (x, y) = at(&layout, "gift");
    owner.click(x, y).await;
    site.report_where(|r| r["type"] == "change" && r["name"] == "gift")
        .await;
    checkpoint!();

    // A password: its keys are never in the file, and its pixels are masked.
    let (x, y) = at(&layout, "secret");
    owner.click(x, y).await;
    owner.type_text("hunter2").await;
    owner.press("Tab", "Tab", 9, 0).await;
    site.report_where(|r| r["type"] == "change" && r["name"] == "")
        .await;

    let (x, y) = at(&layout, "oops");
    owner.click(x, y).await;
    let (x, y) = at(&layout, "fail");
    owner.click(x, y).await;
    let fetched = site.report_of("fetched").await;
    assert_eq!(fetched["status"], 404);
    checkpoint!();

    owner
        .send(json!({ "t": "wheel", "x": 400.0, "y": 300.0, "dx": 0.0, "dy": 400.0, "mods": 0 }))
        .await;
    // The page scrolled (the owner is told; the viewer keeps applying its updates).
    owner
        .json_where("view", |v| v["scrollY"].as_f64().is_some_and(|y| y > 0.0))
        .await;
    checkpoint!();
    owner
        .send(json!({ "t": "wheel", "x": 400.0, "y": 300.0, "dx": 0.0, "dy": -400.0, "mods": 0 }))
        .await;
    owner
        .json_where("view", |v| v["scrollY"].as_f64() == Some(0.0))
        .await;
    checkpoint!();

    let (x, y) = at(&layout, "send");
    owner.click(x, y).await;
    let submitted = site.report_of("submitted").await;
    let query = submitted["query"].as_str().expect("query").to_string();
    assert!(query.contains("fullname=Ada+Lovelace"), "{query}");
    owner
        .json_where("page", |p| {
            p["url"].as_str().is_some_and(|u| u.contains("/thanks"))
        })
        .await;
    // The thanks page has nothing to mask: once the form's masks expired (docs/masking.md, the
    // 500 ms window) the masked screen is the clear one. Polled: no message says so.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, clear) = server.screenshot_of(&id, false).await;
        let (_, masked) = server.screenshot_of(&id, true).await;
        if differing_pixels(&clear, &masked) == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the thanks page stays masked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checkpoint!();

    owner.send(json!({ "t": "record", "on": false })).await;
    viewer.json_where("recording", |m| m["on"] == false).await;

    let (rid, bytes) = server.recording_file(&id).await;
    let (status, head, zip) = server
        .http
        .raw_bytes("GET", &format!("/api/recordings/{rid}/bundle"), &[], None)
        .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        !bytes.windows(7).any(|w| w == b"hunter2"),
        "the password typed is nowhere in the file"
    );
    let rec = Recording::parse(bytes).expect("a readable recording");
    assert!(
        !rec.truncated,
        "a stopped recording ends with a whole record"
    );
    assert_eq!(rec.meta.id, rid);
    assert_eq!(rec.meta.session, id);
    assert_eq!(rec.meta.started_at, started_at);
    assert!(
        rec.meta.start_url.ends_with("/form"),
        "{}",
        rec.meta.start_url
    );

    // The screen, replayed from the whole file, is the viewer's at every checkpoint, pixel for
    // pixel, and it got there soon after the viewer did. (Times are the recorder's own: the
    // wall clock the test reads is a few ms off it, enough to land on a caret blink.)
    for (i, (converged, reached, screen)) in checkpoints.iter().enumerate() {
        let replayed = rec.screen_at(*reached).expect("a screen at the checkpoint");
        assert_eq!(
            differing_pixels(&replayed, screen),
            0,
            "checkpoint {i} at {reached} ms: the replayed screen differs from the viewer's"
        );
        let caught_up = (*converged.min(reached)..=*reached)
            .step_by(10)
            .find(|t| {
                rec.screen_at(*t)
                    .is_some_and(|r| differing_pixels(&r, screen) == 0)
            })
            .expect("the replay shows the viewer's screen");
        // The recorder is a fast viewer: it may show the screen before this viewer did.
        let lag = caught_up.saturating_sub(*converged);
        assert!(
            lag <= 2000,
            "checkpoint {i}: the recording caught up {lag} ms after the viewer"
        );
    }

    let events: Vec<&Event> = rec.events.iter().map(|(_, e)| e).collect();
    let has = |pred: &dyn Fn(&Event) -> bool| events.iter().any(|e| pred(e));
    assert!(has(
        &|e| matches!(e, Event::Recording { state, by } if state == "started" && by.name == "Alice")
    ));
    assert!(has(
        &|e| matches!(e, Event::Recording { state, .. } if state == "stopped")
    ));
    assert!(has(
        &|e| matches!(e, Event::Input { by, input: InputRecord::Mouse { action, .. } } if by.name == "Alice" && by.role == "owner" && action == "pressed")
    ));
    assert!(has(
        &|e| matches!(e, Event::Input { input: InputRecord::Key { text: Some(t), .. }, .. } if t == "A")
    ));
    assert!(
        has(&|e| matches!(
            e,
            Event::Input {
                input: InputRecord::Key { redacted: true, .. },
                ..
            }
        )),
        "password keys are recorded redacted"
    );
    assert!(has(
        &|e| matches!(e, Event::Input { input: InputRecord::Wheel { delta_y, .. }, .. } if *delta_y == 400.0)
    ));
    assert!(has(
        &|e| matches!(e, Event::Target { selector: Some(s), .. } if s == "#fullname")
    ));
    assert!(has(
        &|e| matches!(e, Event::Target { selector: Some(s), .. } if s == "input[name=\"email\"]")
    ));
    assert!(has(
        &|e| matches!(e, Event::Field { selector: Some(s), value: Some(v), .. } if s == "#fullname" && v == "Ada Lovelace")
    ));
    assert!(has(
        &|e| matches!(e, Event::Field { selector: Some(s), value: None, masked: true, .. } if s == "#secret")
    ));
    assert!(has(
        &|e| matches!(e, Event::Console { level: Level::Error, text, .. } if text.contains("order form: something broke"))
    ));
    assert!(has(
        &|e| matches!(e, Event::Exception { text, .. } if text.contains("order form exploded"))
    ));
    let missing = events
        .iter()
        .find_map(|e| match e {
            Event::Request { id, url, .. } if url.ends_with("/missing.json") => Some(id.clone()),
            _ => None,
        })
        .expect("the failed request is recorded");
    assert!(has(
        &|e| matches!(e, Event::Response { id, status: 404, .. } if *id == missing)
    ));
    assert!(has(
        &|e| matches!(e, Event::Server { message } if message["t"] == "page" && message["url"].as_str().is_some_and(|u| u.contains("/thanks?")))
    ));
    // Times only grow, and a keyframe starts the file.
    let times: Vec<u32> = rec.events.iter().map(|(t, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(rec.updates.first().is_some_and(|u| u.keyframe));

    // The bug bundle: the evidence, and a script that replays the session elsewhere.
    let files = playwright::unzip(&zip);
    assert_eq!(files["recording.cbrec"], rec.bytes());
    let text = |name: &str| String::from_utf8(files[name].clone()).expect("utf-8");
    assert!(text("console.log").contains("order form: something broke"));
    assert!(text("console.log").contains("order form exploded"));
    let har: Value = serde_json::from_str(&text("network.har")).expect("HAR is JSON");
    let entries = har["log"]["entries"].as_array().expect("entries");
    assert!(
        entries.iter().any(|e| e["request"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/missing.json"))
            && e["response"]["status"] == 404),
        "{:?}",
        entries
            .iter()
            .filter(|e| e["request"]["url"]
                .as_str()
                .is_some_and(|u| u.contains("missing")))
            .collect::<Vec<_>>()
    );
    let urls = text("urls.txt");
    assert!(
        urls.lines().any(|u| u.ends_with("/form")) && urls.contains("/thanks?"),
        "{urls}"
    );
    let last = &checkpoints.last().expect("checkpoints").2;
    let final_png = image::load_from_memory(&files["final.png"])
        .expect("PNG")
        .to_rgb8();
    assert_eq!(
        differing_pixels(&final_png, last),
        0,
        "final.png is the last screen"
    );
    // Run against the same site with Playwright and Debian's Chromium, the script submits the
    // same order (the password comes from the environment: the recording never had it).
    let spec = text("repro.spec.ts");
    assert!(!spec.contains("hunter2"));
    site.drain();
    let (ok, output) = playwright::run(&spec, "hunter2").await;
    assert!(ok, "the script replays the session:\n{spec}\n{output}");
    let replayed = site.report_of("submitted").await;
    assert_eq!(
        replayed["query"], submitted["query"],
        "same form values, same URL"
    );

    server.stop().await;
}

/// What `cobrowse serve` prints and keeps, run as its own process so that it can be killed.
struct Served {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_binary(site: &TestSite, data: &std::path::Path) -> Served {
    let port = support::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cobrowse"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--allow",
            &site.addr.to_string(),
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--chromium")
        .arg(chromium())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cobrowse serve starts");
    support::listening(addr, "cobrowse").await;
    Served { child, addr }
}

/// Reads the recordings directory until `pred` holds for the one recording's contents (the
/// recorder flushes at least every second; a file has no event to wait for).
async fn file_until(dir: &std::path::Path, pred: impl Fn(&Recording) -> bool) -> Recording {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let file = std::fs::read_dir(dir)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())));
        if let Some(rec) = file
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| Recording::parse(b).ok())
        {
            if pred(&rec) {
                return rec;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recording never showed what was expected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_recording_leaves_a_readable_replayable_file() {
    let mut site = TestSite::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let served = serve_binary(&site, data.path()).await;
    let http = reqwest_lite::Client::new(served.addr);
    let (status, created) = http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({ "url": site.url("/form"), "record": true })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let token = created["links"]["owner"]
        .as_str()
        .and_then(|l| l.split_once("#token="))
        .expect("owner link")
        .1;
    let layout = site.report_of("layout").await;
    let mut owner = Participant::connect(served.addr, id, token)
        .await
        .expect("join");
    let recording = owner.json_where("recording", |m| m["on"] == true).await;
    assert_eq!(
        recording["by"], "api",
        "recorded from the start: {recording}"
    );
    let mut screens = vec![owner.next_frame().await.image];
    let (x, y) = at(&layout, "fullname");
    owner.click(x, y).await;
    owner.type_text("Grace").await;
    // Collect what the owner sees until the typed text is on screen and in the file.
    let dir = data.path().join("recordings");
    // Every key of "Grace" went down (typed at once after the click, they may be recorded
    // redacted: the page had not said yet where the focus went).
    let typed = |rec: &Recording| {
        rec.events
            .iter()
            .filter(|(_, e)| {
                matches!(e, Event::Input { input: InputRecord::Key { action, text: Some(_), .. }, .. } if action == "down")
            })
            .count()
            == 5
    };
    file_until(&dir, typed).await;
    // The caret blinks: updates never stop, so the owner's screens are collected for a while
    // (past the recorder's next flush), then the server is killed.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(raw) = tokio::time::timeout_at(until, owner.next_frame_raw()).await {
        let frame = owner.apply(raw);
        owner.ack(frame.header.number).await;
        screens.push(frame.image);
    }

    // SIGKILL: nothing gets to close the file.
    let pid = served.child.id();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    assert!(wait_pid_exit(pid, WAIT).await, "server died");

    let rec = file_until(&dir, |_| true).await;
    assert!(typed(&rec), "what was flushed before the kill is readable");
    assert!(
        !rec.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Recording { state, .. } if state == "stopped")),
        "a killed recording has no stop record"
    );
    let last = rec.duration_ms();
    let replayed = rec.screen_at(last).expect("the file replays to a screen");
    assert!(
        screens.iter().any(|s| differing_pixels(s, &replayed) == 0),
        "the replayed last screen is one the viewer had"
    );
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_serves_and_deletes_recordings_and_retention_removes_old_ones() {
    let site = TestSite::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A recording from an earlier run, last written 40 days ago: retention (30 days) removes it
    // when the server starts.
    let old = dir.path().join("old-rec.cbrec");
    {
        let mut f = std::fs::File::create(&old).expect("create");
        cobrowse::recording::store::write_start(
            &mut f,
            &cobrowse::recording::event::Meta {
                version: 1,
                id: "old-rec".into(),
                session: "old".into(),
                started_at: 1,
                start_url: "https://example.com/".into(),
                viewport: [1280, 720],
                scale: 1.0,
                masked: true,
                keyframe_every_ms: 5000,
                server: "test".into(),
            },
        )
        .expect("write");
        f.set_modified(SystemTime::now() - Duration::from_secs(40 * 86_400))
            .expect("mtime");
    }
    let server = recording_server(&site, dir.path()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while old.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not remove the old recording"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (id, links) = server.create_session(&site.url("/form")).await;
    let mut owner = server.join(&id, &links.owner).await;
    owner.next_frame().await;
    // Only the owner records.
    let mut guest = server.join(&id, &links.controller).await;
    guest.send(json!({ "t": "record", "on": true })).await;
    let refused = guest
        .json_where("notice", |n| n["code"] == "not-allowed")
        .await;
    assert!(refused["message"]
        .as_str()
        .expect("message")
        .contains("owner"));
    let body = server.set_recording(&id, true).await;
    assert_eq!(body["recording"]["on"], true);
    let rid = body["recording"]["id"].as_str().expect("id").to_string();
    guest.json_where("recording", |m| m["on"] == true).await;

    // Listed with its size, active; an active recording cannot be deleted.
    let (status, all) = server.http.request("GET", "/api/recordings", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        all["recordings"].as_array().expect("list").len(),
        1,
        "{all}"
    );
    assert_eq!(all["recordings"][0]["active"], true);
    assert_eq!(all["retentionDays"], 30);
    let (status, _) = server
        .http
        .request("DELETE", &format!("/api/recordings/{rid}"), None)
        .await;
    assert_eq!(status, 409);

    let body = server.set_recording(&id, false).await;
    assert_eq!(body["recording"]["on"], false);
    let (status, one) = server
        .http
        .request("GET", &format!("/api/recordings/{rid}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["active"], false);
    assert!(one["bytes"].as_u64().expect("bytes") > 100);

    // The replay link opens the file without an API key; a forged or foreign one does not.
    let replay = one["replayUrl"].as_str().expect("replay url");
    let token = replay.split_once("#token=").expect("token").1;
    let auth = format!("Bearer {token}");
    let (status, _, bytes) = server
        .http
        .raw_bytes(
            "GET",
            &format!("/r/{rid}/recording"),
            &[("Authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(Recording::parse(bytes).is_ok());
    let (status, _, _) = server
        .http
        .raw_bytes("GET", &format!("/r/{rid}/recording"), &[], None)
        .await;
    assert_eq!(status, 401);
    let forged = format!("Bearer {}x", token);
    let (status, _, _) = server
        .http
        .raw_bytes(
            "GET",
            &format!("/r/{rid}/recording"),
            &[("Authorization", &forged)],
            None,
        )
        .await;
    assert_eq!(status, 401);
    // Bad ids are refused, not looked up on disk.
    let (status, _) = server
        .http
        .request("GET", "/api/recordings/..%2F..%2Fetc%2Fpasswd", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .http
        .request(
            "POST",
            &format!("/api/sessions/{id}/recording"),
            Some(json!({ "on": "yes" })),
        )
        .await;
    assert_eq!(status, 400);

    let (status, _) = server
        .http
        .request("DELETE", &format!("/api/recordings/{rid}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .http
        .request("GET", &format!("/api/recordings/{rid}"), None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_records_from_the_viewer_and_everyone_sees_it_and_the_link_replays_it() {
    use support::viewer::{
        canvas_pixels, click_element, eval, until, ViewerBrowser, JPEG_DECODER_ROUNDING,
    };
    let mut site = TestSite::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = recording_server(&site, dir.path()).await;
    let (id, links) = server.create_session(&site.url("/form")).await;
    site.report_of("layout").await;
    let browser = ViewerBrowser::launch(1400, 1000).await;
    let owner = browser.open(&server.join_link(&id, &links.owner)).await;
    let guest = browser.open(&server.join_link(&id, &links.viewer)).await;
    assert_eq!(
        eval(&guest, "document.getElementById('recording-row').hidden").await,
        true,
        "only the owner has the recording controls"
    );
    assert_eq!(
        eval(&guest, "document.getElementById('rec-state').hidden").await,
        true
    );

    // Share → Start recording.
    eval(&owner, "document.getElementById('share').open = true; true").await;
    click_element(&owner, "record-toggle").await;
    until(
        &guest,
        "!document.getElementById('rec-state').hidden",
        "cobrowse:recording",
    )
    .await;
    let title = eval(&guest, "document.getElementById('rec-state').title").await;
    assert!(
        title.as_str().expect("title").contains("being recorded"),
        "{title}"
    );
    until(
        &owner,
        "window.cobrowse.recordings.length === 1 && window.cobrowse.recordings[0].active",
        "cobrowse:recordings",
    )
    .await;
    // Stop recording: the badge goes, the list offers a replay link.
    click_element(&owner, "record-toggle").await;
    until(
        &guest,
        "document.getElementById('rec-state').hidden",
        "cobrowse:recording",
    )
    .await;
    until(
        &owner,
        "window.cobrowse.recordings.length === 1 && !window.cobrowse.recordings[0].active",
        "cobrowse:recordings",
    )
    .await;
    let href = eval(&owner, "document.querySelector('#recordings-list a').href").await;
    let href = href.as_str().expect("replay link").to_string();
    assert!(
        href.contains("/replay/") && href.contains("#token=rp1."),
        "{href}"
    );

    // The link plays the recording without an API key, and its last screen is the session's.
    let (_, masked) = server.screenshot_of(&id, true).await;
    let replay = browser
        .browser
        .new_page(href)
        .await
        .expect("open the replay link");
    let loaded = eval(&replay, "window.__replay.ready").await;
    assert_eq!(loaded["truncated"], false, "{loaded}");
    assert!(
        loaded["updates"].as_u64().expect("updates") >= 1,
        "{loaded}"
    );
    eval(
        &replay,
        "window.__replay.seek(window.__replay.duration).then(() => true)",
    )
    .await;
    let canvas = canvas_pixels(&replay).await;
    let worst = canvas
        .as_raw()
        .iter()
        .zip(masked.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(u8::MAX);
    assert_eq!(canvas.dimensions(), masked.dimensions());
    assert!(
        worst <= JPEG_DECODER_ROUNDING,
        "the replayed screen is the session's (up to JPEG decoder rounding): off by {worst}"
    );
    browser.close().await;
    server.stop().await;
}
