//! Serial handlers (the seed's `Serial` processor): messages on a channel
//! from one sender are handled one at a time, in the order they arrived.
//!
//! A sync handler already runs inline, one frame after another per
//! connection. An async handler normally runs many messages at once;
//! [`Handler::serial`] wraps one so that each sender node gets a lane per
//! channel on each shard: a message waits until the one before it from the
//! same sender has finished (replied, or its future ended), while messages
//! from other senders run alongside. Waiting messages hold their handler
//! slot (see [`crate::overload`]), so a slow lane pushes back on its sender
//! through the usual queue and `Backpressure`.
//!
//! Order is the order of arrival on a shard. A sender's messages arrive in
//! the order it sent them when they leave from one of its shards: sends
//! from a handler or a shard task, and keyed sends from a plain thread
//! (`Node::notify_keyed` sends all messages of a key from the same shard);
//! `Node::notify` from a plain thread spreads over the sender's shards.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use glommio::sync::Semaphore;
use rustc_hash::FxHashMap;

use crate::channel::{Channel, NodeId};
use crate::handler::{Handler, OwnedRequest};

/// A lane: one serial handler, one channel, one sender.
type LaneKey = (u64, Channel, NodeId);

thread_local! {
    /// This shard's busy lanes (a lane with no message is removed).
    static LANES: RefCell<FxHashMap<LaneKey, Rc<Semaphore>>> = RefCell::default();
}

/// Tells serial handlers apart (a lane belongs to one).
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(0);

impl Handler {
    /// An async handler that takes one sender's messages one at a time, in
    /// arrival order (see [`crate::serial`]):
    ///
    /// ```no_run
    /// # use domi_core::Handler;
    /// let ordered = Handler::serial(|mut req| async move {
    ///     // Runs only after this sender's previous message finished here.
    ///     let _ = req.reply(b"done");
    /// });
    /// ```
    pub fn serial<F, Fut>(f: F) -> Handler
    where
        F: Fn(OwnedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let id = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        let f = Arc::new(f);
        Handler::asynchronous(move |req: OwnedRequest| {
            let lane = Lane::join((id, req.channel(), req.source()));
            let f = f.clone();
            async move {
                // FIFO: messages queue for the lane in the order their
                // tasks first ran, which is their order of arrival.
                let _turn = lane.semaphore.acquire_permit(1).await;
                f(req).await;
            }
        })
    }
}

/// A message's place in its lane; leaving (however the handler ends, a
/// panic included) removes the lane once no message is left in it.
struct Lane {
    key: LaneKey,
    semaphore: Rc<Semaphore>,
}

impl Lane {
    fn join(key: LaneKey) -> Lane {
        let semaphore = LANES.with(|l| {
            l.borrow_mut()
                .entry(key)
                .or_insert_with(|| Rc::new(Semaphore::new(1)))
                .clone()
        });
        Lane { key, semaphore }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // The table's reference and this one: nobody else is in the lane.
        if Rc::strong_count(&self.semaphore) == 2 {
            LANES.with(|l| l.borrow_mut().remove(&self.key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_shared_while_busy_and_removed_when_empty() {
        let key = (u64::MAX, Channel(5), NodeId::test(1));
        let a = Lane::join(key);
        let b = Lane::join(key);
        assert!(Rc::ptr_eq(&a.semaphore, &b.semaphore));
        let other = Lane::join((u64::MAX, Channel(5), NodeId::test(2)));
        assert!(!Rc::ptr_eq(&a.semaphore, &other.semaphore));
        drop(a);
        assert!(LANES.with(|l| l.borrow().contains_key(&key)));
        drop(b);
        drop(other);
        assert!(LANES.with(|l| l.borrow().is_empty()));
    }
}
