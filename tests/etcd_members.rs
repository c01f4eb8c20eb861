//! Multi-member etcd (issue 10, item 3): a 3-member etcd on loopback, three
//! `server` processes and an in-process client keeping 64 requests in
//! flight. The etcd leader is killed: requests keep flowing (0 failed), the
//! servers' records stay on their leases (keep-alive and watch move to
//! another member), a new server joins and gets traffic while the leader is
//! down; the leader is restarted and rejoins. Then a SIGKILLed server's
//! record still expires with its lease (TTL 3 s) while the others stay.
//! Prints the timings.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::procs::{metric, read, try_http, Server};
use common::{longest_stall, wait_until, Outcome, StopOnDrop};
use domi::{Channel, Node};

const CH: Channel = Channel(50);
const TIMEOUT: Duration = Duration::from_secs(3);
const IN_FLIGHT: usize = 64;
const CLUSTER: &str = "members";
/// The servers' lease TTL (the default).
const TTL: Duration = Duration::from_secs(3);

fn node_key(id: u16) -> String {
    format!("/domi/{CLUSTER}/nodes/{id}")
}

fn server(etcd: &EtcdCluster, name: &str) -> Server {
    let eps = etcd.endpoints().join(",");
    Server::start_with(
        name,
        &[
            "--etcd",
            &eps,
            "--cluster",
            CLUSTER,
            "--http",
            "127.0.0.1:0",
        ],
    )
}

/// A server's `domi_handled_total`, if its admin answers.
fn handled(admin: SocketAddr) -> Option<f64> {
    let (status, _, body) = try_http(admin, "GET", "/metrics", None)?;
    (status == 200).then(|| metric(&body, "domi_handled_total"))?
}

/// Keeps `IN_FLIGHT` requests on `CH` going from shard 0 of `client` until
/// `stop`; every outcome is pushed as it comes back.
fn start_load(
    client: &Node,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
) -> domi::ShardTask<()> {
    client
        .spawn_on(0, move |bus| async move {
            let tasks: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let (bus, outcomes, stop) = (bus.clone(), outcomes.clone(), stop.clone());
                    glommio::spawn_local(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            let r = bus.request(CH, b"ping", TIMEOUT).await;
                            let took = t.elapsed();
                            outcomes
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((t, took, r));
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
        })
        .expect("load starts")
}

/// Every server's log, for failure messages.
fn logs(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| format!("--- server {} ---\n{}", s.id, read(&s.stderr)))
        .collect()
}

fn count(outcomes: &Mutex<Vec<Outcome>>) -> usize {
    outcomes.lock().unwrap_or_else(|e| e.into_inner()).len()
}

#[test]
fn etcd_leader_killed_and_restarted_under_load() {
    common::test_logs();
    let mut etcd = EtcdCluster::start(3);
    let mut servers: Vec<Server> = (0..3).map(|i| server(&etcd, &format!("s{i}"))).collect();
    let client = Node::builder("client")
        .shards(1)
        .small()
        .cluster(CLUSTER)
        .etcd(etcd.endpoints())
        .start()
        .expect("the client starts");
    client
        .wait_for_providers(CH, 3, Duration::from_secs(20))
        .expect("three providers");
    let leases: Vec<(u16, i64)> = servers
        .iter()
        .map(|s| {
            let lease = etcd.lease_of(&node_key(s.id)).expect("a server's record");
            assert_ne!(lease, 0, "a server's record hangs on a lease");
            (s.id, lease)
        })
        .collect();

    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&client, outcomes.clone(), stop.clone());
    let _stop_on_drop = StopOnDrop(stop.clone());
    wait_until("load to flow", Duration::from_secs(10), || {
        count(&outcomes) > 1_000
    });

    // Kill the leader.
    let leader = etcd.leader();
    let killed = Instant::now();
    etcd.kill(leader);
    let new_leader = etcd.wait_leader(Duration::from_secs(10));
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);

    // While it is down, a new server joins and gets traffic.
    let joining = Instant::now();
    let s3 = server(&etcd, "s3");
    wait_until("s3 in the client's table", Duration::from_secs(15), || {
        client.peers().providers(CH).len() == 4
    });
    let s3_in_table = joining.elapsed();
    let s3_admin = s3.http.expect("s3 serves its admin");
    wait_until("s3 to handle requests", Duration::from_secs(10), || {
        handled(s3_admin).is_some_and(|n| n > 0.0)
    });
    let s3_serving = joining.elapsed();
    assert!(
        etcd.lease_of(&node_key(s3.id)).is_some_and(|l| l != 0),
        "s3 registered under a lease"
    );
    servers.push(s3);

    // Keep the leader down for longer than a lease TTL: a keep-alive that
    // did not move to another member would let the leases expire.
    let down_for = TTL + Duration::from_secs(1);
    while killed.elapsed() < down_for {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (id, lease) in &leases {
        assert_eq!(
            etcd.lease_of(&node_key(*id)),
            Some(*lease),
            "server {id} kept its record and lease with the leader down; logs:\n{}",
            logs(&servers)
        );
    }

    // Restart the killed member; it rejoins.
    let restarting = Instant::now();
    etcd.restart(leader);
    let rejoined = restarting.elapsed();
    etcd.wait_leader(Duration::from_secs(10));
    let restarted = Instant::now();
    // A moment of load with all three members back.
    let before = count(&outcomes);
    wait_until("load after the restart", Duration::from_secs(10), || {
        count(&outcomes) > before + 1_000
    });

    stop.store(true, Ordering::SeqCst);
    load.join_timeout(TIMEOUT * 3).expect("the load finishes");
    let results = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    let failed: Vec<&Outcome> = results.iter().filter(|(_, _, r)| r.is_err()).collect();
    let during: usize = results
        .iter()
        .filter(|(t, _, _)| *t >= killed && *t < restarted)
        .count();
    let stall = longest_stall(&results, killed, restarted);
    for (id, lease) in &leases {
        assert_eq!(
            etcd.lease_of(&node_key(*id)),
            Some(*lease),
            "server {id} kept its record and lease across the restart; logs:\n{}",
            logs(&servers)
        );
    }

    // SIGKILL a server: its record expires with its lease, the others stay.
    let mut victim = servers.remove(0);
    let victim_key = node_key(victim.id);
    victim.child.kill().expect("SIGKILL");
    victim.child.wait().expect("reaped");
    let sigkilled = Instant::now();
    wait_until("the SIGKILLed server's record to expire", TTL * 4, || {
        etcd.lease_of(&victim_key).is_none()
    });
    let expired = sigkilled.elapsed();
    for s in &servers {
        assert!(
            etcd.lease_of(&node_key(s.id)).is_some(),
            "server {} kept its record",
            s.id
        );
    }
    wait_until(
        "the client to drop the victim",
        Duration::from_secs(10),
        || client.peers().providers(CH).len() == 3,
    );

    eprintln!(
        "etcd leader m{} killed: new leader m{} after {elapsed:?}; \
         s3 in the client's table {s3_in_table:?} and handling requests {s3_serving:?} after it started \
         ({:?} after the kill); longest stretch with no answer {stall:?}; \
         m{} rejoined {rejoined:?} after its restart; {during} requests during the outage, \
         {} in all, {} failed; SIGKILLed server's record gone after {expired:?}",
        leader + 1,
        new_leader + 1,
        joining.duration_since(killed) + s3_serving,
        leader + 1,
        results.len(),
        failed.len(),
        elapsed = elected,
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        results.len(),
        failed.iter().take(5).map(|(_, _, r)| r).collect::<Vec<_>>()
    );
    assert!(
        stall < Duration::from_secs(1),
        "requests stalled for {stall:?} after the leader kill"
    );
    drop(victim);
}

/// The harness: members also listening on a second address answer there,
/// through any member after one is killed; a whole-cluster restart keeps
/// the data.
#[test]
fn cluster_also_on_a_second_address() {
    let ip = std::net::IpAddr::from([127, 0, 0, 2]);
    let mut etcd = EtcdCluster::start_also_on(3, ip);
    assert_eq!(etcd.live(), 3);
    let leader = etcd.leader();
    etcd.kill(leader);
    assert_ne!(etcd.wait_leader(Duration::from_secs(10)), leader);
    let eps = etcd.endpoints_on(ip).join(",");
    let put = std::process::Command::new("etcdctl")
        .args(["--endpoints", &eps, "put", "/k", "v"])
        .env("ETCDCTL_API", "3")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("etcdctl runs");
    assert!(put.success(), "a put through the second address");
    assert_eq!(
        etcd.get_prefix("/k"),
        vec![("/k".to_owned(), "v".to_owned())]
    );
    etcd.restart(leader);
    assert_eq!(etcd.live(), 3);
    etcd.restart_all();
    assert_eq!(etcd.get_prefix("/k").len(), 1, "the data survives");
}
