//! Routing: the immutable peer table, round-robin selection, and the
//! [`Directory`] through which membership publishes tables to the shards.
//!
//! A [`PeerTable`] is a value: membership code builds a new one from the old
//! (pure functions, unit-tested) and swaps it in; shards read the current one
//! with one atomic load per send and never lock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use crate::channel::{Channel, NodeId};
use crate::handshake::{NodeInfo, NodeState};

mod cursors;
pub(crate) use cursors::Cursors;

/// What the table knows of one node (the local node included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Id, name, channels, state, as announced.
    pub info: NodeInfo,
    /// Bus address.
    pub addr: SocketAddr,
    /// Whether membership currently sees the node alive.
    pub up: bool,
}

impl Peer {
    /// Whether new requests may be routed to this node.
    pub fn routable(&self) -> bool {
        self.up && self.info.state == NodeState::Serving
    }

    /// Whether broadcasts (`publish`) reach this node: up and not draining
    /// (a paused node still receives them).
    pub fn subscribed(&self) -> bool {
        self.up && self.info.state != NodeState::Draining
    }
}

/// An immutable snapshot: id → peer, channel → routable providers, and
/// channel → subscribers that broadcasts reach.
///
/// Peers are shared between successive tables: a new table copies pointers,
/// not names and channel lists, so rebuilding a table of 1024 peers for a
/// batch of changes allocates only for the peers that changed.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    epoch: u64,
    peers: BTreeMap<NodeId, Arc<Peer>>,
    providers: FxHashMap<Channel, Arc<[NodeId]>>,
    subscribers: FxHashMap<Channel, Arc<[NodeId]>>,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> PeerTable {
        PeerTable::default()
    }

    /// Monotonic version, bumped by every change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Routable providers of `channel`, sorted by id (the local node included).
    pub fn providers(&self, channel: Channel) -> &[NodeId] {
        self.providers.get(&channel).map(|p| &p[..]).unwrap_or(&[])
    }

    /// [`PeerTable::providers`] as a shared list (what a shard's
    /// [`Cursors`] keep at hand).
    pub(crate) fn providers_shared(&self, channel: Channel) -> Arc<[NodeId]> {
        self.providers
            .get(&channel)
            .cloned()
            .unwrap_or_else(|| Arc::from([]))
    }

    /// Nodes a `publish` on `channel` reaches: up and not draining, paused
    /// ones included; sorted by id (the local node included).
    pub fn subscribers(&self, channel: Channel) -> &[NodeId] {
        self.subscribers
            .get(&channel)
            .map(|p| &p[..])
            .unwrap_or(&[])
    }

    /// Every node that serves `channel`, routable or not.
    pub fn all_serving(&self, channel: Channel) -> impl Iterator<Item = &Peer> {
        self.peers
            .values()
            .map(|p| &**p)
            .filter(move |p| p.info.channels.binary_search(&channel).is_ok())
    }

    /// One peer.
    pub fn get(&self, id: NodeId) -> Option<&Peer> {
        self.peers.get(&id).map(|p| &**p)
    }

    /// All peers by id.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().map(|p| &**p)
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Approximate heap bytes held by this table (peers, names, channel
    /// lists, the provider index); for capacity planning and benchmarks.
    pub fn approx_heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let peers: usize = self
            .peers
            .values()
            .map(|p| {
                size_of::<(NodeId, Arc<Peer>)>()
                    + size_of::<Peer>()
                    + 16 // B-tree node and Arc overhead per entry, roughly
                    + p.info.name.capacity()
                    + p.info.cluster.capacity()
                    + p.info.channels.capacity() * size_of::<Channel>()
            })
            .sum();
        let index: usize = self
            .providers
            .values()
            .chain(self.subscribers.values())
            .map(|v| size_of::<(Channel, Arc<[NodeId]>)>() + 16 + v.len() * size_of::<NodeId>())
            .sum();
        peers + index
    }

    /// A new table with `peer` inserted or replaced.
    pub fn with_peer(&self, peer: Peer) -> PeerTable {
        let mut peers = self.peers.clone();
        peers.insert(peer.info.id, Arc::new(normalized(peer)));
        Self::indexed(self.epoch + 1, peers)
    }

    /// A new table with every change of a batch applied, rebuilt once:
    /// `Some(peer)` inserts or replaces, `None` removes that id.
    pub fn with_changes(
        &self,
        changes: impl IntoIterator<Item = (NodeId, Option<Peer>)>,
    ) -> PeerTable {
        let mut peers = self.peers.clone();
        for (id, change) in changes {
            match change {
                Some(p) => {
                    peers.insert(id, Arc::new(normalized(p)));
                }
                None => {
                    peers.remove(&id);
                }
            }
        }
        Self::indexed(self.epoch + 1, peers)
    }

    /// A new table without `id`.
    pub fn without(&self, id: NodeId) -> PeerTable {
        let mut peers = self.peers.clone();
        peers.remove(&id);
        Self::indexed(self.epoch + 1, peers)
    }

    /// A new table with `id` marked up or down (unchanged if unknown).
    pub fn with_up(&self, id: NodeId, up: bool) -> PeerTable {
        match self.peers.get(&id) {
            Some(p) if p.up != up => self.with_peer(Peer {
                up,
                ..Peer::clone(p)
            }),
            _ => self.clone(),
        }
    }

    /// A table holding exactly `peers` (channel lists sorted and de-duplicated).
    pub fn from_peers(epoch: u64, peers: BTreeMap<NodeId, Peer>) -> PeerTable {
        let peers = peers
            .into_iter()
            .map(|(id, p)| (id, Arc::new(normalized(p))))
            .collect();
        Self::indexed(epoch, peers)
    }

    /// A table holding exactly `peers` (normalized), with its indexes.
    fn indexed(epoch: u64, peers: BTreeMap<NodeId, Arc<Peer>>) -> PeerTable {
        let mut providers: FxHashMap<Channel, Vec<NodeId>> = FxHashMap::default();
        let mut subscribers: FxHashMap<Channel, Vec<NodeId>> = FxHashMap::default();
        for p in peers.values() {
            let (routable, subscribed) = (p.routable(), p.subscribed());
            for ch in &p.info.channels {
                if routable {
                    providers.entry(*ch).or_default().push(p.info.id);
                }
                if subscribed {
                    subscribers.entry(*ch).or_default().push(p.info.id);
                }
            }
        }
        let freeze = |m: FxHashMap<Channel, Vec<NodeId>>| {
            m.into_iter().map(|(k, v)| (k, Arc::from(v))).collect()
        };
        PeerTable {
            epoch,
            peers,
            providers: freeze(providers),
            subscribers: freeze(subscribers),
        }
    }
}

/// `peer` with its channel list sorted and de-duplicated (what the
/// indexes and [`PeerTable::all_serving`] rely on).
fn normalized(mut peer: Peer) -> Peer {
    peer.info.channels.sort_unstable();
    peer.info.channels.dedup();
    peer
}

/// Picks the next provider round-robin from `providers`, skipping those for
/// which `skip` is true. `cursor` is the caller's own (per shard, per channel).
pub fn select(
    providers: &[NodeId],
    cursor: &mut usize,
    mut skip: impl FnMut(NodeId) -> bool,
) -> Option<NodeId> {
    let n = providers.len();
    if n == 0 {
        return None;
    }
    // The cursor stays in 0..n, so the hot path has no division; it is
    // reduced only when the provider list shrank since the last call.
    let mut i = if *cursor < n { *cursor } else { *cursor % n };
    for _ in 0..n {
        let id = providers[i];
        i = if i + 1 == n { 0 } else { i + 1 };
        if !skip(id) {
            *cursor = i;
            return Some(id);
        }
    }
    *cursor = i;
    None
}

/// What changed between two peer tables, as the shards are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerEvent {
    /// A node appeared.
    Joined(NodeId),
    /// A node left the table.
    Left(NodeId),
    /// A node's address, liveness, state or channels changed; the new
    /// values are in the current snapshot.
    Changed(NodeId),
}

/// The events that turn `old` into `new`, in id order. An id now held by
/// another instance of a node (one left and another took its id, both
/// within one batch of changes) is `Left` then `Joined`, not `Changed`.
pub fn diff(old: &PeerTable, new: &PeerTable) -> Vec<PeerEvent> {
    let mut events = Vec::new();
    for (id, p) in &old.peers {
        match new.peers.get(id) {
            None => events.push(PeerEvent::Left(*id)),
            Some(q) if q.info.instance != p.info.instance => {
                events.push(PeerEvent::Left(*id));
                events.push(PeerEvent::Joined(*id));
            }
            Some(q) if !Arc::ptr_eq(q, p) && q != p => events.push(PeerEvent::Changed(*id)),
            Some(_) => {}
        }
    }
    for id in new.peers.keys() {
        if !old.peers.contains_key(id) {
            events.push(PeerEvent::Joined(*id));
        }
    }
    events
}

/// The shared, lock-free-to-read home of the current [`PeerTable`].
///
/// Writers (membership threads, `subscribe`) serialize on a mutex and swap in
/// a new table; readers load it with one atomic operation. Every update also
/// sends the [`PeerEvent`]s it caused to each subscriber (one crossbeam
/// channel per shard, drained without blocking).
#[derive(Debug, Default)]
pub struct Directory {
    table: ArcSwap<PeerTable>,
    write: Mutex<Vec<crossbeam_channel::Sender<PeerEvent>>>,
    changes: AtomicU64,
    /// Threads waiting for a change ([`Directory::wait_changed`]), woken
    /// under `write`.
    changed: std::sync::Condvar,
    /// Tasks waiting for a change ([`Directory::changed`]).
    wakers: Mutex<Wakers>,
}

impl Directory {
    /// A directory holding an empty table.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// The current table (one atomic load; hold the guard briefly).
    pub fn load(&self) -> arc_swap::Guard<Arc<PeerTable>> {
        self.table.load()
    }

    /// The current table as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<PeerTable> {
        self.table.load_full()
    }

    /// Applies a pure update `f(old) -> new`, publishes the result and sends
    /// the resulting events to every subscriber.
    pub fn update(&self, f: impl FnOnce(&PeerTable) -> PeerTable) {
        let mut subscribers = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.table.load_full();
        let next = Arc::new(f(&old));
        self.table.store(next.clone());
        self.changes.fetch_add(1, Ordering::Release);
        let events = diff(&old, &next);
        if !events.is_empty() {
            subscribers.retain(|tx| events.iter().all(|e| tx.send(*e).is_ok()));
        }
        self.changed.notify_all();
        drop(subscribers);
        let wakers = std::mem::take(
            &mut self
                .wakers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .waiting,
        );
        for (_, w) in wakers {
            w.wake();
        }
    }

    /// Blocks until the change count moves past `seen` or `until` passes;
    /// returns the count then.
    pub fn wait_changed(&self, seen: u64, until: std::time::Instant) -> u64 {
        let mut guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = self.changes();
            let left = until.saturating_duration_since(std::time::Instant::now());
            if now != seen || left.is_zero() {
                return now;
            }
            guard = self
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A future that ends once the change count moves past `seen` (usable
    /// on any executor; it parks no thread). Dropped before that, it
    /// leaves no waker behind.
    pub fn changed(&self, seen: u64) -> Changed<'_> {
        Changed {
            directory: self,
            seen,
            key: None,
        }
    }

    /// A channel receiving the events of every later update.
    pub fn subscribe(&self) -> crossbeam_channel::Receiver<PeerEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// How many updates were published (cheap change detection for shards).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

/// Tasks waiting for a change, by key (so a waiting future that is dropped
/// takes its waker out).
#[derive(Debug, Default)]
struct Wakers {
    next: u64,
    waiting: Vec<(u64, std::task::Waker)>,
}

/// The future of [`Directory::changed`].
#[derive(Debug)]
pub struct Changed<'a> {
    directory: &'a Directory,
    seen: u64,
    /// Its entry among the directory's wakers, once registered.
    key: Option<u64>,
}

impl std::future::Future for Changed<'_> {
    type Output = u64;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<u64> {
        let directory = self.directory;
        let now = directory.changes();
        if now != self.seen {
            return std::task::Poll::Ready(now);
        }
        {
            let mut wakers = directory.wakers.lock().unwrap_or_else(|e| e.into_inner());
            let key = match self.key {
                Some(k) => k,
                None => {
                    wakers.next += 1;
                    wakers.next
                }
            };
            match wakers.waiting.iter_mut().find(|(k, _)| *k == key) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => wakers.waiting.push((key, cx.waker().clone())),
            }
            self.key = Some(key);
        }
        // An update between the check and the registration woke the
        // wakers before this one was added: look again.
        match directory.changes() {
            n if n != self.seen => std::task::Poll::Ready(n),
            _ => std::task::Poll::Pending,
        }
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut wakers = self
                .directory
                .wakers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            wakers.waiting.retain(|(k, _)| *k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PROTOCOL_VERSION;

    #[test]
    fn a_dropped_wait_leaves_no_waker_and_a_change_ends_a_live_one() {
        use futures_lite::future::{block_on, poll_once};
        let d = Directory::new();
        let seen = d.changes();
        let mut waiting = Box::pin(d.changed(seen));
        assert_eq!(block_on(poll_once(&mut waiting)), None);
        assert_eq!(block_on(poll_once(&mut waiting)), None);
        assert_eq!(
            d.wakers.lock().unwrap().waiting.len(),
            1,
            "one entry per wait"
        );
        drop(waiting);
        assert!(d.wakers.lock().unwrap().waiting.is_empty());
        let live = d.changed(seen);
        std::thread::scope(|s| {
            s.spawn(|| d.update(|t| t.clone()));
            assert_eq!(block_on(live), seen + 1);
        });
        assert!(d.wakers.lock().unwrap().waiting.is_empty());
    }

    fn peer(id: u16, chans: &[u16], state: NodeState, up: bool) -> Peer {
        Peer {
            info: NodeInfo {
                version: PROTOCOL_VERSION,
                cluster: "c".into(),
                id: NodeId::test(id),
                name: format!("n{id}"),
                instance: id as u64,
                channels: chans.iter().rev().map(|c| Channel(*c)).collect(),
                state,
            },
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + id)),
            up,
        }
    }

    #[test]
    fn rebuilds_share_the_peers_they_did_not_change() {
        let t = PeerTable::from_peers(
            1,
            (0..4)
                .map(|i| {
                    (
                        NodeId::test(i),
                        peer(i, &[50, 51, 50], NodeState::Serving, true),
                    )
                })
                .collect(),
        );
        assert_eq!(
            t.get(NodeId::test(2)).unwrap().info.channels,
            vec![Channel(50), Channel(51)]
        );
        let u = t.with_changes([
            (
                NodeId::test(1),
                Some(peer(1, &[52, 50], NodeState::Serving, true)),
            ),
            (NodeId::test(3), None),
        ]);
        for id in [0, 2] {
            assert!(Arc::ptr_eq(
                &t.peers[&NodeId::test(id)],
                &u.peers[&NodeId::test(id)]
            ));
        }
        assert_eq!(
            u.get(NodeId::test(1)).unwrap().info.channels,
            vec![Channel(50), Channel(52)]
        );
        assert_eq!(u.providers(Channel(52)), &[NodeId::test(1)]);
        assert_eq!(
            diff(&t, &u),
            vec![
                PeerEvent::Changed(NodeId::test(1)),
                PeerEvent::Left(NodeId::test(3))
            ]
        );
        assert!(diff(&u, &u.with_changes([])).is_empty());
    }

    #[test]
    fn providers_leave_out_paused_draining_and_down() {
        let t = PeerTable::new()
            .with_peer(peer(2, &[50, 51], NodeState::Serving, true))
            .with_peer(peer(1, &[50, 50], NodeState::Serving, true))
            .with_peer(peer(3, &[50], NodeState::Paused, true))
            .with_peer(peer(4, &[50], NodeState::Draining, true))
            .with_peer(peer(5, &[50], NodeState::Serving, false));
        assert_eq!(
            t.providers(Channel(50)),
            &[NodeId::test(1), NodeId::test(2)]
        );
        assert_eq!(t.providers(Channel(51)), &[NodeId::test(2)]);
        assert_eq!(t.providers(Channel(52)), &[] as &[NodeId]);
        // Broadcasts reach paused subscribers, not draining or down ones.
        assert_eq!(
            t.subscribers(Channel(50)),
            &[NodeId::test(1), NodeId::test(2), NodeId::test(3)]
        );
        assert_eq!(t.all_serving(Channel(50)).count(), 5);
        assert_eq!(t.epoch(), 5);
        let t = t.with_up(NodeId::test(5), true);
        assert_eq!(t.providers(Channel(50)).len(), 3);
        let t = t.without(NodeId::test(1));
        assert_eq!(
            t.providers(Channel(50)),
            &[NodeId::test(2), NodeId::test(5)]
        );
    }

    #[test]
    fn round_robin_is_exactly_even_and_skips() {
        let p = [NodeId::test(0), NodeId::test(1), NodeId::test(2)];
        let mut cursor = 0;
        let mut counts = [0; 3];
        for _ in 0..300 {
            let id = select(&p, &mut cursor, |_| false).unwrap();
            counts[id.index()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(select(&p, &mut cursor, |id| id == NodeId::test(1)).unwrap());
        }
        assert!(!seen.contains(&NodeId::test(1)));
        assert_eq!(select(&p, &mut cursor, |_| true), None);
        assert_eq!(select(&[], &mut cursor, |_| false), None);
    }

    #[test]
    fn directory_publishes_updates_and_events() {
        let d = Directory::new();
        let events = d.subscribe();
        assert!(d.load().is_empty());
        d.update(|t| t.with_peer(peer(1, &[9], NodeState::Serving, true)));
        assert_eq!(d.changes(), 1);
        assert_eq!(d.load().providers(Channel(9)), &[NodeId::test(1)]);
        d.update(|t| t.with_up(NodeId::test(1), false));
        d.update(|t| t.with_up(NodeId::test(1), false)); // no change, no event
        d.update(|t| t.without(NodeId::test(1)));
        let got: Vec<PeerEvent> = events.try_iter().collect();
        assert_eq!(
            got,
            vec![
                PeerEvent::Joined(NodeId::test(1)),
                PeerEvent::Changed(NodeId::test(1)),
                PeerEvent::Left(NodeId::test(1))
            ]
        );
    }

    #[test]
    fn diff_names_every_change() {
        let a = PeerTable::new()
            .with_peer(peer(1, &[9], NodeState::Serving, true))
            .with_peer(peer(2, &[9], NodeState::Serving, true));
        let b = a
            .without(NodeId::test(1))
            .with_peer(peer(2, &[9], NodeState::Paused, true))
            .with_peer(peer(3, &[9], NodeState::Serving, true));
        assert_eq!(
            diff(&a, &b),
            vec![
                PeerEvent::Left(NodeId::test(1)),
                PeerEvent::Changed(NodeId::test(2)),
                PeerEvent::Joined(NodeId::test(3))
            ]
        );
        assert!(diff(&b, &b).is_empty());
        // Another instance under the same id: it left and a new one joined.
        let mut again = peer(2, &[9], NodeState::Serving, true);
        again.info.instance ^= 1;
        let c = b.with_peer(again);
        assert_eq!(
            diff(&b, &c),
            vec![
                PeerEvent::Left(NodeId::test(2)),
                PeerEvent::Joined(NodeId::test(2))
            ]
        );
    }
}
