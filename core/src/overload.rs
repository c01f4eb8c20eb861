//! The async-handler cap of a shard as a pure type: how many async handlers
//! run at once (per shard and, optionally, per channel), and the bounded
//! queue of requests that arrived while the cap was reached.
//!
//! Only *new inbound requests and one-way messages* for async handlers go
//! through here. Replies, errors, heartbeats and control frames never do, and
//! connections are never stopped from reading because of this cap: a handler
//! waiting on a nested request always gets its reply.
//!
//! At the cap a new message is queued (FIFO); over the queue's bounds (count
//! or bytes) it is refused, and the shard answers a request with
//! `ErrorCode::Backpressure`, which callers treat like `Paused`: they fail
//! over to the next provider within the same timeout. Sync handlers run
//! inline and are not counted. Requests a node sends itself (served
//! locally) and replies to its own `call`s run at once, over the cap
//! ([`Slots::force`]): a handler at the cap that calls its own node would
//! otherwise wait on itself, and a reply answers work already started. Nested
//! requests in a cycle across nodes (A's handlers call B, B's call A) can
//! still wait for each other's queues until their timeouts at the cap: keep
//! nested calls acyclic, or the caps above the nesting depth times the load.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::channel::Channel;

/// The bounds of [`Slots`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Async handlers running at once on the shard.
    pub running: u64,
    /// Messages queued at most while the cap is reached.
    pub queued: usize,
    /// Payload bytes queued at most.
    pub queued_bytes: usize,
    /// Optional caps per channel (async handlers of that channel running at once).
    pub per_channel: Vec<(Channel, u32)>,
}

/// What [`Slots::offer`] decided for a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// A slot was free: run it now (the slot is taken).
    Run(T),
    /// The cap is reached: it waits in the queue.
    Queued,
    /// The queue is full too: refuse it.
    Refused(T),
}

/// Running async handlers and the queue of those waiting for a slot.
#[derive(Debug)]
pub struct Slots<T> {
    limits: Limits,
    running: u64,
    /// Per-channel (running, cap), for channels with a cap.
    channels: FxHashMap<Channel, (u32, u32)>,
    queue: VecDeque<(Channel, usize, T)>,
    queued_bytes: usize,
    /// Messages queued per channel (so an offer never scans the queue).
    queued_per_channel: FxHashMap<Channel, usize>,
}

impl<T> Slots<T> {
    /// Empty slots with these bounds (a zero running cap counts as 1).
    pub fn new(limits: Limits) -> Slots<T> {
        let channels = limits
            .per_channel
            .iter()
            .map(|&(ch, cap)| (ch, (0, cap.max(1))))
            .collect();
        Slots {
            limits,
            running: 0,
            channels,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_per_channel: FxHashMap::default(),
        }
    }

    fn may_run(&self, channel: Channel) -> bool {
        self.running < self.limits.running.max(1)
            && self
                .channels
                .get(&channel)
                .is_none_or(|&(run, cap)| run < cap)
    }

    fn start(&mut self, channel: Channel) {
        self.running += 1;
        if let Some(c) = self.channels.get_mut(&channel) {
            c.0 += 1;
        }
    }

    /// Offers a message of `bytes` payload bytes for `channel`.
    ///
    /// Messages of one channel never overtake each other: while any is
    /// queued for `channel`, a new one queues behind it.
    pub fn offer(&mut self, channel: Channel, bytes: usize, item: T) -> Admit<T> {
        let waiting_same = !self.queue.is_empty() && self.queued_per_channel.contains_key(&channel);
        if !waiting_same && self.may_run(channel) {
            self.start(channel);
            return Admit::Run(item);
        }
        if self.queue.len() >= self.limits.queued
            || self.queued_bytes.saturating_add(bytes) > self.limits.queued_bytes
        {
            return Admit::Refused(item);
        }
        self.queued_bytes += bytes;
        *self.queued_per_channel.entry(channel).or_default() += 1;
        self.queue.push_back((channel, bytes, item));
        Admit::Queued
    }

    /// Takes a slot whatever the cap (a request this node sent itself: a
    /// handler at the cap calling its own node must not wait on itself).
    pub fn force(&mut self, channel: Channel) {
        self.start(channel);
    }

    /// A handler of `channel` finished: frees its slot and returns the queued
    /// messages that may run now, oldest first (their slots are taken).
    pub fn finish(&mut self, channel: Channel) -> Vec<T> {
        self.running = self.running.saturating_sub(1);
        if let Some(c) = self.channels.get_mut(&channel) {
            c.0 = c.0.saturating_sub(1);
        }
        let mut ready = Vec::new();
        // Channels whose oldest queued message cannot run (their own cap):
        // their later messages wait behind it.
        let mut blocked: Vec<Channel> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() && self.running < self.limits.running.max(1) {
            let ch = self.queue[i].0;
            if blocked.contains(&ch) {
                i += 1;
            } else if self.may_run(ch) {
                let (ch, bytes, item) = self.queue.remove(i).expect("index in range");
                self.dequeued(ch, bytes);
                self.start(ch);
                ready.push(item);
            } else {
                blocked.push(ch);
                i += 1;
            }
        }
        ready
    }

    /// Handlers running now.
    pub fn running(&self) -> u64 {
        self.running
    }

    /// Messages waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn dequeued(&mut self, channel: Channel, bytes: usize) {
        self.queued_bytes -= bytes;
        if let Some(n) = self.queued_per_channel.get_mut(&channel) {
            *n -= 1;
            if *n == 0 {
                self.queued_per_channel.remove(&channel);
            }
        }
    }

    /// Takes every queued message out (shutdown).
    pub fn drain_queue(&mut self) -> Vec<T> {
        self.queued_bytes = 0;
        self.queued_per_channel.clear();
        self.queue.drain(..).map(|(_, _, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(running: u64, queued: usize, bytes: usize) -> Limits {
        Limits {
            running,
            queued,
            queued_bytes: bytes,
            per_channel: Vec::new(),
        }
    }

    #[test]
    fn runs_up_to_the_cap_then_queues_then_refuses() {
        let mut s = Slots::new(limits(2, 2, 1000));
        assert_eq!(s.offer(Channel(1), 10, 'a'), Admit::Run('a'));
        assert_eq!(s.offer(Channel(1), 10, 'b'), Admit::Run('b'));
        assert_eq!(s.offer(Channel(1), 10, 'c'), Admit::Queued);
        assert_eq!(s.offer(Channel(2), 10, 'd'), Admit::Queued);
        assert_eq!(s.offer(Channel(2), 10, 'e'), Admit::Refused('e'));
        assert_eq!((s.running(), s.queued()), (2, 2));
        assert_eq!(s.finish(Channel(1)), vec!['c']);
        assert_eq!(s.finish(Channel(1)), vec!['d']);
        assert_eq!(s.finish(Channel(1)), Vec::<char>::new());
        assert_eq!((s.running(), s.queued()), (1, 0));
    }

    #[test]
    fn the_byte_bound_refuses_large_payloads() {
        let mut s = Slots::new(limits(1, 100, 100));
        assert_eq!(s.offer(Channel(1), 500, 1), Admit::Run(1));
        assert_eq!(s.offer(Channel(1), 60, 2), Admit::Queued);
        assert_eq!(s.offer(Channel(1), 60, 3), Admit::Refused(3));
        assert_eq!(s.offer(Channel(1), 40, 4), Admit::Queued);
        assert_eq!(s.finish(Channel(1)), vec![2]);
        assert_eq!(s.offer(Channel(1), 60, 5), Admit::Queued);
    }

    #[test]
    fn a_channel_cap_holds_that_channel_only() {
        let mut s = Slots::new(Limits {
            per_channel: vec![(Channel(7), 1)],
            ..limits(10, 10, 1000)
        });
        assert_eq!(s.offer(Channel(7), 1, 'a'), Admit::Run('a'));
        assert_eq!(s.offer(Channel(7), 1, 'b'), Admit::Queued);
        // Another channel is not held behind channel 7's queue.
        assert_eq!(s.offer(Channel(8), 1, 'x'), Admit::Run('x'));
        assert_eq!(s.finish(Channel(8)), Vec::<char>::new());
        assert_eq!(s.finish(Channel(7)), vec!['b']);
        assert_eq!(s.running(), 1);
    }

    #[test]
    fn order_per_channel_is_kept() {
        let mut s = Slots::new(limits(1, 10, 1000));
        assert_eq!(s.offer(Channel(1), 1, 1), Admit::Run(1));
        assert_eq!(s.offer(Channel(1), 1, 2), Admit::Queued);
        assert_eq!(s.offer(Channel(1), 1, 3), Admit::Queued);
        // A slot frees while two wait: the older goes first, and a new
        // message of the same channel queues behind them.
        assert_eq!(s.finish(Channel(1)), vec![2]);
        assert_eq!(s.offer(Channel(1), 1, 4), Admit::Queued);
        assert_eq!(s.finish(Channel(1)), vec![3]);
        assert_eq!(s.finish(Channel(1)), vec![4]);
        assert_eq!(s.drain_queue(), Vec::<i32>::new());
    }

    #[test]
    fn a_forced_slot_runs_over_the_cap_and_is_given_back() {
        let mut s = Slots::new(limits(1, 10, 1000));
        assert_eq!(s.offer(Channel(1), 1, 1), Admit::Run(1));
        s.force(Channel(1));
        assert_eq!(s.running(), 2);
        assert_eq!(s.offer(Channel(1), 1, 2), Admit::Queued);
        assert_eq!(s.finish(Channel(1)), Vec::<i32>::new());
        assert_eq!(s.finish(Channel(1)), vec![2]);
    }

    #[test]
    fn a_capped_channel_does_not_hold_back_others_behind_it() {
        let mut s = Slots::new(Limits {
            per_channel: vec![(Channel(7), 1)],
            ..limits(2, 10, 1000)
        });
        assert_eq!(s.offer(Channel(7), 1, 'a'), Admit::Run('a'));
        assert_eq!(s.offer(Channel(8), 1, 'x'), Admit::Run('x'));
        assert_eq!(s.offer(Channel(7), 1, 'b'), Admit::Queued);
        assert_eq!(s.offer(Channel(7), 1, 'c'), Admit::Queued);
        assert_eq!(s.offer(Channel(8), 1, 'y'), Admit::Queued);
        // A global slot frees: channel 7 is at its own cap, so 8 goes first.
        assert_eq!(s.finish(Channel(8)), vec!['y']);
        assert_eq!(s.finish(Channel(7)), vec!['b']);
        assert_eq!(s.finish(Channel(7)), vec!['c']);
        assert_eq!((s.running(), s.queued()), (2, 0));
        // Nothing of channel 7 is counted as queued any more.
        assert_eq!(s.offer(Channel(7), 1, 'd'), Admit::Queued);
        assert_eq!(s.finish(Channel(8)), vec![]);
        assert_eq!(s.finish(Channel(7)), vec!['d']);
    }

    #[test]
    fn finishing_many_releases_many() {
        let mut s = Slots::new(limits(2, 10, 1000));
        s.offer(Channel(1), 1, 1);
        s.offer(Channel(2), 1, 2);
        s.offer(Channel(3), 1, 3);
        s.offer(Channel(4), 1, 4);
        assert_eq!(s.finish(Channel(1)), vec![3]);
        assert_eq!(s.drain_queue(), vec![4]);
        assert_eq!(s.queued(), 0);
    }
}
