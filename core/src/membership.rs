//! The membership seam: how a node learns its id and its peers.
//!
//! The node calls [`Membership::join`] before its shards start (to learn its
//! id), then [`Membership::start`] with the [`Directory`] to keep current,
//! [`Membership::local_changed`] whenever its channels or state change, and
//! [`Membership::leave`] when it stops. `domi-cluster` implements it twice:
//! a static peer list (the embedded default) and etcd.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::channel::NodeId;
use crate::handshake::NodeInfo;
use crate::route::Directory;

/// A membership failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Every node id `0..=1023` is taken (through etcd: still, after waiting
    /// one lease TTL and a request timeout for one to free up).
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
    /// `info.id`, readable without the lock (the shards' data path reads it).
    id: Arc<AtomicU16>,
    /// `info.instance`, which never changes.
    instance: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) secret: Option<Arc<Vec<u8>>>,
}

impl LocalNode {
    pub(crate) fn new(info: NodeInfo, addr: SocketAddr, secret: Option<Arc<Vec<u8>>>) -> Self {
        LocalNode {
            id: Arc::new(AtomicU16::new(info.id.get())),
            instance: info.instance,
            info: Arc::new(Mutex::new(info)),
            addr,
            secret,
        }
    }

    /// The node's current id, name, channels and state.
    pub fn info(&self) -> NodeInfo {
        self.lock().clone()
    }

    /// The node's current id (see [`MembershipContext::renumber`]).
    pub fn id(&self) -> NodeId {
        NodeId::new(self.id.load(Ordering::Acquire)).expect("only valid ids are stored")
    }

    /// This run of the node (random at start; see [`NodeInfo::instance`]).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, NodeInfo> {
        self.info.lock().unwrap_or_else(|e| e.into_inner())
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

impl MembershipContext {
    /// Gives the running node a new id, after the membership store gave its
    /// id to another node (with etcd: our lease ended while etcd could not
    /// be reached, and a joining node claimed the freed id). The node's own
    /// peer-table entry moves to `id`; each shard closes the connections
    /// that announced the old id on its next housekeeping round (requests
    /// waiting on them fail with `PeerLost`), and new ones announce `id`.
    /// [`crate::Node::id`] returns `id` from now on.
    pub fn renumber(&self, id: NodeId) {
        let mut info = self.local.lock();
        let old = info.id;
        if old == id {
            return;
        }
        info.id = id;
        self.local.id.store(id.get(), Ordering::Release);
        let peer = crate::route::Peer {
            info: info.clone(),
            addr: self.local.addr,
            up: true,
        };
        // Under the info lock, so a concurrent local change cannot put the
        // old id's entry back.
        self.directory.update(|t| t.without(old).with_peer(peer));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::handshake::NodeState;
    use crate::route::Peer;

    #[test]
    fn renumbering_moves_the_local_entry_and_the_id_together() {
        let info = NodeInfo {
            version: crate::frame::PROTOCOL_VERSION,
            cluster: "c".into(),
            id: NodeId::test(3),
            name: "me".into(),
            instance: 7,
            channels: vec![Channel(50)],
            state: NodeState::Serving,
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let directory = Arc::new(Directory::new());
        let mut other = info.clone();
        other.id = NodeId::test(4);
        other.name = "other".into();
        directory.update(|t| {
            t.with_peer(Peer {
                info: info.clone(),
                addr,
                up: true,
            })
            .with_peer(Peer {
                info: other.clone(),
                addr,
                up: true,
            })
        });
        let ctx = MembershipContext {
            directory: directory.clone(),
            local: LocalNode::new(info, addr, None),
            tls: None,
        };
        let events = directory.subscribe();
        ctx.renumber(NodeId::test(9));
        assert_eq!(ctx.local.id(), NodeId::test(9));
        assert_eq!(ctx.local.info().id, NodeId::test(9));
        let t = directory.snapshot();
        assert!(t.get(NodeId::test(3)).is_none());
        assert_eq!(t.get(NodeId::test(9)).unwrap().info.name, "me");
        assert_eq!(t.get(NodeId::test(4)).unwrap().info.name, "other");
        assert_eq!(
            t.providers(Channel(50)),
            &[NodeId::test(4), NodeId::test(9)]
        );
        let seen: Vec<_> = events.try_iter().collect();
        assert!(seen.contains(&crate::route::PeerEvent::Left(NodeId::test(3))));
        assert!(seen.contains(&crate::route::PeerEvent::Joined(NodeId::test(9))));
        // The same id again changes nothing.
        let epoch = directory.snapshot().epoch();
        ctx.renumber(NodeId::test(9));
        assert_eq!(directory.snapshot().epoch(), epoch);
    }
}
