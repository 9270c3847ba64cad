//! The egress proxy's cost on a page load: the same page loaded repeatedly by two session
//! browsers launched alike, one through an egress proxy (as every session is) and one direct,
//! alternating, in one run. The page (a document, 20 images, a script) reports its own
//! navigation timing (navigation start → load event), so CDP and the bench's clock stay out.
//!
//! `cargo bench --bench egress` (LOADS=n to change the 30 loads per mode).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use cobrowse::browser::{Browser, LaunchOptions};
use cobrowse::config::DEFAULT_VIEWPORT;
use cobrowse::egress::{EgressPolicy, EgressProxy};
use serde_json::Value;
use tokio::sync::{mpsc, Mutex};

/// A 1×1 GIF.
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

fn page() -> String {
    // Images are `no-store`: every load fetches all of them again.
    let imgs: String = (0..20).map(|i| format!("<img src=\"/img/{i}\">")).collect();
    format!(
        r#"<!doctype html><html><head><meta charset=utf-8><title>load</title></head><body>{imgs}
<script>
addEventListener('load', () => setTimeout(() => {{
  const n = performance.getEntriesByType('navigation')[0];
  fetch('/report', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify({{ms: n.loadEventStart - n.startTime}})}});
}}, 0));
</script></body></html>"#
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let loads: usize = std::env::var("LOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (tx, rx) = mpsc::channel::<Value>(64);
    let rx = Arc::new(Mutex::new(rx));
    let app = Router::new()
        .route(
            "/page",
            get(|| async { ([("cache-control", "no-store")], Html(page())) }),
        )
        .route(
            "/img/{n}",
            get(|| async {
                (
                    [("content-type", "image/gif"), ("cache-control", "no-store")],
                    GIF,
                )
            }),
        )
        .route(
            "/report",
            post(
                |State(tx): State<mpsc::Sender<Value>>, Json(v): Json<Value>| async move {
                    let _ = tx.send(v).await;
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let site = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let policy = EgressPolicy::default()
        .allowing(&site.to_string())
        .expect("entry");
    let (reports, _keep) = mpsc::channel(64);
    let proxy = EgressProxy::start(Arc::new(policy), "bench", reports)
        .await
        .expect("proxy");
    let chromium = cobrowse::config::default_chromium().expect("chromium");
    let launch = |proxy| {
        Browser::launch(LaunchOptions {
            chromium: chromium.clone(),
            viewport: DEFAULT_VIEWPORT,
            scale: 1.0,
            jpeg_quality: cobrowse::config::DEFAULT_JPEG_QUALITY,
            fault_stall_screencast: false,
            proxy,
            mask_script: cobrowse::mask::page_script(&[]).into(),
        })
    };
    let direct = launch(None).await.expect("launch");
    let proxied = launch(Some(proxy.addr())).await.expect("launch");
    let url = format!("http://{site}/page");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // One warm-up load each, then alternate so that machine noise hits both alike.
    for round in 0..=loads {
        for (i, browser) in [&direct, &proxied].into_iter().enumerate() {
            browser.navigate(&url);
            let report = tokio::time::timeout(Duration::from_secs(20), rx.lock().await.recv())
                .await
                .expect("page loaded in time")
                .expect("site running");
            if round > 0 {
                times[i].push(report["ms"].as_f64().expect("ms"));
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let p90 = |v: &Vec<f64>| v[(v.len() * 9 / 10).min(v.len() - 1)];
    let (d, p) = (median(&mut times[0]), median(&mut times[1]));
    let out = format!(
        "page load (navigation start → load event; document + 20 images + script, loopback), {loads} loads each:\n\
         direct:  median {d:.1} ms, p90 {:.1} ms\n\
         proxied: median {p:.1} ms, p90 {:.1} ms\n\
         proxy cost: {:+.1} ms at the median ({:+.0}%); requests blocked: {}\n",
        p90(&times[0]),
        p90(&times[1]),
        p - d,
        (p - d) / d * 100.0,
        proxy.blocked()
    );
    std::io::Write::write_all(&mut std::io::stderr(), out.as_bytes()).expect("stderr");
    direct.close(Duration::from_secs(5)).await;
    proxied.close(Duration::from_secs(5)).await;
}
