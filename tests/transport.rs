//! The transport's own guarantees: shards share the port and the handler
//! table, frames batch into few writes, memory is not committed on a peer's
//! say-so, answers only count on the connection that asked, silent peers
//! fail their waiters with `PeerLost`, and no timeout value can panic a shard.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{assert_closed_within, frame_bytes, hello, read_frame, silent_server};
use common::*;
use domi::{BusError, Channel, Handler, Node, NodeId};
use domi_core::frame::{FrameKind, HEADER_LEN};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(5);

/// Per-shard counters of `node`.
fn shard_stats(node: &Node) -> Vec<domi::Snapshot> {
    (0..node.shards())
        .map(|i| {
            node.spawn_on(i, |bus| async move { bus.counters() })
                .unwrap()
                .join()
                .unwrap()
        })
        .collect()
}

#[test]
fn two_shards_share_the_port_and_see_runtime_subscriptions() {
    let (server, _) = {
        let handled = Arc::new(AtomicUsize::new(0));
        let h = handled.clone();
        let node = small("server")
            .shards(2)
            .subscribe(
                CH,
                Handler::sync(move |req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let _ = req.reply(b"pong");
                }),
            )
            .start()
            .unwrap();
        (node, handled)
    };
    // SO_REUSEPORT spreads connections over the shards by hash: add clients
    // until both server shards have served one (2^-31 odds of needing more).
    let mut clients = Vec::new();
    for i in 0..32 {
        let c = small(&format!("client-{i}"))
            .peer(server.local_addr())
            .start()
            .unwrap();
        c.wait_for_provider(CH, SETTLE).unwrap();
        assert_eq!(c.request(CH, b"ping", T).unwrap(), b"pong");
        clients.push(c);
        if shard_stats(&server).iter().all(|s| s.handled > 0) {
            break;
        }
    }
    let per_shard = shard_stats(&server);
    assert!(
        per_shard.iter().all(|s| s.handled > 0),
        "both shards accept on the port: {per_shard:?}"
    );

    // A channel subscribed at run time is served by every shard's copy.
    const LATE: Channel = Channel(77);
    server
        .subscribe(LATE, Handler::sync(|req| drop(req.reply(b"late"))))
        .unwrap();
    for c in &clients {
        wait_until("the late channel to be learned", SETTLE, || {
            c.peers().providers(LATE).contains(&server.id())
        });
        assert_eq!(c.request(LATE, b"", T).unwrap(), b"late");
    }
    let before: u64 = shard_stats(&server).iter().map(|s| s.handled).sum();
    assert!(server.unsubscribe(LATE));
    for c in &clients {
        wait_until("the unsubscription to be learned", SETTLE, || {
            !c.peers().providers(LATE).contains(&server.id())
        });
        assert_eq!(
            c.request(LATE, b"", T),
            Err(BusError::NoProvider { channel: LATE })
        );
    }
    let after: u64 = shard_stats(&server).iter().map(|s| s.handled).sum();
    assert_eq!(before, after);
}

#[test]
fn frames_queued_in_one_turn_leave_in_few_writes() {
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    let server = small("sink")
        .subscribe(
            CH,
            Handler::sync(move |_| {
                r.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .start()
        .unwrap();
    let client = small("burst").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    const N: usize = 10_000;
    client
        .spawn_on(0, |bus| async move {
            for _ in 0..N {
                bus.notify(CH, &[7u8; 64]).unwrap();
            }
        })
        .unwrap()
        .join()
        .unwrap();
    wait_until("every message to arrive", T, || {
        received.load(Ordering::Relaxed) == N
    });
    let s = client.stats();
    assert!(s.frames_out >= N as u64);
    assert!(
        s.writes * 100 <= s.frames_out,
        "{} frames went out in {} writes",
        s.frames_out,
        s.writes
    );
}

#[test]
fn a_large_frame_before_the_handshake_is_refused_without_buffering_it() {
    let (server, _) = pong_server("guarded", CH);
    let before = server.stats().closed_malformed;
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    // A HELLO that declares 1 MiB: far over the handshake limit.
    let mut header = frame_bytes(
        FrameKind::Control,
        Channel::HELLO,
        NodeId::new(999).unwrap(),
        0,
        &[],
    );
    header[4..8].copy_from_slice(&(1u32 << 20).to_le_bytes());
    s.write_all(&header[..HEADER_LEN]).unwrap();
    assert_closed_within(s, T);
    wait_until("the close to be counted", T, || {
        server.stats().closed_malformed > before
    });
}

#[test]
fn answers_count_only_on_the_connection_that_asked() {
    const SLOW: Channel = Channel(52);
    let server = small("slow")
        .subscribe(
            SLOW,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_millis(300)).await;
                let _ = req.reply(b"real");
            }),
        )
        .start()
        .unwrap();
    let client = small("asker").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(SLOW, SETTLE).unwrap();
    let waiting = client.request_async(SLOW, b"", T);
    wait_until("the request to be handled", T, || {
        server.stats().handled >= 1
    });

    // A stranger connects to the client and answers every correlation id.
    let mut forger = TcpStream::connect(client.local_addr()).unwrap();
    forger.write_all(&hello("default")).unwrap();
    let (ack, _) = read_frame(&mut forger).unwrap();
    assert_eq!(ack.channel, Channel::HELLO_ACK);
    let mut forged = Vec::new();
    for corr in 1..=2_000u64 {
        forged.extend(frame_bytes(
            FrameKind::Reply,
            Channel(0),
            NodeId::new(999).unwrap(),
            corr,
            b"forged",
        ));
    }
    forger.write_all(&forged).unwrap();
    assert_eq!(futures_lite::future::block_on(waiting).unwrap(), b"real");
}

#[test]
fn a_frame_claiming_another_source_closes_its_connection() {
    let (server, handled) = pong_server("strict", CH);
    let before = server.stats().closed_protocol;
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(&hello("default")).unwrap();
    read_frame(&mut s).unwrap();
    s.write_all(&frame_bytes(
        FrameKind::OneWay,
        CH,
        NodeId::new(5).unwrap(),
        0,
        b"spoof",
    ))
    .unwrap();
    assert_closed_within(s, T);
    wait_until("the close to be counted", T, || {
        server.stats().closed_protocol > before
    });
    assert_eq!(handled.load(Ordering::SeqCst), 0);
}

#[test]
fn a_peer_that_goes_silent_fails_waiting_requests_with_peer_lost() {
    let silent = silent_server(NodeId::new(999).unwrap(), vec![CH]);
    // The static list's own prober would also notice; make it patient so
    // this shows the shard's heartbeats at work (as with etcd membership).
    let client = small("waiter")
        .peer(silent)
        .static_config(|c| c.silence = Duration::from_secs(120))
        .configure(|c| {
            c.timeouts.heartbeat = Duration::from_millis(100);
            c.timeouts.silence = Duration::from_millis(600);
        })
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    let started = Instant::now();
    let r = client.request(CH, b"anyone?", Duration::from_secs(30));
    assert_eq!(
        r,
        Err(BusError::PeerLost {
            peer: NodeId::new(999).unwrap()
        })
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "silence noticed after {:?}",
        started.elapsed()
    );
    assert!(client.stats().closed_silent >= 1);
}

#[test]
fn no_timeout_value_panics_and_dropped_requests_free_their_slot() {
    const HANG: Channel = Channel(53);
    let server = small("mixed")
        .subscribe(CH, Handler::sync(|req| drop(req.reply(b"pong"))))
        .subscribe(
            HANG,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_secs(60)).await;
                let _ = req.reply(b"late");
            }),
        )
        .start()
        .unwrap();
    let client = small("edgy")
        .peer(server.local_addr())
        .configure(|c| c.max_pending = 1)
        .start()
        .unwrap();
    client.wait_for_provider(CH, Duration::MAX).unwrap();
    client.wait_for_provider(HANG, SETTLE).unwrap();
    assert_eq!(client.request(CH, b"", Duration::MAX).unwrap(), b"pong");

    let outcome = client
        .spawn_on(0, |bus| async move {
            // Start a request that will not be answered, then give up on it.
            let abandoned = bus.request(HANG, b"", Duration::MAX);
            let first = futures_lite::future::poll_once(Box::pin(abandoned)).await;
            assert!(first.is_none(), "still waiting");
            // Its slot in the (size 1) request table is free again.
            bus.request(CH, b"", Duration::MAX).await
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(outcome.unwrap(), b"pong");
}
