//! Overload never blocks replies: the async-handler cap gates only new
//! inbound requests and one-way messages (queued, then refused with
//! `Backpressure` so callers fail over); replies, errors and heartbeats are
//! always read, so handlers awaiting nested requests at the cap complete.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{burst, pong_server, small, wait_until, SETTLE};
use domi::{BusError, Channel, ErrorCode, Handler, Node};

const FRONT: Channel = Channel(60);
const BACK: Channel = Channel(61);
const SLOW: Channel = Channel(62);

#[test]
fn nested_requests_at_the_handler_cap_all_complete() {
    let (back, _) = pong_server("back", BACK);
    // The front node's async handler asks the back node before answering;
    // only 8 such handlers may run at once on its one shard.
    let front = small("front")
        .max_handlers(8)
        .peer(back.local_addr())
        .subscribe(
            FRONT,
            Handler::asynchronous(|mut req| async move {
                let inner = req
                    .bus()
                    .request(BACK, req.payload(), Duration::from_secs(2))
                    .await;
                let _ = match inner {
                    Ok(r) => req.reply(&r),
                    Err(_) => req.reply(b"inner failed"),
                };
            }),
        )
        .start()
        .unwrap();
    front.wait_for_provider(BACK, SETTLE).unwrap();
    let client = small("client").peer(front.local_addr()).start().unwrap();
    client.wait_for_provider(FRONT, SETTLE).unwrap();

    let (results, took) = burst(&client, 0, FRONT, 64, Duration::from_secs(2));
    assert_eq!(results.len(), 64);
    for r in &results {
        assert_eq!(r.as_deref(), Ok(&b"pong"[..]));
    }
    assert!(
        took < Duration::from_secs(1),
        "64 nested requests took {took:?}"
    );
    let s = front.stats();
    assert!(s.overload_queued > 0, "the cap was reached: {s:?}");
    assert_eq!(s.overload_refused, 0);
}

fn slow_server(name: &str, max_handlers: u64, max_queued: usize) -> (Node, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let node = small(name)
        .max_handlers(max_handlers)
        .configure(|c| c.max_queued = max_queued)
        .subscribe(
            SLOW,
            Handler::asynchronous(move |mut req| {
                h.fetch_add(1, Ordering::SeqCst);
                async move {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    let _ = req.reply(b"slow");
                }
            }),
        )
        .start()
        .unwrap();
    (node, handled)
}

#[test]
fn over_the_queue_requests_are_refused_with_backpressure_and_fail_over() {
    // Alone, a full provider's refusal reaches the caller as Backpressure.
    let (a, _) = slow_server("a", 1, 2);
    let client = small("client").peer(a.local_addr()).start().unwrap();
    client.wait_for_provider(SLOW, SETTLE).unwrap();
    let (results, _) = burst(&client, 0, SLOW, 10, Duration::from_secs(3));
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(BusError::Remote {
                    code: ErrorCode::Backpressure,
                    ..
                })
            )
        })
        .count();
    assert_eq!((ok, refused), (3, 7), "{results:?}");
    assert_eq!(a.stats().overload_refused, 7);

    // With a second provider, refused requests fail over to it.
    let (b, _) = slow_server("b", 64, 64);
    let client2 = small("client2")
        .peers([a.local_addr(), b.local_addr()])
        .start()
        .unwrap();
    client2.wait_for_providers(SLOW, 2, SETTLE).unwrap();
    let (results, _) = burst(&client2, 0, SLOW, 20, Duration::from_secs(3));
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

#[test]
fn one_way_messages_over_the_queue_are_dropped_and_counted() {
    let (a, handled) = slow_server("a", 1, 1);
    let client = small("client").peer(a.local_addr()).start().unwrap();
    client.wait_for_provider(SLOW, SETTLE).unwrap();
    for _ in 0..10 {
        client.notify(SLOW, b"x").unwrap();
    }
    wait_until("every message to be run or dropped", SETTLE, || {
        let s = a.stats();
        s.overload_dropped + handled.load(Ordering::SeqCst) as u64 == 10
    });
    assert!(a.stats().overload_dropped >= 1);
}

#[test]
fn a_channel_concurrency_limit_holds_that_channel() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let server = small("server")
        .concurrency_limit(SLOW, 2)
        .subscribe(
            SLOW,
            Handler::asynchronous(move |mut req| {
                let (r, m) = (r.clone(), m.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    let _ = req.reply(b"ok");
                }
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(SLOW, SETTLE).unwrap();
    let (results, _) = burst(&client, 0, SLOW, 12, Duration::from_secs(3));
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[test]
fn replies_to_calls_are_never_queued_or_dropped_at_the_cap() {
    const REPLY: Channel = Channel(63);
    let (server, _) = pong_server("server", BACK);
    let replies = Arc::new(AtomicUsize::new(0));
    let r = replies.clone();
    // The caller's reply handler is async and slow, with one slot and a
    // queue of one: ten replies arriving at once would overflow it.
    let caller = small("caller")
        .max_handlers(1)
        .configure(|c| c.max_queued = 1)
        .peer(server.local_addr())
        .subscribe(
            REPLY,
            Handler::asynchronous(move |_req| {
                let r = r.clone();
                async move {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    r.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .start()
        .unwrap();
    caller.wait_for_provider(BACK, SETTLE).unwrap();
    for _ in 0..10 {
        caller.call(BACK, b"ping", REPLY).unwrap();
    }
    wait_until("every reply to reach the reply handler", SETTLE, || {
        replies.load(Ordering::SeqCst) == 10
    });
    let s = caller.stats();
    assert_eq!((s.overload_dropped, s.overload_refused), (0, 0));
}
