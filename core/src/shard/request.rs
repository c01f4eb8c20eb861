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
        let times = Cell::new(Times::given(deadline, timeout));
        // When its answer arrived (the reading of the read that brought
        // it, or the clock when this node answered): its duration ends
        // there, without a clock read of its own.
        let answered = Cell::new(None);
        let times_and_answer = (&times, &answered);
        let config = &self.0.shared.config;
        // The `domi.request` span only when a subscriber wants debug spans
        // or this node sends trace contexts (one atomic load otherwise).
        let result = if !config.trace_context && !tracing::level_enabled!(tracing::Level::DEBUG) {
            self.request_inner(out, payload, timeout, times_and_answer)
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
                self.request_inner(out, payload, timeout, times_and_answer),
                span,
            )
            .await
        };
        let took = times.get().took(&result, answered.get(), timeout);
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

    /// The attempts of a request; `times` are fixed by its first send
    /// unless the caller gave the deadline, `answered` is set to its last
    /// attempt's answer's arrival.
    async fn request_inner(
        &self,
        out: Outgoing,
        payload: &[u8],
        timeout: Duration,
        (times, answered): (&Cell<Times>, &Cell<Option<Instant>>),
    ) -> Result<Vec<u8>, BusError> {
        let channel = out.channel;
        self.check_send(channel, payload.len())?;
        let mut tried: Vec<NodeId> = Vec::new();
        let mut refused: Option<BusError> = None;
        loop {
            // An earlier attempt's answer does not end this one.
            answered.set(None);
            let mut t = times.get();
            let sent = self.send_attempt(
                out,
                payload,
                &mut tried,
                refused.take(),
                (&mut t, timeout),
                || {
                    let (tx, rx) = oneshot();
                    let expiry = Deadline::One(tx.expiry());
                    (Waiter::One(tx), expiry, rx)
                },
            );
            times.set(t);
            let (corr, rx) = sent?;
            let result = match corr {
                None => Self::await_reply(rx, answered).await,
                Some(corr) => {
                    // Forgets the waiter however this ends: reply, timeout,
                    // or the caller dropping the future.
                    let _forget = Forget { bus: self, corr };
                    let result = Self::await_reply(rx, answered).await;
                    if result.is_none() {
                        self.timed_out(corr);
                    }
                    result
                }
            };
            let Some(answer) = result else {
                return Err(BusError::Timeout {
                    channel,
                    after: timeout,
                });
            };
            let stopping = self.0.stopping.is_raised();
            let request = (channel, timeout);
            match after_answer(
                answer,
                &mut tried,
                t.deadline,
                stopping,
                request,
                Instant::now,
            ) {
                AfterAnswer::Retry(e) => refused = Some(e),
                AfterAnswer::Done(r) => return r,
            }
        }
    }

    /// Sends an attempt of a request to the next provider of `out` not in
    /// `tried`, moving on from those that prove they took nothing (their
    /// connection closing, their queue full); `refused` is the last
    /// refusal so far, returned when no provider is left. The first send
    /// fixes `times` (unless the caller gave the deadline). `wait` makes
    /// the attempt's waiter and deadline handle, and something of the
    /// caller's to keep with them. Returns the attempt's correlation
    /// (`None`: served by this node) and that something.
    pub(super) fn send_attempt<T>(
        &self,
        out: Outgoing,
        payload: &[u8],
        tried: &mut Vec<NodeId>,
        mut refused: Option<BusError>,
        (times, timeout): (&mut Times, Duration),
        mut wait: impl FnMut() -> (Waiter, Deadline, T),
    ) -> Result<(Option<u64>, T), BusError> {
        loop {
            let peer = match self.pick_for_request(out.channel, out.target, tried) {
                Ok(p) => p,
                // Every provider refused: the last refusal says why.
                Err(e) => return Err(refused.unwrap_or(e)),
            };
            // Read after the pick: a half-open breaker dates its probe
            // then, and counts only answers to requests sent since.
            let now = Instant::now();
            let Times { started, deadline } = times;
            let deadline = *deadline.get_or_insert_with(|| {
                *started = Some(now);
                crate::timeouts::deadline(now, timeout)
            });
            let (tx, expiry, keep) = wait();
            match self.start_request(peer, out, payload, (now, deadline), (tx, expiry)) {
                Ok(corr) => return Ok((corr, keep)),
                // Nothing left for that provider: try the next one.
                Err(e) if not_sent(&e) => {
                    self.breaker_unclaim(peer);
                    tried.push(peer);
                    refused = Some(e);
                }
                Err(e) => {
                    self.breaker_unclaim(peer);
                    return Err(e);
                }
            }
        }
    }

    /// A request timed out waiting on `corr`: forgets its waiter, and
    /// counts the timeout against the peer it went to last (re-routing may
    /// have moved it; answers are counted where they arrive).
    pub(super) fn timed_out(&self, corr: u64) {
        let waiting = self.0.pending.borrow_mut().remove(&corr);
        if let Some(w) = waiting {
            self.breaker_record(w.peer, w.sent, Instant::now(), None);
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
                &with_deadline(self.meta(FrameKind::Request, channel, Channel(0), 0)),
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

/// When a request started and when it must end (see
/// [`LocalBus::send_attempt`]).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Times {
    /// Its first send's clock reading, or the caller's deadline less the
    /// timeout.
    pub(super) started: Option<Instant>,
    pub(super) deadline: Option<Instant>,
}

impl Times {
    /// A request's times before its first send: none, or those a caller
    /// that knew its deadline derived from it and the timeout.
    fn given(deadline: Option<Instant>, timeout: Duration) -> Times {
        Times {
            started: deadline.and_then(|d| d.checked_sub(timeout.min(crate::timeouts::MAX_WAIT))),
            deadline,
        }
    }

    /// How long a request that ended with `result` took: to its answer's
    /// arrival (`answered`, or now), or its whole timeout when it timed
    /// out.
    pub(super) fn took(
        &self,
        result: &Answer,
        answered: Option<Instant>,
        timeout: Duration,
    ) -> Duration {
        match (self.started, answered) {
            _ if matches!(result, Err(BusError::Timeout { .. })) => timeout,
            (Some(from), Some(to)) => to.saturating_duration_since(from),
            (Some(from), None) => from.elapsed(),
            (None, _) => Duration::ZERO,
        }
    }
}

/// What a request does after an attempt's answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterAnswer {
    /// Tries the next provider: this one refused without running anything.
    Retry(BusError),
    /// Ends with this.
    Done(Answer),
}

/// Decides what a request does with an attempt's `answer` (`tried`
/// gains a provider that refused): a refusal that proves nothing ran is
/// retried elsewhere while the deadline has not passed (`now`, read only
/// then); a request this node served itself whose pipeline stage gave up
/// at the deadline (a `ShuttingDown` while the node is not `stopping`)
/// timed out; anything else ends it.
pub(super) fn after_answer(
    answer: Answer,
    tried: &mut Vec<NodeId>,
    deadline: Option<Instant>,
    stopping: bool,
    (channel, timeout): (Channel, Duration),
    now: impl Fn() -> Instant,
) -> AfterAnswer {
    let passed = || deadline.is_some_and(|d| now() >= d);
    match answer {
        Err(BusError::Remote { peer, code }) if code.is_retryable() => {
            tried.push(peer);
            let refused = BusError::Remote { peer, code };
            if passed() {
                AfterAnswer::Done(Err(refused))
            } else {
                AfterAnswer::Retry(refused)
            }
        }
        Err(BusError::ShuttingDown) if !stopping && passed() => {
            AfterAnswer::Done(Err(BusError::Timeout {
                channel,
                after: timeout,
            }))
        }
        answer => AfterAnswer::Done(answer),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const CH: Channel = Channel(9);
    const T: Duration = Duration::from_secs(1);

    #[test]
    fn refusals_that_ran_nothing_are_retried_until_the_deadline() {
        let (peer, t0) = (NodeId::test(2), Instant::now());
        let deadline = Some(t0 + T);
        let paused = || {
            Err(BusError::Remote {
                peer,
                code: ErrorCode::Paused,
            })
        };
        let mut tried = Vec::new();
        let before = after_answer(paused(), &mut tried, deadline, false, (CH, T), || t0);
        assert_eq!(before, AfterAnswer::Retry(paused().unwrap_err()));
        assert_eq!(tried, vec![peer]);
        let after = after_answer(paused(), &mut tried, deadline, false, (CH, T), || t0 + T);
        assert_eq!(after, AfterAnswer::Done(paused()));
        // Refusals that may have run something, and answers, end it.
        let panicked = Err(BusError::Remote {
            peer,
            code: ErrorCode::HandlerPanicked,
        });
        let done = after_answer(
            panicked.clone(),
            &mut tried,
            deadline,
            false,
            (CH, T),
            || t0,
        );
        assert_eq!(done, AfterAnswer::Done(panicked));
        let ok = after_answer(
            Ok(b"r".to_vec()),
            &mut tried,
            deadline,
            false,
            (CH, T),
            || t0,
        );
        assert_eq!(ok, AfterAnswer::Done(Ok(b"r".to_vec())));
    }

    #[test]
    fn a_local_stage_giving_up_at_the_deadline_is_a_timeout_unless_the_node_stops() {
        let t0 = Instant::now();
        let deadline = Some(t0 + T);
        let down = || Err(BusError::ShuttingDown);
        let mut tried = Vec::new();
        let timeout = Err(BusError::Timeout {
            channel: CH,
            after: T,
        });
        let late = after_answer(down(), &mut tried, deadline, false, (CH, T), || t0 + T);
        assert_eq!(late, AfterAnswer::Done(timeout));
        let stopping = after_answer(down(), &mut tried, deadline, true, (CH, T), || t0 + T);
        assert_eq!(stopping, AfterAnswer::Done(down()));
        let early = after_answer(down(), &mut tried, deadline, false, (CH, T), || t0);
        assert_eq!(early, AfterAnswer::Done(down()));
    }

    #[test]
    fn a_request_takes_until_its_answer_arrived_or_its_whole_timeout() {
        let t0 = Instant::now();
        let times = Times::given(Some(t0 + T), T);
        assert_eq!(times.started, Some(t0));
        let at = t0 + Duration::from_millis(3);
        assert_eq!(
            times.took(&Ok(vec![]), Some(at), T),
            Duration::from_millis(3)
        );
        let timeout = Err(BusError::Timeout {
            channel: CH,
            after: T,
        });
        assert_eq!(times.took(&timeout, Some(at), T), T);
        assert_eq!(
            Times::default().took(&Ok(vec![]), Some(at), T),
            Duration::ZERO
        );
    }
}
