//! The discovery thread: one std thread running a tokio current-thread
//! runtime that owns every etcd call of the node.
//!
//! It joins (takes a lease and claims a free id, the lowest unless it loses
//! races to other starting nodes, retrying an
//! unreachable or overloaded etcd up to the join timeout as
//! [`join_policy`](super::join_policy) decides), keeps the node's record
//! under one lease, lists the cluster and watches it from the listed
//! revision + 1, and publishes peer tables into the
//! [`Directory`](domi_core::Directory). When etcd goes away it keeps the last
//! table and retries with jittered backoff; when etcd comes back it reopens
//! the keep-alive and watch streams (etcd-client does not), re-lists, and
//! re-registers under a new lease if the old one ended. A lease that ended
//! while etcd answers (expired, revoked, unknown) is replaced within the
//! session: the watch goes on and nothing is listed again.
//!
//! ## Never writing for an id we do not hold
//!
//! The node's record is only ever written in a transaction that checks the
//! id's claim key: `lease(ids/<id>) == our lease` for updates, and
//! `create_revision(ids/<id>) == 0` (claim and record together) when
//! registering again under a new lease. When another node took the id while
//! our lease was gone, the node claims a free id the way joining does and
//! moves the running node to it ([`MembershipContext::renumber`]): its
//! connections reopen under the new id. Only when no id is free does it stay
//! out of the cluster's tables (still listing and watching, so it works as a
//! client) and retry with backoff.

use std::time::Duration;

use domi_core::backoff::Backoff;
use domi_core::{MembershipContext, NodeId};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, error, info, warn};

use super::balance;
use super::join::{self, explain_tls, revoke, tls_refusal};
use super::record::{self, Change, Claim, NodeRecord};
use super::security::TlsMaterial;
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

/// The shortest time between two peer-table rebuilds from watch events,
/// for a table of `peers`: a change after a quiet spell is published at
/// once, but a storm of joins (every node of a cold-starting cluster
/// registering) is applied in batches. A rebuild costs time in proportion to
/// the table, so the spacing grows with it: 100 ms, plus 1 ms per peer, at
/// most 1 s (a 1024-node cluster's tables rebuild at most once a second
/// each, instead of once per join).
fn publish_every(peers: usize) -> Duration {
    Duration::from_millis(100 + peers.min(900) as u64)
}

pub(super) type EtcdResult<T> = Result<T, etcd_client::Error>;

/// Why a session with etcd could not be set up.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// An etcd call failed (unreachable, timed out, refused).
    #[error("etcd: {source}")]
    Etcd {
        /// The client's error.
        #[from]
        source: etcd_client::Error,
    },
}

/// Whether `e` means our lease no longer exists.
fn lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            record::is_lease_not_found(Some(i32::from(s.code())), s.message())
        }
        other => record::is_lease_not_found(None, &other.to_string()),
    }
}

/// The claim key's lease in the `get` answer of a failed transaction.
/// What a guarded write under `lease` tells about our id: held when the
/// transaction succeeded, otherwise whoever its `or_else` read found.
fn claim_outcome(resp: &etcd_client::TxnResponse, lease: i64) -> Claim {
    if resp.succeeded() {
        Claim::Held
    } else {
        record::claim_state(holder_lease(resp), Some(lease))
    }
}

fn holder_lease(resp: &etcd_client::TxnResponse) -> Option<i64> {
    resp.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.lease()),
        _ => None,
    })
}

/// The streams of one established session.
struct Session {
    watch: WatchStream,
    /// Keep-alive of our lease; `None` while we hold no id (another node
    /// took ours and none is free) and, inside `serve`, while a failed stream
    /// is being reopened.
    keep: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

pub(crate) struct Discovery {
    pub(super) config: EtcdConfig,
    /// The loaded TLS settings, when etcd is reached over TLS.
    pub(super) tls: Option<TlsMaterial>,
    pub(super) client: Client,
    pub(super) lease: Option<i64>,
    pub(super) id: NodeId,
    pub(super) instance: u64,
    pub(super) started_at: u64,
    /// Endpoints the join left out of the client's balance (see
    /// [`balance::rebalance`]).
    pub(super) left_out: Vec<String>,
    /// Whether we hold no id because another node took ours and none is
    /// free (logged once as an error).
    pub(super) stranded: bool,
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
        let mut broken = false;
        loop {
            self.rebalance().await;
            match self.establish(&ctx).await {
                Ok(session) => {
                    if broken {
                        info!(id = %self.id, cluster = %self.config.cluster, "etcd reachable again; membership resynchronized");
                        broken = false;
                    }
                    let claim_retry = if session.keep.is_some() {
                        attempt = 0;
                        None
                    } else {
                        let d = retry_delay(&backoff, attempt);
                        attempt = attempt.saturating_add(1);
                        Some(d)
                    };
                    let flow = self
                        .serve_keeping_watch(&ctx, &mut cmds, session, claim_retry)
                        .await;
                    match flow {
                        Flow::Leave => return self.leave().await,
                        // The backoff ran inside serve, or registering needs
                        // a new session at once (`LeaseGone` is handled
                        // above and never ends the loop).
                        Flow::Reclaim | Flow::LeaseGone => continue,
                        Flow::Retry(reason) => {
                            broken = true;
                            warn!(id = %self.id, cluster = %self.config.cluster, %reason, "etcd session broke; keeping the last peer table")
                        }
                    }
                }
                Err(e) => {
                    if !broken {
                        match self.tls_refusal(&e).await {
                            // E.g. our certificate expired or etcd's CA changed.
                            Some(reason) => {
                                error!(id = %self.id, cluster = %self.config.cluster, error = %e, %reason, "etcd refuses our TLS certificate (or we refuse its); keeping the last peer table, retrying")
                            }
                            None => {
                                warn!(id = %self.id, cluster = %self.config.cluster, error = %e, "etcd unavailable; keeping the last peer table, retrying")
                            }
                        }
                    }
                    broken = true;
                }
            }
            let delay = retry_delay(&backoff, attempt);
            attempt = attempt.saturating_add(1);
            if wait_or_leave(&mut cmds, delay).await {
                return self.leave().await;
            }
        }
    }

    /// The explanation of a TLS refusal behind a session failure, if any
    /// (probing for at most a second: the loop answers no command meanwhile).
    async fn tls_refusal(&self, e: &SessionError) -> Option<String> {
        let tls = self.tls.as_ref()?;
        let SessionError::Etcd { source } = e;
        let within = self.config.connect_timeout.min(Duration::from_secs(1));
        let (verdict, endpoint) = tls_refusal(source, tls, &self.config.endpoints, within).await?;
        Some(explain_tls(
            &verdict,
            tls.has_client_cert(),
            endpoint.as_deref(),
        ))
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

    /// Writes our record under `lease` if, and only if, our id's claim key
    /// hangs on that lease; otherwise reports who holds the id.
    async fn put_record_if_held(
        &mut self,
        ctx: &MembershipContext,
        lease: i64,
    ) -> EtcdResult<Claim> {
        let id_key = record::id_key(&self.config.cluster, self.id);
        let node_key = record::node_key(&self.config.cluster, self.id);
        let txn = Txn::new()
            .when([Compare::lease(id_key.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(
                node_key,
                self.record(ctx),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(id_key, None)]);
        let resp = self.client.txn(txn).await?;
        Ok(claim_outcome(&resp, lease))
    }

    /// Claims our id again under `lease` and writes our record, in one
    /// transaction that only succeeds if nobody holds the id.
    async fn reclaim_with_record(
        &mut self,
        ctx: &MembershipContext,
        lease: i64,
    ) -> EtcdResult<Claim> {
        let id_key = record::id_key(&self.config.cluster, self.id);
        let node_key = record::node_key(&self.config.cluster, self.id);
        let opts = || Some(PutOptions::new().with_lease(lease));
        let txn = Txn::new()
            .when([Compare::create_revision(
                id_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(id_key.as_str(), record::claim_value(self.instance), opts()),
                TxnOp::put(node_key, self.record(ctx), opts()),
            ])
            .or_else([TxnOp::get(id_key, None)]);
        let resp = self.client.txn(txn).await?;
        Ok(claim_outcome(&resp, lease))
    }

    /// Makes sure we hold an id under a live lease with our record written:
    /// ours, or a free one when another node took ours (see
    /// [`Self::take_new_id`]). Returns the lease, or `None` when we hold no
    /// id (nothing was written then).
    async fn register(&mut self, ctx: &MembershipContext) -> EtcdResult<Option<i64>> {
        if let Some(lease) = self.lease {
            match self.put_record_if_held(ctx, lease).await {
                Ok(Claim::Held) => return Ok(Some(lease)),
                Ok(Claim::Free) => {
                    warn!(id = %self.id, cluster = %self.config.cluster, lease, "our lease ended (expired or revoked); registering again");
                }
                Ok(Claim::Taken { holder_lease }) => {
                    warn!(id = %self.id, cluster = %self.config.cluster, holder_lease, "our node id is held under another lease; not writing our record, registering again");
                    revoke(&mut self.client, lease).await;
                }
                Err(e) if lease_not_found(&e) => {
                    warn!(id = %self.id, cluster = %self.config.cluster, lease, "our lease is gone; registering again");
                }
                Err(e) => return Err(e),
            }
            self.lease = None;
        }
        // Held already: a read says so before a lease is granted.
        let id_key = record::id_key(&self.config.cluster, self.id);
        if let Some(kv) = self.client.get(id_key, None).await?.kvs().first() {
            let holder_lease = kv.lease();
            if kv.value() == record::claim_value(self.instance).as_bytes() {
                // Our own claim, from a registration whose answer we missed
                // (timed out, yet applied): keep its lease.
                return self.adopt(ctx, holder_lease).await;
            }
            return self.take_new_id(ctx, None, holder_lease).await;
        }
        let lease = self
            .client
            .lease_grant(self.config.ttl_secs, None)
            .await?
            .id();
        match self.reclaim_with_record(ctx, lease).await {
            Ok(Claim::Held) => {
                self.lease = Some(lease);
                self.stranded = false;
                info!(id = %self.id, cluster = %self.config.cluster, lease, "registered again under a new lease");
                Ok(Some(lease))
            }
            Ok(Claim::Taken { holder_lease }) => {
                self.take_new_id(ctx, Some(lease), holder_lease).await
            }
            Ok(Claim::Free) => {
                // The key vanished between the comparison and the read; try again later.
                revoke(&mut self.client, lease).await;
                Ok(None)
            }
            Err(e) => {
                revoke(&mut self.client, lease).await;
                Err(e)
            }
        }
    }

    /// Our id's claim hangs on `lease`, one of ours whose grant or claim we
    /// saw fail: keep that lease and write our record under it (`None` when
    /// it ended meanwhile; the next registration claims again).
    async fn adopt(&mut self, ctx: &MembershipContext, lease: i64) -> EtcdResult<Option<i64>> {
        match self.put_record_if_held(ctx, lease).await? {
            Claim::Held => {
                self.lease = Some(lease);
                self.stranded = false;
                info!(id = %self.id, cluster = %self.config.cluster, lease, "registered again under a lease of ours found holding our id");
                Ok(Some(lease))
            }
            Claim::Free | Claim::Taken { .. } => Ok(None),
        }
    }

    /// Our id was given to another node (under `holder_lease`) while our
    /// lease was gone: claims a free id under `lease` (or a new one), moves
    /// the running node to it ([`MembershipContext::renumber`]) and writes
    /// our record. `None` when no id is free: the node stays out of the
    /// tables and tries again later.
    async fn take_new_id(
        &mut self,
        ctx: &MembershipContext,
        lease: Option<i64>,
        holder_lease: i64,
    ) -> EtcdResult<Option<i64>> {
        if lease.is_none() && self.stranded && !self.any_id_free().await? {
            // Still full: no lease to grant and revoke for nothing.
            return Ok(None);
        }
        let lease = match lease {
            Some(l) => l,
            None => self
                .client
                .lease_grant(self.config.ttl_secs, None)
                .await?
                .id(),
        };
        let claimed =
            join::claim_free_id(&mut self.client, &self.config, lease, self.instance).await;
        let id = match claimed {
            Ok(Some(id)) => id,
            Ok(None) => {
                if !std::mem::replace(&mut self.stranded, true) {
                    error!(id = %self.id, cluster = %self.config.cluster, holder_lease, "our node id was given to another node while our lease was gone, and no other id is free; staying out of the cluster's tables and retrying");
                }
                revoke(&mut self.client, lease).await;
                return Ok(None);
            }
            Err(e) => {
                revoke(&mut self.client, lease).await;
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut self.id, id);
        self.stranded = false;
        if id == old {
            // The other node left meanwhile, and ours was the lowest free id.
            info!(%id, cluster = %self.config.cluster, lease, "registered again under a new lease");
        } else {
            ctx.renumber(id);
            warn!(old = %old, id = %id, cluster = %self.config.cluster, holder_lease, lease, "our node id was given to another node while our lease was gone; this node now has a new id (its connections reopen under it)");
        }
        // The claim hangs on `lease` now: a failed write is retried by the
        // next registration, which finds the claim held.
        self.lease = Some(lease);
        match self.put_record_if_held(ctx, lease).await? {
            Claim::Held => Ok(Some(lease)),
            Claim::Free | Claim::Taken { .. } => {
                // The lease ended within the last few calls.
                self.lease = None;
                Ok(None)
            }
        }
    }

    /// Whether any id is free (one keys-only read).
    async fn any_id_free(&mut self) -> EtcdResult<bool> {
        let taken = join::taken_ids(&mut self.client, &self.config.cluster).await?;
        Ok(record::lowest_free(taken).is_some())
    }

    /// Registers (re-claiming the id under a new lease if the old one is
    /// gone), lists, and opens the watch and (when registered) keep-alive
    /// streams.
    async fn establish(&mut self, ctx: &MembershipContext) -> Result<Session, SessionError> {
        let lease = self.register(ctx).await?;
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
        let keep = match lease {
            Some(l) => Some(self.client.lease_keep_alive(l).await?),
            None => None,
        };
        debug!(id = %self.id, cluster = %self.config.cluster, revision, registered = keep.is_some(), peers = ctx.directory.load().len(), "listed and watching");
        Ok(Session { watch, keep })
    }

    /// Serves one session: keeps the lease alive, applies watch events and
    /// rewrites the record on `Update`. With `claim_retry`, we do not hold
    /// our id: after that delay it returns [`Flow::Reclaim`].
    async fn serve(
        &mut self,
        ctx: &MembershipContext,
        cmds: &mut UnboundedReceiver<Cmd>,
        session: Session,
        claim_retry: Option<Duration>,
    ) -> (Flow, Option<WatchStream>) {
        let Session {
            mut watch,
            mut keep,
        } = session;
        let mut tick = tokio::time::interval(self.config.renew_every());
        // Ticks missed while the keep-alive stream was being reopened are not
        // made up in a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reclaim = async {
            match claim_retry {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(reclaim);
        // When the keep-alive stream failed: when to reopen it, and how
        // many times in a row it failed.
        let mut keep_retry: Option<(tokio::time::Instant, u32)> = None;
        let ttl = self.config.ttl();
        let mut last_ack = tokio::time::Instant::now();
        let mut pending: Vec<Change> = Vec::new();
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut last_publish: Option<tokio::time::Instant> = None;
        // When to try again to rewrite our record after an update failed
        // (commands wait meanwhile; the next write uses the current info).
        let mut rewrite_at: Option<tokio::time::Instant> = None;
        let flow = loop {
            tokio::select! {
                _ = &mut reclaim => break Flow::Reclaim,
                _ = tick.tick(), if keep.is_some() => {
                    // Renewals answered by nothing for a whole TTL: the
                    // stream is dead without saying so; reopen it (a lease
                    // that ended then shows as such).
                    if last_ack.elapsed() > ttl {
                        let e = etcd_client::Error::LeaseKeepAliveError(format!("no keep-alive answer within {ttl:?}"));
                        if let Some(flow) = self.keep_alive_failed(&e, &mut keep, &mut keep_retry) {
                            break flow;
                        }
                    }
                    if let Some((keeper, _)) = keep.as_mut() {
                        if let Err(e) = keeper.keep_alive().await {
                            if let Some(flow) = self.keep_alive_failed(&e, &mut keep, &mut keep_retry) {
                                break flow;
                            }
                        }
                    }
                }
                _ = async {
                    match keep_retry {
                        Some((t, _)) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let failures = keep_retry.map(|(_, n)| n).unwrap_or(0);
                    keep_retry = None;
                    match self.reopen_keep_alive().await {
                        Ok(k) => {
                            debug!(id = %self.id, failures, "keep-alive stream reopened");
                            keep = Some(k);
                        }
                        Err(e) => {
                            // Unanswered for a whole TTL: the lease has
                            // likely ended; let registering find out.
                            // The member may be cut off, its watch silent:
                            // a new session (rebalanced, relisted).
                            if last_ack.elapsed() > ttl {
                                break Flow::Retry(format!("keep-alive: no renewal for {ttl:?}; last error: {e}"));
                            }
                            keep_retry = Some((tokio::time::Instant::now(), failures));
                            if let Some(flow) = self.keep_alive_failed(&e, &mut keep, &mut keep_retry) {
                                break flow;
                            }
                        }
                    }
                }
                msg = async {
                    match keep.as_mut() {
                        Some((_, alive)) => alive.message().await,
                        None => std::future::pending().await,
                    }
                } => match msg {
                    Ok(Some(r)) if r.ttl() <= 0 => {
                        self.lease = None;
                        break Flow::LeaseGone;
                    }
                    Ok(Some(_)) => last_ack = tokio::time::Instant::now(),
                    Ok(None) => {
                        let e = etcd_client::Error::LeaseKeepAliveError("keep-alive stream ended".into());
                        if let Some(flow) = self.keep_alive_failed(&e, &mut keep, &mut keep_retry) {
                            break flow;
                        }
                    }
                    Err(e) => {
                        if let Some(flow) = self.keep_alive_failed(&e, &mut keep, &mut keep_retry) {
                            break flow;
                        }
                    }
                },
                _ = async {
                    match flush_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    flush_at = None;
                    last_publish = Some(tokio::time::Instant::now());
                    self.publish(ctx, &mut pending);
                }
                msg = watch.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            break Flow::Retry(format!("watch canceled (compacted at {})", resp.compact_revision()));
                        }
                        pending.extend(resp.events().iter().filter_map(|ev| {
                            let kv = ev.kv()?;
                            Some(match ev.event_type() {
                                EventType::Put => Change::Put { key: kv.key().to_vec(), value: kv.value().to_vec() },
                                EventType::Delete => Change::Delete { key: kv.key().to_vec() },
                            })
                        }));
                        // One table rebuild per batch, and batches spaced
                        // by publish_every: a quiet cluster's change is
                        // published at once, a storm's are coalesced.
                        if !pending.is_empty() && flush_at.is_none() {
                            let now = tokio::time::Instant::now();
                            let due = last_publish
                                .map_or(now, |t| t + publish_every(ctx.directory.load().len()));
                            if due <= now {
                                last_publish = Some(now);
                                self.publish(ctx, &mut pending);
                            } else {
                                flush_at = Some(due);
                            }
                        }
                    }
                    Ok(None) => break Flow::Retry("watch stream ended".into()),
                    Err(e) => break Flow::Retry(format!("watch: {e}")),
                },
                cmd = async {
                    match rewrite_at {
                        Some(t) => {
                            tokio::time::sleep_until(t).await;
                            Some(Cmd::Update)
                        }
                        None => cmds.recv().await,
                    }
                } => match cmd {
                    Some(Cmd::Update) => {
                        rewrite_at = None;
                        // Without a lease we hold nothing to write; the record
                        // is written from the current info when we register.
                        let Some(lease) = self.lease else { continue };
                        match self.put_record_if_held(ctx, lease).await {
                            Ok(Claim::Held) => {}
                            Ok(Claim::Free) => {
                                self.lease = None;
                                break Flow::LeaseGone;
                            }
                            Ok(Claim::Taken { holder_lease }) => {
                                warn!(id = %self.id, cluster = %self.config.cluster, holder_lease, "our node id is held under another lease; not writing our record, registering again");
                                revoke(&mut self.client, lease).await;
                                self.lease = None;
                                // Registering finds out whose it is at once.
                                break Flow::Reclaim;
                            }
                            Err(e) if lease_not_found(&e) => {
                                self.lease = None;
                                break Flow::LeaseGone;
                            }
                            // E.g. an overloaded etcd timing the write out:
                            // the session stays, the write is tried again at
                            // the next keep-alive tick.
                            Err(e) => {
                                let delay = retry_delay(&self.config.backoff, 0);
                                debug!(id = %self.id, error = %e, retry_in = ?delay, "could not update our record; trying again");
                                rewrite_at = Some(tokio::time::Instant::now() + delay);
                            }
                        }
                    }
                    Some(Cmd::Start(_)) => {}
                    Some(Cmd::Leave) | None => break Flow::Leave,
                },
            }
        };
        // Changes already received still reach the table, which is kept
        // while etcd is away (leaving discards it anyway).
        if !matches!(flow, Flow::Leave) {
            self.publish(ctx, &mut pending);
        }
        let watch = matches!(flow, Flow::LeaseGone).then_some(watch);
        (flow, watch)
    }

    /// Serves `session`; when only the lease ended, registers again after
    /// the backoff (a stop is answered meanwhile) and serves on with the
    /// same watch, rather than list the whole cluster again (under a storm,
    /// relisting is what keeps etcd behind). Returns how serving ended
    /// otherwise.
    async fn serve_keeping_watch(
        &mut self,
        ctx: &MembershipContext,
        cmds: &mut UnboundedReceiver<Cmd>,
        mut session: Session,
        mut claim_retry: Option<Duration>,
    ) -> Flow {
        loop {
            let watch = match self.serve(ctx, cmds, session, claim_retry).await {
                (Flow::LeaseGone, Some(watch)) => watch,
                (flow, _) => return flow,
            };
            if wait_or_leave(cmds, retry_delay(&self.config.backoff, 0)).await {
                return Flow::Leave;
            }
            let keep = match self.reregister(ctx).await {
                Ok(keep) => keep,
                Err(flow) => return flow,
            };
            session = Session {
                watch,
                keep: Some(keep),
            };
            claim_retry = None;
        }
    }

    /// Our lease ended while the watch still works: registers again and
    /// opens a keep-alive stream for the new lease, keeping the watch (no
    /// new listing). `Err` with the flow to follow when that is not enough:
    /// a new session at once when we took a new id (our watch skipped the
    /// events of our old id, which its new holder wrote) or hold none, the
    /// usual retry when etcd failed.
    async fn reregister(
        &mut self,
        ctx: &MembershipContext,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), Flow> {
        let before = self.id;
        if self.lease.is_none() {
            // (With a lease still in hand, registering says what it found.)
            warn!(id = %self.id, cluster = %self.config.cluster, "our lease ended; registering again (the watch goes on)");
        }
        let lease = match self.register(ctx).await {
            Ok(Some(lease)) if self.id == before => lease,
            Ok(_) => return Err(Flow::Reclaim),
            Err(e) => return Err(Flow::Retry(format!("registering again: {e}"))),
        };
        let limit = self.config.request_timeout;
        match tokio::time::timeout(limit, self.client.lease_keep_alive(lease)).await {
            Ok(Ok(keep)) => {
                debug!(id = %self.id, cluster = %self.config.cluster, lease, "registered again; the watch goes on");
                Ok(keep)
            }
            Ok(Err(e)) => Err(Flow::Retry(format!("keep-alive for the new lease: {e}"))),
            Err(_) => Err(Flow::Retry(format!(
                "keep-alive for the new lease: no answer within {limit:?}"
            ))),
        }
    }

    /// Takes members that refuse connections out of the client's balance
    /// (probing for at most a second; see [`balance::rebalance`]).
    async fn rebalance(&mut self) {
        let within = self.config.connect_timeout.min(Duration::from_secs(1));
        balance::rebalance(
            &self.client,
            &self.config.endpoints,
            &mut self.left_out,
            within,
        )
        .await;
    }

    /// A keep-alive failure with `e`. An overloaded etcd times renewals out
    /// while the lease lives on until its TTL, so the session (and its watch)
    /// is kept and only the keep-alive stream is reopened, with backoff
    /// within a third of the TTL; listing every record again would only add
    /// to etcd's load. A lease etcd no longer knows ends the serving
    /// (`Some(Flow::LeaseGone)`), to register again keeping the watch.
    fn keep_alive_failed(
        &mut self,
        e: &etcd_client::Error,
        keep: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
        retry: &mut Option<(tokio::time::Instant, u32)>,
    ) -> Option<Flow> {
        if lease_not_found(e) || self.lease.is_none() {
            self.lease = None;
            debug!(id = %self.id, error = %e, "keep-alive: our lease is gone; registering again");
            return Some(Flow::LeaseGone);
        }
        let failures = retry.map(|(_, n)| n).unwrap_or(0).saturating_add(1);
        let delay = keep_alive_retry(&self.config, failures, fastrand::f64());
        if failures == 1 {
            warn!(id = %self.id, cluster = %self.config.cluster, error = %e, retry_in = ?delay, "keep-alive failed; reopening its stream, the lease lives until its TTL");
        } else {
            debug!(id = %self.id, failures, error = %e, retry_in = ?delay, "keep-alive failed again");
        }
        *keep = None;
        *retry = Some((tokio::time::Instant::now() + delay, failures));
        None
    }

    /// Opens a new keep-alive stream for our lease and renews the lease on it,
    /// within the request timeout (a streaming call, which the client's own
    /// timeout does not bound), after rebalancing as a new session does.
    async fn reopen_keep_alive(
        &mut self,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), etcd_client::Error> {
        let Some(lease) = self.lease else {
            return Err(etcd_client::Error::LeaseKeepAliveError(
                "no lease to keep alive".into(),
            ));
        };
        self.rebalance().await;
        let limit = self.config.request_timeout;
        let client = &mut self.client;
        let reopened = async {
            let (mut keeper, stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok((keeper, stream))
        };
        match tokio::time::timeout(limit, reopened).await {
            Ok(r) => r,
            Err(_) => Err(etcd_client::Error::LeaseKeepAliveError(format!(
                "no answer within {limit:?}"
            ))),
        }
    }

    /// Applies the watch changes gathered so far to the peer table, with one
    /// rebuild.
    fn publish(&self, ctx: &MembershipContext, pending: &mut Vec<Change>) {
        if pending.is_empty() {
            return;
        }
        let changes = std::mem::take(pending);
        let (cluster, id) = (self.config.cluster.as_str(), self.id);
        ctx.directory.update(|cur| {
            let (t, bad) = record::apply_all(cluster, id, cur, &changes);
            for e in bad {
                warn!(error = %e, "ignoring an unusable node record");
            }
            t
        });
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

/// How a session ended.
enum Flow {
    /// The node leaves: revoke and stop.
    Leave,
    /// We do not hold an id: register again now (any backoff already ran).
    Reclaim,
    /// The session broke: wait with backoff and establish a new one.
    Retry(String),
    /// Our lease ended (expired, revoked, or unknown to etcd) while the
    /// watch still works: register again, keeping it.
    LeaseGone,
}

/// The wait before reopening a keep-alive stream after `failures` failures
/// in a row (`unit` in `[0, 1)` is the jitter draw): the join backoff, never
/// longer than one renewal interval, so the lease gets several tries within
/// its TTL.
fn keep_alive_retry(config: &EtcdConfig, failures: u32, unit: f64) -> Duration {
    config
        .backoff
        .delay(failures.saturating_sub(1), unit)
        .min(config.renew_every())
}

/// Sleeps `delay`, answering commands meanwhile: `true` when the node
/// leaves (updates are dropped: the record is written from the current
/// info when registering).
async fn wait_or_leave(cmds: &mut UnboundedReceiver<Cmd>, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return false,
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Leave) | None => return true,
                _ => {}
            }
        }
    }
}

fn retry_delay(backoff: &Backoff, attempt: u32) -> Duration {
    backoff.delay(attempt, fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_are_spaced_by_the_table_size() {
        assert_eq!(publish_every(0), Duration::from_millis(100));
        assert_eq!(publish_every(3), Duration::from_millis(103));
        assert_eq!(publish_every(400), Duration::from_millis(500));
        assert_eq!(publish_every(1024), Duration::from_secs(1));
        assert_eq!(publish_every(usize::MAX), Duration::from_secs(1));
    }

    #[test]
    fn keep_alive_reopens_back_off_within_a_renewal_interval() {
        let c = EtcdConfig::new(["http://127.0.0.1:2379"]);
        assert_eq!(c.renew_every(), Duration::from_secs(1));
        assert_eq!(keep_alive_retry(&c, 1, 1.0), Duration::from_millis(100));
        assert_eq!(keep_alive_retry(&c, 3, 1.0), Duration::from_millis(400));
        assert_eq!(keep_alive_retry(&c, 9, 1.0), Duration::from_secs(1));
        let long = EtcdConfig {
            ttl_secs: 30,
            ..c.clone()
        };
        assert_eq!(long.renew_every(), Duration::from_secs(10));
        assert_eq!(keep_alive_retry(&long, 9, 1.0), Duration::from_secs(2));
    }
}
