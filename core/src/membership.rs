//! The membership seam: how a node learns its id and its peers.
//!
//! The node calls [`Membership::join`] before its shards start (to learn its
//! id), then [`Membership::start`] with the [`Directory`] to keep current,
//! [`Membership::local_changed`] whenever its channels or state change, and
//! [`Membership::leave`] when it stops. `domi-cluster` implements it twice:
//! a static peer list (the embedded default) and etcd.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::channel::NodeId;
use crate::handshake::NodeInfo;
use crate::route::Directory;

/// A membership failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Every node id `0..=1023` is taken.
    #[error("cluster {cluster:?} is full: all 1024 node ids are taken")]
    ClusterFull {
        /// The cluster.
        cluster: String,
    },
    /// The membership store cannot be reached.
    #[error("membership store unavailable: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
    /// The membership settings are invalid.
    #[error("invalid membership configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The membership store answered with a refusal that retrying cannot
    /// fix (authentication or permission refused, a request it rejects as
    /// invalid): the node gives up at once.
    #[error("membership store refused the node: {reason}")]
    Refused {
        /// What was refused, and the store's answer.
        reason: String,
    },
    /// The membership store did not accept the node's credentials, or the
    /// node did not accept the store's: a wrong user name or password, a
    /// TLS client certificate the store refuses (none, or one signed by a CA
    /// it does not trust), or a server certificate the node's CA did not
    /// sign. Retrying cannot fix it: the node gives up at once.
    #[error("authentication with {store} failed: {reason}")]
    Authentication {
        /// The store, e.g. `etcd at ["https://10.0.0.1:2379"]`.
        store: String,
        /// What was refused and why (never a password).
        reason: String,
    },
    /// Joining did not succeed within the join timeout: every attempt failed
    /// with an error that retrying could fix (store unreachable, overloaded,
    /// timed out).
    #[error(
        "could not join through {store} within the join timeout of {timeout:?}: \
         {attempts} attempt(s) in {elapsed:?}; last failure: {last_error}"
    )]
    JoinTimedOut {
        /// The store tried, e.g. `etcd at ["http://127.0.0.1:2379"]`.
        store: String,
        /// Attempts made.
        attempts: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// The configured join timeout.
        timeout: Duration,
        /// What failed on the last attempt (step and the store's error).
        last_error: String,
    },
}

/// The local node as membership sees it: its current info and bus address.
#[derive(Clone, Debug)]
pub struct LocalNode {
    pub(crate) info: Arc<Mutex<NodeInfo>>,
    pub(crate) addr: SocketAddr,
    pub(crate) secret: Option<Arc<Vec<u8>>>,
}

impl LocalNode {
    /// The node's current id, name, channels and state.
    pub fn info(&self) -> NodeInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The node's bus address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster secret, when connections must authenticate.
    pub fn secret(&self) -> Option<&[u8]> {
        self.secret.as_deref().map(Vec::as_slice)
    }
}

/// What a started membership works with.
#[derive(Clone, Debug)]
pub struct MembershipContext {
    /// Where peer tables are published.
    pub directory: Arc<Directory>,
    /// The local node.
    pub local: LocalNode,
    /// The node's bus TLS, for membership that talks to peers over the bus
    /// protocol (the static prober).
    pub tls: Option<crate::tls::TlsConfig>,
}

/// A source of cluster membership.
pub trait Membership: Send + 'static {
    /// Chooses this node's id before it starts serving.
    fn join(&mut self, local: &NodeInfo, addr: SocketAddr) -> Result<NodeId, MembershipError>;
    /// Starts keeping `ctx.directory` current (on threads of its own).
    fn start(&mut self, ctx: MembershipContext) -> Result<(), MembershipError>;
    /// The local node's channels or state changed.
    fn local_changed(&self, info: &NodeInfo);
    /// Leaves the cluster and stops its threads.
    fn leave(&mut self);
}
