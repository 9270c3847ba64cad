//! Operating a node: `/healthz`, `/readyz` and `/metrics` as an orchestrator and Prometheus see
//! them, admission control, the warm pool, and the graceful shutdown (drain) of the real binary.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::{json, Value};
use support::viewer::{eval, ViewerBrowser};
use support::{pid_alive, spawn_server_with, wait_pid_exit, TestServer, TestSite, WAIT};

/// The value of one sample (`name` with its labels exactly as written, e.g.
/// `cobrowse_sessions_started_total{browser="warm"}`) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

async fn metrics(server: &TestServer) -> String {
    let (status, text) = server.http.raw("GET", "/metrics", &[], None).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// Polls `/metrics` until `series` satisfies `pred` (what Prometheus would see on its next
/// scrape); the figures move on their own clock (link reports, browser exits).
async fn metric_until(server: &TestServer, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics(server).await;
        if let Some(v) = sample(&text, series).filter(|&v| pred(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz_until(
    http: &support::reqwest_lite::Client,
    pred: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http.request("GET", "/readyz", None).await;
        if pred(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never got there: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_follow_the_sessions() {
    let site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.max_sessions = 1;
    let server = TestServer::start_with(config).await;

    let (status, health) = server.http.request("GET", "/healthz", None).await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let (status, ready) = server.http.request("GET", "/readyz", None).await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)), "{ready}");
    let (_, head, _) = server.http.raw_bytes("GET", "/metrics", &[], None).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let before = metrics(&server).await;
    assert_eq!(sample(&before, "cobrowse_sessions"), Some(0.0));
    assert_eq!(sample(&before, "cobrowse_sessions_max"), Some(1.0));

    let (id, links) = server.create_session(&site.url("/click")).await;
    let mut owner = server.join(&id, &links.owner).await;
    owner.converge(&server, &id).await;
    let text = metrics(&server).await;
    let labelled = |name: &str| format!("{name}{{session=\"{id}\"}}");
    assert_eq!(sample(&text, "cobrowse_sessions"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "cobrowse_participants"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, &labelled("cobrowse_session_participants")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "cobrowse_sessions_started_total{browser=\"cold\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "cobrowse_browser_launches_total"), Some(1.0));
    let memory = sample(&text, &labelled("cobrowse_session_chromium_memory_bytes"))
        .expect("the session's Chromium memory");
    assert!(memory > 30e6, "a Chromium in {memory} bytes?");
    let processes = sample(&text, &labelled("cobrowse_session_chromium_processes"))
        .expect("the session's Chromium processes");
    assert!(processes >= 2.0, "{processes}");
    assert!(sample(
        &text,
        &labelled("cobrowse_session_chromium_cpu_seconds_total")
    )
    .is_some());
    for counter in [
        "cobrowse_frames_in_total",
        "cobrowse_frames_out_total",
        "cobrowse_bytes_out_total",
    ] {
        assert!(
            sample(&text, counter).is_some_and(|v| v > 0.0),
            "{counter}: {text}"
        );
    }

    // A click turns the page red: its answer lands in the input-to-frame histogram.
    owner.click(100.0, 100.0).await;
    owner
        .screen_where(|f| support::close_to(f.pixel(100, 100), [255, 0, 0], 12))
        .await;
    let text = metrics(&server).await;
    assert!(
        sample(&text, "cobrowse_input_to_frame_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "cobrowse_input_to_frame_seconds_bucket{le=\"+Inf\"}")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Each participant's lag is sampled at its link report (once a second).
    metric_until(&server, "cobrowse_viewer_lag_seconds_count", |n| n >= 1.0).await;

    // Full: not ready, and a new session is refused with the reason.
    let (status, ready) = server.http.request("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(
        ready["reasons"],
        json!(["session limit reached (1 sessions)"])
    );
    let (status, refused) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/click")})),
        )
        .await;
    assert_eq!(
        (status, refused),
        (503, json!({"error": "session limit reached (1 sessions)"}))
    );
    let text = metrics(&server).await;
    assert_eq!(
        sample(&text, "cobrowse_sessions_refused_total{reason=\"full\"}"),
        Some(1.0)
    );
    let frames_out = sample(&text, "cobrowse_frames_out_total").expect("frames out");

    // The session ends: its figures stay in the totals, its own series go, the node is ready.
    let (status, _) = server
        .http
        .request("DELETE", &format!("/api/sessions/{id}"), None)
        .await;
    assert_eq!(status, 204);
    metric_until(&server, "cobrowse_sessions", |n| n == 0.0).await;
    let text = metrics(&server).await;
    assert!(
        sample(&text, "cobrowse_frames_out_total").is_some_and(|v| v >= frames_out),
        "counters never go down: {text}"
    );
    assert!(!text.contains(&id), "{text}");
    readyz_until(&server.http, |status, body| {
        status == 200 && body["ready"] == true
    })
    .await;
    drop(owner);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_ask_for_the_api_key_and_the_probes_do_not() {
    let key = "an-api-key-of-24-chars!!";
    let mut config = support::test_config();
    config.api_keys = vec![key.to_string()];
    let server = TestServer::start_with(config).await;
    assert_eq!(server.http.request("GET", "/healthz", None).await.0, 200);
    assert_eq!(server.http.request("GET", "/readyz", None).await.0, 200);
    let (status, _) = server.http.raw("GET", "/metrics", &[], None).await;
    assert_eq!(status, 401);
    let (status, _) = server
        .http
        .raw(
            "GET",
            "/metrics",
            &[("Authorization", "Bearer not-the-key-at-all-no")],
            None,
        )
        .await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {key}");
    let (status, text) = server
        .http
        .raw("GET", "/metrics", &[("Authorization", &bearer)], None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "cobrowse_ready"), Some(1.0), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_memory_refuses_new_sessions_with_a_clear_error() {
    let mut config = support::test_config();
    // More than any machine has: every new session is refused for memory.
    config.min_free_memory = 1 << 60;
    let server = TestServer::start_with(config).await;
    let (status, ready) = server.http.request("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{ready}");
    let reason = ready["reasons"][0].as_str().expect("a reason").to_string();
    assert!(
        reason.starts_with("not enough memory for another session (")
            && reason.ends_with(" MiB required)"),
        "{reason}"
    );
    let (status, refused) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": "https://example.com/"})),
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (503, Some(reason.as_str()))
    );
    let text = metrics(&server).await;
    assert_eq!(
        sample(&text, "cobrowse_sessions_refused_total{reason=\"memory\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "cobrowse_browser_launches_total"),
        Some(0.0),
        "a refused session launches nothing"
    );
    server.stop().await;
}

/// The `--user-data-dir` a Chromium runs with.
fn profile_of(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    String::from_utf8_lossy(&cmdline)
        .split('\0')
        .find_map(|arg| arg.strip_prefix("--user-data-dir=").map(str::to_string))
        .expect("a profile directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_serves_new_sessions_and_never_reuses_a_browser() {
    let site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.warm_browsers = 2;
    let server = TestServer::start_with(config).await;
    // Not ready until the pool's first browser proves Chromium starts (a launch takes far longer
    // than this first request); then two wait.
    let (status, ready) = server.http.request("GET", "/readyz", None).await;
    assert_eq!(
        (status, &ready["reasons"]),
        (503, &json!(["checking that Chromium starts"])),
        "{ready}"
    );
    readyz_until(&server.http, |status, body| {
        status == 200 && body["warmBrowsers"] == 2
    })
    .await;

    let browser_of = |info: &Value| info["browserPid"].as_u64().expect("pid") as u32;
    let mut seen = HashSet::new();
    let mut profiles = HashSet::new();
    let mut first = None;
    for n in 0..3 {
        // The pool refills one launch at a time behind the sessions it served.
        readyz_until(&server.http, |_, body| {
            body["warmBrowsers"].as_u64() >= Some(1)
        })
        .await;
        let started = Instant::now();
        let (id, links) = server
            .create_session(&site.url("/color?c=rgb(200,30,160)"))
            .await;
        let mut viewer = server.join(&id, &links.viewer).await;
        viewer
            .screen_where(|f| support::close_to(f.pixel(50, 50), [200, 30, 160], 12))
            .await;
        eprintln!(
            "warm session {n}: page on screen {:?} after the request",
            started.elapsed()
        );
        let pid = browser_of(&server.session_json(&id).await.1);
        assert!(seen.insert(pid), "browser {pid} served two sessions");
        assert!(
            profiles.insert(profile_of(pid)),
            "a profile served two sessions"
        );
        if first.is_none() {
            first = Some((id.clone(), pid, profile_of(pid)));
        }
        drop(viewer);
    }
    let text = metrics(&server).await;
    assert_eq!(
        sample(&text, "cobrowse_sessions_started_total{browser=\"warm\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cobrowse_sessions_started_total{browser=\"cold\"}"),
        Some(0.0)
    );

    // An ended session's browser and profile are gone, not returned to the pool.
    let (id, pid, profile) = first.expect("a first session");
    server
        .http
        .request("DELETE", &format!("/api/sessions/{id}"), None)
        .await;
    assert!(
        wait_pid_exit(pid, WAIT).await,
        "the ended session's Chromium still runs"
    );
    assert!(
        !std::path::Path::new(&profile).exists(),
        "{profile} outlived its session"
    );

    // A session that needs another size is launched for it: the pool's browsers have the
    // default one.
    let (id, _) = server
        .create_session_with(json!({"url": site.url("/color"), "width": 800, "height": 600}))
        .await;
    let (_, info) = server.session_json(&id).await;
    assert_eq!(info["viewport"], json!({"width": 800, "height": 600}));
    assert!(!seen.contains(&browser_of(&info)));
    assert_eq!(
        sample(
            &metrics(&server).await,
            "cobrowse_sessions_started_total{browser=\"cold\"}"
        ),
        Some(1.0)
    );
    // The pool refills behind the sessions it served.
    readyz_until(&server.http, |_, body| body["warmBrowsers"] == 2).await;
    server.stop().await;
}

/// The real binary serving `site`, with its own data directory, its log collected until it
/// exits, and one session on `/color`.
struct Node {
    server: tokio::process::Child,
    addr: std::net::SocketAddr,
    logs: tokio::task::JoinHandle<Vec<Value>>,
    data: tempfile::TempDir,
    id: String,
    /// The session's join links, by role.
    links: Value,
    /// Its Chromium.
    pid: u32,
}

impl Node {
    async fn start(site: &TestSite, grace_secs: &str, more: &[&str]) -> Node {
        let data = tempfile::tempdir().expect("data dir");
        let data_arg = data.path().to_string_lossy().to_string();
        let mut args = vec!["--shutdown-grace", grace_secs, "--data-dir", &data_arg];
        args.extend_from_slice(more);
        let (server, addr, mut lines) = spawn_server_with(site, &args).await;
        let logs = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
            }
            all
        });
        let http = support::reqwest_lite::Client::new(addr);
        let (status, created) = http
            .request(
                "POST",
                "/api/sessions",
                Some(json!({"url": site.url("/color")})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().expect("id").to_string();
        let pid = http
            .request("GET", &format!("/api/sessions/{id}"), None)
            .await
            .1["browserPid"]
            .as_u64()
            .expect("pid") as u32;
        Node {
            server,
            addr,
            logs,
            data,
            id,
            links: created["links"].clone(),
            pid,
        }
    }

    fn http(&self) -> support::reqwest_lite::Client {
        support::reqwest_lite::Client::new(self.addr)
    }

    /// A participant with the viewer link, its first frame received.
    async fn participant(&self) -> support::Participant {
        let token = self.links["viewer"]
            .as_str()
            .and_then(|l| l.split_once("#token="))
            .expect("token")
            .1;
        let mut p = support::Participant::connect(self.addr, &self.id, token)
            .await
            .expect("join");
        p.next_frame().await;
        p
    }

    fn signal(&self, signal: Signal) {
        support::signal(&self.server, signal);
    }

    /// Waits for the exit (it must be 0); returns the log.
    async fn exits(mut self) -> (Vec<Value>, Value) {
        let status = tokio::time::timeout(WAIT, self.server.wait())
            .await
            .expect("the server exits in time")
            .expect("wait");
        assert_eq!(status.code(), Some(0));
        let logs = self.logs.await.expect("logs");
        let audit =
            std::fs::read_to_string(self.data.path().join("audit.jsonl")).expect("audit log");
        let stopped = audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["event"] == "server.stopped")
            .expect("server.stopped audited");
        (logs, stopped)
    }
}

fn logged<'a>(logs: &'a [Value], message: &str) -> Option<&'a Value> {
    logs.iter().find(|l| l["fields"]["message"] == message)
}

/// Resolves once the viewer shows a notice containing `text`.
async fn notice_shows(page: &chromiumoxide::Page, text: &str) {
    let js = format!(
        "new Promise(resolve => {{
           const box = document.getElementById('notice');
           const shows = () => !box.hidden && document.getElementById('notice-text').textContent.includes({text:?});
           if (shows()) return resolve(true);
           new MutationObserver(() => {{ if (shows()) resolve(true); }})
             .observe(box, {{ subtree: true, childList: true, characterData: true, attributes: true }});
         }})"
    );
    let shown = tokio::time::timeout(WAIT, page.evaluate(js)).await;
    assert!(
        matches!(shown, Ok(Ok(_))),
        "the viewer never showed {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_tells_everyone_and_exits_when_they_have_left() {
    let site = TestSite::start().await;
    let node = Node::start(&site, "120", &[]).await;
    let http = node.http();
    let viewer = ViewerBrowser::launch(1000, 800).await;
    let page = viewer
        .open(node.links["controller"].as_str().expect("link"))
        .await;

    node.signal(Signal::TERM);
    // Everyone connected is told, and it stays on screen.
    notice_shows(&page, "This server is shutting down").await;
    // Meanwhile the node takes no new session and says why; it is still alive.
    let (status, refused) = http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/color")})),
        )
        .await;
    assert_eq!(
        (status, refused),
        (503, json!({"error": "the server is shutting down"}))
    );
    let (status, ready) = http.request("GET", "/readyz", None).await;
    assert_eq!((status, &ready["draining"]), (503, &json!(true)), "{ready}");
    assert_eq!(http.request("GET", "/healthz", None).await.0, 200);
    // The session still works for the person in it.
    assert_eq!(eval(&page, "window.cobrowse.state").await, json!("live"));
    let pid = node.pid;
    assert!(pid_alive(pid));

    // They leave: the session ends, and with it the server, long before its grace period.
    let left = Instant::now();
    page.close().await.expect("close the viewer tab");
    let (logs, stopped) = node.exits().await;
    eprintln!(
        "exited {:?} after the last participant left",
        left.elapsed()
    );
    assert!(!pid_alive(pid), "Chromium still running after the shutdown");
    assert!(
        logged(&logs, "every session ended before the grace period ran out").is_some(),
        "{logs:?}"
    );
    assert_eq!(stopped["cutOff"], json!([]));
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outliving_the_grace_period_are_cut_off_and_logged() {
    let site = TestSite::start().await;
    let node = Node::start(&site, "2", &[]).await;
    let (id, pid) = (node.id.clone(), node.pid);
    let mut stays = node.participant().await;

    let signalled = Instant::now();
    node.signal(Signal::TERM);
    let notice = stays
        .json_where("notice", |m| m["code"] == "server-shutdown")
        .await;
    assert!(
        notice["message"]
            .as_str()
            .is_some_and(|m| m.contains("in 2 s at the latest")),
        "{notice}"
    );
    // Nobody leaves: after the grace period the session is ended for them.
    let ended = stays.next_json("ended").await;
    assert_eq!(ended["reason"], "the server is shutting down");
    let (logs, stopped) = node.exits().await;
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "the grace period was not given"
    );
    assert!(
        wait_pid_exit(pid, Duration::from_secs(5)).await,
        "Chromium outlived the server"
    );
    let cut = logged(&logs, "ending the sessions still running")
        .unwrap_or_else(|| panic!("no cut-off logged: {logs:?}"));
    assert!(
        cut["fields"]["cut_off"]
            .as_str()
            .is_some_and(|s| s.contains(&id)),
        "{cut}"
    );
    assert_eq!(cut["fields"]["participants"], 1);
    assert_eq!(stopped["cutOff"][0]["session"], json!(id));
    assert_eq!(stopped["cutOff"][0]["participants"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_drain_short_and_leaves_no_browser() {
    let site = TestSite::start().await;
    let node = Node::start(&site, "300", &["--warm-browsers", "1"]).await;
    let mut stays = node.participant().await;
    // Every Chromium of the node: the session's and the warm pool's (refilled after the session
    // took the first).
    readyz_until(&node.http(), |_, body| body["warmBrowsers"] == 1).await;
    let browsers = support::descendants(node.server.id().expect("running"));
    assert!(browsers.len() >= 2, "{browsers:?}");
    node.signal(Signal::TERM);
    stays
        .json_where("notice", |m| m["code"] == "server-shutdown")
        .await;
    node.signal(Signal::INT);
    let (logs, stopped) = node.exits().await;
    assert!(logged(&logs, "shutting down at once").is_some(), "{logs:?}");
    assert_eq!(stopped["cutOff"][0]["participants"], 1);
    for pid in browsers {
        assert!(
            wait_pid_exit(pid, Duration::from_secs(5)).await,
            "process {pid} of the node outlived it"
        );
    }
}
