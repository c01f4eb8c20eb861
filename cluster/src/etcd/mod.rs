//! Membership through etcd: registration under a lease, ids `0..=1023` taken
//! with a transaction, and a watch feeding the peer table.
//!
//! [`EtcdMembership`] implements the core's membership seam by handing every
//! call to the discovery thread (`discovery`); the data model is in the
//! pure [`record`] module.
//!
//! Joining survives a late or overloaded etcd: attempts are retried with
//! jittered backoff up to [`EtcdConfig::join_timeout`] (default 30 s), after
//! which the node fails with [`MembershipError::JoinTimedOut`]; what retrying
//! cannot fix fails at once ([`MembershipError::Config`],
//! [`MembershipError::Refused`], [`MembershipError::Authentication`]). A
//! full cluster is waited for one lease TTL and a request timeout (ids of
//! nodes that leave or die free up within it), then fails with
//! [`MembershipError::ClusterFull`]. The decisions are pure, in the private
//! `join_policy` module.
//!
//! ## Secured etcd
//!
//! `https://` endpoints need [`EtcdConfig::tls`]: the CA that signed etcd's
//! certificate and, for an etcd started with `--client-cert-auth`, a client
//! certificate and key ([`EtcdTls`]). An etcd with authentication enabled
//! needs [`EtcdConfig::auth`] ([`EtcdAuth`]; the examples read the password
//! from [`PASSWORD_ENV`]). Unreadable or invalid certificate files fail
//! [`EtcdConfig::validate`] with [`MembershipError::Config`] naming the file;
//! a wrong password, a refused or missing client certificate, or an
//! untrusted server certificate fail the join at once with
//! [`MembershipError::Authentication`].
//!
//! ```no_run
//! use domi_cluster::etcd::{EtcdAuth, EtcdConfig, EtcdTls};
//! let mut c = EtcdConfig::new(["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
//! c.tls = Some(EtcdTls::new("/etc/domi/etcd-ca.crt")
//!     .with_client_cert("/etc/domi/node.crt", "/etc/domi/node.key"));
//! c.auth = Some(EtcdAuth::from_env("domi")?); // password from DOMI_ETCD_PASSWORD
//! c.validate()?;
//! # Ok::<(), domi_core::MembershipError>(())
//! ```
//!
//! Command-line programs take these settings as `--etcd-ca --etcd-cert
//! --etcd-key --etcd-user` and turn them into the config with
//! [`EtcdSecurityFlags`].
//!
//! ## Reading without joining
//!
//! [`ClusterView`] lists and watches a cluster's records with the same
//! settings and the same error reporting, taking no lease and writing
//! nothing (for tools such as `domictl`).

mod balance;
mod discovery;
mod flags;
mod join;
mod join_policy;
pub mod record;
mod security;
mod tls_probe;
mod view;

pub use flags::EtcdSecurityFlags;
pub use security::{EtcdAuth, EtcdTls, PemSource, PASSWORD_ENV};
pub use view::{ClusterView, Listing, RecordChange, RecordWatch};

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use domi_core::backoff::Backoff;
use domi_core::{Membership, MembershipContext, MembershipError, NodeId, NodeInfo};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use discovery::Cmd;
use join_policy::JoinPolicy;

/// Settings of [`EtcdMembership`].
///
/// Its `Debug` never shows a password or PEM text.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`, or
    /// `https://10.0.0.1:2379` with [`EtcdConfig::tls`]. All of one scheme.
    pub endpoints: Vec<String>,
    /// Cluster name (the key prefix `/domi/<cluster>/`); set from the node's.
    pub cluster: String,
    /// Lease TTL in seconds (kept alive every third of it).
    pub ttl_secs: i64,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for one etcd request.
    pub request_timeout: Duration,
    /// How long [`Membership::join`] keeps retrying while etcd is unreachable
    /// or overloaded (default 30 s), with [`EtcdConfig::backoff`] between
    /// attempts. Errors retrying cannot fix (invalid settings, a full cluster,
    /// authentication refused) fail at once. The last retry starts no later
    /// than this, so joining gives up within `join_timeout + request_timeout`
    /// with [`MembershipError::JoinTimedOut`]. Zero means one attempt.
    pub join_timeout: Duration,
    /// Retry backoff between join attempts and while etcd is unreachable,
    /// between attempts to claim an id while none is free (after another
    /// node took ours), and (capped at a third of the TTL) between attempts
    /// to reopen a failed keep-alive stream or rewrite the record.
    pub backoff: Backoff,
    /// Admin HTTP address written in the record, if any.
    pub http: Option<SocketAddr>,
    /// Shards, written in the record; set from the node's.
    pub shards: usize,
    /// TLS towards etcd: required by `https://` endpoints, refused with
    /// `http://` ones. The CA that signed etcd's server certificate, and the
    /// client certificate and key an etcd started with `--client-cert-auth`
    /// requires. Default `None` (plain `http://`).
    pub tls: Option<EtcdTls>,
    /// User and password, for an etcd with authentication enabled
    /// (`etcdctl auth enable`); the user needs read and write access to the
    /// keys under `/domi/<cluster>/`. Over plain `http://` the password
    /// crosses the network in clear (a warning is logged): use it with
    /// [`EtcdConfig::tls`]. Default `None`.
    pub auth: Option<EtcdAuth>,
}

impl EtcdConfig {
    /// Settings for `endpoints` with the defaults: TTL 3 s, 2 s connect and
    /// request timeouts, 30 s join timeout, backoff from 100 ms to 2 s.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            cluster: "default".into(),
            ttl_secs: 3,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            join_timeout: Duration::from_secs(30),
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            http: None,
            shards: 1,
            tls: None,
            auth: None,
        }
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.max(1) as u64)
    }

    /// How often the lease is renewed: a third of the TTL (at least 100 ms),
    /// also the longest wait between attempts to reopen a failed keep-alive.
    pub fn renew_every(&self) -> Duration {
        (self.ttl() / 3).max(Duration::from_millis(100))
    }

    /// Checks the settings: at least one endpoint, a lease TTL of at least
    /// 1 s, non-zero connect and request timeouts, and a backoff whose base
    /// is non-zero and not above its maximum (a zero delay would hammer etcd
    /// while it is overloaded). Any join timeout is valid (zero: one attempt).
    ///
    /// Security: `https://` endpoints need [`EtcdConfig::tls`] and `http://`
    /// ones refuse it; the TLS files are read and parsed now (a missing or
    /// unreadable file, a file without a PEM certificate or key, a key that
    /// does not match its certificate: an error naming the file); a user
    /// needs a non-empty name and password.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |reason: String| Err(MembershipError::Config { reason });
        if self.endpoints.is_empty() {
            return invalid("no etcd endpoints".into());
        }
        if self.ttl_secs < 1 {
            return invalid(format!(
                "lease TTL must be at least 1 s, got {}",
                self.ttl_secs
            ));
        }
        if self.connect_timeout.is_zero() {
            return invalid("the etcd connect timeout must not be zero".into());
        }
        if self.request_timeout.is_zero() {
            return invalid("the etcd request timeout must not be zero".into());
        }
        if self.backoff.base.is_zero() || self.backoff.base > self.backoff.max {
            return invalid(format!(
                "the etcd backoff needs 0 < base <= max, got base {:?} and max {:?}",
                self.backoff.base, self.backoff.max
            ));
        }
        self.validate_security().map(|_| ())
    }

    /// Checks the endpoints' schemes against [`EtcdConfig::tls`], loads the
    /// TLS material and checks the credentials.
    fn validate_security(&self) -> Result<Option<security::TlsMaterial>, MembershipError> {
        let invalid = |reason: String| Err(MembershipError::Config { reason });
        for e in &self.endpoints {
            let https = e.starts_with("https://");
            if https && self.tls.is_none() {
                return invalid(format!(
                    "the etcd endpoint {e} is https:// but no TLS is configured \
                     (EtcdConfig::tls: the CA that signed etcd's certificate)"
                ));
            }
            if e.starts_with("http://") && self.tls.is_some() {
                return invalid(format!(
                    "TLS is configured but the etcd endpoint {e} is http:// (use https://)"
                ));
            }
        }
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        self.tls
            .as_ref()
            .map(security::TlsMaterial::load)
            .transpose()
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
        self.config.validate()?;
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
                    match join::join(config, &local).await {
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
        // The discovery thread gives up by itself within join timeout +
        // request timeout (see `join_policy`); this wait only guards against
        // a thread that never answers.
        let wait = JoinPolicy::of(&self.config).answer_wait();
        match id_rx.recv_timeout(wait) {
            Ok(Ok(id)) => {
                self.cmds = Some(cmd_tx);
                self.thread = Some(thread);
                Ok(id)
            }
            Ok(Err(e)) => {
                drop(cmd_tx);
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                // Not joined: should it still join, it sees the command
                // channel closed, revokes its lease and ends by itself.
                drop(cmd_tx);
                Err(MembershipError::Unavailable {
                    reason: format!(
                        "the etcd discovery thread did not answer within {wait:?} \
                         (endpoints {:?})",
                        self.config.endpoints
                    ),
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = EtcdConfig::new(["http://127.0.0.1:2379"]);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.join_timeout, Duration::from_secs(30));
        let zero_join = EtcdConfig {
            join_timeout: Duration::ZERO,
            ..ok.clone()
        };
        assert_eq!(zero_join.validate(), Ok(()), "zero: one attempt");
        let bad = [
            EtcdConfig::new(Vec::<String>::new()),
            EtcdConfig {
                ttl_secs: 0,
                ..ok.clone()
            },
            EtcdConfig {
                connect_timeout: Duration::ZERO,
                ..ok.clone()
            },
            EtcdConfig {
                request_timeout: Duration::ZERO,
                ..ok.clone()
            },
            EtcdConfig {
                backoff: Backoff {
                    base: Duration::ZERO,
                    max: Duration::from_secs(1),
                },
                ..ok.clone()
            },
            EtcdConfig {
                backoff: Backoff {
                    base: Duration::from_secs(2),
                    max: Duration::from_secs(1),
                },
                ..ok.clone()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(MembershipError::Config { .. })),
                "{c:?}"
            );
        }
    }
}
