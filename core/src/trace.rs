//! Traces across nodes: a `tracing` span per request on the caller
//! (`domi.request`) and per handler run on the provider (`domi.handler`),
//! tied together by a W3C-sized trace context that travels in the frame.
//!
//! With [`crate::NodeConfig::trace_context`] off (the default) nothing is
//! added to any frame. With it on, every request and one-way message this
//! node sends carries the trace extension (tag 3, 25 bytes: trace id,
//! the sender's span id, flags; see [`crate::frame`]): the trace of the
//! handler that sends it, so a request made while handling another one
//! continues its trace, or a new trace. The handler's span records
//! `trace_id`, its own `span_id` and the caller's as `parent_span_id`, and
//! the caller's span the `trace_id` and `span_id` it sent, so logs of both
//! nodes can be joined on `trace_id`.
//!
//! To export spans to an OpenTelemetry backend, give the node a
//! [`Propagator`] (`NodeBuilder::trace_propagator`) that reads the ids of
//! the caller's span from the OpenTelemetry layer (`inject`) and makes the
//! handler's span a child of the received context (`extract`), e.g. with
//! `tracing-opentelemetry`'s `OpenTelemetrySpanExt`; `examples/tracing.rs`
//! does so and shows one trace crossing three nodes.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What travels in the frame: W3C trace-context sized.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace's id (16 bytes; never all zero).
    pub trace_id: [u8; 16],
    /// The sender's span: the parent of the receiving handler's span.
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Bytes on the wire.
    pub const LEN: usize = 25;

    /// A new trace with a random id (sampled).
    pub fn new_trace() -> TraceContext {
        let mut id = [0u8; 16];
        fill_random(&mut id);
        TraceContext {
            trace_id: id,
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// The context for a span under this one: same trace, a new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// From the wire form.
    pub fn from_bytes(b: &[u8; Self::LEN]) -> TraceContext {
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&b[..16]);
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&b[16..24]);
        TraceContext {
            trace_id,
            span_id,
            flags: b[24],
        }
    }

    /// The trace id in lowercase hex (W3C `traceparent` form).
    pub fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id in lowercase hex.
    pub fn span_hex(&self) -> String {
        hex(&self.span_id)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_hex(),
            self.span_hex(),
            self.flags
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fill_random(buf: &mut [u8]) {
    // Ids need to be unique, not secret: fastrand, with a non-zero result.
    loop {
        buf.iter_mut().for_each(|b| *b = fastrand::u8(..));
        if buf.iter().any(|&b| b != 0) {
            return;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    fill_random(&mut id);
    id
}

/// Connects domi's spans to a tracing backend's own ids (e.g.
/// OpenTelemetry through `tracing-opentelemetry`).
pub trait Propagator: Send + Sync + 'static {
    /// The context to send for a request made inside `span` (the caller's
    /// `domi.request` span, or the current span for a one-way message):
    /// the backend's trace and span ids of it. `None` lets domi choose.
    fn inject(&self, span: &tracing::Span) -> Option<TraceContext>;

    /// Makes the handler's `span` a child of the context that came with
    /// its message.
    fn extract(&self, span: &tracing::Span, received: &TraceContext);
}

/// The propagator a node was given, if any.
#[derive(Clone)]
pub struct PropagatorHook(pub Arc<dyn Propagator>);

impl fmt::Debug for PropagatorHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Propagator")
    }
}

thread_local! {
    /// The trace of the handler running on this thread (a shard), if any.
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// The trace of the handler running on this thread, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.with(Cell::get)
}

/// Runs `f` with `ctx` as the current trace (restored afterwards).
pub(crate) fn with_current<R>(ctx: Option<TraceContext>, f: impl FnOnce() -> R) -> R {
    let before = CURRENT.with(|c| c.replace(ctx));
    struct Restore(Option<TraceContext>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// The context to send from inside `span`: the propagator's, else a child
/// of the running handler's trace, else a new trace.
pub(crate) fn outgoing(hook: Option<&PropagatorHook>, span: &tracing::Span) -> TraceContext {
    hook.and_then(|h| h.0.inject(span))
        .unwrap_or_else(|| current().map_or_else(TraceContext::new_trace, |c| c.child()))
}

/// A future that runs with its span entered and its trace current on
/// every poll (an async handler's).
pub(crate) struct Traced<F> {
    inner: Pin<Box<F>>,
    span: tracing::Span,
    ctx: Option<TraceContext>,
}

impl<F> Traced<F> {
    pub(crate) fn new(inner: F, span: tracing::Span, ctx: Option<TraceContext>) -> Traced<F> {
        Traced {
            inner: Box::pin(inner),
            span,
            ctx,
        }
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let inner = &mut this.inner;
        with_current(this.ctx, || inner.as_mut().poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_round_trips_and_prints_as_traceparent() {
        let c = TraceContext {
            trace_id: [0xAB; 16],
            span_id: [0x01; 8],
            flags: 1,
        };
        assert_eq!(TraceContext::from_bytes(&c.to_bytes()), c);
        assert_eq!(
            format!("{c:?}"),
            "00-abababababababababababababababab-0101010101010101-01"
        );
    }

    #[test]
    fn children_keep_the_trace_and_the_current_one_is_scoped() {
        let root = TraceContext::new_trace();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(current(), None);
        let seen = with_current(Some(root), || {
            let out = outgoing(None, &tracing::Span::none());
            (current(), out)
        });
        assert_eq!(seen.0, Some(root));
        assert_eq!(seen.1.trace_id, root.trace_id, "sends continue the trace");
        assert_eq!(current(), None, "restored");
        let fresh = outgoing(None, &tracing::Span::none());
        assert_ne!(
            fresh.trace_id, root.trace_id,
            "outside a handler: a new trace"
        );
    }
}
