//! End-to-end test of the `server` and `client` examples as separate
//! processes over loopback: two servers, one client driving load at both.
//!
//! Cargo does not build examples for integration tests, so the test builds
//! them itself (`cargo build --example server --example client`, same
//! profile) and runs the binaries from the target directory. Every wait has a
//! deadline; nothing sleeps "long enough".

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Deadline for a server to print its `listening` line.
const STARTUP: Duration = Duration::from_secs(30);
/// Deadline for the load run of the client.
const CLIENT_RUN: Duration = Duration::from_secs(60);
/// Deadline for the client to give up on an unreachable peer.
const CLIENT_FAIL: Duration = Duration::from_secs(30);

/// Builds the two examples once per test process; returns the directory
/// holding their binaries.
fn examples_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let release = !cfg!(debug_assertions);
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&manifest)
            .args(["build", "--example", "server", "--example", "client"]);
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
    })
}

fn example(name: &str) -> Command {
    let path = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    Command::new(path)
}

/// Collects a child's pipe in a thread, to show in failure messages.
fn drain(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
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

fn read(text: &Mutex<String>) -> String {
    text.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A running `server` example; killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    id: u16,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts a server on a free loopback port and waits for its
    /// `listening <addr> id <n>` line.
    fn start(name: &str, node_id: u16) -> Server {
        let mut child = example("server")
            .args(["--name", name, "--tcp", "127.0.0.1:0"])
            .args(["--node-id", &node_id.to_string()])
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
            ["listening", addr, "id", id] => {
                server.addr = addr.parse().expect("an address");
                server.id = id.parse().expect("a node id");
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

/// What a finished child printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion, killing it and panicking after `within`.
fn run_with_deadline(mut cmd: Command, within: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "client still running after {within:?}; stdout:\n{}\nstderr:\n{}",
                read(&stdout),
                read(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes close at exit; give the drain threads a moment to finish.
    let settle = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stdout) > 1 || Arc::strong_count(&stderr) > 1 {
        if Instant::now() >= settle {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Finished {
        status,
        stdout: read(&stdout),
        stderr: read(&stderr),
    }
}

#[test]
fn client_drives_two_servers() {
    // Static membership: every node gets a distinct id.
    let a = Server::start("server-a", 1);
    let b = Server::start("server-b", 2);
    assert_eq!((a.id, b.id), (1, 2));

    let mut client = example("client");
    client.args(["--node-id", "3"]);
    client.args([
        "--peer",
        &a.addr.to_string(),
        "--peer",
        &b.addr.to_string(),
        "--count",
        "2000",
        "--concurrency",
        "8",
        "--json",
    ]);
    let run = run_with_deadline(client, CLIENT_RUN);
    let context = || {
        format!(
            "client {}; stdout:\n{}\nstderr:\n{}\nserver-a stderr:\n{}\nserver-b stderr:\n{}",
            run.status,
            run.stdout,
            run.stderr,
            read(&a.stderr),
            read(&b.stderr)
        )
    };
    assert!(run.status.success(), "{}", context());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected; {}", context());
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON summary");
    let int = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
    };
    assert_eq!(int("sent"), 2000, "{v}");
    assert_eq!(int("replies"), 2000, "{v}");
    assert_eq!(int("errors"), 0, "{v}");
    assert!(int("p50_us") <= int("p99_us"), "{v}");
    let per_sec = v["per_sec"].as_f64().expect("per_sec is a number");
    assert!(per_sec > 0.0, "{v}");
}

#[test]
fn client_fails_without_providers() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("local addr").port()
    };
    let mut client = example("client");
    client.args([
        "--peer",
        &format!("127.0.0.1:{port}"),
        "--count",
        "10",
        "--json",
    ]);
    let run = run_with_deadline(client, CLIENT_FAIL);
    assert!(
        !run.status.success(),
        "client succeeded with no server; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.trim().is_empty(),
        "no summary expected: {}",
        run.stdout
    );
}
