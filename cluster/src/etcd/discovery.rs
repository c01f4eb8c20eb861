//! The discovery thread: one std thread running a tokio current-thread
//! runtime that owns every etcd call of the node.
//!
//! It claims the node's id, keeps the node's record under one lease, lists the
//! cluster and watches it from the listed revision + 1, and publishes peer
//! tables into the [`Directory`](domi_core::Directory). When etcd goes away it
//! keeps the last table and retries with jittered backoff; when etcd comes
//! back it reopens the keep-alive and watch streams (etcd-client does not),
//! re-lists, and re-registers under a new lease if the old one expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domi_core::backoff::Backoff;
use domi_core::{MembershipContext, MembershipError, NodeId, NodeInfo};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, info, warn};

use super::record::{self, Change, NodeRecord};
use super::EtcdConfig;

/// Messages from the node to its discovery thread.
pub(crate) enum Cmd {
    /// Begin publishing into this context.
    Start(MembershipContext),
    /// The local node changed: rewrite its record.
    Update,
    /// Revoke the lease (keys vanish at once) and stop.
    Leave,
}

type EtcdResult<T> = Result<T, etcd_client::Error>;

fn unavailable(e: impl std::fmt::Display) -> MembershipError {
    MembershipError::Unavailable {
        reason: e.to_string(),
    }
}

pub(crate) struct Discovery {
    config: EtcdConfig,
    client: Client,
    lease: Option<i64>,
    id: NodeId,
    instance: u64,
    started_at: u64,
}

/// Connects, takes a lease and claims the lowest free id.
pub(crate) async fn join(
    config: EtcdConfig,
    local: &NodeInfo,
) -> Result<Discovery, MembershipError> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_timeout(config.request_timeout);
    let mut client = Client::connect(&config.endpoints, Some(opts))
        .await
        .map_err(unavailable)?;
    let lease = client
        .lease_grant(config.ttl_secs, None)
        .await
        .map_err(unavailable)?
        .id();
    let id = claim_lowest(&mut client, &config.cluster, lease, local.instance).await?;
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    info!(id = %id, cluster = %config.cluster, lease, "joined the cluster through etcd");
    Ok(Discovery {
        config,
        client,
        lease: Some(lease),
        id,
        instance: local.instance,
        started_at,
    })
}

/// Claims the lowest free id with one transaction per attempt
/// (create-revision = 0 on its id key); retries when another node wins a race.
async fn claim_lowest(
    client: &mut Client,
    cluster: &str,
    lease: i64,
    instance: u64,
) -> Result<NodeId, MembershipError> {
    let prefix = record::ids_prefix(cluster);
    loop {
        let listed = client
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(unavailable)?;
        let taken = listed
            .kvs()
            .iter()
            .filter_map(|kv| record::parse_id(&prefix, kv.key()));
        let Some(id) = record::lowest_free(taken) else {
            return Err(MembershipError::ClusterFull {
                cluster: cluster.into(),
            });
        };
        if try_claim(client, cluster, id, lease, instance)
            .await
            .map_err(unavailable)?
        {
            return Ok(id);
        }
        debug!(%id, "lost the race for an id; trying the next one");
    }
}

async fn try_claim(
    client: &mut Client,
    cluster: &str,
    id: NodeId,
    lease: i64,
    instance: u64,
) -> EtcdResult<bool> {
    let key = record::id_key(cluster, id);
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            format!("{instance:016x}"),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    Ok(client.txn(txn).await?.succeeded())
}

impl Discovery {
    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    /// Runs until `Leave` (or the node dropping its sender).
    pub(crate) async fn run(mut self, mut cmds: UnboundedReceiver<Cmd>) {
        let ctx = loop {
            match cmds.recv().await {
                Some(Cmd::Start(ctx)) => break ctx,
                Some(Cmd::Update) => continue,
                Some(Cmd::Leave) | None => return self.leave().await,
            }
        };
        let backoff = self.config.backoff;
        let mut attempt = 0u32;
        loop {
            match self.establish(&ctx).await {
                Ok((watch, keeper, alive)) => {
                    if attempt > 0 {
                        info!(id = %self.id, "etcd reachable again; membership resynchronized");
                    }
                    attempt = 0;
                    match self.serve(&ctx, &mut cmds, watch, keeper, alive).await {
                        Flow::Leave => return self.leave().await,
                        Flow::Retry(reason) => {
                            warn!(id = %self.id, %reason, "etcd session broke; keeping the last peer table")
                        }
                    }
                }
                Err(e) => {
                    if attempt == 0 {
                        warn!(id = %self.id, error = %e, "etcd unavailable; keeping the last peer table, retrying");
                    }
                }
            }
            let delay = retry_delay(&backoff, attempt);
            attempt = attempt.saturating_add(1);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Leave) | None => return self.leave().await,
                        _ => {} // the record is rewritten from the current info on reconnect
                    }
                }
            }
        }
    }

    fn record(&self, ctx: &MembershipContext) -> Vec<u8> {
        let info = ctx.local.info();
        NodeRecord::from_info(
            &info,
            ctx.local.addr(),
            self.config.http,
            self.config.shards,
            self.started_at,
        )
        .to_json()
    }

    async fn put_record(&mut self, ctx: &MembershipContext, lease: i64) -> EtcdResult<()> {
        let key = record::node_key(&self.config.cluster, self.id);
        self.client
            .put(
                key,
                self.record(ctx),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map(|_| ())
    }

    /// Registers (re-claiming the id under a new lease if the old one is
    /// gone), lists, and opens the watch and keep-alive streams.
    async fn establish(
        &mut self,
        ctx: &MembershipContext,
    ) -> EtcdResult<(WatchStream, LeaseKeeper, LeaseKeepAliveStream)> {
        let lease = match self.lease {
            Some(l) => l,
            None => self.renew_lease().await?,
        };
        let lease = match self.put_record(ctx, lease).await {
            Ok(()) => lease,
            Err(e) if e.to_string().contains("lease not found") => {
                warn!(id = %self.id, "lease expired during an outage; registering again");
                self.lease = None;
                let l = self.renew_lease().await?;
                self.put_record(ctx, l).await?;
                l
            }
            Err(e) => return Err(e),
        };
        let prefix = record::nodes_prefix(&self.config.cluster);
        let listed = self
            .client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = listed.header().map(|h| h.revision()).unwrap_or(0);
        let kvs: Vec<(Vec<u8>, Vec<u8>)> = listed
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect();
        let (cluster, id) = (self.config.cluster.clone(), self.id);
        ctx.directory.update(|cur| {
            let local = cur.get(id).cloned().expect("the node keeps its own entry");
            let (table, bad) = record::table_from_list(&cluster, &local, kvs, cur.epoch() + 1);
            for (peer, e) in bad {
                warn!(%peer, error = %e, "ignoring an unusable node record");
            }
            table
        });
        let watch = self
            .client
            .watch(
                prefix.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await?;
        let (keeper, alive) = self.client.lease_keep_alive(lease).await?;
        debug!(id = %self.id, revision, peers = ctx.directory.load().len(), "listed and watching");
        Ok((watch, keeper, alive))
    }

    /// A new lease, and our id re-claimed under it.
    async fn renew_lease(&mut self) -> EtcdResult<i64> {
        let lease = self
            .client
            .lease_grant(self.config.ttl_secs, None)
            .await?
            .id();
        self.lease = Some(lease);
        if !try_claim(
            &mut self.client,
            &self.config.cluster,
            self.id,
            lease,
            self.instance,
        )
        .await?
        {
            // Another node took our id while our lease was gone. The id is on
            // the wire already, so keep it and say so loudly.
            tracing::error!(id = %self.id, "our node id was taken by another node while our lease was lost");
        }
        Ok(lease)
    }

    async fn serve(
        &mut self,
        ctx: &MembershipContext,
        cmds: &mut UnboundedReceiver<Cmd>,
        mut watch: WatchStream,
        mut keeper: LeaseKeeper,
        mut alive: LeaseKeepAliveStream,
    ) -> Flow {
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.ttl_secs as u64 * 1000 / 3).max(100),
        ));
        let cluster = self.config.cluster.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        return Flow::Retry(format!("keep-alive: {e}"));
                    }
                }
                msg = alive.message() => match msg {
                    Ok(Some(r)) if r.ttl() <= 0 => {
                        self.lease = None;
                        return Flow::Retry("lease expired".into());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Flow::Retry("keep-alive stream ended".into()),
                    Err(e) => return Flow::Retry(format!("keep-alive stream: {e}")),
                },
                msg = watch.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            return Flow::Retry(format!("watch canceled (compacted at {})", resp.compact_revision()));
                        }
                        let changes: Vec<Change> = resp.events().iter().filter_map(|ev| {
                            let kv = ev.kv()?;
                            Some(match ev.event_type() {
                                EventType::Put => Change::Put { key: kv.key().to_vec(), value: kv.value().to_vec() },
                                EventType::Delete => Change::Delete { key: kv.key().to_vec() },
                            })
                        }).collect();
                        if !changes.is_empty() {
                            let id = self.id;
                            ctx.directory.update(|cur| {
                                let (t, bad) = record::apply_all(&cluster, id, cur, &changes);
                                for e in bad {
                                    warn!(error = %e, "ignoring an unusable node record");
                                }
                                t
                            });
                        }
                    }
                    Ok(None) => return Flow::Retry("watch stream ended".into()),
                    Err(e) => return Flow::Retry(format!("watch: {e}")),
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Update) => {
                        let lease = self.lease.unwrap_or_default();
                        if let Err(e) = self.put_record(ctx, lease).await {
                            return Flow::Retry(format!("updating the record: {e}"));
                        }
                    }
                    Some(Cmd::Start(_)) => {}
                    Some(Cmd::Leave) | None => return Flow::Leave,
                },
            }
        }
    }

    /// Revokes the lease so every key of the node disappears at once.
    async fn leave(mut self) {
        if let Some(lease) = self.lease.take() {
            let revoke = self.client.lease_revoke(lease);
            match tokio::time::timeout(Duration::from_secs(2), revoke).await {
                Ok(Ok(_)) => info!(id = %self.id, "left the cluster (lease revoked)"),
                Ok(Err(e)) => {
                    warn!(id = %self.id, error = %e, "could not revoke the lease; keys expire with its TTL")
                }
                Err(_) => warn!(id = %self.id, "lease revoke timed out; keys expire with its TTL"),
            }
        }
    }
}

enum Flow {
    Leave,
    Retry(String),
}

fn retry_delay(backoff: &Backoff, attempt: u32) -> Duration {
    backoff.delay(attempt, fastrand::f64())
}
