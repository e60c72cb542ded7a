//! Process plumbing of the harness: temporary directories, free ports, signals, and
//! what /proc says about a process (CPU time, memory, children).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a process gets to answer after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a SIGTERMed server gets to shut down before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new(label: &str) -> anyhow::Result<WorkDir> {
        let unique = format!(
            "giftload-{label}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(WorkDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now (the kernel's choice).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether `port` is free on 127.0.0.1 right now.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// CPU time (user + system, reaped children included) of process `pid`, seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command (which may hold spaces) start after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14-17, i.e. 11..15 after the command.
    let ticks: f64 = (11..15)
        .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks_per_second()
}

/// CPU seconds per thread name of process `pid` (its threads' `comm`, e.g. the
/// projector's or tokio's workers), summed over threads of one name.
pub fn thread_cpu_seconds(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, n)| n).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime, stime (a thread has no children of its own).
        let ticks: f64 = (11..13)
            .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        *by_name.entry(name).or_insert(0.0) += ticks / clock_ticks_per_second();
    }
    by_name
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// A line of `/proc/PID/status` (e.g. `VmHWM`), in MB.
pub fn status_mb(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The children of process `pid` (the server's forked snapshot writers, its replica).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill only sends a signal to a process this harness started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
/// Waits for `child` to exit, up to `timeout`; kills it past that.
pub fn reap(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
