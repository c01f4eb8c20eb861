//! Serial handlers: one sender's messages are handled one at a time, in
//! the order they were sent; other senders' messages are not held up.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{small, wait_until, SETTLE};
use domi::{Channel, Handler};

const ORDERED: Channel = Channel(90);

#[test]
fn one_senders_messages_run_one_at_a_time_in_order() {
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (s, r, m) = (seen.clone(), running.clone(), most.clone());
    let server = small("server")
        .subscribe(
            ORDERED,
            Handler::serial(move |req| {
                let (s, r, m) = (s.clone(), r.clone(), m.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    let n = u32::from_le_bytes(req.payload().try_into().unwrap());
                    // Awaiting lets the next message start if nothing
                    // held it back: a plain async handler would overlap.
                    glommio::timer::sleep(Duration::from_micros(200 * u64::from(n % 3))).await;
                    s.lock().unwrap().push(n);
                    r.fetch_sub(1, Ordering::SeqCst);
                }
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(ORDERED, SETTLE).unwrap();
    for n in 0..300u32 {
        client
            .notify_keyed(ORDERED, b"account-7", &n.to_le_bytes())
            .unwrap();
    }
    wait_until("300 messages handled", SETTLE, || {
        seen.lock().unwrap().len() == 300
    });
    assert_eq!(*seen.lock().unwrap(), (0..300).collect::<Vec<u32>>());
    assert_eq!(most.load(Ordering::SeqCst), 1, "messages overlapped");
}

#[test]
fn other_senders_are_not_held_up() {
    // The first sender's message waits until a message of the second
    // sender has run: if lanes were not per sender, this would deadlock
    // (and the first request would time out).
    let other_ran = Arc::new(AtomicBool::new(false));
    let o = other_ran.clone();
    let server = small("server")
        .subscribe(
            ORDERED,
            Handler::serial(move |mut req| {
                let o = o.clone();
                async move {
                    if req.payload() == b"wait" {
                        let give_up = Instant::now() + Duration::from_secs(5);
                        while !o.load(Ordering::SeqCst) && Instant::now() < give_up {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                        let _ = req.reply(if o.load(Ordering::SeqCst) {
                            b"ok"
                        } else {
                            b"stuck"
                        });
                    } else {
                        o.store(true, Ordering::SeqCst);
                        let _ = req.reply(b"ok");
                    }
                }
            }),
        )
        .start()
        .unwrap();
    let first = small("first").peer(server.local_addr()).start().unwrap();
    let second = small("second").peer(server.local_addr()).start().unwrap();
    first.wait_for_provider(ORDERED, SETTLE).unwrap();
    second.wait_for_provider(ORDERED, SETTLE).unwrap();
    let waiting = first.request_async(ORDERED, b"wait", Duration::from_secs(10));
    let waiting = std::thread::spawn(move || futures_lite::future::block_on(waiting));
    assert_eq!(
        second
            .request(ORDERED, b"go", Duration::from_secs(10))
            .as_deref(),
        Ok(&b"ok"[..])
    );
    assert_eq!(waiting.join().unwrap().as_deref(), Ok(&b"ok"[..]));
}

#[test]
fn order_holds_when_the_handler_cap_is_full_and_late_requests_never_run() {
    // Two handler slots for everything: most messages wait in the queue,
    // then in their lane; the lane must still hand turns over in order.
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let s = seen.clone();
    let server = small("server")
        .max_handlers(2)
        .subscribe(
            ORDERED,
            Handler::serial(move |mut req| {
                let s = s.clone();
                async move {
                    let n = u32::from_le_bytes(req.payload()[..4].try_into().unwrap());
                    glommio::timer::sleep(Duration::from_micros(100 * u64::from(n % 4))).await;
                    if req.payload().len() > 4 {
                        // The slow one: the request queued behind it misses
                        // its deadline while it waits for its turn.
                        glommio::timer::sleep(Duration::from_millis(300)).await;
                    }
                    s.lock().unwrap().push(n);
                    if req.expects_reply() {
                        let _ = req.reply(b"ok");
                    }
                }
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(ORDERED, SETTLE).unwrap();
    for n in 0..200u32 {
        client
            .notify_keyed(ORDERED, b"k", &n.to_le_bytes())
            .unwrap();
    }
    wait_until("200 messages handled", SETTLE, || {
        seen.lock().unwrap().len() == 200
    });
    assert_eq!(*seen.lock().unwrap(), (0..200).collect::<Vec<u32>>());
    assert!(server.stats().overload_queued > 0, "the cap was reached");

    let slow = client.request_async(
        ORDERED,
        &[&1000u32.to_le_bytes()[..], b"slow"].concat(),
        Duration::from_secs(5),
    );
    let slow = std::thread::spawn(move || futures_lite::future::block_on(slow));
    wait_until("the slow one runs", SETTLE, || {
        server.stats().handled == 201
    });
    let late = client.request(ORDERED, &1001u32.to_le_bytes(), Duration::from_millis(50));
    assert!(
        matches!(late, Err(domi::BusError::Timeout { .. })),
        "{late:?}"
    );
    assert_eq!(slow.join().unwrap().as_deref(), Ok(&b"ok"[..]));
    wait_until("the late one dropped", SETTLE, || {
        server.stats().deadline_expired == 1
    });
    assert!(!seen.lock().unwrap().contains(&1001), "a late request ran");
}
