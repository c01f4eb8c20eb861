//! Optional bus authentication with a cluster secret: peers that know it talk,
//! peers that do not are refused, and the secret never crosses the wire.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use domi::{BusError, Channel, ConfigError, Handler};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(5);
const SECRET: &[u8] = b"0123456789abcdef-cluster";

fn secured(name: &str, secret: &[u8]) -> domi::NodeBuilder {
    small(name).cluster_secret(secret.to_vec())
}

#[test]
fn nodes_sharing_the_secret_talk() {
    let server = secured("server", SECRET)
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let client = secured("client", SECRET)
        .peer(server.local_addr())
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    for _ in 0..50 {
        assert_eq!(client.request(CH, b"ping", T).unwrap(), b"pong");
    }
    assert_eq!(server.stats().closed_refused, 0);
}

#[test]
fn peers_without_the_secret_or_with_another_are_refused() {
    let server = secured("server", SECRET)
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let plain = small("plain").peer(server.local_addr()).start().unwrap();
    let wrong = secured("wrong", b"another-secret-of-16+")
        .peer(server.local_addr())
        .start()
        .unwrap();
    for n in [&plain, &wrong] {
        assert_eq!(
            n.wait_for_provider(CH, Duration::from_millis(700)),
            Err(BusError::NoProvider { channel: CH })
        );
    }
    wait_until("both refusals to be counted", T, || {
        server.stats().closed_refused >= 2
    });
    // A secured server is refused by a plain client too.
    let plain_server = small("plain-server")
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let secured_client = secured("c", SECRET)
        .peer(plain_server.local_addr())
        .start()
        .unwrap();
    assert_eq!(
        secured_client.wait_for_provider(CH, Duration::from_millis(700)),
        Err(BusError::NoProvider { channel: CH })
    );
}

#[test]
fn a_raw_hello_without_a_proof_gets_a_refusal_and_a_close() {
    use domi::frame::{self, FrameKind};
    let server = secured("server", SECRET).start().unwrap();
    let hello = common::raw::hello("default");
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&hello).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let Ok(frame::Decoded::Frame { frame, .. }) = frame::decode(&got, 1 << 20) else {
        panic!("expected an error frame, got {got:?}");
    };
    assert_eq!(frame.meta.kind, FrameKind::Error);
    assert_eq!(
        domi::ErrorCode::from_payload(frame.payload),
        domi::ErrorCode::Refused
    );
    assert!(
        !got.windows(SECRET.len()).any(|w| w == SECRET),
        "the secret never crosses the wire"
    );
}

#[test]
fn a_short_secret_is_a_configuration_error() {
    let r = small("weak").cluster_secret(b"short".to_vec()).start();
    assert!(matches!(
        r,
        Err(domi::StartError::Core(domi_core::StartError::Config(
            ConfigError::WeakSecret
        )))
    ));
}

#[test]
fn a_client_proof_made_with_another_secret_is_refused_by_the_server() {
    use common::raw::{frame_bytes, read_frame};
    use domi::frame::FrameKind;
    use domi::{NodeId, NodeInfo, NodeState};
    use domi_core::auth;

    let (served, handled) = {
        let h = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = h.clone();
        let node = secured("server", SECRET)
            .subscribe(
                CH,
                Handler::sync(move |r| {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    drop(r.reply(b"pong"));
                }),
            )
            .start()
            .unwrap();
        (node, h)
    };
    let me = NodeId::new(999).unwrap();
    let info = NodeInfo {
        version: domi::frame::PROTOCOL_VERSION,
        cluster: "default".into(),
        id: me,
        name: "impostor".into(),
        instance: 1,
        channels: vec![],
        state: NodeState::Serving,
    };
    let nonce_c = auth::nonce();
    let mut hello = info.to_bytes();
    hello.extend_from_slice(&nonce_c);
    let mut s = TcpStream::connect(served.local_addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&frame_bytes(
        FrameKind::Control,
        Channel::HELLO,
        me,
        0,
        &hello,
    ))
    .unwrap();
    // The server proves itself over our nonce...
    let (ack, payload) = read_frame(&mut s).unwrap();
    assert_eq!(ack.channel, Channel::HELLO_ACK);
    let (_, extra) = NodeInfo::decode_prefix(&payload).unwrap();
    let (nonce_s, proof) = auth::ack_auth(Some(SECRET), extra).unwrap().unwrap();
    auth::check_server(SECRET, "default", &nonce_c, &nonce_s, proof).unwrap();
    // ...and a proof made with another secret is refused, before any frame
    // of ours reaches a handler.
    let wrong = auth::client_proof(b"not-the-cluster-secret", "default", &nonce_c, &nonce_s);
    let mut out = frame_bytes(FrameKind::Control, Channel::AUTH, me, 0, &wrong);
    out.extend(frame_bytes(FrameKind::Request, CH, me, 7, b"ping"));
    s.write_all(&out).unwrap();
    let (refusal, code) = read_frame(&mut s).unwrap();
    assert_eq!(refusal.kind, FrameKind::Error);
    assert_eq!(
        domi::ErrorCode::from_payload(&code),
        domi::ErrorCode::Refused
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
    wait_until("the refusal to be counted", T, || {
        served.stats().closed_refused >= 1
    });
    assert_eq!(
        served.stats().closed_refused,
        1,
        "one refusal, counted once"
    );
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 0);
}
