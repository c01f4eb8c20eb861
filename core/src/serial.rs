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
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_channel::oneshot;
use rustc_hash::FxHashMap;

use crate::channel::{Channel, NodeId};
use crate::handler::{Handler, OwnedRequest};

/// A lane: one serial handler, one channel, one sender.
type LaneKey = (u64, Channel, NodeId);

/// The messages waiting for a lane's turn, first come first served (the
/// message whose turn it is is not in it).
type Waiters = VecDeque<oneshot::Sender<()>>;

thread_local! {
    /// This shard's busy lanes (a lane with no message is removed).
    static LANES: RefCell<FxHashMap<LaneKey, Waiters>> = RefCell::default();
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
    ///
    /// A request whose deadline passed (or whose caller's connection
    /// closed) while it waited for its turn is dropped unrun, as one waiting
    /// in the async-handler queue is.
    pub fn serial<F, Fut>(f: F) -> Handler
    where
        F: Fn(OwnedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let id = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        let f = Arc::new(f);
        Handler::asynchronous(move |mut req: OwnedRequest| {
            let mut turn = Turn::join((id, req.channel(), req.source()));
            let f = f.clone();
            async move {
                // FIFO: the lane hands its turn to the first waiter.
                turn.wait().await;
                if req.missed_its_turn() {
                    return;
                }
                f(req).await;
            }
        })
    }
}

/// A message's place in its lane. Once it has the turn, ending it
/// (however the handler ends, a panic included) passes the lane to the
/// next waiter, or removes the lane when nobody waits.
struct Turn {
    key: LaneKey,
    /// What hands this message the turn (none: it had it at once).
    wait: Option<oneshot::Receiver<()>>,
    holding: bool,
}

impl Turn {
    /// Joins the lane of `key`: the turn at once when the lane is idle.
    fn join(key: LaneKey) -> Turn {
        let wait = LANES.with(|l| {
            let mut lanes = l.borrow_mut();
            match lanes.get_mut(&key) {
                None => {
                    lanes.insert(key, VecDeque::new());
                    None
                }
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push_back(tx);
                    Some(rx)
                }
            }
        });
        Turn {
            key,
            holding: wait.is_none(),
            wait,
        }
    }

    /// Waits for the turn.
    async fn wait(&mut self) {
        if let Some(rx) = &mut self.wait {
            // `Canceled` only when the lane table itself is gone: go on.
            let _ = rx.await;
        }
        self.holding = true;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // A turn handed over but not yet taken up is held all the same.
        let handed = self
            .wait
            .as_mut()
            .is_some_and(|rx| matches!(rx.try_recv(), Ok(Some(()))));
        if !(self.holding || handed) {
            // Still waiting: its place is skipped (its sender fails).
            return;
        }
        LANES.with(|l| {
            let mut lanes = l.borrow_mut();
            let Some(waiters) = lanes.get_mut(&self.key) else {
                return;
            };
            while let Some(next) = waiters.pop_front() {
                if next.send(()).is_ok() {
                    return;
                }
            }
            lanes.remove(&self.key);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_turn(t: &mut Turn) -> bool {
        t.holding
            || t.wait
                .as_mut()
                .is_some_and(|rx| matches!(rx.try_recv(), Ok(Some(()))))
                .then(|| t.holding = true)
                .is_some()
    }

    #[test]
    fn turns_pass_first_come_first_served_and_lanes_are_removed_when_empty() {
        let key = (u64::MAX, Channel(5), NodeId::test(1));
        let mut first = Turn::join(key);
        assert!(has_turn(&mut first), "an idle lane: the turn at once");
        let mut second = Turn::join(key);
        let third = Turn::join(key);
        let mut fourth = Turn::join(key);
        assert!(!has_turn(&mut second));
        // Another lane is independent.
        let mut other = Turn::join((u64::MAX, Channel(5), NodeId::test(2)));
        assert!(has_turn(&mut other));
        drop(other);
        drop(first);
        assert!(has_turn(&mut second), "the first waiter's turn");
        assert!(!has_turn(&mut fourth));
        // A waiter that went away before its turn is skipped, and does
        // not pass a turn it never had.
        drop(third);
        assert!(!has_turn(&mut fourth), "the second still holds the lane");
        drop(second);
        assert!(has_turn(&mut fourth));
        drop(fourth);
        assert!(LANES.with(|l| l.borrow().is_empty()));
    }

    #[test]
    fn a_turn_handed_over_but_never_taken_up_is_passed_on() {
        let key = (u64::MAX - 1, Channel(6), NodeId::test(1));
        let first = Turn::join(key);
        let second = Turn::join(key);
        let mut third = Turn::join(key);
        drop(first); // hands the turn to `second`...
        drop(second); // ...whose message is dropped before it ran.
        assert!(has_turn(&mut third));
        drop(third);
        assert!(LANES.with(|l| l.borrow().is_empty()));
    }
}
