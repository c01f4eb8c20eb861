//! Mutual TLS on the bus: every kind of message with TLS on both sides; a
//! payload never seen in the bytes on the wire (a recording proxy between
//! two nodes); refusals, counted and logged, never a hang: a node without
//! TLS talking to a TLS node and the reverse (both through static probes
//! and through a shard dialling a peer etcd announced), and a node whose
//! certificate another CA signed. Certificates are made at test time with
//! the `openssl` CLI.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::certs::Pki;
use common::etcd::Etcd;
use common::{small, test_logs, wait_until, SETTLE};
use domi::{BusError, Channel, Handler, Node, NodeBuilder, TlsConfig};

const CH: Channel = Channel(60);
const REPLY: Channel = Channel(61);
const T: Duration = Duration::from_secs(3);
const SECRET: &[u8] = b"domi-tls-payload-7c1f0e9a-never-on-the-wire";

/// A node serving `CH`: it answers requests with their payload reversed and
/// counts every message it handled.
fn echo_server(builder: NodeBuilder) -> (Node, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let node = builder
        .subscribe(
            CH,
            Handler::sync(move |req| {
                h.fetch_add(1, Ordering::SeqCst);
                let mut answer = req.payload().to_vec();
                answer.reverse();
                let _ = req.reply(&answer);
            }),
        )
        .start()
        .expect("server starts");
    (node, handled)
}

fn reversed(p: &[u8]) -> Vec<u8> {
    p.iter().rev().copied().collect()
}

/// A TCP proxy to `target` recording every byte it forwards, both ways.
struct Capture {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    fn start(target: SocketAddr) -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let rec = bytes.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let rec = rec.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            rec.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Capture { addr, bytes }
    }

    fn contains(&self, needle: &[u8]) -> bool {
        self.bytes
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }

    fn len(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }
}

/// Sends a request, a call (its reply to the client's `REPLY` handler), a
/// one-way message and a broadcast, all carrying `SECRET`, from `client` to
/// the echo server; checks each arrived.
fn exchange_everything(client: &Node, handled: &AtomicUsize, replies: &AtomicUsize) {
    client
        .wait_for_provider(CH, SETTLE)
        .expect("the server is seen");
    let before = handled.load(Ordering::SeqCst);
    assert_eq!(client.request(CH, SECRET, T).unwrap(), reversed(SECRET));
    client.call(CH, SECRET, REPLY).unwrap();
    wait_until("the call's reply", T, || {
        replies.load(Ordering::SeqCst) == 1
    });
    client.notify(CH, SECRET).unwrap();
    client.publish(CH, SECRET).unwrap();
    wait_until("every message handled", T, || {
        handled.load(Ordering::SeqCst) == before + 4
    });
}

/// A client node counting the replies its `REPLY` handler got.
fn client_with_replies(builder: NodeBuilder) -> (Node, Arc<AtomicUsize>) {
    let replies = Arc::new(AtomicUsize::new(0));
    let r = replies.clone();
    let node = builder
        .subscribe(
            REPLY,
            Handler::sync(move |req| {
                assert_eq!(req.payload(), reversed(SECRET));
                r.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .start()
        .expect("client starts");
    (node, replies)
}

#[test]
fn every_kind_of_message_flows_over_tls_and_never_in_the_clear() {
    test_logs();
    let pki = Pki::new("bus");
    let secret = b"and a cluster secret inside TLS".to_vec();
    let (server, handled) = echo_server(
        small("server2")
            .tls(pki.node_tls("server", "127.0.0.1"))
            .cluster_secret(secret.clone()),
    );
    // The client reaches the server only through the recording proxy.
    let capture = Capture::start(server.local_addr());
    let (client, replies) = client_with_replies(
        small("client")
            .tls(pki.node_tls("client", "127.0.0.1"))
            .cluster_secret(secret)
            .peer(capture.addr),
    );
    exchange_everything(&client, &handled, &replies);
    let big: Vec<u8> = SECRET.iter().copied().cycle().take(1 << 20).collect();
    assert_eq!(client.request(CH, &big, T).unwrap(), reversed(&big));

    assert!(capture.len() > big.len(), "the proxy saw the traffic");
    assert!(!capture.contains(SECRET), "a payload appeared on the wire");
    assert!(!capture.contains(b"and a cluster secret"));
    assert!(
        !capture.contains(b"server2"),
        "node names are encrypted too"
    );
    for node in [&server, &client] {
        assert_eq!(node.stats().closed_tls, 0);
        assert_eq!(node.stats().bad_closes, 0);
    }
}

#[test]
fn without_tls_the_same_capture_shows_the_payload() {
    // The control for the test above: the proxy does record what passes.
    let (server, handled) = echo_server(small("server"));
    let capture = Capture::start(server.local_addr());
    let (client, replies) = client_with_replies(small("client").peer(capture.addr));
    exchange_everything(&client, &handled, &replies);
    assert!(capture.contains(SECRET));
}

/// Waits until `node` counted a TLS refusal.
fn wait_refusals(node: &Node, what: &str) {
    wait_until(what, SETTLE, || node.stats().closed_tls > 0);
}

#[test]
fn a_node_without_tls_and_a_tls_node_refuse_each_other() {
    test_logs();
    let pki = Pki::new("mixed");
    let (tls_server, _) = echo_server(small("tls-server").tls(pki.node_tls("s", "127.0.0.1")));
    let (plain_server, _) = echo_server(small("plain-server"));

    // A plaintext node probing the TLS node: the TLS node counts it.
    let plain_client = small("plain-client")
        .peer(tls_server.local_addr())
        .start()
        .unwrap();
    wait_refusals(&tls_server, "the TLS node to refuse a plaintext peer");
    // A TLS node probing the plaintext node: the plaintext node counts it.
    let tls_client = small("tls-client")
        .tls(pki.node_tls("c", "127.0.0.1"))
        .peer(plain_server.local_addr())
        .start()
        .unwrap();
    wait_refusals(&plain_server, "the plaintext node to refuse a TLS peer");

    // Neither client ever sees the other side as a provider; a request
    // fails at once with a typed error rather than hanging.
    for client in [&plain_client, &tls_client] {
        assert!(client.peers().providers(CH).is_empty());
        assert!(matches!(
            client.request(CH, b"q", T),
            Err(BusError::NoProvider { .. })
        ));
    }
    // The servers serve on.
    assert!(tls_server.stats().handled == 0 && plain_server.stats().handled == 0);
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    test_logs();
    let pki = Pki::new("ours");
    let other = pki.other_ca("theirs");
    let (server, handled) = echo_server(small("server").tls(pki.node_tls("s", "127.0.0.1")));
    // The stranger trusts our CA (so the refusal is the server's), but its
    // own certificate was signed by another.
    let stranger_cert = other.node("stranger", "127.0.0.1");
    let tls =
        TlsConfig::from_pem_files(&stranger_cert.cert, &stranger_cert.key, &pki.ca.cert).unwrap();
    let stranger = small("stranger")
        .tls(tls)
        .peer(server.local_addr())
        .start()
        .unwrap();
    wait_refusals(&server, "the server to refuse the stranger's certificate");
    assert!(stranger.peers().providers(CH).is_empty());
    stranger.stop(); // from here on, refusals are the foreign node's
                     // A node of the other deployment (trusting only its own CA) refuses the
                     // server's certificate itself.
    let foreign = small("foreign")
        .tls(other.node_tls("foreign", "127.0.0.1"))
        .peer(server.local_addr())
        .start()
        .unwrap();
    let before = server.stats().closed_tls;
    wait_until("the server to see the foreign node give up", SETTLE, || {
        server.stats().closed_tls > before
    });
    assert!(foreign.peers().providers(CH).is_empty());
    // A node of ours is still served.
    let (friend, _) = client_with_replies(
        small("friend")
            .tls(pki.node_tls("friend", "127.0.0.1"))
            .peer(server.local_addr()),
    );
    friend.wait_for_provider(CH, SETTLE).unwrap();
    assert_eq!(friend.request(CH, b"ok", T).unwrap(), b"ko");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[test]
fn a_shard_dialling_a_peer_with_the_other_setting_fails_fast() {
    // With etcd, a node learns its peers from their records and its shards
    // dial them directly (no probe): a plaintext client dialling a TLS
    // server must fail the request with a typed error, and count it.
    test_logs();
    let etcd = Etcd::start();
    let pki = Pki::new("etcd-mixed");
    let (server, handled) = echo_server(
        Node::builder("tls-server")
            .shards(1)
            .small()
            .etcd([etcd.endpoint()])
            .tls(pki.node_tls("s", "127.0.0.1")),
    );
    let plain = Node::builder("plain-client")
        .shards(1)
        .small()
        .etcd([etcd.endpoint()])
        .start()
        .unwrap();
    plain.wait_for_provider(CH, SETTLE).unwrap();
    let started = std::time::Instant::now();
    let result = plain.request(CH, b"q", T);
    assert!(
        matches!(
            result,
            Err(BusError::PeerLost { .. } | BusError::NoProvider { .. })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < T, "failed fast, not by timeout");
    wait_refusals(
        &plain,
        "the plaintext client to count the TLS server's refusal",
    );
    wait_refusals(&server, "the TLS server to count the plaintext client");
    assert_eq!(handled.load(Ordering::SeqCst), 0);

    // And a TLS client of the same CA is served over the same etcd.
    let (client, replies) = client_with_replies(
        Node::builder("tls-client")
            .shards(1)
            .small()
            .etcd([etcd.endpoint()])
            .tls(pki.node_tls("c", "127.0.0.1")),
    );
    exchange_everything(&client, &handled, &replies);
}
