//! Deadlines travel with requests: a provider drops a request whose
//! deadline passed while it waited for a handler slot (it never runs, and
//! is counted); handlers read the deadline; a request made on behalf of
//! another one inherits what is left of its deadline; a shard's one
//! request timer ends each request on time.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::{BusError, Channel, Handler};

const SLOW: Channel = Channel(70);
const ASK: Channel = Channel(71);
const FRONT: Channel = Channel(72);
const STUCK: Channel = Channel(73);

#[test]
fn a_request_whose_deadline_passes_while_queued_never_runs() {
    let ran: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let release = Arc::new(AtomicBool::new(false));
    let (r, rel) = (ran.clone(), release.clone());
    // One handler slot: the second request waits in the queue behind the
    // first, which holds its slot until the test releases it.
    let server = small("server")
        .max_handlers(1)
        .subscribe(
            SLOW,
            Handler::asynchronous(move |mut req| {
                r.lock().unwrap().push(req.payload().to_vec());
                let rel = rel.clone();
                async move {
                    while !rel.load(Ordering::SeqCst) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    let _ = req.reply(b"done");
                }
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(SLOW, SETTLE).unwrap();

    let first = client.request_async(SLOW, b"first", Duration::from_secs(10));
    let first = std::thread::spawn(move || futures_lite::future::block_on(first));
    wait_until("the first request holds the slot", SETTLE, || {
        ran.lock().unwrap().len() == 1
    });
    let second = client.request(SLOW, b"second", Duration::from_millis(100));
    assert!(
        matches!(second, Err(BusError::Timeout { channel: SLOW, .. })),
        "{second:?}"
    );
    assert_eq!(server.stats().overload_queued, 1);
    // The server counts the deadline from the request's arrival, which came
    // before the line above: 100 ms from now it has passed there too (a
    // loaded machine can deliver the request well after the client sent
    // it, and the client's own 100 ms then end first).
    // (Not a guess: the bound of a deadline the test cannot observe.)
    std::thread::sleep(Duration::from_millis(100));
    // The slot frees after the second request's deadline: it is dropped.
    release.store(true, Ordering::SeqCst);
    assert_eq!(first.join().unwrap().as_deref(), Ok(&b"done"[..]));
    wait_until("the late request is counted", SETTLE, || {
        server.stats().deadline_expired == 1
    });
    assert_eq!(*ran.lock().unwrap(), vec![b"first".to_vec()]);
    // The slot is free again: a new request runs.
    assert_eq!(
        client
            .request(SLOW, b"third", Duration::from_secs(5))
            .as_deref(),
        Ok(&b"done"[..])
    );
    assert_eq!(server.stats().deadline_expired, 1);
}

#[test]
fn handlers_read_the_callers_deadline() {
    let seen: Arc<Mutex<Vec<Option<Duration>>>> = Arc::default();
    let s = seen.clone();
    let server = small("server")
        .subscribe(
            ASK,
            Handler::sync(move |req| {
                s.lock().unwrap().push(req.remaining());
                if req.expects_reply() {
                    let _ = req.reply(b"ok");
                }
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(ASK, SETTLE).unwrap();

    client.request(ASK, b"q", Duration::from_secs(3)).unwrap();
    client.notify(ASK, b"n").unwrap();
    wait_until("both messages handled", SETTLE, || {
        seen.lock().unwrap().len() == 2
    });
    let seen = seen.lock().unwrap();
    let left = seen[0].expect("a request carries its deadline");
    assert!(
        left <= Duration::from_secs(3) && left > Duration::ZERO,
        "{left:?}"
    );
    assert_eq!(seen[1], None, "a one-way message has no deadline");
}

#[test]
fn a_nested_request_inherits_the_remaining_deadline() {
    // The back node never answers in time; the front node asks it on
    // behalf of the client and reports how long its nested request waited.
    let back = small("back")
        .subscribe(
            STUCK,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_secs(3)).await;
                let _ = req.reply(b"too late");
            }),
        )
        .start()
        .unwrap();
    type Outcome = Option<Result<Vec<u8>, BusError>>;
    let nested: Arc<Mutex<Outcome>> = Arc::default();
    let n = nested.clone();
    let front = small("front")
        .peer(back.local_addr())
        .subscribe(
            FRONT,
            Handler::asynchronous(move |mut req| {
                let n = n.clone();
                async move {
                    let r = req.request(STUCK, b"?").await;
                    *n.lock().unwrap() = Some(r);
                    let _ = req.reply(b"front");
                }
            }),
        )
        .start()
        .unwrap();
    front.wait_for_provider(STUCK, SETTLE).unwrap();
    let client = small("client").peer(front.local_addr()).start().unwrap();
    client.wait_for_provider(FRONT, SETTLE).unwrap();

    let timeout = Duration::from_millis(300);
    let r = client.request(FRONT, b"go", timeout);
    assert!(matches!(r, Err(BusError::Timeout { .. })), "{r:?}");
    wait_until("the nested request ended", SETTLE, || {
        nested.lock().unwrap().is_some()
    });
    let nested = nested.lock().unwrap().take().unwrap();
    match nested {
        // It waited what was left of the client's 300 ms, not the default.
        Err(BusError::Timeout { channel, after }) => {
            assert_eq!(channel, STUCK);
            assert!(after <= timeout && after > Duration::ZERO, "{after:?}");
        }
        other => panic!("expected the nested request to time out: {other:?}"),
    }
}

/// A shard keeps one timer for its requests, set to the earliest deadline:
/// a short request sent after a long one must set it again, and end on time.
#[test]
fn a_short_request_after_a_long_one_times_out_on_time() {
    const HOLD: Channel = Channel(74);
    let release = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (rel, seen) = (release.clone(), started.clone());
    let server = small("server")
        .subscribe(
            HOLD,
            Handler::asynchronous(move |mut req| {
                let rel = rel.clone();
                seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    while !rel.load(Ordering::SeqCst) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    let _ = req.reply(b"late");
                }
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(HOLD, SETTLE).unwrap();
    let (short, took) = client
        .spawn_on(0, |bus| async move {
            let b = bus.clone();
            let long = glommio::spawn_local(async move {
                b.request(HOLD, b"long", Duration::from_secs(20)).await
            });
            // The long request reaches the server before the short one
            // leaves (the join below bounds the wait).
            while started.load(Ordering::SeqCst) == 0 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let asked = std::time::Instant::now();
            let short = bus
                .request(HOLD, b"short", Duration::from_millis(100))
                .await;
            let took = asked.elapsed();
            drop(long);
            (short, took)
        })
        .unwrap()
        .join_timeout(Duration::from_secs(30))
        .expect("the shard answers");
    release.store(true, Ordering::SeqCst);
    assert!(
        matches!(short, Err(BusError::Timeout { channel: HOLD, .. })),
        "{short:?}"
    );
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(5),
        "the 100 ms request ended after {took:?}"
    );
}
