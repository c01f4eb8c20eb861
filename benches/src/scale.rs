//! `domi-bench scale`: 1024 node records with 16 channels each registered in a
//! private etcd (one transaction each, as nodes do); how long until a watching node's peer table holds them all,
//! that table's memory, and the cost of one provider selection over it.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use domi::{Channel, Node, NodeId, NodeInfo, NodeState};
use domi_cluster::etcd::record::{id_key, node_key, NodeRecord};
use etcd_client::{Client, PutOptions, Txn, TxnOp};

pub(crate) struct Etcd(pub(crate) Child, std::path::PathBuf);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn start_etcd() -> Result<(Etcd, String)> {
    let (c, p) = (free_port()?, free_port()?);
    // On tmpfs when there is one: this VM's disk makes every etcd fsync
    // wait behind other tenants, and a cluster's etcd belongs on a fast disk.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("domi-scale-{}-{c}", std::process::id()));
    if Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        bail!("etcd is not installed (make setup installs etcd-server)");
    }
    // At a higher priority than the nodes (when allowed: as root): on a real cluster etcd runs on
    // machines of its own, not on two cores shared with 1024 nodes.
    let child = Command::new("nice")
        .args(["-n", "-10", "etcd", "--name", "s", "--data-dir"])
        .arg(&dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{p}"),
        ])
        .args(["--initial-cluster", &format!("s=http://127.0.0.1:{p}")])
        .args([
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--log-level=error",
            "--logger=zap",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running etcd (make setup installs etcd-server)")?;
    Ok((Etcd(child, dir), format!("http://127.0.0.1:{c}")))
}

/// A client of the etcd at `endpoint`, once it answers (within 20 s).
pub(crate) fn connect_etcd(rt: &tokio::runtime::Runtime, endpoint: &str) -> Result<Client> {
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Client::connect([endpoint], None).await {
                if c.get("x", None).await.is_ok() {
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                bail!("etcd at {endpoint} did not answer within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Runs the scale benchmark and prints one JSON line.
pub fn run(records: u16, channels_each: u16) -> Result<()> {
    let (_etcd, endpoint) = start_etcd()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut client = connect_etcd(&rt, &endpoint)?;
    let watcher = Node::builder("watcher")
        .shards(1)
        .small()
        .cluster("scale")
        .etcd([endpoint.clone()])
        .start()?;
    let first = watcher.id().get() + 1;
    let lease = rt.block_on(client.lease_grant(60, None))?.id();
    let started = Instant::now();
    let ids: Vec<u16> = (first..first + records.min(1023)).collect();
    // One transaction per node (id claim + record), as nodes register, so
    // the watcher applies one event after another.
    for &id in &ids {
        let info = NodeInfo {
            version: domi::frame::PROTOCOL_VERSION,
            cluster: "scale".into(),
            id: NodeId::new(id).unwrap(),
            name: format!("node-{id}"),
            instance: id as u64,
            channels: (0..channels_each)
                .map(|c| Channel(c * 7 + id % 7))
                .collect(),
            state: NodeState::Serving,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + id));
        let rec = NodeRecord::from_info(&info, addr, None, 1, 0);
        let opts = Some(PutOptions::new().with_lease(lease));
        let ops = vec![
            TxnOp::put(id_key("scale", NodeId::new(id).unwrap()), "x", opts.clone()),
            TxnOp::put(
                node_key("scale", NodeId::new(id).unwrap()),
                rec.to_json(),
                opts,
            ),
        ];
        rt.block_on(client.txn(Txn::new().and_then(ops)))?;
    }
    let written = started.elapsed();
    let want = ids.len() + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while watcher.peers().len() < want {
        if Instant::now() > deadline {
            bail!(
                "watcher saw {} of {want} nodes after 60 s",
                watcher.peers().len()
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let converged = started.elapsed();
    let table = watcher.peers();
    let n = 2_000_000u32;
    let mut cursor = 0usize;
    let t = Instant::now();
    let mut sink = 0u32;
    for i in 0..n {
        let p = table.providers(Channel((i % 7) as u16));
        if let Some(id) = domi::route::select(p, &mut cursor, |_| false) {
            sink = sink.wrapping_add(u32::from(id.get()));
        }
    }
    let select_ns = t.elapsed().as_nanos() as f64 / n as f64;
    std::hint::black_box(sink);
    let line = serde_json::json!({
        "records": ids.len(),
        "channels_each": channels_each,
        "transactions": ids.len(),
        "write_ms": written.as_secs_f64() * 1e3,
        "table_complete_ms": converged.as_secs_f64() * 1e3,
        "lag_after_last_write_ms": (converged - written).as_secs_f64() * 1e3,
        "table_bytes": table.approx_heap_bytes(),
        "providers_of_channel_0": table.providers(Channel(0)).len(),
        "select_ns": select_ns,
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
    watcher.stop();
    Ok(())
}
