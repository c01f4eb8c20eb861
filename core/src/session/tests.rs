//! Two sessions paired in memory: every frame goes through the real codec
//! (`frame::encode`, then `frame::decode`), no sockets, time made by hand.

use std::time::{Duration, Instant};

use super::*;
use crate::frame::{Decoded, PROTOCOL_VERSION};
use crate::handshake::NodeState;

const SECRET: &[u8] = b"0123456789abcdef-secret";
const OTHER: &[u8] = b"0123456789abcdef-other";
const MAX: u32 = frame::DEFAULT_MAX_PAYLOAD;

fn info(id: u16, instance: u64) -> NodeInfo {
    NodeInfo {
        version: PROTOCOL_VERSION,
        cluster: "prod".into(),
        id: NodeId::test(id),
        name: format!("node{id}"),
        instance,
        channels: vec![Channel(50)],
        state: NodeState::Serving,
    }
}

/// One side: its identity and its session.
struct End {
    id: FixedIdentity,
    s: Session,
}

fn identity(info: NodeInfo, secret: Option<&[u8]>) -> FixedIdentity {
    FixedIdentity {
        info,
        secret: secret.map(<[u8]>::to_vec),
    }
}

impl End {
    fn connect(info: NodeInfo, secret: Option<&[u8]>, expect: Option<NodeId>) -> End {
        let id = identity(info, secret);
        let s = Session::connect(&id, expect, [1; 16]);
        End { id, s }
    }

    fn accept(info: NodeInfo, secret: Option<&[u8]>) -> End {
        End {
            id: identity(info, secret),
            s: Session::accept([2; 16]),
        }
    }

    /// Everything queued, encoded as it would leave.
    fn drain(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(t) = self.s.poll_transmit() {
            t.encode(&mut out);
        }
        out
    }

    /// Everything queued, as frames.
    fn sent(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.s.poll_transmit()).collect()
    }

    /// Decodes `wire` frame by frame (with the session's payload limit) and
    /// feeds each frame to the session.
    fn feed<'b>(&mut self, mut wire: &'b [u8]) -> Vec<Action<'b>> {
        let mut actions = Vec::new();
        while !wire.is_empty() {
            let limit = self.s.payload_limit(MAX);
            let Ok(Decoded::Frame { frame, consumed }) = frame::decode(wire, limit) else {
                panic!("whole frames only");
            };
            wire = &wire[consumed..];
            actions.push(self.s.on_frame(&self.id, frame));
        }
        actions
    }
}

fn wire(kind: FrameKind, channel: Channel, source: NodeId, corr: u64, payload: &[u8]) -> Vec<u8> {
    let meta = Meta {
        kind,
        channel,
        reply_channel: Channel(9),
        source,
        correlation: corr,
        ext: crate::frame::Ext::NONE,
    };
    let mut out = Vec::new();
    frame::encode(&mut out, &meta, payload);
    out
}

fn control(source: u16, channel: Channel, payload: &[u8]) -> Vec<u8> {
    wire(
        FrameKind::Control,
        channel,
        NodeId::test(source),
        0,
        payload,
    )
}

/// A client (id 1) and a server (id 2) through the whole handshake.
fn open_pair(secret: Option<&[u8]>) -> (End, End) {
    let mut c = End::connect(info(1, 10), secret, Some(NodeId::test(2)));
    let mut s = End::accept(info(2, 20), secret);
    let hello = c.drain();
    s.feed(&hello);
    let ack = s.drain();
    c.feed(&ack);
    let auth = c.drain();
    s.feed(&auth);
    assert!(c.s.is_open() && s.s.is_open());
    (c, s)
}

fn is_refusal(t: &Transmit) -> bool {
    t.meta.kind == FrameKind::Error
        && t.meta.correlation == 0
        && ErrorCode::from_payload(&t.payload) == ErrorCode::Refused
}

#[test]
fn plain_handshake_opens_both_sides() {
    let mut c = End::connect(info(1, 10), None, Some(NodeId::test(2)));
    let mut s = End::accept(info(2, 20), None);
    assert_eq!(c.s.phase(), Phase::AwaitAck);
    assert_eq!(s.s.phase(), Phase::AwaitHello);
    assert!(
        !c.s.holds_user_frames(),
        "no secret: frames follow the HELLO"
    );
    assert_eq!(c.s.payload_limit(MAX), MAX_HANDSHAKE_PAYLOAD);

    let hello = c.drain();
    let acts = s.feed(&hello);
    assert!(matches!(&acts[..], [Action::Opened(i)] if *i == info(1, 10)));
    assert_eq!(s.s.peer(), Some(NodeId::test(1)));
    let ack = s.sent();
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].meta.channel, Channel::HELLO_ACK);
    assert_eq!(ack[0].meta.source, NodeId::test(2));

    let mut bytes = Vec::new();
    ack[0].encode(&mut bytes);
    let acts = c.feed(&bytes);
    assert!(matches!(&acts[..], [Action::Opened(i)] if *i == info(2, 20)));
    assert!(c.drain().is_empty(), "no AUTH without a secret");
    assert_eq!(
        (c.s.phase(), c.s.peer()),
        (Phase::Open, Some(NodeId::test(2)))
    );
    assert_eq!(c.s.payload_limit(MAX), MAX);
    assert_eq!(
        c.s.role(),
        Role::Connect {
            expect: Some(NodeId::test(2))
        }
    );
    assert_eq!(s.s.role(), Role::Accept);
}

#[test]
fn handshake_with_a_secret_on_both_sides() {
    let mut c = End::connect(info(1, 10), Some(SECRET), Some(NodeId::test(2)));
    let mut s = End::accept(info(2, 20), Some(SECRET));
    assert!(c.s.holds_user_frames());
    let hello = c.drain();
    assert_eq!(
        hello.len(),
        frame::HEADER_LEN + info(1, 10).to_bytes().len() + 16
    );
    assert_eq!(s.feed(&hello), vec![Action::None]);
    assert_eq!(s.s.phase(), Phase::AwaitProof);
    assert_eq!(s.s.peer(), Some(NodeId::test(1)), "claimed, not proved yet");
    assert_eq!(s.s.payload_limit(MAX), MAX_HANDSHAKE_PAYLOAD);

    let ack = s.drain();
    let acts = c.feed(&ack);
    assert!(matches!(&acts[..], [Action::Opened(i)] if i.id == NodeId::test(2)));
    assert!(!c.s.holds_user_frames());
    let auth = c.sent();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].meta.channel, Channel::AUTH);
    assert_eq!(auth[0].payload.len(), auth::PROOF_LEN);

    let mut bytes = Vec::new();
    auth[0].encode(&mut bytes);
    let acts = s.feed(&bytes);
    assert!(matches!(&acts[..], [Action::Opened(i)] if i.id == NodeId::test(1)));
    assert!(s.s.is_open());
    for w in [&hello, &ack, &bytes] {
        assert!(!w.windows(SECRET.len()).any(|x| x == SECRET));
    }
}

#[test]
fn a_secret_on_the_server_only_is_refused() {
    let mut c = End::connect(info(1, 10), None, None);
    let mut s = End::accept(info(2, 20), Some(SECRET));
    let hello = c.drain();
    let acts = s.feed(&hello);
    assert_eq!(
        acts,
        vec![Action::Close(Close::Refused {
            reason: Refusal::Auth(AuthError::Missing)
        })]
    );
    assert!(s.s.is_closing());
    let refusal = s.drain();
    let acts = c.feed(&refusal);
    assert_eq!(
        acts,
        vec![Action::Close(Close::RefusedByPeer {
            code: ErrorCode::Refused
        })]
    );
    assert!(c.s.is_closing());
}

#[test]
fn a_secret_on_the_client_only_is_refused() {
    let mut c = End::connect(info(1, 10), Some(SECRET), None);
    let mut s = End::accept(info(2, 20), None);
    let hello = c.drain();
    let acts = s.feed(&hello);
    assert_eq!(
        acts,
        vec![Action::Close(Close::Refused {
            reason: Refusal::Auth(AuthError::Unexpected)
        })]
    );
    let sent = s.sent();
    assert!(matches!(&sent[..], [t] if is_refusal(t)));
}

#[test]
fn an_ack_with_or_without_a_proof_against_the_configuration_is_rejected() {
    // The client authenticates, the server's ack carries no proof.
    let mut c = End::connect(info(1, 10), Some(SECRET), None);
    let ack = control(2, Channel::HELLO_ACK, &info(2, 20).to_bytes());
    assert_eq!(
        c.feed(&ack),
        vec![Action::Close(Close::Rejected {
            reason: Refusal::Auth(AuthError::Missing)
        })]
    );
    // The client does not, the ack carries a proof block.
    let mut c = End::connect(info(1, 10), None, None);
    c.drain();
    let mut payload = info(2, 20).to_bytes();
    payload.extend_from_slice(&[0; 48]);
    let ack = control(2, Channel::HELLO_ACK, &payload);
    assert_eq!(
        c.feed(&ack),
        vec![Action::Close(Close::Rejected {
            reason: Refusal::Auth(AuthError::Unexpected)
        })]
    );
    assert!(c.drain().is_empty());
}

#[test]
fn wrong_cluster_is_refused_by_either_side() {
    let mut c = End::connect(
        NodeInfo {
            cluster: "dev".into(),
            ..info(1, 10)
        },
        None,
        None,
    );
    let mut s = End::accept(info(2, 20), None);
    let hello = c.drain();
    let acts = s.feed(&hello);
    assert!(matches!(
        &acts[..],
        [Action::Close(Close::Refused {
            reason: Refusal::Handshake(HandshakeError::WrongCluster { .. })
        })]
    ));
    assert!(matches!(&s.sent()[..], [t] if is_refusal(t)));
    // An accepting side of another cluster answering: rejected, nothing sent.
    let ack = control(2, Channel::HELLO_ACK, &info(2, 20).to_bytes());
    let acts = c.feed(&ack);
    assert!(matches!(
        &acts[..],
        [Action::Close(Close::Rejected {
            reason: Refusal::Handshake(HandshakeError::WrongCluster { .. })
        })]
    ));
    assert!(c.drain().is_empty());
}

#[test]
fn wrong_version_self_connection_and_garbage_are_refused() {
    let old = NodeInfo {
        version: 0,
        ..info(1, 10)
    };
    let cases = [
        (
            old.to_bytes(),
            Refusal::Handshake(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 0,
            }),
        ),
        (
            info(1, 20).to_bytes(),
            Refusal::Handshake(HandshakeError::SelfConnection),
        ),
        (
            vec![1, 2, 3],
            Refusal::Handshake(HandshakeError::Truncated {
                offset: 0,
                need: 16,
                have: 3,
            }),
        ),
        (
            [&info(1, 10).to_bytes()[..], &[0; 5]].concat(),
            Refusal::Auth(AuthError::Unexpected),
        ),
    ];
    for (payload, reason) in cases {
        let mut s = End::accept(info(2, 20), None);
        let w = control(1, Channel::HELLO, &payload);
        let acts = s.feed(&w);
        assert_eq!(acts, vec![Action::Close(Close::Refused { reason })]);
        assert!(matches!(&s.sent()[..], [t] if is_refusal(t)));
    }
    let mut s = End::accept(info(2, 20), Some(SECRET));
    let short_nonce = [&info(1, 10).to_bytes()[..], &[0; 5]].concat();
    let w = control(1, Channel::HELLO, &short_nonce);
    let acts = s.feed(&w);
    assert_eq!(
        acts,
        vec![Action::Close(Close::Refused {
            reason: Refusal::Auth(AuthError::Malformed { len: 5 })
        })]
    );
}

#[test]
fn another_node_at_the_dialled_address_is_rejected() {
    let mut c = End::connect(info(1, 10), None, Some(NodeId::test(9)));
    let ack = control(2, Channel::HELLO_ACK, &info(2, 20).to_bytes());
    assert_eq!(
        c.feed(&ack),
        vec![Action::Close(Close::Rejected {
            reason: Refusal::UnexpectedPeer {
                expected: NodeId::test(9),
                found: NodeId::test(2)
            }
        })]
    );
    assert!(!c.s.is_open());
}

#[test]
fn a_forged_server_proof_is_rejected_and_no_proof_is_sent() {
    let mut c = End::connect(info(1, 10), Some(SECRET), None);
    let mut s = End::accept(info(2, 20), Some(OTHER));
    let hello = c.drain();
    assert_eq!(s.feed(&hello), vec![Action::None]);
    let ack = s.drain();
    assert_eq!(
        c.feed(&ack),
        vec![Action::Close(Close::Rejected {
            reason: Refusal::Auth(AuthError::BadProof)
        })]
    );
    assert!(c.drain().is_empty(), "no client proof for a forged server");
    assert!(c.s.holds_user_frames() || c.s.is_closing());
}

#[test]
fn a_forged_client_proof_is_refused() {
    let mut c = End::connect(info(1, 10), Some(SECRET), None);
    let mut s = End::accept(info(2, 20), Some(SECRET));
    let hello = c.drain();
    s.feed(&hello);
    s.drain();
    let w = control(1, Channel::AUTH, &[7; auth::PROOF_LEN]);
    let acts = s.feed(&w);
    assert_eq!(
        acts,
        vec![Action::Close(Close::Refused {
            reason: Refusal::Auth(AuthError::BadProof)
        })]
    );
    assert!(matches!(&s.sent()[..], [t] if is_refusal(t)));
    assert!(!s.s.is_open());
}

#[test]
fn anything_but_the_proof_is_refused_while_it_is_due() {
    let mut c = End::connect(info(1, 10), Some(SECRET), None);
    let mut s = End::accept(info(2, 20), Some(SECRET));
    let hello = c.drain();
    s.feed(&hello);
    s.drain();
    let req = wire(FrameKind::Request, Channel(50), NodeId::test(1), 1, b"x");
    assert_eq!(
        s.feed(&req),
        vec![Action::Close(Close::Refused {
            reason: Refusal::NoProof {
                kind: FrameKind::Request,
                channel: Channel(50)
            }
        })]
    );
}

#[test]
fn frames_after_a_refusal_are_ignored() {
    let mut s = End::accept(info(2, 20), Some(SECRET));
    let w = control(1, Channel::HELLO, &info(1, 10).to_bytes());
    let acts = s.feed(&w);
    assert!(matches!(&acts[..], [Action::Close(Close::Refused { .. })]));
    let mut c = End::connect(info(1, 10), Some(SECRET), None);
    let later = [
        c.drain(),
        control(1, Channel::AUTH, &[0; 32]),
        control(1, Channel::HEARTBEAT, &[]),
        wire(FrameKind::Request, Channel(50), NodeId::test(1), 1, b"x"),
        wire(FrameKind::Error, Channel(0), NodeId::test(1), 0, &[5, 0]),
        wire(FrameKind::OneWay, Channel::HELLO, NodeId::test(7), 0, b""),
    ]
    .concat();
    let acts = s.feed(&later);
    assert_eq!(acts.len(), 6);
    assert!(acts.iter().all(|a| *a == Action::None), "{acts:?}");
    let sent = s.sent();
    assert!(
        matches!(&sent[..], [t] if is_refusal(t)),
        "one refusal only"
    );
    assert_eq!(s.s.phase(), Phase::Closing);
}

#[test]
fn a_spoofed_source_after_open_closes() {
    let (mut c, mut s) = open_pair(None);
    let spoofed = wire(FrameKind::Request, Channel(50), NodeId::test(5), 1, b"x");
    assert_eq!(
        s.feed(&spoofed),
        vec![Action::Close(Close::Protocol {
            violation: Violation::SpoofedSource {
                claimed: NodeId::test(5),
                peer: NodeId::test(1)
            }
        })]
    );
    let spoofed = wire(FrameKind::Reply, Channel(50), NodeId::test(1), 1, b"x");
    assert!(matches!(
        &c.feed(&spoofed)[..],
        [Action::Close(Close::Protocol {
            violation: Violation::SpoofedSource { .. }
        })]
    ));
    assert!(c.s.is_closing() && s.s.is_closing());
}

#[test]
fn user_frames_and_replies_before_open_close_the_connection() {
    for kind in [FrameKind::Request, FrameKind::OneWay, FrameKind::Reply] {
        let mut s = End::accept(info(2, 20), None);
        let w = wire(kind, Channel(50), NodeId::test(1), 1, b"x");
        let acts = s.feed(&w);
        assert_eq!(
            acts,
            vec![Action::Close(Close::Protocol {
                violation: Violation::UnexpectedFrame {
                    phase: Phase::AwaitHello,
                    kind,
                    channel: Channel(50)
                }
            })]
        );
        assert!(s.drain().is_empty(), "no refusal for a protocol violation");
        let mut c = End::connect(info(1, 10), None, None);
        c.drain();
        let w = wire(kind, Channel(50), NodeId::test(2), 1, b"x");
        let acts = c.feed(&w);
        assert!(matches!(
            &acts[..],
            [Action::Close(Close::Protocol {
                violation: Violation::UnexpectedFrame {
                    phase: Phase::AwaitAck,
                    ..
                }
            })]
        ));
    }
    // A heartbeat, or a HELLO sent to the connecting side, is no handshake either.
    let mut s = End::accept(info(2, 20), None);
    assert!(matches!(
        &s.feed(&control(1, Channel::HEARTBEAT, &[]))[..],
        [Action::Close(Close::Protocol { .. })]
    ));
    let mut c = End::connect(info(1, 10), None, None);
    assert!(matches!(
        &c.feed(&control(2, Channel::HELLO, &info(2, 20).to_bytes()))[..],
        [Action::Close(Close::Protocol { .. })]
    ));
}

#[test]
fn open_connections_dispatch_by_kind() {
    let (mut c, mut s) = open_pair(Some(SECRET));
    let one = NodeId::test(1);
    let req = wire(FrameKind::Request, Channel(50), one, 3, b"q");
    assert!(matches!(&s.feed(&req)[..], [Action::Deliver]));
    let ow = wire(FrameKind::OneWay, Channel(50), one, 0, b"o");
    assert!(matches!(&s.feed(&ow)[..], [Action::Deliver]));
    let two = NodeId::test(2);
    let call_reply = wire(FrameKind::Reply, Channel(60), two, 0, b"r");
    assert!(matches!(&c.feed(&call_reply)[..], [Action::CallReply]));
    let reply = wire(FrameKind::Reply, Channel(0), two, 7, b"pong");
    assert_eq!(
        c.feed(&reply),
        vec![Action::Complete {
            correlation: 7,
            result: Ok(&b"pong"[..])
        }]
    );
    let err = wire(
        FrameKind::Error,
        Channel(0),
        two,
        8,
        &ErrorCode::Paused.to_payload(),
    );
    assert_eq!(
        c.feed(&err),
        vec![Action::Complete {
            correlation: 8,
            result: Err(ErrorCode::Paused)
        }]
    );
    let call_err = wire(
        FrameKind::Error,
        Channel(50),
        two,
        0,
        &ErrorCode::NoHandler.to_payload(),
    );
    assert_eq!(
        c.feed(&call_err),
        vec![Action::CallFailed {
            channel: Channel(50),
            reply_channel: Channel(9),
            code: ErrorCode::NoHandler
        }]
    );
    assert!(c.drain().is_empty() && s.drain().is_empty());
    assert!(c.s.is_open() && s.s.is_open());
    // Answers on a connection we accepted answer nothing of ours.
    let stray = wire(FrameKind::Reply, Channel(60), one, 0, b"r");
    assert!(matches!(
        &s.feed(&stray)[..],
        [Action::Close(Close::Protocol { .. })]
    ));
}

#[test]
fn reserved_channels_and_stray_control_frames_close_an_open_connection() {
    let (_, mut s) = open_pair(None);
    let req = wire(FrameKind::OneWay, Channel(65500), NodeId::test(1), 0, b"");
    assert_eq!(
        s.feed(&req),
        vec![Action::Close(Close::Protocol {
            violation: Violation::ReservedChannel {
                channel: Channel(65500)
            }
        })]
    );
    for ch in [
        Channel::HELLO,
        Channel::HELLO_ACK,
        Channel::AUTH,
        Channel(50),
    ] {
        let (_, mut s) = open_pair(None);
        assert_eq!(
            s.feed(&control(1, ch, &[])),
            vec![Action::Close(Close::Protocol {
                violation: Violation::UnexpectedFrame {
                    phase: Phase::Open,
                    kind: FrameKind::Control,
                    channel: ch
                }
            })]
        );
    }
}

#[test]
fn heartbeats_are_answered_by_the_accepting_side_only() {
    let (mut c, mut s) = open_pair(None);
    assert_eq!(
        s.feed(&control(1, Channel::HEARTBEAT, &[])),
        vec![Action::None]
    );
    let echo = s.sent();
    assert!(matches!(&echo[..], [t] if t.is_heartbeat() && t.meta.source == NodeId::test(2)));
    assert_eq!(
        c.feed(&control(2, Channel::HEARTBEAT, &[])),
        vec![Action::None]
    );
    assert!(c.drain().is_empty(), "the connecting side does not echo");
}

#[test]
fn announcements_carry_new_info_and_malformed_ones_close() {
    let (mut c, _) = open_pair(None);
    let paused = NodeInfo {
        state: NodeState::Paused,
        channels: vec![Channel(50), Channel(51)],
        ..info(2, 20)
    };
    let w = control(2, Channel::ANNOUNCE, &paused.to_bytes());
    let acts = c.feed(&w);
    assert!(matches!(&acts[..], [Action::Announced(i)] if *i == paused));

    let w = control(2, Channel::ANNOUNCE, &[1, 2]);
    let acts = c.feed(&w);
    assert!(matches!(
        &acts[..],
        [Action::Close(Close::Protocol {
            violation: Violation::MalformedAnnounce { .. }
        })]
    ));

    let (mut c, _) = open_pair(None);
    let w = control(2, Channel::ANNOUNCE, &info(3, 20).to_bytes());
    let acts = c.feed(&w);
    assert_eq!(
        acts,
        vec![Action::Close(Close::Protocol {
            violation: Violation::AnnouncedOtherId {
                announced: NodeId::test(3),
                peer: NodeId::test(2)
            }
        })]
    );
}

fn observed(age: u64, read: u64, write: u64) -> Observed {
    Observed {
        open: false,
        mid_frame: false,
        age: Duration::from_millis(age),
        read_idle: Duration::from_millis(read),
        write_idle: Duration::from_millis(write),
        heartbeat_idle: Duration::from_millis(age),
        use_idle: Duration::from_millis(age),
    }
}

#[test]
fn an_unfinished_handshake_times_out() {
    let t = Timeouts::default();
    let now = Instant::now();
    let mut c = End::connect(info(1, 10), None, None);
    c.drain();
    assert_eq!(c.s.on_tick(now, &t, &observed(4_999, 0, 0)), None);
    // `seen.open` comes from the session, not from the driver.
    let lying = Observed {
        open: true,
        ..observed(5_000, 0, 0)
    };
    assert_eq!(
        c.s.on_tick(now, &t, &lying),
        Some(Close::Timeout {
            expired: Expired::Handshake
        })
    );
    assert!(c.s.is_closing());
    assert_eq!(c.s.on_tick(now, &t, &observed(9_000, 0, 0)), None, "once");
    assert!(c.drain().is_empty(), "no heartbeat before open");
}

#[test]
fn a_refusal_that_cannot_be_flushed_times_out() {
    let t = Timeouts::default();
    let mut s = End::accept(info(2, 20), Some(SECRET));
    s.feed(&control(1, Channel::HELLO, &info(1, 10).to_bytes()));
    assert_eq!(
        s.s.on_tick(Instant::now(), &t, &observed(5_000, 0, 0)),
        Some(Close::Timeout {
            expired: Expired::Handshake
        })
    );
}

#[test]
fn open_connections_fall_silent_or_stall_mid_frame() {
    let t = Timeouts::default();
    let now = Instant::now();
    let (mut c, mut s) = open_pair(None);
    assert_eq!(s.s.on_tick(now, &t, &observed(60_000, 1_999, 9_999)), None);
    assert_eq!(
        s.s.on_tick(now, &t, &observed(60_000, 2_000, 2_000)),
        Some(Close::Timeout {
            expired: Expired::Silence
        })
    );
    let stalled = Observed {
        mid_frame: true,
        ..observed(60_000, 2_000, 0)
    };
    assert_eq!(
        c.s.on_tick(now, &t, &stalled),
        Some(Close::Timeout {
            expired: Expired::Frame
        })
    );
}

#[test]
fn the_connecting_side_heartbeats_once_per_interval() {
    let t = Timeouts::default();
    let start = Instant::now();
    let (mut c, mut s) = open_pair(None);
    // Idle for an interval: one heartbeat.
    assert_eq!(c.s.on_tick(start, &t, &observed(500, 0, 500)), None);
    let beat = c.sent();
    assert!(matches!(&beat[..], [t] if t.is_heartbeat() && t.meta.source == NodeId::test(1)));
    // The driver passes the age as `heartbeat_idle`: the session remembers
    // its own heartbeat and sends none within the next interval.
    let soon = start + Duration::from_millis(100);
    assert_eq!(c.s.on_tick(soon, &t, &observed(600, 100, 600)), None);
    assert!(c.drain().is_empty());
    let later = start + Duration::from_millis(500);
    assert_eq!(c.s.on_tick(later, &t, &observed(1_000, 500, 1_000)), None);
    assert!(matches!(&c.sent()[..], [t] if t.is_heartbeat()));
    // Busy both ways: none due.
    let busy = start + Duration::from_millis(2_000);
    assert_eq!(c.s.on_tick(busy, &t, &observed(3_000, 10, 10)), None);
    assert!(c.drain().is_empty());
    // The accepting side only echoes.
    assert_eq!(s.s.on_tick(start, &t, &observed(500, 500, 500)), None);
    assert!(s.drain().is_empty());
}

/// An identity that counts how often the session asks for the node's info.
struct Counting {
    inner: FixedIdentity,
    asked: std::cell::Cell<usize>,
}

impl Identity for Counting {
    fn info(&self) -> NodeInfo {
        self.asked.set(self.asked.get() + 1);
        self.inner.info()
    }

    fn secret(&self) -> Option<&[u8]> {
        self.inner.secret()
    }
}

#[test]
fn the_identity_is_not_consulted_once_open() {
    let (mut c, _) = open_pair(Some(SECRET));
    let counting = Counting {
        inner: c.id.clone(),
        asked: std::cell::Cell::new(0),
    };
    let frames = [
        wire(FrameKind::Reply, Channel(0), NodeId::test(2), 7, b"pong"),
        control(2, Channel::HEARTBEAT, &[]),
        control(2, Channel::ANNOUNCE, &info(2, 20).to_bytes()),
    ]
    .concat();
    let mut rest = &frames[..];
    while let Ok(Decoded::Frame { frame, consumed }) = frame::decode(rest, MAX) {
        rest = &rest[consumed..];
        assert!(!matches!(c.s.on_frame(&counting, frame), Action::Close(_)));
    }
    assert_eq!(counting.asked.get(), 0, "the data path reads no node info");
}

#[test]
fn a_local_node_is_an_identity() {
    let local = LocalNode::new(
        info(1, 10),
        "127.0.0.1:1".parse().unwrap(),
        Some(std::sync::Arc::new(SECRET.to_vec())),
    );
    let mut c = Session::connect(&local, Some(NodeId::test(2)), [1; 16]);
    assert!(c.holds_user_frames());
    let hello = c.poll_transmit().unwrap();
    assert_eq!(hello.meta.source, NodeId::test(1));
    assert_eq!(hello.payload.len(), info(1, 10).to_bytes().len() + 16);
}

#[test]
fn each_side_knows_the_id_it_announced() {
    let mut c = End::connect(info(1, 10), None, Some(NodeId::test(2)));
    let mut s = End::accept(info(2, 20), None);
    assert_eq!(c.s.me(), Some(NodeId::test(1)));
    assert_eq!(
        s.s.me(),
        None,
        "the accepting side announces once a HELLO came"
    );
    let hello = c.drain();
    s.feed(&hello);
    assert_eq!(s.s.me(), Some(NodeId::test(2)));
}
