//! Memory this process can still get: on Linux the least of `MemAvailable` in `/proc/meminfo`
//! and, for every cgroup (v2 or v1) on this process's path that sets a memory limit, that limit
//! minus its usage.
//!
//! Invariant: only a limit that is read and parsed counts; anything unreadable is left out, and
//! when nothing can be read the answer is `None` (unknown), never a guess.

use std::path::Path;

/// Memory this process can still get, and where the number was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// Where it comes from (`MemAvailable in /proc/meminfo`, a cgroup's limit minus usage).
    pub source: String,
}

impl Available {
    /// What this machine can give now; `None` when it cannot be read (not Linux, no `/proc`).
    pub fn probe() -> Option<Available> {
        Available::probe_in(Path::new("/"))
    }

    /// The same, reading `proc/` and `sys/fs/cgroup/` under `root` (tests give a made-up tree).
    pub fn probe_in(root: &Path) -> Option<Available> {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
        let mut best: Option<Available> = read("proc/meminfo")
            .and_then(|t| mem_available(&t))
            .map(|bytes| Available { bytes, source: "MemAvailable in /proc/meminfo".into() });
        let mut offer = |bytes: u64, source: String| {
            if best.as_ref().is_none_or(|b| bytes < b.bytes) {
                best = Some(Available { bytes, source });
            }
        };
        for line in read("proc/self/cgroup").unwrap_or_default().lines() {
            // `hierarchy-id:controllers:path`; v2 has id 0 and no controllers.
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                for mount in ["sys/fs/cgroup", "sys/fs/cgroup/unified"] {
                    if let Some((bytes, dir)) = tightest(root, mount, path, "memory.max", "memory.current") {
                        offer(bytes, format!("cgroup v2 memory.max minus memory.current in /{dir}"));
                    }
                }
            } else if controllers.split(',').any(|c| c == "memory") {
                let found =
                    tightest(root, "sys/fs/cgroup/memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes");
                if let Some((bytes, dir)) = found {
                    offer(bytes, format!("cgroup v1 memory.limit_in_bytes minus memory.usage_in_bytes in /{dir}"));
                }
            }
        }
        best
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The least `limit − usage` over the cgroup directory `mount/path` and its ancestors up to
/// `mount` that set a limit, with the directory it was read in. Limits of 2⁶² bytes and more
/// (cgroup v1's way of writing "none") and `max` (v2's) set none.
fn tightest(root: &Path, mount: &str, path: &str, limit: &str, usage: &str) -> Option<(u64, String)> {
    let mut dir = if path.is_empty() { mount.to_string() } else { format!("{mount}/{path}") };
    let mut best: Option<(u64, String)> = None;
    loop {
        let read = |file: &str| std::fs::read_to_string(root.join(&dir).join(file)).ok();
        let limit = read(limit).and_then(|t| t.trim().parse::<u64>().ok()).filter(|&l| l < 1 << 62);
        if let (Some(limit), Some(used)) = (limit, read(usage).and_then(|t| t.trim().parse::<u64>().ok())) {
            let left = limit.saturating_sub(used);
            if best.as_ref().is_none_or(|b| left < b.0) {
                best = Some((left, dir.clone()));
            }
        }
        if dir == mount {
            return best;
        }
        dir = dir.rsplit_once('/').map_or(mount.to_string(), |(parent, _)| parent.to_string());
        if dir.len() < mount.len() {
            return best;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A made-up filesystem root with `files` (path, contents) in it.
    fn tree(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("pipesched-budget-{name}-{}", std::process::id()));
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    #[test]
    fn available_memory_is_the_least_of_meminfo_and_every_cgroup_limit() {
        let meminfo = ("proc/meminfo", "MemTotal:       24683656 kB\nMemAvailable:   23566472 kB\n");
        let root = tree("meminfo", &[meminfo]);
        assert_eq!(
            Available::probe_in(&root),
            Some(Available { bytes: 23566472 * 1024, source: "MemAvailable in /proc/meminfo".into() })
        );
        // cgroup v1, unlimited at the leaf (2⁶³ − 4096), limited one level up.
        let v1 = tree(
            "v1",
            &[
                meminfo,
                ("proc/self/cgroup", "4:memory:/jobs/a1\n0::/\n"),
                ("sys/fs/cgroup/memory/jobs/a1/memory.limit_in_bytes", "9223372036854771712\n"),
                ("sys/fs/cgroup/memory/jobs/a1/memory.usage_in_bytes", "1000\n"),
                ("sys/fs/cgroup/memory/jobs/memory.limit_in_bytes", "8589934592\n"),
                ("sys/fs/cgroup/memory/jobs/memory.usage_in_bytes", "2147483648\n"),
            ],
        );
        let a = Available::probe_in(&v1).unwrap();
        assert_eq!(a.bytes, 6 * GIB);
        assert!(a.source.contains("cgroup v1") && a.source.ends_with("/sys/fs/cgroup/memory/jobs"), "{}", a.source);
        let v2 = tree(
            "v2",
            &[
                meminfo,
                ("proc/self/cgroup", "0::/user.slice/job\n"),
                ("sys/fs/cgroup/user.slice/job/memory.max", "4294967296\n"),
                ("sys/fs/cgroup/user.slice/job/memory.current", "1073741824\n"),
                ("sys/fs/cgroup/user.slice/memory.max", "max\n"),
                ("sys/fs/cgroup/user.slice/memory.current", "5\n"),
            ],
        );
        let a = Available::probe_in(&v2).unwrap();
        assert_eq!((a.bytes, a.source.contains("cgroup v2")), (3 * GIB, true));
        let nothing = tree("nothing", &[("proc/meminfo", "MemTotal: 5 kB\n")]);
        assert_eq!(Available::probe_in(&nothing), None);
        for root in [root, v1, v2, nothing] {
            std::fs::remove_dir_all(root).unwrap();
        }
        assert_eq!(mem_available("MemAvailable: 7\n"), Some(7));
        assert_eq!(mem_available("MemAvailable: 7 MB\n"), None);
    }

    #[test]
    fn this_machine_reports_something_on_linux() {
        if cfg!(target_os = "linux") {
            let a = Available::probe().expect("/proc/meminfo is readable on Linux");
            assert!(a.bytes > 0, "{a:?}");
        }
    }
}
