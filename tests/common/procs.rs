//! Running the `server` and `client` examples as child processes.
//!
//! Cargo does not build examples for integration tests, so these helpers
//! build them (`cargo build --example server --example client --example
//! stringsvc`, same profile)
//! and run the binaries from the target directory. Every wait has a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Deadline for a server to print its `listening` line.
pub const STARTUP: Duration = Duration::from_secs(30);
/// Deadline for the load run of the client.
pub const CLIENT_RUN: Duration = Duration::from_secs(60);
/// Deadline for the client to give up on an unreachable peer.
pub const CLIENT_FAIL: Duration = Duration::from_secs(30);

/// Builds the examples once per test process; returns the directory
/// holding their binaries.
pub fn examples_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_examples(&["server", "client", "stringsvc", "tracing"]))
}

/// The `chat` example (built on first use, apart from the others: its
/// web dependencies are only needed by the tests that run it).
pub fn chat_example() -> Command {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| build_examples(&["chat"]));
    let path = dir.join(format!("chat{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    Command::new(path)
}

/// Builds `names` (same profile as this test); the directory of their binaries.
fn build_examples(names: &[&str]) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let release = !cfg!(debug_assertions);
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&manifest).arg("build");
    for name in names {
        cmd.args(["--example", name]);
    }
    // The variables cargo sets for this test run are not the build's:
    // some build scripts (ring's) rebuild when they change, and the next
    // `cargo test` would rebuild again.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the examples failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => manifest.join(dir), // join keeps an absolute dir as is
        None => manifest.join("target"),
    };
    target
        .join(if release { "release" } else { "debug" })
        .join("examples")
}

pub fn example(name: &str) -> Command {
    Command::new(example_path(name))
}

/// Where an example's binary is (built on first use).
pub fn example_path(name: &str) -> PathBuf {
    let path = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Collects a child's pipe in a thread, to show in failure messages.
pub fn drain(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let t = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
            t.push_str(&line);
            t.push('\n');
        }
    });
    text
}

pub fn read(text: &Mutex<String>) -> String {
    text.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A running `server` example; killed and reaped on drop.
pub struct Server {
    /// The child process.
    pub child: Child,
    /// Its bus address.
    pub addr: SocketAddr,
    /// Its node id.
    pub id: u16,
    /// What it logged.
    pub stderr: Arc<Mutex<String>>,
    /// Its admin address, if it serves one.
    pub http: Option<SocketAddr>,
}

impl Server {
    /// Starts a server on a free loopback port and waits for its
    /// `listening <addr> id <n>` line.
    pub fn start(name: &str, node_id: u16) -> Server {
        Server::start_with(name, &["--node-id", &node_id.to_string()])
    }

    /// Starts a server with extra flags (e.g. `--etcd URL`).
    pub fn start_with(name: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--tcp", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Server::start_cmd(name, example("server"), &args)
    }

    /// Starts a server from `cmd` (the example itself, or a wrapper such as
    /// `ip netns exec NS <example>`) with `args`.
    pub fn start_cmd(name: &str, mut cmd: Command, args: &[&str]) -> Server {
        let mut child = cmd
            .args(["--name", name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        // Wrap the child first: a failed assertion below still kills it.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            id: 0,
            stderr,
            http: None,
        };
        let line = match rx.recv_timeout(STARTUP) {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "server {name} exited before listening ({:?}); stderr:\n{}",
                server.child.try_wait(),
                read(&server.stderr)
            ),
            Err(_) => panic!(
                "server {name} printed nothing within {STARTUP:?}; stderr:\n{}",
                read(&server.stderr)
            ),
        };
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["listening", addr, "id", id, "http", http] => {
                server.addr = addr.parse().expect("an address");
                server.id = id.parse().expect("a node id");
                server.http = http.parse().ok();
            }
            _ => panic!("unexpected first line from server {name}: {line:?}"),
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Sends a signal (e.g. "TERM") to the server process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
        if sig == "STOP" {
            // `kill` returns once the signal is sent; a thread running on
            // another CPU stops a moment later (and may answer one more
            // request meanwhile). Frozen means every thread stopped.
            super::wait_until("every thread to stop", Duration::from_secs(10), || {
                self.all_threads_stopped()
            });
        }
    }

    /// Whether every thread of the process is stopped (state `T`).
    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|st| {
                    // The state follows the command name, which is in parentheses.
                    st.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s == "T"))
                })
                .unwrap_or(true) // a thread that just exited is not running
        })
    }

    /// Waits for the process to exit within `within`; its exit code.
    pub fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A minimal HTTP/1.1 exchange: (status, headers lowercased, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    try_http(addr, method, path, token).expect("the admin answers with a status line")
}

/// An admin answer: (status, headers lowercased, body).
pub type HttpAnswer = (u16, Vec<(String, String)>, String);

/// Like [`http`], but `None` when the admin port refuses the connection or
/// closes it without an answer (the process is gone or going).
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<HttpAnswer> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    parse_http_answer(&raw)
}

/// Splits a raw HTTP answer into (status, headers lowercased, body); `None`
/// without a status line.
pub fn parse_http_answer(raw: &str) -> Option<HttpAnswer> {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, headers, body.to_owned()))
}

/// The resident set size of process `pid` (`"self"` for this one), in bytes.
pub fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a VmRSS line")
        * 1024
}

/// The value of the unlabelled sample `name` in a Prometheus text body.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
