//! The request path of a shard: choosing providers in turn within one
//! deadline, the waiting requests, their answers and timeouts, and what
//! each request counts (telemetry, breakers, counters).

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::notify::{oneshot, Receiver, Unanswered};
use crate::window::{Answer, Arrived, Deadline, Waiter};

use super::{not_sent, LocalBus, Outgoing, Waiting};
use crate::channel::{Channel, NodeId};
use crate::error::BusError;
use crate::frame::{FrameKind, Meta};
use crate::handler::ReplyTo;
use crate::stats::Counters;

impl LocalBus {
    /// Request/response: one provider's reply, or a typed error within `timeout`.
    ///
    /// A provider that answers `Paused`, `ShuttingDown`, `NoHandler` or
    /// `Backpressure` is skipped and the next one tried, inside the same
    /// timeout; so is one whose connection failed before the request left
    /// this node. Dropping the future forgets the request at once.
    ///
    /// The remaining time travels with the request: the provider drops it
    /// unrun if it cannot start its handler in time, and the handler reads
    /// it as [`crate::Request::deadline`].
    ///
    /// To keep many requests in flight from one task, a
    /// [`LocalBus::request_window`] does the same without a future each.
    pub async fn request(
        &self,
        channel: Channel,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        // The deadline is counted from the first send's clock reading.
        self.request_within(Outgoing::any(channel), payload, None, timeout)
            .await
    }

    /// [`LocalBus::request`] with a deadline instead of a timeout (what a
    /// request made on behalf of another one uses).
    pub async fn request_until(
        &self,
        channel: Channel,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, BusError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.request_within(Outgoing::any(channel), payload, Some(deadline), timeout)
            .await
    }

    /// A request ending at `deadline`, or `timeout` after its first send
    /// (`None`: the clock is read then, once); reported as taking `timeout`
    /// when it times out.
    pub(crate) async fn request_within(
        &self,
        out: Outgoing,
        payload: &[u8],
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        // When it started, for its duration: a caller that knew its deadline
        // derived it from `timeout` and the clock just now; otherwise the
        // first send's clock reading (no clock read of its own).
        let started =
            Cell::new(deadline.and_then(|d| d.checked_sub(timeout.min(crate::timeouts::MAX_WAIT))));
        // When its answer arrived (the reading of the read that brought
        // it, or the clock when this node answered): its duration ends
        // there, without a clock read of its own.
        let answered = Cell::new(None);
        let times = (&started, &answered);
        let config = &self.0.shared.config;
        // The `domi.request` span only when a subscriber wants debug spans
        // or this node sends trace contexts (one atomic load otherwise).
        let result = if !config.trace_context && !tracing::level_enabled!(tracing::Level::DEBUG) {
            self.request_inner(out, payload, deadline, timeout, times)
                .await
        } else {
            let span = tracing::debug_span!(
                "domi.request",
                channel = out.channel.0,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            let mut out = out;
            if config.trace_context {
                let ctx = crate::trace::outgoing(config.propagator.as_ref(), &span);
                span.record("trace_id", ctx.trace_hex());
                span.record("span_id", ctx.span_hex());
                out.trace = Some(ctx);
            }
            tracing::Instrument::instrument(
                self.request_inner(out, payload, deadline, timeout, times),
                span,
            )
            .await
        };
        let took = match (started.get(), answered.get()) {
            _ if matches!(result, Err(BusError::Timeout { .. })) => timeout,
            (Some(from), Some(to)) => to.saturating_duration_since(from),
            (Some(from), None) => from.elapsed(),
            (None, _) => Duration::ZERO,
        };
        self.request_ended(out.channel, took, &result);
        result
    }

    /// Counts a request's end: its duration and outcome, and its error.
    pub(super) fn request_ended(&self, channel: Channel, took: Duration, result: &Answer) {
        self.0
            .telemetry
            .borrow_mut()
            .request(channel, took, crate::telemetry::Outcome::of(result));
        if let Err(e) = result {
            let c = &self.0.counters;
            match e {
                BusError::Timeout { .. } => Counters::inc(&c.timeouts),
                BusError::PeerLost { .. } => Counters::inc(&c.peer_lost),
                BusError::Remote { .. } => Counters::inc(&c.remote_errors),
                BusError::Application { .. } => Counters::inc(&c.app_errors),
                _ => {}
            }
        }
    }

    /// The attempts of a request; `started` is set at the first send when
    /// the deadline is counted from it, `answered` to its last attempt's
    /// answer's arrival.
    async fn request_inner(
        &self,
        out: Outgoing,
        payload: &[u8],
        mut deadline: Option<Instant>,
        timeout: Duration,
        (started, answered): (&Cell<Option<Instant>>, &Cell<Option<Instant>>),
    ) -> Result<Vec<u8>, BusError> {
        let channel = out.channel;
        self.check_send(channel, payload.len())?;
        let mut tried: Vec<NodeId> = Vec::new();
        let mut refused: Option<BusError> = None;
        loop {
            // An earlier attempt's answer does not end this one.
            answered.set(None);
            let peer = match self.pick_for_request(channel, out.target, &tried) {
                Ok(p) => p,
                // Every provider refused: the last refusal says why.
                Err(e) => return Err(refused.unwrap_or(e)),
            };
            // Read after the pick: a half-open breaker dates its probe
            // then, and counts only answers to requests sent since.
            let now = Instant::now();
            let deadline = *deadline.get_or_insert_with(|| {
                started.set(Some(now));
                crate::timeouts::deadline(now, timeout)
            });
            let (tx, rx) = oneshot();
            let expiry = Deadline::One(tx.expiry());
            let wait = (Waiter::One(tx), expiry);
            let sent = self.start_request(peer, out, payload, (now, deadline), wait);
            let corr = match sent {
                Ok(corr) => corr,
                // Nothing left for that provider: try the next one.
                Err(e) if not_sent(&e) => {
                    self.breaker_unclaim(peer);
                    tried.push(peer);
                    refused = Some(e);
                    continue;
                }
                Err(e) => {
                    self.breaker_unclaim(peer);
                    return Err(e);
                }
            };
            let result = match corr {
                None => Self::await_reply(rx, answered).await,
                Some(corr) => {
                    // Forgets the waiter however this ends: reply, timeout,
                    // or the caller dropping the future.
                    let _forget = Forget { bus: self, corr };
                    let result = Self::await_reply(rx, answered).await;
                    if result.is_none() {
                        // Timed out: count it against the peer it went to
                        // last (answers are counted where they arrive).
                        let waiting = self.0.pending.borrow().get(&corr).map(|w| (w.peer, w.sent));
                        if let Some((peer, sent)) = waiting {
                            self.breaker_record(peer, sent, Instant::now(), None);
                        }
                    }
                    result
                }
            };
            match result {
                None => {
                    return Err(BusError::Timeout {
                        channel,
                        after: timeout,
                    })
                }
                Some(Err(BusError::Remote { peer, code })) if code.is_retryable() => {
                    tried.push(peer);
                    if Instant::now() >= deadline {
                        return Err(BusError::Remote { peer, code });
                    }
                    refused = Some(BusError::Remote { peer, code });
                }
                // A request this node served itself whose pipeline
                // stage gave up at the deadline (it answers nobody then).
                Some(Err(BusError::ShuttingDown))
                    if Instant::now() >= deadline && !self.0.stopping.is_raised() =>
                {
                    return Err(BusError::Timeout {
                        channel,
                        after: timeout,
                    })
                }
                Some(r) => return r,
            }
        }
    }

    /// Sends one attempt of a request to `peer` (or serves it here), whose
    /// answer goes to `tx` and whose wait `expiry` ends at `deadline`;
    /// returns its correlation (`None`: served by this node).
    pub(super) fn start_request(
        &self,
        peer: NodeId,
        out: Outgoing,
        payload: &[u8],
        (now, deadline): (Instant, Instant),
        (tx, expiry): (Waiter, Deadline),
    ) -> Result<Option<u64>, BusError> {
        let channel = out.channel;
        Counters::inc(&self.0.counters.sent);
        // The shard's expiry task ends the wait at the deadline (registered
        // once the request is sent: a refused attempt leaves nothing).
        let with_deadline = |mut meta: Meta| {
            meta.ext.deadline = Some(crate::timeouts::wire_remaining(now, deadline));
            meta.ext.route = out.route;
            meta.ext.trace = out.trace;
            meta
        };
        if peer == self.node_id() {
            self.expire_at(deadline, expiry);
            self.deliver(
                with_deadline(self.meta(FrameKind::Request, channel, Channel(0), 0)),
                payload,
                ReplyTo::Waiter(tx),
            );
            return Ok(None);
        }
        if self.0.pending.borrow().len() >= self.0.shared.config.max_pending {
            Counters::inc(&self.0.counters.backpressure);
            return Err(BusError::Backpressure {
                what: "shard request table",
            });
        }
        let conn = self.conn_to(peer)?;
        let corr = self.next_id();
        let meta = with_deadline(self.meta(FrameKind::Request, channel, Channel(0), corr));
        Self::push_to(&conn, peer, &meta, payload)?;
        self.0.pending.borrow_mut().insert(
            corr,
            Waiting {
                conn: conn.id,
                peer,
                sent: now,
                deadline,
                target: out.target,
                tx,
            },
        );
        self.expire_at(deadline, expiry);
        Ok(Some(corr))
    }

    /// Has the shard's expiry task end a wait at `deadline`.
    fn expire_at(&self, deadline: Instant, expiry: Deadline) {
        if self.0.expiries.borrow_mut().add(deadline, expiry) {
            self.0.expiry_timer.notify();
        }
    }

    /// The answer, or `None` when the deadline passed first; `answered`
    /// is set to when it arrived.
    async fn await_reply(
        rx: Receiver<Arrived>,
        answered: &Cell<Option<Instant>>,
    ) -> Option<Answer> {
        match rx.await {
            Ok((answer, at)) => {
                answered.set(at);
                Some(answer)
            }
            Err(Unanswered::Expired) => None,
            Err(Unanswered::Canceled) => Some(Err(BusError::ShuttingDown)),
        }
    }
}

/// Removes a request's waiter when the request ends, however it ends.
struct Forget<'a> {
    bus: &'a LocalBus,
    corr: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.bus.0.pending.borrow_mut().remove(&self.corr);
    }
}
