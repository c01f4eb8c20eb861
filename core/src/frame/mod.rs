//! The frame codec: pure, no I/O, no allocation per frame.
//!
//! Every frame is a fixed 24-byte little-endian header followed by the
//! extensions its flags announce, then the payload. The header is read in
//! place with `zerocopy` (no copy of header or payload):
//!
//! ```text
//! byte  0..2   magic          u16 LE  0x4D44 ("DM" on the wire)
//! byte  2      version        u8      PROTOCOL_VERSION (2)
//! byte  3      kind           u8      1 request, 2 one-way, 3 reply, 4 error, 5 control
//! byte  4..8   payload_len    u32 LE  bytes after the header (extensions + payload),
//!                                     <= the configured maximum + MAX_EXT_LEN
//! byte  8..10  channel        u16 LE  destination channel (control: a reserved channel)
//! byte 10..12  reply_channel  u16 LE  where a reply goes for `call`; 0 otherwise
//! byte 12..14  source         u16 LE  sender's node id (0..=1023)
//! byte 14..16  flags          u16 LE  bit 0: an extension block follows (below)
//! byte 16..24  correlation    u64 LE  request/reply pairing; 0 = no waiter
//! byte 24..    extensions     only when flags bit 0 is set (below)
//!              payload        the rest of payload_len
//! ```
//!
//! Flags (version 2; version 1 sent 0 and ignored them): bit 0 (`EXT`) says
//! an extension block follows the header; the other bits are reserved, sent
//! as 0, and a frame with one set is malformed. The block is type-tagged, so
//! a later version can add fields that this one skips:
//!
//! ```text
//! u16 LE       block_len   bytes of fields after this u16 (at least one field)
//! per field:   u8 tag, u8 len, then len bytes; an unknown tag is skipped,
//!              a known one twice or with a wrong len is malformed
//!   tag 1  DEADLINE  len 4    u32 LE  the caller's remaining time in microseconds
//!                                     when the frame was queued, saturating at
//!                                     u32::MAX (about 71.6 minutes), which means
//!                                     "no deadline". Requests only.
//!   tag 2  ROUTE     len 2n   n × u16 LE channels (1 <= n <= MAX_ROUTE): the
//!                                     pipeline stages after this one, the next
//!                                     first. Requests and one-way messages only.
//!   tag 3  TRACE     len 25   16-byte trace id, 8-byte span id (the sender's
//!                                     span: the parent of the handler's), 1 byte
//!                                     W3C trace flags. Requests and one-way
//!                                     messages, only from nodes with trace context
//!                                     on (see crate::trace).
//! ```
//!
//! A request with a deadline, for example, carries 8 more bytes: flags
//! `01 00`, then `06 00 01 04` and the microseconds.
//!
//! The deadline is relative, so clocks need not agree: the receiver adds it
//! to the frame's arrival time (transit time is not subtracted, so the
//! receiver's deadline is never earlier than the caller's). A frame with no
//! extension is byte for byte what version 1 sent, with version 2.
//!
//! [`decode`] tells "need more bytes" apart from "malformed", never panics and
//! borrows the payload from the input buffer. [`encode`] appends one frame to a
//! write buffer, so many frames can leave in one write.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::channel::{Channel, NodeId};

mod ext;

pub use ext::{Ext, Route};

/// The magic number opening every frame.
pub const MAGIC: u16 = 0x4D44;
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 2;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 24;
/// Default maximum payload: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Flag bit: an extension block ([`Ext`]) follows the header.
pub const FLAG_EXT: u16 = 1 << 0;
/// The most pipeline stages a route extension carries after the current one.
pub const MAX_ROUTE: usize = 8;
/// The most bytes a received extension block may add to a payload (room
/// for this version's fields and later ones).
pub const MAX_EXT_LEN: u32 = 256;

/// The fixed frame header as it lies on the wire.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    magic: U16,
    version: u8,
    kind: u8,
    payload_len: U32,
    channel: U16,
    reply_channel: U16,
    source: U16,
    flags: U16,
    correlation: U64,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);
const _: () = assert!(std::mem::align_of::<Header>() == 1);

/// What a frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A request: the handler may reply.
    Request = 1,
    /// A one-way message: no reply is expected.
    OneWay = 2,
    /// A handler's reply.
    Reply = 3,
    /// An error answer to a request (payload: [`crate::ErrorCode`] as u16 LE).
    Error = 4,
    /// Bus control: handshake, heartbeat, announcements.
    Control = 5,
}

impl FrameKind {
    /// Whether handling a frame of this kind makes work for another task:
    /// a request's reply to write, an answer's caller to wake (one-way and
    /// control frames do neither).
    pub const fn wakes_others(self) -> bool {
        matches!(
            self,
            FrameKind::Request | FrameKind::Reply | FrameKind::Error
        )
    }

    /// The kind for a wire byte, if known.
    pub const fn from_u8(v: u8) -> Option<FrameKind> {
        match v {
            1 => Some(FrameKind::Request),
            2 => Some(FrameKind::OneWay),
            3 => Some(FrameKind::Reply),
            4 => Some(FrameKind::Error),
            5 => Some(FrameKind::Control),
            _ => None,
        }
    }
}

/// The routing fields of a frame, everything but the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// What the frame is for.
    pub kind: FrameKind,
    /// Destination channel.
    pub channel: Channel,
    /// Channel a reply goes to (`call`); `Channel(0)` when unused.
    pub reply_channel: Channel,
    /// Sender's node id.
    pub source: NodeId,
    /// Request/reply pairing; 0 means no waiter.
    pub correlation: u64,
    /// The extensions the frame carries (none for most frames).
    pub ext: Ext,
}

/// A decoded frame borrowing its payload from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Routing fields.
    pub meta: Meta,
    /// The payload, borrowed in place.
    pub payload: &'a [u8],
}

/// Outcome of [`decode`] on a buffer that is not malformed.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame; `consumed` bytes of the buffer belong to it.
    Frame {
        /// The frame, borrowing from the buffer.
        frame: Frame<'a>,
        /// Header plus payload length.
        consumed: usize,
    },
    /// The buffer holds a prefix of a frame; at least `need` more bytes are required.
    Incomplete {
        /// Bytes missing before the frame can be decoded.
        need: usize,
    },
}

/// A malformed frame. The connection that sent it cannot be trusted any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first two bytes are not [`MAGIC`].
    #[error("bad magic {found:#06x} (expected {MAGIC:#06x})")]
    BadMagic {
        /// What was there.
        found: u16,
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {found} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// What was there.
        found: u8,
    },
    /// An unknown frame kind byte.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// What was there.
        found: u8,
    },
    /// The declared payload exceeds the configured maximum.
    #[error("declared payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Declared length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// The source id is outside `0..=1023`.
    #[error("source node id {found} out of range")]
    BadSource {
        /// What was there.
        found: u16,
    },
    /// The flags announce an extension this build does not know, one the
    /// frame's kind cannot carry, or one the payload cannot hold.
    #[error("bad extension (flags {flags:#06x}): {what}")]
    BadExtension {
        /// The header's flags.
        flags: u16,
        /// What is wrong.
        what: &'static str,
    },
}

/// Decodes the frame at the start of `buf`, borrowing its payload.
///
/// The header is validated as soon as it is complete, so an oversized declared
/// length is refused before any of its payload is awaited.
#[inline(always)]
pub fn decode(buf: &[u8], max_payload: u32) -> Result<Decoded<'_>, FrameError> {
    let Ok((header, rest)) = Header::ref_from_prefix(buf) else {
        return Ok(Decoded::Incomplete {
            need: HEADER_LEN - buf.len(),
        });
    };
    let mut meta = validate(header, max_payload)?;
    let len = header.payload_len.get() as usize;
    if rest.len() < len {
        return Ok(Decoded::Incomplete {
            need: len - rest.len(),
        });
    }
    let body = &rest[..len];
    let flags = header.flags.get();
    let payload = if flags == 0 {
        body
    } else {
        let (ext, at) = Ext::read(flags, meta.kind, body)?;
        meta.ext = ext;
        let payload = &body[at..];
        if payload.len() > max_payload as usize {
            return Err(FrameError::PayloadTooLarge {
                len: payload.len() as u32,
                max: max_payload,
            });
        }
        payload
    };
    Ok(Decoded::Frame {
        frame: Frame { meta, payload },
        consumed: HEADER_LEN + len,
    })
}

#[inline(always)]
fn validate(h: &Header, max_payload: u32) -> Result<Meta, FrameError> {
    if h.magic.get() != MAGIC {
        return Err(FrameError::BadMagic {
            found: h.magic.get(),
        });
    }
    if h.version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion { found: h.version });
    }
    let kind = FrameKind::from_u8(h.kind).ok_or(FrameError::UnknownKind { found: h.kind })?;
    let len = h.payload_len.get();
    // Extensions ride on top of the payload bound (zero without them).
    let max = if h.flags.get() == 0 {
        max_payload
    } else {
        max_payload.saturating_add(MAX_EXT_LEN)
    };
    if len > max {
        return Err(FrameError::PayloadTooLarge { len, max });
    }
    let source = NodeId::new(h.source.get()).ok_or(FrameError::BadSource {
        found: h.source.get(),
    })?;
    Ok(Meta {
        kind,
        channel: Channel(h.channel.get()),
        reply_channel: Channel(h.reply_channel.get()),
        source,
        correlation: h.correlation.get(),
        ext: Ext::NONE,
    })
}

/// Appends one frame (header then payload) to `out`.
///
/// The caller checks the payload against the maximum before encoding (see
/// [`check_len`]); a payload over `u32::MAX` cannot be represented and panics
/// in debug builds only through that contract being broken.
pub fn encode(out: &mut Vec<u8>, meta: &Meta, payload: &[u8]) {
    encode_parts(out, meta, &[payload]);
}

/// Appends one frame whose payload is the concatenation of `parts`, after
/// the extensions of `meta.ext`.
pub fn encode_parts(out: &mut Vec<u8>, meta: &Meta, parts: &[&[u8]]) {
    let len: usize = meta.ext.wire_len() + parts.iter().map(|p| p.len()).sum::<usize>();
    debug_assert!(len <= u32::MAX as usize);
    let header = Header {
        magic: U16::new(MAGIC),
        version: PROTOCOL_VERSION,
        kind: meta.kind as u8,
        payload_len: U32::new(len as u32),
        channel: U16::new(meta.channel.0),
        reply_channel: U16::new(meta.reply_channel.0),
        source: U16::new(meta.source.get()),
        flags: U16::new(meta.ext.flags()),
        correlation: U64::new(meta.correlation),
    };
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(header.as_bytes());
    meta.ext.write(out);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Checks a payload length against the maximum, as senders must before encoding.
pub fn check_len(len: usize, max_payload: u32) -> Result<(), (usize, u32)> {
    if len > max_payload as usize {
        Err((len, max_payload))
    } else {
        Ok(())
    }
}

/// The receive buffer length to grow to when `have` bytes of a frame are
/// buffered, `need` more are missing and the buffer holds `current` bytes.
///
/// At most doubles per call, so a header that declares a large payload costs
/// memory only as its bytes actually arrive (a peer cannot make a node commit
/// `max_payload` bytes by sending 24).
pub fn grown_len(current: usize, have: usize, need: usize) -> usize {
    let wanted = have.saturating_add(need);
    if have < current || wanted <= current {
        // Room is left to read into: no growth yet.
        current
    } else {
        wanted.min(current.saturating_mul(2).max(HEADER_LEN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_and_answers_wake_other_tasks() {
        let woke: Vec<bool> = (1..=5)
            .map(|v| FrameKind::from_u8(v).unwrap().wakes_others())
            .collect();
        // Request, OneWay, Reply, Error, Control.
        assert_eq!(woke, [true, false, true, true, false]);
    }

    #[test]
    fn buffer_grows_with_arrival_not_declaration() {
        // Room left: no growth, whatever the declared length.
        assert_eq!(grown_len(1024, 100, 16 << 20), 1024);
        // Full: at most doubles.
        assert_eq!(grown_len(1024, 1024, 16 << 20), 2048);
        // Full and the frame fits within a doubling: exactly what it needs.
        assert_eq!(grown_len(1024, 1024, 10), 1034);
        assert_eq!(grown_len(1024, 24, 1000), 1024);
        assert_eq!(grown_len(0, 0, 24), 24);
        assert_eq!(grown_len(usize::MAX, usize::MAX, usize::MAX), usize::MAX);
    }

    fn meta(kind: FrameKind) -> Meta {
        Meta {
            kind,
            channel: Channel(50),
            reply_channel: Channel(7),
            source: NodeId::test(3),
            correlation: 0x0102_0304_0506_0708,
            ext: Ext::NONE,
        }
    }

    #[test]
    fn golden_bytes_for_each_kind() {
        for (kind, byte) in [
            (FrameKind::Request, 1u8),
            (FrameKind::OneWay, 2),
            (FrameKind::Reply, 3),
            (FrameKind::Error, 4),
            (FrameKind::Control, 5),
        ] {
            let mut out = Vec::new();
            encode(&mut out, &meta(kind), b"hi");
            let expected: Vec<u8> = [
                &[0x44, 0x4D, 2, byte][..],
                &[2, 0, 0, 0],
                &[50, 0, 7, 0, 3, 0, 0, 0],
                &[8, 7, 6, 5, 4, 3, 2, 1],
                b"hi",
            ]
            .concat();
            assert_eq!(out, expected, "{kind:?}");
        }
    }

    #[test]
    fn decode_borrows_and_reports_consumed() {
        let mut out = Vec::new();
        encode(&mut out, &meta(FrameKind::Request), b"abc");
        encode(&mut out, &meta(FrameKind::Reply), b"");
        let Decoded::Frame { frame, consumed } = decode(&out, 16).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(frame.payload, b"abc");
        assert_eq!(frame.meta, meta(FrameKind::Request));
        assert_eq!(consumed, HEADER_LEN + 3);
        // The payload points into the input buffer: no copy.
        assert_eq!(frame.payload.as_ptr(), out[HEADER_LEN..].as_ptr());
        let Decoded::Frame { frame, .. } = decode(&out[consumed..], 16).unwrap() else {
            panic!("expected a second frame");
        };
        assert_eq!(frame.meta.kind, FrameKind::Reply);
    }

    #[test]
    fn truncated_input_asks_for_more() {
        let mut out = Vec::new();
        encode(&mut out, &meta(FrameKind::Request), b"hello");
        assert_eq!(
            decode(&[], 64),
            Ok(Decoded::Incomplete { need: HEADER_LEN })
        );
        assert_eq!(
            decode(&out[..10], 64),
            Ok(Decoded::Incomplete {
                need: HEADER_LEN - 10
            })
        );
        assert_eq!(
            decode(&out[..HEADER_LEN + 2], 64),
            Ok(Decoded::Incomplete { need: 3 })
        );
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let mut good = Vec::new();
        encode(&mut good, &meta(FrameKind::Request), b"x");

        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(
            decode(&bad, 64),
            Err(FrameError::BadMagic { found: 0x4D00 })
        );

        let mut bad = good.clone();
        bad[2] = 9;
        assert_eq!(
            decode(&bad, 64),
            Err(FrameError::UnsupportedVersion { found: 9 })
        );

        let mut bad = good.clone();
        bad[3] = 0;
        assert_eq!(decode(&bad, 64), Err(FrameError::UnknownKind { found: 0 }));

        let mut bad = good.clone();
        bad[12..14].copy_from_slice(&2000u16.to_le_bytes());
        assert_eq!(decode(&bad, 64), Err(FrameError::BadSource { found: 2000 }));
    }

    #[test]
    fn oversize_length_is_refused_from_the_header_alone() {
        let mut out = Vec::new();
        encode(&mut out, &meta(FrameKind::Request), b"");
        out[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&out[..HEADER_LEN], 1024),
            Err(FrameError::PayloadTooLarge {
                len: u32::MAX,
                max: 1024
            })
        );
    }

    #[test]
    fn exact_maximum_passes() {
        let payload = vec![7u8; 100];
        let mut out = Vec::new();
        encode(&mut out, &meta(FrameKind::OneWay), &payload);
        assert!(matches!(decode(&out, 100), Ok(Decoded::Frame { .. })));
        assert!(matches!(
            decode(&out, 99),
            Err(FrameError::PayloadTooLarge { len: 100, max: 99 })
        ));
        assert_eq!(check_len(100, 100), Ok(()));
        assert_eq!(check_len(101, 100), Err((101, 100)));
    }

    #[test]
    fn golden_bytes_with_extensions() {
        let mut m = meta(FrameKind::Request);
        m.ext = Ext {
            deadline: Some(0x0A0B_0C0D),
            route: Route::new(&[Channel(0x0102), Channel(0x0304)]).unwrap(),
            trace: None,
        };
        let mut out = Vec::new();
        encode(&mut out, &m, b"hi");
        let expected: Vec<u8> = [
            &[0x44, 0x4D, 2, 1][..],
            &[2 + 2 + 6 + 6, 0, 0, 0],
            &[50, 0, 7, 0, 3, 0],
            &[1, 0],
            &[8, 7, 6, 5, 4, 3, 2, 1],
            &[12, 0],
            &[1, 4, 0x0D, 0x0C, 0x0B, 0x0A],
            &[2, 4, 0x02, 0x01, 0x04, 0x03],
            b"hi",
        ]
        .concat();
        assert_eq!(out, expected);
        let Decoded::Frame { frame, consumed } = decode(&out, 2).unwrap() else {
            panic!("expected a frame");
        };
        // The payload bound applies to the payload; extensions ride on top.
        assert_eq!(consumed, out.len());
        assert_eq!(frame.meta, m);
        assert_eq!(frame.payload, b"hi");
        let (next, rest) = frame.meta.ext.route.split_first().unwrap();
        assert_eq!(next, Channel(0x0102));
        assert_eq!(rest.channels().collect::<Vec<_>>(), [Channel(0x0304)]);
        assert!(rest.split_first().unwrap().1.is_empty());
        // The trace context: tag 3, 25 bytes, after the others.
        m.ext.trace = Some(crate::trace::TraceContext {
            trace_id: [0x11; 16],
            span_id: [0x22; 8],
            flags: 1,
        });
        let mut traced = Vec::new();
        encode(&mut traced, &m, b"hi");
        let tail: Vec<u8> = [&[3, 25][..], &[0x11; 16], &[0x22; 8], &[1], b"hi"].concat();
        assert!(traced.ends_with(&tail));
        assert_eq!(&traced[HEADER_LEN..HEADER_LEN + 2], &[12 + 27, 0]);
        let Decoded::Frame { frame, .. } = decode(&traced, 2).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(frame.meta, m);
        // No extension: byte for byte the version 1 layout (flags 0).
        let mut plain = Vec::new();
        encode(&mut plain, &meta(FrameKind::Request), b"hi");
        assert_eq!(plain.len(), HEADER_LEN + 2);
        assert_eq!(&plain[14..16], &[0, 0]);
    }

    /// `kind` frame whose flags are `flags` and whose body is `body`; the
    /// payload decoded when it is well-formed.
    fn with_body(kind: FrameKind, flags: u16, body: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        encode(&mut out, &meta(kind), body);
        out[14..16].copy_from_slice(&flags.to_le_bytes());
        match decode(&out, 64) {
            Ok(Decoded::Frame { frame, .. }) => Ok(frame.payload.to_vec()),
            Ok(Decoded::Incomplete { .. }) => panic!("whole frame"),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn unknown_extension_fields_are_skipped() {
        // A field of a later version (tag 9), then a deadline, then "hi".
        let body = [&[10, 0, 9, 2, 0xEE, 0xEE, 1, 4, 5, 0, 0, 0][..], b"hi"].concat();
        let mut out = Vec::new();
        encode(&mut out, &meta(FrameKind::Request), &body);
        out[14] = 1;
        let Decoded::Frame { frame, .. } = decode(&out, 64).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(frame.meta.ext.deadline, Some(5));
        assert_eq!(frame.payload, b"hi");
    }

    #[test]
    fn bad_extensions_are_typed_errors() {
        use FrameKind::{Error, OneWay, Reply, Request};
        let is_bad =
            |r: Result<Vec<u8>, FrameError>| matches!(r, Err(FrameError::BadExtension { .. }));
        let deadline = [6, 0, 1, 4, 0, 0, 0, 0];
        let route = [4, 0, 2, 2, 5, 0];
        // Reserved flag bits.
        assert!(is_bad(with_body(Request, 1 << 5, &deadline)));
        assert!(is_bad(with_body(Request, 0xFFFF, &deadline)));
        // Fields on kinds that cannot carry them.
        assert!(is_bad(with_body(Reply, FLAG_EXT, &deadline)));
        assert!(is_bad(with_body(OneWay, FLAG_EXT, &deadline)));
        assert!(is_bad(with_body(Error, FLAG_EXT, &route)));
        // Truncated or inconsistent blocks and fields.
        assert!(is_bad(with_body(Request, FLAG_EXT, &[])));
        assert!(is_bad(with_body(Request, FLAG_EXT, &[0])));
        assert!(is_bad(with_body(Request, FLAG_EXT, &[0, 0])));
        assert!(is_bad(with_body(Request, FLAG_EXT, &[9, 0, 1, 4, 0])));
        assert!(is_bad(with_body(Request, FLAG_EXT, &[1, 0, 1])));
        assert!(is_bad(with_body(Request, FLAG_EXT, &[3, 0, 1, 4, 0])));
        assert!(is_bad(with_body(Request, FLAG_EXT, &[5, 0, 1, 3, 0, 0, 0])));
        assert!(is_bad(with_body(OneWay, FLAG_EXT, &[2, 0, 2, 0])));
        assert!(is_bad(with_body(OneWay, FLAG_EXT, &[5, 0, 2, 3, 1, 0, 0])));
        assert!(is_bad(with_body(
            OneWay,
            FLAG_EXT,
            &[[20, 0, 2, 18].as_slice(), &[1; 18]].concat()
        )));
        // Twice the same field.
        assert!(is_bad(with_body(
            Request,
            FLAG_EXT,
            &[12, 0, 1, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0]
        )));
        assert!(is_bad(with_body(
            OneWay,
            FLAG_EXT,
            &[8, 0, 2, 2, 5, 0, 2, 2, 6, 0]
        )));
        // Well-formed, with an empty payload.
        assert_eq!(with_body(OneWay, FLAG_EXT, &route), Ok(vec![]));
        assert_eq!(with_body(Request, FLAG_EXT, &deadline), Ok(vec![]));
        assert_eq!(Route::new(&[Channel(1); MAX_ROUTE + 1]), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn any_kind() -> impl Strategy<Value = FrameKind> {
            (1u8..=5).prop_map(|b| FrameKind::from_u8(b).unwrap())
        }

        proptest! {
            #[test]
            fn round_trip(kind in any_kind(), ch: u16, rc: u16, src in 0u16..=1023,
                          corr: u64, payload in proptest::collection::vec(any::<u8>(), 0..512),
                          deadline: Option<u32>,
                          route in proptest::collection::vec(any::<u16>(), 0..=MAX_ROUTE),
                          trace: Option<([u8; 16], [u8; 8], u8)>) {
                // Only the kinds that may carry an extension get one.
                let route: Vec<Channel> = route.into_iter().map(Channel).collect();
                let carries = matches!(kind, FrameKind::Request | FrameKind::OneWay);
                let ext = Ext {
                    deadline: deadline.filter(|_| kind == FrameKind::Request),
                    route: Route::new(&route).filter(|_| carries).unwrap_or(Route::EMPTY),
                    trace: trace
                        .filter(|_| carries)
                        .map(|(t, s, f)| crate::trace::TraceContext { trace_id: t, span_id: s, flags: f }),
                };
                let m = Meta { kind, channel: Channel(ch), reply_channel: Channel(rc),
                               source: NodeId::test(src), correlation: corr, ext };
                let mut out = Vec::new();
                encode(&mut out, &m, &payload);
                let Decoded::Frame { frame, consumed } = decode(&out, 1 << 20).unwrap() else {
                    panic!("incomplete");
                };
                prop_assert_eq!(frame.meta, m);
                prop_assert_eq!(frame.payload, &payload[..]);
                prop_assert_eq!(consumed, out.len());
                // Every strict prefix asks for more, never errors.
                for cut in 0..out.len() {
                    let is_incomplete = matches!(decode(&out[..cut], 1 << 20), Ok(Decoded::Incomplete { .. }));
                    prop_assert!(is_incomplete);
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), max: u32) {
                match decode(&bytes, max) {
                    Ok(Decoded::Frame { consumed, frame }) => {
                        prop_assert!(consumed <= bytes.len());
                        prop_assert!(frame.payload.len() as u64 <= max as u64);
                    }
                    Ok(Decoded::Incomplete { need }) => prop_assert!(need > 0),
                    Err(_) => {}
                }
            }
        }
    }
}
