//! The keyed, direct, batched and pipeline sends of [`Node`], for plain
//! threads (the shard-side forms are on [`crate::LocalBus`]; see
//! [`crate::rendezvous`], [`crate::RequestWindow`] and [`crate::pipeline`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::channel::{Channel, NodeId};
use crate::error::{BusError, SendOp};
use crate::node::{failure, Node};
use crate::shard::{routed, Outgoing, Target};

/// Most requests of one [`Node::request_batch`] in flight at once.
pub const BATCH_IN_FLIGHT: usize = 1024;

/// How long past its timeout a batch's caller waits for a request to end
/// (a shard that cannot run the batch at all, a late timer).
const BATCH_GRACE: Duration = Duration::from_secs(1);

/// What a batch's caller and its shard share: requests ended so far, and
/// whether the caller gave up (then nothing more is sent).
#[derive(Default)]
struct BatchProgress {
    ended: AtomicU64,
    abandoned: AtomicBool,
}

impl Node {
    /// Requests from a plain thread, sent together from one shard through
    /// a request window ([`crate::LocalBus::request_window`]; at most
    /// [`BATCH_IN_FLIGHT`] in flight at once, each within `timeout` of
    /// its first send): blocks until every one ended and returns their
    /// results in the order of `payloads`, each request's own error in its
    /// place. One hand-off to the shard for the whole batch instead of one
    /// per request; the caller's span is each request's parent. A request
    /// refused with `Backpressure` (the shard's request table, or every
    /// provider's write queue, full) while others are in flight waits for
    /// one of them to end and is sent again.
    ///
    /// The outer error: the batch could not be handed to a shard
    /// (`Backpressure` of its command queue, `ShuttingDown`), the shard
    /// stopped before it finished (`ShuttingDown`; results are lost), or no
    /// request ended for `timeout` and a grace of 1 s (`Timeout`, e.g. a
    /// shard too busy to run it): the requests not yet sent are then never
    /// sent.
    pub fn request_batch(
        &self,
        channel: Channel,
        payloads: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Vec<Result<Vec<u8>, BusError>>, BusError> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let progress = Arc::new(BatchProgress::default());
        let (shared, parent) = (progress.clone(), tracing::Span::current());
        self.run(move |bus| {
            let bus = bus.clone();
            let task = async move {
                let _ = tx.send(batch(&bus, channel, &payloads, timeout, &shared).await);
            };
            glommio::spawn_local(tracing::Instrument::instrument(task, parent)).detach();
        })?;
        // Each request ends within `timeout` of its send and the next one
        // leaves as one ends: wait as long as requests keep ending.
        let wait = timeout
            .min(crate::timeouts::MAX_WAIT)
            .saturating_add(BATCH_GRACE);
        let mut seen = 0;
        loop {
            match rx.recv_timeout(wait) {
                Ok(results) => return Ok(results),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    let ended = progress.ended.load(Ordering::Acquire);
                    if ended != seen {
                        seen = ended;
                        continue;
                    }
                    progress.abandoned.store(true, Ordering::Release);
                    return Err(BusError::Timeout {
                        channel,
                        after: timeout,
                    });
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(BusError::ShuttingDown)
                }
            }
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
/// in order (see [`Node::request_batch`]).
async fn batch(
    bus: &crate::LocalBus,
    channel: Channel,
    payloads: &[Vec<u8>],
    timeout: Duration,
    progress: &BatchProgress,
) -> Vec<Result<Vec<u8>, BusError>> {
    let mut results: Vec<Option<Result<Vec<u8>, BusError>>> = vec![None; payloads.len()];
    let mut window = bus.request_window(channel, timeout);
    // Ticket → index in `payloads` (a window's tickets count up from 0,
    // one per request it took).
    let mut index_of = Vec::with_capacity(payloads.len());
    let mut next = 0;
    loop {
        while next < payloads.len() && window.in_flight() < BATCH_IN_FLIGHT {
            if progress.abandoned.load(Ordering::Acquire) {
                // The caller is gone: send nothing more (dropping the
                // window forgets what is in flight).
                return Vec::new();
            }
            match window.send(&payloads[next]) {
                Ok(ticket) => {
                    debug_assert_eq!(ticket as usize, index_of.len());
                    index_of.push(next);
                }
                // No room now: try it again once a request ended.
                Err(BusError::Backpressure { .. }) if window.in_flight() > 0 => break,
                Err(e) => results[next] = Some(Err(e)),
            }
            next += 1;
        }
        let Some(done) = window.next().await else {
            break;
        };
        progress.ended.fetch_add(1, Ordering::Release);
        results[index_of[done.ticket as usize]] = Some(done.result);
        // A provider on this shard answers at once: let the shard's other
        // tasks (readers, heartbeats) run between results.
        glommio::yield_if_needed().await;
    }
    // Every payload was sent or refused before the window ran dry, so
    // every place is filled (the fallback cannot happen).
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(BusError::ShuttingDown)))
        .collect()
}
