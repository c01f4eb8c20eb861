//! What the node handle and its shards share: the read-mostly state every
//! shard consults (configuration, id, peer directory, handler table, the
//! node's own info and state, node-wide down-marks) and the changes either
//! side may make to it (subscriptions, state transitions), which membership
//! hears of. Both [`crate::node`] and the shards hold an `Arc<Shared>`;
//! neither points back at the other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::channel::{Channel, NodeId};
use crate::config::NodeConfig;
use crate::error::BusError;
use crate::handler::{Handler, HandlerTable};
use crate::handshake::{NodeInfo, NodeState};
use crate::membership::{LocalNode, Membership};
use crate::route::{Directory, Peer};

/// State shared by the shards and the node handle.
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    /// The address the shards listen on (the advertised one is `local.addr`).
    pub(crate) addr: SocketAddr,
    pub(crate) directory: Arc<Directory>,
    pub(crate) handlers: ArcSwap<HandlerTable>,
    pub(crate) handler_epoch: AtomicU64,
    /// Bumped when this node's info (channels, state) changes; each shard
    /// announces to its peers until it has announced the latest one.
    pub(crate) info_epoch: AtomicU64,
    state: AtomicU8,
    pub(crate) local: LocalNode,
    /// Peers a shard of this node failed to reach (by node id): every shard
    /// skips them until the shard that marked one reconnects.
    down: Box<[AtomicBool]>,
    downs: AtomicUsize,
    membership: Mutex<Box<dyn Membership>>,
    /// Serializes subscription and state changes.
    update: Mutex<()>,
    /// The node was stopped: no more subscriptions or sends.
    pub(crate) stopped: AtomicBool,
    /// Per-channel rate limits, shared by the shards.
    pub(crate) limits: crate::limiter::Limits,
}

impl Shared {
    /// State for a node that took `local`'s id and serves `handlers`.
    pub(crate) fn new(
        config: NodeConfig,
        bound: SocketAddr,
        local: LocalNode,
        directory: Arc<Directory>,
        handlers: HandlerTable,
        membership: Box<dyn Membership>,
    ) -> Shared {
        let info = local.info();
        Shared {
            addr: bound,
            directory,
            handlers: ArcSwap::from_pointee(handlers),
            handler_epoch: AtomicU64::new(1),
            info_epoch: AtomicU64::new(0),
            state: AtomicU8::new(info.state.to_u8()),
            local,
            down: (0..=NodeId::MAX).map(|_| AtomicBool::new(false)).collect(),
            downs: AtomicUsize::new(0),
            membership: Mutex::new(membership),
            update: Mutex::new(()),
            stopped: AtomicBool::new(false),
            limits: {
                let limits = crate::limiter::Limits::new(&config.rate_limits);
                limits.set_node(config.node_rate_limit);
                limits
            },
            config,
        }
    }

    /// This node's id (see [`crate::MembershipContext::renumber`]).
    pub(crate) fn id(&self) -> NodeId {
        self.local.id()
    }

    pub(crate) fn local_info(&self) -> NodeInfo {
        self.local.info()
    }

    pub(crate) fn membership(&self) -> MutexGuard<'_, Box<dyn Membership>> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Marks `peer` down (or up again) for every shard.
    pub(crate) fn set_down(&self, peer: NodeId, down: bool) {
        let Some(flag) = self.down.get(peer.index()) else {
            return;
        };
        if flag.swap(down, Ordering::AcqRel) != down {
            if down {
                self.downs.fetch_add(1, Ordering::AcqRel);
            } else {
                self.downs.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    pub(crate) fn is_down(&self, peer: NodeId) -> bool {
        self.down
            .get(peer.index())
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    pub(crate) fn any_down(&self) -> bool {
        self.downs.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn state(&self) -> NodeState {
        NodeState::from_u8(self.state.load(Ordering::Acquire)).unwrap_or(NodeState::Draining)
    }

    /// Serves `channel` with `handler` on every shard, and tells membership
    /// (shards announce the change to their peers).
    pub(crate) fn subscribe(&self, channel: Channel, handler: Handler) -> Result<(), BusError> {
        if self.is_stopped() {
            return Err(BusError::ShuttingDown);
        }
        let _g = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let table = self.handlers.load().with(channel, handler)?;
        self.set_handlers(table);
        Ok(())
    }

    /// Stops serving `channel`; returns whether it was served.
    pub(crate) fn unsubscribe(&self, channel: Channel) -> bool {
        self.unsubscribe_if(channel, |_| true)
    }

    /// Stops serving `channel` if `is_current` holds for its handler,
    /// checked under the same lock as every other change (a dropped
    /// [`crate::watch::Watch`] never removes a handler that replaced its
    /// own); returns whether it did.
    pub(crate) fn unsubscribe_if(
        &self,
        channel: Channel,
        is_current: impl FnOnce(&Handler) -> bool,
    ) -> bool {
        if self.is_stopped() {
            return false;
        }
        let _g = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.handlers.load();
        if !current.get(channel).is_some_and(is_current) {
            return false;
        }
        let table = current.without(channel);
        drop(current);
        self.set_handlers(table);
        true
    }

    fn set_handlers(&self, table: HandlerTable) {
        let channels = table.channels();
        self.handlers.store(Arc::new(table));
        self.handler_epoch.fetch_add(1, Ordering::AcqRel);
        self.local_changed(|info| info.channels = channels);
    }

    /// Sets the node's state and tells membership.
    pub(crate) fn set_state(&self, state: NodeState) {
        let _g = self.update.lock().unwrap_or_else(|e| e.into_inner());
        self.store_state(state);
    }

    /// Moves from `from` to `to` (compare-and-set with respect to every
    /// other change); false, and nothing changed, when not in `from`.
    pub(crate) fn transition(&self, from: NodeState, to: NodeState) -> bool {
        let _g = self.update.lock().unwrap_or_else(|e| e.into_inner());
        if self.state() != from {
            return false;
        }
        self.store_state(to);
        true
    }

    fn store_state(&self, state: NodeState) {
        self.state.store(state.to_u8(), Ordering::Release);
        self.local_changed(|info| info.state = state);
    }

    fn local_changed(&self, f: impl FnOnce(&mut NodeInfo)) {
        let info = {
            let mut info = self.local.lock();
            f(&mut info);
            let addr = self.local.addr;
            // Under the info lock, as a renumbering updates the entry.
            self.directory.update(|t| {
                t.with_peer(Peer {
                    info: info.clone(),
                    addr,
                    up: true,
                })
            });
            info.clone()
        };
        self.membership().local_changed(&info);
        // Each shard announces on its next housekeeping tick (it compares
        // `info_epoch`); the node handle also asks them to at once.
        self.info_epoch.fetch_add(1, Ordering::AcqRel);
    }
}
