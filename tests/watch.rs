//! Stream consumers (`Node::watch`): a channel's messages in a bounded
//! queue consumed from a tokio runtime or a plain thread; a slow consumer
//! holds back its own channel only (requests refused with `Backpressure`
//! fail over, one-way messages are dropped), per-sender order is kept,
//! requests are answered from any thread, and dropping the watch
//! unsubscribes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{burst, pong_server, small, test_logs, wait_until, SETTLE};
use domi::{BusError, Channel, ErrorCode, ReplyError};
use futures_lite::StreamExt;

const WATCHED: Channel = Channel(70);
const OTHER: Channel = Channel(71);
const T: Duration = Duration::from_secs(5);

fn is_backpressure(r: &Result<Vec<u8>, BusError>) -> bool {
    matches!(
        r,
        Err(BusError::Remote {
            code: ErrorCode::Backpressure,
            ..
        })
    )
}

#[test]
fn a_slow_tokio_consumer_holds_back_its_channel_only() {
    test_logs();
    let (server, _) = pong_server("server", OTHER);
    let watch = server.watch(WATCHED, 4).unwrap();
    assert_eq!(watch.capacity(), 4);

    // The consumer: a tokio runtime taking 20 ms per message.
    let consumed = Arc::new(AtomicUsize::new(0));
    let c = consumed.clone();
    let (ended_tx, ended_rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut watch = watch;
            while let Some(mut d) = watch.next().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if d.expects_reply() {
                    let _ = d.reply(b"watched");
                }
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
        let _ = ended_tx.send(());
    });

    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(WATCHED, SETTLE).unwrap();
    client.wait_for_provider(OTHER, SETTLE).unwrap();

    // A burst far beyond the queue: the consumer gets a few, the rest are
    // refused at once with Backpressure (the only provider).
    let (results, _) = burst(&client, 0, WATCHED, 30, T);
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| is_backpressure(r)).count();
    assert_eq!(ok + refused, 30, "{results:?}");
    assert!(ok >= 4, "the queue's worth was taken: {results:?}");
    assert!(refused >= 15, "the rest was refused: {results:?}");
    for r in results.iter().flatten() {
        assert_eq!(r, b"watched");
    }
    assert!(server.stats().watch_refused >= refused as u64);

    // One-way messages keep the queue full while another channel of the
    // same node is asked: every request there is answered promptly.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let (client, flooding) = (client.clone(), flooding.clone());
        thread::spawn(move || {
            let mut sent = 0u64;
            while flooding.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    if client.notify(WATCHED, b"flood").is_ok() {
                        sent += 1;
                    }
                }
                thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    wait_until("the flood to overflow the watch", SETTLE, || {
        server.stats().watch_dropped > 0
    });
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let started = Instant::now();
        assert_eq!(client.request(OTHER, b"ping", T).unwrap(), b"pong");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "another channel was held back: {slowest:?}"
    );

    // With a second provider, requests the full watch refuses go there:
    // the client sees no error at all.
    let (second, handled) = pong_server("second", WATCHED);
    let client2 = small("client2")
        .peers([server.local_addr(), second.local_addr()])
        .start()
        .unwrap();
    client2.wait_for_providers(WATCHED, 2, SETTLE).unwrap();
    let refused_before = server.stats().watch_refused;
    let (results, _) = burst(&client2, 0, WATCHED, 40, T);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(handled.load(Ordering::SeqCst) > 0);
    assert!(
        server.stats().watch_refused > refused_before,
        "the full watch refused some (they failed over)"
    );

    flooding.store(false, Ordering::SeqCst);
    assert!(flood.join().unwrap() > 0);
    let s = server.stats();
    assert!(consumed.load(Ordering::SeqCst) > 0);
    assert!(s.watch_dropped > 0, "{s:?}");

    // The node stops: the stream ends once the queue is drained.
    server.stop();
    ended_rx
        .recv_timeout(SETTLE)
        .expect("the stream ended when the node stopped");
}

#[test]
fn a_plain_thread_iterates_and_answers_from_other_threads() {
    test_logs();
    let server = small("server")
        .configure(|c| c.max_payload = 1024)
        .start()
        .unwrap();
    let watch = server.watch(WATCHED, 64).unwrap();
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    let consumer = thread::spawn(move || {
        let mut answering = Vec::new();
        for mut d in watch {
            match d.payload() {
                b"drop" => drop(d),
                b"error" => {
                    d.reply_error(409, "out of stock").unwrap();
                    let again = d.reply(b"late");
                    seen_tx.send(("error", again)).unwrap();
                }
                b"big" => {
                    let too_large = d.reply(&[0; 1025]);
                    seen_tx.send(("big", too_large)).unwrap();
                    d.reply(b"small").unwrap();
                }
                b"one-way" => {
                    assert!(!d.expects_reply());
                    seen_tx.send(("one-way", d.reply(b"x"))).unwrap();
                }
                _ => {
                    // Answered from yet another thread.
                    answering.push(thread::spawn(move || {
                        let echo = [b"re: ".as_slice(), d.payload()].concat();
                        d.reply(&echo).unwrap();
                    }));
                }
            }
        }
        for t in answering {
            t.join().unwrap();
        }
    });

    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(WATCHED, SETTLE).unwrap();
    assert_eq!(client.request(WATCHED, b"hello", T).unwrap(), b"re: hello");
    assert!(matches!(
        client.request(WATCHED, b"drop", T),
        Err(BusError::Remote {
            code: ErrorCode::NoReply,
            ..
        })
    ));
    match client.request(WATCHED, b"error", T) {
        Err(BusError::Application { code, message, .. }) => {
            assert_eq!((code, message.as_str()), (409, "out of stock"));
        }
        other => panic!("expected an application error, got {other:?}"),
    }
    assert_eq!(
        seen_rx.recv_timeout(T).unwrap(),
        ("error", Err(ReplyError::AlreadyReplied))
    );
    assert_eq!(client.request(WATCHED, b"big", T).unwrap(), b"small");
    assert_eq!(
        seen_rx.recv_timeout(T).unwrap(),
        (
            "big",
            Err(ReplyError::TooLarge {
                len: 1025,
                max: 1024
            })
        )
    );
    client.notify(WATCHED, b"one-way").unwrap();
    assert_eq!(
        seen_rx.recv_timeout(T).unwrap(),
        ("one-way", Err(ReplyError::NotExpected))
    );
    // This node's own request reaches its watch too.
    assert_eq!(server.request(WATCHED, b"self", T).unwrap(), b"re: self");

    // The node stops: the iterator ends.
    server.stop();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = done_tx.send(consumer.join().is_ok());
    });
    assert_eq!(done_rx.recv_timeout(SETTLE), Ok(true));
}

#[test]
fn one_senders_messages_arrive_in_order() {
    const PER_SHARD: u32 = 500;
    let server = small("server").shards(2).start().unwrap();
    let watch = server.watch(WATCHED, 2 * PER_SHARD as usize).unwrap();
    let client = small("client")
        .shards(2)
        .peer(server.local_addr())
        .start()
        .unwrap();
    client.wait_for_provider(WATCHED, SETTLE).unwrap();
    // Each shard of the client is one sender: its own connection.
    let senders: Vec<_> = (0..2u32)
        .map(|shard| {
            client
                .spawn_on(shard as usize, move |bus| async move {
                    for seq in 0..PER_SHARD {
                        let mut m = shard.to_le_bytes().to_vec();
                        m.extend_from_slice(&seq.to_le_bytes());
                        bus.notify(WATCHED, &m).unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    for s in senders {
        s.join_timeout(SETTLE).expect("the sender finished");
    }
    let mut next = [0u32; 2];
    wait_until("every message to arrive", SETTLE, || {
        while let Some(d) = watch.try_recv() {
            let p = d.payload();
            let shard = u32::from_le_bytes(p[..4].try_into().unwrap()) as usize;
            let seq = u32::from_le_bytes(p[4..].try_into().unwrap());
            assert_eq!(seq, next[shard], "sender {shard} out of order");
            next[shard] += 1;
        }
        next == [PER_SHARD; 2]
    });
    assert_eq!(server.stats().watch_dropped, 0);
}

#[test]
fn dropping_the_watch_unsubscribes_and_answers_what_it_held() {
    let server = small("server").start().unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();

    // A newer watch replaces an older one; dropping the older one leaves
    // the newer one serving.
    let older = server.watch(WATCHED, 4).unwrap();
    let newer = server.watch(WATCHED, 4).unwrap();
    drop(older);
    client.wait_for_provider(WATCHED, SETTLE).unwrap();
    let asking = {
        let client = client.clone();
        thread::spawn(move || client.request(WATCHED, b"held", T))
    };
    wait_until("the request to be queued", SETTLE, || newer.len() == 1);
    assert!(server.info().channels.contains(&WATCHED));

    // Dropping it: the request it held is answered at once, and the node
    // stops serving the channel.
    drop(newer);
    assert!(matches!(
        asking.join().unwrap(),
        Err(BusError::Remote {
            code: ErrorCode::NoReply,
            ..
        })
    ));
    assert!(!server.info().channels.contains(&WATCHED));
    wait_until("the client to see no provider", SETTLE, || {
        matches!(
            client.request(WATCHED, b"x", T),
            Err(BusError::NoProvider { .. })
        )
    });
}

#[test]
fn a_watch_refuses_reserved_channels_and_stopped_nodes() {
    let server = small("server").start().unwrap();
    assert!(matches!(
        server.watch(Channel(65_500), 4),
        Err(BusError::ReservedChannel { .. })
    ));
    server.stop();
    assert!(matches!(
        server.watch(WATCHED, 4),
        Err(BusError::ShuttingDown)
    ));
}
