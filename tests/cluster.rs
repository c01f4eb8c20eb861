//! Cluster membership through a real, private etcd: ids, records, round-robin,
//! failover, etcd outages under load, lost leases and id conflicts, watch
//! continuity (a broken and a compacted watch), a full cluster.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::*;
use domi::{Channel, EtcdConfig, Handler, MembershipError, Node, NodeId, StartError};
use domi_core::backoff::Backoff;

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(5);

/// Everything `domi_cluster` logs (debug and up) in this test process, so a
/// test can wait for what a node says it did. Lines carry `cluster=<name>`.
fn logs() -> &'static Mutex<String> {
    static LOGS: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(String::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,domi_cluster=debug",
            ))
            .with_ansi(false)
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<String>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&String::from_utf8_lossy(b));
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines of cluster `cluster` and node `id` containing `text`.
fn log_lines(cluster: &str, id: NodeId, text: &str) -> Vec<String> {
    let (c, i) = (format!("cluster={cluster}"), format!("id={id} "));
    logs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .lines()
        .filter(|l| l.contains(&c) && l.contains(&i) && l.contains(text))
        .map(str::to_owned)
        .collect()
}

/// The JSON record of node `id` in `cluster`, if present.
fn record(etcd: &Etcd, cluster: &str, id: NodeId) -> Option<serde_json::Value> {
    etcd.get(&format!("/domi/{cluster}/nodes/{}", id.get()))
        .map(|v| serde_json::from_str(&v).expect("records are JSON"))
}

/// Channels listed in a JSON record.
fn channels_of(rec: &serde_json::Value) -> Vec<u64> {
    rec["channels"]
        .as_array()
        .expect("a channels array")
        .iter()
        .map(|c| c.as_u64().expect("a channel number"))
        .collect()
}

/// A backoff of `[d/2, d]` for every retry.
fn fixed_backoff(d: Duration) -> impl FnOnce(&mut EtcdConfig) {
    move |c| c.backoff = Backoff { base: d, max: d }
}

fn etcd_node(etcd: &Etcd, name: &str, cluster: &str) -> domi::NodeBuilder {
    Node::builder(name)
        .shards(1)
        .small()
        .cluster(cluster)
        .etcd([etcd.endpoint()])
}

fn etcd_server(etcd: &Etcd, name: &str, cluster: &str) -> (Node, Arc<AtomicUsize>) {
    serve(etcd_node(etcd, name, cluster), CH)
}

/// Starts `builder` serving `channel` with `pong`; counts what it handled.
fn serve(builder: domi::NodeBuilder, channel: Channel) -> (Node, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let node = builder
        .subscribe(
            channel,
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
    let ids: Vec<u16> = nodes.iter().map(|n| n.id().get()).collect();
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
    assert_eq!(again.id(), NodeId::new(1).unwrap());
    // Subscribing at run time updates the record...
    again.subscribe(Channel(70), Handler::sync(|_| {})).unwrap();
    wait_until("the record to list channels 50 and 70", T, || {
        record(&etcd, "ids", NodeId::new(1).unwrap()).map(|r| channels_of(&r)) == Some(vec![50, 70])
    });
    nodes[0].wait_for_provider(Channel(70), T).unwrap();
    // ...and so does unsubscribing.
    assert!(again.unsubscribe(Channel(70)));
    wait_until("the record to list channel 50 only", T, || {
        record(&etcd, "ids", NodeId::new(1).unwrap()).map(|r| channels_of(&r)) == Some(vec![50])
    });
    wait_until("node 0 to drop the provider of 70", T, || {
        nodes[0].peers().providers(Channel(70)).is_empty()
    });
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
fn nodes_keep_serving_each_other_under_load_through_an_etcd_restart() {
    const CH_A: Channel = Channel(51);
    const CH_B: Channel = Channel(52);
    let mut etcd = Etcd::start();
    let (a, _) = serve(etcd_node(&etcd, "a", "outage"), CH_A);
    let (b, _) = serve(etcd_node(&etcd, "b", "outage"), CH_B);
    // Only b serves CH_B and only a serves CH_A: every request crosses nodes.
    a.wait_for_provider(CH_B, T).unwrap();
    b.wait_for_provider(CH_A, T).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let a_to_b = load(&a, CH_B, 4, T, stop.clone());
    let b_to_a = load(&b, CH_A, 4, T, stop.clone());
    wait_until("load to start", T, || {
        a.stats().sent > 100 && b.stats().sent > 100
    });

    etcd.kill();
    let down_at = Instant::now();
    // The last table stays in use: requests keep flowing while etcd is down.
    let (sa, sb) = (a.stats().sent, b.stats().sent);
    wait_until("requests to flow while etcd is down", T, || {
        a.stats().sent > sa + 200 && b.stats().sent > sb + 200
    });
    let up_at = Instant::now();
    etcd.restart();
    // Records are back (the lease survives a short outage, so this holds even
    // without re-registration; the lost-lease test covers that).
    wait_until("both records to be back", Duration::from_secs(15), || {
        etcd.get_prefix("/domi/outage/nodes/").len() == 2
    });
    let (sa, sb) = (a.stats().sent, b.stats().sent);
    wait_until("requests to flow after the restart", T, || {
        a.stats().sent > sa + 200 && b.stats().sent > sb + 200
    });
    stop.store(true, Ordering::Relaxed);
    let mut results = a_to_b
        .join_timeout(T * 3)
        .expect("no request hangs (a to b)");
    results.extend(
        b_to_a
            .join_timeout(T * 3)
            .expect("no request hangs (b to a)"),
    );

    let mut during = 0;
    for (started, took, r) in &results {
        assert!(
            *took < T + Duration::from_secs(1),
            "a request took {took:?}"
        );
        // Every outcome is a reply or a typed error; none fails while etcd is down.
        if *started >= down_at && *started < up_at {
            during += 1;
            assert_eq!(
                r.as_deref(),
                Ok(&b"pong"[..]),
                "a request while etcd was down"
            );
        } else if let Ok(reply) = r {
            assert_eq!(reply, b"pong");
        }
    }
    assert!(during >= 400, "requests while etcd was down: {during}");

    // A node started after the restart is seen by all, and sees all.
    let (c, _) = serve(etcd_node(&etcd, "c", "outage"), CH);
    for (n, who) in [(&a, "a"), (&b, "b")] {
        wait_until(&format!("{who} to see c"), Duration::from_secs(15), || {
            n.peers().get(c.id()).is_some()
        });
        n.wait_for_provider(CH, T).unwrap();
    }
    wait_until("c to see a and b", T, || {
        c.peers().get(a.id()).is_some() && c.peers().get(b.id()).is_some()
    });
    assert_eq!(a.request(CH_B, b"x", T), Ok(b"pong".to_vec()));
    assert_eq!(c.request(CH_A, b"x", T), Ok(b"pong".to_vec()));
}

#[test]
fn a_lost_lease_reregisters_under_the_same_id_and_peers_see_the_node_again() {
    logs();
    let etcd = Etcd::start();
    // Retries wait 0.5-1 s, so b surely sees a gone before it is back.
    let a_builder =
        etcd_node(&etcd, "a", "relost").etcd_config(fixed_backoff(Duration::from_secs(1)));
    let (a, handled) = serve(a_builder, CH);
    let b = etcd_node(&etcd, "b", "relost").start().unwrap();
    b.wait_for_provider(CH, T).unwrap();
    let node_key = format!("/domi/relost/nodes/{}", a.id().get());
    let id_key = format!("/domi/relost/ids/{}", a.id().get());
    let before = record(&etcd, "relost", a.id()).expect("a's record");
    let old = etcd.lease_of(&node_key).expect("a's record has a lease");
    assert_ne!(old, 0);

    let listed = log_lines("relost", a.id(), "listed and watching").len();
    assert!(listed >= 1);
    etcd.revoke(old);
    assert_eq!(etcd.get(&node_key), None, "the record went with the lease");
    wait_until("b to see a gone", T, || b.peers().get(a.id()).is_none());

    wait_until(
        "a's record back under a new lease",
        Duration::from_secs(15),
        || etcd.lease_of(&node_key).is_some_and(|l| l != old),
    );
    let lease = etcd.lease_of(&node_key).unwrap();
    assert_ne!(lease, 0);
    assert_eq!(
        etcd.lease_of(&id_key),
        Some(lease),
        "claim and record share the new lease"
    );
    let after = record(&etcd, "relost", a.id()).unwrap();
    for field in ["id", "instance", "tcp", "name", "channels"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    wait_until("b to see a again", T, || b.peers().get(a.id()).is_some());
    b.wait_for_provider(CH, T).unwrap();
    // a kept its watch: a node joining now reaches a's table, and a never
    // listed the cluster again.
    let (c, _) = serve(etcd_node(&etcd, "c", "relost"), Channel(58));
    a.wait_for_provider(Channel(58), T).unwrap();
    assert!(a.peers().get(c.id()).is_some());
    assert_eq!(
        log_lines("relost", a.id(), "listed and watching").len(),
        listed,
        "a registered again keeping its watch, without listing the cluster again"
    );
    assert!(!log_lines("relost", a.id(), "registered again; the watch goes on").is_empty());
    let n = handled.load(Ordering::SeqCst);
    assert_eq!(b.request(CH, b"ping", T), Ok(b"pong".to_vec()));
    assert_eq!(
        handled.load(Ordering::SeqCst),
        n + 1,
        "a served b's request"
    );
}

#[test]
fn a_node_whose_id_was_taken_while_its_lease_was_gone_takes_a_new_id() {
    const CH_B: Channel = Channel(52);
    let etcd = Etcd::start();
    let a_builder =
        etcd_node(&etcd, "a", "conflict").etcd_config(fixed_backoff(Duration::from_millis(300)));
    let (a, handled) = serve(a_builder, CH);
    let (b, _) = serve(etcd_node(&etcd, "b", "conflict"), CH_B);
    b.wait_for_provider(CH, T).unwrap();
    a.wait_for_provider(CH_B, T).unwrap();
    assert_eq!(b.request(CH, b"x", T), Ok(b"pong".to_vec()));
    let old = a.id();
    let node_key = format!("/domi/conflict/nodes/{}", old.get());
    let id_key = format!("/domi/conflict/ids/{}", old.get());
    let a_lease = etcd.lease_of(&id_key).expect("a's claim");
    let a_instance = record(&etcd, "conflict", old).unwrap()["instance"].clone();

    // Another node takes the id, claim and record in one transaction, before
    // a's lease ends: a cannot re-claim first, whatever the timing.
    let other = etcd.grant(60);
    let usurper = serde_json::json!({
        "id": old.get(), "name": "usurper", "version": "0", "protocol": domi::frame::PROTOCOL_VERSION,
        "instance": "00000000000000ff", "tcp": "127.0.0.1:9", "http": null,
        "shards": 1, "channels": [60], "state": "serving", "started_at": 1
    })
    .to_string();
    etcd.put_all_with_lease(
        &[(&id_key, "00000000000000ff"), (&node_key, &usurper)],
        other,
    );
    etcd.revoke(a_lease);

    // a notices and takes a free id: its record, claim and lease move there.
    wait_until("a to take a new id", Duration::from_secs(15), || {
        a.id() != old
    });
    let new = a.id();
    assert_ne!(new, b.id());
    wait_until("a's record under its new id", T, || {
        record(&etcd, "conflict", new).is_some()
    });
    let rec = record(&etcd, "conflict", new).unwrap();
    assert_eq!(rec["instance"], a_instance);
    assert_eq!(rec["name"], "a");
    assert_eq!(rec["id"], new.get());
    let new_node_key = format!("/domi/conflict/nodes/{}", new.get());
    let new_id_key = format!("/domi/conflict/ids/{}", new.get());
    let lease = etcd.lease_of(&new_node_key).unwrap();
    assert!(lease != 0 && lease != a_lease && lease != other);
    assert_eq!(etcd.lease_of(&new_id_key), Some(lease), "one lease");
    // The holder's keys are untouched.
    assert_eq!(etcd.get(&node_key).as_deref(), Some(usurper.as_str()));
    assert_eq!(etcd.get(&id_key).as_deref(), Some("00000000000000ff"));
    assert_eq!(etcd.lease_of(&node_key), Some(other));
    assert_eq!(a.info().id, new);
    assert_eq!(a.peers().get(new).map(|p| p.info.name.as_str()), Some("a"));

    // Both see each other: b reaches a under its new id, a reaches b over a
    // connection announcing it.
    wait_until("b to see a under its new id", T, || {
        b.peers().get(new).is_some_and(|p| p.info.name == "a")
    });
    wait_until("b to see the holder under the old id", T, || {
        b.peers().get(old).is_some_and(|p| p.info.name == "usurper")
    });
    let n = handled.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(b.request(CH, b"x", T), Ok(b"pong".to_vec()));
    }
    assert_eq!(handled.load(Ordering::SeqCst), n + 5, "a served b");
    assert_eq!(a.request(CH_B, b"x", T), Ok(b"pong".to_vec()));
    // A local change is written under the new id.
    a.subscribe(Channel(71), Handler::sync(|_| {})).unwrap();
    b.wait_for_provider(Channel(71), T).unwrap();
    assert_eq!(
        channels_of(&record(&etcd, "conflict", new).unwrap()),
        vec![50, 71]
    );

    // When the holder leaves, a keeps its new id.
    etcd.revoke(other);
    wait_until("b to see the holder gone", T, || {
        b.peers().get(old).is_none()
    });
    assert_eq!(a.id(), new);
    assert_eq!(b.request(CH, b"x", T), Ok(b"pong".to_vec()));
}

#[test]
fn peers_close_their_connection_to_a_node_whose_record_is_deleted() {
    let etcd = Etcd::start();
    // a re-registers 1.5-3 s after losing its lease; its record is gone until then.
    let a_builder =
        etcd_node(&etcd, "a", "gone").etcd_config(fixed_backoff(Duration::from_secs(3)));
    let (a, _) = serve(a_builder, CH);
    let b = etcd_node(&etcd, "b", "gone").start().unwrap();
    b.wait_for_provider(CH, T).unwrap();
    assert_eq!(b.request(CH, b"ping", T), Ok(b"pong".to_vec()));
    assert!(connected(&b).contains(&a.id()), "b holds a connection to a");

    let lease = etcd
        .lease_of(&format!("/domi/gone/nodes/{}", a.id().get()))
        .unwrap();
    etcd.revoke(lease);
    wait_until("b to close its connection to a", T, || {
        !connected(&b).contains(&a.id())
    });
}

/// A watcher whose session retries wait 2.5-5 s and whose lease outlives the
/// outages of these tests.
fn slow_watcher(etcd: &Etcd, cluster: &str) -> Node {
    etcd_node(etcd, "watcher", cluster)
        .etcd_config(|c| {
            c.ttl_secs = 30;
            c.backoff = Backoff {
                base: Duration::from_secs(5),
                max: Duration::from_secs(5),
            };
        })
        .start()
        .unwrap()
}

/// Stops etcd until `watcher` has noticed its session broke, then starts it again.
fn break_session(etcd: &mut Etcd, watcher: &Node, cluster: &str) {
    wait_until("the watcher to be watching", T, || {
        !log_lines(cluster, watcher.id(), "listed and watching").is_empty()
    });
    etcd.kill();
    wait_until("the watcher to notice etcd went away", T, || {
        !log_lines(cluster, watcher.id(), "etcd session broke").is_empty()
    });
    etcd.restart();
}

#[test]
fn a_node_registering_while_a_watch_is_down_is_not_missed() {
    logs();
    let mut etcd = Etcd::start();
    let watcher = slow_watcher(&etcd, "cont");
    break_session(&mut etcd, &watcher, "cont");
    // Register a node while the watcher has no watch.
    let (late, _) = etcd_server(&etcd, "late", "cont");
    assert!(
        log_lines("cont", watcher.id(), "resynchronized").is_empty(),
        "the watcher re-watched before the node registered: the race was not forced"
    );
    watcher
        .wait_for_provider(CH, Duration::from_secs(15))
        .unwrap();
    assert!(watcher.peers().get(late.id()).is_some());
    wait_until("the watcher to report its resynchronization", T, || {
        !log_lines("cont", watcher.id(), "resynchronized").is_empty()
    });
    // And one more after the watch is back.
    let (later, _) = etcd_server(&etcd, "later", "cont");
    watcher.wait_for_providers(CH, 2, T).unwrap();
    assert!(watcher.peers().get(later.id()).is_some());
}

#[test]
fn a_watch_compacted_while_disconnected_relists_and_misses_nothing() {
    logs();
    let mut etcd = Etcd::start();
    let watcher = slow_watcher(&etcd, "compact");
    let (early, _) = etcd_server(&etcd, "early", "compact");
    watcher.wait_for_provider(CH, T).unwrap();
    let seen_revision = etcd.revision();
    break_session(&mut etcd, &watcher, "compact");
    // While the watcher is away: one node leaves, one joins, history moves
    // on and is compacted past anything the watcher saw.
    let (meanwhile, _) = etcd_server(&etcd, "meanwhile", "compact");
    let early_id = early.id();
    early.stop();
    for i in 0..5 {
        etcd.put(&format!("/unrelated/{i}"), "x");
    }
    let now = etcd.revision();
    assert!(now > seen_revision + 5);
    etcd.compact(now);
    assert!(
        log_lines("compact", watcher.id(), "resynchronized").is_empty(),
        "the watcher came back before the compaction: the race was not forced"
    );
    wait_until(
        "the watcher to see the node that joined meanwhile",
        Duration::from_secs(15),
        || watcher.peers().get(meanwhile.id()).is_some(),
    );
    let table = watcher.peers();
    assert!(
        table
            .get(early_id)
            .is_none_or(|p| p.info.name == "meanwhile"),
        "the node that left meanwhile is gone"
    );
    assert_eq!(table.providers(CH), &[meanwhile.id()]);
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
    assert_eq!(ok.id(), NodeId::new(0).unwrap());
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
        .etcd_config(|c| {
            c.connect_timeout = Duration::from_millis(500);
            c.join_timeout = Duration::from_secs(1);
        })
        .start();
    assert!(
        matches!(
            r,
            Err(StartError::Core(domi_core::StartError::Membership(
                MembershipError::JoinTimedOut { .. }
            )))
        ),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
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
