//! Fuzzes the connection state machine, `domi_core::session::Session`: an
//! accepting and a connecting session, with or without (matching) secrets,
//! fed arbitrary sequences of frames, genuine answers of each other and
//! housekeeping ticks.
//!
//! Input: byte 0 picks the configuration (bit 0: the server has a secret,
//! bit 1: the client has one, bit 2: the two secrets differ, bit 3: the
//! client names the server's id as expected). The rest is a list of steps:
//!
//! - `0`: the client's queued frames go to the server (a genuine exchange);
//! - `1`: the server's queued frames go to the client;
//! - `2`: a forged frame to the server or the client: target, kind, channel
//!   selector, source selector, correlation, then a length byte `n` and
//!   `n & 0x7f` payload bytes, after the sender's valid node info when
//!   `n & 0x80` (so forged HELLOs, ACKs and announcements get past decoding);
//! - `3`: a tick on one side with hand-made idleness (5 bytes, 50 ms units).
//!
//! Every frame goes through `frame::encode` and `frame::decode` (with the
//! session's payload limit). Nothing may panic, and the machine's promises
//! must hold: nothing is acted on once it is closing, delivered frames come
//! from the peer on user channels of an open connection, the payload limit
//! is the handshake cap until open.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run session -- -max_total_time=60`
//! from `fuzz/` (or `fuzz/run.sh` for all targets).
#![no_main]

use std::time::{Duration, Instant};

use domi_core::frame::{self, Decoded, FrameKind, Meta, DEFAULT_MAX_PAYLOAD, PROTOCOL_VERSION};
use domi_core::handshake::{NodeInfo, NodeState, MAX_HANDSHAKE_PAYLOAD};
use domi_core::session::{Action, Close, FixedIdentity, Session};
use domi_core::timeouts::{Observed, Timeouts};
use domi_core::{Channel, NodeId};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"0123456789abcdef-secret";
const OTHER: &[u8] = b"0123456789abcdef-other";

fn info(id: u16, instance: u64) -> NodeInfo {
    NodeInfo {
        version: PROTOCOL_VERSION,
        cluster: "prod".into(),
        id: NodeId::new(id).unwrap(),
        name: format!("node{id}"),
        instance,
        channels: vec![Channel(50), Channel(51)],
        state: NodeState::Serving,
    }
}

struct End {
    id: FixedIdentity,
    s: Session,
    /// Frames queued by the session, encoded, not yet delivered.
    outbox: Vec<u8>,
}

impl End {
    fn connect(info: NodeInfo, secret: Option<&[u8]>, expect: Option<NodeId>) -> End {
        let id = FixedIdentity {
            info,
            secret: secret.map(<[u8]>::to_vec),
        };
        let s = Session::connect(&id, expect, [1; 16]);
        End {
            id,
            s,
            outbox: Vec::new(),
        }
    }

    fn accept(info: NodeInfo, secret: Option<&[u8]>) -> End {
        End {
            id: FixedIdentity {
                info,
                secret: secret.map(<[u8]>::to_vec),
            },
            s: Session::accept([2; 16]),
            outbox: Vec::new(),
        }
    }

    /// Moves what the session queued to the outbox; returns those frames.
    fn flush(&mut self) -> Vec<Meta> {
        let mut metas = Vec::new();
        while let Some(t) = self.s.poll_transmit() {
            let before = self.outbox.len();
            t.encode(&mut self.outbox);
            // What the session queues is a well-formed frame from us.
            match frame::decode(&self.outbox[before..], u32::MAX) {
                Ok(Decoded::Frame { frame, consumed }) => {
                    assert_eq!(consumed, self.outbox.len() - before);
                    assert_eq!(frame.meta, t.meta);
                    assert_eq!(frame.meta.source, self.id.info.id);
                }
                other => panic!("queued frame does not decode: {other:?}"),
            }
            metas.push(t.meta);
        }
        metas
    }

    /// Hands the outbox over for delivery.
    fn take_outbox(&mut self) -> Vec<u8> {
        self.flush();
        std::mem::take(&mut self.outbox)
    }

    /// Feeds `wire` frame by frame; a malformed frame ends it (as a reader
    /// closes the connection).
    fn feed(&mut self, mut wire: &[u8]) {
        self.flush();
        while !wire.is_empty() {
            let limit = self.s.payload_limit(DEFAULT_MAX_PAYLOAD);
            assert_eq!(
                limit == DEFAULT_MAX_PAYLOAD,
                self.s.is_open(),
                "the handshake cap applies until open"
            );
            assert!(limit <= DEFAULT_MAX_PAYLOAD.max(MAX_HANDSHAKE_PAYLOAD));
            let Ok(Decoded::Frame { frame, consumed }) = frame::decode(wire, limit) else {
                return;
            };
            wire = &wire[consumed..];
            let closing = self.s.is_closing();
            let action = self.s.on_frame(&self.id, frame);
            let sent = self.flush();
            if closing {
                assert_eq!(action, Action::None, "acted on a frame after closing");
                assert!(sent.is_empty(), "answered a frame after closing");
                continue;
            }
            assert!(!(self.s.holds_user_frames() && self.s.is_open()));
            match action {
                Action::Opened(theirs) => {
                    assert!(self.s.is_open());
                    assert_eq!(self.s.peer(), Some(theirs.id));
                    assert!(!self.s.holds_user_frames());
                }
                Action::Deliver => {
                    assert!(self.s.is_open());
                    assert_eq!(Some(frame.meta.source), self.s.peer());
                    assert!(matches!(
                        frame.meta.kind,
                        FrameKind::Request | FrameKind::OneWay
                    ));
                    assert!(!frame.meta.channel.is_reserved());
                }
                Action::CallReply => {
                    assert!(self.s.is_open());
                    assert_eq!(Some(frame.meta.source), self.s.peer());
                    assert_eq!(frame.meta.kind, FrameKind::Reply);
                    assert_eq!(frame.meta.correlation, 0);
                }
                Action::Announced(i) => assert_eq!(Some(i.id), self.s.peer()),
                Action::Complete { .. } | Action::CallFailed { .. } => {
                    assert!(self.s.is_open())
                }
                Action::Close(Close::Refused { .. }) => {
                    assert!(self.s.is_closing());
                    // The refusal is queued: one error frame.
                    assert!(matches!(&sent[..], [m] if m.kind == FrameKind::Error));
                }
                Action::Close(_) => {
                    assert!(self.s.is_closing());
                    assert!(sent.is_empty(), "a close without a refusal sends nothing");
                }
                Action::None => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, mut steps)) = data.split_first() else {
        return;
    };
    let server_secret = (config & 1 != 0).then_some(SECRET);
    let client_secret = match (config & 2 != 0, config & 4 != 0) {
        (false, _) => None,
        (true, false) => Some(SECRET),
        (true, true) => Some(OTHER),
    };
    let expect = (config & 8 != 0).then_some(NodeId::new(2).unwrap());
    let mut client = End::connect(info(1, 10), client_secret, expect);
    let mut server = End::accept(info(2, 20), server_secret);
    let timeouts = Timeouts::default();
    let mut now = Instant::now();
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = steps.split_at_checked(n)?;
        steps = rest;
        Some(head)
    };
    while let Some(&[op]) = take(1) {
        match op % 4 {
            0 => {
                let wire = client.take_outbox();
                server.feed(&wire);
            }
            1 => {
                let wire = server.take_outbox();
                client.feed(&wire);
            }
            2 => {
                let Some(&[target, kind, chan, src, corr, len]) = take(6) else {
                    return;
                };
                let Some(raw) = take((len & 0x7f) as usize) else {
                    return;
                };
                let to_server = target & 1 == 0;
                let mut payload = Vec::new();
                if len & 0x80 != 0 {
                    let sender = if to_server {
                        &client.id.info
                    } else {
                        &server.id.info
                    };
                    sender.encode(&mut payload);
                }
                payload.extend_from_slice(raw);
                let channel = match chan % 8 {
                    0 => Channel::HELLO,
                    1 => Channel::HELLO_ACK,
                    2 => Channel::HEARTBEAT,
                    3 => Channel::ANNOUNCE,
                    4 => Channel::AUTH,
                    5 => Channel(Channel::RESERVED_START),
                    6 => Channel(50),
                    _ => Channel(u16::from(chan).wrapping_mul(257)),
                };
                let source = match src % 4 {
                    0 => NodeId::new(1).unwrap(),
                    1 => NodeId::new(2).unwrap(),
                    2 => NodeId::new(u16::from(src) * 4 % 1024).unwrap(),
                    _ => NodeId::new(NodeId::MAX).unwrap(),
                };
                let meta = Meta {
                    kind: FrameKind::from_u8(1 + kind % 5).expect("1..=5"),
                    channel,
                    reply_channel: Channel(u16::from(target >> 1)),
                    source,
                    correlation: u64::from(corr % 4),
                    ext: domi_core::frame::Ext::NONE,
                };
                let mut wire = Vec::new();
                frame::encode(&mut wire, &meta, &payload);
                if to_server {
                    server.feed(&wire);
                } else {
                    client.feed(&wire);
                }
            }
            _ => {
                let Some(&[target, age, read, write, mid]) = take(5) else {
                    return;
                };
                let ms = |b: u8| Duration::from_millis(u64::from(b) * 50);
                now += ms(age / 8);
                let seen = Observed {
                    open: mid & 2 != 0,
                    mid_frame: mid & 1 != 0,
                    age: ms(age),
                    read_idle: ms(read),
                    write_idle: ms(write),
                    heartbeat_idle: ms(age),
                    use_idle: ms(age),
                };
                let end = if target & 1 == 0 {
                    &mut server
                } else {
                    &mut client
                };
                end.flush();
                let close = end.s.on_tick(now, &timeouts, &seen);
                let sent = end.flush();
                if let Some(close) = close {
                    assert!(matches!(close, Close::Timeout { .. }));
                    assert!(end.s.is_closing());
                    assert!(sent.is_empty());
                }
                // Only heartbeats of an open connecting side come out of a tick.
                for m in sent {
                    assert_eq!(m.channel, Channel::HEARTBEAT);
                    assert!(end.s.is_open());
                }
            }
        }
    }
});
