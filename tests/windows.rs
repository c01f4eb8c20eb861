//! Request windows: many requests in flight from one task, each with a
//! request's guarantees (round-robin, refusals moved to the next provider,
//! timeouts, local providers), their results handed out as they end.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{small, wait_until, SETTLE};
use domi::{BusError, Channel, Completion, ErrorCode, Handler, Node};

const ECHO: Channel = Channel(80);
const SLOW: Channel = Channel(81);
const HOLD: Channel = Channel(82);

/// Replies with its name, a colon and the request's payload.
fn echo_server(name: &'static str) -> Node {
    small(name)
        .subscribe(
            ECHO,
            Handler::sync(move |req| {
                let reply = [name.as_bytes(), b":", req.payload()].concat();
                let _ = req.reply(&reply);
            }),
        )
        .start()
        .unwrap()
}

/// Echoes each request, holding it until the flag `hold` gives for its
/// payload (if any) is set.
fn holding(hold: impl Fn(&[u8]) -> Option<Arc<AtomicBool>> + Send + Sync + 'static) -> Handler {
    Handler::asynchronous(move |mut req| {
        let release = hold(req.payload());
        async move {
            while release.as_ref().is_some_and(|r| !r.load(Ordering::SeqCst)) {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            let _ = req.reply(req.payload().to_vec().as_slice());
        }
    })
}

/// Runs `total` requests on `channel` from shard 0 of `client`, keeping
/// `depth` in flight from one window (payload: the ticket's bytes); every
/// completion, by ticket.
fn run_window(
    client: &Node,
    channel: Channel,
    total: u64,
    depth: u64,
    timeout: Duration,
) -> BTreeMap<u64, (Vec<u8>, Completion)> {
    client
        .spawn_on(0, move |bus| async move {
            let mut window = bus.request_window(channel, timeout);
            let mut sent = BTreeMap::new();
            let mut done = BTreeMap::new();
            let mut next = 0u64;
            let send = |window: &mut domi::RequestWindow,
                        sent: &mut BTreeMap<u64, Vec<u8>>,
                        next: &mut u64| {
                let payload = next.to_le_bytes().to_vec();
                let ticket = window.send(&payload).expect("a provider takes it");
                sent.insert(ticket, payload);
                *next += 1;
            };
            while next < depth.min(total) {
                send(&mut window, &mut sent, &mut next);
            }
            assert_eq!(window.in_flight() as u64, depth.min(total));
            while let Some(c) = window.next().await {
                if next < total {
                    send(&mut window, &mut sent, &mut next);
                }
                let payload = sent.remove(&c.ticket).expect("a ticket ends once");
                done.insert(c.ticket, (payload, c));
            }
            assert_eq!(window.in_flight(), 0);
            assert!(sent.is_empty(), "every request ended: {sent:?}");
            done
        })
        .unwrap()
        .join_timeout(Duration::from_secs(60))
        .expect("the window finishes")
}

#[test]
fn a_window_keeps_requests_in_flight_round_robin_and_matches_each_answer() {
    let (a, b) = (echo_server("a"), echo_server("b"));
    let client = small("client")
        .peers([a.local_addr(), b.local_addr()])
        .start()
        .unwrap();
    client.wait_for_providers(ECHO, 2, SETTLE).unwrap();
    let done = run_window(&client, ECHO, 400, 32, Duration::from_secs(10));
    assert_eq!(done.len(), 400);
    let mut served = BTreeMap::<&str, usize>::new();
    for (ticket, (payload, c)) in &done {
        let reply = c.result.as_ref().expect("answered");
        let (name, echoed) = reply.split_at(2);
        assert_eq!(echoed, &payload[..], "ticket {ticket} got another's answer");
        assert!(c.took < Duration::from_secs(10), "{:?}", c.took);
        *served
            .entry(if name == b"a:" { "a" } else { "b" })
            .or_default() += 1;
    }
    // One caller shard, two providers: they take turns.
    assert_eq!(served.get("a"), Some(&200), "{served:?}");
    assert_eq!(served.get("b"), Some(&200), "{served:?}");
    assert_eq!(client.stats().sent, 400);
    let telemetry = client.telemetry();
    let echo = telemetry.channels().into_iter().find(|(c, _)| *c == ECHO);
    let echo = echo.expect("the window's requests are in the telemetry").1;
    assert_eq!(echo.request.count(), 400);
    assert_eq!(echo.outcomes.values().sum::<u64>(), 400);
}

fn slow_server(name: &str, max_handlers: u64, max_queued: usize) -> Node {
    small(name)
        .max_handlers(max_handlers)
        .configure(|c| c.max_queued = max_queued)
        .subscribe(
            SLOW,
            Handler::asynchronous(move |mut req| async move {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let _ = req.reply(b"slow");
            }),
        )
        .start()
        .unwrap()
}

#[test]
fn refusals_move_to_the_next_provider_or_end_the_request_when_none_is_left() {
    // Alone, a full provider's refusals end those requests as Backpressure.
    let a = slow_server("a", 1, 2);
    let client = small("client").peer(a.local_addr()).start().unwrap();
    client.wait_for_provider(SLOW, SETTLE).unwrap();
    let done = run_window(&client, SLOW, 10, 10, Duration::from_secs(5));
    let refused = |c: &Completion| {
        matches!(
            c.result,
            Err(BusError::Remote {
                code: ErrorCode::Backpressure,
                ..
            })
        )
    };
    let ok = done.values().filter(|(_, c)| c.result.is_ok()).count();
    let no = done.values().filter(|(_, c)| refused(c)).count();
    assert_eq!((ok, no), (3, 7), "{done:?}");
    // Each counted once, as a request's.
    assert_eq!(client.stats().remote_errors, 7);
    let telemetry = client.telemetry();
    let (_, slow) = telemetry
        .channels()
        .into_iter()
        .find(|(c, _)| *c == SLOW)
        .unwrap();
    assert_eq!(
        slow.outcomes.values().sum::<u64>(),
        10,
        "{:?}",
        slow.outcomes
    );

    // With a second provider, the refused ones go there instead.
    let b = slow_server("b", 64, 64);
    let client2 = small("client2")
        .peers([a.local_addr(), b.local_addr()])
        .start()
        .unwrap();
    client2.wait_for_providers(SLOW, 2, SETTLE).unwrap();
    let done = run_window(&client2, SLOW, 20, 20, Duration::from_secs(5));
    assert!(done.values().all(|(_, c)| c.result.is_ok()), "{done:?}");
}

#[test]
fn unanswered_requests_time_out_and_their_late_answers_reach_no_later_request() {
    // Holds requests [0..3] until `old` is set, and [9] until `new` is.
    let (old, new) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (o, n) = (old.clone(), new.clone());
    let server = small("server")
        .subscribe(
            HOLD,
            holding(move |p| Some(if p[0] < 3 { o.clone() } else { n.clone() })),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(HOLD, SETTLE).unwrap();
    let (first, waited) = client
        .spawn_on(0, move |bus| async move {
            let mut window = bus.request_window(HOLD, Duration::from_millis(100));
            let asked = Instant::now();
            for i in 0..3u8 {
                window.send(&[i]).unwrap();
            }
            let mut first = Vec::new();
            while let Some(c) = window.next().await {
                first.push(c);
            }
            (first, asked.elapsed())
        })
        .unwrap()
        .join_timeout(Duration::from_secs(30))
        .expect("the shard answers");
    assert_eq!(first.len(), 3);
    for c in &first {
        assert!(
            matches!(c.result, Err(BusError::Timeout { channel: HOLD, .. })),
            "{c:?}"
        );
        assert_eq!(c.took, Duration::from_millis(100));
    }
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(5),
        "the 100 ms requests ended after {waited:?}"
    );
    assert_eq!(client.stats().timeouts, 3);

    // A new request is in flight when the three late answers arrive.
    let second = client
        .spawn_on(0, |bus| async move {
            let mut window = bus.request_window(HOLD, Duration::from_secs(20));
            window.send(&[9]).unwrap();
            let second = window.next().await.expect("one in flight");
            (second, window.next().await.is_none())
        })
        .unwrap();
    wait_until("the new request is held", SETTLE, || {
        server.stats().handled >= 4
    });
    let frames_in = client.stats().frames_in;
    old.store(true, Ordering::SeqCst);
    wait_until("the late answers arrived", SETTLE, || {
        client.stats().frames_in >= frames_in + 3
    });
    new.store(true, Ordering::SeqCst);
    let (second, only) = second
        .join_timeout(Duration::from_secs(30))
        .expect("the shard answers");
    assert_eq!(second.result.as_deref(), Ok(&[9u8][..]));
    assert!(only, "nothing else came out");
}

#[test]
fn a_late_answer_to_a_reused_slots_earlier_request_is_not_taken_as_the_new_ones() {
    // Served by this node: the handler of the first request still holds
    // its answer's sender when the slot is reused, and answers then.
    let release_old = Arc::new(AtomicBool::new(false));
    let release_new = Arc::new(AtomicBool::new(false));
    let old_answered = Arc::new(AtomicBool::new(false));
    let (ro, rn, oa) = (
        release_old.clone(),
        release_new.clone(),
        old_answered.clone(),
    );
    let node = small("alone")
        .subscribe(
            HOLD,
            Handler::asynchronous(move |mut req| {
                let old = req.payload() == b"old";
                let release = if old { ro.clone() } else { rn.clone() };
                let answered = oa.clone();
                async move {
                    while !release.load(Ordering::SeqCst) {
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    let _ = req.reply(req.payload().to_vec().as_slice());
                    if old {
                        answered.store(true, Ordering::SeqCst);
                    }
                }
            }),
        )
        .start()
        .unwrap();
    node.wait_for_provider(HOLD, SETTLE).unwrap();
    let (first, second) = node
        .spawn_on(0, move |bus| async move {
            let mut window = bus.request_window(HOLD, Duration::from_secs(1));
            let old = window.send(b"old").unwrap();
            let first = window.next().await.expect("one in flight");
            assert_eq!(first.ticket, old);
            // The only slot is free again: the new request takes it.
            let new = window.send(b"new").unwrap();
            release_old.store(true, Ordering::SeqCst);
            while !old_answered.load(Ordering::SeqCst) {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            release_new.store(true, Ordering::SeqCst);
            let second = window.next().await.expect("one in flight");
            assert_eq!(second.ticket, new);
            (first, second)
        })
        .unwrap()
        .join_timeout(Duration::from_secs(30))
        .expect("the shard answers");
    assert!(
        matches!(first.result, Err(BusError::Timeout { channel: HOLD, .. })),
        "{first:?}"
    );
    assert_eq!(second.result.as_deref(), Ok(&b"new"[..]));
}

#[test]
fn a_dropped_window_forgets_its_requests_and_the_shard_goes_on() {
    let release = Arc::new(AtomicBool::new(false));
    let server = small("server")
        .subscribe(HOLD, {
            let release = release.clone();
            holding(move |_| Some(release.clone()))
        })
        .subscribe(
            ECHO,
            Handler::sync(|req| {
                let _ = req.reply(req.payload());
            }),
        )
        .start()
        .unwrap();
    // Room for 5 waiting requests only: what the dropped window leaves
    // behind would refuse the later ones with Backpressure.
    let client = small("client")
        .peer(server.local_addr())
        .configure(|c| c.max_pending = 5)
        .start()
        .unwrap();
    client.wait_for_providers(HOLD, 1, SETTLE).unwrap();
    client.wait_for_providers(ECHO, 1, SETTLE).unwrap();
    let held = client
        .spawn_on(0, |bus| async move {
            let mut window = bus.request_window(HOLD, Duration::from_secs(30));
            for i in 0..5u8 {
                window.send(&[i]).unwrap();
            }
            window.in_flight()
        })
        .unwrap()
        .join_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(held, 5);
    // The shard's request table is empty again: 5 more fit at once.
    let done = run_window(&client, ECHO, 50, 5, Duration::from_secs(10));
    assert!(done
        .values()
        .all(|(p, c)| c.result.as_deref() == Ok(&p[..])));
    // The late answers find nobody waiting; the shard serves on.
    release.store(true, Ordering::SeqCst);
    wait_until("the held handlers answered", SETTLE, || {
        server.stats().replies >= 5 + 50
    });
    let done = run_window(&client, ECHO, 50, 5, Duration::from_secs(10));
    assert!(done
        .values()
        .all(|(p, c)| c.result.as_deref() == Ok(&p[..])));
}

#[test]
fn a_node_serves_its_own_window_and_an_empty_channel_is_refused_at_send() {
    const ASYNC: Channel = Channel(83);
    let node = small("alone")
        .subscribe(
            ECHO,
            Handler::sync(|req| {
                let _ = req.reply(req.payload());
            }),
        )
        .subscribe(
            ASYNC,
            Handler::asynchronous(|mut req| async move {
                glommio::yield_if_needed().await;
                let _ = req.reply(req.payload().to_vec().as_slice());
            }),
        )
        .start()
        .unwrap();
    node.wait_for_provider(ECHO, SETTLE).unwrap();
    // A sync handler answers before `send` returns; an async one later.
    for channel in [ECHO, ASYNC] {
        let done = run_window(&node, channel, 100, 10, Duration::from_secs(10));
        assert_eq!(done.len(), 100);
        assert!(done
            .values()
            .all(|(p, c)| c.result.as_deref() == Ok(&p[..])));
    }
    let refused = node
        .spawn_on(0, |bus| async move {
            let mut window = bus.request_window(Channel(99), Duration::from_secs(1));
            let r = window.send(b"x");
            (r, window.in_flight(), window.next().await.is_none())
        })
        .unwrap()
        .join_timeout(Duration::from_secs(10))
        .unwrap();
    assert!(
        matches!(refused.0, Err(BusError::NoProvider { .. })),
        "{refused:?}"
    );
    assert_eq!((refused.1, refused.2), (0, true));
    // Counted as a request's would be.
    let telemetry = node.telemetry();
    let (_, t) = telemetry
        .channels()
        .into_iter()
        .find(|(c, _)| *c == Channel(99))
        .expect("the refused request is in the telemetry");
    assert_eq!(t.outcomes.values().sum::<u64>(), 1, "{:?}", t.outcomes);
}

#[test]
fn a_plain_thread_sends_a_batch_and_gets_each_result_in_its_place() {
    let (a, b) = (echo_server("a"), echo_server("b"));
    let client = small("client")
        .peers([a.local_addr(), b.local_addr()])
        .configure(|c| c.max_payload = 1024)
        .start()
        .unwrap();
    client.wait_for_providers(ECHO, 2, SETTLE).unwrap();
    // More than are kept in flight at once: later ones leave as earlier end.
    let n = 3 * domi::BATCH_IN_FLIGHT as u32;
    let mut payloads: Vec<Vec<u8>> = (0..n).map(|i| i.to_le_bytes().to_vec()).collect();
    payloads[7] = vec![0; 2048]; // too large: refused at its send, in its place
    let results = client
        .request_batch(ECHO, payloads.clone(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(results.len(), n as usize);
    for (i, (r, p)) in results.iter().zip(&payloads).enumerate() {
        if i == 7 {
            assert!(
                matches!(r, Err(BusError::PayloadTooLarge { len: 2048, .. })),
                "{r:?}"
            );
            continue;
        }
        let reply = r.as_ref().unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(&reply[2..], &p[..], "request {i} got another's answer");
    }
    assert_eq!(
        client.request_batch(ECHO, Vec::new(), Duration::from_secs(1)),
        Ok(Vec::new())
    );

    // A request table smaller than the batch's window: refused sends wait
    // for room and go again, none fails.
    let narrow = small("narrow")
        .peers([a.local_addr(), b.local_addr()])
        .configure(|c| c.max_pending = 50)
        .start()
        .unwrap();
    narrow.wait_for_providers(ECHO, 2, SETTLE).unwrap();
    let payloads: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let results = narrow
        .request_batch(ECHO, payloads.clone(), Duration::from_secs(10))
        .unwrap();
    for (i, (r, p)) in results.iter().zip(&payloads).enumerate() {
        let reply = r.as_ref().unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(&reply[2..], &p[..], "request {i} got another's answer");
    }
}
