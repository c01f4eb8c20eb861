//! Joining: connect, take a lease and claim a free id (the lowest free one,
//! spreading out after lost races; see [`record::pick_free`]), one bounded
//! attempt at a time, retried as [`join_policy`](super::join_policy)
//! decides; and telling a TLS refusal (a client certificate etcd refuses, a
//! server certificate we do not trust) apart from a lost connection.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use domi_core::{MembershipError, NodeId, NodeInfo};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use tracing::{debug, info, warn};

use super::balance;
use super::discovery::{Discovery, EtcdResult};
use super::join_policy::{self, ErrorKind, GiveUp, JoinPolicy, Next};
use super::record;
use super::security::TlsMaterial;
use super::tls_probe::{self, TlsVerdict};
use super::EtcdConfig;

/// A step of a join attempt, named in its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Connect,
    Probe,
    GrantLease,
    KeepLease,
    ListIds,
    ClaimId,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Connect => "connecting",
            Step::Probe => "probing the etcd members",
            Step::GrantLease => "granting a lease",
            Step::KeepLease => "keeping the lease alive while claiming an id",
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
    /// A TLS handshake with etcd refused a certificate (see
    /// [`tls_probe`]).
    #[error("{step}: {}", explain_tls(.verdict, *.has_client_cert, .endpoint.as_deref()))]
    Tls {
        /// What the attempt was doing.
        step: Step,
        /// The endpoint that refused, when a probe found it.
        endpoint: Option<String>,
        /// The refusal.
        verdict: TlsVerdict,
        /// Whether the node has a client certificate.
        has_client_cert: bool,
    },
}

/// The text of a TLS refusal (`verdict` is one).
pub(super) fn explain_tls(
    verdict: &TlsVerdict,
    has_client_cert: bool,
    endpoint: Option<&str>,
) -> String {
    let text = verdict
        .explain(has_client_cert)
        .unwrap_or_else(|| format!("{verdict:?}"));
    match endpoint {
        Some(e) => format!("{e}: {text}"),
        None => text,
    }
}

/// The rustls error inside an etcd-client error, if any.
fn rustls_error(e: &etcd_client::Error) -> Option<&tokio_rustls::rustls::Error> {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => tls_probe::rustls_error_in(s),
        E::TransportError(t) => tls_probe::rustls_error_in(t),
        E::IoError(io) => tls_probe::rustls_error_in(io),
        _ => None,
    }
}

/// Whether `e` is what a connection closed or refused looks like: over TLS,
/// possibly etcd refusing the node's certificate (see [`tls_probe`]).
fn lost_connection(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => join_policy::is_connection_loss(i32::from(s.code())),
        E::TransportError(_) | E::IoError(_) => true,
        _ => false,
    }
}

/// Whether etcd-client's error `source` hides a TLS refusal: rustls' own
/// verdict when the error carries one (an untrusted server certificate),
/// otherwise, for a lost connection, a handshake probe of each endpoint in
/// turn, all within `within`. The refusal and the endpoint a probe found it
/// at.
pub(super) async fn tls_refusal(
    source: &etcd_client::Error,
    tls: &TlsMaterial,
    endpoints: &[String],
    within: Duration,
) -> Option<(TlsVerdict, Option<String>)> {
    if let Some(verdict) = rustls_error(source).and_then(tls_probe::verdict_of) {
        return Some((verdict, None));
    }
    if !lost_connection(source) || within.is_zero() {
        return None;
    }
    let deadline = Instant::now() + within;
    for endpoint in endpoints {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let verdict = tls_probe::probe(tls, endpoint, left).await;
        debug!(%endpoint, ?verdict, "TLS probe after a lost connection");
        if verdict.is_refusal() {
            return Some((verdict, Some(endpoint.clone())));
        }
    }
    None
}

/// Turns a failed attempt that hides a TLS refusal (see [`tls_refusal`])
/// into [`AttemptError::Tls`].
async fn diagnose_tls(
    err: AttemptError,
    tls: &TlsMaterial,
    endpoints: &[String],
    within: Duration,
) -> AttemptError {
    let AttemptError::Etcd { step, source } = &err else {
        return err;
    };
    match tls_refusal(source, tls, endpoints, within).await {
        Some((verdict, endpoint)) => AttemptError::Tls {
            step: *step,
            endpoint,
            verdict,
            has_client_cert: tls.has_client_cert(),
        },
        None => err,
    }
}

impl AttemptError {
    fn etcd(step: Step) -> impl FnOnce(etcd_client::Error) -> AttemptError {
        move |source| AttemptError::Etcd { step, source }
    }

    /// Whether retrying can fix it; `full_for` is how long every id has
    /// been taken (for [`AttemptError::Full`]).
    fn kind(&self, full_for: Duration) -> ErrorKind {
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
            AttemptError::Full { .. } => ErrorKind::Full(full_for),
            AttemptError::Tls { .. } => ErrorKind::Permanent,
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
        let store = || format!("etcd at {:?}", config.endpoints);
        match (why, self) {
            (_, AttemptError::Full { cluster }) => MembershipError::ClusterFull { cluster },
            (GiveUp::Permanent, e @ AttemptError::Tls { .. }) => MembershipError::Authentication {
                store: store(),
                reason: e.to_string(),
            },
            (GiveUp::TimedOut, e) => MembershipError::JoinTimedOut {
                store: store(),
                attempts,
                elapsed,
                timeout: config.join_timeout,
                last_error: e.to_string(),
            },
            (GiveUp::Permanent, AttemptError::Etcd { step, source }) => {
                status_refusal(step, &source, config).unwrap_or_else(|| MembershipError::Config {
                    reason: format!("etcd at {:?}: {step}: {source}", config.endpoints),
                })
            }
            (GiveUp::Permanent, e) => MembershipError::Config {
                reason: format!("etcd at {:?}: {e}", config.endpoints),
            },
        }
    }
}

/// The error for a refusal etcd answered with a gRPC status during `step`
/// (`None` when `e` carries no status): a user etcd refused or a missing
/// user is [`MembershipError::Authentication`], anything else
/// [`MembershipError::Refused`]. Call it for errors retrying cannot fix.
pub(super) fn status_refusal(
    step: impl std::fmt::Display,
    e: &etcd_client::Error,
    config: &EtcdConfig,
) -> Option<MembershipError> {
    let etcd_client::Error::GRpcStatus(s) = e else {
        return None;
    };
    let store = || format!("etcd at {:?}", config.endpoints);
    let code = i32::from(s.code());
    Some(match join_policy::refusal(code, s.message()) {
        join_policy::Refusal::Credentials => MembershipError::Authentication {
            store: store(),
            reason: format!(
                "{step}: etcd refused the user {:?}: {}",
                config.auth.as_ref().map(|a| a.user()).unwrap_or_default(),
                s.message()
            ),
        },
        join_policy::Refusal::NoCredentials => MembershipError::Authentication {
            store: store(),
            reason: format!(
                "{step}: etcd at {:?} requires authentication and no user is \
                 configured (EtcdConfig::auth): {}",
                config.endpoints,
                s.message()
            ),
        },
        join_policy::Refusal::Other => MembershipError::Refused {
            reason: format!(
                "{step}: etcd at {:?} answered {:?}: {}",
                config.endpoints,
                s.code(),
                s.message()
            ),
        },
    })
}

/// What an attempt got to, readable after it was cut short.
struct Progress {
    step: Step,
    /// The lease granted by this attempt, until the join holds it.
    lease: Option<i64>,
}

/// Connects, takes a lease and claims a free id, retrying with
/// jittered backoff while etcd is unreachable or overloaded, up to the join
/// timeout (see [`super::join_policy`]).
pub(crate) async fn join(
    config: EtcdConfig,
    local: &NodeInfo,
) -> Result<Discovery, MembershipError> {
    let policy = JoinPolicy::of(&config);
    let tls = config.validate_security()?;
    if config.auth.is_some() && tls.is_none() {
        warn!(endpoints = ?config.endpoints, "the etcd password goes over plain http: configure TLS (https:// endpoints)");
    }
    let started = Instant::now();
    let mut client: Option<Client> = None;
    let mut left_out: Vec<String> = Vec::new();
    let mut attempts = 0u32;
    // When an attempt first found every id taken.
    let mut full_since: Option<Instant> = None;
    loop {
        attempts = attempts.saturating_add(1);
        let budget = policy.attempt_budget(started.elapsed());
        let mut progress = Progress {
            step: Step::Connect,
            lease: None,
        };
        let outcome = tokio::time::timeout(
            budget,
            attempt(
                &config,
                tls.as_ref(),
                &mut client,
                &mut left_out,
                local.instance,
                &mut progress,
            ),
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
                    tls,
                    client,
                    lease: Some(lease),
                    id,
                    instance: local.instance,
                    started_at,
                    left_out,
                    stranded: false,
                });
            }
            Ok(Err(e)) => match &tls {
                Some(m) => {
                    let within = config
                        .connect_timeout
                        .min(policy.grace_left(started.elapsed()));
                    diagnose_tls(e, m, &config.endpoints, within).await
                }
                None => e,
            },
            Err(_) => AttemptError::TimedOut {
                step: progress.step,
                after: budget,
            },
        };
        let elapsed = started.elapsed();
        let first_full = matches!(err, AttemptError::Full { .. }) && full_since.is_none();
        let full_for = match err {
            AttemptError::Full { .. } => full_since.get_or_insert_with(Instant::now).elapsed(),
            _ => Duration::ZERO,
        };
        let next = policy.after_failure(elapsed, attempts, err.kind(full_for), fastrand::f64());
        if let (Some(lease), Some(c)) = (progress.lease, client.as_mut()) {
            // Whatever the attempt claimed hangs on this lease: free it
            // before the next attempt lists the taken ids, or that claim
            // would hold a second id for a TTL (and, in a nearly full
            // cluster, keep another node out).
            revoke_within(c, lease, policy.revoke_budget(next, elapsed)).await;
        }
        match next {
            Next::Retry(delay) => {
                let delay = delay.saturating_sub(started.elapsed() - elapsed);
                if first_full {
                    warn!(cluster = %config.cluster, wait = ?policy.full_wait.min(config.join_timeout), "every node id is taken; waiting for one to free up (a node leaving, or the lease of one that died expiring)");
                } else if attempts == 1 {
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

/// One join attempt: connects (once per join), takes a lease and claims a
/// free id. Every request is bounded by the request timeout; the
/// caller bounds the whole attempt.
async fn attempt(
    config: &EtcdConfig,
    tls: Option<&TlsMaterial>,
    client: &mut Option<Client>,
    left_out: &mut Vec<String>,
    instance: u64,
    progress: &mut Progress,
) -> Result<(Client, i64, NodeId), AttemptError> {
    let c = match client {
        Some(c) => c,
        None => {
            progress.step = Step::Connect;
            let c = Client::connect(&config.endpoints, Some(connect_options(config, tls)))
                .await
                .map_err(AttemptError::etcd(Step::Connect))?;
            client.insert(c)
        }
    };
    // A member that is down would fail a share of the calls below.
    progress.step = Step::Probe;
    let within = config
        .connect_timeout
        .min(std::time::Duration::from_secs(1));
    balance::rebalance(c, &config.endpoints, left_out, within).await;
    // Listed before the lease is granted, so a full cluster costs one read.
    progress.step = Step::ListIds;
    let taken = taken_ids(c, &config.cluster)
        .await
        .map_err(AttemptError::etcd(Step::ListIds))?;
    if record::lowest_free(taken.iter().copied()).is_none() {
        return Err(AttemptError::Full {
            cluster: config.cluster.clone(),
        });
    }
    progress.step = Step::GrantLease;
    let lease = c
        .lease_grant(config.ttl_secs, None)
        .await
        .map_err(AttemptError::etcd(Step::GrantLease))?
        .id();
    progress.lease = Some(lease);
    let id = claim_id(c, config, lease, instance, progress, taken).await?;
    Ok((c.clone(), lease, id))
}

/// etcd-client's options for `config`: timeouts, TLS, and the user (whose
/// token is refreshed whenever etcd says it expired, e.g. after a restart).
pub(super) fn connect_options(config: &EtcdConfig, tls: Option<&TlsMaterial>) -> ConnectOptions {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_timeout(config.request_timeout);
    if let Some(m) = tls {
        opts = opts.with_tls(m.options());
    }
    if let Some(auth) = &config.auth {
        opts = opts
            .with_user(auth.user(), auth.password())
            .with_auto_token_refresh(true);
    }
    opts
}

/// Claims a free id, starting from `taken` (the ids listed last), with one
/// transaction per try (create-revision = 0 on the id's claim key), whose failure branch
/// lists the taken ids again. The first try takes the lowest free id; after
/// each lost race the choice spreads over more of the lowest free ids
/// ([`record::pick_free`]), so a crowd starting together settles in a few
/// rounds instead of racing for one id at a time. The lease is kept alive
/// while this goes on.
async fn claim_id(
    client: &mut Client,
    config: &EtcdConfig,
    lease: i64,
    instance: u64,
    progress: &mut Progress,
    mut taken: Vec<NodeId>,
) -> Result<NodeId, AttemptError> {
    let cluster = config.cluster.as_str();
    let prefix = record::ids_prefix(cluster);
    let refresh_every = config.renew_every();
    let mut refreshed = Instant::now();
    let mut lost = 0u32;
    loop {
        let Some(id) = record::pick_free(taken.iter().copied(), lost, fastrand::f64()) else {
            return Err(AttemptError::Full {
                cluster: cluster.into(),
            });
        };
        if refreshed.elapsed() >= refresh_every {
            progress.step = Step::KeepLease;
            // A streaming call: the client's request timeout does not bound
            // waiting for the answer, so this does.
            match tokio::time::timeout(config.request_timeout, keep_alive_once(client, lease)).await
            {
                Ok(renewed) => renewed.map_err(AttemptError::etcd(Step::KeepLease))?,
                Err(_) => {
                    return Err(AttemptError::TimedOut {
                        step: Step::KeepLease,
                        after: config.request_timeout,
                    })
                }
            }
            refreshed = Instant::now();
        }
        progress.step = Step::ClaimId;
        match try_claim(client, &prefix, cluster, id, lease, instance)
            .await
            .map_err(AttemptError::etcd(Step::ClaimId))?
        {
            None => return Ok(id),
            Some(now_taken) => {
                lost = lost.saturating_add(1);
                debug!(%id, lost, "lost the race for an id; trying another");
                taken = now_taken;
            }
        }
    }
}

/// The ids claimed in `cluster` now (one keys-only read).
pub(super) async fn taken_ids(client: &mut Client, cluster: &str) -> EtcdResult<Vec<NodeId>> {
    let prefix = record::ids_prefix(cluster);
    let listed = client
        .get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(listed
        .kvs()
        .iter()
        .filter_map(|kv| record::parse_id(&prefix, kv.key()))
        .collect())
}

/// Claims a free id under `lease` for a running node whose id was taken
/// (see [`claim_id`]): `None` when every id is taken.
pub(super) async fn claim_free_id(
    client: &mut Client,
    config: &EtcdConfig,
    lease: i64,
    instance: u64,
) -> EtcdResult<Option<NodeId>> {
    let taken = taken_ids(client, &config.cluster).await?;
    let mut progress = Progress {
        step: Step::ClaimId,
        lease: Some(lease),
    };
    match claim_id(client, config, lease, instance, &mut progress, taken).await {
        Ok(id) => Ok(Some(id)),
        Err(AttemptError::Full { .. }) => Ok(None),
        Err(AttemptError::Etcd { source, .. }) => Err(source),
        Err(e) => Err(etcd_client::Error::LeaseKeepAliveError(e.to_string())),
    }
}

/// Renews `lease` once.
async fn keep_alive_once(client: &mut Client, lease: i64) -> EtcdResult<()> {
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    keeper.keep_alive().await?;
    match stream.message().await? {
        Some(r) if r.ttl() > 0 => Ok(()),
        _ => Err(etcd_client::Error::LeaseKeepAliveError(format!(
            "lease {lease:x} ended while claiming an id"
        ))),
    }
}

/// Revokes `lease` (best effort, within 2 s).
pub(super) async fn revoke(client: &mut Client, lease: i64) {
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

/// Claims `id` under `lease` if nobody holds it: `None` when claimed,
/// otherwise the ids taken now (the failure branch lists them).
async fn try_claim(
    client: &mut Client,
    prefix: &str,
    cluster: &str,
    id: NodeId,
    lease: i64,
    instance: u64,
) -> EtcdResult<Option<Vec<NodeId>>> {
    let key = record::id_key(cluster, id);
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            record::claim_value(instance),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )]);
    let resp = client.txn(txn).await?;
    if resp.succeeded() {
        return Ok(None);
    }
    let taken = resp
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .flat_map(|g| {
            g.kvs()
                .iter()
                .filter_map(|kv| record::parse_id(prefix, kv.key()))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Some(taken))
}
