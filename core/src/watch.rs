//! Stream consumers: a channel's messages delivered into a bounded queue
//! that any thread or executor consumes (the seed's `WatchChannel`).
//!
//! [`Node::watch`] subscribes a channel with a sync handler that moves each
//! message (payload copied once) into one bounded MPMC queue and returns
//! the consuming end, a [`Watch`]: a [`futures_lite::Stream`] (tokio,
//! async-std, `futures::executor`, a glommio task…), a blocking iterator
//! for plain threads (`for d in watch`, [`Watch::iter`]), and `recv` /
//! `try_recv`.
//!
//! **Backpressure on that channel only.** The handler never waits: when the
//! queue is full, a request is answered [`ErrorCode::Backpressure`] (nothing
//! ran, so its caller tries the next provider within its timeout) and a
//! one-way message is dropped; both are counted (`watch_refused`,
//! `watch_dropped`). The shard goes on reading its connections, so other
//! channels and replies keep flowing however slow the consumer is.
//!
//! **Order.** A connection's frames run their handlers in arrival order, so
//! messages one shard of a sender sends (a [`crate::LocalBus`], or a
//! one-shard node's handle) enter the queue in the order sent.
//!
//! **Answering from any thread.** A [`Delivery`] is `Send`; the reply side
//! of a request is not (it holds the shard's connection), so it stays
//! parked on its shard in a thread-local table, keyed by an id the delivery
//! carries. [`Delivery::reply`] hands the answer to that shard through its
//! command queue; dropping a request's delivery unanswered answers
//! [`ErrorCode::NoReply`] the same way (`park`, private, holds that
//! shard-local side).
//!
//! ```no_run
//! # fn demo(node: &domi_core::Node) -> Result<(), domi_core::BusError> {
//! use domi_core::Channel;
//!
//! let orders = node.watch(Channel(70), 1024)?;
//! std::thread::spawn(move || {
//!     for mut order in orders {
//!         // ... work on order.payload() ...
//!         if order.expects_reply() {
//!             let _ = order.reply(b"done");
//!         }
//!     }
//!     // The watch ended: the node stopped.
//! });
//! # Ok(())
//! # }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_channel::{Receiver, Sender, TrySendError};
use tracing::debug;

use crate::channel::{Channel, NodeId};
use crate::error::{BusError, ErrorCode, ReplyError};
use crate::handler::{Handler, OwnedRequest, Request};
use crate::node::Node;
use crate::shard::Command;
use crate::shared::Shared;

mod park;

use park::{keep_until_shard_ends, next_id, park, unpark, CloseOnDrop, Orphans};

impl Node {
    /// Delivers `channel`'s messages into a bounded queue of `capacity`
    /// (at least 1) and returns its consuming end: a `Stream` for any
    /// executor, a blocking iterator for plain threads (see
    /// [`crate::watch`]). The queue's slots are allocated at once (about
    /// a hundred bytes each, payloads apart): size it for the backlog the
    /// consumer may fall behind by, not for a whole stream.
    ///
    /// The node serves `channel` from now on (replacing any handler it
    /// had) and is announced as its provider. When the consumer falls
    /// behind and the queue is full, requests on `channel` are refused with
    /// [`ErrorCode::Backpressure`] (callers fail over to another provider)
    /// and one-way messages are dropped, counted in `watch_refused` /
    /// `watch_dropped`; other channels are not slowed.
    ///
    /// Dropping the [`Watch`] stops serving `channel` (unless another
    /// handler replaced it since) and answers the requests still queued
    /// with `NoReply`. The watch ends (`None`) once the node has stopped
    /// and the queue is drained.
    ///
    /// Errors: `ReservedChannel`; `ShuttingDown` once the node stopped;
    /// `Backpressure` when a shard's command queue is full.
    pub fn watch(&self, channel: Channel, capacity: usize) -> Result<Watch, BusError> {
        crate::error::check_user_channel(channel)?;
        let shards: Box<[Sender<Command>]> = self.command_senders().into();
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        // Each shard closes the queue when its thread ends (the node
        // stopped), so consumers see the end instead of waiting forever.
        for shard in shards.iter() {
            let closer = CloseOnDrop(tx.clone());
            let keep = move |_: &crate::LocalBus| keep_until_shard_ends(closer);
            shard
                .try_send(Command::Run(Box::new(keep)))
                .map_err(|e| match e {
                    TrySendError::Full(_) => BusError::Backpressure {
                        what: "shard command queue",
                    },
                    TrySendError::Closed(_) => BusError::ShuttingDown,
                })?;
        }
        let ctx = Arc::new(Ctx {
            max_payload: self.shared_state().config.max_payload,
            orphans: shards.iter().map(|_| Orphans::default()).collect(),
            shards,
        });
        let handler = handler(ctx.clone(), tx);
        self.subscribe(channel, handler.clone())?;
        Ok(Watch {
            channel,
            rx: Box::pin(rx),
            handler,
            ctx,
            shared: self.shared_state().clone(),
        })
    }
}

/// The consuming end of [`Node::watch`]: a bounded queue of one channel's
/// messages. `Send + Sync`: share it (`Arc<Watch>`) for several consumers.
///
/// Consume it as a `Stream` on any executor, with [`Watch::recv`], or as a
/// blocking iterator from a plain thread (`for d in watch`,
/// [`Watch::iter`]). Never block a shard's thread with it (a handler or
/// shard task): the deliveries that thread owes would wait on it.
pub struct Watch {
    channel: Channel,
    rx: Pin<Box<Receiver<Delivery>>>,
    /// The handler it installed: dropping the watch removes only that one.
    handler: Handler,
    ctx: Arc<Ctx>,
    shared: Arc<Shared>,
}

impl Watch {
    /// The channel watched.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// The next message; `None` once the node stopped and the queue is empty.
    pub async fn recv(&self) -> Option<Delivery> {
        self.rx.recv().await.ok()
    }

    /// The next message, blocking this thread; `None` once the node stopped
    /// and the queue is empty.
    pub fn recv_blocking(&self) -> Option<Delivery> {
        self.rx.recv_blocking().ok()
    }

    /// A blocking iterator over the messages, for plain threads (the same
    /// as `for d in &watch`); it ends once the node stopped and the queue
    /// is empty.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self)
    }

    /// The next message if one is queued now.
    pub fn try_recv(&self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// How many messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.rx.capacity().unwrap_or(usize::MAX)
    }

    /// Whether the node stopped: no more messages will come (those queued
    /// can still be received).
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }
}

impl futures_lite::Stream for Watch {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().rx.as_mut().poll_next(cx)
    }
}

/// `for d in watch`: blocks for each message (see [`Watch::recv_blocking`]).
///
/// `Watch` is a `Stream`, not an `Iterator` itself, so stream combinators
/// (`StreamExt::next`, `map`, `take`…) are never ambiguous.
impl IntoIterator for Watch {
    type Item = Delivery;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self)
    }
}

/// `for d in &watch`: blocks for each message; several threads may share one.
impl<'a> IntoIterator for &'a Watch {
    type Item = Delivery;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        Iter(self)
    }
}

/// A [`Watch`] as a blocking iterator, owning it (dropping it unwatches).
#[derive(Debug)]
pub struct IntoIter(Watch);

impl Iterator for IntoIter {
    type Item = Delivery;

    fn next(&mut self) -> Option<Delivery> {
        self.0.recv_blocking()
    }
}

/// A borrowed [`Watch`] as a blocking iterator ([`Watch::iter`]).
#[derive(Debug)]
pub struct Iter<'a>(&'a Watch);

impl Iterator for Iter<'_> {
    type Item = Delivery;

    fn next(&mut self) -> Option<Delivery> {
        self.0.recv_blocking()
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("channel", &self.channel)
            .field("queued", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mine = |h: &Handler| match (h, &self.handler) {
            (Handler::Sync(a), Handler::Sync(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if self.shared.unsubscribe_if(self.channel, mine) {
            for shard in self.ctx.shards.iter() {
                let _ = shard.try_send(Command::Announce);
            }
        }
        // Later messages are refused (`NoHandler`: callers fail over);
        // requests still queued are answered `NoReply` as they drop.
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }
}

/// One message taken from a [`Watch`]; `Send`, answerable from any thread.
pub struct Delivery {
    channel: Channel,
    reply_channel: Channel,
    source: NodeId,
    payload: Vec<u8>,
    /// The parked reply side of a request not answered yet.
    pending: Option<Pending>,
    /// When the caller stops waiting (requests only).
    deadline: Option<std::time::Instant>,
    /// The answer to this request was handed to its shard.
    answered: bool,
}

const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Delivery>();
    send_sync::<Watch>();
};

impl Delivery {
    /// When the caller stops waiting (see [`crate::Request::deadline`]):
    /// a request still queued past it is of no use to anyone, and its
    /// answer is dropped by the caller.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline
    }

    /// The channel the message was sent to.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// The sender's node id.
    pub fn source(&self) -> NodeId {
        self.source
    }

    /// The caller's reply channel (`call`); `Channel(0)` otherwise.
    pub fn reply_channel(&self) -> Channel {
        self.reply_channel
    }

    /// The message bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The message bytes, owned (a request can no longer be answered:
    /// its caller gets `NoReply`).
    pub fn into_payload(mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    /// Whether the sender waits for an answer not given yet.
    pub fn expects_reply(&self) -> bool {
        self.pending.is_some()
    }

    /// Sends the reply (at most once), from any thread: it is handed to the
    /// shard holding the request, which sends it.
    ///
    /// Errors: `NotExpected` (one-way message), `AlreadyReplied`,
    /// `TooLarge`; `Undeliverable` when the node stopped, or when that
    /// shard's command queue is full — then nothing was sent and the
    /// request is still open: try again, or drop the delivery.
    pub fn reply(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        self.check(bytes.len())?;
        let bytes = bytes.to_vec();
        self.answer(move |req| req.reply(&bytes))
    }

    /// Answers with an application error instead of a reply, from any
    /// thread (see [`Request::reply_error`]); errors as [`Delivery::reply`].
    pub fn reply_error(&mut self, code: u16, message: &str) -> Result<(), ReplyError> {
        self.check(0)?;
        let message = message.to_owned();
        self.answer(move |req| req.reply_error(code, &message))
    }

    fn check(&self, len: usize) -> Result<(), ReplyError> {
        let Some(p) = &self.pending else {
            return Err(if self.answered {
                ReplyError::AlreadyReplied
            } else {
                ReplyError::NotExpected
            });
        };
        let max = p.ctx.max_payload;
        if len > max as usize {
            return Err(ReplyError::TooLarge { len, max });
        }
        Ok(())
    }

    fn answer(
        &mut self,
        f: impl FnOnce(&mut OwnedRequest) -> Result<(), ReplyError> + Send + 'static,
    ) -> Result<(), ReplyError> {
        let Some(p) = &self.pending else {
            return Err(ReplyError::NotExpected);
        };
        let (id, shard, channel) = (p.id, p.shard, self.channel);
        let ctx = p.ctx.clone();
        let run = move |_: &crate::LocalBus| {
            ctx.sweep(shard);
            let Some(mut req) = unpark(id) else { return };
            if let Err(e) = f(&mut req) {
                debug!(%channel, error = %e, "a watch's answer could not be sent");
            }
        };
        match p.ctx.shards[shard].try_send(Command::Run(Box::new(run))) {
            Ok(()) => {
                self.pending = None;
                self.answered = true;
                Ok(())
            }
            Err(_) => Err(ReplyError::Undeliverable),
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("channel", &self.channel)
            .field("source", &self.source)
            .field("len", &self.payload.len())
            .field("expects_reply", &self.expects_reply())
            .finish()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(p) = self.pending.take() else { return };
        // Unparking drops the reply side on its shard: `NoReply`.
        let ctx = p.ctx.clone();
        let (id, shard) = (p.id, p.shard);
        let run = move |_: &crate::LocalBus| {
            ctx.sweep(shard);
            drop(unpark(id));
        };
        if let Err(TrySendError::Full(_)) =
            p.ctx.shards[shard].try_send(Command::Run(Box::new(run)))
        {
            p.ctx.orphans[shard].push(id);
        }
    }
}

/// A request's parked reply side: which shard holds it, under which id.
struct Pending {
    ctx: Arc<Ctx>,
    shard: usize,
    id: u64,
}

/// What a watch's handler and deliveries share.
struct Ctx {
    /// Each shard's command queue, by shard index.
    shards: Box<[Sender<Command>]>,
    max_payload: u32,
    /// Per shard, requests whose delivery was dropped while the shard's
    /// command queue was full: answered `NoReply` with the next command or
    /// message of this watch the shard runs.
    orphans: Box<[Orphans]>,
}

impl Ctx {
    /// On shard `shard`: answers its orphans `NoReply`.
    fn sweep(&self, shard: usize) {
        for id in self.orphans[shard].take() {
            drop(unpark(id));
        }
    }
}

/// The watch's handler: queue the message, or refuse it when the queue is
/// full or gone (never waits).
fn handler(ctx: Arc<Ctx>, tx: Sender<Delivery>) -> Handler {
    Handler::sync(move |req: &mut Request<'_>| {
        let shard = req.bus().shard();
        ctx.sweep(shard);
        let expects = req.expects_reply();
        let pending = expects.then(|| Pending {
            ctx: ctx.clone(),
            shard,
            id: next_id(),
        });
        let id = pending.as_ref().map(|p| p.id);
        let delivery = Delivery {
            channel: req.channel(),
            reply_channel: req.reply_channel(),
            source: req.source(),
            payload: req.payload().to_vec(),
            pending,
            deadline: req.deadline(),
            answered: false,
        };
        // The consumer may take the delivery at once, but its answer runs
        // on this shard, after this handler: the request is parked by then.
        let why = match tx.try_send(delivery) {
            Ok(()) => {
                if let Some(id) = id {
                    park(id, req);
                }
                return;
            }
            Err(TrySendError::Full(d)) => (Refused::Full, d),
            Err(TrySendError::Closed(d)) => (Refused::Closed, d),
        };
        let (why, mut delivery) = why;
        delivery.pending = None; // never parked: nothing to answer there
        let verdict = verdict(why, expects);
        let bus = req.bus();
        match verdict.tally {
            Tally::Refused => bus.count(|c| &c.watch_refused),
            Tally::Dropped => bus.count(|c| &c.watch_dropped),
            Tally::Unhandled => bus.count(|c| &c.unhandled),
        }
        match verdict.answer {
            Some(code) => req.fail(code),
            None => {
                debug!(channel = %req.channel(), ?why, "one-way message dropped: its watch cannot take it")
            }
        }
    })
}

/// Why a watch's queue did not take a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// The consumer fell behind.
    Full,
    /// The watch was dropped (its handler not yet removed everywhere).
    Closed,
}

/// Which counter a refused message bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tally {
    Refused,
    Dropped,
    Unhandled,
}

/// What becomes of a message the queue did not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    /// The error code a request is answered with; `None`: dropped.
    answer: Option<ErrorCode>,
    tally: Tally,
}

/// A full queue refuses requests with `Backpressure` (nothing ran: the
/// caller fails over) and drops one-way messages; a dropped watch is a
/// channel with no handler.
fn verdict(why: Refused, expects_reply: bool) -> Verdict {
    match (why, expects_reply) {
        (Refused::Full, true) => Verdict {
            answer: Some(ErrorCode::Backpressure),
            tally: Tally::Refused,
        },
        (Refused::Full, false) => Verdict {
            answer: None,
            tally: Tally::Dropped,
        },
        (Refused::Closed, expects) => Verdict {
            answer: expects.then_some(ErrorCode::NoHandler),
            tally: Tally::Unhandled,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_requests_with_backpressure() {
        let v = verdict(Refused::Full, true);
        assert_eq!(v.answer, Some(ErrorCode::Backpressure));
        assert!(v.answer.is_some_and(ErrorCode::is_retryable));
        assert_eq!(v.tally, Tally::Refused);
    }

    #[test]
    fn a_full_queue_drops_one_way_messages_and_counts_them() {
        let v = verdict(Refused::Full, false);
        assert_eq!((v.answer, v.tally), (None, Tally::Dropped));
    }

    #[test]
    fn a_dropped_watch_is_a_channel_without_handler() {
        let v = verdict(Refused::Closed, true);
        assert_eq!(
            (v.answer, v.tally),
            (Some(ErrorCode::NoHandler), Tally::Unhandled)
        );
        let v = verdict(Refused::Closed, false);
        assert_eq!((v.answer, v.tally), (None, Tally::Unhandled));
    }
}
