//! A connection's outgoing bytes as a pure type: frames queued this turn,
//! the buffer being written, frames held back during authentication, and the
//! bookkeeping that tells, when the connection fails, which frames never
//! reached the kernel ([`WriteQueue::take_unsent`]).
//!
//! Positions count bytes of the connection's stream: `queued` is the end of
//! everything appended for writing, `written` what the kernel took. A frame
//! whose end is past `written` never left whole, and a peer cannot act on
//! half a frame, so it may go to another provider without breaking
//! at-most-once delivery. Frames of a `publish` are marked: every subscriber
//! gets its own copy, so they are never sent elsewhere.
//!
//! The socket code only calls [`WriteQueue::begin_write`], writes
//! [`WriteQueue::unwritten`], and reports progress with
//! [`WriteQueue::advance`].

use crate::frame::{self, Decoded, Meta};

/// Capacity of each of a queue's two buffers at first, and after a shrink.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// A buffer above this capacity is shrunk once traffic calms down.
const SHRINK_ABOVE: usize = 4 * 1024 * 1024;

/// The frame would take the queue over its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// A frame taken back from a failed connection, whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsent {
    /// The encoded frame (header and payload).
    pub bytes: Vec<u8>,
    /// Whether it is a `publish` copy.
    pub publish: bool,
}

/// Outgoing bytes of one connection (see the module docs).
#[derive(Debug)]
pub struct WriteQueue {
    max: usize,
    /// Frames queued since the last write began.
    out: Vec<u8>,
    /// The buffer being written; `spare[..written - spare_pos]` is written.
    spare: Vec<u8>,
    spare_pos: u64,
    /// Stream position after the end of `out`.
    queued: u64,
    /// Stream bytes the kernel took.
    written: u64,
    /// End positions of `publish` frames not yet written.
    publishes: Vec<u64>,
    /// Frames held back (authentication pending), and the end offsets of
    /// the `publish` frames among them.
    held: Option<Vec<u8>>,
    held_publishes: Vec<usize>,
}

impl WriteQueue {
    /// An empty queue refusing user frames beyond `max` queued bytes;
    /// with `hold`, user frames wait for [`WriteQueue::release`].
    pub fn new(max: usize, hold: bool) -> WriteQueue {
        WriteQueue {
            max,
            out: Vec::with_capacity(INITIAL_CAPACITY),
            spare: Vec::with_capacity(INITIAL_CAPACITY),
            spare_pos: 0,
            queued: 0,
            written: 0,
            publishes: Vec::new(),
            held: hold.then(Vec::new),
            held_publishes: Vec::new(),
        }
    }

    /// Queues a user frame (held while authentication is pending).
    pub fn push(&mut self, meta: &Meta, payload: &[u8], publish: bool) -> Result<(), Full> {
        let (buf, held) = match self.held.as_mut() {
            Some(h) => (h, true),
            None => (&mut self.out, false),
        };
        if buf.len() + payload.len() > self.max {
            return Err(Full);
        }
        let before = buf.len();
        frame::encode(buf, meta, payload);
        if held {
            if publish {
                self.held_publishes.push(buf.len());
            }
        } else {
            self.queued += (buf.len() - before) as u64;
            if publish {
                self.publishes.push(self.queued);
            }
        }
        Ok(())
    }

    /// Queues a control or handshake frame ahead of held user frames;
    /// dropped (`Err`) over the bound: a peer that never reads must not grow
    /// the queue with heartbeat answers.
    pub fn push_control(&mut self, meta: &Meta, payload: &[u8]) -> Result<(), Full> {
        if self.out.len() + payload.len() > self.max {
            return Err(Full);
        }
        let before = self.out.len();
        frame::encode(&mut self.out, meta, payload);
        self.queued += (self.out.len() - before) as u64;
        Ok(())
    }

    /// Whether user frames are held back.
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// Queues the held frames for writing, after what is queued now.
    pub fn release(&mut self) {
        if let Some(h) = self.held.take() {
            let base = self.queued;
            self.publishes
                .extend(self.held_publishes.drain(..).map(|e| base + e as u64));
            self.out.extend_from_slice(&h);
            self.queued += h.len() as u64;
        }
    }

    /// Starts writing what was queued, once the previous buffer is all
    /// written; returns whether there is anything to write.
    pub fn begin_write(&mut self) -> bool {
        if self.unwritten().is_empty() {
            self.spare.clear();
            // A large buffer is given back once the bursts that needed it
            // are over (what is queued now is small), not while they go on:
            // freeing and growing it again every write would cost a page
            // fault per 4 KiB of a steady stream.
            if self.spare.capacity() > SHRINK_ABOVE && self.out.len() < SHRINK_ABOVE / 8 {
                self.spare.shrink_to(INITIAL_CAPACITY);
            }
            std::mem::swap(&mut self.out, &mut self.spare);
            self.spare_pos = self.written;
            let written = self.written;
            if !self.publishes.is_empty() {
                self.publishes.retain(|&end| end > written);
            }
        }
        !self.unwritten().is_empty()
    }

    /// The bytes of the current write not yet taken by the kernel.
    pub fn unwritten(&self) -> &[u8] {
        let done = (self.written - self.spare_pos) as usize;
        &self.spare[done.min(self.spare.len())..]
    }

    /// The kernel took `n` more bytes of [`WriteQueue::unwritten`].
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.unwritten().len());
        self.written += n as u64;
    }

    /// Bytes queued and not yet taken by the kernel, held ones included.
    pub fn pending(&self) -> usize {
        self.unwritten().len() + self.out.len() + self.held.as_ref().map_or(0, Vec::len)
    }

    /// Takes out every frame that never reached the kernel whole, in stream
    /// order (held frames last), marked when it is a `publish` copy. The
    /// queue is empty afterwards.
    pub fn take_unsent(&mut self) -> Vec<Unsent> {
        let written = self.written;
        let publishes = std::mem::take(&mut self.publishes);
        let mut unsent = Vec::new();
        let mut scan = |buf: &[u8], base: u64, is_publish: &dyn Fn(u64) -> bool| {
            let mut off = 0usize;
            while let Ok(Decoded::Frame { consumed, .. }) = frame::decode(&buf[off..], u32::MAX) {
                let end = base + (off + consumed) as u64;
                if end > written {
                    unsent.push(Unsent {
                        bytes: buf[off..off + consumed].to_vec(),
                        publish: is_publish(end),
                    });
                }
                off += consumed;
            }
        };
        let in_stream = |end: u64| publishes.contains(&end);
        let spare = std::mem::take(&mut self.spare);
        scan(&spare, self.spare_pos, &in_stream);
        let out = std::mem::take(&mut self.out);
        scan(&out, self.spare_pos + spare.len() as u64, &in_stream);
        if let Some(held) = self.held.take() {
            let marks = std::mem::take(&mut self.held_publishes);
            // Offsets within `held`, counted past anything written so that
            // every held frame counts as unsent.
            let base = written + 1;
            let held_publish = |end: u64| marks.contains(&((end - base) as usize));
            scan(&held, base, &held_publish);
        }
        self.spare_pos = self.written;
        self.queued = self.written;
        unsent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Channel, NodeId};
    use crate::frame::FrameKind;
    use proptest::prelude::*;

    fn meta(kind: FrameKind, corr: u64) -> Meta {
        Meta {
            kind,
            channel: Channel(7),
            reply_channel: Channel(0),
            source: NodeId::test(1),
            correlation: corr,
            ext: crate::frame::Ext::NONE,
        }
    }

    fn corr(u: &Unsent) -> u64 {
        match frame::decode(&u.bytes, u32::MAX) {
            Ok(Decoded::Frame { frame, .. }) => frame.meta.correlation,
            other => panic!("not a whole frame: {other:?}"),
        }
    }

    /// Queues `bytes` of one-way frames and writes them all.
    fn burst(q: &mut WriteQueue, bytes: usize) {
        let payload = vec![0u8; 1000];
        let mut queued = 0;
        while queued < bytes {
            q.push(&meta(FrameKind::OneWay, 0), &payload, false)
                .unwrap();
            queued += frame::HEADER_LEN + payload.len();
        }
        assert!(q.begin_write());
        let n = q.unwritten().len();
        q.advance(n);
    }

    #[test]
    fn a_large_buffer_is_kept_through_a_stream_and_given_back_after_it() {
        let mut q = WriteQueue::new(64 << 20, false);
        burst(&mut q, 8 << 20);
        burst(&mut q, 8 << 20);
        // The buffer of the first burst is now the queue's: kept, since the
        // stream goes on.
        assert!(q.out.capacity() >= 8 << 20);
        burst(&mut q, 8 << 20);
        let big = q.out.capacity().max(q.spare.capacity());
        assert!(big >= 8 << 20);
        // Quiet: small writes give both large buffers back.
        burst(&mut q, 1000);
        burst(&mut q, 1000);
        burst(&mut q, 1000);
        assert!(q.out.capacity() < SHRINK_ABOVE && q.spare.capacity() < SHRINK_ABOVE);
    }

    #[test]
    fn a_partly_written_frame_is_unsent_and_a_whole_one_is_not() {
        let mut q = WriteQueue::new(1 << 20, false);
        q.push(&meta(FrameKind::Request, 1), b"aaaa", false)
            .unwrap();
        q.push(&meta(FrameKind::OneWay, 2), b"bbbb", true).unwrap();
        assert!(q.begin_write());
        let first = frame::HEADER_LEN + 4;
        q.advance(first + 3); // frame 1 whole, frame 2 in part
        q.push(&meta(FrameKind::Request, 3), b"c", false).unwrap();
        let unsent = q.take_unsent();
        assert_eq!(unsent.iter().map(corr).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            unsent.iter().map(|u| u.publish).collect::<Vec<_>>(),
            vec![true, false]
        );
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn held_frames_follow_the_handshake_and_keep_their_marks() {
        let mut q = WriteQueue::new(1 << 20, true);
        q.push_control(&meta(FrameKind::Control, 0), b"hello")
            .unwrap();
        q.push(&meta(FrameKind::OneWay, 1), b"p", true).unwrap();
        q.push(&meta(FrameKind::Request, 2), b"r", false).unwrap();
        assert!(q.begin_write());
        assert_eq!(q.unwritten().len(), frame::HEADER_LEN + 5, "only the HELLO");
        let n = q.unwritten().len();
        q.advance(n);
        q.push_control(&meta(FrameKind::Control, 0), b"auth")
            .unwrap();
        q.release();
        assert!(!q.is_holding());
        assert!(q.begin_write());
        let unsent = q.take_unsent();
        assert_eq!(unsent.iter().map(corr).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(
            unsent.iter().map(|u| u.publish).collect::<Vec<_>>(),
            vec![false, true, false]
        );
    }

    #[test]
    fn the_bound_refuses_user_frames_and_drops_control_ones() {
        let mut q = WriteQueue::new(10, false);
        assert_eq!(
            q.push(&meta(FrameKind::Request, 1), &[0; 11], false),
            Err(Full)
        );
        assert_eq!(
            q.push_control(&meta(FrameKind::Control, 0), &[0; 11]),
            Err(Full)
        );
        assert_eq!(q.pending(), 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push { publish: bool, len: usize },
        Control,
        Release,
        Write,
        Advance(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), 0usize..40).prop_map(|(publish, len)| Op::Push { publish, len }),
            1 => Just(Op::Control),
            1 => Just(Op::Release),
            2 => Just(Op::Write),
            3 => (0usize..120).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever is queued, held, released and written in whatever
        /// order, the unsent frames are exactly those whose end lies past
        /// the bytes written (held ones always), in stream order, with their
        /// publish marks; and the bytes written are a prefix of the stream.
        #[test]
        fn unsent_is_exactly_what_did_not_leave_whole(
            hold in any::<bool>(),
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let mut q = WriteQueue::new(1 << 20, hold);
            // The model: frames in stream order as (correlation, end, publish),
            // held frames apart, and the stream's bytes.
            let mut stream: Vec<(u64, u64, bool)> = Vec::new();
            let mut held: Vec<(u64, bool)> = Vec::new();
            let mut holding = hold;
            let mut bytes: Vec<u8> = Vec::new();
            let mut held_bytes: Vec<u8> = Vec::new();
            let mut sent: Vec<u8> = Vec::new();
            let mut next = 1u64;
            for op in ops {
                match op {
                    Op::Push { publish, len } => {
                        let m = meta(FrameKind::OneWay, next);
                        q.push(&m, &vec![next as u8; len], publish).unwrap();
                        if holding {
                            frame::encode(&mut held_bytes, &m, &vec![next as u8; len]);
                            held.push((next, publish));
                        } else {
                            frame::encode(&mut bytes, &m, &vec![next as u8; len]);
                            stream.push((next, bytes.len() as u64, publish));
                        }
                        next += 1;
                    }
                    Op::Control => {
                        let m = meta(FrameKind::Control, next);
                        q.push_control(&m, b"ctl").unwrap();
                        frame::encode(&mut bytes, &m, b"ctl");
                        stream.push((next, bytes.len() as u64, false));
                        next += 1;
                    }
                    Op::Release => {
                        q.release();
                        if holding {
                            holding = false;
                            let base = bytes.len() as u64;
                            let mut off = 0usize;
                            for (c, p) in held.drain(..) {
                                let Ok(Decoded::Frame { consumed, .. }) =
                                    frame::decode(&held_bytes[off..], u32::MAX) else { unreachable!() };
                                off += consumed;
                                stream.push((c, base + off as u64, p));
                            }
                            bytes.extend_from_slice(&held_bytes);
                            held_bytes.clear();
                        }
                    }
                    Op::Write => {
                        q.begin_write();
                    }
                    Op::Advance(n) => {
                        let take = n.min(q.unwritten().len());
                        sent.extend_from_slice(&q.unwritten()[..take]);
                        q.advance(n);
                    }
                }
            }
            prop_assert_eq!(&bytes[..sent.len()], &sent[..]);
            let written = sent.len() as u64;
            let expected: Vec<(u64, bool)> = stream
                .iter()
                .filter(|(_, end, _)| *end > written)
                .map(|&(c, _, p)| (c, p))
                .chain(held.iter().copied())
                .collect();
            let got: Vec<(u64, bool)> = q
                .take_unsent()
                .iter()
                .map(|u| (corr(u), u.publish))
                .collect();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(q.pending(), 0);
        }
    }
}
