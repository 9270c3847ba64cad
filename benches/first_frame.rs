//! A new session's time to first frame (issue 8: ≤ 1 s cold, ≤ 300 ms from the warm pool), from
//! the `POST /api/sessions` request to the page's own colour on screen, two ways:
//! - at a participant (a WebSocket client) that connects as soon as the request is answered:
//!   the server's and Chromium's share, the figure the target is about;
//! - in a real browser that opens the join link in a new tab: what a person sees, the viewer's
//!   own page load included.
//!
//! Warm (a browser from `--warm-browsers`) and cold (launched for the session) rounds alternate in
//! the same run, on the same page, with the pool refilled before each warm round.
//!
//! Run: `cargo bench --bench first_frame` (prints a Markdown table for docs/benchmarks.md).
//! Environment: `BENCH_ROUNDS` (per mode, default 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::viewer::{eval, ViewerBrowser};
use support::{TestServer, TestSite};

/// Resolves once the viewer's canvas shows the test page's colour at (50, 50).
const SHOWS_PAGE: &str = "new Promise(resolve => {
  const shows = () => {
    const c = document.getElementById('screen');
    if (!c || !window.cobrowse || window.cobrowse.paints === 0) return false;
    const probe = document.createElement('canvas');
    probe.width = 1; probe.height = 1;
    const g = probe.getContext('2d');
    g.drawImage(c, 50, 50, 1, 1, 0, 0, 1, 1);
    const [r, gr, b] = g.getImageData(0, 0, 1, 1).data;
    return Math.abs(r - 200) < 16 && Math.abs(gr - 30) < 16 && Math.abs(b - 160) < 16;
  };
  if (shows()) return resolve(true);
  addEventListener('cobrowse:paint', function on() {
    if (shows()) { removeEventListener('cobrowse:paint', on); resolve(true); }
  });
})";

/// One session: request → the join link opened in a new tab (`viewer`), or a participant
/// connected (`None`) → the page's colour on screen. Returns the time taken, ms, and whether the
/// session's browser came from the pool.
async fn one(server: &TestServer, site: &TestSite, viewer: Option<&ViewerBrowser>) -> (f64, bool) {
    let warm_before = warm_started(server).await;
    let started = Instant::now();
    let (status, created) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/color?c=rgb(200,30,160)")})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let posted = started.elapsed();
    let link = created["links"]["viewer"].as_str().expect("link");
    let id = created["id"].as_str().expect("id");
    let Some(viewer) = viewer else {
        let token = link.split_once("#token=").expect("token").1;
        let mut participant = server.join(id, token).await;
        participant
            .screen_where(|f| support::close_to(f.pixel(50, 50), [200, 30, 160], 16))
            .await;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let warm = warm_started(server).await > warm_before;
        drop(participant);
        end(server, id).await;
        return (took, warm);
    };
    let page = viewer.browser.new_page(link).await.expect("open the link");
    let opened = started.elapsed();
    eval(&page, SHOWS_PAGE).await;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    if std::env::var_os("BENCH_DETAIL").is_some() {
        let first_paint = eval(
            &page,
            "(() => { const n = performance.getEntriesByType('navigation')[0]; return {sinceNavigation: Math.round(performance.now()), domReady: Math.round(n.domContentLoadedEventEnd), firstPaint: Math.round(window.cobrowse.lastPaintAt ?? -1)}; })()",
        )
        .await;
        eprintln!(
            "request answered {posted:?}, viewer tab loaded {opened:?}, page colour painted {took:.0} ms; viewer: {first_paint}"
        );
    }
    let warm = warm_started(server).await > warm_before;
    let _ = page.close().await;
    end(server, id).await;
    (took, warm)
}

async fn end(server: &TestServer, id: &str) {
    server
        .http
        .request("DELETE", &format!("/api/sessions/{id}"), None)
        .await;
    wait_for(server, |ready| ready["sessions"] == 0).await;
}

async fn warm_started(server: &TestServer) -> u64 {
    let (_, text) = server.http.raw("GET", "/metrics", &[], None).await;
    text.lines()
        .find_map(|l| l.strip_prefix("cobrowse_sessions_started_total{browser=\"warm\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_for(server: &TestServer, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, ready) = server.http.request("GET", "/readyz", None).await;
        if pred(&ready) {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() {
    let rounds = support::env_or("BENCH_ROUNDS", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let site = TestSite::start().await;
        let mut warm_config = support::site_config(&site);
        warm_config.warm_browsers = 1;
        let warm_server = TestServer::start_with(warm_config).await;
        let cold_server = TestServer::for_site(&site).await;
        let viewer = ViewerBrowser::launch(1400, 900).await;
        // One of each first, not counted: the viewer's own page and caches warm up.
        wait_for(&warm_server, |r| r["warmBrowsers"] == 1).await;
        one(&warm_server, &site, Some(&viewer)).await;
        one(&cold_server, &site, Some(&viewer)).await;
        // warm/cold × participant/viewer
        let mut figures: [Vec<f64>; 4] = Default::default();
        for _ in 0..rounds {
            for (i, in_viewer) in [(0, None), (2, Some(&viewer))] {
                // The pool refilled: the next session takes a browser from it.
                wait_for(&warm_server, |r| r["warmBrowsers"] == 1).await;
                let (ms, from_pool) = one(&warm_server, &site, in_viewer).await;
                assert!(from_pool, "the warm round did not use the pool");
                figures[i].push(ms);
                let (ms, from_pool) = one(&cold_server, &site, in_viewer).await;
                assert!(!from_pool);
                figures[i + 1].push(ms);
            }
        }
        let row = |name: &str, v: &[f64]| {
            format!(
                "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
                support::percentile(v.to_vec(), 0.5),
                support::percentile(v.to_vec(), 0.9),
                v.iter().cloned().fold(f64::MAX, f64::min),
                v.len()
            )
        };
        let ratio = |cold: &[f64], warm: &[f64]| {
            support::percentile(cold.to_vec(), 0.5) / support::percentile(warm.to_vec(), 0.5)
        };
        let out = [
            "| session start, first frame | median | p90 | best | rounds |".to_string(),
            "|---|---|---|---|---|".to_string(),
            row("warm pool, at a participant", &figures[0]),
            row("cold, at a participant", &figures[1]),
            row("warm pool, in a real viewer opening the link", &figures[2]),
            row("cold, in a real viewer opening the link", &figures[3]),
            format!(
                "\ncold / warm (medians): {:.1}× at a participant, {:.1}× in a viewer",
                ratio(&figures[1], &figures[0]),
                ratio(&figures[3], &figures[2])
            ),
        ];
        let mut stdout = std::io::stdout();
        use std::io::Write;
        let _ = writeln!(stdout, "{}", out.join("\n"));
        viewer.close().await;
        warm_server.stop().await;
        cold_server.stop().await;
    });
}
