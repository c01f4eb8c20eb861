//! End-to-end test of the `server` and `client` examples as separate
//! processes over loopback: two servers, one client driving load at both;
//! and of the `stringsvc` example (typed protobuf messages), as one process.
//!
//! Cargo does not build examples for integration tests, so the test builds
//! them itself (`cargo build --example server --example client --example
//! stringsvc`, same profile) and runs the binaries from the target directory.
//! Every wait has a deadline; nothing sleeps "long enough".

mod common;

use std::net::TcpListener;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::procs::*;

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

    // One task per request in flight, then one request window.
    for (id, window) in [("3", false), ("4", true)] {
        let mut client = example("client");
        client.args(["--node-id", id]);
        if window {
            client.arg("--window");
        }
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
                "client (window: {window}) {}; stdout:\n{}\nstderr:\n{}\nserver-a stderr:\n{}\nserver-b stderr:\n{}",
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

#[test]
fn stringsvc_answers_and_reports_empty_input() {
    let mut svc = example("stringsvc");
    svc.args(["Hello, wörld", ""]);
    let run = run_with_deadline(svc, CLIENT_RUN);
    assert!(
        run.status.success(),
        "stringsvc {}; stdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            r#"uppercase("Hello, wörld") = "HELLO, WÖRLD""#,
            r#"count("Hello, wörld") = 12"#,
            r#"uppercase("") failed: empty string (code 1)"#,
            r#"count("") = 0"#,
        ],
        "stderr:\n{}",
        run.stderr
    );
}

/// The `tracing` example (built with the others) checks its own trace and
/// exits non-zero on a broken one; this also reads what it printed.
#[test]
fn tracing_exports_one_trace_across_three_nodes() {
    let run = run_with_deadline(example("tracing"), CLIENT_RUN);
    let context = || {
        format!(
            "tracing {}; stdout:\n{}\nstderr:\n{}",
            run.status, run.stdout, run.stderr
        )
    };
    assert!(run.status.success(), "{}", context());
    let summary = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("one trace crossing three nodes: "))
        .unwrap_or_else(|| panic!("no summary line; {}", context()));
    let trace = summary.split(';').next().unwrap_or_default();
    assert_eq!(trace.len(), 32, "a trace id expected; {}", context());
    assert!(
        summary.ends_with(
            "checkout → domi.request (client) → domi.handler (front) → \
             domi.request (front) → domi.handler (back)"
        ),
        "{}",
        context()
    );
    // The stdout exporter printed every span of that trace.
    let exported = run
        .stdout
        .lines()
        .filter(|l| l.trim() == format!("TraceId      : {trace}"))
        .count();
    assert_eq!(exported, 5, "{}", context());
}
