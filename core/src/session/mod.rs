//! The connection protocol as one sans-I/O state machine.
//!
//! A [`Session`] owns one connection's protocol state: the handshake, the
//! optional authentication (see [`crate::auth`]), and which frames are legal
//! in which state. It never touches a socket, never reads a clock and never
//! draws a random number: frames and the time go in, [`Action`]s and
//! [`Transmit`]s come out. The shards, the static prober and the tests all
//! drive this one machine.
//!
//! ```text
//! connecting side                                 accepting side
//! Session::connect  ── HELLO info [‖ nonce_c] ──▶  AwaitHello
//! AwaitAck                                         (refused: Error(Refused), then close)
//!                   ◀── HELLO_ACK info [‖ nonce_s ‖ proof_s] ──
//!   no secret: Open                                no secret: Open
//!   secret: check proof_s, ── AUTH proof_c ──▶     AwaitProof: check proof_c, Open
//! Open: HEARTBEAT ──▶ (echoed), ◀── ANNOUNCE, user frames both ways
//! ```
//!
//! # Driving a session
//!
//! 1. Create it with [`Session::connect`] (which queues the HELLO) or
//!    [`Session::accept`].
//! 2. Read frames with the limit [`Session::payload_limit`] (the handshake
//!    cap applies until the connection is open) and pass each to
//!    [`Session::on_frame`] with the node's [`Identity`] (in a node, its
//!    [`LocalNode`]); call [`Session::on_tick`] from housekeeping.
//! 3. After every call, drain [`Session::poll_transmit`] into the write queue
//!    *before* executing the returned action: an `Opened` connecting side
//!    must send its AUTH before the user frames it held, and a refusal must
//!    be queued before the connection is told to close after flushing.
//! 4. While [`Session::holds_user_frames`] is true, user frames wait.

use std::collections::VecDeque;
use std::time::Instant;

use crate::auth::{self, AuthError, Nonce};
use crate::channel::{Channel, NodeId};
use crate::error::ErrorCode;
use crate::frame::{self, Frame, FrameKind, Meta};
use crate::handshake::{self, HandshakeError, NodeInfo, MAX_HANDSHAKE_PAYLOAD};
use crate::membership::LocalNode;
use crate::timeouts::{Expired, Observed, Timeouts};

#[cfg(test)]
mod tests;

/// Which side of the connection a session plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We connected; `expect` is the node id we dialled, when known.
    Connect {
        /// The id the accepting side must announce, if any.
        expect: Option<NodeId>,
    },
    /// The peer connected to us.
    Accept,
}

/// Where a session stands, as seen from outside (errors and status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepting side: waiting for the peer's HELLO.
    AwaitHello,
    /// Connecting side: HELLO sent, waiting for the HELLO_ACK.
    AwaitAck,
    /// Accepting side: HELLO_ACK with our proof sent, waiting for the
    /// client's AUTH proof.
    AwaitProof,
    /// Handshake done: user frames flow.
    Open,
    /// Refused or closed: nothing received is acted on any more.
    Closing,
}

/// A control or error frame the driver must write, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The frame's routing fields (source: our node id).
    pub meta: Meta,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Transmit {
    /// Appends the encoded frame to `out` (see [`frame::encode`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame::encode(out, &self.meta, &self.payload);
    }

    /// Whether this is a heartbeat: a heartbeat leaving is no proof that the
    /// peer still reads, so drivers do not count it as write progress.
    pub fn is_heartbeat(&self) -> bool {
        self.meta.kind == FrameKind::Control && self.meta.channel == Channel::HEARTBEAT
    }
}

/// Who this node is to a handshake: its info and the cluster secret.
///
/// A session asks only while the handshake runs (at most once per frame),
/// never once the connection is open, so reading the node's current info
/// costs nothing on the data path.
pub trait Identity {
    /// This node's current info: sent in the HELLO and the HELLO_ACK, the
    /// reference a peer's info is validated against.
    fn info(&self) -> NodeInfo;
    /// The cluster secret, when connections authenticate.
    fn secret(&self) -> Option<&[u8]>;
}

impl Identity for LocalNode {
    fn info(&self) -> NodeInfo {
        LocalNode::info(self)
    }

    fn secret(&self) -> Option<&[u8]> {
        LocalNode::secret(self)
    }
}

/// A fixed info and secret, for tests and tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedIdentity {
    /// The node's info.
    pub info: NodeInfo,
    /// The cluster secret, if any.
    pub secret: Option<Vec<u8>>,
}

impl Identity for FixedIdentity {
    fn info(&self) -> NodeInfo {
        self.info.clone()
    }

    fn secret(&self) -> Option<&[u8]> {
        self.secret.as_deref()
    }
}

/// Why a handshake was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The node info is malformed, or of another cluster or version, or
    /// this very process.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The authentication block is missing, unexpected, malformed, or its
    /// proof is wrong.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// The accepting side is another node than the one dialled.
    #[error("expected {expected} at that address, found {found}")]
    UnexpectedPeer {
        /// The node dialled.
        expected: NodeId,
        /// The node that answered.
        found: NodeId,
    },
    /// The client sent something else where its authentication proof was due.
    #[error("expected the authentication proof, got a {kind:?} frame on {channel}")]
    NoProof {
        /// The frame's kind.
        kind: FrameKind,
        /// Its channel.
        channel: Channel,
    },
}

/// A frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame not legal in the current phase.
    #[error("unexpected {kind:?} frame on {channel} in phase {phase:?}")]
    UnexpectedFrame {
        /// The phase the session was in.
        phase: Phase,
        /// The frame's kind.
        kind: FrameKind,
        /// Its channel.
        channel: Channel,
    },
    /// A frame whose source is not the connection's peer.
    #[error("frame from {claimed} on the connection of {peer}")]
    SpoofedSource {
        /// The source the frame claims.
        claimed: NodeId,
        /// The peer the handshake established.
        peer: NodeId,
    },
    /// A request or one-way message to a channel reserved for the bus.
    #[error("user frame to reserved {channel}")]
    ReservedChannel {
        /// The channel addressed.
        channel: Channel,
    },
    /// An announcement that does not decode.
    #[error("malformed announcement: {error}")]
    MalformedAnnounce {
        /// What is wrong with it.
        error: HandshakeError,
    },
    /// An announcement of another node id than the peer's.
    #[error("announcement of {announced} on the connection of {peer}")]
    AnnouncedOtherId {
        /// The id announced.
        announced: NodeId,
        /// The peer the handshake established.
        peer: NodeId,
    },
}

/// Why the session ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Close {
    /// Accepting side: we refused the peer's handshake. The refusal (an
    /// error frame with [`ErrorCode::Refused`]) is queued in
    /// [`Session::poll_transmit`]: close once it is flushed.
    #[error("refused the peer's handshake: {reason}")]
    Refused {
        /// Why.
        reason: Refusal,
    },
    /// Connecting side: the accepting side's answer is not acceptable.
    /// Nothing is sent: close now.
    #[error("rejected the peer's handshake answer: {reason}")]
    Rejected {
        /// Why.
        reason: Refusal,
    },
    /// The peer sent an error frame before the connection opened: it
    /// refused us.
    #[error("the peer refused the handshake ({code:?})")]
    RefusedByPeer {
        /// The code it sent.
        code: ErrorCode,
    },
    /// The peer broke the protocol.
    #[error("protocol violation: {violation}")]
    Protocol {
        /// What it did.
        violation: Violation,
    },
    /// Housekeeping found the connection expired.
    #[error("timed out: {expired:?}")]
    Timeout {
        /// Which limit.
        expired: Expired,
    },
}

/// What the driver does with one incoming frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Consumed (handshake step, heartbeat, ignored after a refusal); any
    /// answer is in [`Session::poll_transmit`].
    None,
    /// The handshake is done and the connection is open, with this peer:
    /// release held frames, clear the peer's down-mark, publish it.
    Opened(NodeInfo),
    /// The peer announced new information about itself.
    Announced(NodeInfo),
    /// The frame given to [`Session::on_frame`] is a user request or
    /// one-way frame (source and channel checked): hand it to the channel's
    /// handler; a request may be replied to. (The frame is not carried back:
    /// moving it through the return value cost the receive path a copy and
    /// a stall per frame.)
    Deliver,
    /// The frame given is a reply with correlation 0, the answer to a
    /// `call`: deliver it, one-way, to the handler of its channel (the
    /// caller's reply channel).
    CallReply,
    /// The answer to the request waiting under `correlation`.
    Complete {
        /// The request it answers.
        correlation: u64,
        /// The reply's payload, or the error code the peer answered with.
        result: Result<&'a [u8], ErrorCode>,
    },
    /// An error frame with correlation 0: a refused `call`. The refusing
    /// side puts the call's channel in `channel` and its reply channel in
    /// `reply_channel`.
    CallFailed {
        /// The channel the call went to.
        channel: Channel,
        /// The caller's reply channel.
        reply_channel: Channel,
        /// Why it was refused.
        code: ErrorCode,
    },
    /// Close the connection now, for this reason (after flushing
    /// [`Session::poll_transmit`] for [`Close::Refused`]).
    Close(Close),
}

#[derive(Clone, Debug)]
enum State {
    AwaitHello {
        nonce_s: Nonce,
    },
    AwaitAck {
        nonce_c: Option<Nonce>,
    },
    AwaitProof {
        theirs: Box<NodeInfo>,
        nonce_c: Nonce,
        nonce_s: Nonce,
    },
    Open {
        peer: NodeId,
    },
    /// We refused: the refusal is on its way, nothing else is acted on.
    Refusing,
    /// Closed for another reason: nothing is acted on.
    Closed,
}

/// One connection's protocol state machine (see the module docs).
#[derive(Clone, Debug)]
pub struct Session {
    role: Role,
    state: State,
    /// Our node id: the source of every frame we queue (accepting side:
    /// known once a HELLO arrived; nothing is queued before).
    me: NodeId,
    /// The peer's id once its HELLO or HELLO_ACK was accepted.
    peer: Option<NodeId>,
    /// When the last heartbeat was queued.
    last_heartbeat: Option<Instant>,
    out: VecDeque<Transmit>,
}

impl Session {
    /// The connecting side: queues the HELLO, carrying `nonce_c` when
    /// `local` has a secret. `expect` is the node id dialled, if known; the
    /// accepting side must have it.
    pub fn connect<I: Identity + ?Sized>(
        local: &I,
        expect: Option<NodeId>,
        nonce_c: Nonce,
    ) -> Session {
        let ours = local.info();
        let nonce_c = local.secret().map(|_| nonce_c);
        let mut hello = ours.to_bytes();
        if let Some(n) = &nonce_c {
            hello.extend_from_slice(n);
        }
        let mut s = Session::new(Role::Connect { expect }, State::AwaitAck { nonce_c });
        s.me = ours.id;
        s.control(Channel::HELLO, hello);
        s
    }

    /// The accepting side, waiting for a HELLO. `nonce_s` is used if the
    /// peer authenticates.
    pub fn accept(nonce_s: Nonce) -> Session {
        Session::new(Role::Accept, State::AwaitHello { nonce_s })
    }

    fn new(role: Role, state: State) -> Session {
        Session {
            role,
            state,
            me: NodeId::FIRST,
            peer: None,
            last_heartbeat: None,
            out: VecDeque::new(),
        }
    }

    /// Which side this session plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the session stands.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::AwaitHello { .. } => Phase::AwaitHello,
            State::AwaitAck { .. } => Phase::AwaitAck,
            State::AwaitProof { .. } => Phase::AwaitProof,
            State::Open { .. } => Phase::Open,
            State::Refusing | State::Closed => Phase::Closing,
        }
    }

    /// Whether the handshake is done and the connection not closing.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether the session refused the peer or closed: nothing received is
    /// acted on any more.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Refusing | State::Closed)
    }

    /// The peer's node id, once its HELLO (accepting side) or HELLO_ACK
    /// (connecting side) was accepted. On an authenticating accepting side
    /// it is known before the peer proved itself; see [`Session::is_open`].
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }

    /// The node id this side announced: known from the start on the
    /// connecting side, once the peer's HELLO arrived on the accepting side.
    pub fn me(&self) -> Option<NodeId> {
        let announced = matches!(self.role, Role::Connect { .. })
            || !matches!(self.state, State::AwaitHello { .. });
        announced.then_some(self.me)
    }

    /// Whether user frames must wait: the connecting side authenticates and
    /// the accepting side has not proved itself yet. Without a secret, user
    /// frames may follow the HELLO at once.
    pub fn holds_user_frames(&self) -> bool {
        matches!(self.state, State::AwaitAck { nonce_c: Some(_) })
    }

    /// The largest payload to accept in the next frame: `max_payload` once
    /// open, capped by [`MAX_HANDSHAKE_PAYLOAD`] before.
    pub fn payload_limit(&self, max_payload: u32) -> u32 {
        if self.is_open() {
            max_payload
        } else {
            max_payload.min(MAX_HANDSHAKE_PAYLOAD)
        }
    }

    /// The next frame to write, in order. Drain it after every
    /// [`Session::on_frame`] and [`Session::on_tick`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Whether [`Session::poll_transmit`] has a frame to give.
    #[inline]
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// Decides what one incoming frame means. `local` is asked for this
    /// node's info and secret during the handshake only; frames queued in
    /// answer carry its id as their source.
    #[inline]
    pub fn on_frame<'a, I: Identity + ?Sized>(
        &mut self,
        local: &I,
        frame: Frame<'a>,
    ) -> Action<'a> {
        let meta = frame.meta;
        if meta.kind == FrameKind::Error && !self.is_open() && !self.is_closing() {
            let code = ErrorCode::from_payload(frame.payload);
            return self.close(Close::RefusedByPeer { code });
        }
        match &self.state {
            State::Refusing | State::Closed => Action::None,
            &State::AwaitHello { nonce_s } => self.on_hello(local, frame, nonce_s),
            &State::AwaitAck { nonce_c } => self.on_ack(local, frame, nonce_c),
            State::AwaitProof {
                theirs,
                nonce_c,
                nonce_s,
            } => {
                let (theirs, nonce_c, nonce_s) = ((**theirs).clone(), *nonce_c, *nonce_s);
                self.on_proof(local, frame, theirs, [nonce_c, nonce_s])
            }
            &State::Open { peer } => self.on_open(peer, frame),
        }
    }

    /// Accepting side: the peer's HELLO.
    fn on_hello<'a, I: Identity + ?Sized>(
        &mut self,
        local: &I,
        frame: Frame<'a>,
        nonce_s: Nonce,
    ) -> Action<'a> {
        if let Some(close) = self.expect_control(frame, Channel::HELLO) {
            return close;
        }
        let (ours, secret) = (local.info(), local.secret());
        self.me = ours.id;
        let (theirs, extra) = match parse(&ours, frame.payload) {
            Ok(t) => t,
            Err(e) => return self.refuse(e.into()),
        };
        let nonce_c = match auth::hello_nonce(secret, extra) {
            Ok(n) => n,
            Err(e) => return self.refuse(e.into()),
        };
        self.peer = Some(theirs.id);
        let mut ack = ours.to_bytes();
        match (nonce_c, secret) {
            (Some(nonce_c), Some(key)) => {
                ack.extend_from_slice(&nonce_s);
                ack.extend_from_slice(&auth::server_proof(key, &ours.cluster, &nonce_c, &nonce_s));
                self.control(Channel::HELLO_ACK, ack);
                self.state = State::AwaitProof {
                    theirs: Box::new(theirs),
                    nonce_c,
                    nonce_s,
                };
                Action::None
            }
            _ => {
                self.control(Channel::HELLO_ACK, ack);
                self.state = State::Open { peer: theirs.id };
                Action::Opened(theirs)
            }
        }
    }

    /// Connecting side: the accepting side's HELLO_ACK.
    fn on_ack<'a, I: Identity + ?Sized>(
        &mut self,
        local: &I,
        frame: Frame<'a>,
        nonce_c: Option<Nonce>,
    ) -> Action<'a> {
        if let Some(close) = self.expect_control(frame, Channel::HELLO_ACK) {
            return close;
        }
        let (ours, secret) = (local.info(), local.secret());
        let (theirs, extra) = match parse(&ours, frame.payload) {
            Ok(t) => t,
            Err(e) => return self.reject(e.into()),
        };
        let expect = match self.role {
            Role::Connect { expect } => expect,
            Role::Accept => None,
        };
        if let Some(expected) = expect.filter(|&e| e != theirs.id) {
            return self.reject(Refusal::UnexpectedPeer {
                expected,
                found: theirs.id,
            });
        }
        let block = match auth::ack_auth(secret, extra) {
            Ok(b) => b,
            Err(e) => return self.reject(e.into()),
        };
        if let Some((nonce_s, proof)) = block {
            // `ack_auth` gives a block only when a secret is set; a HELLO
            // sent without a nonce cannot be answered with a proof.
            let (Some(key), Some(nonce_c)) = (secret, nonce_c) else {
                return self.reject(AuthError::Unexpected.into());
            };
            if let Err(e) = auth::check_server(key, &ours.cluster, &nonce_c, &nonce_s, proof) {
                return self.reject(e.into());
            }
            let mine = auth::client_proof(key, &ours.cluster, &nonce_c, &nonce_s);
            self.control(Channel::AUTH, mine.to_vec());
        }
        self.peer = Some(theirs.id);
        self.state = State::Open { peer: theirs.id };
        Action::Opened(theirs)
    }

    /// Accepting side: the client's AUTH proof.
    fn on_proof<'a, I: Identity + ?Sized>(
        &mut self,
        local: &I,
        frame: Frame<'a>,
        theirs: NodeInfo,
        [nonce_c, nonce_s]: [Nonce; 2],
    ) -> Action<'a> {
        let meta = frame.meta;
        if meta.kind != FrameKind::Control || meta.channel != Channel::AUTH {
            return self.refuse(Refusal::NoProof {
                kind: meta.kind,
                channel: meta.channel,
            });
        }
        let (cluster, key) = (local.info().cluster, local.secret().unwrap_or_default());
        if let Err(e) = auth::check_client(key, &cluster, &nonce_c, &nonce_s, frame.payload) {
            return self.refuse(e.into());
        }
        self.state = State::Open { peer: theirs.id };
        Action::Opened(theirs)
    }

    /// Both sides, once open.
    #[inline]
    fn on_open<'a>(&mut self, peer: NodeId, frame: Frame<'a>) -> Action<'a> {
        let meta = frame.meta;
        if meta.source != peer {
            return self.violation(Violation::SpoofedSource {
                claimed: meta.source,
                peer,
            });
        }
        match meta.kind {
            FrameKind::Request | FrameKind::OneWay if meta.channel.is_reserved() => {
                self.violation(Violation::ReservedChannel {
                    channel: meta.channel,
                })
            }
            FrameKind::Request | FrameKind::OneWay => Action::Deliver,
            // Answers come back on the connection that carried the request:
            // one we dialled. On an accepted one they answer nothing of ours.
            FrameKind::Reply | FrameKind::Error if self.role == Role::Accept => {
                self.unexpected(frame)
            }
            FrameKind::Reply if meta.correlation == 0 => Action::CallReply,
            FrameKind::Reply => Action::Complete {
                correlation: meta.correlation,
                result: Ok(frame.payload),
            },
            FrameKind::Error if meta.correlation == 0 => Action::CallFailed {
                channel: meta.channel,
                reply_channel: meta.reply_channel,
                code: ErrorCode::from_payload(frame.payload),
            },
            FrameKind::Error => Action::Complete {
                correlation: meta.correlation,
                result: Err(ErrorCode::from_payload(frame.payload)),
            },
            FrameKind::Control => match meta.channel {
                Channel::HEARTBEAT => {
                    if self.role == Role::Accept {
                        self.control(Channel::HEARTBEAT, Vec::new());
                    }
                    Action::None
                }
                Channel::ANNOUNCE => match NodeInfo::decode(frame.payload) {
                    Ok(info) if info.id == peer => Action::Announced(info),
                    Ok(info) => self.violation(Violation::AnnouncedOtherId {
                        announced: info.id,
                        peer,
                    }),
                    Err(error) => self.violation(Violation::MalformedAnnounce { error }),
                },
                _ => self.unexpected(frame),
            },
        }
    }

    /// Housekeeping at `now`: closes an expired connection (the same
    /// [`Timeouts::verdict`] everywhere) and, on an open connecting side,
    /// queues a heartbeat when [`Timeouts::heartbeat_due`].
    ///
    /// `seen.open` is taken from the session itself. The session remembers
    /// when it queued its last heartbeat, so a driver may pass the
    /// connection's age as `seen.heartbeat_idle`. A refusing session still
    /// times out (its refusal may never be flushed); a closed one returns
    /// `None`.
    pub fn on_tick(&mut self, now: Instant, timeouts: &Timeouts, seen: &Observed) -> Option<Close> {
        if matches!(self.state, State::Closed) {
            return None;
        }
        let heartbeat_idle = match self.last_heartbeat {
            Some(t) => now.saturating_duration_since(t).min(seen.heartbeat_idle),
            None => seen.heartbeat_idle,
        };
        let seen = Observed {
            open: self.is_open(),
            heartbeat_idle,
            ..*seen
        };
        if let Some(expired) = timeouts.verdict(&seen) {
            self.state = State::Closed;
            return Some(Close::Timeout { expired });
        }
        if matches!(self.role, Role::Connect { .. }) && timeouts.heartbeat_due(&seen) {
            self.control(Channel::HEARTBEAT, Vec::new());
            self.last_heartbeat = Some(now);
        }
        None
    }

    /// `None` if `frame` is a control frame on `channel`, else the close for
    /// a frame out of place.
    fn expect_control<'a>(&mut self, frame: Frame<'_>, channel: Channel) -> Option<Action<'a>> {
        let m = frame.meta;
        (m.kind != FrameKind::Control || m.channel != channel).then(|| self.unexpected(frame))
    }

    fn unexpected<'a>(&mut self, frame: Frame<'_>) -> Action<'a> {
        let violation = Violation::UnexpectedFrame {
            phase: self.phase(),
            kind: frame.meta.kind,
            channel: frame.meta.channel,
        };
        self.violation(violation)
    }

    fn violation<'a>(&mut self, violation: Violation) -> Action<'a> {
        self.close(Close::Protocol { violation })
    }

    /// Accepting side: queue the refusal, then ignore everything.
    fn refuse<'a>(&mut self, reason: Refusal) -> Action<'a> {
        let meta = Meta {
            kind: FrameKind::Error,
            channel: Channel(0),
            reply_channel: Channel(0),
            source: self.me,
            correlation: 0,
            ext: crate::frame::Ext::NONE,
        };
        self.out.push_back(Transmit {
            meta,
            payload: ErrorCode::Refused.to_payload().to_vec(),
        });
        self.state = State::Refusing;
        Action::Close(Close::Refused { reason })
    }

    /// Connecting side: close without an answer.
    fn reject<'a>(&mut self, reason: Refusal) -> Action<'a> {
        self.close(Close::Rejected { reason })
    }

    fn close<'a>(&mut self, close: Close) -> Action<'a> {
        self.state = State::Closed;
        Action::Close(close)
    }

    fn control(&mut self, channel: Channel, payload: Vec<u8>) {
        let meta = Meta {
            kind: FrameKind::Control,
            channel,
            reply_channel: Channel(0),
            source: self.me,
            correlation: 0,
            ext: crate::frame::Ext::NONE,
        };
        self.out.push_back(Transmit { meta, payload });
    }
}

/// A handshake payload's node info, validated against ours, and the
/// authentication block after it.
fn parse<'p>(ours: &NodeInfo, payload: &'p [u8]) -> Result<(NodeInfo, &'p [u8]), HandshakeError> {
    let (theirs, extra) = NodeInfo::decode_prefix(payload)?;
    handshake::validate(ours, &theirs)?;
    Ok((theirs, extra))
}
