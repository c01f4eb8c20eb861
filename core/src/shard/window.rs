//! Request windows: many requests in flight from one task, their results
//! handed out as they end (see [`RequestWindow`]). The slots and their
//! handles are [`crate::window`]; this file drives them.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use super::{not_sent, LocalBus, Outgoing, Target};
use crate::channel::{Channel, NodeId};
use crate::error::BusError;
use crate::window::{Answer, Deadline, Ended, Waiter, WindowSlots};

impl LocalBus {
    /// A window of requests on `channel`, each answered within `timeout`:
    /// [`RequestWindow::send`] sends one at once and returns its ticket,
    /// [`RequestWindow::next`] gives the results back as they end. One
    /// task keeps any number in flight without a future per request.
    pub fn request_window(&self, channel: Channel, timeout: Duration) -> RequestWindow {
        RequestWindow {
            bus: self.clone(),
            channel,
            timeout,
            slots: WindowSlots::default(),
            requests: Vec::new(),
            next_ticket: 0,
            spare: Vec::new(),
        }
    }
}

/// Requests in flight from one task, each with the same guarantees as
/// [`LocalBus::request`]: round-robin over the channel's providers, a
/// refusal that proves the handler never ran (`Paused`, `NoHandler`,
/// `Backpressure`…) moved to the next provider within the same deadline,
/// circuit breakers, counters, request telemetry, and the trace context of
/// the span that called [`RequestWindow::send`].
///
/// Made by [`LocalBus::request_window`]; it belongs to the shard that made
/// it. A request whose deadline passed keeps its entry in the shard's
/// request table (`max_pending`) until [`RequestWindow::next`] hands it
/// out, and an answer that arrives before then still wins, as a request
/// future's does. Dropping the window forgets every request still in
/// flight (their late answers are dropped).
///
/// ```no_run
/// # async fn f(bus: domi_core::LocalBus) -> Result<(), domi_core::BusError> {
/// use std::time::Duration;
/// let mut window = bus.request_window(domi_core::Channel(7), Duration::from_secs(1));
/// for i in 0..64u8 {
///     window.send(&[i])?;
/// }
/// while let Some(done) = window.next().await {
///     let reply = done.result?;
///     // … and send another to keep 64 in flight.
/// #   let _ = reply;
/// }
/// # Ok(()) }
/// ```
pub struct RequestWindow {
    bus: LocalBus,
    channel: Channel,
    timeout: Duration,
    slots: WindowSlots,
    /// Per slot: the request it holds.
    requests: Vec<InFlight>,
    next_ticket: u64,
    /// Payload buffers of ended requests, for the next ones.
    spare: Vec<Vec<u8>>,
}

/// One ended request of a [`RequestWindow`].
#[derive(Debug)]
pub struct Completion {
    /// What [`RequestWindow::send`] returned for it.
    pub ticket: u64,
    /// Its reply or error, as [`LocalBus::request`] would have returned.
    pub result: Result<Vec<u8>, BusError>,
    /// From its first send to its answer's arrival (the reading taken for
    /// the read that brought it), or its timeout.
    pub took: Duration,
}

#[derive(Default)]
struct InFlight {
    ticket: u64,
    /// Kept for sending it to another provider after a refusal.
    payload: Vec<u8>,
    /// Providers that refused it.
    tried: Vec<NodeId>,
    started: Option<Instant>,
    deadline: Option<Instant>,
    /// The trace context every attempt carries (when the node sends them).
    trace: Option<crate::trace::TraceContext>,
    /// The correlation of the attempt waiting over a connection (`None`:
    /// served by this node).
    corr: Option<u64>,
}

impl RequestWindow {
    /// Sends a request and returns its ticket; its result comes out of
    /// [`RequestWindow::next`]. Errors are those found before anything was
    /// sent: no provider (or every one cut off by a breaker, known down, or
    /// with its connection closing or its queue full), payload too large,
    /// too many waiting requests on this shard. A provider's refusal
    /// (`Paused`, `NoHandler`…) comes out of `next`, after the others were
    /// tried.
    pub fn send(&mut self, payload: &[u8]) -> Result<u64, BusError> {
        if let Err(e) = self.bus.check_send(self.channel, payload.len()) {
            return Err(self.refused(e));
        }
        let index = self.slots.open();
        let mut buffer = self.spare.pop().unwrap_or_default();
        buffer.extend_from_slice(payload);
        let i = index as usize;
        if self.requests.len() <= i {
            self.requests.resize_with(i + 1, InFlight::default);
        }
        let ticket = self.next_ticket;
        let config = &self.bus.0.shared.config;
        // The caller's span is the parent of each request.
        let trace = config.trace_context.then(|| {
            let span = tracing::Span::current();
            crate::trace::outgoing(config.propagator.as_ref(), &span)
        });
        self.requests[i] = InFlight {
            ticket,
            payload: buffer,
            trace,
            ..InFlight::default()
        };
        match self.start(index, None) {
            Ok(()) => {
                self.next_ticket += 1;
                Ok(ticket)
            }
            Err(e) => {
                self.finish(index);
                Err(self.refused(e))
            }
        }
    }

    /// Counts a request that ended before anything was sent, as
    /// [`LocalBus::request`] counts it; returns its error.
    fn refused(&self, e: BusError) -> BusError {
        let result = Err(e.clone());
        self.bus
            .request_ended(self.channel, Duration::ZERO, &result);
        e
    }

    /// The next request to end (in the order they end), or `None` when
    /// none is in flight.
    pub async fn next(&mut self) -> Option<Completion> {
        loop {
            if self.slots.used() == 0 {
                return None;
            }
            let (index, ended) = poll_fn(|cx| self.slots.poll_ended(cx)).await;
            if let Some(done) = self.ended(index, ended) {
                return Some(done);
            }
        }
    }

    /// Requests sent and not yet handed out by [`RequestWindow::next`].
    pub fn in_flight(&self) -> usize {
        self.slots.used()
    }

    /// What an ended attempt means: the request's end, or (`None`) another
    /// attempt after a refusal.
    fn ended(&mut self, index: u32, ended: Ended) -> Option<Completion> {
        let bus = &self.bus;
        let r = &mut self.requests[index as usize];
        // A wait ended unanswered (the shard stopped, or a pipeline stage
        // of this node gave up) is a `ShuttingDown` answer, as for a request.
        let ended = match ended {
            Ended::Canceled => Ended::Answered(Err(BusError::ShuttingDown), None),
            other => other,
        };
        let (result, at) = match ended {
            Ended::Expired => {
                // Counted against the peer it went to last (re-routing
                // may have moved it), as a request's.
                if let Some(corr) = r.corr {
                    let waiting = bus.0.pending.borrow_mut().remove(&corr);
                    if let Some(w) = waiting {
                        bus.breaker_record(w.peer, w.sent, Instant::now(), None);
                    }
                }
                let timeout = BusError::Timeout {
                    channel: self.channel,
                    after: self.timeout,
                };
                (Err(timeout), None)
            }
            Ended::Answered(Err(BusError::Remote { peer, code }), at) if code.is_retryable() => {
                r.tried.push(peer);
                let refused = BusError::Remote { peer, code };
                // The clock, not the answer's arrival: the owner may take
                // it late, and an attempt with no time left is wasted.
                if r.deadline.is_some_and(|d| Instant::now() >= d) {
                    (Err(refused), at)
                } else {
                    match self.start(index, Some(refused)) {
                        Ok(()) => return None,
                        Err(e) => (Err(e), None),
                    }
                }
            }
            // A request this node served itself whose pipeline stage gave
            // up at the deadline (it answers nobody then).
            Ended::Answered(Err(BusError::ShuttingDown), at)
                if !bus.0.stopping.is_raised()
                    && r.deadline.is_some_and(|d| Instant::now() >= d) =>
            {
                let timeout = BusError::Timeout {
                    channel: self.channel,
                    after: self.timeout,
                };
                (Err(timeout), at)
            }
            Ended::Answered(answer, at) => (answer, at),
            Ended::Canceled => unreachable!("made an answer above"),
        };
        Some(self.complete(index, result, at))
    }

    /// Hands out slot `index`'s request with `result`.
    fn complete(&mut self, index: u32, result: Answer, at: Option<Instant>) -> Completion {
        let r = &self.requests[index as usize];
        let took = match (&result, r.started) {
            (Err(BusError::Timeout { .. }), _) => self.timeout,
            (_, Some(started)) => at
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(started),
            (_, None) => Duration::ZERO,
        };
        self.bus.request_ended(self.channel, took, &result);
        let ticket = r.ticket;
        self.finish(index);
        Completion {
            ticket,
            result,
            took,
        }
    }

    /// Frees slot `index`, keeping its payload buffer for a later request.
    fn finish(&mut self, index: u32) {
        let r = &mut self.requests[index as usize];
        let mut payload = std::mem::take(&mut r.payload);
        r.tried.clear();
        r.corr = None;
        payload.clear();
        self.spare.push(payload);
        self.slots.free(index);
    }

    /// Sends slot `index`'s request to the next provider it has not
    /// tried; `refused` is the last refusal, returned when none is left.
    fn start(&mut self, index: u32, mut refused: Option<BusError>) -> Result<(), BusError> {
        let bus = &self.bus;
        let r = &mut self.requests[index as usize];
        let mut out = Outgoing::any(self.channel);
        out.trace = r.trace;
        r.corr = None;
        loop {
            let peer = match bus.pick_for_request(self.channel, Target::Any, &r.tried) {
                Ok(p) => p,
                Err(e) => return Err(refused.unwrap_or(e)),
            };
            // Read after the pick, as a request's (a half-open breaker
            // dates its probe then).
            let now = Instant::now();
            let timeout = self.timeout;
            let deadline = *r.deadline.get_or_insert_with(|| {
                r.started = Some(now);
                crate::timeouts::deadline(now, timeout)
            });
            let (tx, expiry) = self.slots.attempt(index);
            let wait = (Waiter::Window(tx), Deadline::Window(expiry));
            match bus.start_request(peer, out, &r.payload, (now, deadline), wait) {
                Ok(corr) => {
                    r.corr = corr;
                    self.slots.started(index);
                    return Ok(());
                }
                Err(e) if not_sent(&e) => {
                    bus.breaker_unclaim(peer);
                    r.tried.push(peer);
                    refused = Some(e);
                }
                Err(e) => {
                    bus.breaker_unclaim(peer);
                    return Err(e);
                }
            }
        }
    }
}

impl Drop for RequestWindow {
    fn drop(&mut self) {
        self.slots.close();
        let mut pending = self.bus.0.pending.borrow_mut();
        for r in &self.requests {
            if let Some(corr) = r.corr {
                pending.remove(&corr);
            }
        }
    }
}
