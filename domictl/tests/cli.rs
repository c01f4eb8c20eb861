//! The `domictl` binary itself: exit codes and the one-line message on
//! stderr. No etcd needed: a port nobody listens on stands for an
//! unreachable one. (The commands against a real etcd are tested through
//! the library in the workspace's `tests/domictl.rs`.)

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn domictl(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_domictl"))
        .args(args)
        .env_remove("DOMI_ETCD_PASSWORD")
        .env_remove("DOMI_ADMIN_TOKEN")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .expect("domictl runs");
    (out, started.elapsed())
}

/// A loopback port nobody listens on (free a moment ago).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unreachable_etcd_fails_at_once_with_one_line() {
    let etcd = format!("http://127.0.0.1:{}", closed_port());
    let (out, took) = domictl(&["--etcd", &etcd, "--cluster", "x", "nodes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("domictl: etcd unreachable: "), "{err}");
    assert!(err.contains(&etcd), "names the endpoint: {err}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn invalid_settings_and_usage_exit_2() {
    let (out, _) = domictl(&["--etcd", "https://127.0.0.1:1", "nodes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("domictl: invalid settings: "), "{err}");
    assert!(err.contains("--etcd-ca"), "{err}");

    let (out, _) = domictl(&["--etcd-user", "root", "nodes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DOMI_ETCD_PASSWORD"), "{err}");

    let (out, _) = domictl(&["status"]);
    assert_eq!(out.status.code(), Some(2), "a missing argument");
    let (out, _) = domictl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "nodes", "status", "pause", "resume", "drain", "watch", "request",
    ] {
        assert!(help.contains(word), "{word} in:\n{help}");
    }
}
