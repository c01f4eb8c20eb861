//! Regression inputs for the cargo-fuzz targets in `fuzz/` (frame codec,
//! handshake, etcd record, admin routes), run as ordinary tests.
//!
//! Each test feeds hand-picked hostile inputs (empty, truncated, huge declared
//! lengths, invalid UTF-8, deeply nested JSON, megabyte strings) to the same
//! parser a fuzz target drives and checks that it answers with a value or a
//! typed error instead of panicking. Crashing inputs found by `fuzz/run.sh`
//! belong here too, one test each, named after the target.

use domi_admin::{route, Endpoint, RouteError};
use domi_cluster::etcd::record::{self, Change, NodeRecord, RecordError};
use domi_core::frame::{self, Decoded, FrameError, FrameKind, Meta, HEADER_LEN, MAGIC};
use domi_core::handshake::{self, HandshakeError, NodeInfo};
use domi_core::{Channel, NodeId, PeerTable};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------- frames

/// Drives `frame::decode` like a connection reader (and like the
/// `frame_decode` fuzz target) and returns the number of whole frames.
fn decode_all(mut buf: &[u8], max: u32) -> usize {
    let mut frames = 0;
    loop {
        match frame::decode(buf, max) {
            Ok(Decoded::Frame { frame, consumed }) => {
                assert!(consumed <= buf.len());
                assert!(consumed >= HEADER_LEN);
                assert!(frame.payload.len() as u64 <= max as u64);
                let mut out = Vec::new();
                frame::encode(&mut out, &frame.meta, frame.payload);
                match frame::decode(&out, max) {
                    Ok(Decoded::Frame { frame: again, .. }) => {
                        assert_eq!(again.meta, frame.meta);
                        assert_eq!(again.payload, frame.payload);
                    }
                    other => panic!("re-encoded frame did not decode: {other:?}"),
                }
                frames += 1;
                buf = &buf[consumed..];
            }
            Ok(Decoded::Incomplete { need }) => {
                assert!(need > 0);
                return frames;
            }
            Err(_) => return frames,
        }
    }
}

fn header(kind: u8, payload_len: u32, source: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&MAGIC.to_le_bytes());
    h.push(frame::PROTOCOL_VERSION);
    h.push(kind);
    h.extend_from_slice(&payload_len.to_le_bytes());
    h.extend_from_slice(&50u16.to_le_bytes()); // channel
    h.extend_from_slice(&0u16.to_le_bytes()); // reply channel
    h.extend_from_slice(&source.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // flags: no extension
    h.extend_from_slice(&u64::MAX.to_le_bytes()); // correlation
    h
}

#[test]
fn frame_decode_hostile_inputs() {
    // Empty and truncated buffers ask for more, for every maximum.
    for max in [0, 1, 1024, frame::DEFAULT_MAX_PAYLOAD, u32::MAX] {
        assert_eq!(
            frame::decode(&[], max),
            Ok(Decoded::Incomplete { need: HEADER_LEN })
        );
        let h = header(1, 0, 0);
        for cut in 0..HEADER_LEN {
            assert_eq!(
                frame::decode(&h[..cut], max),
                Ok(Decoded::Incomplete {
                    need: HEADER_LEN - cut
                })
            );
        }
    }

    // A declared length of u32::MAX: refused from the header alone under a
    // real maximum, a (large) Incomplete with no allocation when allowed.
    let huge = header(1, u32::MAX, 0);
    assert_eq!(
        frame::decode(&huge, frame::DEFAULT_MAX_PAYLOAD),
        Err(FrameError::PayloadTooLarge {
            len: u32::MAX,
            max: frame::DEFAULT_MAX_PAYLOAD
        })
    );
    assert_eq!(
        frame::decode(&huge, u32::MAX),
        Ok(Decoded::Incomplete {
            need: u32::MAX as usize
        })
    );

    // max_payload 0 still passes empty frames.
    let mut empty = Vec::new();
    let meta = Meta {
        kind: FrameKind::Control,
        channel: Channel::HELLO,
        reply_channel: Channel(0),
        source: NodeId::new(NodeId::MAX).unwrap(),
        correlation: 0,
        ext: domi_core::frame::Ext::NONE,
    };
    frame::encode(&mut empty, &meta, b"");
    frame::encode(&mut empty, &meta, b"");
    assert_eq!(decode_all(&empty, 0), 2);

    // Every malformed header field is a typed error.
    let mut bad_kind = header(0, 0, 0);
    assert_eq!(
        frame::decode(&bad_kind, 16),
        Err(FrameError::UnknownKind { found: 0 })
    );
    bad_kind[3] = 255;
    assert_eq!(
        frame::decode(&bad_kind, 16),
        Err(FrameError::UnknownKind { found: 255 })
    );
    assert_eq!(
        frame::decode(&header(1, 0, u16::MAX), 16),
        Err(FrameError::BadSource { found: u16::MAX })
    );
    assert_eq!(
        frame::decode(&[0xFF; HEADER_LEN], u32::MAX),
        Err(FrameError::BadMagic { found: 0xFFFF })
    );
    // Unknown flag bits (an extension this build cannot skip) are malformed.
    let mut flagged = header(2, 8, 0);
    flagged[14..16].copy_from_slice(&0xFFFFu16.to_le_bytes());
    flagged.extend_from_slice(&[0; 8]);
    assert!(matches!(
        frame::decode(&flagged, 16),
        Err(FrameError::BadExtension { flags: 0xFFFF, .. })
    ));
    assert_eq!(decode_all(&vec![0xFF; MIB], u32::MAX), 0);
    assert_eq!(decode_all(&vec![0; MIB], u32::MAX), 0);

    // A 1 MiB payload followed by a truncated frame.
    let mut big = header(2, MIB as u32, 1023);
    big.extend(std::iter::repeat_n(0xAB, MIB));
    big.extend_from_slice(&header(3, 10, 5));
    big.extend_from_slice(b"short");
    assert_eq!(decode_all(&big, MIB as u32), 1);
    assert_eq!(decode_all(&big, MIB as u32 - 1), 0);

    // Back-to-back tiny frames.
    let mut many = Vec::new();
    for i in 0..10_000u64 {
        frame::encode(
            &mut many,
            &Meta {
                correlation: i,
                ..meta
            },
            &[i as u8],
        );
    }
    assert_eq!(decode_all(&many, 1), 10_000);
}

// ---------------------------------------------------------------- handshake

fn hello(clen: u8, nlen: u8, count: u16) -> Vec<u8> {
    let mut v = vec![frame::PROTOCOL_VERSION, 0, 7, 0];
    v.extend_from_slice(&42u64.to_le_bytes());
    v.extend_from_slice(&[clen, nlen]);
    v.extend_from_slice(&count.to_le_bytes());
    v
}

/// Decodes like the `handshake` fuzz target: a value must round-trip.
fn decode_info(bytes: &[u8]) -> Result<NodeInfo, HandshakeError> {
    let info = NodeInfo::decode(bytes)?;
    assert_eq!(NodeInfo::decode(&info.to_bytes()), Ok(info.clone()));
    let _ = handshake::validate(&info, &info);
    let _ = info.check();
    Ok(info)
}

#[test]
fn handshake_hostile_inputs() {
    // Empty and every short fixed part.
    for len in 0..16 {
        assert!(matches!(
            decode_info(&vec![0; len]),
            Err(HandshakeError::Truncated { offset: 0, .. })
        ));
    }

    // Maximum declared lengths with nothing behind them.
    assert!(matches!(
        decode_info(&hello(255, 255, u16::MAX)),
        Err(HandshakeError::Truncated { offset: 16, .. })
    ));
    let mut no_list = hello(0, 0, u16::MAX);
    no_list.extend_from_slice(&[1, 0]);
    assert!(matches!(
        decode_info(&no_list),
        Err(HandshakeError::Truncated {
            offset: 16,
            need: 131_070,
            have: 2
        })
    ));

    // 65535 channels, all the same: sorted and de-duplicated to one.
    let mut dup = hello(0, 0, u16::MAX);
    for _ in 0..u16::MAX {
        dup.extend_from_slice(&50u16.to_le_bytes());
    }
    assert_eq!(decode_info(&dup).unwrap().channels, vec![Channel(50)]);

    // Invalid UTF-8 in the cluster and in the name.
    let mut bad_cluster = hello(2, 0, 0);
    bad_cluster.extend_from_slice(&[0xC3, 0x28]);
    assert_eq!(
        decode_info(&bad_cluster),
        Err(HandshakeError::InvalidField { field: "cluster" })
    );
    let mut bad_name = hello(1, 3, 0);
    bad_name.extend_from_slice(b"c\xE2\x82");
    bad_name.push(b'x');
    assert_eq!(
        decode_info(&bad_name),
        Err(HandshakeError::InvalidField { field: "name" })
    );

    // Bad state and node id.
    let mut bad_state = hello(0, 0, 0);
    bad_state[1] = 3;
    assert_eq!(
        decode_info(&bad_state),
        Err(HandshakeError::InvalidField { field: "state" })
    );
    let mut bad_id = hello(0, 0, 0);
    bad_id[2..4].copy_from_slice(&1024u16.to_le_bytes());
    assert_eq!(
        decode_info(&bad_id),
        Err(HandshakeError::InvalidField { field: "node id" })
    );

    // Full-length names and a megabyte of trailing garbage.
    let mut full = hello(255, 255, 1);
    full.extend(std::iter::repeat_n(b'c', 255));
    full.extend(std::iter::repeat_n(b'n', 255));
    full.extend_from_slice(&u16::MAX.to_le_bytes());
    let info = decode_info(&full).unwrap();
    assert_eq!(info.channels, vec![Channel(u16::MAX)]);
    full.extend(std::iter::repeat_n(0xFF, MIB));
    assert_eq!(
        decode_info(&full),
        Err(HandshakeError::TrailingBytes { extra: MIB })
    );

    // Another version decodes but is refused by validate.
    let mut old = hello(0, 0, 0);
    old[0] = 0;
    let theirs = decode_info(&old).unwrap();
    let ours = NodeInfo {
        version: frame::PROTOCOL_VERSION,
        instance: 1,
        ..theirs.clone()
    };
    assert!(matches!(
        handshake::validate(&ours, &theirs),
        Err(HandshakeError::VersionMismatch { .. })
    ));
}

// ---------------------------------------------------------------- etcd record

/// Feeds `data` the way the `record` fuzz target does.
fn record_paths(data: &[u8]) -> Result<NodeRecord, RecordError> {
    let parsed = NodeRecord::from_json(data);
    if let Ok(rec) = &parsed {
        let _ = rec.to_peer("c");
        assert_eq!(NodeRecord::from_json(&rec.to_json()).as_ref(), Ok(rec));
    }
    let (table, bad) = record::apply_all(
        "c",
        NodeId::new(9).unwrap(),
        &PeerTable::new(),
        &[Change::Put {
            key: b"/domi/c/nodes/3".to_vec(),
            value: data.to_vec(),
        }],
    );
    // The change either lands in the table or is reported, never both.
    assert_eq!(table.get(NodeId::new(3).unwrap()).is_some(), bad.is_empty());
    let _ = record::parse_id("/domi/c/nodes/", data);
    parsed
}

fn record_json(id: &str, instance: &str, tcp: &str, name: &str) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"name":{name},"version":"0.1.0","protocol":{p},"instance":{instance},"tcp":{tcp},"http":null,"shards":2,"channels":[51,50,50],"state":"serving","started_at":99}}"#,
        p = frame::PROTOCOL_VERSION
    )
    .into_bytes()
}

#[test]
fn record_hostile_inputs() {
    for junk in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"\"\"",
        b"{}",
        b"\xFF\xFE\xFD",
        b"{\"id\":\"\xFF\"}",
        b"\"\\ud800\"",
    ] {
        assert!(matches!(record_paths(junk), Err(RecordError::Json { .. })));
    }

    // Deep nesting: serde_json's recursion limit answers, the stack survives.
    for deep in [
        "[".repeat(10_000),
        "{\"a\":".repeat(10_000),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    ] {
        assert!(matches!(
            record_paths(deep.as_bytes()),
            Err(RecordError::Json { .. })
        ));
    }

    // Out-of-range numbers are JSON errors.
    for id in ["65536", "-1", "1e400", "3.5", "18446744073709551616"] {
        let json = record_json(id, "\"abc\"", "\"127.0.0.1:1\"", "\"n\"");
        assert!(
            matches!(record_paths(&json), Err(RecordError::Json { .. })),
            "id {id}"
        );
    }

    // A valid record for key 3.
    let good = record_json("3", "\"abc\"", "\"127.0.0.1:7003\"", "\"n3\"");
    let rec = record_paths(&good).unwrap();
    let peer = rec.to_peer("c").unwrap();
    assert_eq!(peer.info.channels, vec![Channel(50), Channel(51)]);

    // Parsed JSON with unusable fields: typed errors from to_peer.
    for (json, field) in [
        (
            record_json("1024", "\"abc\"", "\"127.0.0.1:1\"", "\"n\""),
            "id",
        ),
        (
            record_json("3", "\"ffffffffffffffffff\"", "\"127.0.0.1:1\"", "\"n\""),
            "instance",
        ),
        (
            record_json("3", "\"\"", "\"127.0.0.1:1\"", "\"n\""),
            "instance",
        ),
        (
            record_json("3", "\"abc\"", "\"127.0.0.1:99999\"", "\"n\""),
            "tcp",
        ),
        (record_json("3", "\"abc\"", "\"\"", "\"n\""), "tcp"),
        (
            record_json(
                "3",
                "\"abc\"",
                "\"127.0.0.1:1\"",
                &format!("\"{}\"", "é".repeat(128)),
            ),
            "name",
        ),
    ] {
        let rec = record_paths(&json).unwrap();
        assert!(
            matches!(rec.to_peer("c"), Err(RecordError::Field { field: f, .. }) if f == field),
            "expected a {field} error"
        );
    }

    // A record under the wrong key is an IdMismatch in the watch path.
    let other = record_json("4", "\"abc\"", "\"127.0.0.1:1\"", "\"n\"");
    let (_, bad) = record::apply_all(
        "c",
        NodeId::new(9).unwrap(),
        &PeerTable::new(),
        &[Change::Put {
            key: b"/domi/c/nodes/3".to_vec(),
            value: other,
        }],
    );
    assert_eq!(bad, vec![RecordError::IdMismatch { key: 3, record: 4 }]);

    // Megabyte strings in every string field.
    let big = format!("\"{}\"", "x".repeat(MIB));
    let json = record_json("3", &big, &big, &big);
    let rec = record_paths(&json).unwrap();
    assert!(rec.to_peer("c").is_err());

    // A megabyte channel list.
    let mut chans = String::from(
        r#"{"id":3,"name":"n","version":"v","protocol":1,"instance":"1","tcp":"127.0.0.1:1","http":null,"shards":0,"state":"paused","started_at":0,"channels":["#,
    );
    for i in 0..200_000u32 {
        if i > 0 {
            chans.push(',');
        }
        chans.push_str(&(i % 65_536).to_string());
    }
    chans.push_str("]}");
    let rec = record_paths(chans.as_bytes()).unwrap();
    assert_eq!(rec.to_peer("c").unwrap().info.channels.len(), 65_536);

    // Keys.
    let p = "/domi/c/nodes/";
    for key in [
        &b""[..],
        b"/domi/c/nodes/",
        b"/domi/c/nodes/1024",
        b"/domi/c/nodes/99999",
        b"/domi/c/nodes/00001",
        b"/domi/c/nodes/+1",
        b"/domi/c/nodes/-1",
        b"/domi/c/nodes/1 ",
        b"/domi/c/nodes/\xFF",
        b"/domi/c/nodes/\xD9\xA3", // ARABIC-INDIC DIGIT THREE
    ] {
        assert_eq!(record::parse_id(p, key), None, "{key:?}");
    }
    assert_eq!(
        record::parse_id(p, b"/domi/c/nodes/0000"),
        Some(NodeId::new(0).unwrap())
    );
    assert_eq!(
        record::parse_id(p, b"/domi/c/nodes/1023"),
        Some(NodeId::new(1023).unwrap())
    );
    let long_key = format!("{p}{}", "1".repeat(MIB));
    assert_eq!(record::parse_id(p, long_key.as_bytes()), None);
}

// ---------------------------------------------------------------- admin routes

/// Routes like the `admin_route` fuzz target: input split on the first two `\n`.
fn route_input(data: &[u8]) -> Result<Endpoint, RouteError> {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let method = parts.next().unwrap_or("");
    let url = parts.next().unwrap_or("");
    let auth = parts.next().unwrap_or("");
    let _ = route(method, url, None, None);
    let _ = route(method, url, Some(auth), None);
    let result = route(method, url, Some(auth), Some("token"));
    if let Ok(Endpoint::Stop | Endpoint::Pause | Endpoint::Resume) = result {
        assert!(bearer_token_is(auth, "token"), "accepted {auth:?}");
    }
    // Empty credentials never match, not even an empty token.
    assert!(!matches!(
        route(method, url, Some(auth), Some("")),
        Ok(Endpoint::Stop | Endpoint::Pause | Endpoint::Resume)
    ));
    result
}

/// Whether `auth` is `Bearer <token>`: the scheme in any case (RFC 9110
/// §11.1), one space, then `token` up to surrounding whitespace.
fn bearer_token_is(auth: &str, token: &str) -> bool {
    !token.is_empty()
        && auth
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        && auth[7..].trim() == token
}

#[test]
fn admin_route_hostile_inputs() {
    let check = |data: &[u8], want: Result<Endpoint, RouteError>| {
        assert_eq!(
            route_input(data),
            want,
            "{:?}",
            String::from_utf8_lossy(&data[..data.len().min(40)])
        );
    };
    let not_post = Err(RouteError::MethodNotAllowed { allow: "POST" });
    check(b"", Err(RouteError::NotFound));
    check(b"\n\n", Err(RouteError::NotFound));
    check(b"\0\n\0\n\0", Err(RouteError::NotFound));
    check(b"GET\n/\n", Err(RouteError::NotFound));
    check(b"GET\n/status\xCC\x81\n", Err(RouteError::NotFound));
    check(b"POST\n/st\xFFop\nBearer token", Err(RouteError::NotFound));
    check(b"\xFF\xFE\n/stop\n", not_post);
    check(b"post\n/stop\nBearer token", not_post);
    check(b"HEAD\n/metrics\n", Ok(Endpoint::Metrics));

    // The bearer token guards the mutating endpoints, exactly.
    check(b"POST\n/stop\nBearer token", Ok(Endpoint::Stop));
    check(b"POST\n/pause///?#\nBearer  token \n", Ok(Endpoint::Pause));
    check(
        b"POST\n/resume#x\nBearer token\xFF",
        Err(RouteError::Unauthorized),
    );
    check(b"POST\n/stop\nbearer token", Ok(Endpoint::Stop));
    check(b"POST\n/stop\nBEARER token", Ok(Endpoint::Stop));
    check(b"POST\n/stop\n Bearer token", Err(RouteError::Unauthorized));
    check(b"POST\n/stop\nBearer\ttoken", Err(RouteError::Unauthorized));
    check(b"POST\n/stop\nBearer", Err(RouteError::Unauthorized));
    check(b"POST\n/stop\nBearer ", Err(RouteError::Unauthorized));
    check(b"POST\n/stop\nBearer  \t ", Err(RouteError::Unauthorized));
    check(b"POST\n/stop\nBearer tokenn", Err(RouteError::Unauthorized));
    check(b"POST\n/stop\nBearer tok", Err(RouteError::Unauthorized));
    check(b"POST\n/stop", Err(RouteError::Unauthorized));
    assert_eq!(
        route("POST", "/stop", None, Some("")),
        Err(RouteError::Unauthorized)
    );
    assert_eq!(
        route("POST", "/stop", Some("Bearer "), Some("")),
        Err(RouteError::Unauthorized)
    );

    // Megabyte methods, paths, queries and credentials.
    let huge = "/".repeat(MIB);
    check(huge.as_bytes(), Err(RouteError::NotFound));
    check(format!("GET\n{huge}").as_bytes(), Err(RouteError::NotFound));
    let query = format!("GET\n/status?{}", "a".repeat(MIB));
    check(query.as_bytes(), Ok(Endpoint::Status));
    let token = format!("POST\n/stop\nBearer {}", "t".repeat(MIB));
    check(token.as_bytes(), Err(RouteError::Unauthorized));
    let method = format!("{}\n/health", "G".repeat(MIB));
    check(
        method.as_bytes(),
        Err(RouteError::MethodNotAllowed { allow: "GET" }),
    );
}
