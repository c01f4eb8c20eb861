//! Pipelines: a message along a route of three channels on three nodes,
//! each stage handing it on with `next`; the last stage's reply (or
//! application error) reaches the originator; a stage that ran is never
//! run again when a later one cannot be reached.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::{BusError, Channel, ErrorCode, Handler, Node};

const A: Channel = Channel(80);
const B: Channel = Channel(81);
const C: Channel = Channel(82);
const NOBODY: Channel = Channel(83);
const T: Duration = Duration::from_secs(5);

/// A stage that appends `tag` and hands the message on, counting runs.
fn stage(tag: u8, runs: Arc<AtomicUsize>) -> Handler {
    Handler::sync(move |req| {
        runs.fetch_add(1, Ordering::SeqCst);
        let mut next = req.payload().to_vec();
        next.push(tag);
        if let Err(e) = req.next(&next) {
            let _ = req.reply_error(500, &e.to_string());
        } else if req.payload() == b"twice" {
            let again = req.next(&next);
            assert!(
                matches!(again, Err(BusError::AlreadyAnswered { .. })),
                "{again:?}"
            );
        }
    })
}

struct Line {
    _nodes: Vec<Node>,
    client: Node,
    runs_a: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Node 3 serves C (the last stage: replies, or records one-way
/// messages), node 2 serves B, node 1 serves A; the client knows node 1.
fn line() -> Line {
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let g = got.clone();
    let last = small("c")
        .subscribe(
            C,
            Handler::sync(move |req| {
                let mut out = req.payload().to_vec();
                out.push(b'c');
                assert!(req.route().is_empty(), "C is the last stage");
                assert!(matches!(
                    req.next(b"?"),
                    Err(BusError::EndOfRoute { channel: C })
                ));
                if out.starts_with(b"fail") {
                    let _ = req.reply_error(42, "refused at C");
                } else if req.expects_reply() {
                    let _ = req.reply(&out);
                } else {
                    g.lock().unwrap().push(out);
                }
            }),
        )
        .start()
        .unwrap();
    let middle = small("b")
        .peer(last.local_addr())
        .subscribe(B, stage(b'b', Arc::default()))
        .start()
        .unwrap();
    middle.wait_for_provider(C, SETTLE).unwrap();
    let runs_a = Arc::new(AtomicUsize::new(0));
    let first = small("a")
        .peer(middle.local_addr())
        .subscribe(A, stage(b'a', runs_a.clone()))
        .start()
        .unwrap();
    first.wait_for_provider(B, SETTLE).unwrap();
    let client = small("client").peer(first.local_addr()).start().unwrap();
    client.wait_for_provider(A, SETTLE).unwrap();
    Line {
        _nodes: vec![last, middle, first],
        client,
        runs_a,
        got,
    }
}

#[test]
fn a_request_crosses_three_stages_and_the_last_one_answers() {
    let l = line();
    for i in 0..50u8 {
        let reply = l.client.request_route(&[A, B, C], &[i], T).unwrap();
        assert_eq!(reply, [i, b'a', b'b', b'c']);
    }
    // An application error at the last stage reaches the originator as is.
    let r = l.client.request_route(&[A, B, C], b"fail", T);
    assert!(
        matches!(&r, Err(BusError::Application { code: 42, message, .. }) if message == "refused at C"),
        "{r:?}"
    );
    assert_eq!(l.runs_a.load(Ordering::SeqCst), 51);
}

#[test]
fn a_one_way_message_crosses_three_stages() {
    let l = line();
    for i in 0..20u8 {
        l.client.ventilate(&[A, B, C], &[i]).unwrap();
    }
    wait_until("20 messages at the last stage", SETTLE, || {
        l.got.lock().unwrap().len() == 20
    });
    let mut got = l.got.lock().unwrap().clone();
    got.sort();
    let want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i, b'a', b'b', b'c']).collect();
    assert_eq!(got, want);
}

#[test]
fn an_unreachable_stage_fails_the_route_without_running_a_stage_twice() {
    let l = line();
    // B hands on to a channel nobody serves: the stages before it ran, so
    // the error is final (RouteFailed), never retried on another provider.
    let r = l.client.request_route(&[A, B, NOBODY], b"x", T);
    assert!(
        matches!(
            r,
            Err(BusError::Remote {
                code: ErrorCode::RouteFailed,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(l.runs_a.load(Ordering::SeqCst), 1);
    // Bad routes are refused before anything is sent.
    assert!(matches!(
        l.client.request_route(&[], b"x", T),
        Err(BusError::BadRoute { stages: 0 })
    ));
    let long = [A; domi::frame::MAX_ROUTE + 2];
    assert!(matches!(
        l.client.request_route(&long, b"x", T),
        Err(BusError::BadRoute { .. })
    ));
    assert_eq!(l.runs_a.load(Ordering::SeqCst), 1);
    // Handing a request on twice would run the next stage twice: refused.
    assert!(matches!(
        l.client.request_route(&[A, B, C], b"twice", T),
        Ok(r) if r == b"twiceabc"
    ));
    // A plain request to a stage has no route: `next` says so, and the
    // stage answers with its own error.
    let r = l.client.request(A, b"x", T);
    assert!(
        matches!(r, Err(BusError::Application { code: 500, .. })),
        "{r:?}"
    );
}
