//! Joining through etcd when etcd is late, unreachable, silent or crowded:
//! `start()` retries with jittered backoff up to the join timeout, fails with
//! a typed error after it, and fails at once on what retrying cannot fix.
//! Real etcd processes throughout.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::wait_until;
use domi::{MembershipError, Node, NodeBuilder, StartError};

/// Generous: the machine may be busy with other tests.
const SETTLE: Duration = Duration::from_secs(20);

fn node(endpoint: &str, name: &str, cluster: &str) -> NodeBuilder {
    common::test_logs();
    Node::builder(name)
        .shards(1)
        .small()
        .cluster(cluster)
        .etcd([endpoint.to_owned()])
}

/// A loopback port nothing listens on (connections are refused).
fn refused_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// The membership error of a failed start.
fn membership_error(r: Result<Node, StartError>) -> MembershipError {
    match r {
        Err(StartError::Core(domi_core::StartError::Membership(e))) => e,
        other => panic!("expected a membership error, got {other:?}"),
    }
}

fn record_exists(etcd: &Etcd, cluster: &str, node: &Node) -> bool {
    etcd.get(&format!("/domi/{cluster}/nodes/{}", node.id().get()))
        .is_some()
}

#[test]
fn start_waits_for_an_etcd_that_comes_up_late() {
    let mut etcd = Etcd::reserve();
    let endpoint = etcd.endpoint();
    let started = Instant::now();
    let starting = std::thread::spawn(move || node(&endpoint, "early", "late").start());
    // The one deliberate delay: etcd comes up well after the first attempt.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !starting.is_finished(),
        "start must still be retrying while etcd is down"
    );
    etcd.launch();
    let node = starting
        .join()
        .expect("the starting thread does not panic")
        .expect("the node joins once etcd is up");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "joined within the default join timeout ({took:?})"
    );
    wait_until("the node's record", SETTLE, || {
        record_exists(&etcd, "late", &node)
    });
    assert_eq!(etcd.get_prefix("/domi/late/nodes/").len(), 1);
}

#[test]
fn an_unreachable_etcd_fails_with_a_typed_error_after_the_join_timeout() {
    let endpoint = refused_endpoint();
    let started = Instant::now();
    let r = node(&endpoint, "lonely", "nowhere")
        .etcd_config(|c| c.join_timeout = Duration::from_secs(2))
        .start();
    let took = started.elapsed();
    match membership_error(r) {
        MembershipError::JoinTimedOut {
            attempts,
            timeout,
            elapsed,
            store,
            last_error,
        } => {
            assert_eq!(timeout, Duration::from_secs(2));
            assert!(attempts > 1, "it retried: {attempts} attempt(s)");
            assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
            assert!(store.contains(&endpoint), "{store}");
            assert!(!last_error.is_empty());
        }
        other => panic!("expected JoinTimedOut, got {other:?}"),
    }
    // join timeout (2 s) + at most one request timeout (2 s), with slack.
    assert!(took > Duration::from_millis(1500), "it retried ({took:?})");
    assert!(
        took < Duration::from_secs(6),
        "it gave up in time ({took:?})"
    );
}

#[test]
fn a_silent_etcd_is_bounded_per_attempt_and_retried() {
    // Accepts TCP connections (the kernel's backlog) but never answers:
    // every request hangs until the request timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let r = node(&endpoint, "patient", "silent")
        .etcd_config(|c| {
            c.join_timeout = Duration::from_secs(2);
            c.request_timeout = Duration::from_millis(500);
            c.connect_timeout = Duration::from_millis(500);
        })
        .start();
    let took = started.elapsed();
    match membership_error(r) {
        MembershipError::JoinTimedOut { attempts, .. } => {
            assert!(attempts > 1, "it retried: {attempts} attempt(s)")
        }
        other => panic!("expected JoinTimedOut, got {other:?}"),
    }
    // join timeout (2 s) + at most one request timeout (0.5 s), with slack.
    assert!(took > Duration::from_millis(1500), "it retried ({took:?})");
    assert!(
        took < Duration::from_secs(4),
        "it gave up in time ({took:?})"
    );
    drop(silent);
}

#[test]
fn a_zero_join_timeout_makes_one_attempt() {
    let started = Instant::now();
    let r = node(&refused_endpoint(), "once", "once")
        .etcd_config(|c| c.join_timeout = Duration::ZERO)
        .start();
    match membership_error(r) {
        MembershipError::JoinTimedOut { attempts, .. } => assert_eq!(attempts, 1),
        other => panic!("expected JoinTimedOut, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Starts `n` nodes of `cluster` at once (one thread each); their ids.
fn start_together(endpoint: &str, cluster: &str, n: usize) -> Vec<Node> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (endpoint, cluster, barrier) =
                (endpoint.to_owned(), cluster.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                let builder = node(&endpoint, &format!("n{i}"), &cluster);
                barrier.wait();
                builder.start()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .expect("a starting thread does not panic")
                .expect("every node joins")
        })
        .collect()
}

fn assert_registered_uniquely(etcd: &Etcd, cluster: &str, nodes: &[Node]) {
    let ids: BTreeSet<u16> = nodes.iter().map(|n| n.id().get()).collect();
    assert_eq!(ids.len(), nodes.len(), "ids are unique: {ids:?}");
    wait_until("every node's record", SETTLE, || {
        etcd.get_prefix(&format!("/domi/{cluster}/nodes/")).len() == nodes.len()
    });
    for n in nodes {
        assert!(record_exists(etcd, cluster, n), "record of {}", n.id());
    }
}

#[test]
fn twenty_nodes_started_at_once_all_register_with_unique_ids() {
    let etcd = Etcd::start();
    let started = Instant::now();
    let nodes = start_together(&etcd.endpoint(), "crowd", 20);
    let took = started.elapsed();
    assert_registered_uniquely(&etcd, "crowd", &nodes);
    let ids: BTreeSet<u16> = nodes.iter().map(|n| n.id().get()).collect();
    // A node that loses a race for an id spreads its next choice over the
    // lowest 2, 4, 8, … free ids: ids stay compact, not spread over 1024.
    assert!(
        ids.iter().all(|&id| id < 128),
        "ids stay among the lowest: {ids:?}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn twenty_nodes_waiting_for_etcd_all_join_when_it_comes_up() {
    let mut etcd = Etcd::reserve();
    let endpoint = etcd.endpoint();
    let starting = std::thread::spawn(move || start_together(&endpoint, "storm", 20));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!starting.is_finished(), "the nodes wait for etcd");
    etcd.launch();
    let nodes = starting.join().expect("the starters do not panic");
    assert_registered_uniquely(&etcd, "storm", &nodes);
}

/// Every id of `cluster` taken for good, except those in `free`.
fn fill(etcd: &Etcd, cluster: &str, free: &[u16]) {
    let kvs: Vec<(String, String)> = (0..=1023u16)
        .filter(|i| !free.contains(i))
        .map(|i| (format!("/domi/{cluster}/ids/{i}"), "taken".to_owned()))
        .collect();
    etcd.put_many(&kvs);
}

#[test]
fn a_full_cluster_fails_after_one_lease_ttl_not_the_join_timeout() {
    let etcd = Etcd::start();
    fill(&etcd, "packed", &[]);
    let started = Instant::now();
    let r = node(&etcd.endpoint(), "one-too-many", "packed")
        .etcd_config(|c| c.join_timeout = Duration::from_secs(60))
        .start();
    assert!(
        matches!(membership_error(r), MembershipError::ClusterFull { cluster } if cluster == "packed")
    );
    // One default TTL and request timeout (5 s) of waiting, then the answer.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "{took:?}"
    );
}

#[test]
fn a_node_joining_a_full_cluster_takes_the_id_a_leaving_node_frees() {
    let etcd = Etcd::start();
    fill(&etcd, "rolling", &[700]);
    // Id 700 is held by a node on its way out: its lease ends in 2 s.
    let leaving = etcd.grant(2);
    etcd.put_all_with_lease(&[("/domi/rolling/ids/700", "leaving")], leaving);
    let n = node(&etcd.endpoint(), "replacement", "rolling")
        .etcd_config(|c| c.ttl_secs = 10)
        .start()
        .expect("the node waits for the id rather than failing");
    assert_eq!(n.id().get(), 700);
    let claim = etcd.lease_of("/domi/rolling/ids/700");
    assert!(claim.is_some() && claim != Some(leaving), "{claim:?}");
    assert_eq!(
        claim,
        etcd.lease_of("/domi/rolling/nodes/700"),
        "claim and record under the new node's lease"
    );
    n.stop();
}

#[test]
fn refused_authentication_fails_at_once() {
    let etcd = Etcd::start();
    etcd.etcdctl(&["user", "add", "root", "--new-user-password=secret"], None);
    etcd.etcdctl(&["auth", "enable"], None);
    let started = Instant::now();
    let r = node(&etcd.endpoint(), "stranger", "guarded").start();
    match membership_error(r) {
        MembershipError::Authentication { reason, .. } => {
            assert!(reason.contains("requires authentication"), "{reason}")
        }
        other => panic!("expected Authentication, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn invalid_settings_fail_at_once() {
    let started = Instant::now();
    let r = node("http://[::1", "typo", "bad").start();
    assert!(matches!(
        membership_error(r),
        MembershipError::Config { .. }
    ));
    let r = node(&refused_endpoint(), "hasty", "bad")
        .etcd_config(|c| c.backoff.base = Duration::ZERO)
        .start();
    assert!(matches!(
        membership_error(r),
        MembershipError::Config { .. }
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
}
