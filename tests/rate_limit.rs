//! Server-side rate limits: a limited provider answers `RateLimited` over
//! its budget and its callers fail over to the other provider within the
//! same request (no error reaches them); one-way messages over the limit
//! are dropped and counted; a limit changes on a running node; the
//! per-channel counter appears in `/metrics`.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{burst, pong_server, small, wait_until, SETTLE};
use domi::{BusError, Channel, ErrorCode, Handler, RateLimit};

const CH: Channel = Channel(70);
const T: Duration = Duration::from_secs(5);

#[test]
fn callers_fail_over_and_the_limited_node_stays_within_its_budget() {
    // `a` may start 1,000 handlers a second (burst 50); `b` is unlimited.
    let (a, got_a) = {
        let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = handled.clone();
        let node = small("limited")
            .rate_limit(CH, 1000, 50)
            .subscribe(
                CH,
                Handler::sync(move |req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let _ = req.reply(b"a");
                }),
            )
            .start()
            .unwrap();
        (node, handled)
    };
    let (b, got_b) = pong_server("free", CH);
    let client = small("client")
        .peers([a.local_addr(), b.local_addr()])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();

    // Bursts of 256 requests at once for about a second.
    let started = Instant::now();
    let mut results = Vec::new();
    while started.elapsed() < Duration::from_secs(1) {
        results.extend(burst(&client, 0, CH, 256, T).0);
    }
    let elapsed = started.elapsed();
    let errors: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        errors.is_empty(),
        "callers saw errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    let (na, nb) = (got_a.load(Ordering::SeqCst), got_b.load(Ordering::SeqCst));
    assert_eq!(na + nb, results.len());
    let budget = 1000.0 * elapsed.as_secs_f64() + 50.0;
    assert!(
        (na as f64) <= 1.2 * budget,
        "the limited node handled {na} in {elapsed:?} (budget {budget:.0})"
    );
    assert!(nb > na, "the rest went to the free provider ({na} vs {nb})");
    assert!(
        a.stats().rate_limited > 0,
        "requests were refused over the limit"
    );
    let limits = a.rate_limits();
    assert_eq!(limits.len(), 1);
    assert_eq!(
        limits[0].1,
        RateLimit {
            per_second: 1000,
            burst: 50
        }
    );
    assert_eq!(limits[0].2, a.stats().rate_limited);
}

#[test]
fn alone_over_its_limit_a_provider_answers_rate_limited_and_drops_one_way() {
    let (server, got) = pong_server("only", CH);
    server
        .set_rate_limit(
            CH,
            Some(RateLimit {
                per_second: 1,
                burst: 2,
            }),
        )
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    // One token comes back each second: a loaded machine taking longer
    // than that over the steps below gets that many more through.
    let started = Instant::now();
    assert!(client.request(CH, b"1", T).is_ok());
    assert!(client.request(CH, b"2", T).is_ok());
    let third = client.request(CH, b"3", T);
    if started.elapsed() < Duration::from_secs(1) {
        assert!(
            matches!(
                third,
                Err(BusError::Remote {
                    code: ErrorCode::RateLimited,
                    ..
                })
            ),
            "{third:?}"
        );
    }
    // One-way messages over the limit are dropped and counted.
    let before = server.stats().rate_limited;
    for _ in 0..5 {
        client.notify(CH, b"x").unwrap();
    }
    let refills = || started.elapsed().as_secs() as usize;
    wait_until("the one-way messages counted", T, || {
        server.stats().rate_limited as usize + refills() >= before as usize + 5
    });
    let ran = got.load(Ordering::SeqCst);
    assert!(
        ran <= 2 + refills(),
        "{ran} ran in {:?} (burst 2, 1/s)",
        started.elapsed()
    );

    // Lifted on the running node: served again.
    server.set_rate_limit(CH, None).unwrap();
    assert_eq!(client.request(CH, b"4", T).unwrap(), b"pong");
    assert!(server.rate_limits().is_empty());
    // A zero limit is refused.
    assert!(server
        .set_rate_limit(
            CH,
            Some(RateLimit {
                per_second: 0,
                burst: 1
            })
        )
        .is_err());
}

#[test]
fn the_node_wide_limit_covers_every_channel() {
    const OTHER: Channel = Channel(71);
    let pong = |req: &mut domi::Request<'_>| {
        let _ = req.reply(b"pong");
    };
    // Burst 3 at 1/s for the whole node, whatever the channel.
    let server = small("server")
        .node_rate_limit(1, 3)
        .subscribe(CH, Handler::sync(pong))
        .subscribe(OTHER, Handler::sync(pong))
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(OTHER, SETTLE).unwrap();
    let started = Instant::now();
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..10 {
        let ch = if i % 2 == 0 { CH } else { OTHER };
        match client.request(ch, b"x", T) {
            Ok(_) => ok += 1,
            Err(BusError::Remote {
                code: ErrorCode::RateLimited,
                ..
            }) => limited += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    // One token comes back each second (a slow machine gets more through).
    let refills = started.elapsed().as_secs() as usize;
    assert!(ok >= 3 && ok <= 3 + refills, "{ok} admitted");
    assert_eq!(ok + limited, 10);
    let (limit, counted) = server.node_rate_limit().unwrap();
    assert_eq!(
        limit,
        RateLimit {
            per_second: 1,
            burst: 3
        }
    );
    assert_eq!(counted as usize, limited);
    // Lifted on the running node: both channels served again.
    server.set_node_rate_limit(None).unwrap();
    assert!(client.request(CH, b"x", T).is_ok());
    assert!(client.request(OTHER, b"x", T).is_ok());
    assert!(server.node_rate_limit().is_none());
    assert!(matches!(
        small("bad").node_rate_limit(0, 1).start(),
        Err(domi::StartError::Core(domi_core::StartError::Config(
            domi::ConfigError::RateLimit(domi::InvalidRateLimit { channel: None, .. })
        )))
    ));
}

#[test]
fn a_zero_limit_does_not_start() {
    let err = small("bad").rate_limit(CH, 10, 0).start();
    assert!(matches!(
        err,
        Err(domi::StartError::Core(domi_core::StartError::Config(
            domi::ConfigError::RateLimit(_)
        )))
    ));
}

#[test]
fn the_per_channel_counter_is_in_metrics() {
    let http = small("admin")
        .http("127.0.0.1:0".parse().unwrap())
        .rate_limit(CH, 1, 1)
        .subscribe(
            CH,
            Handler::sync(|req| {
                let _ = req.reply(b"ok");
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(http.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    let _ = client.request(CH, b"1", T);
    let _ = client.request(CH, b"2", T);
    let admin = http.http_addr().unwrap();
    let (_, _, body) = common::procs::http(admin, "GET", "/metrics", None);
    assert!(
        body.contains("domi_rate_limited_total{channel=\"70\"} 1"),
        "{body}"
    );
}
