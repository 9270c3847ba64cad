//! Where the page goes and what it asks: the URL bar, back/forward/reload, title and loading,
//! JavaScript dialogs, and recovery when the page's renderer or the whole browser crashes. Real
//! server, real Chromium; participants speak the viewer protocol over WebSocket.

mod support;

use serde_json::{json, Value};
use support::{Participant, TestServer, TestSite};

/// Waits for a `page` message whose URL ends with `path` and that satisfies `pred`.
async fn page_where(p: &mut Participant, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    p.json_where("page", |v| {
        v["url"].as_str().is_some_and(|u| u.ends_with(path)) && pred(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_bar_and_history_buttons_move_the_page_for_everyone() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/nav/1")).await;
    let mut driver = server.join(&id, &links.controller).await;
    let mut watcher = server.join(&id, &links.viewer).await;
    let first = page_where(&mut driver, "/nav/1", |v| v["title"] == "Page 1").await;
    assert_eq!(first["canGoBack"], false, "{first}");
    site.report_where(|r| r["page"] == "/nav/1").await;

    // Typed as people type it: no scheme. A local address gets http://.
    let typed = format!("{}/nav/2", site.addr);
    driver.send(json!({"t": "navigate", "url": typed})).await;
    // Loading is shown while it lasts, and ends.
    driver.json_where("page", |v| v["loading"] == true).await;
    for p in [&mut driver, &mut watcher] {
        let page = page_where(p, "/nav/2", |v| {
            v["title"] == "Page 2" && v["canGoBack"] == true && v["loading"] == false
        })
        .await;
        assert_eq!(page["url"], site.url("/nav/2"));
        assert_eq!(page["canGoForward"], false, "{page}");
    }

    driver.send(json!({"t": "history", "action": "back"})).await;
    let back = page_where(&mut driver, "/nav/1", |v| v["canGoForward"] == true).await;
    assert_eq!(back["title"], "Page 1", "{back}");
    driver
        .send(json!({"t": "history", "action": "forward"}))
        .await;
    page_where(&mut driver, "/nav/2", |v| {
        v["canGoBack"] == true && v["canGoForward"] == false
    })
    .await;

    // Reload loads the page again (the site sees it load).
    site.drain();
    driver
        .send(json!({"t": "history", "action": "reload"}))
        .await;
    site.report_where(|r| r["type"] == "ready" && r["page"] == "/nav/2")
        .await;

    // An in-page link changes the URL without a new document.
    driver.click(150.0, 150.0).await;
    let part = page_where(&mut driver, "/nav/2#part", |_| true).await;
    assert_eq!(part["title"], "Page 2");

    // The URL bar never runs script or opens local files; nothing moves.
    for bad in [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "chrome://settings",
        "two words",
    ] {
        driver.send(json!({"t": "navigate", "url": bad})).await;
        let notice = driver
            .json_where("notice", |v| v["code"] == "navigate-refused")
            .await;
        assert!(
            notice["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{notice}"
        );
    }
    // Viewers cannot navigate.
    watcher
        .send(json!({"t": "navigate", "url": site.url("/nav/9")}))
        .await;
    watcher
        .json_where("notice", |v| v["code"] == "input-not-allowed")
        .await;
    let (_, info) = server.session_json(&id).await;
    assert!(
        info["page"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/nav/2#part")),
        "{info}"
    );
    assert_eq!(info["page"]["title"], "Page 2");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogs_wait_for_an_answer_from_someone_in_control() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/dialogs")).await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    let mut customer = server.join_named(&id, &links.viewer, "Customer").await;
    site.report_where(|r| r["page"] == "/dialogs").await;
    page_where(&mut agent, "/dialogs", |v| v["title"] == "Dialogs").await;

    // confirm(): everyone sees it; a viewer cannot answer; the page waits.
    agent.click(300.0, 50.0).await;
    let opened = agent.json_where("dialog", |v| !v["dialog"].is_null()).await;
    let d = &opened["dialog"];
    assert_eq!(d["kind"], "confirm");
    assert_eq!(d["message"], "Delete the file?");
    assert_eq!(d["origin"], format!("http://{}", site.addr));
    let id1 = d["id"].as_u64().expect("id");
    let seen = customer
        .json_where("dialog", |v| !v["dialog"].is_null())
        .await;
    assert_eq!(seen["dialog"]["id"], id1);
    customer
        .send(json!({"t": "dialog", "id": id1, "accept": true}))
        .await;
    customer
        .json_where("notice", |v| v["code"] == "input-not-allowed")
        .await;
    // Someone joining now is told about the dialog at once.
    let mut late = server.join(&id, &links.controller).await;
    let state = late.json_where("dialog", |_| true).await;
    assert_eq!(state["dialog"]["id"], id1, "{state}");

    agent
        .send(json!({"t": "dialog", "id": id1, "accept": false}))
        .await;
    let report = site.report_of("confirm").await;
    assert_eq!(report["value"], false, "Cancel answers false");
    let closed = customer
        .json_where("dialog", |v| v["dialog"].is_null())
        .await;
    assert_eq!(closed["answeredBy"], "Agent");
    // The same dialog cannot be answered twice.
    late.send(json!({"t": "dialog", "id": id1, "accept": true}))
        .await;
    late.json_where("notice", |v| v["code"] == "dialog-refused")
        .await;

    // prompt(): the preset answer is shown; the answer typed reaches the page.
    agent.click(500.0, 50.0).await;
    let opened = late
        .json_where("dialog", |v| v["dialog"]["kind"] == "prompt")
        .await;
    assert_eq!(opened["dialog"]["defaultPrompt"], "Anonymous");
    let id2 = opened["dialog"]["id"].as_u64().expect("id");
    assert_ne!(id2, id1);
    late.send(json!({"t": "dialog", "id": id2, "accept": true, "text": "Ada Lovelace"}))
        .await;
    assert_eq!(site.report_of("prompt").await["value"], "Ada Lovelace");

    // alert(): the page's script continues once it is acknowledged.
    agent.click(100.0, 50.0).await;
    let opened = agent
        .json_where("dialog", |v| v["dialog"]["kind"] == "alert")
        .await;
    assert_eq!(opened["dialog"]["message"], "Saved.\nAll good.");
    // Meanwhile the rest of the session works: chat goes round.
    customer
        .send(json!({"t": "chat", "text": "still here"}))
        .await;
    agent
        .json_where("chat", |v| v["text"] == "still here")
        .await;
    let id3 = opened["dialog"]["id"].as_u64().expect("id");
    agent
        .send(json!({"t": "dialog", "id": id3, "accept": true}))
        .await;
    site.report_of("alert-done").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_page_that_asks_first_needs_an_answer() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/leave")).await;
    let mut p = server.join(&id, &links.controller).await;
    site.report_where(|r| r["page"] == "/leave").await;
    // The page only asks once someone interacted with it.
    p.click(200.0, 50.0).await;
    p.type_text("draft").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "draft")
        .await;

    p.click(150.0, 250.0).await;
    let opened = p
        .json_where("dialog", |v| v["dialog"]["kind"] == "beforeunload")
        .await;
    let stay = opened["dialog"]["id"].as_u64().expect("id");
    p.send(json!({"t": "dialog", "id": stay, "accept": false}))
        .await;
    p.json_where("dialog", |v| v["dialog"].is_null()).await;
    // Staying keeps the page and what was typed (the link took the focus: click back in).
    p.click(200.0, 50.0).await;
    p.type_text("!").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "draft!")
        .await;

    p.click(150.0, 250.0).await;
    let opened = p
        .json_where("dialog", |v| v["dialog"]["kind"] == "beforeunload")
        .await;
    let leave = opened["dialog"]["id"].as_u64().expect("id");
    p.send(json!({"t": "dialog", "id": leave, "accept": true}))
        .await;
    page_where(&mut p, "/nav/1", |v| v["title"] == "Page 1").await;
    server.stop().await;
}

/// Processes under `pid` whose command line says they are renderers.
fn renderers_of(pid: u32) -> Vec<u32> {
    support::descendants(pid)
        .into_iter()
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("--type=renderer"))
                .unwrap_or(false)
        })
        .collect()
}

fn kill(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_page_is_loaded_again_at_the_same_address() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/nav/1")).await;
    let mut p = server.join(&id, &links.controller).await;
    site.report_where(|r| r["page"] == "/nav/1").await;
    // Somewhere other than the start: recovery goes back where the page was.
    p.click(150.0, 50.0).await;
    site.report_where(|r| r["page"] == "/nav/2").await;
    page_where(&mut p, "/nav/2", |v| v["title"] == "Page 2").await;

    let (_, info) = server.session_json(&id).await;
    let browser = info["browserPid"].as_u64().expect("pid") as u32;
    let renderers = renderers_of(browser);
    assert!(!renderers.is_empty(), "a renderer runs under {browser}");
    for r in &renderers {
        kill(*r);
    }
    p.json_where("notice", |v| v["code"] == "page-crashed")
        .await;
    site.report_where(|r| r["type"] == "ready" && r["page"] == "/nav/2")
        .await;
    // The screen comes back and input works: a click follows the link on the reloaded page.
    p.click(150.0, 50.0).await;
    site.report_where(|r| r["page"] == "/nav/3").await;
    let (_, info) = server.session_json(&id).await;
    assert_eq!(info["browserRestarts"], 1, "{info}");
    assert_eq!(info["browserPid"], browser, "same browser, new renderer");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_browser_is_replaced_and_everyone_stays_connected() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/leave")).await;
    let mut p = server.join(&id, &links.controller).await;
    let mut watcher = server.join(&id, &links.viewer).await;
    site.report_where(|r| r["page"] == "/leave").await;
    let (_, info) = server.session_json(&id).await;
    let old = info["browserPid"].as_u64().expect("pid") as u32;

    kill(old);
    for who in [&mut p, &mut watcher] {
        who.json_where("notice", |v| v["code"] == "browser-restarting")
            .await;
        who.json_where("notice", |v| v["code"] == "browser-restarted")
            .await;
    }
    site.report_where(|r| r["type"] == "ready" && r["page"] == "/leave")
        .await;
    assert!(
        support::wait_pid_exit(old, support::WAIT).await,
        "the dead browser is reaped"
    );
    let (_, info) = server.session_json(&id).await;
    let new = info["browserPid"].as_u64().expect("pid") as u32;
    assert_ne!(new, old);
    assert_eq!(info["participants"], 2, "nobody was dropped: {info}");
    // The new browser takes input from the same connection, and its screen reaches viewers.
    p.click(200.0, 50.0).await;
    p.type_text("again").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "again")
        .await;
    // Updates still reach the viewer who stayed (it skipped some while reading notices, as a
    // viewer that cannot paint would: it asks for a whole screen), and show the new page.
    watcher.resync().await;
    watcher.converge(&server, &id).await;
    let (_, screen) = server.screenshot(&id).await;
    let link = screen.get_pixel(150, 250).0;
    assert!(
        support::close_to(link, [0x99, 0xcc, 0xff], 8),
        "the page's link is on screen: {link:?}"
    );
    server.stop().await;
}
