//! The node role of the cluster run: one real node per process, with its own
//! etcd session, lease and watch (nothing is shared between nodes).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use domi::{Channel, Handler, Node};

/// Channel every node serves: answers with its node id (2 bytes, LE).
pub const WORK: Channel = Channel(100);
/// Channel every node serves: answers with the size of its peer table and
/// the number of `WORK` providers in it (2 × u32 LE). The cheap table query.
pub const TABLE: Channel = Channel(101);

/// Arguments of the node role.
#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// etcd endpoint.
    #[arg(long)]
    pub etcd: String,
    /// Cluster name.
    #[arg(long)]
    pub cluster: String,
    /// Lease TTL in seconds.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// etcd request timeout in seconds.
    #[arg(long, default_value_t = 2)]
    pub request_timeout: u64,
    /// Join timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub join_timeout: u64,
}

/// Starts a node with the dense preset, serves [`WORK`] and [`TABLE`], and
/// drains on SIGTERM.
pub fn run(a: NodeArgs) -> Result<()> {
    // Handlers are given at build time, so the record is written once
    // (every later subscription would be one more event for every node).
    let me: Arc<OnceLock<Node>> = Arc::default();
    let (work, table) = (me.clone(), me.clone());
    let node = Node::builder("scale")
        .dense()
        .cluster(&a.cluster)
        .etcd([a.etcd.clone()])
        .etcd_config(|c| {
            c.ttl_secs = a.ttl;
            c.join_timeout = Duration::from_secs(a.join_timeout);
            c.request_timeout = Duration::from_secs(a.request_timeout);
        })
        .drain_deadline(Duration::from_secs(2))
        .subscribe(
            WORK,
            Handler::sync(move |req| {
                if let Some(n) = work.get() {
                    let _ = req.reply(&n.id().get().to_le_bytes());
                }
            }),
        )
        .subscribe(
            TABLE,
            Handler::sync(move |req| {
                if let Some(n) = table.get() {
                    let t = n.peers();
                    let mut out = [0u8; 8];
                    out[..4].copy_from_slice(&(t.len() as u32).to_le_bytes());
                    out[4..].copy_from_slice(&(t.providers(WORK).len() as u32).to_le_bytes());
                    let _ = req.reply(&out);
                }
            }),
        )
        .start()
        .context("starting the node")?;
    let _ = me.set(node.clone());
    node.stop_on_signals()?;
    node.wait();
    Ok(())
}
