//! `/metrics` an operator can graph: per-channel request and handler
//! duration histograms whose counts equal the requests made, outcomes per
//! channel and code, per-peer state; the whole exposition passes
//! `promtool check metrics` on live nodes after traffic.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::procs::http;
use common::{small, SETTLE};
use domi::{BusError, Channel, Handler};

const ECHO: Channel = Channel(50);
const LATE: Channel = Channel(51);
const T: Duration = Duration::from_secs(5);

/// The value of the sample `name{labels}` (labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus) is installed by `make setup`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn histograms_count_every_request_and_promtool_accepts_the_exposition() {
    let http_addr = "127.0.0.1:0".parse().unwrap();
    let server = small("server")
        .http(http_addr)
        .subscribe(
            ECHO,
            Handler::sync(|req| {
                if req.expects_reply() {
                    let _ = req.reply(req.payload());
                }
            }),
        )
        .subscribe(
            LATE,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                let _ = req.reply_error(7, "no");
            }),
        )
        .start()
        .unwrap();
    let client = small("client")
        .http(http_addr)
        .peer(server.local_addr())
        .start()
        .unwrap();
    client.wait_for_provider(LATE, SETTLE).unwrap();

    for i in 0..37u8 {
        assert_eq!(client.request(ECHO, &[i], T).unwrap(), [i]);
    }
    for _ in 0..3 {
        let r = client.request(LATE, b"x", T);
        assert!(
            matches!(r, Err(BusError::Application { code: 7, .. })),
            "{r:?}"
        );
    }
    for _ in 0..5 {
        client.notify(ECHO, b"one-way").unwrap();
    }
    let r = client.request(Channel(59), b"x", T);
    assert!(matches!(r, Err(BusError::NoProvider { .. })), "{r:?}");
    common::wait_until("the one-way messages handled", SETTLE, || {
        server.stats().handled == 37 + 3 + 5
    });

    let (status, _, caller) = http(client.http_addr().unwrap(), "GET", "/metrics", None);
    assert_eq!(status, 200);
    let (_, _, served) = http(server.http_addr().unwrap(), "GET", "/metrics", None);

    // Caller side: one observation per request, by channel.
    let count = |text: &str, h: &str, ch: u16| {
        sample(
            text,
            &format!("domi_{h}_duration_seconds_count{{channel=\"{ch}\"}}"),
        )
    };
    assert_eq!(count(&caller, "request", 50), Some(37.0));
    assert_eq!(count(&caller, "request", 51), Some(3.0));
    assert_eq!(count(&caller, "request", 59), Some(1.0));
    assert_eq!(
        sample(
            &caller,
            "domi_request_duration_seconds_bucket{channel=\"51\",le=\"+Inf\"}"
        ),
        Some(3.0)
    );
    // The async handler slept 20 ms: none of its requests took under 10 ms.
    assert_eq!(
        sample(
            &caller,
            "domi_request_duration_seconds_bucket{channel=\"51\",le=\"0.01\"}"
        ),
        Some(0.0)
    );
    let outcome = |ch: u16, code: &str| {
        sample(
            &caller,
            &format!("domi_requests_total{{channel=\"{ch}\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(outcome(50, "ok"), Some(37.0));
    assert_eq!(outcome(51, "application"), Some(3.0));
    assert_eq!(outcome(59, "no_provider"), Some(1.0));

    // Server side: one observation per handler run, one-way included.
    assert_eq!(count(&served, "handler", 50), Some(42.0));
    assert_eq!(count(&served, "handler", 51), Some(3.0));
    let sum = sample(&served, "domi_handler_duration_seconds_sum{channel=\"51\"}").unwrap();
    assert!(sum >= 0.06, "three 20 ms handler runs took {sum} s");

    // Per-peer state, real help texts.
    let peer = format!(
        "domi_peer_connected{{peer=\"{}\",name=\"server\"}}",
        server.id().get()
    );
    assert_eq!(sample(&caller, &peer), Some(1.0));
    assert!(caller.contains("# HELP domi_frames_in_total Frames received."));
    assert!(!caller.contains("Counter "), "generated help text left");

    promtool_accepts(&caller);
    promtool_accepts(&served);

    // Every series the Grafana dashboard graphs exists (rate limits only
    // once a limit is set).
    let dashboard = include_str!("../docs/grafana-domi.json");
    let both = format!("{caller}{served}");
    for name in dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("domi_") && *w != "domi_rate_limited_total")
    {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            both.contains(&format!("# HELP {family} ")),
            "the dashboard graphs {name}, which no node exports"
        );
    }
}
