//! `make scale` (`domi-bench cluster`): a real cluster on one machine.
//!
//! A private etcd, then `--nodes N` real nodes (default 1024): N − 1 node
//! processes, one node per process, each with its own port, etcd client,
//! lease and watch, started together; and the driver, a node in this process
//! that also serves the work channel and sends the load. It measures the
//! cold start, every sampled peer table, round-robin over all providers, a
//! mass SIGKILL under load, restarting the killed, churn under load, and
//! the idle cluster's CPU and memory; then writes `report.json` and
//! `report.md` under `--out`.

mod load;
pub mod node;
mod procs;

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use domi::{Handler, Node, NodeId};
use domi_cluster::etcd::record;
use etcd_client::{Client, GetOptions};
use serde_json::{json, Value};

use load::Load;
use node::{TABLE, WORK};
use procs::Pool;

/// Arguments of the cluster run.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Nodes in all (node processes + the driver); at most 1024.
    #[arg(long, default_value_t = 1024)]
    pub nodes: usize,
    /// Nodes SIGKILLed at once under load, then restarted.
    #[arg(long, default_value_t = 100)]
    pub kill: usize,
    /// Seconds of churn under load.
    #[arg(long, default_value_t = 60)]
    pub churn_secs: u64,
    /// Nodes leaving and as many joining per second of churn.
    #[arg(long, default_value_t = 10)]
    pub churn_rate: usize,
    /// Peer tables checked (random nodes, plus the driver's).
    #[arg(long, default_value_t = 64)]
    pub sample: usize,
    /// Requests kept in flight by the driver.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Lease TTL of every node, in seconds. 30 s by default: at 1024 nodes
    /// on a 2-core machine, etcd stalls renewals for more than 10 s during
    /// the cold-start storm, and a node whose lease ends may find its id
    /// taken by a joiner.
    #[arg(long, default_value_t = 30)]
    pub ttl: i64,
    /// etcd request timeout of every node, in seconds.
    #[arg(long, default_value_t = 2)]
    pub request_timeout: u64,
    /// Longest wait for any one phase, in seconds.
    #[arg(long, default_value_t = 300)]
    pub phase_timeout: u64,
    /// Exit with an error unless the run's correctness targets hold: every
    /// node registered, every checked table complete, round-robin reaching
    /// every provider, no lost request, the restarted all back, no node process
    /// dying by itself (the timing targets are reported, not checked).
    #[arg(long)]
    pub check: bool,
    /// Where the report and the nodes' logs go.
    #[arg(long, default_value = "target/scale")]
    pub out: PathBuf,
}

const CLUSTER: &str = "scale";

/// etcd reads of the driver.
struct Store {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Store {
    fn connect(endpoint: &str) -> Result<Store> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = crate::scale::connect_etcd(&rt, endpoint)?;
        Ok(Store { rt, client })
    }

    /// Node ids with a record.
    fn registered(&mut self) -> Result<BTreeSet<u16>> {
        let prefix = record::nodes_prefix(CLUSTER);
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let r = self
            .rt
            .block_on(self.client.get(prefix.as_str(), Some(opts)))?;
        Ok(r.kvs()
            .iter()
            .filter_map(|kv| record::parse_id(&prefix, kv.key()))
            .map(|id| id.get())
            .collect())
    }
}

/// What a phase that waits for a condition found.
fn waited(started: Instant, done: Option<Instant>) -> Value {
    match done {
        Some(t) => json!((t - started).as_secs_f64()),
        None => Value::Null,
    }
}

/// Runs the cluster measurement and writes the report.
pub fn run(a: ClusterArgs) -> Result<()> {
    if !(2..=1024).contains(&a.nodes) {
        bail!("--nodes must be 2..=1024, got {}", a.nodes);
    }
    let out = a.out.clone();
    std::fs::create_dir_all(&out)?;
    let logs = out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    let (etcd, endpoint) = crate::scale::start_etcd()?;
    let etcd_pid = etcd.0.id();
    let mut store = Store::connect(&endpoint)?;
    let phase = Duration::from_secs(a.phase_timeout);
    let n = a.nodes;
    let mut report = serde_json::Map::new();
    report.insert("date_unix_s".into(), json!(unix_now()));
    report.insert("nodes".into(), json!(n));
    report.insert(
        "layout".into(),
        json!(format!(
            "{} node processes (one node each: own port, etcd client, lease and watch; \
             dense preset) + 1 driver node in the bench process; one private etcd (data on tmpfs); \
             lease TTL {} s, etcd request timeout {} s",
            n - 1,
            a.ttl,
            a.request_timeout
        )),
    );

    // The driver: a node like the others, also sending the load.
    let driver = Node::builder("driver")
        .small()
        .shards(1)
        // Like the nodes (dense preset): unused connections close.
        .configure(|c| c.timeouts.idle = domi::builder::DENSE_IDLE)
        .cluster(CLUSTER)
        .etcd([endpoint.clone()])
        .etcd_config(|c| c.ttl_secs = a.ttl)
        .start()
        .context("starting the driver node")?;
    driver.subscribe(
        WORK,
        Handler::sync(move |req| {
            // The current id: a node whose id was taken takes another.
            let me = req.bus().node_id().get();
            let _ = req.reply(&me.to_le_bytes());
        }),
    )?;

    // 1. Cold start: every node process at once.
    let exe = std::env::current_exe()?;
    let args = vec![
        "scale-node".into(),
        "--etcd".into(),
        endpoint.clone(),
        "--cluster".into(),
        CLUSTER.into(),
        "--ttl".into(),
        a.ttl.to_string(),
        "--request-timeout".into(),
        a.request_timeout.to_string(),
        "--join-timeout".into(),
        a.phase_timeout.to_string(),
    ];
    let mut pool = Pool::new(exe, args, logs)?;
    let started = Instant::now();
    pool.spawn(n - 1)?;
    let spawned = started.elapsed();
    eprintln!("cluster: {} node processes spawned in {spawned:?}", n - 1);
    let (registered_at, count) = wait_registered(&mut store, &mut pool, n, started + phase)?;
    report.insert("spawn_s".into(), json!(spawned.as_secs_f64()));
    report.insert("all_registered_s".into(), waited(started, registered_at));
    report.insert("registered".into(), json!(count));
    eprintln!(
        "cluster: {count} of {n} registered after {:?}",
        started.elapsed()
    );

    // 2. Peer tables: a random sample of nodes and the driver hold every
    // registered node (all n, unless some never registered).
    let registered = store.registered()?;
    let live = registered.len();
    let ids: Vec<u16> = registered
        .into_iter()
        .filter(|&i| i != driver.id().get())
        .collect();
    let mut sample = ids.clone();
    fastrand::shuffle(&mut sample);
    sample.truncate(a.sample);
    let tables_at = wait_tables(&driver, &sample, live, Instant::now() + phase);
    let last_reg = registered_at.unwrap_or_else(Instant::now);
    report.insert("tables_checked".into(), json!(sample.len() + 1));
    report.insert(
        "tables_complete_after_last_registration_s".into(),
        match tables_at {
            Some(t) => json!(t.saturating_duration_since(last_reg).as_secs_f64()),
            None => Value::Null,
        },
    );
    eprintln!(
        "cluster: sampled tables complete: {:?}",
        tables_at.map(|t| t.saturating_duration_since(last_reg))
    );

    // 3. Round-robin reaches every provider.
    let (reached, requests, rr_time) = round_robin(&driver, live, phase);
    report.insert("round_robin_reached".into(), json!(reached));
    report.insert("round_robin_requests".into(), json!(requests));
    report.insert("round_robin_s".into(), json!(rr_time.as_secs_f64()));
    eprintln!("cluster: round-robin reached {reached} of {n} in {requests} requests");

    // 4. Mass kill under load.
    let load = Load::start(&driver, a.in_flight);
    let warm = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let before = load.tally();
    let rate = before.ok as f64 / warm.elapsed().as_secs_f64();
    let before_kill = store.registered()?;
    let killed_at = Instant::now();
    let killed = pool.kill_random(a.kill.min(n - 1));
    let gone_at = wait_count(
        &mut store,
        |c| c + killed <= before_kill.len(),
        killed_at + phase,
    )?;
    std::thread::sleep(Duration::from_secs(1)); // a quiet second to show failures stopped
    let after_kill = load.tally();
    let k = after_kill.since(&before);
    let route_around = k
        .last_failure
        .filter(|t| *t > killed_at)
        .map(|t| t - killed_at);
    let after_ids = store.registered()?;
    let freed: BTreeSet<u16> = before_kill.difference(&after_ids).copied().collect();
    report.insert(
        "mass_kill".into(),
        json!({
            "killed": killed,
            "load_in_flight": a.in_flight,
            "replies_per_s_before": rate,
            "replies": k.ok,
            "failed": k.failed_total(),
            "failed_by_error": k.failed,
            "lost": k.lost,
            "responders": k.responders(),
            "top_responder": k.top_responder().map(|(id, share)| json!({"id": id, "share": share})),
            // From the kill to the last failure; 0 when nothing failed.
            "routed_around_s": route_around.map_or(0.0, |d| d.as_secs_f64()),
            "records_expired_s": gone_at.map(|t| (t - killed_at).as_secs_f64()),
        }),
    );
    eprintln!("cluster: killed {killed}: {k:?}, routed around in {route_around:?}");

    // 5. Restart the killed: they take free ids (the freed ones, or with
    // fewer than 1024 nodes possibly lower gaps a cold start left).
    let restart_at = Instant::now();
    pool.spawn(killed)?;
    let back_at = wait_count(&mut store, |c| c >= before_kill.len(), restart_at + phase)?;
    let now_ids = store.registered()?;
    let taken_again = freed.intersection(&now_ids).count();
    let rk = load.tally().since(&after_kill);
    report.insert(
        "restart".into(),
        json!({
            "restarted": killed,
            "all_registered_s": back_at.map(|t| (t - restart_at).as_secs_f64()),
            "freed_ids": freed.len(),
            "freed_ids_taken_again": taken_again,
            "failed": rk.failed_total(),
            "lost": rk.lost,
        }),
    );
    eprintln!(
        "cluster: restarted {killed} in {:?}, {taken_again} of {} freed ids taken again",
        back_at.map(|t| t - restart_at),
        freed.len()
    );

    // 6. Churn under load: each second, `churn_rate` registered nodes leave
    // (SIGTERM: drain, revoke) and, once their records are gone, as many
    // new nodes start.
    let churn_from = load.tally();
    let before_churn = store.registered()?.len();
    let churn_start = Instant::now();
    let (mut left, mut joined) = (0, 0);
    let mut second = 0u64;
    while second < a.churn_secs {
        second += 1;
        let leaving = pool.term_random(a.churn_rate, Duration::from_secs(10));
        left += leaving;
        let tick_end = churn_start + Duration::from_secs(second);
        // With every id taken (1024 nodes), joiners wait for the leavers' ids.
        let _ = wait_count(
            &mut store,
            |c| c + leaving <= before_churn,
            tick_end.max(Instant::now() + Duration::from_millis(100)),
        )?;
        pool.spawn(leaving)?;
        joined += leaving;
        std::thread::sleep(tick_end.saturating_duration_since(Instant::now()));
    }
    let churn_end = Instant::now();
    let settled = wait_count(&mut store, |c| c >= before_churn, churn_end + phase)?;
    let c = load.tally().since(&churn_from);
    pool.crashed();
    report.insert(
        "churn".into(),
        json!({
            "seconds": a.churn_secs,
            "left": left,
            "joined": joined,
            "replies": c.ok,
            "failed": c.failed_total(),
            "failed_by_error": c.failed,
            "lost": c.lost,
            "responders": c.responders(),
            "top_responder": c.top_responder().map(|(id, share)| json!({"id": id, "share": share})),
            "driver_id": driver.id().get(),
            "settled_after_s": settled.map(|t| t.saturating_duration_since(churn_end).as_secs_f64()),
        }),
    );
    report.insert("crashed_processes".into(), json!(pool.crashes));
    eprintln!("cluster: churn: {c:?}");
    let total = load.finish();

    // 7. Idle: CPU over 5 s while the driver still holds a connection to
    // every node (the window ends before DENSE_IDLE), then over 10 s once
    // those closed unused; memory.
    pool.reap();
    std::thread::sleep(Duration::from_secs(1));
    let pids = pool.pids();
    let mut all = pids.clone();
    all.push(etcd_pid);
    all.push(std::process::id());
    let open_conns = connected_peers(&driver);
    let cpu_connected = procs::cpu_usage(&all, Duration::from_secs(5));
    let still_open = connected_peers(&driver);
    let closed_after = wait_for(domi::builder::DENSE_IDLE * 2, || {
        connected_peers(&driver) == 0
    });
    let cpu_nodes_etcd = procs::cpu_usage(&all, Duration::from_secs(10));
    let cpu_etcd = procs::cpu_usage(&[etcd_pid], Duration::from_secs(5));
    let sorted = |f: fn(u32) -> Option<u64>| {
        let mut v: Vec<u64> = pids.iter().filter_map(|&p| f(p)).collect();
        v.sort_unstable();
        v
    };
    let rss = sorted(procs::rss_bytes);
    let anon = sorted(procs::anon_bytes);
    let pss = sorted(procs::pss_bytes);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let rss_total: u64 = rss.iter().sum();
    report.insert(
        "idle".into(),
        json!({
            "cpu_cluster_and_etcd": cpu_nodes_etcd,
            "cpu_connected": cpu_connected,
            "driver_connections": open_conns,
            "driver_connections_after_connected_window": still_open,
            "connections_closed_after_s": closed_after.map(|d| d.as_secs_f64()),
            "cpu_etcd": cpu_etcd,
            "node_rss_median_mib": rss.get(rss.len() / 2).map(|&b| mib(b)),
            "node_rss_max_mib": rss.last().map(|&b| mib(b)),
            "node_anon_median_mib": anon.get(anon.len() / 2).map(|&b| mib(b)),
            "node_pss_median_mib": pss.get(pss.len() / 2).map(|&b| mib(b)),
            "nodes_rss_total_mib": mib(rss_total),
            "etcd_rss_mib": procs::rss_bytes(etcd_pid).map(mib),
            "driver_rss_mib": procs::rss_bytes(std::process::id()).map(mib),
        }),
    );
    report.insert(
        "load_total".into(),
        json!({"replies": total.ok, "failed": total.failed_total(), "lost": total.lost}),
    );
    pool.stop_all(Duration::from_secs(10));
    driver.stop();
    drop(etcd);

    let report = Value::Object(report);
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    let failures = check(&report, n);
    let mut md = markdown(&report);
    md.push_str(&if failures.is_empty() {
        "\nCorrectness targets: all met.\n".to_string()
    } else {
        format!("\nCorrectness targets not met: {}\n", failures.join("; "))
    });
    std::fs::write(out.join("report.md"), &md)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{md}");
    }
    if a.check && !failures.is_empty() {
        bail!("the cluster run failed: {}", failures.join("; "));
    }
    Ok(())
}

/// How many peers the driver's shard holds a connection to.
fn connected_peers(driver: &Node) -> usize {
    driver
        .spawn_on(0, |bus| async move { bus.connected_peers().len() })
        .ok()
        .and_then(|j| j.join_timeout(Duration::from_secs(5)))
        .unwrap_or(usize::MAX)
}

/// Polls `done` every 100 ms until it holds (the time it took) or `limit`
/// passes (`None`).
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Waits until `n` nodes are registered (or a node process died, or the
/// deadline passed). When they all were, and how many there were.
fn wait_registered(
    store: &mut Store,
    pool: &mut Pool,
    n: usize,
    deadline: Instant,
) -> Result<(Option<Instant>, usize)> {
    let mut count = 0;
    let mut shown = Instant::now();
    while Instant::now() < deadline {
        count = store.registered().map(|s| s.len()).unwrap_or(count);
        if count >= n {
            return Ok((Some(Instant::now()), count));
        }
        for line in pool.crashed() {
            eprintln!("cluster: {line}");
        }
        if shown.elapsed() > Duration::from_secs(5) {
            eprintln!("cluster: {count} of {n} registered");
            shown = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((None, count))
}

/// Waits until the number of registered nodes satisfies `done`.
fn wait_count(
    store: &mut Store,
    done: impl Fn(usize) -> bool,
    deadline: Instant,
) -> Result<Option<Instant>> {
    while Instant::now() < deadline {
        if store.registered().map(|s| done(s.len())).unwrap_or(false) {
            return Ok(Some(Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(None)
}

/// Asks each sampled node (and the driver) for its table until each holds
/// `n` nodes serving the work channel.
fn wait_tables(driver: &Node, sample: &[u16], n: usize, deadline: Instant) -> Option<Instant> {
    let mut pending: Vec<u16> = sample.to_vec();
    let mut driver_done = false;
    // The last answer of each node still pending, for the report on timeout.
    let mut last: std::collections::BTreeMap<u16, String> = Default::default();
    while Instant::now() < deadline {
        let t = driver.peers();
        driver_done = t.len() == n && t.providers(WORK).len() == n;
        if !driver_done {
            last.insert(
                driver.id().get(),
                format!(
                    "driver: {} peers, {} providers",
                    t.len(),
                    t.providers(WORK).len()
                ),
            );
        }
        pending.retain(|&id| {
            let Some(node) = NodeId::new(id) else {
                return false;
            };
            let answer = driver.request_to(node, TABLE, b"", Duration::from_secs(2));
            let done = match &answer {
                Ok(r) if r.len() == 8 => {
                    let len = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
                    let providers = u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as usize;
                    last.insert(id, format!("{len} peers, {providers} providers"));
                    len == n && providers == n
                }
                Ok(r) => {
                    last.insert(id, format!("{} bytes", r.len()));
                    false
                }
                Err(e) => {
                    last.insert(id, e.to_string());
                    false
                }
            };
            !done
        });
        if pending.is_empty() && driver_done {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let still: Vec<String> = last
        .iter()
        .filter(|(id, _)| pending.contains(id) || (!driver_done && **id == driver.id().get()))
        .map(|(id, a)| format!("{id}: {a}"))
        .collect();
    eprintln!(
        "cluster: tables incomplete (want {n}): {}",
        still.join("; ")
    );
    None
}

/// Sends requests to the work channel until every one of `n` providers has
/// answered one. How many answered, after how many requests, how long.
fn round_robin(driver: &Node, n: usize, limit: Duration) -> (usize, u64, Duration) {
    let seen = Mutex::new(HashSet::new());
    let sent = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                while started.elapsed() < limit && seen.lock().map(|s| s.len() < n).unwrap_or(false)
                {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(r) = driver.request(WORK, b"rr", Duration::from_secs(2)) {
                        if r.len() == 2 {
                            if let Ok(mut s) = seen.lock() {
                                s.insert(u16::from_le_bytes([r[0], r[1]]));
                            }
                        }
                    }
                }
            });
        }
    });
    let reached = seen.lock().map(|s| s.len()).unwrap_or(0);
    (reached, sent.into_inner(), started.elapsed())
}

/// The correctness targets a report misses (see [`ClusterArgs::check`]).
fn check(r: &Value, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = |ok: bool, what: &str| {
        if !ok {
            out.push(format!("{what}: {}", what_was(r, what)));
        }
    };
    want(!r["all_registered_s"].is_null(), "all_registered_s");
    want(
        !r["tables_complete_after_last_registration_s"].is_null(),
        "tables_complete_after_last_registration_s",
    );
    want(r["round_robin_reached"] == json!(n), "round_robin_reached");
    want(r["mass_kill"]["lost"] == json!(0), "mass_kill.lost");
    want(r["restart"]["lost"] == json!(0), "restart.lost");
    want(
        !r["restart"]["all_registered_s"].is_null(),
        "restart.all_registered_s",
    );
    want(r["churn"]["lost"] == json!(0), "churn.lost");
    want(
        !r["churn"]["settled_after_s"].is_null(),
        "churn.settled_after_s",
    );
    want(
        r["crashed_processes"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "crashed_processes",
    );
    out
}

/// The value of a dotted report field, for a failure message.
fn what_was(r: &Value, path: &str) -> String {
    path.split('.').fold(r, |v, k| &v[k]).to_string()
}

/// The report as a Markdown table.
fn markdown(r: &Value) -> String {
    let f = |v: &Value| match v {
        Value::Null => "not reached".to_string(),
        Value::Number(x) => match x.as_f64() {
            Some(x) if x.fract() != 0.0 => format!("{x:.2}"),
            _ => x.to_string(),
        },
        other => other.to_string(),
    };
    let rows = [
        ("nodes", &r["nodes"]),
        (
            "all registered after a cold start (s)",
            &r["all_registered_s"],
        ),
        (
            "sampled tables complete after the last registration (s)",
            &r["tables_complete_after_last_registration_s"],
        ),
        ("tables checked", &r["tables_checked"]),
        ("round-robin providers reached", &r["round_robin_reached"]),
        ("mass kill: killed", &r["mass_kill"]["killed"]),
        ("mass kill: lost requests", &r["mass_kill"]["lost"]),
        (
            "mass kill: failed requests (typed errors)",
            &r["mass_kill"]["failed"],
        ),
        (
            "mass kill: routed around after (s)",
            &r["mass_kill"]["routed_around_s"],
        ),
        (
            "mass kill: records expired after (s)",
            &r["mass_kill"]["records_expired_s"],
        ),
        (
            "restart: all back after (s)",
            &r["restart"]["all_registered_s"],
        ),
        (
            "restart: freed ids taken again",
            &r["restart"]["freed_ids_taken_again"],
        ),
        ("churn: nodes left and joined", &r["churn"]["left"]),
        ("churn: lost requests", &r["churn"]["lost"]),
        ("churn: failed requests", &r["churn"]["failed"]),
        (
            "idle CPU, all nodes (driver included) + etcd, driver connected to every node (CPUs)",
            &r["idle"]["cpu_connected"],
        ),
        (
            "idle CPU, all nodes (driver included) + etcd, unused connections closed (CPUs)",
            &r["idle"]["cpu_cluster_and_etcd"],
        ),
        ("idle CPU, etcd alone (CPUs)", &r["idle"]["cpu_etcd"]),
        (
            "idle node RSS, median (MiB)",
            &r["idle"]["node_rss_median_mib"],
        ),
        (
            "idle node memory of its own (anonymous), median (MiB)",
            &r["idle"]["node_anon_median_mib"],
        ),
        (
            "idle node PSS (shared binary pages divided), median (MiB)",
            &r["idle"]["node_pss_median_mib"],
        ),
        (
            "idle nodes RSS, total (MiB)",
            &r["idle"]["nodes_rss_total_mib"],
        ),
        ("etcd RSS (MiB)", &r["idle"]["etcd_rss_mib"]),
    ];
    let mut s = format!(
        "Cluster run of {} (unix s {}): {}\n\n| measure | value |\n|---|---|\n",
        r["nodes"],
        r["date_unix_s"],
        r["layout"].as_str().unwrap_or("")
    );
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {} |\n", f(v)));
    }
    s
}
