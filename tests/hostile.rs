//! Hostile input and faults: slow or silent connections, floods, stalled
//! peers, and garbage at the admin port. The bus keeps serving its real peers.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::procs::{http, Server};
use common::raw::{assert_closed_within, hello};
use common::*;
use domi::{BusError, Channel, Handler};

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
    half.write_all(&[0x44, 0x4D, 1, 1, 9, 0]).unwrap();
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
    // Requests go on; some wait on the frozen peer until it is declared silent.
    let mut failed_late = 0;
    while frozen_at.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        match client.request(CH, b"x", Duration::from_secs(4)) {
            Ok(_) => {}
            Err(BusError::PeerLost { .. }) | Err(BusError::Timeout { .. }) => {
                if t > frozen_at + Duration::from_secs(3) {
                    failed_late += 1;
                }
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(
        failed_late, 0,
        "after the silence timeout every request goes to the live peer"
    );
    a.signal("CONT");
    wait_until(
        "the frozen peer to be back in rotation",
        Duration::from_secs(15),
        || client.peers().providers(CH).len() == 2,
    );
    drop(a);
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn pushing_a_gibibyte_at_a_stalled_peer_keeps_memory_bounded() {
    // The peer's handlers never finish: after `max_handlers` it stops reading.
    let stalled = small("stalled")
        .configure(|c| c.max_handlers = 64)
        .subscribe(
            CH,
            Handler::asynchronous(|_req| async move {
                glommio::timer::sleep(Duration::from_secs(600)).await;
            }),
        )
        .start()
        .unwrap();
    let sender = small("sender")
        .configure(|c| c.max_write_queue = 8 << 20)
        .max_payload(1 << 20)
        .peer(stalled.local_addr())
        .start()
        .unwrap();
    sender.wait_for_provider(CH, SETTLE).unwrap();
    let before = rss_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, pushed_back) = sender
        .spawn_on(0, |bus| async move {
            let body = vec![7u8; 16 * 1024];
            let (mut ok, mut pushed_back) = (0u64, 0u64);
            for _ in 0..65_536 {
                // 65,536 × 16 KiB = 1 GiB
                match bus.notify(CH, &body) {
                    Ok(()) => ok += 1,
                    Err(BusError::Backpressure { .. }) => {
                        pushed_back += 1;
                        futures_lite::future::yield_now().await;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            (ok, pushed_back)
        })
        .unwrap()
        .join_timeout(Duration::from_secs(60))
        .expect("the sender finishes");
    stop.store(true, Ordering::Relaxed);
    let grown = rss_bytes().saturating_sub(before);
    assert!(pushed_back > 0, "the sender was pushed back");
    assert!(
        ok * 16 * 1024 < 256 << 20,
        "only a bounded amount was accepted: {ok} messages"
    );
    assert!(grown < 256 << 20, "memory grew by {} MiB", grown >> 20);
    assert!(sender.stats().backpressure > 0);
}

#[test]
fn garbage_huge_and_slow_admin_clients_do_not_stop_the_admin_or_the_bus() {
    let node = domi::Node::builder("admin")
        .shards(1)
        .small()
        .http("127.0.0.1:0".parse().unwrap())
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let addr = node.http_addr().unwrap();
    // Garbage.
    let mut g = TcpStream::connect(addr).unwrap();
    g.write_all(b"\x00\x01\x02 NOT HTTP \r\n\r\n").unwrap();
    // A huge header.
    let mut h = TcpStream::connect(addr).unwrap();
    let big = format!(
        "GET /status HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = h.write_all(big.as_bytes());
    // A slow client that never finishes its request.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /sta").unwrap();
    // A huge body on a POST.
    let mut body = TcpStream::connect(addr).unwrap();
    let _ = body.write_all(
        format!(
            "POST /pause HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            1u64 << 40
        )
        .as_bytes(),
    );
    // The admin still answers quickly, and the bus still serves.
    let t = Instant::now();
    assert_eq!(http(addr, "GET", "/health", None).0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "admin answered after {:?}",
        t.elapsed()
    );
    assert_eq!(node.request(CH, b"x", T).unwrap(), b"pong");
    drop((g, h, slow, body));
}
