//! Running handlers on a shard: the state check, the channel's rate limit
//! ([`crate::limiter`]), handler lookup, the async-handler cap and its queue ([`crate::overload`]), and catching a
//! handler's panic per message ([`crate::fault`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error};

use super::LocalBus;
use crate::channel::Channel;
use crate::error::ErrorCode;
use crate::fault::{self, CatchPanic, Panicked};
use crate::frame::{FrameKind, Meta};
use crate::handler::{AsyncFn, Handler, HandlerTable, OwnedRequest, Replier, ReplyTo, Request};
use crate::handshake::NodeState;
use crate::overload::Admit;
use crate::stats::Counters;

/// A message for an async handler, waiting for a slot.
pub(crate) struct Queued {
    meta: Meta,
    payload: Vec<u8>,
    to: ReplyTo,
    handler: Arc<AsyncFn>,
    deadline: Option<Instant>,
}

impl LocalBus {
    /// Runs the handler of `meta.channel` on this shard (or queues it for
    /// a slot, or refuses it).
    pub(super) fn deliver(&self, meta: &Meta, payload: &[u8], to: ReplyTo) {
        let shared = &self.0.shared;
        let me = shared.id();
        let expects = !matches!(to, ReplyTo::Nobody);
        let state = shared.state();
        if state != NodeState::Serving && meta.kind == FrameKind::Request {
            let code = if state == NodeState::Paused {
                Counters::inc(&self.0.counters.refused_paused);
                ErrorCode::Paused
            } else {
                Counters::inc(&self.0.counters.refused_draining);
                ErrorCode::ShuttingDown
            };
            to.fail(me, code);
            return;
        }
        // The channel's rate limit (replies answer work already started).
        if meta.kind != FrameKind::Reply && !shared.limits.admit(meta.channel, Instant::now) {
            Counters::inc(&self.0.counters.rate_limited);
            if expects {
                to.fail(me, ErrorCode::RateLimited);
            } else {
                debug!(channel = %meta.channel, "one-way message dropped: over the channel's rate limit");
            }
            return;
        }
        // The caller's deadline, counted from its arrival (the read that
        // brought it).
        let (deadline, fresh) = match meta.ext.deadline {
            Some(us) if us != crate::timeouts::NO_DEADLINE => {
                let (arrived, fresh) = to.arrival();
                (Some(crate::timeouts::arrival_deadline(arrived, us)), fresh)
            }
            _ => (None, true),
        };
        // Arrived with no time left, or waited too long behind the frames of
        // its read handled before it (a deadline counted from a reading
        // taken just now cannot have passed unless it was zero).
        if (meta.ext.deadline == Some(0) || !fresh) && self.expired(&to, deadline) {
            return;
        }
        let table = self.handlers();
        let Some(handler) = table.get(meta.channel) else {
            Counters::inc(&self.0.counters.unhandled);
            if expects {
                to.fail(me, ErrorCode::NoHandler);
            } else {
                debug!(channel = %meta.channel, "one-way message for a channel with no handler dropped");
            }
            return;
        };
        match handler {
            Handler::Sync(f) => {
                Counters::inc(&self.0.counters.handled);
                let replier = Replier::new(to, me, shared.config.max_payload);
                let mut req = Request {
                    meta,
                    payload,
                    replier,
                    bus: self,
                    deadline,
                };
                // Timed by sample when the handler is fast (see
                // `crate::telemetry::HandlerSampler`; an untimed run is
                // counted here).
                let timed =
                    shared.config.handler_durations && self.with_sampler(|s| s.begin(meta.channel));
                let t0 = if timed { self.0.clock.raw() } else { 0 };
                let ran = if !wants_span(meta) {
                    fault::catch(|| f(&mut req))
                } else {
                    let (span, trace) = self.handler_span(meta);
                    span.in_scope(|| {
                        crate::trace::with_current(trace, || fault::catch(|| f(&mut req)))
                    })
                };
                if let Err(p) = ran {
                    self.on_panic(meta.channel, &p);
                    fault::drop_unwound(req);
                }
                if timed {
                    let took = self.0.clock.delta(t0, self.0.clock.raw());
                    let mut telemetry = self.0.telemetry.borrow_mut();
                    self.with_sampler(|s| s.timed(meta.channel, took, &mut telemetry));
                }
            }
            Handler::Async(f) => {
                // Requests this node sent itself, and replies to its own
                // `call`s, are never queued behind the cap nor dropped:
                // they answer work this node already started.
                let forced = meta.kind == FrameKind::Reply
                    || matches!(to, ReplyTo::Waiter(_) | ReplyTo::LocalCall { .. });
                let item = Queued {
                    meta: *meta,
                    payload: payload.to_vec(),
                    to,
                    handler: f.clone(),
                    deadline,
                };
                if forced {
                    self.0.slots.borrow_mut().force(meta.channel);
                    self.run_handlers(vec![item]);
                    return;
                }
                let admit = self
                    .0
                    .slots
                    .borrow_mut()
                    .offer(meta.channel, payload.len(), item);
                match admit {
                    Admit::Run(item) => self.run_handlers(vec![item]),
                    Admit::Queued => Counters::inc(&self.0.counters.overload_queued),
                    Admit::Refused(item) if expects => {
                        Counters::inc(&self.0.counters.overload_refused);
                        item.to.fail(me, ErrorCode::Backpressure);
                    }
                    Admit::Refused(_) => {
                        Counters::inc(&self.0.counters.overload_dropped);
                        debug!(channel = %meta.channel, "one-way message dropped: async-handler queue full");
                    }
                }
            }
        }
    }

    /// Starts async handlers that hold a slot each, in order. A slot given
    /// back at once (the handler panicked before its first await, or its
    /// caller is gone) starts the next queued message in the same loop, so
    /// a long queue never deepens the stack.
    fn run_handlers(&self, ready: Vec<Queued>) {
        let mut ready: std::collections::VecDeque<Queued> = ready.into();
        while let Some(item) = ready.pop_front() {
            let channel = item.meta.channel;
            let running = !self.unwanted(&item.to, item.deadline) && self.spawn_handler(item);
            if !running {
                ready.extend(self.0.slots.borrow_mut().finish(channel));
            }
        }
    }

    /// Starts an async handler that holds a slot; the slot is given back
    /// when it finishes (or panics), which starts queued ones. False when
    /// it panicked at once (the caller gives the slot back).
    fn spawn_handler(&self, item: Queued) -> bool {
        let Queued {
            meta,
            payload,
            to,
            handler,
            deadline,
        } = item;
        let channel = meta.channel;
        Counters::inc(&self.0.counters.handled);
        let shared = &self.0.shared;
        let owned = OwnedRequest {
            meta,
            payload,
            replier: Replier::new(to, shared.id(), shared.config.max_payload),
            bus: self.clone(),
            deadline,
        };
        let timed = shared.config.handler_durations;
        let t0 = if timed { self.0.clock.raw() } else { 0 };
        let (span, trace) = self.handler_span(&meta);
        let started =
            span.in_scope(|| crate::trace::with_current(trace, || fault::catch(|| handler(owned))));
        match started {
            Ok(fut) => {
                let bus = self.clone();
                let fut = crate::trace::Traced::new(fut, span, trace);
                glommio::spawn_local(async move {
                    if let Err(p) = CatchPanic::new(Box::pin(fut)).await {
                        bus.on_panic(channel, &p);
                    }
                    if timed {
                        bus.handler_ran(channel, t0);
                    }
                    let next = bus.0.slots.borrow_mut().finish(channel);
                    bus.run_handlers(next);
                })
                .detach();
                true
            }
            Err(p) => {
                self.on_panic(channel, &p);
                false
            }
        }
    }

    /// Whether a request from another node missed its deadline before its
    /// handler could start: then it is dropped unanswered (its caller has
    /// timed out; an answer would only cost bytes) and counted. A request
    /// of this node's own is left to its caller's timer.
    /// Whether a message that waited (in the async-handler queue or a
    /// serial lane) is of no use any more: its caller's connection closed
    /// (nobody can get the answer), or its deadline passed; counted.
    pub(crate) fn unwanted(&self, to: &ReplyTo, deadline: Option<Instant>) -> bool {
        if to.is_gone() {
            Counters::inc(&self.0.counters.overload_abandoned);
            return true;
        }
        self.expired(to, deadline)
    }

    fn expired(&self, to: &ReplyTo, deadline: Option<Instant>) -> bool {
        let remote = matches!(to, ReplyTo::Conn { .. });
        if !remote || deadline.is_none() || crate::timeouts::may_start(Instant::now(), deadline) {
            return false;
        }
        Counters::inc(&self.0.counters.deadline_expired);
        debug!("request dropped unrun: its deadline passed before its handler could start");
        true
    }

    /// The `domi.handler` span of a message, and the trace its handler
    /// runs in (a child of the sender's, when the message carried one).
    fn handler_span(&self, meta: &Meta) -> (tracing::Span, Option<crate::trace::TraceContext>) {
        if !wants_span(meta) {
            return (tracing::Span::none(), None);
        }
        let span = tracing::debug_span!(
            "domi.handler",
            channel = meta.channel.0,
            source = meta.source.get(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        );
        let Some(received) = meta.ext.trace else {
            return (span, None);
        };
        let mine = received.child();
        if !span.is_disabled() {
            span.record("trace_id", received.trace_hex());
            span.record("span_id", mine.span_hex());
            span.record("parent_span_id", received.span_hex());
        }
        if let Some(hook) = &self.0.shared.config.propagator {
            hook.0.extract(&span, &received);
        }
        (span, Some(mine))
    }

    /// Runs `f` on this shard's handler sampler (a `Copy` in a `Cell`).
    pub(super) fn with_sampler<R>(
        &self,
        f: impl FnOnce(&mut crate::telemetry::HandlerSampler) -> R,
    ) -> R {
        let mut sampler = self.0.sampler.get();
        let r = f(&mut sampler);
        self.0.sampler.set(sampler);
        r
    }

    /// Counts a handler run on `channel` that started at `t0` (the
    /// shard clock's raw reading) and just ended.
    fn handler_ran(&self, channel: Channel, t0: u64) {
        let took = self.0.clock.delta(t0, self.0.clock.raw());
        self.0.telemetry.borrow_mut().handler(channel, took);
    }

    fn on_panic(&self, channel: Channel, p: &Panicked) {
        Counters::inc(&self.0.counters.handler_panics);
        error!(%channel, shard = self.0.index, panic = %p.message, "handler panicked; the message was answered with HandlerPanicked");
    }

    /// Refuses every message still waiting for a slot (shutdown).
    pub(super) fn refuse_queued(&self, code: ErrorCode) {
        let queued = self.0.slots.borrow_mut().drain_queue();
        for item in queued {
            item.to.fail(self.0.shared.id(), code);
        }
    }

    pub(super) fn handlers(&self) -> std::rc::Rc<HandlerTable> {
        let epoch = self.0.shared.handler_epoch.load(Ordering::Acquire);
        let mut cached = self.0.handlers.borrow_mut();
        if cached.0 != epoch {
            let copy = HandlerTable::clone(&self.0.shared.handlers.load());
            *cached = (epoch, std::rc::Rc::new(copy));
        }
        cached.1.clone()
    }
}

/// Whether a handler run needs its `domi.handler` span: a subscriber wants
/// debug spans, or the message carries a trace context to continue (one
/// atomic load otherwise, on every message).
#[inline]
fn wants_span(meta: &Meta) -> bool {
    meta.ext.trace.is_some() || tracing::level_enabled!(tracing::Level::DEBUG)
}
