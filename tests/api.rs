//! The management API and the browser lifecycle: bad input never launches or leaks a Chromium,
//! ending a session (or the server, however it dies) ends its browser.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::{descendants, pid_alive, wait_pid_exit, TestServer, TestSite};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_cannot_start_is_a_clean_500() {
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
    assert_eq!(
        (status, reply["error"].as_str()),
        (500, Some("internal error"))
    );
    assert_eq!(
        server.http.request("GET", "/api/sessions", None).await.1,
        json!({"sessions": []})
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

/// The real binary, as an operator runs it.
fn cobrowse_bin() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cobrowse"));
    // A data directory of the test's own (the generated secret, the audit log), not ~/.local.
    let data = std::env::temp_dir().join(format!("cobrowse-test-data-{}", std::process::id()));
    cmd.env_remove("COBROWSE_LISTEN")
        .env_remove("COBROWSE_CHROMIUM")
        .env_remove("COBROWSE_API_KEY")
        .env("COBROWSE_DATA_DIR", data)
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn bad_configuration_is_one_line_and_exit_code_64() {
    for args in [
        &["serve", "--listen", "nowhere"][..],
        &["serve", "--chromium", "/nonexistent/chromium"],
        &["serve", "--max-sessions", "0"],
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

type LogLines = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

/// Starts the real binary on a free port with JSON logs, its browsers allowed to reach `site`
/// (through `COBROWSE_ALLOW`, as an operator would); returns it, the address it logged, and the
/// rest of its log.
async fn spawn_server(site: &TestSite) -> (tokio::process::Child, std::net::SocketAddr, LogLines) {
    let mut server = cobrowse_bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("COBROWSE_ALLOW", site.addr.to_string())
        .env("COBROWSE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cobrowse");
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    loop {
        let line = tokio::time::timeout(support::WAIT, lines.next_line())
            .await
            .expect("log in time")
            .expect("read")
            .expect("server running");
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if log["fields"]["message"] == "listening" {
            let addr = log["fields"]["address"]
                .as_str()
                .expect("address")
                .parse()
                .expect("socket address");
            return (server, addr, lines);
        }
    }
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

    let server_pid = rustix::process::Pid::from_raw(server.id().expect("pid") as i32).expect("pid");
    rustix::process::kill_process(server_pid, rustix::process::Signal::TERM).expect("SIGTERM");
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
