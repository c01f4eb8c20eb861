//! Dead peers and hostile bytes: typed errors, failover, and one closed
//! connection while the node keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::raw::{assert_closed_within, frame_bytes, hello};
use common::*;
use domi::{BusError, Channel, Handler};
use domi_core::frame::{self, FrameKind};
use domi_core::NodeId;

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(5);

#[test]
fn a_dying_server_fails_waiting_requests_with_peer_lost_and_sends_fail_over() {
    // `hang` never replies within the test; `ok` is served by both servers.
    const HANG: Channel = Channel(51);
    let doomed = small("doomed")
        .subscribe(
            HANG,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_secs(60)).await;
                let _ = req.reply(b"never");
            }),
        )
        .subscribe(CH, Handler::sync(|req| drop(req.reply(b"doomed"))))
        .start()
        .unwrap();
    let (survivor, survived) = pong_server("survivor", CH);
    let client = small("client")
        .peers([doomed.local_addr(), survivor.local_addr()])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    client.wait_for_provider(HANG, SETTLE).unwrap();

    let waiting: Vec<_> = (0..4)
        .map(|_| client.request_async(HANG, b"", Duration::from_secs(30)))
        .collect();
    wait_until("the requests to reach the doomed server", T, || {
        doomed.stats().handled >= 4
    });
    let started = Instant::now();
    doomed.halt(); // like a crash: no drain
    for w in waiting {
        assert_eq!(
            futures_lite::future::block_on(w),
            Err(BusError::PeerLost { peer: doomed.id() })
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "PeerLost came at once"
    );

    // Every following request goes to the survivor.
    for _ in 0..20 {
        assert_eq!(client.request(CH, b"ping", T).unwrap(), b"pong");
    }
    assert_eq!(survived.load(Ordering::SeqCst), 20);
}

fn raw_connect(node: &domi::Node) -> TcpStream {
    let s = TcpStream::connect(node.local_addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

#[test]
fn garbage_and_huge_lengths_close_only_that_connection() {
    let (server, _) = pong_server("server", CH);
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();

    // Garbage before any handshake.
    let mut g = raw_connect(&server);
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_closed_within(g, T);

    // A valid handshake, then a frame declaring a 4 GiB payload.
    let mut h = raw_connect(&server);
    h.write_all(&hello("default")).unwrap();
    let mut huge = frame_bytes(FrameKind::Request, CH, NodeId::new(999).unwrap(), 1, b"");
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    h.write_all(&huge).unwrap();
    assert_closed_within(h, T);

    // A user frame to a reserved channel after a valid handshake.
    let mut r = raw_connect(&server);
    r.write_all(&hello("default")).unwrap();
    let bad = frame_bytes(
        FrameKind::Request,
        Channel(65501),
        NodeId::new(999).unwrap(),
        1,
        b"x",
    );
    r.write_all(&bad).unwrap();
    assert_closed_within(r, T);

    // A handshake for another cluster is refused.
    let mut w = raw_connect(&server);
    w.write_all(&hello("elsewhere")).unwrap();
    assert_closed_within(w, T);

    wait_until("the bad closes to be counted", T, || {
        server.stats().bad_closes >= 3
    });
    // The node keeps serving its real peer.
    for _ in 0..10 {
        assert_eq!(client.request(CH, b"ping", T).unwrap(), b"pong");
    }
}

#[test]
fn a_raw_client_with_a_valid_handshake_gets_replies() {
    let (server, _) = pong_server("server", CH);
    let mut s = raw_connect(&server);
    s.write_all(&hello("default")).unwrap();
    let req = frame_bytes(
        FrameKind::Request,
        CH,
        NodeId::new(999).unwrap(),
        42,
        b"ping",
    );
    s.write_all(&req).unwrap();
    // Expect HELLO_ACK then the reply.
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let deadline = Instant::now() + T;
    while frames.len() < 2 && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(frame::Decoded::Frame { frame, consumed }) = frame::decode(&buf, 1 << 20) {
            frames.push((frame.meta, frame.payload.to_vec()));
            buf.drain(..consumed);
        }
    }
    assert_eq!(frames[0].0.channel, Channel::HELLO_ACK);
    assert_eq!(frames[1].0.kind, FrameKind::Reply);
    assert_eq!(frames[1].0.correlation, 42);
    assert_eq!(frames[1].1, b"pong");
}

#[test]
fn requests_to_a_stopped_node_are_typed() {
    let (server, _) = pong_server("server", CH);
    server.stop();
    assert_eq!(server.request(CH, b"", T), Err(BusError::ShuttingDown));
}
