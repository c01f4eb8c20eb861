//! Typed messages between real nodes over TCP: serde structs over postcard
//! and JSON, protobuf messages over prost, from the blocking handle, its
//! `Send` future and a shard's bus; an `AppError` reaches the caller as
//! `BusError::Application`; a request the provider cannot decode is refused
//! once with `ErrorCode::Undecodable` (never retried) and the provider
//! serves on; a one-way message that does not decode is dropped; a reply
//! the caller cannot decode is `TypedError::Decode`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::typed::{Context, Json, Prost};
use domi::{AppError, BusError, Channel, ErrorCode, Handler, Node, TypedError};
use serde::{Deserialize, Serialize};

/// Postcard, async handler.
const ORDERS: Channel = Channel(90);
/// JSON, inline handler with the context.
const ORDERS_JSON: Channel = Channel(91);
/// Prost, async handler with the context.
const WORDS: Channel = Channel(92);
/// Postcard, one-way messages.
const EVENTS: Channel = Channel(93);
/// Untyped: answers 4 bytes no codec here decodes as a `Receipt`.
const GARBLED: Channel = Channel(94);
const T: Duration = Duration::from_secs(3);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Order {
    item: String,
    quantity: u32,
    note: Option<String>,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Receipt {
    item: String,
    total_cents: i64,
    lines: Vec<(String, u32)>,
    /// Who asked (JSON channel only: its handler sees the context).
    by: Option<u16>,
}

fn order(item: &str, quantity: u32) -> Order {
    Order {
        item: item.into(),
        quantity,
        note: Some("é, ünïcode".into()),
        tags: vec!["a".into(), String::new(), "c".into()],
    }
}

/// The shop's answer; over 10 items is out of stock.
fn receipt(o: Order, by: Option<u16>) -> Result<Receipt, AppError> {
    if o.quantity > 10 {
        return Err(AppError::new(409, format!("out of stock: {}", o.item)));
    }
    Ok(Receipt {
        total_cents: -(o.quantity as i64) * 250,
        lines: o.tags.into_iter().map(|t| (t, o.quantity)).collect(),
        item: o.item,
        by,
    })
}

#[derive(Clone, PartialEq, prost::Message)]
struct WordsRequest {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    min_len: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Word {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    len: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WordsReply {
    #[prost(string, repeated, tag = "1")]
    words: Vec<String>,
    #[prost(message, optional, tag = "2")]
    longest: Option<Word>,
    #[prost(int64, tag = "3")]
    count: i64,
    #[prost(uint32, tag = "4")]
    asked_by: u32,
}

/// A provider of every typed channel; counts the handler runs of `ORDERS`.
fn shop(name: &str) -> (Node, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let node = small(name)
        .subscribe(
            ORDERS,
            Handler::typed(move |o: Order| {
                r.fetch_add(1, Ordering::SeqCst);
                async move { receipt(o, None) }
            }),
        )
        .subscribe(
            ORDERS_JSON,
            Handler::typed_sync_with(Json, |o: Order, ctx: Context| {
                receipt(o, Some(ctx.source().get()))
            }),
        )
        .subscribe(
            WORDS,
            Handler::typed_with(Prost, |req: WordsRequest, ctx: Context| async move {
                if req.text.is_empty() {
                    return Err(AppError::new(1, "empty string"));
                }
                let words: Vec<String> = req
                    .text
                    .split_whitespace()
                    .filter(|w| w.chars().count() >= req.min_len as usize)
                    .map(String::from)
                    .collect();
                let longest = words
                    .iter()
                    .max_by_key(|w| w.chars().count())
                    .map(|w| Word {
                        text: w.clone(),
                        len: w.chars().count() as u32,
                    });
                Ok(WordsReply {
                    count: words.len() as i64,
                    words,
                    longest,
                    asked_by: ctx.source().get() as u32,
                })
            }),
        )
        .subscribe(GARBLED, Handler::sync(|req| req.reply(&[0xff; 4]).unwrap()))
        .start()
        .unwrap();
    (node, ran)
}

fn client_of(providers: &[&Node]) -> Node {
    let client = small("client")
        .peers(providers.iter().map(|p| p.local_addr()))
        .start()
        .unwrap();
    for ch in [ORDERS, ORDERS_JSON, WORDS, GARBLED] {
        client
            .wait_for_providers(ch, providers.len(), SETTLE)
            .unwrap();
    }
    client
}

#[test]
fn serde_structs_round_trip_over_postcard_and_json() {
    let (shop, _) = shop("shop");
    let client = client_of(&[&shop]);
    let me = Some(client.id().get());

    // Blocking, over postcard (the default) and JSON.
    let r: Result<Receipt, _> = client.request_typed(ORDERS, &order("tea", 3), T);
    assert_eq!(r, Ok(receipt(order("tea", 3), None).unwrap()));
    let r: Result<Receipt, _> = client.request_typed_with(Json, ORDERS_JSON, &order("tea", 3), T);
    assert_eq!(r, Ok(receipt(order("tea", 3), me).unwrap()));

    // The `Send` future, here driven by a plain executor.
    let r = futures_lite::future::block_on(client.request_typed_async::<Order, Receipt>(
        ORDERS,
        &order("cup", 0),
        T,
    ));
    assert_eq!(r, Ok(receipt(order("cup", 0), None).unwrap()));

    // From a task on the client's shard, through its bus.
    let r = client
        .spawn_on(0, |bus| async move {
            let o = order("pot", 10);
            let a: Result<Receipt, _> = bus.request_typed(ORDERS, &o, T).await;
            let b: Result<Receipt, _> = bus.request_typed_with(Json, ORDERS_JSON, &o, T).await;
            (a, b)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(r.0, Ok(receipt(order("pot", 10), None).unwrap()));
    assert_eq!(r.1, Ok(receipt(order("pot", 10), me).unwrap()));

    // A request with no JSON form fails before anything is sent.
    let sent = client.stats().sent;
    let map: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let r: Result<Receipt, _> = client.request_typed_with(Json, ORDERS_JSON, &map, T);
    assert!(
        matches!(r, Err(TypedError::Encode { codec: "json", .. })),
        "{r:?}"
    );
    assert_eq!(client.stats().sent, sent);
}

#[test]
fn prost_messages_round_trip() {
    let (shop, _) = shop("shop");
    let client = client_of(&[&shop]);
    let req = WordsRequest {
        text: "a thread per core message bus".into(),
        min_len: 4,
    };
    let r: WordsReply = client.request_typed_with(Prost, WORDS, &req, T).unwrap();
    assert_eq!(
        r,
        WordsReply {
            words: vec!["thread".into(), "core".into(), "message".into()],
            longest: Some(Word {
                text: "message".into(),
                len: 7
            }),
            count: 3,
            asked_by: client.id().get() as u32,
        }
    );
    let r = futures_lite::future::block_on(client.request_typed_async_with::<_, _, WordsReply>(
        Prost,
        WORDS,
        &WordsRequest {
            text: "x".into(),
            min_len: 0,
        },
        T,
    ))
    .unwrap();
    assert_eq!((r.words, r.count), (vec!["x".to_string()], 1));
    // The service's own error for empty input.
    let r: Result<WordsReply, _> =
        client.request_typed_with(Prost, WORDS, &WordsRequest::default(), T);
    assert!(
        matches!(&r, Err(TypedError::Bus(BusError::Application { code: 1, message, .. })) if message == "empty string"),
        "{r:?}"
    );
}

#[test]
fn an_app_error_reaches_the_caller_with_its_code_and_message() {
    let (shop, ran) = shop("shop");
    let client = client_of(&[&shop]);
    for (ch, name) in [(ORDERS, "postcard"), (ORDERS_JSON, "json")] {
        let r: Result<Receipt, _> = if name == "json" {
            client.request_typed_with(Json, ch, &order("tea", 11), T)
        } else {
            client.request_typed(ch, &order("tea", 11), T)
        };
        match r {
            Err(TypedError::Bus(BusError::Application {
                peer,
                code,
                message,
            })) => {
                assert_eq!((peer, code), (shop.id(), 409), "{name}");
                assert_eq!(message, "out of stock: tea", "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(client.stats().app_errors, 2);
}

#[test]
fn an_undecodable_request_is_refused_once_and_the_provider_serves_on() {
    let (a, ran_a) = shop("a");
    let (b, ran_b) = shop("b");
    let client = client_of(&[&a, &b]);
    let handled = || a.stats().handled + b.stats().handled;

    // Raw bytes, then a typed request of another type, then JSON to a
    // postcard channel: each answered `Undecodable` by one provider.
    let r = client.request(ORDERS, &[0xff; 3], T);
    assert!(
        matches!(r, Err(BusError::Remote { code: ErrorCode::Undecodable, peer }) if peer == a.id() || peer == b.id()),
        "{r:?}"
    );
    let r: Result<Receipt, _> = client.request_typed(ORDERS, &"tea".to_string(), T);
    assert!(
        matches!(
            r,
            Err(TypedError::Bus(BusError::Remote {
                code: ErrorCode::Undecodable,
                ..
            }))
        ),
        "{r:?}"
    );
    let r: Result<Receipt, _> = client.request_typed_with(Json, ORDERS, &order("tea", 1), T);
    assert!(
        matches!(
            r,
            Err(TypedError::Bus(BusError::Remote {
                code: ErrorCode::Undecodable,
                ..
            }))
        ),
        "{r:?}"
    );
    // Never retried on the other provider, and the handler never ran.
    assert_eq!(handled(), 3);
    assert_eq!(
        ran_a.load(Ordering::SeqCst) + ran_b.load(Ordering::SeqCst),
        0
    );
    assert_eq!(client.stats().remote_errors, 3);

    // Both providers serve on.
    for i in 0..20 {
        let r: Result<Receipt, _> = client.request_typed(ORDERS, &order("tea", i % 5), T);
        assert_eq!(r, Ok(receipt(order("tea", i % 5), None).unwrap()));
    }
    assert!(ran_a.load(Ordering::SeqCst) > 0 && ran_b.load(Ordering::SeqCst) > 0);

    // A node's own handler answers it the same way.
    let r = a.request(ORDERS_JSON, b"not json", T);
    assert!(
        matches!(r, Err(BusError::Remote { code: ErrorCode::Undecodable, peer }) if peer == a.id()),
        "{r:?}"
    );
}

#[test]
fn a_one_way_message_that_does_not_decode_is_dropped() {
    let seen: Arc<Mutex<Vec<Order>>> = Arc::default();
    let s = seen.clone();
    let node = small("events")
        .subscribe(
            EVENTS,
            Handler::typed_sync(move |o: Order| {
                s.lock().unwrap().push(o);
                Ok(())
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(node.local_addr()).start().unwrap();
    client.wait_for_provider(EVENTS, SETTLE).unwrap();
    // Both over the one connection, in order: when the good one has been
    // handled, the bad one was handled (dropped) before it.
    client.notify(EVENTS, &[0xff; 3]).unwrap();
    client.notify_typed(EVENTS, &order("tea", 2)).unwrap();
    wait_until("the good message", T, || !seen.lock().unwrap().is_empty());
    assert_eq!(*seen.lock().unwrap(), [order("tea", 2)]);
    assert_eq!(node.stats().handled, 2);
}

#[test]
fn a_reply_the_caller_cannot_decode_is_a_decode_error() {
    let (shop, _) = shop("shop");
    let client = client_of(&[&shop]);
    let r: Result<Receipt, _> = client.request_typed(GARBLED, &order("tea", 1), T);
    assert!(
        matches!(
            r,
            Err(TypedError::Decode {
                codec: "postcard",
                len: 4,
                ..
            })
        ),
        "{r:?}"
    );
    let r: Result<Receipt, _> = client.request_typed_with(Json, GARBLED, &order("tea", 1), T);
    assert!(
        matches!(
            r,
            Err(TypedError::Decode {
                codec: "json",
                len: 4,
                ..
            })
        ),
        "{r:?}"
    );
    let r: Result<WordsReply, _> =
        client.request_typed_with(Prost, GARBLED, &WordsRequest::default(), T);
    assert!(
        matches!(r, Err(TypedError::Decode { codec: "prost", .. })),
        "{r:?}"
    );
}
