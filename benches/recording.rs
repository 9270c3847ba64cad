//! What recording costs (issue 7): the recording's size per minute for the standard workloads
//! (typing, scrolling, an animation), and the server's CPU with and without recording, measured
//! in the same run on the same pages, alternating rounds (the machine is shared and noisy).
//!
//! Run: `cargo bench --bench recording` (prints a Markdown table for docs/benchmarks.md).
//! Environment: `BENCH_SECONDS` (per workload and round, default 10), `BENCH_ROUNDS` (default 3).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{TestServer, TestSite};

/// Typing pace (~45 characters a second) and scroll pace, as `benches/pipeline.rs` uses.
const KEY_GAP: Duration = Duration::from_millis(22);
const TICK_GAP: Duration = Duration::from_millis(80);
const TICK_PX: f64 = 120.0;
const SENTENCE: &str = "The quick brown fox jumps over the lazy dog, twice now. ";

#[derive(Clone, Copy, Debug)]
enum Work {
    Typing,
    Scrolling,
    Animation,
}

impl Work {
    fn path(self) -> &'static str {
        match self {
            Work::Typing => "/type",
            Work::Scrolling => "/article",
            Work::Animation => "/animate",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Work::Typing => "typing (45 characters/s)",
            Work::Scrolling => "scrolling (120 px every 80 ms)",
            Work::Animation => "animation (200×200 box sliding)",
        }
    }
}

/// One round: a fresh session on the workload's page, one viewer acknowledging every update on
/// arrival (as a fast viewer does; it does not decode, so this process's CPU is the server's),
/// and the workload for `seconds`. Returns (CPU seconds used, recording bytes, keyframes and
/// their bytes).
async fn round(
    server: &TestServer,
    site: &TestSite,
    work: Work,
    record: bool,
    seconds: u64,
) -> (f64, u64, (usize, u64)) {
    let (id, links) = server
        .create_session_with(json!({ "url": site.url(work.path()), "record": record }))
        .await;
    let mut viewer = server.join(&id, &links.viewer).await;
    let mut actor = server.join(&id, &links.owner).await;
    // The first screen, then the page's first paint settles.
    viewer.next_frame_raw().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    raw = viewer.next_frame_raw() => {
                        if let Some(h) = cobrowse::protocol::decode_update_header(&raw) {
                            viewer.ack(h.number).await;
                        }
                    }
                }
            }
            viewer
        })
    };
    let cpu0 = support::cpu_seconds();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut i = 0usize;
    while Instant::now() < until {
        match work {
            Work::Typing => {
                let c = SENTENCE.chars().nth(i % SENTENCE.len()).unwrap_or(' ');
                actor.type_text(&c.to_string()).await;
                tokio::time::sleep(KEY_GAP).await; // typing pace, part of the workload
            }
            Work::Scrolling => {
                // 20 ticks down, 20 up, and again.
                let dy = if (i / 20).is_multiple_of(2) {
                    TICK_PX
                } else {
                    -TICK_PX
                };
                actor
                    .send(json!({ "t": "wheel", "x": 400.0, "y": 300.0, "dx": 0.0, "dy": dy, "mods": 0 }))
                    .await;
                tokio::time::sleep(TICK_GAP).await; // wheel pace, part of the workload
            }
            Work::Animation => {
                tokio::time::sleep(Duration::from_millis(100)).await; // the page animates itself
            }
        }
        i += 1;
    }
    let cpu = support::cpu_seconds() - cpu0;
    let (mut bytes, mut keyframes) = (0, (0, 0));
    if record {
        server.set_recording(&id, false).await;
        let (_, file) = server.recording_file(&id).await;
        bytes = file.len() as u64;
        let rec = cobrowse::recording::read::Recording::parse(file).expect("a recording");
        let kf: Vec<_> = rec.updates.iter().filter(|u| u.keyframe).collect();
        keyframes = (kf.len(), kf.iter().map(|u| u.range.len() as u64).sum());
    }
    stop.cancel();
    let _ = reader.await;
    let (status, _) = server
        .http
        .request("DELETE", &format!("/api/sessions/{id}"), None)
        .await;
    assert_eq!(status, 204);
    (cpu, bytes, keyframes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)] // the report is this program's output
async fn main() {
    let seconds = support::env_or("BENCH_SECONDS", 10);
    let rounds = support::env_or("BENCH_ROUNDS", 3);
    let site = TestSite::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = support::site_config(&site);
    config.recordings_dir = Some(dir.path().to_path_buf());
    let server = TestServer::start_with(config).await;
    println!(
        "## Recording: size and CPU cost ({seconds} s per workload, median of {rounds} rounds)\n"
    );
    println!("| workload | recording size, MB per minute | server CPU without recording | with recording | cost of recording |");
    println!("|---|---|---|---|---|");
    for work in [Work::Typing, Work::Scrolling, Work::Animation] {
        let (mut off, mut on, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (cpu, _, _) = round(&server, &site, work, false, seconds).await;
            off.push(cpu / seconds as f64 * 100.0);
            let (cpu, bytes, (kf, kf_bytes)) = round(&server, &site, work, true, seconds).await;
            eprintln!("{work:?}: {kf} keyframes, {kf_bytes} bytes of {bytes}");
            on.push(cpu / seconds as f64 * 100.0);
            sizes.push(bytes as f64 / seconds as f64 * 60.0 / 1e6);
            eprintln!(
                "{work:?}: off {:.1}% on {:.1}% size {:.2} MB/min",
                off.last().unwrap_or(&0.0),
                on.last().unwrap_or(&0.0),
                sizes.last().unwrap_or(&0.0)
            );
        }
        let (off, on) = (support::median(off), support::median(on));
        println!(
            "| {} | {:.2} | {:.1}% of a core | {:.1}% | {:+.1} points ({:.2}×) |",
            work.name(),
            support::median(sizes),
            off,
            on,
            on - off,
            on / off.max(0.01)
        );
    }
    server.stop().await;
}
