//! A provider killed with SIGKILL under load (nodes as child processes, real
//! etcd): requests in flight to it fail with `PeerLost` at once (the
//! connection resets; none waits for its timeout), requests move to the
//! others within a second, none hangs, and the dead node's key expires with
//! its lease.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::procs::Server;
use common::{load, wait_until};
use domi::{BusError, Channel, Node};

const CH: Channel = Channel(50);

#[test]
fn sigkill_mid_load_fails_over_within_a_second() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let args = ["--etcd", ep.as_str(), "--cluster", "kill"];
    let mut servers: Vec<Server> = (0..3)
        .map(|i| Server::start_with(&format!("s{i}"), &args))
        .collect();
    let client = Node::builder("client")
        .shards(1)
        .small()
        .cluster("kill")
        .etcd([ep.clone()])
        .start()
        .unwrap();
    client
        .wait_for_providers(CH, 3, Duration::from_secs(20))
        .unwrap();

    // A timeout far above a second: a request waiting for one would show.
    let timeout = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&client, CH, 32, timeout, stop.clone());

    // Let load run, then kill one provider outright.
    wait_until("load to start", Duration::from_secs(10), || {
        client.stats().sent > 2_000
    });
    let mut victim = servers.remove(1);
    let killed_at = Instant::now();
    victim.child.kill().unwrap(); // SIGKILL
    victim.child.wait().unwrap();

    // Its key disappears when its lease ends: within TTL (3 s) + 1 s.
    let key = format!("/domi/kill/nodes/{}", victim.id);
    wait_until(
        "the dead node's key to expire",
        Duration::from_secs(4),
        || etcd.get_prefix(&key).is_empty(),
    );

    // Keep load running past the expiry.
    let sent = client.stats().sent;
    wait_until(
        "load to continue past the expiry",
        Duration::from_secs(10),
        || client.stats().sent > sent + 1_000,
    );
    stop.store(true, Ordering::Relaxed);
    let results = load.join_timeout(timeout * 3).expect("no request hangs");
    assert!(results.len() > 1_000, "load ran: {}", results.len());

    let mut errors_after_1s = 0;
    for (started, took, r) in &results {
        match r {
            Ok(reply) => {
                assert_eq!(reply, b"pong");
                assert!(*took < Duration::from_secs(3), "a reply took {took:?}");
            }
            Err(e) => {
                // Only requests in flight to the dead node fail, and they fail
                // when its connection resets: never by timing out.
                assert!(
                    matches!(e, BusError::PeerLost { .. }),
                    "unexpected error {e:?} after {took:?}"
                );
                assert!(
                    *took < Duration::from_secs(1),
                    "PeerLost came only after {took:?}"
                );
                if *started > killed_at + Duration::from_secs(1) {
                    errors_after_1s += 1;
                }
            }
        }
    }
    assert_eq!(
        errors_after_1s, 0,
        "requests started 1 s after the kill all succeed"
    );
    // The others take over within a second of the kill.
    assert!(
        results.iter().any(|(started, took, r)| {
            *started >= killed_at
                && *started + *took <= killed_at + Duration::from_secs(1)
                && r.is_ok()
        }),
        "a request started after the kill succeeded within 1 s"
    );
    let after: Vec<_> = results
        .iter()
        .filter(|(t, _, _)| *t > killed_at + Duration::from_secs(1))
        .collect();
    assert!(!after.is_empty(), "load continued after the kill");
    drop(servers);
}
