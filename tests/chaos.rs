//! Fault injection under steady load (nodes as processes, real etcd): a
//! provider killed with SIGKILL, etcd restarted, a node paused and resumed, a
//! node partitioned (SIGSTOP: sockets open, nothing answers) and healed, and a
//! node stopped with SIGTERM. Prints a table: requests sent, answered, failed
//! with a typed error, lost and hung (both must be 0), and how long each fault
//! took to be routed around. `make chaos` runs it with longer phases
//! (`CHAOS_PHASE_MS`); `make test` runs the short version.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::procs::{http, Server};
use common::{load, wait_until, Outcome};
use domi::{BusError, Channel, ErrorCode, Node};

const CH: Channel = Channel(50);
const TIMEOUT: Duration = Duration::from_secs(3);

fn server(etcd: &Etcd, name: &str) -> Server {
    let ep = etcd.endpoint();
    Server::start_with(
        name,
        &["--etcd", &ep, "--cluster", "chaos", "--http", "127.0.0.1:0"],
    )
}

/// The last failure at or after `from` and before `to`, as an offset from `from`.
fn routed_around(results: &[Outcome], from: Instant, to: Instant) -> Duration {
    results
        .iter()
        .filter(|(t, took, r)| *t >= from && *t < to && r.is_err() && *t + *took >= from)
        .map(|(t, took, _)| (*t + *took).saturating_duration_since(from))
        .max()
        .unwrap_or_default()
}

#[test]
fn chaos() {
    let phase = Duration::from_millis(
        std::env::var("CHAOS_PHASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    let mut etcd = Etcd::start();
    let mut servers: Vec<Server> = (0..3).map(|i| server(&etcd, &format!("s{i}"))).collect();
    let client = Node::builder("client")
        .shards(1)
        .small()
        .cluster("chaos")
        .etcd([etcd.endpoint()])
        .start()
        .unwrap();
    client
        .wait_for_providers(CH, 3, Duration::from_secs(20))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&client, CH, 64, TIMEOUT, stop.clone());
    wait_until("load to flow", Duration::from_secs(10), || {
        client.stats().sent > 1_000
    });
    std::thread::sleep(phase);
    let mut faults: Vec<(&str, Instant, Instant)> = Vec::new();

    // 1. SIGKILL a provider; a replacement joins.
    let t = Instant::now();
    let mut victim = servers.remove(0);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    std::thread::sleep(phase);
    servers.push(server(&etcd, "s3"));
    faults.push(("SIGKILL a provider", t, Instant::now()));

    // 2. Restart etcd under load.
    let t = Instant::now();
    etcd.restart();
    wait_until(
        "records back after the etcd restart",
        Duration::from_secs(20),
        || etcd.get_prefix("/domi/chaos/nodes/").len() == 4,
    );
    std::thread::sleep(phase);
    faults.push(("restart etcd", t, Instant::now()));

    // 3. Pause and resume a node.
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
    faults.push(("pause + resume a node", t, Instant::now()));

    // 4. Partition a node (SIGSTOP), then heal it (SIGCONT).
    let t = Instant::now();
    servers[1].signal("STOP");
    std::thread::sleep(phase.max(Duration::from_secs(3)));
    servers[1].signal("CONT");
    std::thread::sleep(phase);
    faults.push(("partition + heal a node", t, Instant::now()));

    // 5. SIGTERM a node: it drains and exits 0.
    let t = Instant::now();
    servers[2].signal("TERM");
    assert_eq!(servers[2].exit_code(Duration::from_secs(10)), Some(0));
    std::thread::sleep(phase);
    faults.push(("SIGTERM a node", t, Instant::now()));

    stop.store(true, Ordering::Relaxed);
    let results = running.join_timeout(TIMEOUT * 3);
    let (results, hung) = match results {
        Some(r) => (r, 0),
        None => (Vec::new(), 64),
    };
    let sent = client.stats().sent;
    let answered = results.iter().filter(|r| r.2.is_ok()).count() as u64;
    let failed = results.iter().filter(|r| r.2.is_err()).count() as u64;
    let typed = results
        .iter()
        .filter(|r| {
            matches!(
                r.2,
                Err(BusError::PeerLost { .. })
                    | Err(BusError::Timeout { .. })
                    | Err(BusError::NoProvider { .. })
                    | Err(BusError::Remote {
                        code: ErrorCode::ShuttingDown | ErrorCode::Paused,
                        ..
                    })
            )
        })
        .count() as u64;
    let issued = results.len() as u64;
    // Every request the load issued came back; `sent` also counts retries
    // to the next provider inside one request, so it is at least `issued`.
    let lost = issued.saturating_sub(answered + failed);
    let slow = results
        .iter()
        .filter(|r| r.1 > TIMEOUT + Duration::from_secs(1))
        .count();

    let mut table = String::from("\n| chaos (64 in flight) | value |\n|---|---:|\n");
    table += &format!(
        "| requests issued | {issued} |\n| frames sent (with fail-over retries) | {sent} |\n"
    );
    table += &format!("| answered | {answered} |\n| failed with a typed error | {typed} |\n");
    table += &format!("| lost | {lost} |\n| hung | {} |\n", hung + slow);
    table += "\n| fault | failed requests | routed around after |\n|---|---:|---:|\n";
    for (name, from, to) in &faults {
        let n = results
            .iter()
            .filter(|(t, _, r)| t >= from && t < to && r.is_err())
            .count();
        table += &format!(
            "| {name} | {n} | {} ms |\n",
            routed_around(&results, *from, *to).as_millis()
        );
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{table}");
    }
    let _ = std::fs::create_dir_all("target");
    let _ = std::fs::write("target/chaos.md", &table);

    assert!(issued > 1_000);
    assert_eq!(lost, 0, "lost requests");
    assert_eq!(hung + slow, 0, "hung requests");
    assert_eq!(typed, failed, "every failure is a typed error");
}
