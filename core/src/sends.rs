//! The keyed, direct, batched and pipeline sends of [`Node`], for plain
//! threads (the shard-side forms are on [`crate::LocalBus`]; see
//! [`crate::rendezvous`], [`crate::RequestWindow`] and [`crate::pipeline`]).

use std::future::Future;
use std::time::Duration;

use crate::channel::{Channel, NodeId};
use crate::error::{BusError, SendOp};
use crate::node::{failure, Node};
use crate::shard::{routed, Outgoing, Target};

/// Most requests of one [`Node::request_batch`] in flight at once.
pub const BATCH_IN_FLIGHT: usize = 1024;

impl Node {
    /// Requests from a plain thread, sent together from one shard through
    /// a request window ([`crate::LocalBus::request_window`]; at most
    /// [`BATCH_IN_FLIGHT`] in flight at once, each within `timeout` of
    /// its first send): blocks until every one ended and returns their
    /// results in the order of `payloads`. One hand-off to the shard for
    /// the whole batch instead of one per request. The outer error means
    /// the batch never reached a shard (`ShuttingDown`, `Backpressure` of
    /// the shard's command queue); each request's own error is in its slot.
    pub fn request_batch(
        &self,
        channel: Channel,
        payloads: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Vec<Result<Vec<u8>, BusError>>, BusError> {
        let n = payloads.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.run(move |bus| {
            let bus = bus.clone();
            glommio::spawn_local(async move {
                let _ = tx.send(batch(&bus, channel, &payloads, timeout).await);
            })
            .detach();
        })?;
        // Every request ends within `timeout` of its send, and sends wait
        // for room: the last one leaves after at most ⌈n / in flight⌉
        // rounds. The grace covers a shard that cannot run it at all.
        let rounds = n.div_ceil(BATCH_IN_FLIGHT) as u32;
        let limit = timeout
            .min(crate::timeouts::MAX_WAIT)
            .saturating_mul(rounds)
            .saturating_add(Duration::from_secs(1));
        match rx.recv_timeout(limit) {
            Ok(results) => Ok(results),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(BusError::Timeout {
                channel,
                after: limit,
            }),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(BusError::ShuttingDown),
        }
    }

    /// The shard that sends everything of `key`, so a key's messages leave
    /// in the order they were sent (one connection, one queue).
    fn shard_of(&self, key: u64) -> usize {
        (key % self.shards() as u64) as usize
    }

    /// One-way message to the provider rendezvous hashing picks for `key`
    /// (see [`crate::LocalBus::notify_keyed`]). Messages of one key leave
    /// from one shard, in order, so a serial handler
    /// ([`crate::Handler::serial`]) on the provider sees them in order.
    /// Later failures go to the `on_send_error` hook.
    pub fn notify_keyed(
        &self,
        channel: Channel,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), BusError> {
        self.pre_check(channel, payload.len())?;
        self.has_provider(channel, false)?;
        let (key, payload) = (key.to_vec(), payload.to_vec());
        let shard = self.shard_of(crate::rendezvous::key_hash(&key));
        self.run_on(shard, move |bus| {
            if let Err(error) = bus.notify_keyed(channel, &key, &payload) {
                bus.send_failed(failure(SendOp::Notify, channel, Channel(0), error));
            }
        })
    }

    /// Request to the provider rendezvous hashing picks for `key`
    /// (blocking; see [`crate::LocalBus::request_keyed`]).
    pub fn request_keyed(
        &self,
        channel: Channel,
        key: &[u8],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let key = crate::rendezvous::key_hash(key);
        let out = Outgoing::new(channel, Target::Keyed(key));
        self.request_blocking(out, Some(self.shard_of(key)), payload, timeout)
    }

    /// Request to node `node` only (blocking; see
    /// [`crate::LocalBus::request_to`]).
    pub fn request_to(
        &self,
        node: NodeId,
        channel: Channel,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let out = Outgoing::new(channel, Target::To(node));
        self.request_blocking(out, None, payload, timeout)
    }

    /// One-way message along a pipeline of channels (see
    /// [`crate::LocalBus::ventilate`]); later failures go to the
    /// `on_send_error` hook.
    pub fn ventilate(&self, stages: &[Channel], payload: &[u8]) -> Result<(), BusError> {
        let first = routed(stages)?.channel;
        self.pre_check(first, payload.len())?;
        self.has_provider(first, false)?;
        let (stages, payload) = (stages.to_vec(), payload.to_vec());
        self.run(move |bus| {
            if let Err(error) = bus.ventilate(&stages, &payload) {
                bus.send_failed(failure(SendOp::Notify, first, Channel(0), error));
            }
        })
    }

    /// Request along a pipeline: the last stage's answer (blocking; see
    /// [`crate::LocalBus::request_route`]).
    pub fn request_route(
        &self,
        stages: &[Channel],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.request_blocking(routed(stages)?, None, payload, timeout)
    }

    /// [`Node::request_route`] as a `Send` future usable on any executor.
    pub fn request_route_async(
        &self,
        stages: &[Channel],
        payload: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, BusError>> + Send + 'static {
        let started = routed(stages).map(|out| self.request_future(out, None, payload, timeout));
        async move { started?.await }
    }
}

/// Runs `payloads` through one request window on this shard; their results
/// in order.
async fn batch(
    bus: &crate::LocalBus,
    channel: Channel,
    payloads: &[Vec<u8>],
    timeout: Duration,
) -> Vec<Result<Vec<u8>, BusError>> {
    let mut results: Vec<Option<Result<Vec<u8>, BusError>>> = vec![None; payloads.len()];
    let mut window = bus.request_window(channel, timeout);
    // Ticket → index in `payloads` (tickets count up from 0 per window,
    // one per request sent).
    let mut index_of = Vec::with_capacity(payloads.len());
    let mut next = 0;
    loop {
        while next < payloads.len() && window.in_flight() < BATCH_IN_FLIGHT {
            match window.send(&payloads[next]) {
                Ok(ticket) => {
                    debug_assert_eq!(ticket as usize, index_of.len());
                    index_of.push(next);
                }
                Err(e) => results[next] = Some(Err(e)),
            }
            next += 1;
        }
        let Some(done) = window.next().await else {
            break;
        };
        results[index_of[done.ticket as usize]] = Some(done.result);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(BusError::ShuttingDown)))
        .collect()
}
