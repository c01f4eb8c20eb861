//! A provider killed with SIGKILL under load (nodes as child processes, real
//! etcd): requests move to the others within a second, none hangs, each gets
//! its reply or a typed error, and the dead node's key expires with its lease.

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

    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&client, CH, 32, Duration::from_secs(2), stop.clone());

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

    std::thread::sleep(Duration::from_millis(500)); // keep load running past the expiry
    stop.store(true, Ordering::Relaxed);
    let results = load
        .join_timeout(Duration::from_secs(10))
        .expect("no request hangs");
    assert!(results.len() > 1_000, "load ran: {}", results.len());

    let mut errors_after_1s = 0;
    for (started, took, r) in &results {
        assert!(*took <= Duration::from_secs(3), "a request took {took:?}");
        match r {
            Ok(reply) => assert_eq!(reply, b"pong"),
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        BusError::PeerLost { .. }
                            | BusError::Timeout { .. }
                            | BusError::NoProvider { .. }
                    ),
                    "unexpected error {e:?}"
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
    let after: Vec<_> = results
        .iter()
        .filter(|(t, _, _)| *t > killed_at + Duration::from_secs(1))
        .collect();
    assert!(!after.is_empty(), "load continued after the kill");
    drop(servers);
}
