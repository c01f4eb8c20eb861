//! The node processes of the cluster run, and what `/proc` says about them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Node processes by a serial number (not their node id, which etcd gives).
pub struct Pool {
    exe: PathBuf,
    args: Vec<String>,
    logs: PathBuf,
    next: usize,
    /// Live processes and when each was started.
    live: HashMap<usize, (Child, Instant)>,
    /// Processes told to stop, reaped as they exit.
    leaving: Vec<Child>,
    /// Every process that exited by itself so far, with its log's last line.
    pub crashes: Vec<String>,
}

impl Pool {
    /// A pool that starts `exe args…`, logging each node's stderr to `logs`.
    pub fn new(exe: PathBuf, args: Vec<String>, logs: PathBuf) -> Result<Pool> {
        std::fs::create_dir_all(&logs)?;
        Ok(Pool {
            exe,
            args,
            logs,
            next: 0,
            live: HashMap::new(),
            leaving: Vec::new(),
            crashes: Vec::new(),
        })
    }

    /// Starts `n` nodes as fast as processes can be spawned.
    pub fn spawn(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let k = self.next;
            self.next += 1;
            let log = File::create(self.logs.join(format!("node-{k}.log")))?;
            let child = Command::new(&self.exe)
                .args(&self.args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawning node process {k}"))?;
            self.live.insert(k, (child, Instant::now()));
        }
        Ok(())
    }

    /// Process ids of the live processes.
    pub fn pids(&self) -> Vec<u32> {
        self.live.values().map(|(c, _)| c.id()).collect()
    }

    /// `n` live processes started at least `age` ago, chosen at random.
    fn pick(&self, n: usize, age: Duration) -> Vec<usize> {
        let mut keys: Vec<usize> = self
            .live
            .iter()
            .filter(|(_, (_, t))| t.elapsed() >= age)
            .map(|(k, _)| *k)
            .collect();
        fastrand::shuffle(&mut keys);
        keys.truncate(n);
        keys
    }

    /// SIGKILLs `n` random nodes at once and reaps them.
    pub fn kill_random(&mut self, n: usize) -> usize {
        self.crashed();
        let picked = self.pick(n, Duration::ZERO);
        let mut children: Vec<Child> = picked
            .iter()
            .filter_map(|k| self.live.remove(k))
            .map(|(c, _)| c)
            .collect();
        for c in &mut children {
            let _ = c.kill();
        }
        for c in &mut children {
            let _ = c.wait();
        }
        children.len()
    }

    /// Sends SIGTERM (a graceful leave) to `n` random nodes started at least
    /// `age` ago (so they have registered and handle the signal).
    pub fn term_random(&mut self, n: usize, age: Duration) -> usize {
        self.crashed();
        let picked = self.pick(n, age);
        let children: Vec<Child> = picked
            .iter()
            .filter_map(|k| self.live.remove(k))
            .map(|(c, _)| c)
            .collect();
        terminate(&children.iter().map(Child::id).collect::<Vec<_>>());
        let left = children.len();
        self.leaving.extend(children);
        self.reap();
        left
    }

    /// Reaps leaving processes that exited.
    pub fn reap(&mut self) {
        self.leaving
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// Live processes that exited by themselves since the last call (a
    /// failure), with the tail of their logs; all of them stay in `crashes`.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let logs = self.logs.clone();
        self.live.retain(|k, (c, _)| match c.try_wait() {
            Ok(Some(status)) => {
                out.push(format!(
                    "node process {k} exited ({status}): {}",
                    tail(&logs.join(format!("node-{k}.log")))
                ));
                false
            }
            _ => true,
        });
        self.crashes.extend(out.iter().cloned());
        out
    }

    /// Stops every node: SIGTERM, then SIGKILL what is left after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        terminate(&self.pids());
        self.leaving.extend(self.live.drain().map(|(_, (c, _))| c));
        let deadline = Instant::now() + grace;
        while !self.leaving.is_empty() && Instant::now() < deadline {
            self.reap();
            std::thread::sleep(Duration::from_millis(50));
        }
        for c in &mut self.leaving {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.leaving.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for c in self
            .live
            .values_mut()
            .map(|(c, _)| c)
            .chain(self.leaving.iter_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends SIGTERM to `pids` (through kill(1): the workspace forbids `unsafe`).
fn terminate(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last line of a log file.
pub fn tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

/// CPU time (user + system) of a process so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, 100 on every Linux architecture we run on.
    Some(ticks as f64 / 100.0)
}

/// Resident memory of a process, in bytes (`VmRSS`: it counts the pages of
/// the binary every node process shares).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// A process's own anonymous memory (heap, stacks, io_uring buffers), in bytes.
pub fn anon_bytes(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/status"), "RssAnon:")
}

/// A process's proportional set size: shared pages divided among the
/// processes sharing them, in bytes.
pub fn pss_bytes(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn kb_field(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPUs used on average by `pids` over `window` (1.0 = one CPU busy).
pub fn cpu_usage(pids: &[u32], window: Duration) -> f64 {
    let before: Vec<Option<f64>> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let t = Instant::now();
    std::thread::sleep(window);
    let secs = t.elapsed().as_secs_f64();
    let used: f64 = pids
        .iter()
        .zip(before)
        .filter_map(|(&p, b)| Some(cpu_secs(p)? - b?))
        .sum();
    used / secs
}
