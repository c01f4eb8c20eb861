//! [`CtlError`]: every way a command fails, with the fields a script or a
//! test matches on. Its `Display` is the one line `domictl` prints.

use std::time::Duration;

use domi::{BusError, MembershipError, StartError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No node of the cluster has this id or name.
    #[error("no node {node:?} in cluster {cluster:?} (nodes: {})", known_list(.known))]
    UnknownNode {
        /// What was asked for.
        node: String,
        /// The cluster searched.
        cluster: String,
        /// The nodes there are, as `id name`.
        known: Vec<String>,
    },
    /// Several nodes have this name.
    #[error("{count} nodes are named {name:?} (ids {ids:?}): give an id", count = .ids.len())]
    AmbiguousName {
        /// The name.
        name: String,
        /// The ids of the nodes with that name.
        ids: Vec<u16>,
    },
    /// The node's record has no admin address: it serves no admin
    /// endpoints.
    #[error(
        "node {id} ({name}) has no admin address in its record: it serves no admin \
         endpoints (start it with --http ADDR / NodeBuilder::http)"
    )]
    NoAdminAddress {
        /// Node id.
        id: u16,
        /// Node name.
        name: String,
    },
    /// etcd did not answer (down, wrong address, a network problem) within
    /// the timeouts; `reason` names the endpoints too.
    #[error("etcd unreachable: {reason}")]
    EtcdUnreachable {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// What failed.
        reason: String,
    },
    /// etcd refused the credentials, or they refused etcd: a wrong user or
    /// password, a client certificate it does not accept, a server
    /// certificate the CA did not sign.
    #[error("authentication with {store} failed: {reason}")]
    Auth {
        /// The store, e.g. `etcd at ["https://10.0.0.9:2379"]`.
        store: String,
        /// What was refused (never a password).
        reason: String,
    },
    /// etcd refused a request for another reason (permission denied, a
    /// full cluster for the temporary node, …).
    #[error("etcd refused: {reason}")]
    EtcdRefused {
        /// etcd's answer.
        reason: String,
    },
    /// Invalid settings (flags, files, a missing password).
    #[error("invalid settings: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The node's admin endpoint could not be reached or did not answer.
    #[error("node {id} ({name}): admin endpoint {addr} unreachable: {reason}")]
    AdminUnreachable {
        /// Node id.
        id: u16,
        /// Node name.
        name: String,
        /// The admin address from its record.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The node's admin endpoint answered with an error status (401: a
    /// missing or wrong `DOMI_ADMIN_TOKEN`).
    #[error("node {id} ({name}) answered {status}: {}", one_line(.body))]
    Admin {
        /// Node id.
        id: u16,
        /// Node name.
        name: String,
        /// HTTP status.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// No node served the channel within the timeout.
    #[error("no node serves channel {channel} (waited {waited:?})")]
    NoProvider {
        /// The channel.
        channel: u16,
        /// How long `request` waited.
        waited: Duration,
    },
    /// The request failed.
    #[error("request on channel {channel} failed: {source}")]
    Request {
        /// The channel.
        channel: u16,
        /// The bus's error.
        source: BusError,
    },
    /// The temporary node of `request` did not start (other than for etcd
    /// reasons, which have their own variants).
    #[error("the temporary node did not start: {source}")]
    TempNode {
        /// Why.
        source: StartError,
    },
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none".into()
    } else {
        known.join(", ")
    }
}

/// `text` on one line, cut to 200 characters.
fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

impl CtlError {
    /// The error for a membership failure talking to etcd at `endpoints`.
    pub fn from_membership(e: MembershipError, endpoints: &[String]) -> CtlError {
        match e {
            MembershipError::Unavailable { reason } => CtlError::EtcdUnreachable {
                endpoints: endpoints.to_vec(),
                reason,
            },
            e @ MembershipError::JoinTimedOut { .. } => CtlError::EtcdUnreachable {
                endpoints: endpoints.to_vec(),
                reason: e.to_string(),
            },
            MembershipError::Authentication { store, reason } => CtlError::Auth { store, reason },
            MembershipError::Config { reason } => CtlError::Config { reason },
            e @ (MembershipError::Refused { .. } | MembershipError::ClusterFull { .. }) => {
                CtlError::EtcdRefused {
                    reason: e.to_string(),
                }
            }
        }
    }

    /// The error for the temporary node failing to start.
    pub fn from_start(e: StartError, endpoints: &[String]) -> CtlError {
        match e {
            StartError::Core(domi_core::StartError::Membership(m)) => {
                CtlError::from_membership(m, endpoints)
            }
            source => CtlError::TempNode { source },
        }
    }

    /// The process exit code for this error: 1, or 2 for invalid settings
    /// (as for a usage error).
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Config { .. } => 2,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_what_failed() {
        let e = CtlError::Admin {
            id: 1,
            name: "a".into(),
            status: 401,
            body: "{\"error\":\n \"unauthorized\"}\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "node 1 (a) answered 401: {\"error\": \"unauthorized\"}"
        );
        let e = CtlError::UnknownNode {
            node: "x".into(),
            cluster: "c".into(),
            known: vec!["0 a".into(), "1 b".into()],
        };
        assert_eq!(
            e.to_string(),
            "no node \"x\" in cluster \"c\" (nodes: 0 a, 1 b)"
        );
        assert!(one_line(&"é".repeat(300)).ends_with('…'));
    }

    #[test]
    fn membership_errors_map_to_their_variants() {
        let eps = vec!["http://127.0.0.1:1".to_string()];
        let m = |e| CtlError::from_membership(e, &eps);
        assert!(matches!(
            m(MembershipError::Unavailable { reason: "x".into() }),
            CtlError::EtcdUnreachable { endpoints, .. } if endpoints == eps
        ));
        assert!(matches!(
            m(MembershipError::Authentication {
                store: "s".into(),
                reason: "r".into()
            }),
            CtlError::Auth { .. }
        ));
        assert!(matches!(
            m(MembershipError::Config { reason: "r".into() }),
            CtlError::Config { .. }
        ));
        assert!(matches!(
            m(MembershipError::ClusterFull {
                cluster: "c".into()
            }),
            CtlError::EtcdRefused { .. }
        ));
    }
}
