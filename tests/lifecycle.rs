//! The lifecycle over real processes and a real etcd: the admin endpoints,
//! pause and resume under load, SIGTERM, SIGINT, SIGHUP and `POST /stop`
//! drains, `/health` during a drain, the drain deadline, and a second signal
//! cutting a drain short.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::procs::{http, try_http, Server};
use common::{load, wait_until};
use domi::{BusError, Channel, ErrorCode, Node};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(10);

fn server(etcd: &Etcd, name: &str, cluster: &str, extra: &[&str]) -> Server {
    let ep = etcd.endpoint();
    let mut args = vec![
        "--etcd",
        ep.as_str(),
        "--cluster",
        cluster,
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Server::start_with(name, &args)
}

fn client(etcd: &Etcd, cluster: &str) -> Node {
    Node::builder("client")
        .shards(1)
        .small()
        .cluster(cluster)
        .etcd([etcd.endpoint()])
        .start()
        .unwrap()
}

fn status(s: &Server) -> serde_json::Value {
    let (code, _, body) = http(s.http.unwrap(), "GET", "/status", None);
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("status is JSON")
}

fn counter(s: &Server, name: &str) -> u64 {
    status(s)["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn handled(s: &Server) -> u64 {
    counter(s, "handled")
}

#[test]
fn admin_endpoints_answer_with_the_right_codes_and_bodies() {
    let etcd = Etcd::start();
    let mut s = server(&etcd, "admin", "adm", &["--admin-token", "s3cret"]);
    let addr = s.http.expect("an admin address");

    let st = status(&s);
    for field in [
        "id", "name", "cluster", "state", "channels", "shards", "uptime_s", "peers", "counters",
    ] {
        assert!(!st[field].is_null(), "{field} missing from {st}");
    }
    assert_eq!(st["state"], "serving");
    assert_eq!(st["cluster"], "adm");
    assert_eq!(st["channels"], serde_json::json!([50]));
    for c in [
        "frames_in",
        "frames_out",
        "bytes_in",
        "bytes_out",
        "handled",
        "replies",
        "refused_paused",
        "bad_closes",
    ] {
        assert!(st["counters"][c].is_u64(), "counter {c} missing");
    }

    let (code, headers, text) = http(addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/plain")));
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(samples.len() > 10);
    for line in samples {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(typed.contains(&name), "{name} has no # TYPE");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample {line}");
    }

    assert_eq!(http(addr, "GET", "/health", None).0, 200);
    let (code, _, body) = http(addr, "GET", "/nope", None);
    assert_eq!(code, 404);
    assert!(body.contains("error"));
    let (code, headers, _) = http(addr, "GET", "/stop", None);
    assert_eq!(code, 405);
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "POST"));
    assert_eq!(http(addr, "POST", "/status", None).0, 405);
    assert_eq!(http(addr, "POST", "/pause", None).0, 401);
    assert_eq!(http(addr, "POST", "/pause", Some("wrong")).0, 401);
    assert_eq!(http(addr, "POST", "/pause", Some("s3cret")).0, 200);
    assert_eq!(status(&s)["state"], "paused");
    assert_eq!(
        http(addr, "GET", "/health", None).0,
        200,
        "paused is healthy"
    );
    wait_until("etcd to show paused", T, || {
        etcd.get_prefix("/domi/adm/nodes/")
            .iter()
            .any(|(_, v)| v.contains("\"paused\""))
    });
    assert_eq!(http(addr, "POST", "/resume", Some("s3cret")).0, 200);
    assert_eq!(status(&s)["state"], "serving");
    assert_eq!(http(addr, "POST", "/stop", None).0, 401);
    assert_eq!(http(addr, "POST", "/stop", Some("s3cret")).0, 202);
    assert_eq!(s.exit_code(T), Some(0));
    assert!(
        etcd.get_prefix("/domi/adm/nodes/").is_empty(),
        "keys gone at exit"
    );
}

#[test]
fn a_paused_node_gets_no_new_requests_and_callers_see_no_errors() {
    let etcd = Etcd::start();
    let a = server(&etcd, "a", "pause", &[]);
    let _b = server(&etcd, "b", "pause", &[]);
    let c = client(&etcd, "pause");
    c.wait_for_providers(CH, 2, T).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&c, CH, 16, T, stop.clone());
    wait_until("load to reach a", T, || handled(&a) > 200);
    assert_eq!(counter(&a, "refused_paused"), 0);

    assert_eq!(http(a.http.unwrap(), "POST", "/pause", None).0, 200);
    // From here on a refuses every request before its handler counts it.
    let frozen = handled(&a);
    wait_until("the client to drop a from rotation", T, || {
        c.peers().providers(CH).len() == 1
    });
    let sent = c.stats().sent;
    wait_until("more load on b", T, || c.stats().sent > sent + 2_000);
    assert_eq!(
        handled(&a),
        frozen,
        "no request reaches a paused node's handler"
    );
    // Requests already routed to a when it paused were refused with Paused
    // (and retried on b: the client sees no error, below).
    let refused = counter(&a, "refused_paused");
    assert!(
        refused > 0,
        "no request reached a while the pause propagated"
    );
    let sent = c.stats().sent;
    wait_until("more load on b", T, || c.stats().sent > sent + 2_000);
    assert_eq!(handled(&a), frozen);
    assert_eq!(
        counter(&a, "refused_paused"),
        refused,
        "once the pause is known nothing is routed to a"
    );

    assert_eq!(http(a.http.unwrap(), "POST", "/resume", None).0, 200);
    wait_until("a to take its share again", T, || {
        handled(&a) > frozen + 200
    });
    stop.store(true, Ordering::Relaxed);
    let results = running.join_timeout(T).expect("load stops");
    let errors: Vec<_> = results.iter().filter(|r| r.2.is_err()).collect();
    assert!(
        errors.is_empty(),
        "the client saw errors: {:?}",
        &errors[..errors.len().min(3)]
    );
    // Each refusal was retried on the next provider inside its request.
    let retries = c.stats().sent - results.len() as u64;
    assert!(
        retries >= refused,
        "{refused} refusals but only {retries} retries"
    );
    assert_eq!(counter(&a, "refused_paused"), refused);
}

fn drain_under_load(stop_by_http: bool) {
    let etcd = Etcd::start();
    let mut a = server(&etcd, "a", "drain", &["--delay-ms", "50"]);
    let _b = server(&etcd, "b", "drain", &["--delay-ms", "50"]);
    let c = client(&etcd, "drain");
    c.wait_for_providers(CH, 2, T).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&c, CH, 32, T, stop.clone());
    wait_until("load to reach a", T, || handled(&a) > 50);

    let asked = Instant::now();
    if stop_by_http {
        assert_eq!(http(a.http.unwrap(), "POST", "/stop", None).0, 202);
    } else {
        a.signal("TERM");
    }
    let code = a.exit_code(T);
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "a drained and exited 0");
    assert!(took < Duration::from_secs(4), "drain took {took:?}");
    let key = format!("/domi/drain/nodes/{}", a.id);
    assert!(
        etcd.get_prefix(&key).is_empty(),
        "a's keys are gone at exit, not after the TTL"
    );

    let sent = c.stats().sent;
    wait_until("load to go on with b", T, || c.stats().sent > sent + 100);
    stop.store(true, Ordering::Relaxed);
    let results = running.join_timeout(T).expect("no request hangs");
    assert!(results.len() > 100);
    for (_, took, r) in &results {
        assert!(*took < T, "a request took {took:?}");
        match r {
            Ok(reply) => assert_eq!(reply, b"pong"),
            Err(e) => assert!(
                matches!(
                    e,
                    BusError::PeerLost { .. }
                        | BusError::Remote {
                            code: ErrorCode::ShuttingDown,
                            ..
                        }
                ),
                "unexpected error {e:?}"
            ),
        }
    }
    let lost = results.iter().filter(|r| r.2.is_err()).count();
    assert!(
        lost * 100 <= results.len(),
        "too many failures in the drain: {lost}/{}",
        results.len()
    );
}

#[test]
fn sigterm_under_load_drains_and_exits_zero() {
    drain_under_load(false);
}

#[test]
fn post_stop_behaves_like_sigterm() {
    drain_under_load(true);
}

#[test]
fn a_handler_that_never_finishes_makes_the_drain_give_up_with_code_one() {
    let etcd = Etcd::start();
    let mut s = server(
        &etcd,
        "stuck",
        "stuck",
        &["--delay-ms", "600000", "--drain-ms", "500"],
    );
    let c = client(&etcd, "stuck");
    c.wait_for_provider(CH, T).unwrap();
    let pending = c.request_async(CH, b"x", Duration::from_secs(30));
    wait_until("the request to reach its handler", T, || handled(&s) == 1);
    let asked = Instant::now();
    s.signal("TERM");
    assert_eq!(s.exit_code(T), Some(1), "exit 1 after the deadline");
    assert!(asked.elapsed() >= Duration::from_millis(500));
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        futures_lite::future::block_on(pending),
        Err(BusError::PeerLost { .. })
    ));
}

#[test]
fn an_empty_admin_token_is_refused_at_start() {
    let r = Node::builder("n")
        .shards(1)
        .small()
        .http("127.0.0.1:0".parse().unwrap())
        .admin_token(" ")
        .start();
    assert!(matches!(
        r,
        Err(domi::StartError::Admin(domi_admin::AdminError::EmptyToken))
    ));
}

/// A `server` whose handler takes 3 s, one request in its handler, and the
/// moment that handler was seen running (it finishes 3 s after it started,
/// so at least 3 s after this moment).
fn slow_node_with_a_request_in_flight(
    etcd: &Etcd,
    cluster: &str,
) -> (
    Server,
    Node,
    impl std::future::Future<Output = Result<Vec<u8>, BusError>>,
    Instant,
) {
    let s = server(etcd, "slow", cluster, &["--delay-ms", "3000"]);
    let c = client(etcd, cluster);
    c.wait_for_provider(CH, T).unwrap();
    assert_eq!(http(s.http.unwrap(), "GET", "/health", None).0, 200);
    let pending = c.request_async(CH, b"x", T);
    wait_until("the request to reach its handler", T, || handled(&s) == 1);
    (s, c, pending, Instant::now())
}

#[test]
fn health_answers_503_while_draining() {
    let etcd = Etcd::start();
    let (mut s, _c, pending, running) = slow_node_with_a_request_in_flight(&etcd, "health");
    let addr = s.http.unwrap();
    assert_eq!(http(addr, "POST", "/stop", None).0, 202);
    // The handler still runs for the next 2 s at least: the node is draining.
    let mut answers = 0;
    while running.elapsed() < Duration::from_secs(2) {
        let (code, _, body) = http(addr, "GET", "/health", None);
        assert_eq!(
            code, 503,
            "health answer {answers} during the drain: {body:?}"
        );
        assert!(body.contains("draining"), "{body}");
        answers += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(answers > 0, "no /health answer during the drain");
    assert_eq!(s.exit_code(T), Some(0));
    // The drain let the in-flight handler finish and its reply leave.
    assert_eq!(
        futures_lite::future::block_on(pending).expect("the in-flight request is answered"),
        b"pong"
    );
}

#[test]
fn health_answers_503_or_nothing_until_exit() {
    let etcd = Etcd::start();
    let (mut s, _c, _pending, _) = slow_node_with_a_request_in_flight(&etcd, "health2");
    let addr = s.http.unwrap();
    assert_eq!(http(addr, "POST", "/stop", None).0, 202);
    let deadline = Instant::now() + T;
    // Several pollers, so that some /health is being answered when the admin
    // server shuts down at the end of the drain: each gets 503 or a closed
    // connection, never anything else.
    let pollers: Vec<_> = (0..4)
        .map(|poller| {
            std::thread::spawn(move || {
                let mut answers = 0;
                while let Some((code, _, body)) = try_http(addr, "GET", "/health", None) {
                    assert_eq!(
                        code, 503,
                        "poller {poller}, health answer {answers} during the drain: {body:?}"
                    );
                    answers += 1;
                    assert!(Instant::now() < deadline, "the drain did not end");
                    std::thread::sleep(Duration::from_millis(2));
                }
                answers
            })
        })
        .collect();
    let answers: u32 = pollers.into_iter().map(|p| p.join().unwrap()).sum();
    assert!(answers > 0, "no /health answer during the drain");
    assert_eq!(s.exit_code(T), Some(0));
}

fn a_signal_drains(sig: &str) {
    let etcd = Etcd::start();
    let cluster = format!("sig{}", sig.to_ascii_lowercase());
    let mut s = server(&etcd, "sig", &cluster, &["--delay-ms", "1000"]);
    let c = client(&etcd, &cluster);
    c.wait_for_provider(CH, T).unwrap();
    let key = format!("/domi/{cluster}/nodes/{}", s.id);
    assert_eq!(etcd.get_prefix(&key).len(), 1);
    let pending = c.request_async(CH, b"x", T);
    wait_until("the request to reach its handler", T, || handled(&s) == 1);

    s.signal(sig);
    wait_until("the drain to start", T, || {
        try_http(s.http.unwrap(), "GET", "/health", None).is_none_or(|(code, _, _)| code == 503)
    });
    assert_eq!(s.exit_code(T), Some(0), "SIG{sig} drains and exits 0");
    assert!(
        etcd.get_prefix(&key).is_empty(),
        "the keys are gone at exit, not after the TTL"
    );
    assert_eq!(
        futures_lite::future::block_on(pending).expect("the in-flight request is answered"),
        b"pong",
        "SIG{sig} let the in-flight handler finish"
    );
}

#[test]
fn sigint_drains_like_sigterm() {
    a_signal_drains("INT");
}

#[test]
fn sighup_drains_like_sigterm() {
    a_signal_drains("HUP");
}

#[test]
fn a_second_signal_during_a_drain_exits_at_once() {
    let etcd = Etcd::start();
    // A handler that never finishes and a drain deadline far away.
    let mut s = server(
        &etcd,
        "twice",
        "twice",
        &["--delay-ms", "600000", "--drain-ms", "60000"],
    );
    let addr = s.http.unwrap();
    let c = client(&etcd, "twice");
    c.wait_for_provider(CH, T).unwrap();
    let _pending = c.request_async(CH, b"x", Duration::from_secs(120));
    wait_until("the request to reach its handler", T, || handled(&s) == 1);

    s.signal("TERM");
    wait_until("the drain to start", T, || {
        http(addr, "GET", "/health", None).0 == 503
    });
    let asked = Instant::now();
    s.signal("TERM");
    let code = s.exit_code(T);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "exited {:?} after the second signal",
        asked.elapsed()
    );
    assert_eq!(code, Some(1), "a second signal exits at once with code 1");
}
