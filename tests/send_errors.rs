//! `call` and `notify` failures reach the caller: the `on_send_error` hook
//! (the seed's `reject`) hears of a `call` its provider refused after it was
//! routed, and of sends handed to a shard that failed there; a shard
//! producer that waits for room (`notify_when_ready`) gets no `Backpressure`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fixed::{caller, peer_of};
use common::{small, wait_until, SETTLE};
use domi::{BusError, Channel, ErrorCode, Handler, SendFailure, SendOp};

const CH: Channel = Channel(50);
const REPLY: Channel = Channel(51);
const T: Duration = Duration::from_secs(3);

type Seen = Arc<Mutex<Vec<SendFailure>>>;

fn recorder() -> (Seen, impl Fn(&SendFailure) + Send + Sync + 'static) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (seen, move |f: &SendFailure| {
        s.lock().unwrap().push(f.clone())
    })
}

#[test]
fn a_call_to_a_provider_that_paused_after_routing_reaches_the_error_path() {
    let server = small("server")
        .subscribe(CH, Handler::sync(|req| drop(req.reply(b"done"))))
        .start()
        .unwrap();
    // The caller's table is fixed as it first saw the server (serving), so
    // it routes the call there after the pause: the provider refuses it.
    let (seen, hook) = recorder();
    let replies = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let r = replies.clone();
    let caller = caller("caller", 1, vec![peer_of(&server)])
        .subscribe(
            REPLY,
            Handler::sync(move |req| r.lock().unwrap().push(req.payload().to_vec())),
        )
        .on_send_error(hook)
        .start()
        .unwrap();
    caller.call(CH, b"job", REPLY).unwrap();
    wait_until("the reply of a served call", T, || {
        replies.lock().unwrap().len() == 1
    });
    server.pause();
    caller.call(CH, b"job", REPLY).unwrap();
    wait_until("the refusal to reach the hook", T, || {
        !seen.lock().unwrap().is_empty()
    });
    let f = seen.lock().unwrap()[0].clone();
    assert_eq!(
        f,
        SendFailure {
            op: SendOp::Call,
            channel: CH,
            reply_channel: REPLY,
            peer: Some(server.id()),
            error: BusError::Remote {
                peer: server.id(),
                code: ErrorCode::Paused
            },
        }
    );
    assert_eq!(
        replies.lock().unwrap().len(),
        1,
        "no reply for the refused call"
    );
    assert_eq!(caller.stats().send_failures, 1);
}

#[test]
fn a_call_to_a_provider_that_unsubscribed_is_reported_as_no_handler() {
    let server = small("server")
        .subscribe(CH, Handler::sync(|req| drop(req.reply(b"x"))))
        .start()
        .unwrap();
    let (seen, hook) = recorder();
    let caller = caller("caller", 1, vec![peer_of(&server)])
        .on_send_error(hook)
        .start()
        .unwrap();
    assert!(server.unsubscribe(CH));
    caller.call(CH, b"job", REPLY).unwrap();
    wait_until("the refusal to reach the hook", T, || {
        !seen.lock().unwrap().is_empty()
    });
    let f = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (f.op, f.channel, f.reply_channel),
        (SendOp::Call, CH, REPLY)
    );
    assert_eq!(
        f.error,
        BusError::Remote {
            peer: server.id(),
            code: ErrorCode::NoHandler
        }
    );
    // A request gets the same refusal as its error (nothing else serves CH).
    assert_eq!(
        caller.request(CH, b"q", T),
        Err(BusError::Remote {
            peer: server.id(),
            code: ErrorCode::NoHandler
        })
    );
}

#[test]
fn a_plain_thread_notify_that_fails_on_the_shard_reaches_the_hook() {
    let (seen, hook) = recorder();
    let server = small("server")
        .subscribe(CH, Handler::sync(|_| {}))
        .start()
        .unwrap();
    let client = small("client")
        .peer(server.local_addr())
        .on_send_error(hook)
        .configure(|c| {
            c.max_payload = 1024;
            c.max_write_queue = 1024;
        })
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    // Far more than the write queue holds: some sends fail on the shard
    // with Backpressure after `notify` returned.
    for _ in 0..2000 {
        let _ = client.notify(CH, &[0u8; 1000]);
    }
    wait_until("a failure to be reported", T, || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|f| f.op == SendOp::Notify && matches!(f.error, BusError::Backpressure { .. }))
    });
}

#[test]
fn a_shard_producer_waiting_for_room_loses_nothing_to_a_full_write_queue() {
    const N: u64 = 20_000;
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let server = small("server")
        .subscribe(
            CH,
            Handler::sync(move |_| {
                g.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .start()
        .unwrap();
    let client = small("client")
        .peer(server.local_addr())
        .configure(|c| {
            c.max_payload = 1024;
            c.max_write_queue = 4096;
        })
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    // 20 MB through a 4 KiB write queue: `notify` alone would fail with
    // Backpressure whenever the queue is full; this waits instead.
    let sent = client
        .spawn_on(0, |bus| async move {
            for _ in 0..N {
                bus.notify_when_ready(CH, &[7u8; 1000]).await?;
            }
            Ok::<(), BusError>(())
        })
        .unwrap()
        .join_timeout(Duration::from_secs(60))
        .expect("the producer finished");
    assert_eq!(sent, Ok(()));
    wait_until("every message to arrive", T, || {
        got.load(Ordering::Relaxed) == N
    });
    assert!(
        client.stats().backpressure > 0,
        "the queue did fill, so the producer did wait"
    );
}
