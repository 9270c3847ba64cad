//! The egress policy: what the session browser can reach. Real server, real Chromium, its
//! requests going through the session's egress proxy. "Another local service" is a listener
//! the test starts and watches: it must receive nothing when blocked.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cobrowse::egress::{EgressPolicy, EgressProxy, Entry, RequestKind};
use serde_json::{json, Value};
use support::{allowing, site_config, Participant, TestServer, TestSite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A local service the page must (or may) not reach: counts connections, answers each with a
/// small HTTP 200 (with CORS open, so that a fetch that gets through reports `ok`).
struct Witness {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Witness {
    async fn start() -> Witness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret")
                        .await;
                });
            }
        });
        Witness { addr, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn probe_url(site: &TestSite, targets: &[String], ws: Option<&str>) -> String {
    let mut url = url::Url::parse(&site.url("/probe")).expect("url");
    url.query_pairs_mut()
        .append_pair("t", &serde_json::to_string(targets).expect("json"));
    if let Some(ws) = ws {
        url.query_pairs_mut().append_pair("ws", ws);
    }
    url.to_string()
}

/// Reports of a probe page until `done`, by (kind, url) → ok.
/// Opens a session on a page that fetches `[allowed, blocked]` and checks the page saw exactly
/// the first one answer.
async fn fetches_only_the_first(server: &TestServer, site: &mut TestSite, targets: [String; 2]) {
    let (_id, _) = server
        .create_session(&probe_url(site, &targets, None))
        .await;
    let results = probe_results(site).await;
    assert!(outcome(&results, "fetch", &targets[0]), "{results:?}");
    assert!(!outcome(&results, "fetch", &targets[1]), "{results:?}");
}

async fn probe_results(site: &mut TestSite) -> Vec<Value> {
    let mut results = Vec::new();
    loop {
        let r = site.next_report().await;
        match r["type"].as_str() {
            Some("done") => return results,
            Some("fetch" | "img" | "ws") => results.push(r),
            _ => {}
        }
    }
}

fn outcome(results: &[Value], kind: &str, url: &str) -> bool {
    results
        .iter()
        .find(|r| r["type"] == kind && r["url"] == url)
        .unwrap_or_else(|| panic!("no {kind} report for {url}: {results:?}"))["ok"]
        .as_bool()
        .expect("ok flag")
}

async fn blocked_requests(server: &TestServer, id: &str) -> u64 {
    let (status, info) = server.session_json(id).await;
    assert_eq!(status, 200, "{info}");
    info["blockedRequests"].as_u64().expect("blockedRequests")
}

/// Waits for a `page` message showing `url` whose title satisfies `pred`. (Not `loading:
/// false`: after a renderer swap the driver can miss the main frame's load-stop, an issue of
/// its own, seen under load.)
async fn page_at(p: &mut Participant, url: &str, pred: impl Fn(&str) -> bool) -> Value {
    let wait = p.json_where("page", |v| {
        v["url"] == url && v["title"].as_str().is_some_and(&pred)
    });
    // Shorter than the harness's own limit, to say which page never showed.
    tokio::time::timeout(support::WAIT / 2, wait)
        .await
        .unwrap_or_else(|_| panic!("no page message for {url} in time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_cannot_reach_local_services_metadata_or_private_names() {
    let mut site = TestSite::start().await;
    let other = Witness::start().await;
    let server = TestServer::for_site(&site).await;
    let targets = vec![
        other.url("/internal"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://localhost:{}/by-name", other.port()),
    ];
    let ws = format!("ws://127.0.0.1:{}/socket", other.port());
    let probe = probe_url(&site, &targets, Some(&ws)) + "&rtc=1";
    let (id, _links) = server.create_session(&probe).await;
    let mut rtc = None;
    let mut results = Vec::new();
    loop {
        let r = site.next_report().await;
        match r["type"].as_str() {
            Some("done") => break,
            Some("rtc") => rtc = Some(r),
            Some("fetch" | "img" | "ws") => results.push(r),
            _ => {}
        }
    }
    // WebRTC may use only proxied transports: no UDP candidate (host, mDNS or reflexive).
    let rtc = rtc.expect("rtc report");
    let candidates = rtc["candidates"].as_array().expect("candidates");
    assert!(
        candidates.iter().all(|c| !c
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains(" udp ")),
        "{rtc}"
    );
    for t in &targets {
        assert!(!outcome(&results, "fetch", t), "fetch {t} got through");
        assert!(!outcome(&results, "img", t), "img {t} got through");
    }
    assert!(!outcome(&results, "ws", &ws), "WebSocket got through");
    assert_eq!(other.connections(), 0, "the local service was reached");
    // Each destination was refused by the policy (not a failed connection): one fetch and one
    // image for each of 3 targets, and the WebSocket.
    let blocked = blocked_requests(&server, &id).await;
    assert!(blocked >= 7, "blockedRequests {blocked}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_navigations_show_why_with_the_address_in_the_url_bar() {
    let mut site = TestSite::start().await;
    let other = Witness::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/nav/1")).await;
    site.report_of("ready").await;
    let mut p = server.join(&id, &links.controller).await;

    // Typed into the URL bar: cloud metadata, a private address; refused before any connect.
    for (url, why) in [
        (
            "http://169.254.169.254/latest/meta-data/",
            "link-local address (cloud metadata) (169.254.0.0/16)",
        ),
        ("http://10.0.0.5/", "private network address (10.0.0.0/8)"),
    ] {
        p.send(json!({"t": "navigate", "url": url})).await;
        let title = format!("Blocked: {why}");
        page_at(&mut p, url, |t| t == title).await;
    }

    // A redirect from an allowed page to a local service: the URL bar shows where it led.
    let target = other.url("/secret");
    let mut redirect = url::Url::parse(&site.url("/redirect")).expect("url");
    redirect.query_pairs_mut().append_pair("to", &target);
    p.send(json!({"t": "navigate", "url": redirect.as_str()}))
        .await;
    let loopback = "Blocked: loopback address (this server) (127.0.0.0/8)";
    page_at(&mut p, &target, |t| t == loopback).await;

    // HTTPS goes through a tunnel: Chromium shows its own error, cobrowse puts up the reason.
    let https = format!("https://127.0.0.1:{}/", other.port());
    p.send(json!({"t": "navigate", "url": https})).await;
    page_at(&mut p, &https, |t| t == loopback).await;
    assert_eq!(other.connections(), 0, "the local service was reached");
    assert!(blocked_requests(&server, &id).await >= 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files_and_data_urls_cannot_be_opened_from_the_page() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    // Through the API.
    let (status, reply) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": "file:///etc/passwd"})),
        )
        .await;
    assert_eq!(status, 400, "{reply}");

    let (id, links) = server.create_session(&site.url("/nav/1")).await;
    site.report_of("ready").await;
    let mut p = server.join(&id, &links.controller).await;
    // Through the URL bar.
    p.send(json!({"t": "navigate", "url": "file:///etc/passwd"}))
        .await;
    p.json_where("notice", |v| v["code"] == "navigate-refused")
        .await;

    // By the page itself: a link, window.open, then location.
    for bad in ["file:///etc/passwd", "data:text/html,<title>pwned</title>"] {
        let mut escape = url::Url::parse(&site.url("/escape")).expect("url");
        escape.query_pairs_mut().append_pair("u", bad);
        site.drain();
        p.send(json!({"t": "navigate", "url": escape.as_str()}))
            .await;
        let after_link = site.report_of("after-link").await;
        assert_eq!(after_link["href"], escape.as_str(), "{bad}: {after_link}");
        let done = site.report_of("done").await;
        assert_eq!(done["href"], escape.as_str(), "{bad}: {done}");
        // `window.open` may leave an empty tab (Chromium opens the window, then refuses the
        // address): no tab shows the file or the data page.
        let (_, info) = server.session_json(&id).await;
        let tabs = info["tabs"].as_array().expect("tabs");
        assert_eq!(tabs[0]["url"], escape.as_str(), "{bad}: {info}");
        for tab in tabs {
            let url = tab["url"].as_str().unwrap_or("");
            assert!(
                url == escape.as_str() || url.is_empty() || url == "about:blank",
                "{bad}: a tab shows {url}"
            );
            assert_ne!(tab["title"], "pwned", "{bad}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_opens_exactly_what_it_names_and_deny_wins() {
    let mut site = TestSite::start().await;
    let opened = Witness::start().await;
    let closed = Witness::start().await;
    // Exactly one other port opened.
    let config = allowing(site_config(&site), &opened.addr.to_string());
    let server = TestServer::start_with(config).await;
    fetches_only_the_first(&server, &mut site, [opened.url("/a"), closed.url("/b")]).await;
    assert!(opened.connections() > 0);
    assert_eq!(
        closed.connections(),
        0,
        "the port next to the allowed one was reached"
    );
    server.stop().await;

    // All of loopback allowed, one port denied: deny wins.
    let opened = Witness::start().await;
    let denied = Witness::start().await;
    let mut config = allowing(site_config(&site), "127.0.0.0/8");
    let policy = EgressPolicy::new(
        config.egress.allow().to_vec(),
        vec![Entry::parse(&format!("127.0.0.1:{}", denied.port())).expect("entry")],
        false,
    );
    config.egress = Arc::new(policy);
    let server = TestServer::start_with(config).await;
    fetches_only_the_first(&server, &mut site, [opened.url("/a"), denied.url("/b")]).await;
    assert_eq!(denied.connections(), 0, "the denied port was reached");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_only_closes_everything_not_listed() {
    let mut site = TestSite::start().await;
    let mut config = site_config(&site);
    config.egress = Arc::new(EgressPolicy::new(
        config.egress.allow().to_vec(),
        vec![],
        true,
    ));
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/nav/1")).await;
    site.report_of("ready").await;
    let mut p = server.join(&id, &links.controller).await;
    // A destination the default policy would allow (a public address) is closed too; with no
    // internet here, the page must show cobrowse's refusal, not a connection error.
    let public = "http://93.184.216.34/";
    p.send(json!({"t": "navigate", "url": public})).await;
    let page = page_at(&mut p, public, |t| t.starts_with("Blocked")).await;
    assert_eq!(
        page["title"],
        "Blocked: not on this deployment's list of allowed destinations"
    );
    server.stop().await;
}

/// The proxy on its own: bad requests get a 400 and the proxy keeps serving; a refused tunnel
/// is a 403 and a report naming host, port and address, never the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_bad_requests_and_reports_blocks_without_paths() {
    let allowed = Witness::start().await;
    let policy = EgressPolicy::default()
        .allowing(&allowed.addr.to_string())
        .expect("entry");
    let (tx, mut reports) = mpsc::channel(8);
    let proxy = EgressProxy::start(Arc::new(policy), "test", tx)
        .await
        .expect("proxy");

    async fn exchange(proxy: SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(support::WAIT, s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    for bad in [
        &b"\x00\x01garbage\r\n\r\n"[..],
        b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT nohostport HTTP/1.1\r\n\r\n",
        b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
    ] {
        let reply = exchange(proxy.addr(), bad).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }
    let huge = format!(
        "GET http://x/ HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let reply = exchange(proxy.addr(), huge.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let reply = exchange(proxy.addr(), b"CONNECT 127.0.0.1:9:1 HTTP/1.1\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");

    // A refused tunnel: 403, and a report without the URL's path or query.
    let reply = exchange(
        proxy.addr(),
        b"CONNECT [::ffff:169.254.169.254]:443 HTTP/1.1\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let report = reports.recv().await.expect("report");
    assert_eq!(report.host, "::ffff:169.254.169.254");
    assert_eq!(report.port, 443);
    assert_eq!(report.kind, RequestKind::Tunnel);
    assert!(report.reason.contains("169.254.0.0/16"), "{report:?}");

    let reply = exchange(
        proxy.addr(),
        b"GET http://10.1.2.3/path?token=abc HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("http://10.1.2.3/path"), "{reply}");
    assert!(!reply.contains("token=abc"), "{reply}");
    let report = reports.recv().await.expect("report");
    assert_eq!((report.host.as_str(), report.port), ("10.1.2.3", 80));
    assert!(!format!("{report:?}").contains("token"));

    // Still serving, and the allowed service is reached through it.
    let reply = exchange(
        proxy.addr(),
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nProxy-Connection: keep-alive\r\n\r\n",
            allowed.url("/ok"),
            allowed.addr
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(reply.ends_with("secret"), "{reply}");
    assert_eq!(proxy.blocked(), 2);
}
