//! One trace crossing three nodes, exported through OpenTelemetry.
//!
//! Run: `cargo run --example tracing`.
//!
//! Three nodes in one process (static membership): `client` → `front` →
//! `back`. The front's async handler asks the back before it answers, with
//! `req.request` (the nested request inherits the deadline and the trace).
//! Spans go through `tracing-opentelemetry` to an OpenTelemetry SDK tracer
//! provider whose exporter prints each span to stdout (the stdout
//! exporter) and keeps a copy. `OtelPropagator` gives every node's frames
//! the OpenTelemetry ids of the sending span and parents each handler's
//! span under the received context, so the client's `checkout` span, both
//! `domi.request` spans and both `domi.handler` spans form one trace.
//! After the nodes stop and the provider is shut down (every span
//! exported), a summary follows; the exit code is non-zero if the spans do
//! not share one trace id or their parent chain is broken.

#![allow(clippy::print_stdout)] // an example program: its output is the point.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use domi::trace::{Propagator, TraceContext};
use domi::{Channel, Handler, Node, NodeBuilder, NodeId};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const FRONT: Channel = Channel(60);
const BACK: Channel = Channel(61);
const T: Duration = Duration::from_secs(5);
/// The nodes, by static id.
const NODES: [(u16, &str); 3] = [(1, "client"), (2, "front"), (3, "back")];

/// Ties domi's trace context to OpenTelemetry's ids.
struct OtelPropagator;

impl Propagator for OtelPropagator {
    fn inject(&self, span: &tracing::Span) -> Option<TraceContext> {
        let cx = span.context();
        let otel = cx.span();
        let sc = otel.span_context();
        sc.is_valid().then(|| TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }

    fn extract(&self, span: &tracing::Span, received: &TraceContext) {
        let sc = SpanContext::new(
            TraceId::from_bytes(received.trace_id),
            SpanId::from_bytes(received.span_id),
            TraceFlags::new(received.flags),
            true,
            TraceState::default(),
        );
        // Fails only for a span the layer does not see (filtered out).
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }
}

/// The stdout exporter, keeping a copy of every span for the summary.
#[derive(Debug)]
struct Tee {
    stdout: opentelemetry_stdout::SpanExporter,
    seen: Arc<Mutex<Vec<SpanData>>>,
}

impl SpanExporter for Tee {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.seen.lock().unwrap().extend(batch.iter().cloned());
        self.stdout.export(batch)
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.stdout.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.stdout.set_resource(resource);
    }
}

fn node(name: &str, id: u16) -> NodeBuilder {
    Node::builder(name)
        .shards(1)
        .small()
        .node_id(NodeId::new(id).expect("a valid id"))
        .trace_propagator(OtelPropagator)
}

fn main() -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let exporter = Tee {
        stdout: opentelemetry_stdout::SpanExporter::default(),
        seen: seen.clone(),
    };
    // The simple processor exports each span as it ends, on the thread
    // that ends it (a shard's, for domi's spans).
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("domi-tracing-example")
                .build(),
        )
        .build();
    // domi's spans are DEBUG (target `domi_core`); this program's are INFO.
    let spans = Targets::new()
        .with_target("domi_core", LevelFilter::DEBUG)
        .with_default(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("domi-example"))
                .with_threads(true)
                .with_filter(spans),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(LevelFilter::WARN),
        )
        .init();

    let back = node("back", 3)
        .subscribe(
            BACK,
            Handler::sync(|req| {
                let _ = req.reply(b"in stock");
            }),
        )
        .start()
        .context("starting the back node")?;
    let front = node("front", 2)
        .peer(back.local_addr())
        .subscribe(
            FRONT,
            Handler::asynchronous(|mut req| async move {
                // Same deadline, same trace: a child of this handler's span.
                match req.request(BACK, b"stock?").await {
                    Ok(answer) => {
                        let _ = req.reply(&answer);
                    }
                    Err(e) => tracing::warn!("asking the back node failed: {e}"),
                }
            }),
        )
        .start()
        .context("starting the front node")?;
    front.wait_for_provider(BACK, T)?;
    let client = node("client", 1)
        .peer(front.local_addr())
        .start()
        .context("starting the client node")?;
    client.wait_for_provider(FRONT, T)?;

    // The request runs on the client's shard inside the `checkout` span:
    // its `domi.request` span is a child of it.
    let checkout = tracing::info_span!("checkout", order = 42);
    let trace_id = checkout.context().span().span_context().trace_id();
    let reply = client
        .spawn_on(0, move |bus| {
            async move { bus.request(FRONT, b"order 42", T).await }.instrument(checkout)
        })?
        .join()
        .context("the client's shard stopped")??;
    println!("reply: {}", String::from_utf8_lossy(&reply));

    // Spans end on shard threads: stop the nodes first, then flush.
    client.stop();
    front.stop();
    back.stop();
    provider
        .shutdown()
        .context("shutting the tracer provider down")?;

    let spans = seen.lock().unwrap().clone();
    check(&spans, trace_id)
}

/// A span's attribute as text.
fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The node whose shard thread (`domi-<id>-<shard>`) ran a span.
fn node_of(span: &SpanData) -> &'static str {
    let thread = attr(span, "thread.name").unwrap_or_default();
    let id = thread.split('-').nth(1).and_then(|s| s.parse::<u16>().ok());
    NODES
        .iter()
        .find(|(n, _)| Some(*n) == id)
        .map_or("main", |(_, name)| name)
}

/// Prints the trace and checks that it is one chain:
/// checkout → domi.request → domi.handler → domi.request → domi.handler.
fn check(spans: &[SpanData], trace_id: TraceId) -> anyhow::Result<()> {
    println!("\nexported spans (trace {trace_id}), by start time:");
    let mut by_start: Vec<&SpanData> = spans.iter().collect();
    by_start.sort_by_key(|s| s.start_time);
    for s in by_start {
        let parent = match s.parent_span_id {
            SpanId::INVALID => "none (root)".to_string(),
            p if s.parent_span_is_remote => format!("{p} (remote)"),
            p => p.to_string(),
        };
        println!(
            "  {:<13} node {:<6} channel {:<2} source {:<2} trace {} span {} parent {parent}",
            s.name,
            node_of(s),
            attr(s, "channel").unwrap_or_else(|| "-".into()),
            attr(s, "source").unwrap_or_else(|| "-".into()),
            s.span_context.trace_id(),
            s.span_context.span_id(),
        );
    }
    let find = |name: &str, channel: Option<Channel>| {
        let channel = channel.map(|c| c.0.to_string());
        spans
            .iter()
            .find(|s| s.name == name && attr(s, "channel") == channel)
            .with_context(|| format!("no {name} span on channel {channel:?} was exported"))
    };
    let chain = [
        (find("checkout", None)?, "main"),
        (find("domi.request", Some(FRONT))?, "client"),
        (find("domi.handler", Some(FRONT))?, "front"),
        (find("domi.request", Some(BACK))?, "front"),
        (find("domi.handler", Some(BACK))?, "back"),
    ];
    ensure!(
        chain[0].0.parent_span_id == SpanId::INVALID,
        "checkout is not a root span"
    );
    for (i, (span, on)) in chain.iter().enumerate() {
        ensure!(
            span.span_context.trace_id() == trace_id,
            "{} on {on} is in trace {}, not {trace_id}",
            span.name,
            span.span_context.trace_id()
        );
        ensure!(
            node_of(span) == *on,
            "{} ran on {}, not {on}",
            span.name,
            node_of(span)
        );
        if i > 0 {
            let parent = &chain[i - 1].0;
            ensure!(
                span.parent_span_id == parent.span_context.span_id(),
                "{} on {on}: parent {} is not {}'s span {}",
                span.name,
                span.parent_span_id,
                parent.name,
                parent.span_context.span_id()
            );
        }
    }
    println!(
        "one trace crossing three nodes: {trace_id}; spans: checkout → domi.request (client) → \
         domi.handler (front) → domi.request (front) → domi.handler (back)"
    );
    Ok(())
}
