//! Circuit breaking on the caller's side: one of two providers (processes)
//! is frozen with SIGSTOP while a client with a 100 ms request timeout keeps
//! 8 requests going. The client's errors stop once the frozen peer's
//! breaker has seen its volume of failures (well before the 2 s silence
//! rule would close the connection); `/status` and `/metrics` show it open;
//! after the peer resumes, the half-open probe succeeds and closes it.
//! With the breakers off the same freeze keeps failing requests past twice
//! what a breaker lets through.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::procs::{http, metric, Server};
use common::{small, wait_until, SETTLE};
use domi::{BreakerConfig, BusError, Channel, Node};

const CH: Channel = Channel(50);
const TIMEOUT: Duration = Duration::from_millis(100);
const THREADS: usize = 8;

/// Every failed request: when it came back, and its error.
type Failures = Arc<Mutex<Vec<(Instant, BusError)>>>;

/// Requests from `THREADS` threads until `stop`: every failure with its
/// time, and the count of answers so far.
fn load(
    client: &Node,
    stop: &Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Failures, Arc<AtomicU64>) {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicU64::new(0));
    let threads = (0..THREADS)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            let (failures, answered) = (failures.clone(), answered.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.request(CH, b"ping", TIMEOUT) {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push((Instant::now(), e)),
                    }
                }
            })
        })
        .collect();
    (threads, failures, answered)
}

/// Two static servers with fixed ids: an id derived from the address can
/// collide with the other's or the client's (1 in 1024 per pair), and a
/// peer whose id is taken is ignored, so the client would never see two
/// providers.
fn two_servers() -> (Server, Server) {
    let a = Server::start_with("a", &["--node-id", "901", "--http", "127.0.0.1:0"]);
    let b = Server::start_with("b", &["--node-id", "902", "--http", "127.0.0.1:0"]);
    (a, b)
}

#[test]
fn a_frozen_provider_is_cut_off_after_the_volume_then_probed_back() {
    let (a, b) = two_servers();
    let client = small("client")
        .http("127.0.0.1:0".parse().unwrap())
        .peers([a.addr, b.addr])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    let admin = client.http_addr().unwrap();
    let volume = BreakerConfig::default().volume as usize;

    let frozen = Instant::now();
    b.signal("STOP");
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, failures, answered) = load(&client, &stop);
    // Open within the volume's failures (8 at a time, 100 ms each).
    wait_until("the breaker to open", Duration::from_secs(3), || {
        client.stats().breaker_opened >= 1
    });
    let seen_open = Instant::now();
    let opened = frozen.elapsed();
    // Requests keep flowing to `a` for a while (6 timeouts' worth, less
    // than the breaker's 2 s sleep), with no new failure.
    let answered_before = answered.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        answered.load(Ordering::Relaxed) > answered_before + 100,
        "the other provider answered meanwhile"
    );
    let (_, _, status) = http(admin, "GET", "/status", None);
    let (_, _, metrics) = http(admin, "GET", "/metrics", None);
    let failed: Vec<(Instant, BusError)> = failures.lock().unwrap().clone();
    let last = failed
        .iter()
        .map(|f| f.0)
        .max()
        .expect("some requests failed");
    assert!(
        failed.len() <= volume + THREADS,
        "{} failures (volume {volume}, {THREADS} in flight): {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        failed
            .iter()
            .all(|f| matches!(f.1, BusError::Timeout { .. })),
        "{failed:?}"
    );
    // Only requests already in flight when it opened failed afterwards.
    let quiet_after = last.duration_since(frozen);
    assert!(
        last <= seen_open + TIMEOUT + Duration::from_millis(200),
        "failures went on until {quiet_after:?} after the freeze (opened after {opened:?})"
    );
    eprintln!(
        "breaker opened {opened:?} after the freeze; {} failures, the last {quiet_after:?} after it",
        failed.len()
    );
    assert!(status.contains(&format!("\"id\":{},", b.id)), "{status}");
    assert!(status.contains("\"breaker\":\"open\""), "{status}");
    assert_eq!(
        metric(&metrics, &format!("domi_breaker_open{{peer=\"{}\"}}", b.id)),
        Some(1.0),
        "{metrics}"
    );

    // Resumed: after the sleep (2 s) one probe goes to `b`, succeeds, and
    // the breaker closes; no request fails meanwhile.
    let before = failures.lock().unwrap().len();
    b.signal("CONT");
    wait_until(
        "the probe to close the breaker",
        Duration::from_secs(6),
        || client.stats().breaker_closed >= 1,
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        failures.lock().unwrap().len(),
        before,
        "no failure after the resume"
    );
    let stats = client.stats();
    assert!(stats.breaker_half_open >= 1);
    let (_, _, metrics) = http(admin, "GET", "/metrics", None);
    assert_eq!(
        metric(&metrics, "domi_breaker_transitions_total{to=\"closed\"}"),
        Some(stats.breaker_closed as f64)
    );
    drop(a);
}

#[test]
fn without_breakers_the_frozen_provider_keeps_failing() {
    let (a, b) = two_servers();
    let client = small("client")
        .no_breaker()
        .peers([a.addr, b.addr])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    let volume = BreakerConfig::default().volume as usize;
    b.signal("STOP");
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, failures, _) = load(&client, &stop);
    wait_until(
        "more failures than a breaker would allow",
        Duration::from_secs(3),
        || failures.lock().unwrap().len() > 2 * (volume + THREADS),
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(client.stats().breaker_opened, 0);
    b.signal("CONT");
    drop(a);
}

#[test]
fn with_every_provider_cut_off_requests_fail_fast_with_circuit_open() {
    let (a, b) = two_servers();
    drop(a);
    let client = small("client")
        .breaker(BreakerConfig {
            volume: 4,
            ..BreakerConfig::default()
        })
        .peer(b.addr)
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    b.signal("STOP");
    for _ in 0..4 {
        let r = client.request(CH, b"x", TIMEOUT);
        assert!(matches!(r, Err(BusError::Timeout { .. })), "{r:?}");
    }
    let started = Instant::now();
    let r = client.request(CH, b"x", TIMEOUT);
    assert!(
        matches!(r, Err(BusError::CircuitOpen { channel }) if channel == CH),
        "{r:?}"
    );
    assert!(started.elapsed() < TIMEOUT, "failed fast");
    b.signal("CONT");
}
