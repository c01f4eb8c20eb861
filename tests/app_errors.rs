//! Application errors: a handler answers with a code and a message that
//! its caller receives as `BusError::Application` — from a remote provider,
//! from this node's own handler, for a `call` (through `on_send_error`),
//! from sync and async handlers; never retried on another provider, never
//! counted by circuit breakers; long messages cut at a character boundary.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::{BusError, Channel, Handler, Node, SendFailure, SendOp};

const CH: Channel = Channel(80);
const ASYNC: Channel = Channel(81);
const REPLY: Channel = Channel(82);
const T: Duration = Duration::from_secs(3);

/// A provider whose handlers answer "out of stock" (code 409), and count.
fn refusing(name: &str) -> (Node, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let (h, h2) = (handled.clone(), handled.clone());
    let node = small(name)
        .subscribe(
            CH,
            Handler::sync(move |req| {
                h.fetch_add(1, Ordering::SeqCst);
                let message = if req.payload() == b"long" {
                    format!("a{}", "é".repeat(600)) // 1,201 bytes
                } else {
                    "out of stock".to_string()
                };
                req.reply_error(409, &message).unwrap();
            }),
        )
        .subscribe(
            ASYNC,
            Handler::asynchronous(move |mut req| {
                let h = h2.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    req.reply_error(503, "try later").unwrap();
                }
            }),
        )
        .start()
        .unwrap();
    (node, handled)
}

#[test]
fn a_small_payload_bound_cuts_the_message_to_fit() {
    // With max_payload 64 the error frame (4 + message) must fit in 64.
    let node = small("tight")
        .max_payload(64)
        .subscribe(
            CH,
            Handler::sync(|req| {
                req.reply_error(1, &"x".repeat(500)).unwrap();
            }),
        )
        .start()
        .unwrap();
    let client = small("client")
        .max_payload(64)
        .peer(node.local_addr())
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    match client.request(CH, b"q", T) {
        Err(BusError::Application { message, .. }) => assert_eq!(message.len(), 60),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.stats().peer_lost, 0, "the connection stayed up");
}

fn is_app(r: &Result<Vec<u8>, BusError>, want: u16, text: &str) -> bool {
    matches!(r, Err(BusError::Application { code, message, .. }) if *code == want && message == text)
}

#[test]
fn the_caller_gets_the_code_and_message_and_nothing_is_retried() {
    let (a, got_a) = refusing("a");
    let (b, got_b) = refusing("b");
    let client = small("client")
        .peers([a.local_addr(), b.local_addr()])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    for i in 0..60 {
        let r = client.request(CH, b"item", T);
        assert!(is_app(&r, 409, "out of stock"), "{r:?}");
        // One provider per request: an application error is final.
        assert_eq!(
            got_a.load(Ordering::SeqCst) + got_b.load(Ordering::SeqCst),
            i + 1
        );
    }
    let r = client.request(ASYNC, b"x", T);
    assert!(is_app(&r, 503, "try later"), "{r:?}");
    let stats = client.stats();
    assert_eq!(stats.app_errors, 61);
    assert_eq!(stats.remote_errors, 0);
    assert_eq!(stats.breaker_opened, 0, "breakers do not count them");
    // Both providers still take requests.
    assert!(got_a.load(Ordering::SeqCst) > 0 && got_b.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_long_message_is_cut_at_a_character_boundary() {
    let (a, _) = refusing("a");
    let client = small("client").peer(a.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    match client.request(CH, b"long", T) {
        Err(BusError::Application { code, message, .. }) => {
            assert_eq!(code, 409);
            // 1,024 would split an "é": cut before it.
            assert_eq!(message.len(), domi::error::MAX_APP_MESSAGE - 1);
            assert!(message.starts_with('a') && message[1..].chars().all(|c| c == 'é'));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn this_nodes_own_handler_and_a_call_report_it_too() {
    let failures: Arc<Mutex<Vec<SendFailure>>> = Arc::default();
    let f = failures.clone();
    let node = small("self")
        .on_send_error(move |failure| f.lock().unwrap().push(failure.clone()))
        .subscribe(
            CH,
            Handler::sync(|req| {
                req.reply_error(7, "nope").unwrap();
            }),
        )
        .subscribe(REPLY, Handler::sync(|_| {}))
        .start()
        .unwrap();
    node.wait_for_provider(CH, SETTLE).unwrap();
    let r = node.request(CH, b"x", T);
    assert!(is_app(&r, 7, "nope"), "{r:?}");

    // A `call` (its answer would go to a reply channel): the error reaches
    // the send-error hook, from this node's handler and from a remote one.
    node.call(CH, b"x", REPLY).unwrap();
    let (remote, _) = refusing("remote");
    let caller = small("caller")
        .on_send_error({
            let f = failures.clone();
            move |failure| f.lock().unwrap().push(failure.clone())
        })
        .subscribe(REPLY, Handler::sync(|_| {}))
        .peer(remote.local_addr())
        .start()
        .unwrap();
    caller.wait_for_provider(CH, SETTLE).unwrap();
    caller.call(CH, b"x", REPLY).unwrap();
    wait_until("both calls reported", T, || {
        failures.lock().unwrap().len() == 2
    });
    let mut seen: Vec<(u16, domi::NodeId)> = failures
        .lock()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f.op, SendOp::Call);
            match &f.error {
                BusError::Application { code, peer, .. } => (*code, *peer),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [(7, node.id()), (409, remote.id())]);

    // A one-way message has nobody to answer.
    let answered = Arc::new(Mutex::new(None));
    let a = answered.clone();
    let quiet = small("quiet")
        .subscribe(
            Channel(83),
            Handler::sync(move |req| {
                *a.lock().unwrap() = Some(req.reply_error(1, "x"));
            }),
        )
        .start()
        .unwrap();
    quiet.wait_for_provider(Channel(83), SETTLE).unwrap();
    quiet.notify(Channel(83), b"x").unwrap();
    wait_until("the one-way handler ran", T, || {
        answered.lock().unwrap().is_some()
    });
    assert_eq!(
        answered.lock().unwrap().clone(),
        Some(Err(domi::ReplyError::NotExpected))
    );
}
