//! Fault injection under steady load (nodes as processes, a real 3-member
//! etcd that every node reaches through all its members' endpoints): a
//! provider killed with SIGKILL, the whole etcd cluster restarted (every
//! member killed, then all started again on their data), the etcd leader
//! killed with SIGKILL (a new leader is elected; every node's record stays
//! on the same lease, asserted, while the member is down for longer than a
//! lease TTL; then the member is restarted and rejoins), a node paused and
//! resumed, a node frozen (SIGSTOP: sockets open, nothing answers) and
//! resumed, a node partitioned (a real network cut: it runs in a network
//! namespace of its own, reached over a veth pair, and the link goes down,
//! so packets vanish with no RST, to its peers and to every etcd member
//! alike) and healed, and a node stopped with SIGTERM; then two faults of
//! the handlers themselves: a provider whose handler panics on 1% of
//! requests (callers get `HandlerPanicked`, the provider serves on), and an
//! overload burst of 10× a provider's async-handler cap whose handlers make
//! nested requests (all complete). Where network namespaces cannot be
//! created (not root, no `ip`), the partition phase is skipped with a
//! printed message and the rest runs.
//! Prints a table: requests issued (counted as each starts), answered, failed
//! with a typed error, lost (issued but never came back) and hung (came back
//! later than the timeout allows), both asserted 0, and per fault how long
//! after its injection requests kept failing (start of the last failed
//! request), when the last of those failures came back, and the longest
//! stretch with no request answered (all in-flight requests waiting on a
//! silent peer); for the partition, also when the cut node left the client's
//! rotation and, after the heal, when it was back and handling requests;
//! for the etcd leader kill, when a new leader was elected, how many records
//! kept their lease, and how long the killed member took to rejoin.
//! Everything runs twice: over a plaintext bus (`chaos`, table in
//! `target/chaos.md`) and over mutual TLS on every bus connection
//! (`chaos_over_tls`, `target/chaos-tls.md`), one after the other.
//! `make chaos` runs it with longer phases (`CHAOS_PHASE_MS`); `make test`
//! runs the short version.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::net::{IpAddr, SocketAddr, TcpStream};

use common::certs::{CertFiles, Pki};
use common::etcd::EtcdCluster;
use common::netns::Netns;
use common::procs::{example_path, http, metric, try_http, Server};
use common::{longest_stall, wait_until, Outcome, StopOnDrop};
use domi::{BusError, Channel, ErrorCode, Node, NodeId};

const CH: Channel = Channel(50);
/// Served only by the overload phase's provider, with nested handlers.
const NESTED: Channel = Channel(52);
/// That provider's async-handler cap; the burst is ten times it.
const CAP: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(3);
const IN_FLIGHT: usize = 64;
/// How many etcd members.
const MEMBERS: usize = 3;
/// The nodes' lease TTL (the default).
const TTL: Duration = Duration::from_secs(3);
/// Where the nodes' records live.
const NODES: &str = "/domi/chaos/nodes/";

/// Every etcd member's client URL, comma-separated (the `--etcd` flag).
fn endpoints(etcd: &EtcdCluster) -> String {
    etcd.endpoints().join(",")
}

/// How the cluster's bus runs: plaintext, or mutual TLS (every node with a
/// certificate of one CA naming 127.0.0.1 and the namespace's address).
struct Bus {
    tls: Option<(Pki, CertFiles)>,
}

impl Bus {
    fn plaintext() -> Bus {
        Bus { tls: None }
    }

    fn tls(ns: Option<&Netns>) -> Bus {
        let pki = Pki::new("chaos");
        let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
        ips.extend(ns.map(Netns::inner_ip));
        let cert = pki.node_ips("node", &ips);
        Bus {
            tls: Some((pki, cert)),
        }
    }

    fn name(&self) -> &'static str {
        if self.tls.is_some() {
            "mutual TLS"
        } else {
            "plaintext"
        }
    }

    /// The `server` example's flags for this bus.
    fn args(&self) -> Vec<String> {
        let Some((pki, cert)) = &self.tls else {
            return Vec::new();
        };
        [
            "--tls-cert",
            &cert.cert.to_string_lossy(),
            "--tls-key",
            &cert.key.to_string_lossy(),
            "--tls-ca",
            &pki.ca.cert.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// `args` plus this bus's flags.
    fn with<'a>(&'a self, args: &[&'a str], tls: &'a [String]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(tls.iter().map(String::as_str));
        all
    }

    fn node(&self, b: domi::NodeBuilder) -> domi::NodeBuilder {
        match &self.tls {
            None => b,
            Some((pki, cert)) => b.tls(
                domi::TlsConfig::from_pem_files(&cert.cert, &cert.key, &pki.ca.cert)
                    .expect("bus TLS"),
            ),
        }
    }
}

fn server(etcd: &EtcdCluster, name: &str, bus: &Bus) -> Server {
    let ep = endpoints(etcd);
    let tls = bus.args();
    Server::start_with(
        name,
        &bus.with(
            &["--etcd", &ep, "--cluster", "chaos", "--http", "127.0.0.1:0"],
            &tls,
        ),
    )
}

/// A server inside `ns`: bus and admin on the inside address, every etcd
/// member reached on the host side of the veth pair.
fn far_server(etcd: &EtcdCluster, ns: &Netns, name: &str, bus: &Bus) -> Server {
    let ep = etcd.endpoints_on(ns.host_ip()).join(",");
    let inside = SocketAddr::new(ns.inner_ip(), 0).to_string();
    let tls = bus.args();
    Server::start_cmd(
        name,
        ns.exec(example_path("server")),
        &bus.with(
            &[
                "--tcp",
                &inside,
                "--etcd",
                &ep,
                "--cluster",
                "chaos",
                "--http",
                &inside,
            ],
            &tls,
        ),
    )
}

/// Requests the server at admin address `admin` handed to its handler
/// (`None` while its admin port does not answer).
fn handled(admin: SocketAddr) -> Option<f64> {
    // A short connect timeout first: a partitioned address would otherwise
    // hang the connect for the kernel's SYN retries.
    TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok()?;
    let (status, _, body) = try_http(admin, "GET", "/metrics", None)?;
    if status != 200 {
        return None;
    }
    metric(&body, "domi_handled_total")
}

/// What the load saw: requests issued (counted as each one starts) and the
/// outcome of every request that finished, pushed as it finishes.
struct Load {
    issued: Arc<AtomicU64>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    task: domi::ShardTask<()>,
}

/// Keeps `in_flight` requests going from shard 0 of `client` until stopped.
fn start_load(client: &Node, in_flight: usize) -> Load {
    let issued = Arc::new(AtomicU64::new(0));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (i, o, s) = (issued.clone(), outcomes.clone(), stop.clone());
    let task = client
        .spawn_on(0, move |bus| async move {
            let mut tasks = Vec::new();
            for _ in 0..in_flight {
                let (bus, issued, outcomes, stop) = (bus.clone(), i.clone(), o.clone(), s.clone());
                tasks.push(glommio::spawn_local(async move {
                    while !stop.load(Ordering::Relaxed) {
                        issued.fetch_add(1, Ordering::SeqCst);
                        let t = Instant::now();
                        let r = bus.request(CH, b"ping", TIMEOUT).await;
                        let took = t.elapsed();
                        outcomes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((t, took, r));
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
        })
        .expect("load starts");
    Load {
        issued,
        outcomes,
        stop,
        task,
    }
}

/// Sends `n` requests on `channel` at once from shard 0 of `client`, counted
/// in `load` like its own; returns how many were answered.
fn burst(client: &Node, load: &Load, channel: Channel, n: usize) -> domi::ShardTask<usize> {
    let (issued, outcomes) = (load.issued.clone(), load.outcomes.clone());
    client
        .spawn_on(0, move |bus| async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (bus, issued, outcomes) = (bus.clone(), issued.clone(), outcomes.clone());
                    glommio::spawn_local(async move {
                        issued.fetch_add(1, Ordering::SeqCst);
                        let t = Instant::now();
                        let r = bus.request(channel, b"burst", TIMEOUT).await;
                        let ok = r.is_ok();
                        outcomes.lock().unwrap_or_else(|e| e.into_inner()).push((
                            t,
                            t.elapsed(),
                            r,
                        ));
                        ok
                    })
                })
                .collect();
            let mut answered = 0;
            for t in tasks {
                answered += usize::from(t.await);
            }
            answered
        })
        .expect("burst starts")
}

impl Load {
    fn received(&self) -> usize {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Stops issuing and waits (at most `within`) for every issued request
    /// to come back; returns (issued, outcomes received).
    fn finish(self, within: Duration) -> (u64, Vec<Outcome>) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + within;
        let _ = self.task.join_timeout(within);
        while (self.received() as u64) < self.issued.load(Ordering::SeqCst)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let issued = self.issued.load(Ordering::SeqCst);
        let outcomes =
            std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(|e| e.into_inner()));
        (issued, outcomes)
    }
}

/// The failed requests attributed to the fault injected at `from`: those
/// that came back (failed) at or after `from` and before `to`, the next
/// fault's injection. Each failure belongs to exactly one fault.
fn failures(results: &[Outcome], from: Instant, to: Instant) -> Vec<&Outcome> {
    results
        .iter()
        .filter(|(t, took, r)| r.is_err() && *t + *took >= from && *t + *took < to)
        .collect()
}

/// How long after `from` requests kept failing: the start of the last failed
/// request minus `from` (requests started after that all succeeded until
/// `to`); zero when nothing failed or only requests already in flight did.
fn routed_around(results: &[Outcome], from: Instant, to: Instant) -> Duration {
    failures(results, from, to)
        .iter()
        .map(|(t, _, _)| t.saturating_duration_since(from))
        .max()
        .unwrap_or_default()
}

/// One chaos run at a time: both use the same namespace subnet and the
/// machine's two CPUs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn chaos() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run(false);
}

/// The same faults with mutual TLS on every bus connection.
#[test]
fn chaos_over_tls() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run(true);
}

fn run(tls: bool) {
    let phase = Duration::from_millis(
        std::env::var("CHAOS_PHASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    // The partition phase needs a network namespace; where none can be
    // created, it is skipped and every other fault still runs.
    let ns = match Netns::create(Netns::pid_subnet()) {
        Ok(ns) => Some(ns),
        Err(e) => {
            eprintln!(
                "SKIPPED the partition phase (network cut): cannot create network namespaces here ({e}); the other faults still run"
            );
            None
        }
    };
    // With a namespace, every etcd member also listens on the host side of
    // the veth pair so that the node inside reaches them (and loses them all
    // when the link is cut).
    let mut etcd = match &ns {
        Some(ns) => EtcdCluster::start_also_on(MEMBERS, ns.host_ip()),
        None => EtcdCluster::start(MEMBERS),
    };
    let bus = if tls {
        Bus::tls(ns.as_ref())
    } else {
        Bus::plaintext()
    };
    // Three providers: s0 and s1 on loopback, s2 inside the namespace when
    // there is one (the partition's target), on loopback otherwise.
    let mut servers: Vec<Server> = (0..2)
        .map(|i| server(&etcd, &format!("s{i}"), &bus))
        .collect();
    let far = ns.as_ref().map(|ns| far_server(&etcd, ns, "s2", &bus));
    if far.is_none() {
        servers.push(server(&etcd, "s2", &bus));
    }
    let client = bus
        .node(Node::builder("client"))
        .shards(1)
        .small()
        .cluster("chaos")
        .etcd(etcd.endpoints())
        .start()
        .unwrap();
    client
        .wait_for_providers(CH, 3, Duration::from_secs(20))
        .unwrap();
    let load = start_load(&client, IN_FLIGHT);
    let _stop_on_drop = StopOnDrop(load.stop.clone());
    wait_until("load to flow", Duration::from_secs(10), || {
        load.received() > 1_000
    });
    std::thread::sleep(phase);
    let mut faults: Vec<(&str, Instant)> = Vec::new();

    // 1. SIGKILL a provider; a replacement joins.
    let t = Instant::now();
    let mut victim = servers.remove(0);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    std::thread::sleep(phase);
    servers.push(server(&etcd, "s3", &bus));
    faults.push(("SIGKILL a provider", t));

    // 2. Restart the whole etcd cluster under load: every member killed,
    //    then all started again on their data (etcd is gone for a moment).
    let t = Instant::now();
    etcd.restart_all();
    wait_until(
        "records back after the etcd restart",
        Duration::from_secs(20),
        || etcd.get_prefix(NODES).len() == 4,
    );
    std::thread::sleep(phase);
    faults.push(("restart etcd (all members)", t));

    // 3. SIGKILL the etcd leader: the others elect a new one; every node's
    //    keep-alive and watch move to another member, so each record stays
    //    on its lease while the member is down (longer than a lease TTL,
    //    which a keep-alive stuck on the dead member would not survive).
    //    Then the killed member restarts and rejoins. The records are
    //    compared after the rejoin too; the assertions wait for the table.
    let mut live_ids: Vec<u16> = servers.iter().chain(&far).map(|s| s.id).collect();
    live_ids.push(client.id().get());
    let mut expected: Vec<String> = live_ids.iter().map(|id| format!("{NODES}{id}")).collect();
    expected.sort();
    let records = |etcd: &EtcdCluster| -> Vec<(String, Option<i64>)> {
        let mut keys: Vec<String> = etcd.get_prefix(NODES).into_iter().map(|kv| kv.0).collect();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let lease = etcd.lease_of(&k);
                (k, lease)
            })
            .collect()
    };
    // The SIGKILLed provider's record lingers until its lease expires.
    wait_until(
        "exactly the live nodes' records before the leader kill",
        Duration::from_secs(20),
        || {
            records(&etcd)
                .into_iter()
                .map(|r| r.0)
                .eq(expected.iter().cloned())
        },
    );
    let leases_before = records(&etcd);
    assert!(
        leases_before.iter().all(|(_, l)| l.is_some_and(|l| l != 0)),
        "every record hangs on a lease: {leases_before:?}"
    );
    let old_leader = etcd.leader();
    let t = Instant::now();
    etcd.kill(old_leader);
    let new_leader = etcd.wait_leader(Duration::from_secs(10));
    let elected = t.elapsed();
    std::thread::sleep(phase.max(TTL + Duration::from_secs(1)));
    let leases_down = records(&etcd);
    let restarting = Instant::now();
    etcd.restart(old_leader);
    let rejoined = restarting.elapsed();
    let members_after = etcd.live();
    etcd.wait_leader(Duration::from_secs(10));
    let leases_after = records(&etcd);
    std::thread::sleep(phase);
    faults.push(("SIGKILL the etcd leader", t));
    let kept =
        |now: &[(String, Option<i64>)]| leases_before.iter().filter(|r| now.contains(r)).count();
    let leader_kill = (
        old_leader,
        new_leader,
        elected,
        kept(&leases_down),
        kept(&leases_after),
        leases_before.len(),
        rejoined,
    );

    // 4. Pause and resume a node.
    let t = Instant::now();
    let paused = servers[0].http.unwrap();
    assert_eq!(http(paused, "POST", "/pause", None).0, 200);
    wait_until(
        "the pause to reach the client",
        Duration::from_secs(10),
        || client.peers().providers(CH).len() == 2,
    );
    std::thread::sleep(phase);
    assert_eq!(http(paused, "POST", "/resume", None).0, 200);
    wait_until(
        "the resume to reach the client",
        Duration::from_secs(10),
        || client.peers().providers(CH).len() == 3,
    );
    faults.push(("pause + resume a node", t));

    // 5. Freeze a node (SIGSTOP: its sockets stay open, nothing answers),
    //    then resume it (SIGCONT). A different fault from the partition
    //    below: the process stops, its host's kernel still acknowledges.
    let t = Instant::now();
    servers[1].signal("STOP");
    std::thread::sleep(phase.max(Duration::from_secs(3)));
    servers[1].signal("CONT");
    std::thread::sleep(phase);
    faults.push(("freeze (SIGSTOP) + resume a node", t));

    // 6. Partition a node (cut its veth link: packets vanish both ways, no
    //    RST), then heal the link. The client's heartbeats find the peer
    //    silent and fail its waiters with PeerLost; its etcd lease expires.
    //    After the heal it registers again and is used again.
    let mut partition: Option<(Duration, Duration, Duration)> = None;
    if let (Some(ns), Some(far)) = (&ns, &far) {
        let id = NodeId::new(far.id).unwrap();
        let admin = far.http.expect("the far node serves its admin endpoints");
        let in_rotation = || client.peers().providers(CH).contains(&id);
        wait_until(
            "all three providers in rotation before the cut",
            Duration::from_secs(20),
            || client.peers().providers(CH).len() == 3,
        );
        let before = handled(admin).expect("the far node's metrics");
        wait_until(
            "the far node to handle requests before the cut",
            Duration::from_secs(10),
            || handled(admin).is_some_and(|h| h > before),
        );
        let t = Instant::now();
        ns.cut();
        wait_until(
            "the cut-off node to leave the client's rotation",
            Duration::from_secs(20),
            || !in_rotation(),
        );
        let out = t.elapsed();
        std::thread::sleep(phase);
        let healed = Instant::now();
        ns.heal();
        wait_until(
            "the healed node back in the client's rotation",
            Duration::from_secs(30),
            in_rotation,
        );
        let back = healed.elapsed();
        let before = handled(admin).expect("the healed node's metrics");
        wait_until(
            "the healed node to handle requests again",
            Duration::from_secs(20),
            || handled(admin).is_some_and(|h| h > before),
        );
        let serving = healed.elapsed();
        std::thread::sleep(phase);
        faults.push(("partition (network cut) + heal a node", t));
        partition = Some((out, back, serving));
    }

    // 7. A provider whose handler panics on 1% of requests joins; its
    //    callers get HandlerPanicked and it keeps serving. Paused after the
    //    phase (out of rotation, no further faults).
    let t = Instant::now();
    let ep = endpoints(&etcd);
    let tls_args = bus.args();
    let faulty = Server::start_with(
        "s4-panics",
        &bus.with(
            &[
                "--etcd",
                &ep,
                "--cluster",
                "chaos",
                "--http",
                "127.0.0.1:0",
                "--panic-permille",
                "10",
            ],
            &tls_args,
        ),
    );
    let faulty_id = NodeId::new(faulty.id).unwrap();
    wait_until(
        "the panicking provider in rotation",
        Duration::from_secs(20),
        || client.peers().providers(CH).contains(&faulty_id),
    );
    std::thread::sleep(phase);
    let faulty_admin = faulty.http.expect("admin address");
    let panics = {
        let (_, _, body) = http(faulty_admin, "GET", "/metrics", None);
        metric(&body, "domi_handler_panics_total").unwrap_or(0.0)
    };
    assert_eq!(http(faulty_admin, "POST", "/pause", None).0, 200);
    wait_until(
        "the panicking provider out of rotation",
        Duration::from_secs(10),
        || !client.peers().providers(CH).contains(&faulty_id),
    );
    faults.push(("handler panics on 1% of requests", t));

    // 8. An overload burst: 10x the async-handler cap of a provider whose
    //    handlers each make a nested request (to channel 50) before
    //    answering. Replies are never held back, so all complete.
    let t = Instant::now();
    let cap = CAP.to_string();
    let nested_ch = NESTED.0.to_string();
    let nested = Server::start_with(
        "s5-nested",
        &bus.with(
            &[
                "--etcd",
                &ep,
                "--cluster",
                "chaos",
                "--nested",
                &nested_ch,
                "--max-handlers",
                &cap,
            ],
            &tls_args,
        ),
    );
    client
        .wait_for_provider(NESTED, Duration::from_secs(20))
        .unwrap();
    let burst_answered = burst(&client, &load, NESTED, 10 * CAP)
        .join_timeout(TIMEOUT + Duration::from_secs(2))
        .expect("the burst comes back");
    std::thread::sleep(phase);
    faults.push(("overload burst: 10x the handler cap, nested requests", t));

    // 9. SIGTERM a node: it drains and exits 0.
    let t = Instant::now();
    let last = servers.last_mut().expect("a loopback server");
    last.signal("TERM");
    assert_eq!(last.exit_code(Duration::from_secs(10)), Some(0));
    std::thread::sleep(phase);
    faults.push(("SIGTERM a node", t));

    let (issued, results) = load.finish(TIMEOUT + Duration::from_secs(2));
    let end = Instant::now();
    let received = results.len() as u64;
    let lost = issued - received;
    let sent = client.stats().sent;
    let answered = results.iter().filter(|r| r.2.is_ok()).count() as u64;
    let failed = received - answered;
    let typed = results
        .iter()
        .filter(|r| {
            matches!(
                r.2,
                Err(BusError::PeerLost { .. })
                    | Err(BusError::Timeout { .. })
                    | Err(BusError::NoProvider { .. })
                    | Err(BusError::Remote {
                        code: ErrorCode::ShuttingDown
                            | ErrorCode::Paused
                            | ErrorCode::HandlerPanicked,
                        ..
                    })
            )
        })
        .count() as u64;
    // A request that came back later than its timeout allows hung.
    let hung = results
        .iter()
        .filter(|r| r.1 > TIMEOUT + Duration::from_secs(1))
        .count();

    let mut table = format!(
        "\n| chaos ({IN_FLIGHT} in flight, bus {}) | value |\n|---|---:|\n",
        bus.name()
    );
    table += &format!(
        "| requests issued | {issued} |\n| frames sent (with fail-over retries) | {sent} |\n"
    );
    table += &format!("| answered | {answered} |\n| failed with a typed error | {typed} |\n");
    table += &format!(
        "| lost (issued, never came back) | {lost} |\n| hung (took > timeout + 1 s) | {hung} |\n"
    );
    table += "\n| fault | failed requests | routed around after | last failure returned after | longest stretch with no answer |\n|---|---:|---:|---:|---:|\n";
    let ends: Vec<Instant> = faults.iter().skip(1).map(|f| f.1).chain([end]).collect();
    for ((name, from), to) in faults.iter().zip(ends) {
        let failed = failures(&results, *from, to);
        let last_back = failed
            .iter()
            .map(|(t, took, _)| (*t + *took).saturating_duration_since(*from))
            .max()
            .unwrap_or_default();
        table += &format!(
            "| {name} | {} | {} ms | {} ms | {} ms |\n",
            failed.len(),
            routed_around(&results, *from, to).as_millis(),
            last_back.as_millis(),
            longest_stall(&results, *from, to).as_millis()
        );
    }
    table += &format!(
        "\n| handler faults | value |\n|---|---:|\n\
         | panics caught by the 1% provider (it kept serving) | {panics} |\n\
         | burst of {} nested requests at a cap of {CAP}: answered | {burst_answered} |\n",
        10 * CAP
    );
    {
        let (old, new, elected, kept_down, kept_after, records, rejoined) = leader_kill;
        table += &format!(
            "\n| etcd leader killed ({MEMBERS} members) | value |\n|---|---:|\n\
             | killed -> new leader | m{} -> m{} |\n\
             | new leader elected, after the kill | {} ms |\n\
             | records on their lease, leader down > lease TTL | {kept_down} of {records} |\n\
             | records on their lease, after the member rejoined | {kept_after} of {records} |\n\
             | killed member healthy again, after its restart | {} ms |\n",
            old + 1,
            new + 1,
            elected.as_millis(),
            rejoined.as_millis()
        );
    }
    table += &match partition {
        Some((out, back, serving)) => format!(
            "\n| partition (network cut) | after |\n|---|---:|\n\
             | cut node out of the client's rotation, after the cut | {} ms |\n\
             | back in rotation, after the heal | {} ms |\n\
             | handling requests again, after the heal | {} ms |\n",
            out.as_millis(),
            back.as_millis(),
            serving.as_millis()
        ),
        None => "\npartition (network cut): skipped, network namespaces cannot be created here\n"
            .to_owned(),
    };
    // Over TLS, TLS was really on: a plaintext HELLO to a server is refused
    // and counted.
    let plaintext_refused = bus.tls.is_some().then(|| {
        let s = &servers[0]; // (s1: paused and resumed; alive)
        let mut plain = TcpStream::connect(s.addr).expect("connect");
        let _ = std::io::Write::write_all(&mut plain, &common::raw::hello("chaos"));
        common::raw::assert_closed_within(plain, Duration::from_secs(5));
        let admin = s.http.expect("admin address");
        wait_until(
            "the plaintext HELLO counted",
            Duration::from_secs(5),
            || {
                let (_, _, body) = http(admin, "GET", "/metrics", None);
                metric(&body, "domi_closed_tls_total").unwrap_or(0.0) > 0.0
            },
        );
        true
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{table}");
    }
    let _ = std::fs::create_dir_all("target");
    let file = if tls {
        "target/chaos-tls.md"
    } else {
        "target/chaos.md"
    };
    let _ = std::fs::write(file, &table);

    assert!(issued > 1_000);
    assert_ne!(plaintext_refused, Some(false));
    assert_eq!(lost, 0, "lost requests");
    assert_eq!(hung, 0, "hung requests");
    assert_eq!(typed, failed, "every failure is a typed error");
    assert!(panics > 0.0, "the faulty provider's handler panicked");
    {
        let (old, new, _, kept_down, kept_after, records, _) = leader_kill;
        assert_ne!(new, old, "a new etcd leader");
        assert_eq!(members_after, MEMBERS, "the killed member runs again");
        assert_eq!(
            (kept_down, kept_after),
            (records, records),
            "every record kept its lease with the etcd leader down ({leases_down:?}) \
             and after it rejoined ({leases_after:?}); before: {leases_before:?}"
        );
    }
    assert_eq!(
        burst_answered,
        10 * CAP,
        "every nested request of the burst"
    );
    drop((faulty, nested));
}
