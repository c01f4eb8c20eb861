//! Traces across nodes: the caller's `domi.request` span and the
//! `domi.handler` spans of the nodes that served it share one trace id,
//! which travelled in the frames; a request made while handling another
//! continues its trace; a node with trace context off sends none.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::{Channel, Handler};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const FRONT: Channel = Channel(85);
const BACK: Channel = Channel(86);
const PLAIN: Channel = Channel(87);
const T: Duration = Duration::from_secs(5);

/// A span's fields by name.
type FieldMap = HashMap<String, String>;

/// Every domi span seen: its name and fields, in creation order.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

/// A span: its id, name and fields.
type Seen = (Id, &'static str, FieldMap);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().into(),
            format!("{value:?}").trim_matches('"').into(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let name = attrs.metadata().name();
        if name.starts_with("domi.") {
            let mut f = HashMap::new();
            attrs.record(&mut Fields(&mut f));
            self.0.lock().unwrap().push((id.clone(), name, f));
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut all = self.0.lock().unwrap();
        if let Some((_, _, f)) = all.iter_mut().rev().find(|(i, _, _)| i == id) {
            values.record(&mut Fields(f));
        }
    }
}

impl Spans {
    fn named(&self, name: &str, channel: Channel) -> Vec<HashMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n, f)| *n == name && f.get("channel") == Some(&channel.0.to_string()))
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}

#[test]
fn one_trace_crosses_three_nodes_and_stays_off_the_wire_when_off() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(
        spans
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let back = small("back")
        .subscribe(
            BACK,
            Handler::sync(|req| {
                let _ = req.reply(b"back");
            }),
        )
        .subscribe(
            PLAIN,
            Handler::sync(|req| {
                let _ = req.reply(b"plain");
            }),
        )
        .start()
        .unwrap();
    let front = small("front")
        .trace_context()
        .peer(back.local_addr())
        .subscribe(
            FRONT,
            Handler::asynchronous(|mut req| async move {
                let inner = req.request(BACK, b"?").await.unwrap();
                let _ = req.reply(&inner);
            }),
        )
        .start()
        .unwrap();
    front.wait_for_provider(BACK, SETTLE).unwrap();
    let client = small("client")
        .trace_context()
        .peer(front.local_addr())
        .peer(back.local_addr())
        .start()
        .unwrap();
    client.wait_for_provider(FRONT, SETTLE).unwrap();
    client.wait_for_provider(BACK, SETTLE).unwrap();

    assert_eq!(client.request(FRONT, b"go", T).unwrap(), b"back");
    wait_until("the back node's handler span", SETTLE, || {
        !spans.named("domi.handler", BACK).is_empty()
    });

    let caller = &spans.named("domi.request", FRONT)[0];
    let at_front = &spans.named("domi.handler", FRONT)[0];
    let nested = &spans.named("domi.request", BACK)[0];
    let at_back = &spans.named("domi.handler", BACK)[0];
    let trace = &caller["trace_id"];
    assert_eq!(trace.len(), 32, "{caller:?}");
    for (what, span) in [
        ("front's handler", at_front),
        ("the nested request", nested),
        ("back's handler", at_back),
    ] {
        assert_eq!(&span["trace_id"], trace, "{what}: {span:?}");
    }
    // Parent links: client request -> front handler -> nested request -> back handler.
    assert_eq!(at_front["parent_span_id"], caller["span_id"]);
    assert_eq!(at_back["parent_span_id"], nested["span_id"]);
    assert_ne!(at_back["parent_span_id"], at_front["parent_span_id"]);

    // The back node sends no trace context: its own requests carry none,
    // and the handler that serves them records no trace.
    let plain = small("plain-client")
        .peer(back.local_addr())
        .start()
        .unwrap();
    plain.wait_for_provider(PLAIN, SETTLE).unwrap();
    assert_eq!(plain.request(PLAIN, b"x", T).unwrap(), b"plain");
    let untraced = &spans.named("domi.handler", PLAIN)[0];
    assert!(!untraced.contains_key("trace_id"), "{untraced:?}");
    assert!(!spans.named("domi.request", PLAIN)[0].contains_key("trace_id"));
}
