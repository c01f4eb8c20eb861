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
