//! The discovery thread: one std thread running a tokio current-thread
//! runtime that owns every etcd call of the node.
//!
//! It joins (takes a lease and claims the lowest free id, retrying an
//! unreachable or overloaded etcd up to the join timeout as
//! [`join_policy`](super::join_policy) decides), keeps the node's record
//! under one lease, lists the cluster and watches it from the listed
//! revision + 1, and publishes peer tables into the
//! [`Directory`](domi_core::Directory). When etcd goes away it keeps the last
//! table and retries with jittered backoff; when etcd comes back it reopens
//! the keep-alive and watch streams (etcd-client does not), re-lists, and
//! re-registers under a new lease if the old one ended.
//!
//! ## Never writing for an id we do not hold
//!
//! The node's record is only ever written in a transaction that checks the
//! id's claim key: `lease(ids/<id>) == our lease` for updates, and
//! `create_revision(ids/<id>) == 0` (claim and record together) when
//! registering again under a new lease. When another node took the id while
//! our lease was gone, the id cannot change (it is baked into the running
//! node's wire identity), so the node logs an error, writes nothing, stays
//! out of the cluster's tables, keeps listing and watching (it still works as
//! a client), and retries the claim with backoff until the id is free again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use domi_core::backoff::Backoff;
use domi_core::{MembershipContext, MembershipError, NodeId, NodeInfo};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, error, info, warn};

use super::join_policy::{self, ErrorKind, GiveUp, JoinPolicy, Next};
use super::record::{self, Change, Claim, NodeRecord};
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
    /// Keep-alive of our lease; `None` while another node holds our id.
    keep: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

pub(crate) struct Discovery {
    config: EtcdConfig,
    client: Client,
    lease: Option<i64>,
    id: NodeId,
    instance: u64,
    started_at: u64,
}

/// A step of a join attempt, named in its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Connect,
    GrantLease,
    ListIds,
    ClaimId,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Connect => "connecting",
            Step::GrantLease => "granting a lease",
            Step::ListIds => "listing the taken ids",
            Step::ClaimId => "claiming an id",
        })
    }
}

/// Why one join attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// An etcd call failed.
    #[error("{step}: {source}")]
    Etcd {
        /// What the attempt was doing.
        step: Step,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// The attempt used up its time budget.
    #[error("{step}: no answer within {after:?}")]
    TimedOut {
        /// What the attempt was doing.
        step: Step,
        /// The attempt's budget.
        after: Duration,
    },
    /// Every id is taken.
    #[error("cluster {cluster:?} is full")]
    Full {
        /// The cluster.
        cluster: String,
    },
}

impl AttemptError {
    fn etcd(step: Step) -> impl FnOnce(etcd_client::Error) -> AttemptError {
        move |source| AttemptError::Etcd { step, source }
    }

    /// Whether retrying can fix it.
    fn kind(&self) -> ErrorKind {
        use etcd_client::Error as E;
        match self {
            AttemptError::Etcd { source, .. } => match source {
                E::GRpcStatus(s) => join_policy::status_kind(i32::from(s.code()), s.message()),
                // Settings the client rejects before any request.
                E::InvalidArgs(_)
                | E::InvalidUri(_)
                | E::InvalidMetadataValue(_)
                | E::EndpointError(_)
                | E::EndpointsNotManaged => ErrorKind::Permanent,
                // I/O and transport failures, and anything else: hiccups.
                _ => ErrorKind::Transient,
            },
            AttemptError::TimedOut { .. } => ErrorKind::Transient,
            AttemptError::Full { .. } => ErrorKind::Permanent,
        }
    }

    /// The node's error when the join gives up (`why`) on this failure.
    fn into_membership(
        self,
        why: GiveUp,
        config: &EtcdConfig,
        attempts: u32,
        elapsed: Duration,
    ) -> MembershipError {
        match (why, self) {
            (_, AttemptError::Full { cluster }) => MembershipError::ClusterFull { cluster },
            (GiveUp::TimedOut, e) => MembershipError::JoinTimedOut {
                store: format!("etcd at {:?}", config.endpoints),
                attempts,
                elapsed,
                timeout: config.join_timeout,
                last_error: e.to_string(),
            },
            (
                GiveUp::Permanent,
                AttemptError::Etcd {
                    step,
                    source: etcd_client::Error::GRpcStatus(s),
                },
            ) => MembershipError::Refused {
                reason: format!(
                    "{step}: etcd at {:?} answered {:?}: {}",
                    config.endpoints,
                    s.code(),
                    s.message()
                ),
            },
            (GiveUp::Permanent, e) => MembershipError::Config {
                reason: format!("etcd at {:?}: {e}", config.endpoints),
            },
        }
    }
}

/// What an attempt got to, readable after it was cut short.
struct Progress {
    step: Step,
    /// The lease granted by this attempt, until the join holds it.
    lease: Option<i64>,
}

/// Connects, takes a lease and claims the lowest free id, retrying with
/// jittered backoff while etcd is unreachable or overloaded, up to the join
/// timeout (see [`super::join_policy`]).
pub(crate) async fn join(
    config: EtcdConfig,
    local: &NodeInfo,
) -> Result<Discovery, MembershipError> {
    let policy = JoinPolicy::of(&config);
    let started = Instant::now();
    let mut client: Option<Client> = None;
    let mut attempts = 0u32;
    loop {
        attempts = attempts.saturating_add(1);
        let budget = policy.attempt_budget(started.elapsed());
        let mut progress = Progress {
            step: Step::Connect,
            lease: None,
        };
        let outcome = tokio::time::timeout(
            budget,
            attempt(&config, &mut client, local.instance, &mut progress),
        )
        .await;
        let err = match outcome {
            Ok(Ok((client, lease, id))) => {
                let started_at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                info!(id = %id, cluster = %config.cluster, lease, attempts, elapsed = ?started.elapsed(), "joined the cluster through etcd");
                return Ok(Discovery {
                    config,
                    client,
                    lease: Some(lease),
                    id,
                    instance: local.instance,
                    started_at,
                });
            }
            Ok(Err(e)) => e,
            Err(_) => AttemptError::TimedOut {
                step: progress.step,
                after: budget,
            },
        };
        let elapsed = started.elapsed();
        let next = policy.after_failure(elapsed, attempts, err.kind(), fastrand::f64());
        if let (Some(lease), Some(c)) = (progress.lease, client.as_ref()) {
            // Whatever the attempt claimed hangs on this lease: free it now
            // rather than after its TTL.
            let mut c = c.clone();
            match next {
                Next::Retry(_) => {
                    let within = config.request_timeout;
                    tokio::spawn(async move { revoke_within(&mut c, lease, within).await });
                }
                Next::GiveUp(_) => {
                    let within = policy.grace_left(elapsed).min(config.request_timeout);
                    revoke_within(&mut c, lease, within).await;
                }
            }
        }
        match next {
            Next::Retry(delay) => {
                if attempts == 1 {
                    warn!(cluster = %config.cluster, endpoints = ?config.endpoints, error = %err, retry_in = ?delay, join_timeout = ?config.join_timeout, "cannot join through etcd yet; retrying");
                } else {
                    debug!(cluster = %config.cluster, attempts, elapsed = ?elapsed, error = %err, retry_in = ?delay, "join attempt failed; retrying");
                }
                tokio::time::sleep(delay).await;
            }
            Next::GiveUp(why) => {
                let e = err.into_membership(why, &config, attempts, started.elapsed());
                warn!(cluster = %config.cluster, attempts, elapsed = ?started.elapsed(), error = %e, "giving up joining through etcd");
                return Err(e);
            }
        }
    }
}

/// One join attempt: connects (once per join), takes a lease and claims the
/// lowest free id. Every request is bounded by the request timeout; the
/// caller bounds the whole attempt.
async fn attempt(
    config: &EtcdConfig,
    client: &mut Option<Client>,
    instance: u64,
    progress: &mut Progress,
) -> Result<(Client, i64, NodeId), AttemptError> {
    let c = match client {
        Some(c) => c,
        None => {
            progress.step = Step::Connect;
            let opts = ConnectOptions::new()
                .with_connect_timeout(config.connect_timeout)
                .with_timeout(config.request_timeout);
            let c = Client::connect(&config.endpoints, Some(opts))
                .await
                .map_err(AttemptError::etcd(Step::Connect))?;
            client.insert(c)
        }
    };
    progress.step = Step::GrantLease;
    let lease = c
        .lease_grant(config.ttl_secs, None)
        .await
        .map_err(AttemptError::etcd(Step::GrantLease))?
        .id();
    progress.lease = Some(lease);
    let id = claim_lowest(c, &config.cluster, lease, instance, progress).await?;
    Ok((c.clone(), lease, id))
}

/// Claims the lowest free id with one transaction per try
/// (create-revision = 0 on its id key); tries again when another node wins a race.
async fn claim_lowest(
    client: &mut Client,
    cluster: &str,
    lease: i64,
    instance: u64,
    progress: &mut Progress,
) -> Result<NodeId, AttemptError> {
    let prefix = record::ids_prefix(cluster);
    loop {
        progress.step = Step::ListIds;
        let listed = client
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(AttemptError::etcd(Step::ListIds))?;
        let taken = listed
            .kvs()
            .iter()
            .filter_map(|kv| record::parse_id(&prefix, kv.key()));
        let Some(id) = record::lowest_free(taken) else {
            return Err(AttemptError::Full {
                cluster: cluster.into(),
            });
        };
        progress.step = Step::ClaimId;
        if try_claim(client, cluster, id, lease, instance)
            .await
            .map_err(AttemptError::etcd(Step::ClaimId))?
        {
            return Ok(id);
        }
        debug!(%id, "lost the race for an id; trying the next one");
    }
}

/// Revokes `lease` (best effort, within 2 s).
async fn revoke(client: &mut Client, lease: i64) {
    revoke_within(client, lease, Duration::from_secs(2)).await
}

/// Revokes `lease` (best effort, within `within`).
async fn revoke_within(client: &mut Client, lease: i64, within: Duration) {
    match tokio::time::timeout(within, client.lease_revoke(lease)).await {
        Ok(Ok(_)) => debug!(lease, "lease revoked"),
        Ok(Err(e)) => debug!(lease, error = %e, "could not revoke a lease; it ends with its TTL"),
        Err(_) => debug!(lease, "lease revoke timed out; it ends with its TTL"),
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
        let mut broken = false;
        loop {
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
                    match self.serve(&ctx, &mut cmds, session, claim_retry).await {
                        Flow::Leave => return self.leave().await,
                        Flow::Reclaim => continue, // the backoff ran inside serve
                        Flow::Retry(reason) => {
                            broken = true;
                            warn!(id = %self.id, cluster = %self.config.cluster, %reason, "etcd session broke; keeping the last peer table")
                        }
                    }
                }
                Err(e) => {
                    if !broken {
                        warn!(id = %self.id, cluster = %self.config.cluster, error = %e, "etcd unavailable; keeping the last peer table, retrying");
                    }
                    broken = true;
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
                TxnOp::put(id_key.as_str(), format!("{:016x}", self.instance), opts()),
                TxnOp::put(node_key, self.record(ctx), opts()),
            ])
            .or_else([TxnOp::get(id_key, None)]);
        let resp = self.client.txn(txn).await?;
        Ok(claim_outcome(&resp, lease))
    }

    /// Makes sure we hold our id under a live lease with our record written.
    /// Returns the lease, or `None` when another node holds our id (nothing
    /// was written then).
    async fn register(&mut self, ctx: &MembershipContext) -> EtcdResult<Option<i64>> {
        if let Some(lease) = self.lease {
            match self.put_record_if_held(ctx, lease).await {
                Ok(Claim::Held) => return Ok(Some(lease)),
                Ok(Claim::Free) => {
                    warn!(id = %self.id, cluster = %self.config.cluster, lease, "our lease ended (expired or revoked); registering again");
                }
                Ok(Claim::Taken { holder_lease }) => {
                    error!(id = %self.id, cluster = %self.config.cluster, holder_lease, "our node id is held under another lease; not writing our record");
                    revoke(&mut self.client, lease).await;
                }
                Err(e) if lease_not_found(&e) => {
                    warn!(id = %self.id, cluster = %self.config.cluster, lease, "our lease is gone; registering again");
                }
                Err(e) => return Err(e),
            }
            self.lease = None;
        }
        let lease = self
            .client
            .lease_grant(self.config.ttl_secs, None)
            .await?
            .id();
        match self.reclaim_with_record(ctx, lease).await {
            Ok(Claim::Held) => {
                self.lease = Some(lease);
                info!(id = %self.id, cluster = %self.config.cluster, lease, "registered again under a new lease");
                Ok(Some(lease))
            }
            Ok(Claim::Taken { holder_lease }) => {
                error!(id = %self.id, cluster = %self.config.cluster, holder_lease, "our node id was taken by another node while our lease was gone; staying out of the cluster's tables and retrying the claim");
                revoke(&mut self.client, lease).await;
                Ok(None)
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
    ) -> Flow {
        let Session {
            mut watch,
            mut keep,
        } = session;
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.ttl_secs as u64 * 1000 / 3).max(100),
        ));
        let reclaim = async {
            match claim_retry {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(reclaim);
        let cluster = self.config.cluster.clone();
        loop {
            tokio::select! {
                _ = &mut reclaim => return Flow::Reclaim,
                _ = tick.tick(), if keep.is_some() => {
                    if let Some((keeper, _)) = keep.as_mut() {
                        if let Err(e) = keeper.keep_alive().await {
                            return Flow::Retry(format!("keep-alive: {e}"));
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
                        return Flow::Retry("lease expired or revoked".into());
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
                        // Without a lease we hold nothing to write; the record
                        // is written from the current info when we register.
                        let Some(lease) = self.lease else { continue };
                        match self.put_record_if_held(ctx, lease).await {
                            Ok(Claim::Held) => {}
                            Ok(Claim::Free) => {
                                self.lease = None;
                                return Flow::Retry("our lease ended; registering again".into());
                            }
                            Ok(Claim::Taken { holder_lease }) => {
                                error!(id = %self.id, cluster = %self.config.cluster, holder_lease, "our node id is held under another lease; not writing our record");
                                revoke(&mut self.client, lease).await;
                                self.lease = None;
                                return Flow::Retry("our node id is held by another node".into());
                            }
                            Err(e) if lease_not_found(&e) => {
                                self.lease = None;
                                return Flow::Retry("our lease is gone; registering again".into());
                            }
                            Err(e) => return Flow::Retry(format!("updating the record: {e}")),
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

/// How a session ended.
enum Flow {
    /// The node leaves: revoke and stop.
    Leave,
    /// We do not hold our id: try to claim it again now (the backoff already ran).
    Reclaim,
    /// The session broke: wait with backoff and establish a new one.
    Retry(String),
}

fn retry_delay(backoff: &Backoff, attempt: u32) -> Duration {
    backoff.delay(attempt, fastrand::f64())
}
