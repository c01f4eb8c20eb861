//! Reading a cluster's records without joining it, for tools such as the
//! operator CLI `domictl`: list the records under `/domi/<cluster>/nodes/`
//! and watch them change.
//!
//! [`ClusterView`] uses the same etcd settings as a node ([`EtcdConfig`]:
//! endpoints, timeouts, TLS, user), the same client setup, and reports
//! failures the same way: a refused certificate, user or password is
//! [`MembershipError::Authentication`], an etcd that does not answer within
//! the connect and request timeouts [`MembershipError::Unavailable`] (never a
//! hang), invalid settings [`MembershipError::Config`]. It takes no lease and
//! writes nothing. Its calls block: it owns a current-thread tokio runtime,
//! as the discovery thread does.
//!
//! ```no_run
//! use domi_cluster::etcd::{ClusterView, EtcdConfig};
//! let mut config = EtcdConfig::new(["http://127.0.0.1:2379"]);
//! config.cluster = "demo".into();
//! let mut view = ClusterView::connect(config)?;
//! for (id, record) in view.list()?.records {
//!     println!("{id}: {:?}", record.map(|r| r.state));
//! }
//! # Ok::<(), domi_core::MembershipError>(())
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use domi_core::MembershipError;
use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchStream};

use super::join::{connect_options, explain_tls, status_refusal, tls_refusal};
use super::join_policy::{self, ErrorKind};
use super::record::{self, NodeRecord, RecordError};
use super::security::TlsMaterial;
use super::EtcdConfig;

/// A read-only connection to one cluster's records in etcd.
pub struct ClusterView {
    // Dropped before the runtime its background tasks run on.
    client: Client,
    config: EtcdConfig,
    tls: Option<TlsMaterial>,
    runtime: tokio::runtime::Runtime,
}

/// Every record of a cluster at one etcd revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The etcd revision of the listing: watch from `revision + 1` to miss
    /// no change after it.
    pub revision: i64,
    /// The records by the id in their key, in id order; a record that
    /// cannot be used (not JSON of the expected shape, another id than its
    /// key's) as its error.
    pub records: Vec<(u16, Result<NodeRecord, RecordError>)>,
}

/// A change to one node's record, seen by [`RecordWatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordChange {
    /// The id in the record's key.
    pub id: u16,
    /// The record now; `None` when it was deleted (the node left, or its
    /// lease ended).
    pub record: Option<Result<NodeRecord, RecordError>>,
    /// The record before the change, `None` when there was none (the node
    /// joined) or it could not be used.
    pub previous: Option<NodeRecord>,
}

/// The changes to a cluster's records from one revision on.
pub struct RecordWatch<'a> {
    view: &'a ClusterView,
    stream: WatchStream,
    pending: VecDeque<RecordChange>,
}

impl ClusterView {
    /// Checks `config` ([`EtcdConfig::validate`]) and connects to its etcd
    /// for the records of `config.cluster`. With a user, etcd is asked for a
    /// token now, so a wrong password fails here.
    pub fn connect(config: EtcdConfig) -> Result<ClusterView, MembershipError> {
        config.validate()?;
        let tls = config.validate_security()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MembershipError::Unavailable {
                reason: format!("tokio runtime: {e}"),
            })?;
        let within = config.connect_timeout + config.request_timeout;
        let options = connect_options(&config, tls.as_ref());
        let client = runtime.block_on(async {
            match tokio::time::timeout(within, Client::connect(&config.endpoints, Some(options)))
                .await
            {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => Err(classify(&config, tls.as_ref(), "connecting", e).await),
                Err(_) => Err(no_answer(&config, "connecting", within)),
            }
        })?;
        Ok(ClusterView {
            client,
            config,
            tls,
            runtime,
        })
    }

    /// The settings this view was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Lists the cluster's records.
    pub fn list(&self) -> Result<Listing, MembershipError> {
        let prefix = record::nodes_prefix(&self.config.cluster);
        let mut client = self.client.clone();
        let listed = self.call("listing the records", async move {
            client
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await
        })?;
        let prefix = record::nodes_prefix(&self.config.cluster);
        let mut records: Vec<_> = listed
            .kvs()
            .iter()
            .filter_map(|kv| {
                let id = record::parse_id(&prefix, kv.key())?.get();
                Some((id, parse_record(id, kv.value())))
            })
            .collect();
        records.sort_by_key(|(id, _)| *id);
        Ok(Listing {
            revision: listed.header().map(|h| h.revision()).unwrap_or(0),
            records,
        })
    }

    /// Watches the cluster's records from etcd revision `from` on (a
    /// [`Listing::revision`] + 1 misses nothing after that listing).
    pub fn watch(&self, from: i64) -> Result<RecordWatch<'_>, MembershipError> {
        let prefix = record::nodes_prefix(&self.config.cluster);
        let mut client = self.client.clone();
        let stream = self.call("watching the records", async move {
            let options = WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_start_revision(from);
            client.watch(prefix.as_str(), Some(options)).await
        })?;
        Ok(RecordWatch {
            view: self,
            stream,
            pending: VecDeque::new(),
        })
    }

    /// Runs one etcd call within the request timeout; its error classified.
    fn call<T>(
        &self,
        step: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, MembershipError> {
        let within = self.config.request_timeout;
        self.runtime.block_on(async {
            match tokio::time::timeout(within, fut).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(classify(&self.config, self.tls.as_ref(), step, e).await),
                Err(_) => Err(no_answer(&self.config, step, within)),
            }
        })
    }
}

impl RecordWatch<'_> {
    /// The next change, waiting at most `within`: `Ok(None)` when none came
    /// in time. A watch etcd ends (etcd went away, the revision was
    /// compacted) is an error; open a new one from a new listing.
    pub fn next_within(
        &mut self,
        within: Duration,
    ) -> Result<Option<RecordChange>, MembershipError> {
        let view = self.view;
        let prefix = record::nodes_prefix(&view.config.cluster);
        let deadline = tokio::time::Instant::now() + within;
        while self.pending.is_empty() {
            let message = view
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline, self.stream.message()).await });
            let response = match message {
                Err(_) => return Ok(None),
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => return Err(watch_ended(&view.config, "the watch stream ended")),
                Ok(Err(e)) => {
                    let e = view.runtime.block_on(classify(
                        &view.config,
                        view.tls.as_ref(),
                        "watching",
                        e,
                    ));
                    return Err(e);
                }
            };
            if response.canceled() || response.compact_revision() > 0 {
                let why = format!(
                    "etcd canceled the watch (compacted at revision {})",
                    response.compact_revision()
                );
                return Err(watch_ended(&view.config, &why));
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(id) = record::parse_id(&prefix, kv.key()).map(|id| id.get()) else {
                    continue;
                };
                let previous = event
                    .prev_kv()
                    .and_then(|p| parse_record(id, p.value()).ok());
                let record = match event.event_type() {
                    EventType::Put => Some(parse_record(id, kv.value())),
                    EventType::Delete => None,
                };
                self.pending.push_back(RecordChange {
                    id,
                    record,
                    previous,
                });
            }
        }
        Ok(self.pending.pop_front())
    }
}

/// A record stored under key id `id`.
fn parse_record(id: u16, value: &[u8]) -> Result<NodeRecord, RecordError> {
    let rec = NodeRecord::from_json(value)?;
    if rec.id != id {
        return Err(RecordError::IdMismatch {
            key: id,
            record: rec.id,
        });
    }
    Ok(rec)
}

fn store(config: &EtcdConfig) -> String {
    format!("etcd at {:?}", config.endpoints)
}

fn no_answer(config: &EtcdConfig, step: &str, within: Duration) -> MembershipError {
    MembershipError::Unavailable {
        reason: format!("{}: {step}: no answer within {within:?}", store(config)),
    }
}

fn watch_ended(config: &EtcdConfig, why: &str) -> MembershipError {
    MembershipError::Unavailable {
        reason: format!("{}: {why}", store(config)),
    }
}

/// The error for etcd-client's error `e` during `step`, as a joining node
/// would report it: a TLS refusal or a refused user is `Authentication`,
/// another refusal `Refused`, settings the client rejects `Config`, and
/// anything retrying could fix (unreachable, overloaded) `Unavailable`.
async fn classify(
    config: &EtcdConfig,
    tls: Option<&TlsMaterial>,
    step: &str,
    e: etcd_client::Error,
) -> MembershipError {
    use etcd_client::Error as E;
    if let Some(m) = tls {
        let within = config.connect_timeout.min(Duration::from_secs(1));
        if let Some((verdict, endpoint)) = tls_refusal(&e, m, &config.endpoints, within).await {
            return MembershipError::Authentication {
                store: store(config),
                reason: format!(
                    "{step}: {}",
                    explain_tls(&verdict, m.has_client_cert(), endpoint.as_deref())
                ),
            };
        }
    }
    match &e {
        E::GRpcStatus(s)
            if join_policy::status_kind(i32::from(s.code()), s.message())
                == ErrorKind::Permanent =>
        {
            status_refusal(step, &e, config).unwrap_or_else(|| MembershipError::Refused {
                reason: format!("{}: {step}: {e}", store(config)),
            })
        }
        E::InvalidArgs(_)
        | E::InvalidUri(_)
        | E::InvalidMetadataValue(_)
        | E::EndpointError(_)
        | E::EndpointsNotManaged => MembershipError::Config {
            reason: format!("{}: {step}: {e}", store(config)),
        },
        _ => MembershipError::Unavailable {
            reason: format!("{}: {step}: {e}", store(config)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_under_another_id_are_refused() {
        let rec = br#"{"id":3,"name":"a","version":"0.1.0","protocol":2,"instance":"0a",
            "tcp":"127.0.0.1:1","http":null,"shards":1,"channels":[50],"state":"serving",
            "started_at":1}"#;
        assert_eq!(parse_record(3, rec).map(|r| r.name), Ok("a".into()));
        assert_eq!(
            parse_record(4, rec),
            Err(RecordError::IdMismatch { key: 4, record: 3 })
        );
        assert!(matches!(
            parse_record(3, b"nope"),
            Err(RecordError::Json { .. })
        ));
    }

    #[test]
    fn invalid_settings_fail_before_any_connection() {
        let config = EtcdConfig::new(Vec::<String>::new());
        assert!(matches!(
            ClusterView::connect(config),
            Err(MembershipError::Config { .. })
        ));
    }
}
