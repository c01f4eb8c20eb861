//! Cluster membership through a real, private etcd: ids, records, round-robin,
//! failover, etcd outages, watch continuity, a full cluster.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::*;
use domi::{Channel, Handler, MembershipError, Node, NodeId, StartError};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(5);

fn etcd_node(etcd: &Etcd, name: &str, cluster: &str) -> domi::NodeBuilder {
    Node::builder(name)
        .shards(1)
        .small()
        .cluster(cluster)
        .etcd([etcd.endpoint()])
}

fn etcd_server(etcd: &Etcd, name: &str, cluster: &str) -> (Node, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let node = etcd_node(etcd, name, cluster)
        .subscribe(
            CH,
            Handler::sync(move |req| {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = req.reply(b"pong");
            }),
        )
        .start()
        .expect("node joins through etcd");
    (node, handled)
}

#[test]
fn ids_are_allocated_lowest_first_records_are_json_and_freed_ids_are_reused() {
    let etcd = Etcd::start();
    let nodes: Vec<_> = (0..3)
        .map(|i| etcd_server(&etcd, &format!("n{i}"), "ids").0)
        .collect();
    let ids: Vec<u16> = nodes.iter().map(|n| n.id().0).collect();
    assert_eq!(ids, vec![0, 1, 2]);

    let records = etcd.get_prefix("/domi/ids/nodes/");
    assert_eq!(records.len(), 3);
    for (key, value) in &records {
        let v: serde_json::Value = serde_json::from_str(value).expect("records are JSON");
        assert_eq!(key, &format!("/domi/ids/nodes/{}", v["id"]));
        assert_eq!(v["state"], "serving");
        assert_eq!(v["channels"], serde_json::json!([50]));
        assert!(v["tcp"].as_str().unwrap().starts_with("127.0.0.1:"));
        for field in ["name", "version", "shards", "started_at", "instance"] {
            assert!(!v[field].is_null(), "{field} missing");
        }
    }
    // Every node sees the others.
    for n in &nodes {
        n.wait_for_providers(CH, 3, T).unwrap();
    }
    // A node that stops frees its id at once (lease revoked), and the next
    // node takes it.
    nodes[1].stop();
    assert_eq!(
        etcd.get_prefix("/domi/ids/nodes/").len(),
        2,
        "keys vanish on stop"
    );
    let (again, _) = etcd_server(&etcd, "n3", "ids");
    assert_eq!(again.id(), NodeId(1));
    // Subscribing at run time updates the record.
    again.subscribe(Channel(70), Handler::sync(|_| {})).unwrap();
    wait_until("the record to list channel 70", T, || {
        etcd.get_prefix("/domi/ids/nodes/1")
            .iter()
            .any(|(_, v)| v.contains("70"))
    });
    nodes[0].wait_for_provider(Channel(70), T).unwrap();
}

#[test]
fn three_hundred_requests_spread_exactly_over_three_servers() {
    let etcd = Etcd::start();
    let servers: Vec<_> = (0..3)
        .map(|i| etcd_server(&etcd, &format!("s{i}"), "rr"))
        .collect();
    let client = etcd_node(&etcd, "client", "rr").start().unwrap();
    client.wait_for_providers(CH, 3, T).unwrap();
    for _ in 0..300 {
        assert_eq!(client.request(CH, b"ping", T).unwrap(), b"pong");
    }
    for (n, h) in &servers {
        assert_eq!(h.load(Ordering::SeqCst), 100, "{}", n.id());
    }
}

#[test]
fn nodes_keep_serving_through_an_etcd_restart_and_resynchronize() {
    let mut etcd = Etcd::start();
    let (a, handled_a) = etcd_server(&etcd, "a", "outage");
    let client = etcd_node(&etcd, "client", "outage").start().unwrap();
    client.wait_for_provider(CH, T).unwrap();

    etcd.kill();
    // The last table stays in use: requests keep flowing while etcd is down.
    for _ in 0..50 {
        assert_eq!(client.request(CH, b"ping", T).unwrap(), b"pong");
    }
    assert!(handled_a.load(Ordering::SeqCst) >= 50);

    etcd.restart();
    // Every node's record comes back.
    wait_until("both records to be back", Duration::from_secs(15), || {
        etcd.get_prefix("/domi/outage/nodes/").len() == 2
    });
    // A node started after the restart is seen by all.
    let (b, _) = etcd_server(&etcd, "b", "outage");
    client
        .wait_for_providers(CH, 2, Duration::from_secs(15))
        .unwrap();
    a.wait_for_provider(CH, T).unwrap();
    assert!(a.peers().get(b.id()).is_some(), "a sees b");
    for _ in 0..10 {
        client.request(CH, b"ping", T).unwrap();
    }
}

#[test]
fn a_node_registering_while_a_watch_is_reestablished_is_not_missed() {
    let mut etcd = Etcd::start();
    let watcher = etcd_node(&etcd, "watcher", "cont").start().unwrap();
    // Break the watcher's watch, and register a node while it reconnects.
    etcd.restart();
    let (late, _) = etcd_server(&etcd, "late", "cont");
    watcher
        .wait_for_provider(CH, Duration::from_secs(15))
        .unwrap();
    assert!(watcher.peers().get(late.id()).is_some());
    // And one more after the watch is back.
    let (later, _) = etcd_server(&etcd, "later", "cont");
    watcher.wait_for_providers(CH, 2, T).unwrap();
    assert!(watcher.peers().get(later.id()).is_some());
}

#[test]
fn a_full_cluster_is_a_typed_error() {
    let etcd = Etcd::start();
    let kvs: Vec<(String, String)> = (0..=1023)
        .map(|i| (format!("/domi/full/ids/{i}"), "taken".to_owned()))
        .collect();
    etcd.put_many(&kvs);
    match etcd_node(&etcd, "one-too-many", "full").start() {
        Err(StartError::Core(domi_core::StartError::Membership(
            MembershipError::ClusterFull { cluster },
        ))) => {
            assert_eq!(cluster, "full")
        }
        other => panic!("expected ClusterFull, got {other:?}"),
    }
    // Another cluster is unaffected.
    let ok = etcd_node(&etcd, "elsewhere", "other").start().unwrap();
    assert_eq!(ok.id(), NodeId(0));
}

#[test]
fn etcd_down_at_start_is_a_typed_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let r = Node::builder("lonely")
        .shards(1)
        .small()
        .etcd([format!("http://127.0.0.1:{port}")])
        .etcd_config(|c| c.connect_timeout = Duration::from_millis(500))
        .start();
    assert!(
        matches!(
            r,
            Err(StartError::Core(domi_core::StartError::Membership(
                MembershipError::Unavailable { .. }
            )))
        ),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn requests_to_a_stopped_etcd_peer_fail_over() {
    let etcd = Etcd::start();
    let (a, _) = etcd_server(&etcd, "a", "fo");
    let (b, handled_b) = etcd_server(&etcd, "b", "fo");
    let client = etcd_node(&etcd, "client", "fo").start().unwrap();
    client.wait_for_providers(CH, 2, T).unwrap();
    a.stop();
    wait_until("a to leave the client's table", T, || {
        client.peers().providers(CH).len() == 1
    });
    for _ in 0..20 {
        assert_eq!(client.request(CH, b"x", T), Ok(b"pong".to_vec()));
    }
    assert_eq!(handled_b.load(Ordering::SeqCst), 20);
    drop(b);
}
