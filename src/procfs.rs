//! What processes cost, read from `/proc` (Linux only): a Chromium's whole process tree (its
//! renderers, GPU and utility processes), this process, and the memory the machine (or the
//! container's cgroup) has left. Used by `/metrics`, admission control and the density bench.
//!
//! Every function reads a few small files per process and returns `None` (or skips a process)
//! when one vanished mid-read: a process tree changes while it is walked.

use std::collections::HashMap;
use std::path::Path;

/// Memory and CPU of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Proportional set size: shared pages divided among the processes that map them, so the
    /// PSS of several trees adds up to what they cost together. Bytes.
    pub pss_bytes: u64,
    /// Resident set size, shared pages counted in full in each process. Bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time since each process started, seconds.
    pub cpu_seconds: f64,
    /// Processes counted.
    pub processes: usize,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.pss_bytes += other.pss_bytes;
        self.rss_bytes += other.rss_bytes;
        self.cpu_seconds += other.cpu_seconds;
        self.processes += other.processes;
    }
}

/// Every process id on the machine with its parent's.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|v| v.parse().ok())) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and parentheses):
/// state is field 0, the parent 1, utime 11, stime 12.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// `root` and all its descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let parents = parents();
    if !parents.contains_key(&root) {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while let Some(&pid) = out.get(i) {
        if let Some(kids) = children.get(&pid) {
            out.extend(kids.iter().copied());
        }
        i += 1;
    }
    out
}

/// What one process costs (`None` when it is gone or unreadable).
pub fn process(pid: u32) -> Option<Usage> {
    let fields = stat_fields(pid)?;
    // A zombie has no memory left and its CPU time went to its parent's counters.
    if fields.first().map(String::as_str) == Some("Z") {
        return None;
    }
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = rustix::param::clock_ticks_per_second().max(1) as f64;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Some(Usage {
        pss_bytes: kib_field(&rollup, "Pss:").unwrap_or(0) * 1024,
        rss_bytes: kib_field(&rollup, "Rss:").unwrap_or(0) * 1024,
        cpu_seconds: (ticks(11) + ticks(12)) as f64 / hz,
        processes: 1,
    })
}

/// What `root` and its descendants cost together (`None` when `root` is gone).
pub fn tree_usage(root: u32) -> Option<Usage> {
    let pids = tree(root);
    if pids.is_empty() {
        return None;
    }
    let mut total = Usage::default();
    for pid in pids {
        if let Some(usage) = process(pid) {
            total += usage;
        }
    }
    Some(total)
}

/// What this process costs.
pub fn this_process() -> Option<Usage> {
    process(std::process::id())
}

/// `Name:   123 kB` in a `/proc` text file, as the number of KiB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Memory a new session can still use, bytes: the machine's `MemAvailable`, or less when this
/// process's cgroup (a container's memory limit) has less room left. `None` when neither can be
/// read (not Linux).
pub fn available_memory() -> Option<u64> {
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| kib_field(&text, "MemAvailable:"))
        .map(|kib| kib * 1024);
    let cgroup = cgroup_room(Path::new("/sys/fs/cgroup"), &own_cgroup());
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

/// This process's cgroup v2 path (`/` when unknown).
fn own_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("0::").map(str::to_string))
        })
        .unwrap_or_else(|| "/".to_string())
}

/// Room left under the tightest `memory.max` from `group` up to the root of the cgroup v2 tree
/// mounted at `root`: `memory.max` minus the working set (`memory.current` without the
/// `inactive_file` page cache of `memory.stat`, which the kernel reclaims before it kills
/// anything: the figure Kubernetes evicts on). `None` when no limit is set.
fn cgroup_room(root: &Path, group: &str) -> Option<u64> {
    let mut best: Option<u64> = None;
    let mut path = root.join(group.trim_start_matches('/'));
    loop {
        let max = std::fs::read_to_string(path.join("memory.max")).ok();
        let current = std::fs::read_to_string(path.join("memory.current")).ok();
        if let (Some(max), Some(current)) = (max, current) {
            if let (Ok(max), Ok(current)) =
                (max.trim().parse::<u64>(), current.trim().parse::<u64>())
            {
                let room = max.saturating_sub(current);
                best = Some(best.map_or(room, |b| b.min(room)));
            }
        }
        if path == root || !path.pop() || !path.starts_with(root) {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let usage = this_process().expect("own usage");
        assert!(usage.pss_bytes > 1024 * 1024, "{usage:?}");
        assert!(usage.rss_bytes >= usage.pss_bytes, "{usage:?}");
        assert_eq!(usage.processes, 1);
    }

    #[test]
    fn a_tree_counts_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let me = std::process::id();
        let pids = tree(me);
        assert!(pids.contains(&me) && pids.contains(&child.id()), "{pids:?}");
        let all = tree_usage(me).expect("tree");
        assert!(all.processes >= 2, "{all:?}");
        assert!(all.rss_bytes > this_process().expect("own").rss_bytes);
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree(child.id()).is_empty(), "a reaped process has no tree");
        assert_eq!(tree_usage(child.id()), None);
    }

    #[test]
    fn cgroup_room_takes_the_tightest_limit_on_the_way_up() {
        let root = tempfile::tempdir().expect("tmp");
        let group = root.path().join("a/b");
        std::fs::create_dir_all(&group).expect("dirs");
        let write = |dir: &Path, max: &str, current: &str| {
            std::fs::write(dir.join("memory.max"), max).expect("max");
            std::fs::write(dir.join("memory.current"), current).expect("current");
        };
        assert_eq!(cgroup_room(root.path(), "/a/b"), None, "no files, no limit");
        write(&group, "max\n", "100\n");
        assert_eq!(
            cgroup_room(root.path(), "/a/b"),
            None,
            "\"max\" is no limit"
        );
        write(&root.path().join("a"), "1000\n", "300\n");
        assert_eq!(cgroup_room(root.path(), "/a/b"), Some(700));
        write(&group, "500\n", "450\n");
        assert_eq!(cgroup_room(root.path(), "/a/b"), Some(50));
        write(&group, "500\n", "600\n");
        assert_eq!(
            cgroup_room(root.path(), "/a/b"),
            Some(0),
            "over the limit is no room"
        );
    }

    #[test]
    fn the_machine_has_some_memory_available() {
        let available = available_memory().expect("meminfo");
        assert!(available > 16 * 1024 * 1024, "{available}");
    }
}
