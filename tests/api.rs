//! The management API and the browser lifecycle: bad input never launches or leaks a Chromium,
//! ending a session (or the server, however it dies) ends its browser.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{
    cobrowse_bin, descendants, pid_alive, spawn_server, wait_pid_exit, TestServer, TestSite,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_cannot_start_is_a_clean_503_and_the_node_not_ready() {
    let mut config = support::test_config();
    config.chromium = "/bin/false".into();
    let server = TestServer::start_with(config).await;
    let (status, reply) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": "https://example.com"})),
        )
        .await;
    // 503, not 500: another node may well start one, so a router retries there.
    assert_eq!(
        (status, reply["error"].as_str()),
        (503, Some("the browser could not be started on this server"))
    );
    assert_eq!(
        server.http.request("GET", "/api/sessions", None).await.1,
        json!({"sessions": []})
    );
    let (status, ready) = server.http.request("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    assert!(
        ready["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("Chromium does not start")),
        "{ready}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_limit_is_a_clear_503() {
    let site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.max_sessions = 1;
    let server = TestServer::start_with(config).await;
    server.create_session(&site.url("/color")).await;
    let (status, reply) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/color")})),
        )
        .await;
    assert_eq!(status, 503);
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("session limit")),
        "{reply}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_nobody_joins_ends_after_the_idle_timeout() {
    let site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.idle_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/color")).await;
    let pid = server.session_json(&id).await.1["browserPid"]
        .as_u64()
        .expect("pid") as u32;
    assert!(
        wait_pid_exit(pid, Duration::from_secs(15)).await,
        "idle session's browser still running"
    );
    // Gone from the API, and its links are dead.
    let gone = async {
        while server.session_json(&id).await.0 != 404 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("session unregistered");
    assert!(
        support::Participant::connect(server.addr, &id, &links.owner)
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_pages_are_served() {
    let server = TestServer::start().await;
    let (status, body) = server.http.raw("GET", "/", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("id=\"url\"") && body.contains("id=\"start\""),
        "landing page has the URL box and Start"
    );
    let (status, body) = server.http.raw("GET", "/s/anything", &[], None).await;
    assert_eq!(status, 200);
    assert!(body.contains("id=\"screen\""));
    assert_eq!(
        server
            .http
            .raw("GET", "/js/connection.js", &[], None)
            .await
            .0,
        200
    );
    assert_eq!(server.http.raw("GET", "/nope.js", &[], None).await.0, 404);
    assert_eq!(
        server.http.raw("GET", "/../Cargo.toml", &[], None).await.0,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_configuration_is_one_line_and_exit_code_64() {
    for args in [
        &["serve", "--listen", "nowhere"][..],
        &["serve", "--chromium", "/nonexistent/chromium"],
        &["serve", "--max-sessions", "0"],
        &["serve", "--max-sessions", "2", "--warm-browsers", "3"],
        &["serve", "--min-free-memory", "lots"],
        &["serve", "--no-such-flag"],
        &["serve", "--public-url", "ftp://x"],
        // An open management API on a public address.
        &["serve", "--listen", "0.0.0.0:0"],
        &["serve", "--api-key", "short"],
        &["serve", "--tls-cert", "/nonexistent.pem"],
    ] {
        let out = cobrowse_bin()
            .args(args)
            .output()
            .await
            .expect("run cobrowse");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
    // The same settings through the environment.
    let out = cobrowse_bin()
        .arg("serve")
        .env("COBROWSE_LISTEN", "bad")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_leaves_no_chromium_behind() {
    let site = TestSite::start().await;
    let (mut server, addr, mut lines) = spawn_server(&site).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let client = support::reqwest_lite::Client::new(addr);
    let (status, created) = client
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/color")})),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id");
    let info = client
        .request("GET", &format!("/api/sessions/{id}"), None)
        .await
        .1;
    let pid = info["browserPid"].as_u64().expect("pid") as u32;
    let helpers = descendants(pid);
    assert!(pid_alive(pid));

    server.start_kill().expect("SIGKILL the server");
    server.wait().await.expect("reaped");
    assert!(
        wait_pid_exit(pid, Duration::from_secs(10)).await,
        "Chromium {pid} outlived a killed server"
    );
    for helper in helpers {
        assert!(
            wait_pid_exit(helper, Duration::from_secs(10)).await,
            "Chromium helper {helper} outlived a killed server"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_sessions_and_exits_cleanly() {
    let site = TestSite::start().await;
    let (mut server, addr, mut lines) = spawn_server(&site).await;
    let log_task = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    let client = support::reqwest_lite::Client::new(addr);
    let created = client
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/color")})),
        )
        .await
        .1;
    let id = created["id"].as_str().expect("id");
    let pid = client
        .request("GET", &format!("/api/sessions/{id}"), None)
        .await
        .1["browserPid"]
        .as_u64()
        .expect("pid") as u32;

    support::signal(&server, rustix::process::Signal::TERM);
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(
        !pid_alive(pid),
        "Chromium still running after a clean shutdown"
    );
    let logs = log_task.await.expect("logs").join("\n");
    assert!(
        logs.contains("SIGTERM") && logs.contains("every session ended"),
        "{logs}"
    );
}
