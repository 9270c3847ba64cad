//! Density (issue 8): memory per idle session (Chromium included), how many concurrent sessions
//! the machine holds with idle pages, typing and an animation, and what candidate Chromium flags
//! save in memory, measured against the current flags in the same run, alternating.
//!
//! Run: `cargo bench --profile dev --bench density` (prints Markdown tables for
//! docs/benchmarks.md; progress on stderr). Environment:
//! - `DENSITY_PARTS`: comma-separated parts among `memory`, `idle`, `typing`, `animation`,
//!   `flags` (default: all).
//! - `BENCH_SECONDS`: measurement window per step (default 20); the settle time before it is
//!   the same. Short mode: `BENCH_SECONDS=3 BENCH_ROUNDS=1 DENSITY_COUNTS=1,2 DENSITY_MAX=2
//!   DENSITY_FLAG_SESSIONS=1`.
//! - `BENCH_ROUNDS`: rounds of the memory and flags parts (default 3).
//! - `DENSITY_COUNTS`: session counts of the memory part (default `1,4,8,16`).
//! - `DENSITY_RAMP`: session counts of the ramps (default `2,4,8,12,16,24,32,48,64`).
//! - `DENSITY_MAX`: no ramp step above this many sessions (default 64).
//! - `DENSITY_FLOOR_GIB`: a ramp stops before `MemAvailable` would fall under this (default 2).
//! - `DENSITY_FLAG_SESSIONS`: sessions per flag set and round (default 3); `DENSITY_FLAG_SETS`:
//!   indices into `FLAG_SETS` to compare with the current flags (default: all).
//!
//! Every session is deleted and its Chromium awaited before the next part; if the bench dies,
//! its Chromiums die with it (launched under `setpriv --pdeathsig KILL`).

#![allow(clippy::print_stdout)] // the report (Markdown tables) is this program's output

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cobrowse::procfs;
use serde_json::json;
use support::{Participant, TestServer};
use tokio_util::sync::CancellationToken;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// Human typing pace: 5 characters a second.
const KEY_GAP: Duration = Duration::from_millis(200);
const TEXT: &str = "the quick brown fox jumps over the lazy dog ";
/// What "holds" means (docs/benchmarks.md, Density).
const TYPING_P95_MS: f64 = 150.0;
const ANIMATION_MIN_FPS: f64 = 20.0;
const IDLE_SERVER_CPU_MAX: f64 = 20.0; // % of a core
const IDLE_CHROMIUM_CPU_MAX: f64 = 50.0; // % of a core, all Chromiums together

#[derive(Clone, Copy, Debug, PartialEq)]
enum Work {
    Idle,
    Typing,
    Animation,
}

impl Work {
    fn path(self) -> &'static str {
        match self {
            Work::Idle => "/article",
            Work::Typing => "/type",
            Work::Animation => "/animate",
        }
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// `MemAvailable` of the machine, bytes (the kernel's estimate: page cache that can be dropped
/// counts as available, kernel memory a process causes does not).
fn mem_available() -> f64 {
    meminfo("MemAvailable:")
}

fn meminfo(field: &str) -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib * 1024.0)
}

/// Anonymous and shared-memory PSS of `root`'s tree, bytes: the part of PSS no process outside
/// the tree shares (file pages, such as Chromium's own binary, are shared with every Chromium on
/// the machine, other engineers' included, so their share of PSS moves with what else runs).
fn anon_pss(root: u32) -> f64 {
    procfs::tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .map(|text| {
            ["Pss_Anon:", "Pss_Shmem:"]
                .iter()
                .filter_map(|field| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(field))
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|v| v.parse::<f64>().ok())
                })
                .sum::<f64>()
                * 1024.0
        })
        .sum()
}

fn server_usage() -> procfs::Usage {
    procfs::this_process().unwrap_or_default()
}

/// What one session's participant saw during the current window.
#[derive(Default)]
struct Stats {
    updates: u64,
    /// Keystroke sent → first update received after it, ms.
    latencies: Vec<f64>,
}

struct Session {
    id: String,
    /// The owner's join token.
    owner: String,
    pid: u32,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Mutex<Stats>>,
}

/// Reads (and acknowledges) the next update, or gives up after a quiet while (a still page
/// sends nothing; the harness's own wait would fail after 20 s). Cancel-safe.
async fn next_update(p: &mut Participant) -> Option<()> {
    let raw = tokio::time::timeout(Duration::from_secs(5), p.next_frame_raw())
        .await
        .ok()?;
    let header = cobrowse::protocol::decode_update_header(&raw)?;
    p.ack(header.number).await;
    Some(())
}

/// Creates a session on `url` with one participant connected that acknowledges every update
/// and, for typing, types at a human pace; returns once the first screen arrived.
async fn open(server: &TestServer, url: &str, work: Work) -> Session {
    let (id, links) = server.create_session_with(json!({ "url": url })).await;
    let token = if work == Work::Typing {
        &links.owner
    } else {
        &links.viewer
    };
    let mut p = server.join(&id, token).await;
    p.next_frame_raw().await; // the first screen
    let (_, info) = server.session_json(&id).await;
    let pid = info["browserPid"].as_u64().expect("browserPid") as u32;
    let stop = CancellationToken::new();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let task = {
        let (stop, stats) = (stop.clone(), stats.clone());
        tokio::spawn(async move {
            if work == Work::Typing {
                p.click(100.0, 100.0).await; // into the textarea
            }
            let mut next_key = tokio::time::Instant::now() + KEY_GAP;
            let mut pending: Option<Instant> = None;
            let mut chars = TEXT.chars().cycle();
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(next_key), if work == Work::Typing => {
                        let c = chars.next().unwrap_or(' ');
                        // An unanswered keystroke stays the one measured from.
                        pending.get_or_insert_with(Instant::now);
                        p.type_text(&c.to_string()).await;
                        next_key += KEY_GAP; // typing pace, part of the workload
                    }
                    got = next_update(&mut p) => {
                        if got.is_some() {
                            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                            s.updates += 1;
                            if let Some(t) = pending.take() {
                                s.latencies.push(t.elapsed().as_secs_f64() * 1e3);
                            }
                        }
                    }
                }
            }
        })
    };
    Session {
        id,
        owner: links.owner.clone(),
        pid,
        stop,
        task,
        stats,
    }
}

async fn close_all(server: &TestServer, sessions: Vec<Session>) {
    for s in sessions {
        s.stop.cancel();
        let _ = s.task.await;
        let (status, _) = server
            .http
            .request("DELETE", &format!("/api/sessions/{}", s.id), None)
            .await;
        assert_eq!(status, 204);
        assert!(
            support::wait_pid_exit(s.pid, Duration::from_secs(30)).await,
            "Chromium {} exits",
            s.pid
        );
    }
}

fn reset(sessions: &[Session]) {
    for s in sessions {
        *s.stats.lock().unwrap_or_else(|e| e.into_inner()) = Stats::default();
    }
}

fn chromium_usage(sessions: &[Session]) -> Vec<procfs::Usage> {
    sessions
        .iter()
        .map(|s| procfs::tree_usage(s.pid).unwrap_or_default())
        .collect()
}

fn config(
    site_addr: std::net::SocketAddr,
    chromium: Option<&std::path::Path>,
) -> cobrowse::config::Config {
    let mut config = support::allowing(support::test_config(), &site_addr.to_string());
    config.max_sessions = 1000;
    if let Some(c) = chromium {
        config.chromium = c.to_path_buf();
    }
    config
}

/// Part 1: N idle sessions, one viewer each; after they settle, everything measured at once.
async fn memory(site: &Site, seconds: u64, rounds: u64) {
    let counts = env_list("DENSITY_COUNTS", "1,4,8,16");
    println!("### Memory per idle session\n");
    println!("| sessions | Chromium tree PSS per session, MB (median) | of which anonymous + shmem, MB | all Chromiums' PSS, MB | Chromium RSS per session, MB | processes per Chromium | server RSS growth per session, MB | server PSS growth per session, MB | MemAvailable drop per session, MB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &counts {
        let (mut pss, mut rss, mut procs, mut srss, mut spss, mut drop) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut totals, mut anon) = (vec![], vec![]);
        for round in 0..rounds {
            let server = TestServer::start_with(config(site.addr, None)).await;
            let before = server_usage();
            let avail0 = mem_available();
            let mut sessions = Vec::new();
            for _ in 0..n {
                sessions.push(open(&server, &site.url(Work::Idle.path()), Work::Idle).await);
            }
            tokio::time::sleep(Duration::from_secs(seconds)).await; // settle window
            let usage = chromium_usage(&sessions);
            let after = server_usage();
            let avail1 = mem_available();
            let nf = n as f64;
            anon.extend(sessions.iter().map(|s| anon_pss(s.pid) / MIB));
            totals.push(usage.iter().map(|u| u.pss_bytes as f64).sum::<f64>() / MIB);
            for u in &usage {
                pss.push(u.pss_bytes as f64 / MIB);
                rss.push(u.rss_bytes as f64 / MIB);
                procs.push(u.processes as f64);
            }
            srss.push((after.rss_bytes as f64 - before.rss_bytes as f64) / nf / MIB);
            spss.push((after.pss_bytes as f64 - before.pss_bytes as f64) / nf / MIB);
            drop.push((avail0 - avail1) / nf / MIB);
            eprintln!(
                "memory n={n} round {round}: PSS {:.0} MB/session, MemAvailable drop {:.0} MB/session, server +{:.1} MB/session",
                support::median(usage.iter().map(|u| u.pss_bytes as f64 / MIB).collect()),
                drop.last().copied().unwrap_or(0.0),
                srss.last().copied().unwrap_or(0.0)
            );
            close_all(&server, sessions).await;
            server.stop().await;
        }
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} |",
            support::median(pss),
            support::median(anon),
            support::median(totals),
            support::median(rss),
            support::median(procs),
            support::median(srss),
            support::median(spss),
            support::median(drop)
        );
    }
    println!();
}

/// Part 2: a ramp of concurrent sessions with one workload; stops at the first step that does
/// not hold, or before memory would run short.
async fn ramp(site: &Site, work: Work, seconds: u64) {
    let steps = env_list("DENSITY_RAMP", "2,4,8,12,16,24,32,48,64");
    let max = support::env_or("DENSITY_MAX", 64) as usize;
    let floor = support::env_or("DENSITY_FLOOR_GIB", 2) as f64 * GIB;
    let server = TestServer::start_with(config(site.addr, None)).await;
    let avail_start = mem_available();
    println!("### Ramp: {work:?}\n");
    println!(
        "MemAvailable at the start: {:.1} GiB of {:.1} GiB.\n",
        avail_start / GIB,
        meminfo("MemTotal:") / GIB
    );
    match work {
        Work::Idle => println!("| sessions | holds | Chromium PSS total, GiB | MemAvailable, GiB | server CPU, % of a core | all Chromiums' CPU, % of a core |\n|---|---|---|---|---|---|"),
        Work::Typing => println!("| sessions | holds | keystroke → update p50 / p95 ms (all sessions) | worst session's p95 ms | keystrokes measured | server CPU, % of a core | all Chromiums' CPU, % of a core | MemAvailable, GiB |\n|---|---|---|---|---|---|---|---|"),
        Work::Animation => println!("| sessions | holds | updates/s per viewer: median / slowest | viewers with no update in the window | server CPU, % of a core | all Chromiums' CPU, % of a core | MemAvailable, GiB |\n|---|---|---|---|---|---|---|"),
    }
    let mut sessions: Vec<Session> = Vec::new();
    let mut per_session = 400.0 * MIB; // first guess, replaced by the measured drop
    let mut last_held = 0;
    for &n in steps.iter().filter(|&&n| n <= max) {
        let add = n.saturating_sub(sessions.len());
        if mem_available() - add as f64 * per_session < floor {
            println!("\n(stopped before {n}: MemAvailable would fall under the floor)");
            break;
        }
        for _ in 0..add {
            sessions.push(open(&server, &site.url(work.path()), work).await);
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await; // settle window
        reset(&sessions);
        let (s0, c0) = (server_usage(), chromium_usage(&sessions));
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await; // measurement window
        let wall = t0.elapsed().as_secs_f64();
        let (s1, c1) = (server_usage(), chromium_usage(&sessions));
        let avail = mem_available();
        per_session = ((avail_start - avail) / sessions.len() as f64).max(50.0 * MIB);
        let server_cpu = (s1.cpu_seconds - s0.cpu_seconds) / wall * 100.0;
        let chromium_cpu = c1
            .iter()
            .zip(&c0)
            .map(|(a, b)| a.cpu_seconds - b.cpu_seconds)
            .sum::<f64>()
            / wall
            * 100.0;
        let stats: Vec<(u64, Vec<f64>)> = sessions
            .iter()
            .map(|s| {
                let st = s.stats.lock().unwrap_or_else(|e| e.into_inner());
                (st.updates, st.latencies.clone())
            })
            .collect();
        let holds = match work {
            Work::Idle => {
                let pss: f64 = c1.iter().map(|u| u.pss_bytes as f64).sum();
                let holds = avail >= floor
                    && server_cpu <= IDLE_SERVER_CPU_MAX
                    && chromium_cpu <= IDLE_CHROMIUM_CPU_MAX;
                println!(
                    "| {n} | {} | {:.2} | {:.1} | {server_cpu:.1} | {chromium_cpu:.1} |",
                    if holds { "yes" } else { "no" },
                    pss / GIB,
                    avail / GIB
                );
                holds
            }
            Work::Typing => {
                let all: Vec<f64> = stats.iter().flat_map(|(_, l)| l.clone()).collect();
                let worst = stats
                    .iter()
                    .map(|(_, l)| support::percentile(l.clone(), 0.95))
                    .fold(
                        0.0,
                        |a: f64, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
                    );
                // Every session must have answered most of its keystrokes in the window.
                let expected = wall / KEY_GAP.as_secs_f64();
                let starved = stats.iter().any(|(_, l)| (l.len() as f64) < expected * 0.5);
                let holds = worst <= TYPING_P95_MS && !starved;
                println!(
                    "| {n} | {} | {:.0} / {:.0} | {:.0} | {} | {server_cpu:.1} | {chromium_cpu:.1} | {:.1} |",
                    if holds { "yes" } else { "no" },
                    support::percentile(all.clone(), 0.5),
                    support::percentile(all.clone(), 0.95),
                    worst,
                    all.len(),
                    avail / GIB
                );
                holds
            }
            Work::Animation => {
                let rates: Vec<f64> = stats.iter().map(|(u, _)| *u as f64 / wall).collect();
                let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
                let holds = slowest >= ANIMATION_MIN_FPS;
                let frozen = rates.iter().filter(|&&r| r == 0.0).count();
                println!(
                    "| {n} | {} | {:.1} / {:.1} | {frozen} | {server_cpu:.1} | {chromium_cpu:.1} | {:.1} |",
                    if holds { "yes" } else { "no" },
                    support::median(rates),
                    slowest,
                    avail / GIB
                );
                holds
            }
        };
        eprintln!("ramp {work:?} n={n}: holds {holds}");
        for (s, (updates, _)) in sessions.iter().zip(&stats) {
            if *updates == 0 && work != Work::Idle {
                let (_, info) = server.session_json(&s.id).await;
                eprintln!(
                    "  session {} (Chromium {}): no update in the window; framesIn {} framesPolled {} screenSource {} page {}",
                    s.id, s.pid, info["framesIn"], info["framesPolled"], info["screenSource"], info["page"]
                );
            }
        }
        if !holds {
            break;
        }
        last_held = n;
    }
    let drop = (avail_start - mem_available()) / sessions.len().max(1) as f64;
    println!(
        "\nLargest count that held: {last_held}. MemAvailable drop per session at the last step: {:.0} MB.",
        drop / MIB
    );
    if work == Work::Idle {
        let total = meminfo("MemTotal:");
        println!(
            "Extrapolated from memory: ({:.1} GiB available at the start − 2 GiB) / {:.0} MB = {:.0} idle sessions here; on an otherwise empty {:.0} GiB machine (≈ 1 GiB for the system), ({:.0} − 1 − 2 GiB) / {:.0} MB = {:.0}.",
            avail_start / GIB,
            drop / MIB,
            ((avail_start - 2.0 * GIB) / drop).floor(),
            total / GIB,
            total / GIB,
            drop / MIB,
            ((total - 3.0 * GIB) / drop).floor()
        );
    }
    println!();
    close_all(&server, sessions).await;
    server.stop().await;
}

/// A candidate set of Chromium flags on top of the session's own.
struct FlagSet {
    name: &'static str,
    args: &'static [&'static str],
    /// Merged into the `--disable-features` list the session already passes.
    disable_features: &'static [&'static str],
}

const FLAG_SETS: &[FlagSet] = &[
    FlagSet { name: "current flags", args: &[], disable_features: &[] },
    FlagSet { name: "BackForwardCache off", args: &[], disable_features: &["BackForwardCache"] },
    FlagSet {
        name: "OptimizationHints, MediaRouter, Translate, AutofillServerCommunication, InterestFeedContentSuggestions off",
        args: &[],
        disable_features: &["OptimizationHints", "MediaRouter", "Translate", "AutofillServerCommunication", "InterestFeedContentSuggestions"],
    },
    FlagSet { name: "SpareRendererForSitePerProcess off", args: &[], disable_features: &["SpareRendererForSitePerProcess"] },
    FlagSet { name: "--renderer-process-limit=1", args: &["--renderer-process-limit=1"], disable_features: &[] },
    FlagSet { name: "--process-per-site", args: &["--process-per-site"], disable_features: &[] },
    FlagSet { name: "--js-flags=--max-old-space-size=512", args: &["--js-flags=--max-old-space-size=512"], disable_features: &[] },
    FlagSet { name: "--js-flags=--max-old-space-size=2048", args: &["--js-flags=--max-old-space-size=2048"], disable_features: &[] },
    FlagSet { name: "--js-flags=--max-semi-space-size=4", args: &["--js-flags=--max-semi-space-size=4"], disable_features: &[] },
    FlagSet { name: "--disable-gpu", args: &["--disable-gpu"], disable_features: &[] },
    FlagSet { name: "--disable-software-rasterizer", args: &["--disable-software-rasterizer"], disable_features: &[] },
    FlagSet { name: "--in-process-gpu", args: &["--in-process-gpu"], disable_features: &[] },
    FlagSet { name: "--enable-low-end-device-mode", args: &["--enable-low-end-device-mode"], disable_features: &[] },
    FlagSet { name: "--disable-site-isolation-trials (not for this product)", args: &["--disable-site-isolation-trials"], disable_features: &[] },
];

/// A launcher that runs Chromium with `set`'s flags added, its features merged into the
/// `--disable-features` list it is given (Chromium keeps only the last of repeated switches).
fn wrapper(dir: &std::path::Path, i: usize, set: &FlagSet) -> std::path::PathBuf {
    let path = dir.join(format!("chromium-{i}"));
    let extra: String = set.args.iter().map(|a| format!(" '{a}'")).collect();
    let features = set.disable_features.join(",");
    let body = format!(
        "#!/bin/sh\nfor a do\n  case \"$a\" in\n    --disable-features=*) [ -n '{features}' ] && a=\"$a,{features}\";;\n  esac\n  set -- \"$@\" \"$a\"\n  shift\ndone\nexec '{}' \"$@\"{extra}\n",
        support::chromium().display()
    );
    std::fs::write(&path, body).expect("write wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Part 3: idle sessions (one navigation behind them) with each candidate flag set, the sets
/// alternating within each round; PSS per session compared to the current flags' in the run.
async fn flags(site: &Site, seconds: u64, rounds: u64) {
    let k = support::env_or("DENSITY_FLAG_SESSIONS", 3) as usize;
    // `DENSITY_FLAG_SETS`: indices into FLAG_SETS to compare (the current flags, 0, always).
    let chosen: Vec<usize> = std::iter::once(0)
        .chain(
            env_list("DENSITY_FLAG_SETS", "")
                .into_iter()
                .filter(|&i| i > 0 && i < FLAG_SETS.len()),
        )
        .collect();
    let chosen = if chosen.len() == 1 {
        (0..FLAG_SETS.len()).collect()
    } else {
        chosen
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let paths: Vec<_> = FLAG_SETS
        .iter()
        .enumerate()
        .map(|(i, s)| wrapper(dir.path(), i, s))
        .collect();
    let mut pss: Vec<Vec<f64>> = vec![Vec::new(); FLAG_SETS.len()];
    let mut procs: Vec<Vec<f64>> = vec![Vec::new(); FLAG_SETS.len()];
    let mut anon: Vec<Vec<f64>> = vec![Vec::new(); FLAG_SETS.len()];
    for round in 0..rounds {
        for &i in &chosen {
            let set = &FLAG_SETS[i];
            let server = TestServer::start_with(config(site.addr, Some(&paths[i]))).await;
            let mut sessions = Vec::new();
            let mut owners = Vec::new();
            for _ in 0..k {
                let s = open(&server, &site.url("/nav/1"), Work::Idle).await;
                // One navigation, so the first page can sit in the back/forward cache.
                let mut owner = server.join(&s.id, &s.owner).await;
                owner
                    .send(json!({ "t": "navigate", "url": site.url(Work::Idle.path()) }))
                    .await;
                owners.push(owner);
                sessions.push(s);
            }
            tokio::time::sleep(Duration::from_secs(seconds)).await; // settle window
            let usage = chromium_usage(&sessions);
            let anons: Vec<f64> = sessions.iter().map(|s| anon_pss(s.pid) / MIB).collect();
            let urls: Vec<String> = {
                let mut v = Vec::new();
                for s in &sessions {
                    let (_, info) = server.session_json(&s.id).await;
                    v.push(info["page"]["url"].as_str().unwrap_or("").to_string());
                }
                v
            };
            let navigated = urls.iter().all(|u| u.ends_with(Work::Idle.path()));
            let m = support::median(usage.iter().map(|u| u.pss_bytes as f64 / MIB).collect());
            eprintln!(
                "flags round {round} [{}]: PSS {m:.0} MB/session (anon+shmem {:.0}), {} processes, navigated {navigated} ({owners} owners)",
                set.name,
                support::median(anons.clone()),
                usage.first().map_or(0, |u| u.processes),
                owners = owners.len()
            );
            assert!(navigated, "every session navigated: {urls:?}");
            anon[i].extend(anons.iter().copied());
            pss[i].extend(usage.iter().map(|u| u.pss_bytes as f64 / MIB));
            procs[i].extend(usage.iter().map(|u| u.processes as f64));
            drop(owners);
            close_all(&server, sessions).await;
            server.stop().await;
        }
    }
    println!("### Chromium flags: PSS of an idle session ({k} sessions per set and round, {rounds} rounds, sets alternating)\n");
    println!("| flags added | anonymous + shmem PSS per session, MB (median) | vs current flags | PSS (file pages included), MB | vs current flags | processes |");
    println!("|---|---|---|---|---|---|");
    let base = support::median(pss[0].clone());
    let base_anon = support::median(anon[0].clone());
    for &i in &chosen {
        let set = &FLAG_SETS[i];
        let m = support::median(pss[i].clone());
        let a = support::median(anon[i].clone());
        println!(
            "| {} | {a:.0} | {:+.1} MB ({:+.1}%) | {m:.0} | {:+.1} MB ({:+.1}%) | {:.0} |",
            set.name,
            a - base_anon,
            (a - base_anon) / base_anon * 100.0,
            m - base,
            (m - base) / base * 100.0,
            support::median(procs[i].clone()),
        );
    }
    println!();
}

/// The test site, its reports drained in the background (nobody reads them here).
struct Site {
    addr: std::net::SocketAddr,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = support::env_or("BENCH_SECONDS", 20);
    let rounds = support::env_or("BENCH_ROUNDS", 3);
    let parts = std::env::var("DENSITY_PARTS")
        .unwrap_or_else(|_| "memory,idle,typing,animation,flags".to_string());
    let mut test_site = support::TestSite::start().await;
    let site = Site {
        addr: test_site.addr,
    };
    tokio::spawn(async move {
        loop {
            test_site.drain();
            tokio::time::sleep(Duration::from_millis(500)).await; // drain pace
        }
    });
    println!(
        "## Density ({seconds} s windows, {rounds} rounds; {})\n",
        std::env::var("DENSITY_RUN_NOTE").unwrap_or_default()
    );
    for part in parts.split(',') {
        match part.trim() {
            "memory" => memory(&site, seconds, rounds).await,
            "idle" => ramp(&site, Work::Idle, seconds).await,
            "typing" => ramp(&site, Work::Typing, seconds).await,
            "animation" => ramp(&site, Work::Animation, seconds).await,
            "flags" => flags(&site, seconds, rounds).await,
            other => eprintln!("unknown part {other}"),
        }
    }
}
