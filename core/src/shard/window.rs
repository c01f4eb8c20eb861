//! Request windows: many requests in flight from one task, their results
//! handed out as they end (see [`RequestWindow`]). The slots and their
//! handles are [`crate::window`]; this file drives them.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use super::request::{after_answer, AfterAnswer, Times};
use super::{LocalBus, Outgoing};
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
    times: Times,
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
                if let Some(corr) = r.corr {
                    bus.timed_out(corr);
                }
                let timeout = BusError::Timeout {
                    channel: self.channel,
                    after: self.timeout,
                };
                (Err(timeout), None)
            }
            Ended::Answered(answer, at) => {
                // The clock, not the answer's arrival, says whether the
                // deadline passed: the owner may take it late.
                let stopping = bus.0.stopping.is_raised();
                let request = (self.channel, self.timeout);
                let deadline = r.times.deadline;
                match after_answer(
                    answer,
                    &mut r.tried,
                    deadline,
                    stopping,
                    request,
                    Instant::now,
                ) {
                    AfterAnswer::Retry(refused) => match self.start(index, Some(refused)) {
                        Ok(()) => return None,
                        Err(e) => (Err(e), None),
                    },
                    AfterAnswer::Done(result) => (result, at),
                }
            }
            Ended::Canceled => unreachable!("made an answer above"),
        };
        Some(self.complete(index, result, at))
    }

    /// Hands out slot `index`'s request with `result`.
    fn complete(&mut self, index: u32, result: Answer, at: Option<Instant>) -> Completion {
        let r = &self.requests[index as usize];
        let took = r.times.took(&result, at, self.timeout);
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
    fn start(&mut self, index: u32, refused: Option<BusError>) -> Result<(), BusError> {
        let bus = &self.bus;
        let r = &mut self.requests[index as usize];
        let mut out = Outgoing::any(self.channel);
        out.trace = r.trace;
        r.corr = None;
        let slots = &self.slots;
        let (corr, ()) = bus.send_attempt(
            out,
            &r.payload,
            &mut r.tried,
            refused,
            (&mut r.times, self.timeout),
            || {
                let (tx, expiry) = slots.attempt(index);
                (Waiter::Window(tx), Deadline::Window(expiry), ())
            },
        )?;
        r.corr = corr;
        slots.started(index);
        Ok(())
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
