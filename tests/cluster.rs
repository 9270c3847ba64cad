//! Scale-out on loopback: two `cobrowse serve` processes behind Debian's nginx running
//! `docker/nginx.conf` as shipped (only its upstream addresses, `listen` port and temporary-file
//! paths replaced).
//! Sessions created through nginx land on both nodes; each session's viewer works through nginx
//! in a real browser; a node answers 421 for the other's sessions; a full node's 503 makes nginx
//! create the session on the other; and when a node dies, its viewer says which node held it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::input::MouseButton;
use serde_json::{json, Value};
use support::reqwest_lite::Client;
use support::viewer::{aim, click, eval, type_text, ViewerBrowser};
use support::TestSite;

/// Debian's nginx (`scripts/install-deps.sh` installs it).
const NGINX: &str = "/usr/sbin/nginx";

/// A child process stopped on drop: SIGTERM, which cobrowse answers by closing its browsers
/// and nginx's master by stopping its workers (a SIGKILL would leave nginx's workers running),
/// then SIGKILL if it is still there after a while.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            // Drop cannot await: poll the exit (at most 10 s: cobrowse's --shutdown-grace is 5).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One cobrowse node: the real binary, in a cluster of `nodes`.
struct Node {
    process: Process,
    addr: SocketAddr,
    name: String,
    http: Client,
    _data: tempfile::TempDir,
}

impl Node {
    async fn start(
        addr: SocketAddr,
        nodes: &[String],
        max_sessions: usize,
        site: &TestSite,
    ) -> Self {
        let data = tempfile::tempdir().expect("data dir");
        // Its browsers' profiles go here too (TMPDIR), so that a node killed below leaves
        // nothing behind once the test ends.
        let tmp = data.path().join("tmp");
        std::fs::create_dir(&tmp).expect("tmp dir");
        let name = addr.to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cobrowse"));
        // Only what this test sets: no COBROWSE_* from the environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("COBROWSE_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["serve", "--listen", &name, "--node-name", &name])
            .arg("--cluster-nodes")
            .arg(nodes.join(","))
            .arg("--max-sessions")
            .arg(max_sessions.to_string())
            .arg("--allow")
            .arg(site.addr.to_string())
            .arg("--chromium")
            .arg(support::chromium())
            .arg("--data-dir")
            .arg(data.path())
            .args(["--shutdown-grace", "5"])
            .env("TMPDIR", &tmp)
            .stdout(Stdio::null());
        match std::env::var("COBROWSE_TEST_LOG") {
            Ok(filter) => cmd.env("COBROWSE_LOG", filter).stderr(Stdio::inherit()),
            Err(_) => cmd.stderr(Stdio::null()),
        };
        let process = Process(cmd.spawn().expect("cobrowse serve starts"));
        support::listening(addr, "cobrowse").await;
        Node {
            process,
            addr,
            name,
            http: Client::new(addr),
            _data: data,
        }
    }

    /// The ids of the sessions this node holds, from its own API.
    async fn session_ids(&self) -> Vec<String> {
        let (status, list) = self.http.request("GET", "/api/sessions", None).await;
        assert_eq!(status, 200, "{list}");
        list["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_string())
            .collect()
    }
}

/// Whether `line` is a `server` entry of an upstream block (not a `server {` block).
fn is_upstream_server(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("server ") && !t.ends_with('{')
}

/// `docker/nginx.conf` with `nodes` as its upstream servers (each with the parameters of the
/// shipped example entries), listening on `port`, and its temporary files under `dir` (so that it
/// runs without root). Nothing else changes.
fn nginx_config(port: u16, nodes: &[String], dir: &Path) -> String {
    let shipped = include_str!("../docker/nginx.conf");
    let mut out = String::new();
    let (mut servers, mut listens) = (0, 0);
    for line in shipped.lines() {
        let t = line.trim();
        if is_upstream_server(line) {
            servers += 1;
            if servers == 1 {
                // "server ADDRESS PARAMETERS;": keep the parameters (max_fails=0 …).
                let params = t["server ".len()..]
                    .split_once([' ', ';'])
                    .map(|(_, rest)| rest.trim_end_matches(';'))
                    .unwrap_or("");
                for node in nodes {
                    let line = format!("server {node} {params}");
                    out.push_str(&format!("        {};\n", line.trim_end()));
                }
            }
            continue;
        }
        if t == "listen 8080;" {
            listens += 1;
            out.push_str(&format!("        listen 127.0.0.1:{port};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if t == "http {" {
            for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                out.push_str(&format!(
                    "    {kind}_temp_path {};\n",
                    dir.join(kind).display()
                ));
            }
        }
    }
    assert_eq!(
        servers, 2,
        "docker/nginx.conf's upstream has two example servers"
    );
    assert_eq!(listens, 1, "docker/nginx.conf listens once, on 8080");
    out
}

/// nginx with the shipped configuration, in the foreground, as a child of the test.
struct Nginx {
    _process: Process,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(nodes: &[String]) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install Debian's nginx (scripts/install-deps.sh)"
        );
        let dir = tempfile::tempdir().expect("nginx dir");
        let port = support::free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_config(port, nodes, dir.path())).expect("write config");
        let prefix = format!("{}/", dir.path().display());
        let pid = dir.path().join("nginx.pid");
        let check = Command::new(NGINX)
            .args(["-t", "-q", "-e", "stderr", "-p", &prefix, "-c"])
            .arg(&conf)
            .args(["-g", &format!("pid {};", pid.display())])
            .output()
            .expect("nginx -t runs");
        assert!(
            check.status.success(),
            "nginx -t refused the config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        // The access log goes to stdout, warnings and errors to stderr: shown with
        // COBROWSE_TEST_LOG, like the nodes' logs (a dead node's refused connections are
        // expected below).
        let shown = || match std::env::var_os("COBROWSE_TEST_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        };
        let process = Process(
            Command::new(NGINX)
                .args(["-e", "stderr", "-p", &prefix, "-c"])
                .arg(&conf)
                .args(["-g", &format!("daemon off; pid {};", pid.display())])
                .stdout(shown())
                .stderr(shown())
                .spawn()
                .expect("nginx starts"),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        support::listening(addr, "nginx").await;
        Nginx {
            _process: process,
            addr,
            _dir: dir,
        }
    }
}

/// Resolves to the viewer's connection-state text once its state is `error`.
const UNTIL_ERROR: &str = "new Promise(r => {
  const done = () => document.body.dataset.state === 'error';
  const text = () => document.getElementById('conn-state').textContent;
  if (done()) return r(text());
  new MutationObserver(() => { if (done()) r(text()); })
    .observe(document.body, {attributes: true, attributeFilter: ['data-state']});
})";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_nodes_behind_nginx() {
    let mut site = TestSite::start().await;
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let addr_a: SocketAddr = format!("127.0.0.1:{port_a}").parse().expect("addr");
    let addr_b: SocketAddr = format!("127.0.0.1:{port_b}").parse().expect("addr");
    let names = vec![addr_a.to_string(), addr_b.to_string()];
    // A holds up to 2 sessions, B only 1: B is full as soon as it has one.
    let (a, mut b) = tokio::join!(
        Node::start(addr_a, &names, 2, &site),
        Node::start(addr_b, &names, 1, &site)
    );
    let nginx = Nginx::start(&names).await;
    let router = Client::new(nginx.addr);
    let start = json!({"url": site.url("/e2e")});
    let create = || router.request("POST", "/api/sessions", Some(start.clone()));

    // Two creations through nginx: round robin sends one to each node.
    let mut created: Vec<Value> = Vec::new();
    for _ in 0..2 {
        let (status, reply) = create().await;
        assert_eq!(status, 201, "{reply}");
        created.push(reply);
    }
    let (on_a, on_b) = (a.session_ids().await, b.session_ids().await);
    assert_eq!((on_a.len(), on_b.len()), (1, 1), "A: {on_a:?}, B: {on_b:?}");
    let id_a = on_a[0].clone();
    let id_b = on_b[0].clone();

    // Each session's viewer, through nginx, in a real browser: the screen arrives, and a click
    // and typing reach the page on the node that holds the session.
    let viewer = ViewerBrowser::launch(1000, 700).await;
    for (n, reply) in created.iter().enumerate() {
        let link = reply["links"]["controller"].as_str().expect("link");
        assert!(
            link.starts_with(&format!("http://{}/s/", nginx.addr)),
            "join links go through the router: {link}"
        );
        let page = viewer.open(link).await;
        assert_eq!(eval(&page, "document.body.dataset.state").await, "live");
        site.drain();
        let target = aim(&page, 300.0, 120.0).await;
        click(&page, target.client, MouseButton::Left, 1).await;
        site.report_of("mousedown").await;
        let text = format!("node{n}");
        type_text(&page, &text).await;
        site.report_where(|r| r["type"] == "input" && r["value"] == text.as_str())
            .await;
        page.close().await.expect("close the tab");
    }

    // A node asked directly for the other node's session says who holds it: the API, the
    // viewer's check and the WebSocket upgrade alike.
    for (wrong, id, owner) in [(&b, &id_a, &a), (&a, &id_b, &b)] {
        let (status, reply) = wrong
            .http
            .request("GET", &format!("/api/sessions/{id}"), None)
            .await;
        assert_eq!(status, 421, "{reply}");
        assert_eq!(reply["node"], owner.name.as_str());
        let error = reply["error"].as_str().expect("error");
        assert!(
            error.contains(&owner.name) && error.contains(id.as_str()),
            "{error}"
        );
        let (status, _) = wrong
            .http
            .request("GET", &format!("/s/{id}/check"), None)
            .await;
        assert_eq!(status, 421);
        let ws = support::ws_request(wrong.addr, id, "cobrowse.v2").await;
        match tokio_tungstenite::connect_async(ws).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 421)
            }
            other => panic!("WebSocket to the wrong node: {:?}", other.map(|_| ())),
        }
        // The right node answers (through nginx too).
        let (status, _) = router
            .request("GET", &format!("/api/sessions/{id}"), None)
            .await;
        assert_eq!(status, 200);
    }

    // Ending A's session through nginx reaches A (the DELETE hashes on the id) and frees it.
    let (status, reply) = router
        .request("DELETE", &format!("/api/sessions/{id_a}"), None)
        .await;
    assert_eq!(status, 204, "{reply}");
    assert!(a.session_ids().await.is_empty());

    // B is full. Of two creations in a row, round robin offers one to B first: B answers 503,
    // nginx retries on A, and both sessions start on A.
    for _ in 0..2 {
        let (status, reply) = create().await;
        assert_eq!(status, 201, "{reply}");
    }
    assert_eq!(a.session_ids().await.len(), 2);
    assert_eq!(b.session_ids().await, std::slice::from_ref(&id_b));
    // Every node full: nginx passes on the last 503 and its JSON error.
    let (status, reply) = create().await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("session limit reached")),
        "{reply}"
    );
    // B's 503s did not take it off the ring (max_fails=0): its session still reaches it.
    let (status, _) = router
        .request("GET", &format!("/api/sessions/{id_b}"), None)
        .await;
    assert_eq!(status, 200);

    // B dies with a viewer connected. The viewer's reconnection goes to the next node on the
    // ring, A, whose 421 the viewer shows; the API through nginx says the same.
    let link = created
        .iter()
        .find(|r| r["id"] == id_b.as_str())
        .and_then(|r| r["links"]["viewer"].as_str())
        .expect("B's viewer link")
        .to_string();
    let page = viewer.open(&link).await;
    // SIGKILL: the process dies at once, as in a crash or an OOM kill (its Chromium with it).
    b.process.0.kill().expect("kill node B");
    let _ = b.process.0.wait();
    let shown = eval(&page, UNTIL_ERROR).await;
    let shown = shown.as_str().expect("state text");
    assert!(
        shown.contains(&format!("held by node {}", b.name)),
        "the viewer says where the session was: {shown}"
    );
    let (status, reply) = router
        .request("GET", &format!("/api/sessions/{id_b}"), None)
        .await;
    assert_eq!((status, &reply["node"]), (421, &json!(b.name)), "{reply}");

    viewer.close().await;
    drop(nginx);
    drop(a);
}

#[test]
fn the_test_config_is_the_shipped_one() {
    let dir = PathBuf::from("/tmp/x");
    let nodes = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
    let conf = nginx_config(9, &nodes, &dir);
    let shipped = include_str!("../docker/nginx.conf");
    // Same lines, except the servers, the listen port and the temporary paths.
    let changed = |s: &str| {
        s.lines()
            .filter(|l| {
                let t = l.trim();
                let replaced =
                    is_upstream_server(l) || t.starts_with("listen ") || t.contains("_temp_path ");
                !replaced
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(changed(&conf), changed(shipped));
    assert!(conf.contains("        server 127.0.0.1:2 max_fails=0;\n"));
    assert!(conf.contains("hash $cobrowse_session consistent;"));
}

/// Lines that make the routing: everything but comments, the upstream's `server` entries and
/// their `resolver` (the servers' parameters are compared separately).
fn routing_lines(conf: &str) -> Vec<&str> {
    conf.lines()
        .map(str::trim_end)
        .filter(|l| {
            let t = l.trim_start();
            let other = t.is_empty()
                || t.starts_with('#')
                || t.starts_with("resolver ")
                || is_upstream_server(t);
            !other
        })
        .collect()
}

/// Kubernetes runs the same nginx.conf (docker/k8s/router.yaml's ConfigMap), and its upstream
/// names exactly the nodes that docker/k8s/nodes.yaml gives every node as its cluster.
#[test]
fn the_kubernetes_router_runs_the_shipped_config() {
    let router = include_str!("../docker/k8s/router.yaml");
    let start = router.find("  nginx.conf: |\n").expect("the ConfigMap") + 16;
    let conf: String = router[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert_eq!(
        routing_lines(&conf),
        routing_lines(include_str!("../docker/nginx.conf"))
    );
    // Each server has the shipped entries' parameters, plus `resolve`.
    let shipped_params = include_str!("../docker/nginx.conf")
        .lines()
        .find(|l| is_upstream_server(l))
        .and_then(|l| l.trim().split_once(' '))
        .and_then(|(_, rest)| rest.split_once(' '))
        .map(|(_, params)| params.trim_end_matches(';').to_string())
        .expect("a server entry with parameters");
    let suffix = format!(" {shipped_params} resolve;");
    let entries: Vec<&str> = conf.lines().filter(|l| is_upstream_server(l)).collect();
    let servers: Vec<&str> = entries
        .iter()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.strip_suffix(suffix.as_str()))
        .collect();
    assert_eq!(
        servers.len(),
        entries.len(),
        "{entries:?} end with {suffix}"
    );
    let nodes = include_str!("../docker/k8s/nodes.yaml");
    let listed = nodes
        .split("name: COBROWSE_CLUSTER_NODES")
        .nth(1)
        .and_then(|rest| rest.split("value: >-").nth(1))
        .and_then(|rest| rest.lines().map(str::trim).find(|l| !l.is_empty()))
        .expect("COBROWSE_CLUSTER_NODES in nodes.yaml");
    assert_eq!(servers, listed.split(',').collect::<Vec<_>>());
    let replicas = nodes
        .lines()
        .find_map(|l| l.trim().strip_prefix("replicas: "))
        .expect("replicas");
    assert_eq!(replicas, servers.len().to_string());
    for (n, server) in servers.iter().enumerate() {
        assert_eq!(
            *server,
            format!("cobrowse-{n}.cobrowse-nodes.cobrowse.svc.cluster.local:8080")
        );
    }
}
