//! Two links paired in memory: the handshake, data both ways, refusals, and
//! the accounting of what is wholly written.

use super::*;
use crate::tls::test_pki::TestPki;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Moves every pending record of `from` into `to`, returning what `to`
/// decrypted.
fn pump(from: &mut TlsLink, to: &mut TlsLink) -> Result<(Vec<u8>, bool), TlsClose> {
    let bytes = from.records().to_vec();
    let n = from.wrote(bytes.len());
    assert_eq!(n, 0, "no plaintext sealed in these pumps");
    deliver(&bytes, to)
}

fn deliver(bytes: &[u8], to: &mut TlsLink) -> Result<(Vec<u8>, bool), TlsClose> {
    let mut cipher = bytes;
    let mut got = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        match to.pull(&mut cipher, &mut buf)? {
            Pulled::Plain(n) => got.extend_from_slice(&buf[..n]),
            Pulled::NeedMore => return Ok((got, false)),
            Pulled::Closed => return Ok((got, true)),
        }
    }
}

/// Runs the handshake to its end; panics if it fails.
fn handshake(client: &mut TlsLink, server: &mut TlsLink) {
    for _ in 0..10 {
        pump(client, server).expect("server side");
        pump(server, client).expect("client side");
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return;
        }
    }
    panic!("handshake did not finish");
}

fn pair(pki: &TestPki) -> (TlsLink, TlsLink) {
    let client = TlsLink::client(&pki.config("127.0.0.1"), LOCAL).unwrap();
    let server = TlsLink::server(&pki.config("127.0.0.1")).unwrap();
    (client, server)
}

/// Seals all of `data` and returns the records and the plaintext counted
/// as written once they all left.
fn seal_all(link: &mut TlsLink, data: &[u8]) -> (Vec<u8>, usize) {
    let mut cipher = Vec::new();
    let mut written = 0;
    while written < data.len() {
        while link.seal(&data[written..]) {}
        let chunk = link.records().to_vec();
        written += link.wrote(chunk.len());
        cipher.extend_from_slice(&chunk);
    }
    (cipher, written)
}

#[test]
fn data_flows_both_ways_after_the_handshake() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    assert!(client.wants_write(), "the ClientHello waits");
    assert!(
        !client.seal(b"too early"),
        "nothing is sealed while handshaking"
    );
    handshake(&mut client, &mut server);
    let suite = client.suite();
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));

    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let (cipher, written) = seal_all(&mut client, &data);
    assert_eq!(written, data.len());
    assert!(
        !cipher.windows(64).any(|w| w == &data[1000..1064]),
        "encrypted"
    );
    let (got, closed) = deliver(&cipher, &mut server).unwrap();
    assert_eq!(got, data);
    assert!(!closed);

    let (cipher, _) = seal_all(&mut server, b"answer");
    assert_eq!(deliver(&cipher, &mut client).unwrap().0, b"answer");
}

#[test]
fn data_sent_right_behind_the_last_handshake_record_is_read() {
    // The client's Finished and its first records leave in one write, and
    // reach the server in one read: rustls must take the Finished only.
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    pump(&mut client, &mut server).unwrap();
    pump(&mut server, &mut client).unwrap();
    assert!(!client.is_handshaking() && server.is_handshaking());
    let (cipher, _) = seal_all(&mut client, b"hello right away");
    let (got, closed) = deliver(&cipher, &mut server).unwrap();
    assert_eq!(got, b"hello right away");
    assert!(!closed && !server.is_handshaking());
}

/// A plain rustls connection's records: what it wants to write.
fn rustls_records(conn: &mut rustls::Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Feeds `bytes` to a plain rustls connection: the plaintext it read.
fn rustls_reads(conn: &mut rustls::Connection, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut r = bytes;
    let mut got = Vec::new();
    while !r.is_empty() {
        conn.read_tls(&mut r).unwrap();
        conn.process_new_packets()
            .expect("rustls accepts our records");
        let mut buf = [0u8; 4096];
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    got
}

#[test]
fn records_and_key_updates_are_standard_tls_1_3() {
    use std::io::Write;
    // Our link against rustls's own record layer, both ways round.
    let pki = TestPki::new();
    let config = pki.config("127.0.0.1");
    for we_dial in [true, false] {
        let (mut ours, mut theirs): (TlsLink, rustls::Connection) = if we_dial {
            let server = rustls::ServerConnection::new(config.server.clone()).unwrap();
            (TlsLink::client(&config, LOCAL).unwrap(), server.into())
        } else {
            let client =
                rustls::ClientConnection::new(config.client.clone(), config.name_for(LOCAL))
                    .unwrap();
            (TlsLink::server(&config).unwrap(), client.into())
        };
        for _ in 0..10 {
            let from_us = ours.records().to_vec();
            ours.wrote(from_us.len());
            rustls_reads(&mut theirs, &from_us);
            let from_them = rustls_records(&mut theirs);
            deliver(&from_them, &mut ours).unwrap();
            if !ours.is_handshaking() && !theirs.is_handshaking() && !ours.wants_write() {
                break;
            }
        }
        assert!(!ours.is_handshaking() && !theirs.is_handshaking());

        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let (cipher, _) = seal_all(&mut ours, &data);
        assert_eq!(rustls_reads(&mut theirs, &cipher), data);
        theirs.writer().write_all(b"from rustls").unwrap();
        let from_them = rustls_records(&mut theirs);
        assert_eq!(deliver(&from_them, &mut ours).unwrap().0, b"from rustls");

        // rustls updates its keys and asks for ours: we follow, and our next
        // record goes under new keys, after our own KeyUpdate.
        theirs.refresh_traffic_keys().unwrap();
        theirs.writer().write_all(b"under new keys").unwrap();
        let from_them = rustls_records(&mut theirs);
        assert_eq!(deliver(&from_them, &mut ours).unwrap().0, b"under new keys");
        let Stage::Data { owe_update, .. } = &ours.stage else {
            panic!("not in the data stage")
        };
        assert!(*owe_update, "rustls asked for our update");
        let (cipher, _) = seal_all(&mut ours, b"answered");
        assert_eq!(rustls_reads(&mut theirs, &cipher), b"answered");

        // And a close from our side ends rustls's stream.
        ours.close_notify();
        let cipher = ours.records().to_vec();
        rustls_reads(&mut theirs, &cipher);
        let mut buf = [0u8; 8];
        assert!(matches!(
            std::io::Read::read(&mut theirs.reader(), &mut buf),
            Ok(0)
        ));
    }
}

#[test]
fn keys_are_updated_before_they_protect_too_many_records() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    handshake(&mut client, &mut server);
    // Both ends of the client's direction pretend to be near the limit.
    let (Stage::Data { tx, .. }, Stage::Data { rx, .. }) = (&mut client.stage, &mut server.stage)
    else {
        panic!("not in the data stage")
    };
    tx.skip_to(record::KEY_UPDATE_AFTER - 1);
    rx.skip_to(record::KEY_UPDATE_AFTER - 1);
    let (cipher, _) = seal_all(&mut client, b"last under the first keys");
    assert_eq!(
        deliver(&cipher, &mut server).unwrap().0,
        b"last under the first keys"
    );
    let (cipher, _) = seal_all(&mut client, b"first under the next keys");
    let Stage::Data { tx, .. } = &client.stage else {
        unreachable!()
    };
    assert_eq!(tx.seq(), 1, "new keys, from sequence number 0");
    assert_eq!(
        deliver(&cipher, &mut server).unwrap().0,
        b"first under the next keys"
    );
}

/// Pulls all of `bytes` into `to` with a plaintext buffer of `room` bytes.
fn deliver_in(room: usize, bytes: &[u8], to: &mut TlsLink) -> (Vec<u8>, bool) {
    let mut c = bytes;
    let mut got = Vec::new();
    let mut buf = vec![0u8; room];
    loop {
        match to.pull(&mut c, &mut buf).unwrap() {
            Pulled::Plain(n) => got.extend_from_slice(&buf[..n]),
            Pulled::NeedMore => return (got, false),
            Pulled::Closed => return (got, true),
        }
    }
}

#[test]
fn key_updates_and_closes_leave_nothing_behind_in_a_small_buffer() {
    // A key update and a close_notify as the last whole records of a read,
    // pulled with buffers too small for their bodies (which are then opened
    // aside): only the data comes out, in order.
    let pki = TestPki::new();
    for room in 1..=40 {
        for one_read_per_record in [false, true] {
            let (mut client, mut server) = pair(&pki);
            handshake(&mut client, &mut server);
            let (Stage::Data { tx, .. }, Stage::Data { rx, .. }) =
                (&mut client.stage, &mut server.stage)
            else {
                panic!("not in the data stage")
            };
            tx.skip_to(record::KEY_UPDATE_AFTER - 1);
            rx.skip_to(record::KEY_UPDATE_AFTER - 1);
            let (first, _) = seal_all(&mut client, b"first record");
            let (mut rest, _) = seal_all(&mut client, b"second");
            client.close_notify();
            rest.extend_from_slice(client.records());
            let (mut got, mut closed) = (Vec::new(), false);
            let all = [first, rest].concat();
            let mut reads = Vec::new();
            if one_read_per_record {
                // Each record the last whole one of its read.
                let mut at = 0;
                while at < all.len() {
                    let len = usize::from(u16::from_be_bytes([all[at + 3], all[at + 4]]));
                    reads.push(&all[at..at + HEADER + len]);
                    at += HEADER + len;
                }
                assert_eq!(reads.len(), 4, "data, key update, data, close");
            } else {
                reads.push(&all[..]);
            }
            for read in reads {
                let (g, c) = deliver_in(room, read, &mut server);
                got.extend(g);
                closed |= c;
            }
            assert_eq!(got, b"first recordsecond", "room {room}");
            assert!(closed, "room {room}");
        }
    }
}

#[test]
fn plaintext_counts_as_written_only_when_its_record_left_whole() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    handshake(&mut client, &mut server);
    let data = vec![7u8; 3 * RECORD + 10];
    // Four records: 16 KiB, 16 KiB, 16 KiB, 10 bytes; note where each ends.
    let mut ends = Vec::new();
    while client.seal(&data) {
        ends.push(client.records().len());
    }
    assert_eq!(ends.len(), 4);
    assert_eq!(client.wrote(ends[0] - 1), 0, "a record short of its end");
    assert_eq!(
        client.wrote(1),
        RECORD,
        "its last byte left: 16 KiB written"
    );
    assert_eq!(client.wrote(ends[2] - ends[0]), 2 * RECORD);
    assert_eq!(client.wrote(ends[3] - ends[2] - 1), 0);
    assert_eq!(client.wrote(1), 10);
    assert!(client.records().is_empty());
    assert!(!client.seal(&data[data.len()..]), "nothing new to seal");
}

#[test]
fn sealing_resumes_after_what_is_already_sealed() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    handshake(&mut client, &mut server);
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    // The queue's unsent bytes stay the same until the link reports some
    // written; each seal takes the next record.
    assert!(client.seal(&data));
    assert!(client.seal(&data));
    let cipher = client.records().to_vec();
    let written = client.wrote(cipher.len());
    assert_eq!(written, 2 * RECORD);
    let rest = &data[written..];
    while client.seal(rest) {}
    let mut all = cipher;
    all.extend_from_slice(client.records());
    assert_eq!(client.wrote(client.records().len()), rest.len());
    assert_eq!(deliver(&all, &mut server).unwrap().0, data);
}

#[test]
fn a_plaintext_peer_is_named() {
    let pki = TestPki::new();
    let mut server = TlsLink::server(&pki.config("127.0.0.1")).unwrap();
    let mut hello = vec![0u8; 64];
    hello[..2].copy_from_slice(&crate::frame::MAGIC.to_le_bytes());
    let err = deliver(&hello, &mut server).unwrap_err();
    assert!(matches!(err, TlsClose::PeerWithoutTls), "{err:?}");
    assert!(server.wants_write(), "an alert for the peer");
}

#[test]
fn a_certificate_from_another_ca_is_refused_both_ways() {
    let pki = TestPki::new();
    let other = TestPki::new();
    // A client whose certificate another CA signed (trusting our CA, so
    // the refusal is the server's).
    let stranger = other.node("127.0.0.1");
    let config = TlsConfig::from_pem(
        stranger.cert.as_bytes(),
        stranger.key.as_bytes(),
        pki.ca.as_bytes(),
    )
    .unwrap();
    let mut client = TlsLink::client(&config, LOCAL).unwrap();
    let mut server = TlsLink::server(&pki.config("127.0.0.1")).unwrap();
    let refused = (0..10).find_map(|_| {
        if let Err(e) = pump(&mut client, &mut server) {
            return Some(e);
        }
        pump(&mut server, &mut client).err()
    });
    let err = refused.expect("refused");
    assert!(
        matches!(
            err,
            TlsClose::Refused {
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            }
        ),
        "{err:?}"
    );
    // The refusing server's alert tells the client why.
    let err = pump(&mut server, &mut client).unwrap_err();
    assert!(
        matches!(
            err,
            TlsClose::Refused {
                source: rustls::Error::AlertReceived(_)
            }
        ),
        "{err:?}"
    );

    // A server whose certificate another CA signed.
    let mut client = TlsLink::client(&pki.config("127.0.0.1"), LOCAL).unwrap();
    let mut server = TlsLink::server(&other.config("127.0.0.1")).unwrap();
    pump(&mut client, &mut server).unwrap();
    let err = pump(&mut server, &mut client).unwrap_err();
    assert!(
        matches!(
            err,
            TlsClose::Refused {
                source: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            }
        ),
        "{err:?}"
    );
}

#[test]
fn the_server_certificate_must_name_the_dialled_address() {
    let pki = TestPki::new();
    let mut client =
        TlsLink::client(&pki.config("127.0.0.1"), "127.0.0.2".parse().unwrap()).unwrap();
    let mut server = TlsLink::server(&pki.config("127.0.0.1")).unwrap();
    pump(&mut client, &mut server).unwrap();
    let err = pump(&mut server, &mut client).unwrap_err();
    assert!(
        matches!(
            err,
            TlsClose::Refused {
                source: rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            }
        ),
        "{err:?}"
    );

    // With a cluster-wide server name, the address does not matter.
    let named = pki.config("bus.domi").server_name("bus.domi").unwrap();
    let mut client = TlsLink::client(&named, "127.0.0.2".parse().unwrap()).unwrap();
    let mut server = TlsLink::server(&pki.config("bus.domi")).unwrap();
    handshake(&mut client, &mut server);
}

#[test]
fn a_message_larger_than_tls_allows_is_an_error_not_a_spin() {
    // A ClientHello declaring 0xffff bytes, sent in full records: rustls's
    // buffer for the unfinished message fills up before it completes.
    let pki = TestPki::new();
    let mut server = TlsLink::server(&pki.config("127.0.0.1")).unwrap();
    let mut body = vec![1u8, 0x00, 0xff, 0xff]; // ClientHello, length 0xffff
    body.resize(4 + 0xffff, 0);
    let mut wire = Vec::new();
    for chunk in body.chunks(16 * 1024) {
        wire.extend_from_slice(&[22, 3, 1]);
        wire.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    let mut cipher = &wire[..];
    let mut buf = [0u8; 100];
    let mut rounds = 0;
    let err = loop {
        rounds += 1;
        assert!(rounds < 1000, "pull keeps returning without an end");
        match server.pull(&mut cipher, &mut buf) {
            Err(e) => break e,
            Ok(Pulled::NeedMore) if cipher.is_empty() => panic!("took it all"),
            Ok(_) => {}
        }
    };
    assert!(
        matches!(err, TlsClose::Stuck { .. } | TlsClose::Refused { .. }),
        "{err:?}"
    );
}

#[test]
fn close_notify_ends_the_stream() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    handshake(&mut client, &mut server);
    client.close_notify();
    let (got, closed) = pump(&mut client, &mut server).unwrap();
    assert!(got.is_empty());
    assert!(closed);
}

#[test]
fn a_socket_taking_little_at_a_time_keeps_the_buffer_bounded() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    handshake(&mut client, &mut server);
    let data = vec![1u8; 4 * SEAL_AHEAD];
    let mut written = 0;
    let mut cipher = Vec::new();
    while written < data.len() {
        while client.seal(&data[written..]) {}
        assert!(client.out.len() <= 2 * SEAL_AHEAD + 2 * RECORD);
        let take = client.records().len().min(10_000);
        cipher.extend_from_slice(&client.records()[..take]);
        written += client.wrote(take);
    }
    assert_eq!(deliver(&cipher, &mut server).unwrap().0, data);
}

mod accounting {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the socket takes the records (any sizes of partial
        /// writes) and whatever the queue holds, the plaintext counted as
        /// written is exactly what the peer can decrypt from the bytes that
        /// left: never a byte more (a frame counted written reached the peer
        /// whole), never fewer.
        #[test]
        fn written_plaintext_is_what_the_peer_can_read(
            len in 1usize..120_000,
            takes in proptest::collection::vec(1usize..40_000, 1..64),
        ) {
            let pki = shared_pki();
            let (mut client, mut server) = pair(pki);
            handshake(&mut client, &mut server);
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let (mut counted, mut got) = (0usize, Vec::new());
            for take in takes.iter().cycle().take(10_000) {
                if counted == data.len() {
                    break;
                }
                while client.seal(&data[counted..]) {}
                let n = client.records().len().min(*take);
                let sent = client.records()[..n].to_vec();
                counted += client.wrote(n);
                got.extend(deliver(&sent, &mut server).unwrap().0);
                // The peer read exactly what was counted written.
                prop_assert_eq!(got.len(), counted);
            }
            prop_assert_eq!(got, data);
        }
    }

    fn shared_pki() -> &'static TestPki {
        static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
        PKI.get_or_init(TestPki::new)
    }
}

/// How fast the record engine alone seals and opens bulk data (no socket):
/// a profiling aid, not a target (`cargo test --release -p domi-core --lib
/// engine_throughput -- --ignored --nocapture`).
#[test]
#[ignore]
fn engine_throughput() {
    let pki = TestPki::new();
    let (mut client, mut server) = pair(&pki);
    handshake(&mut client, &mut server);
    let data = vec![7u8; 256 * 1024];
    let mut plain = vec![0u8; 256 * 1024];
    let rounds = 400; // 100 MiB
    let (mut seal_t, mut pull_t) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let mut written = 0;
        let mut cipher = Vec::with_capacity(300 * 1024);
        while written < data.len() {
            while client.seal(&data[written..]) {}
            let n = client.records().len();
            cipher.extend_from_slice(client.records());
            written += client.wrote(n);
        }
        seal_t += t.elapsed();
        let t = std::time::Instant::now();
        let mut c = &cipher[..];
        let mut got = 0;
        while let Pulled::Plain(n) = server.pull(&mut c, &mut plain).unwrap() {
            got += n;
        }
        assert_eq!(got, data.len());
        pull_t += t.elapsed();
    }
    let mib = (rounds * data.len()) as f64 / (1 << 20) as f64;
    eprintln!(
        "seal {:.0} MiB/s, pull {:.0} MiB/s",
        mib / seal_t.as_secs_f64(),
        mib / pull_t.as_secs_f64()
    );
}
