//! Handler fault isolation: a panic in a handler (sync or async) is caught
//! per message; the caller gets `HandlerPanicked`, the panic is counted, and
//! the shard keeps serving every other request.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::{BusError, Channel, ErrorCode, Handler, SendFailure, SendOp};

const SYNC: Channel = Channel(50);
const ASYNC: Channel = Channel(51);
const EAGER: Channel = Channel(52);
const REPLY: Channel = Channel(53);
const T: Duration = Duration::from_secs(2);

fn panicked(e: &Result<Vec<u8>, BusError>) -> bool {
    matches!(
        e,
        Err(BusError::Remote {
            code: ErrorCode::HandlerPanicked,
            ..
        })
    )
}

fn panicking_server() -> domi::Node {
    small("server")
        .subscribe(
            SYNC,
            Handler::sync(|req| {
                if req.payload() == b"boom" {
                    panic!("sync handler refuses boom");
                }
                let _ = req.reply(b"pong");
            }),
        )
        .subscribe(
            ASYNC,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                if req.payload() == b"boom" {
                    panic!("async handler refuses boom");
                }
                let _ = req.reply(b"pong");
            }),
        )
        .subscribe(
            EAGER,
            // Panics while making its future, before any await.
            Handler::asynchronous(|mut req| {
                assert_ne!(req.payload(), b"boom", "eager refusal");
                async move {
                    let _ = req.reply(b"pong");
                }
            }),
        )
        .start()
        .expect("server starts")
}

#[test]
fn a_panicking_handler_answers_handler_panicked_and_the_shard_serves_on() {
    let server = panicking_server();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client
        .wait_for_providers(SYNC, 1, SETTLE)
        .and_then(|()| client.wait_for_provider(EAGER, SETTLE))
        .unwrap();
    for (i, ch) in [SYNC, ASYNC, EAGER].into_iter().enumerate() {
        let r = client.request(ch, b"boom", T);
        assert!(panicked(&r), "{ch}: {r:?}");
        for _ in 0..20 {
            assert_eq!(client.request(ch, b"ping", T).unwrap(), b"pong", "{ch}");
        }
        assert_eq!(server.stats().handler_panics, i as u64 + 1);
    }
    // Served locally (the node calls itself): the same answer.
    let r = server.request(SYNC, b"boom", T);
    assert!(panicked(&r), "{r:?}");
    assert_eq!(server.request(SYNC, b"ping", T).unwrap(), b"pong");
    assert_eq!(server.stats().handler_panics, 4);
}

#[test]
fn a_panicking_call_handler_reaches_the_callers_send_error_hook() {
    let server = panicking_server();
    let failures: Arc<Mutex<Vec<SendFailure>>> = Arc::default();
    let seen = failures.clone();
    let client = small("client")
        .peer(server.local_addr())
        .subscribe(REPLY, Handler::sync(|_| {}))
        .on_send_error(move |f| seen.lock().unwrap().push(f.clone()))
        .start()
        .unwrap();
    client.wait_for_provider(ASYNC, SETTLE).unwrap();
    client.call(ASYNC, b"boom", REPLY).unwrap();
    wait_until("the failure to reach the hook", T, || {
        !failures.lock().unwrap().is_empty()
    });
    let f = failures.lock().unwrap()[0].clone();
    assert_eq!(f.op, SendOp::Call);
    assert_eq!((f.channel, f.reply_channel), (ASYNC, REPLY));
    assert_eq!(f.peer, Some(server.id()));
    assert_eq!(
        f.error,
        BusError::Remote {
            peer: server.id(),
            code: ErrorCode::HandlerPanicked
        }
    );
}

#[test]
fn a_handler_that_replies_then_panics_still_delivers_its_reply() {
    let server = small("server")
        .subscribe(
            SYNC,
            Handler::sync(|req| {
                let _ = req.reply(b"done");
                panic!("after the reply");
            }),
        )
        .start()
        .unwrap();
    assert_eq!(server.request(SYNC, b"x", T).unwrap(), b"done");
    assert_eq!(server.stats().handler_panics, 1);
    assert_eq!(server.request(SYNC, b"x", T).unwrap(), b"done");
}

#[test]
fn a_panicking_shard_task_leaves_the_shard_running() {
    let server = panicking_server();
    let task = server
        .spawn_on(0, |_bus| async move {
            panic!("task panics");
        })
        .unwrap();
    let r: Option<()> = task.join_timeout(T);
    assert_eq!(r, None);
    assert_eq!(server.request(SYNC, b"ping", T).unwrap(), b"pong");
}
