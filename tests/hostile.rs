//! Hostile input and faults: slow or silent connections, floods and stalled
//! peers. The bus keeps serving its real peers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::procs::{http, metric, rss_bytes, Server};
use common::raw::{assert_closed_within, frame_bytes, hello};
use common::*;
use domi::frame::FrameKind;
use domi::{BusError, Channel, Handler, NodeId};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(10);

#[test]
fn silent_handshakes_and_half_frames_are_closed_after_their_timeouts() {
    let server = small("server")
        .configure(|c| {
            c.timeouts.handshake = Duration::from_millis(300);
            c.timeouts.frame = Duration::from_millis(300);
        })
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    // Connects and says nothing.
    assert_closed_within(
        TcpStream::connect(server.local_addr()).unwrap(),
        Duration::from_millis(300),
    );
    // Handshakes, then sends half a header and stalls.
    let mut half = TcpStream::connect(server.local_addr()).unwrap();
    half.write_all(&hello("default")).unwrap();
    half.write_all(&[0x44, 0x4D, domi::frame::PROTOCOL_VERSION, 1, 9, 0])
        .unwrap();
    assert_closed_within(half, Duration::from_millis(300));
    wait_until("the timeouts to be counted", T, || {
        server.stats().closed_timeout >= 2
    });
    let metrics = server.stats();
    assert!(metrics.bad_closes >= 2);
}

#[test]
fn a_flood_of_connections_is_refused_while_real_peers_keep_working() {
    let server = small("limited")
        .configure(|c| c.max_connections = 40)
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    // An existing peer: its connection is open before the flood starts.
    assert_eq!(client.request(CH, b"x", T).unwrap(), b"pong");
    let addr = server.local_addr();
    let flood: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for _ in 0..250 {
                    if let Ok(s) = TcpStream::connect(addr) {
                        kept.push(s);
                        if kept.len() > 20 {
                            kept.remove(0);
                        }
                    }
                }
            })
        })
        .collect();
    // The real peer is served throughout.
    for _ in 0..200 {
        assert_eq!(client.request(CH, b"x", T).unwrap(), b"pong");
    }
    for f in flood {
        f.join().unwrap();
    }
    wait_until("refusals to be counted", T, || {
        server.stats().refused_connections > 1_000
    });
    for _ in 0..20 {
        assert_eq!(client.request(CH, b"x", T).unwrap(), b"pong");
    }
}

#[test]
fn a_silent_peer_is_routed_around_and_used_again_when_it_answers() {
    // Two servers as processes; SIGSTOP freezes one: its sockets stay open but
    // nothing answers, which is what a partitioned peer looks like.
    let a = Server::start("frozen", 901);
    let b = Server::start("alive", 902);
    let client = small("client").peers([a.addr, b.addr]).start().unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    for _ in 0..10 {
        client.request(CH, b"x", T).unwrap();
    }
    a.signal("STOP");
    let frozen_at = Instant::now();
    // Requests go on; some wait on the frozen peer until it is declared
    // silent (2 s). Once the client's table has left it out, every request
    // goes to the live peer.
    let mut routed_around: Option<Instant> = None;
    let mut failed_late = 0;
    let mut after = 0;
    while routed_around.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(20),
            "the frozen peer never left the client's rotation"
        );
        if routed_around.is_none() && client.peers().providers(CH).len() == 1 {
            routed_around = Some(Instant::now());
        }
        let started_after = routed_around.is_some();
        match client.request(CH, b"x", Duration::from_secs(4)) {
            Ok(_) => after += usize::from(started_after),
            Err(BusError::PeerLost { .. }) | Err(BusError::Timeout { .. }) => {
                failed_late += usize::from(started_after);
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(
        failed_late, 0,
        "after the frozen peer left the rotation every request goes to the live peer"
    );
    assert!(after > 0);
    a.signal("CONT");
    wait_until(
        "the frozen peer to be back in rotation",
        Duration::from_secs(15),
        || client.peers().providers(CH).len() == 2,
    );
    drop(a);
}

#[test]
fn offering_a_gibibyte_to_a_stalled_peer_keeps_the_senders_memory_bounded() {
    // The receiver is another process, frozen (SIGSTOP) once connected: it
    // reads nothing, the kernel buffers fill, and the sender's write queue is
    // all that is left to grow. (A busy handler no longer stops a node from
    // reading: see tests/overload.rs.)
    let mut stalled = Server::start_with("stalled", &["--node-id", "903"]);
    const MAX_WRITE_QUEUE: usize = 8 << 20;
    const BODY: usize = 16 * 1024;
    const OFFER: u64 = 1 << 30;
    let sender = small("sender")
        .configure(|c| c.max_write_queue = MAX_WRITE_QUEUE)
        .max_payload(1 << 20)
        .peer(stalled.addr)
        .start()
        .unwrap();
    sender.wait_for_provider(CH, SETTLE).unwrap();
    stalled.signal("STOP");
    let before = rss_bytes("self");
    let (accepted, pushed_back) = sender
        .spawn_on(0, |bus| async move {
            let body = vec![7u8; BODY];
            let (mut accepted, mut pushed_back) = (0u64, 0u64);
            let mut offered = 0u64;
            while offered < OFFER {
                offered += BODY as u64;
                match bus.notify(CH, &body) {
                    Ok(()) => accepted += 1,
                    Err(BusError::Backpressure { .. }) => pushed_back += 1,
                    Err(e) => panic!("unexpected {e:?}"),
                }
                // Let the connection write between offers.
                futures_lite::future::yield_now().await;
            }
            (accepted, pushed_back)
        })
        .unwrap()
        .join_timeout(Duration::from_secs(120))
        .expect("the sender finishes offering");
    assert_eq!((accepted + pushed_back) * BODY as u64, OFFER);
    let grown = rss_bytes("self").saturating_sub(before);
    let bound = 4 * MAX_WRITE_QUEUE as u64 + (32 << 20);
    assert!(
        pushed_back > 0,
        "1 GiB offered to a stalled peer and never pushed back"
    );
    assert!(
        grown < bound,
        "the sender's memory grew by {} MiB (bound {} MiB); {} MiB accepted",
        grown >> 20,
        bound >> 20,
        (accepted * BODY as u64) >> 20
    );
    assert!(sender.stats().backpressure >= pushed_back);
    assert!(
        stalled.child.try_wait().unwrap().is_none(),
        "the stalled receiver is still alive"
    );
}

#[test]
fn requests_beyond_max_pending_get_backpressure_at_once() {
    // A provider that never answers keeps every request pending.
    let silent = Server::start_with("silent", &["--node-id", "904", "--delay-ms", "600000"]);
    const MAX_PENDING: usize = 4;
    let client = small("client")
        .configure(|c| c.max_pending = MAX_PENDING)
        .peer(silent.addr)
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    let (over, over_took, waited, after) = client
        .spawn_on(0, |bus| async move {
            let short = Duration::from_millis(500);
            let mut pending: Vec<_> = (0..MAX_PENDING)
                .map(|_| Box::pin(bus.request(CH, b"x", short)))
                .collect();
            // Polling once sends each request and registers its waiter.
            for p in &mut pending {
                assert!(futures_lite::future::poll_once(p.as_mut()).await.is_none());
            }
            let t = Instant::now();
            let over = bus.request(CH, b"x", Duration::from_secs(30)).await;
            let over_took = t.elapsed();
            let mut waited = Vec::new();
            for p in pending {
                waited.push(p.await);
            }
            // The bound counts requests in flight: with them gone, a new one
            // is sent again (and times out: the provider never answers).
            let after = bus.request(CH, b"x", short).await;
            (over, over_took, waited, after)
        })
        .unwrap()
        .join_timeout(T)
        .expect("the requests finish");
    assert!(
        matches!(over, Err(BusError::Backpressure { .. })),
        "request over max_pending: {over:?}"
    );
    assert!(
        over_took < Duration::from_millis(200),
        "backpressure came after {over_took:?}"
    );
    assert_eq!(waited.len(), MAX_PENDING);
    for r in waited {
        assert!(matches!(r, Err(BusError::Timeout { .. })), "{r:?}");
    }
    assert!(matches!(after, Err(BusError::Timeout { .. })), "{after:?}");
}

/// A raw connection that completed its handshake, then sends `frame`; the
/// node must close it.
fn handshake_then(addr: std::net::SocketAddr, frame: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&hello("default")).unwrap();
    s.write_all(frame).unwrap();
    assert_closed_within(s, Duration::from_secs(2));
}

#[test]
fn bad_frames_after_the_handshake_are_counted_by_reason() {
    let server = small("strict")
        .http("127.0.0.1:0".parse().unwrap())
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let good = frame_bytes(FrameKind::Request, CH, NodeId::new(999).unwrap(), 1, b"x");
    // A well-formed request gets its reply: the raw peer itself is fine.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(&hello("default")).unwrap();
        s.write_all(&good).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"pong") {
            let n = s.read(&mut buf).expect("a reply");
            assert!(n > 0, "closed before the reply");
            got.extend_from_slice(&buf[..n]);
        }
        // A clean close (FIN, everything read) is not a bad close.
        s.shutdown(std::net::Shutdown::Write).unwrap();
        while s.read(&mut buf).expect("the node closes too") > 0 {}
    }
    assert_eq!(server.stats().handled, 1);

    let mut bad_magic = good.clone();
    bad_magic[0..2].copy_from_slice(&0xBEEFu16.to_le_bytes());
    handshake_then(addr, &bad_magic);
    wait_until("the bad magic to be counted", T, || {
        server.stats().closed_malformed == 1
    });

    let mut unknown_kind = good.clone();
    unknown_kind[3] = 9;
    handshake_then(addr, &unknown_kind);
    wait_until("the unknown kind to be counted", T, || {
        server.stats().closed_malformed == 2
    });

    let reserved = frame_bytes(
        FrameKind::Request,
        Channel(65501),
        NodeId::new(999).unwrap(),
        1,
        b"x",
    );
    handshake_then(addr, &reserved);
    wait_until("the protocol violation to be counted", T, || {
        server.stats().closed_protocol == 1
    });

    let s = server.stats();
    assert_eq!(s.closed_malformed, 2, "{s:?}");
    assert_eq!(s.closed_protocol, 1, "{s:?}");
    assert_eq!(s.closed_refused, 0, "{s:?}");
    assert_eq!(s.closed_timeout, 0, "{s:?}");
    assert_eq!(s.bad_closes, 3, "{s:?}");

    let (code, _, text) = http(server.http_addr().unwrap(), "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "domi_closed_malformed_total"), Some(2.0));
    assert_eq!(metric(&text, "domi_closed_protocol_total"), Some(1.0));
    assert_eq!(metric(&text, "domi_bad_closes_total"), Some(3.0));
    // The node still serves.
    assert_eq!(server.request(CH, b"x", T).unwrap(), b"pong");
}
