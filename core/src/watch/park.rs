//! The shard-local side of watches (each shard is one thread): requests
//! parked until a consumer answers them, the queues to close when the
//! shard's thread ends, and the requests whose delivery was dropped while
//! the shard's command queue was full.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_channel::Sender;
use rustc_hash::FxHashMap;

use super::Delivery;
use crate::handler::{OwnedRequest, Request};

thread_local! {
    /// This shard's parked requests and watch queues (each shard is one
    /// thread).
    static SHARD: RefCell<ShardWatches> = RefCell::new(ShardWatches::default());
}

#[derive(Default)]
struct ShardWatches {
    next_id: u64,
    parked: FxHashMap<u64, OwnedRequest>,
    /// Close their queue when this thread ends.
    queues: Vec<CloseOnDrop>,
}

impl Drop for ShardWatches {
    fn drop(&mut self) {
        // The shard's thread is ending, after its executor: answering now
        // would touch connections of a reactor that is gone (their callers
        // saw them close). The parked requests are leaked, not dropped.
        for (_, req) in self.parked.drain() {
            std::mem::forget(req);
        }
    }
}

/// Closes a watch's queue when dropped: consumers then see its end.
pub(super) struct CloseOnDrop(pub(super) Sender<Delivery>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

pub(super) fn keep_until_shard_ends(queue: CloseOnDrop) {
    SHARD.with(|s| {
        let mut s = s.borrow_mut();
        // Forget the queues of watches already dropped.
        s.queues.retain(|q| q.0.receiver_count() > 0);
        s.queues.push(queue);
    });
}

pub(super) fn next_id() -> u64 {
    SHARD.with(|s| {
        let mut s = s.borrow_mut();
        s.next_id += 1;
        s.next_id
    })
}

/// Parks the reply side of `req` on this shard under `id`.
pub(super) fn park(id: u64, req: &mut Request<'_>) {
    let bus = req.bus().clone();
    // The request keeps a replier with nobody behind it: it no longer
    // answers `NoReply` when the handler returns.
    let replier = req.replier.take();
    let owned = OwnedRequest {
        meta: *req.meta,
        payload: Vec::new(),
        replier,
        bus,
        deadline: req.deadline,
    };
    SHARD.with(|s| s.borrow_mut().parked.insert(id, owned));
}

/// Takes back a parked request (answer it, or drop it: `NoReply`) outside
/// the table's borrow.
pub(super) fn unpark(id: u64) -> Option<OwnedRequest> {
    SHARD.with(|s| s.borrow_mut().parked.remove(&id))
}

/// Per shard, requests whose delivery was dropped while the shard's
/// command queue was full (answered `NoReply` by the next sweep).
#[derive(Default)]
pub(super) struct Orphans {
    any: AtomicBool,
    ids: Mutex<Vec<u64>>,
}

impl Orphans {
    pub(super) fn push(&self, id: u64) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        self.any.store(true, Ordering::Release);
    }

    pub(super) fn take(&self) -> Vec<u64> {
        // A plain load first: this runs for every message, and the
        // shards' entries sit side by side.
        if !self.any.load(Ordering::Relaxed) || !self.any.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_taken_once() {
        let o = Orphans::default();
        assert!(o.take().is_empty());
        o.push(3);
        o.push(4);
        assert_eq!(o.take(), vec![3, 4]);
        assert!(o.take().is_empty());
    }
}
