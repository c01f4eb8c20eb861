//! Membership through etcd: registration under a lease, ids `0..=1023` taken
//! with a transaction, and a watch feeding the peer table.
//!
//! [`EtcdMembership`] implements the core's membership seam by handing every
//! call to the discovery thread ([`discovery`]); the data model is in the
//! pure [`record`] module.

mod discovery;
pub mod record;

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use domi_core::backoff::Backoff;
use domi_core::{Membership, MembershipContext, MembershipError, NodeId, NodeInfo};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use discovery::Cmd;

/// Settings of [`EtcdMembership`].
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Cluster name (the key prefix `/domi/<cluster>/`); set from the node's.
    pub cluster: String,
    /// Lease TTL in seconds (kept alive every third of it).
    pub ttl_secs: i64,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for one etcd request.
    pub request_timeout: Duration,
    /// Retry backoff while etcd is unreachable, and between attempts to
    /// claim the node's id again when another node holds it.
    pub backoff: Backoff,
    /// Admin HTTP address written in the record, if any.
    pub http: Option<SocketAddr>,
    /// Shards, written in the record; set from the node's.
    pub shards: usize,
}

impl EtcdConfig {
    /// Settings for `endpoints` with the defaults: TTL 3 s, 2 s timeouts.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            cluster: "default".into(),
            ttl_secs: 3,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            http: None,
            shards: 1,
        }
    }
}

/// Membership through etcd.
pub struct EtcdMembership {
    config: EtcdConfig,
    cmds: Option<UnboundedSender<Cmd>>,
    thread: Option<JoinHandle<()>>,
}

impl EtcdMembership {
    /// Membership through the etcd of `config`.
    pub fn new(config: EtcdConfig) -> EtcdMembership {
        EtcdMembership {
            config,
            cmds: None,
            thread: None,
        }
    }
}

impl Membership for EtcdMembership {
    fn join(&mut self, local: &NodeInfo, _addr: SocketAddr) -> Result<NodeId, MembershipError> {
        if self.config.endpoints.is_empty() {
            return Err(MembershipError::Config {
                reason: "no etcd endpoints".into(),
            });
        }
        if self.config.ttl_secs < 1 {
            return Err(MembershipError::Config {
                reason: format!(
                    "lease TTL must be at least 1 s, got {}",
                    self.config.ttl_secs
                ),
            });
        }
        self.config.cluster = local.cluster.clone();
        let (cmd_tx, cmd_rx) = unbounded_channel();
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let config = self.config.clone();
        let local = local.clone();
        let thread = std::thread::Builder::new()
            .name("domi-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = id_tx.send(Err(MembershipError::Unavailable {
                            reason: format!("tokio runtime: {e}"),
                        }));
                        return;
                    }
                };
                rt.block_on(async move {
                    match discovery::join(config, &local).await {
                        Ok(d) => {
                            let _ = id_tx.send(Ok(d.id()));
                            d.run(cmd_rx).await;
                        }
                        Err(e) => {
                            let _ = id_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| MembershipError::Unavailable {
                reason: format!("cannot start the discovery thread: {e}"),
            })?;
        let wait = self.config.connect_timeout + self.config.request_timeout * 4;
        let result = id_rx.recv_timeout(wait).unwrap_or_else(|_| {
            Err(MembershipError::Unavailable {
                reason: format!(
                    "no answer from etcd at {:?} within {wait:?}",
                    self.config.endpoints
                ),
            })
        });
        match result {
            Ok(id) => {
                self.cmds = Some(cmd_tx);
                self.thread = Some(thread);
                Ok(id)
            }
            Err(e) => {
                drop(cmd_tx);
                let _ = thread.join();
                Err(e)
            }
        }
    }

    fn start(&mut self, ctx: MembershipContext) -> Result<(), MembershipError> {
        let cmds = self.cmds.as_ref().ok_or(MembershipError::Config {
            reason: "start before join".into(),
        })?;
        cmds.send(Cmd::Start(ctx))
            .map_err(|_| MembershipError::Unavailable {
                reason: "the discovery thread stopped".into(),
            })
    }

    fn local_changed(&self, _info: &NodeInfo) {
        if let Some(c) = &self.cmds {
            let _ = c.send(Cmd::Update);
        }
    }

    fn leave(&mut self) {
        if let Some(c) = self.cmds.take() {
            let _ = c.send(Cmd::Leave);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EtcdMembership {
    /// A membership dropped without `leave` (e.g. the node failed to start
    /// after `join`) still revokes its lease, so its id is freed at once.
    fn drop(&mut self) {
        self.leave();
    }
}
