//! Typed errors of the bus. Every failure a caller can see is one of these.

use std::time::Duration;

use crate::channel::{Channel, NodeId};

/// Why a remote node refused a request (the payload of an error frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The node serves no handler on that channel (any more).
    NoHandler = 1,
    /// The node is paused: out of rotation.
    Paused = 2,
    /// The node is draining before shutdown.
    ShuttingDown = 3,
    /// The handler finished without replying.
    NoReply = 4,
    /// The handshake was refused.
    Refused = 5,
    /// The node is overloaded: its async-handler queue is full. Nothing ran,
    /// so callers fail over to the next provider.
    Backpressure = 6,
    /// The handler panicked while handling this message (the panic was
    /// caught; the provider keeps serving).
    HandlerPanicked = 7,
    /// The channel is over its rate limit on this node (see
    /// [`crate::limiter`]). Nothing ran, so callers fail over to the next
    /// provider.
    RateLimited = 8,
    /// The handler answered with an application error: the payload goes on
    /// with its code and message (see [`encode_application`]).
    Application = 9,
    /// The handler could not decode the request's payload (a typed handler,
    /// see [`crate::typed`]): the caller sent another type, or used another
    /// codec. Final: another provider would not decode it either.
    Undecodable = 10,
    /// A later stage of a pipeline (see [`crate::Request::next`]) could
    /// not be reached or refused the message: this stage ran, so the caller
    /// does not retry it elsewhere.
    RouteFailed = 11,
    /// A code this build does not know.
    Unknown = 0xFFFF,
}

impl ErrorCode {
    /// The code for its wire value.
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::NoHandler,
            2 => ErrorCode::Paused,
            3 => ErrorCode::ShuttingDown,
            4 => ErrorCode::NoReply,
            5 => ErrorCode::Refused,
            6 => ErrorCode::Backpressure,
            7 => ErrorCode::HandlerPanicked,
            8 => ErrorCode::RateLimited,
            9 => ErrorCode::Application,
            10 => ErrorCode::Undecodable,
            11 => ErrorCode::RouteFailed,
            _ => ErrorCode::Unknown,
        }
    }

    /// Decodes an error frame's payload (a u16 LE code).
    pub fn from_payload(p: &[u8]) -> ErrorCode {
        match p {
            [a, b, ..] => ErrorCode::from_u16(u16::from_le_bytes([*a, *b])),
            _ => ErrorCode::Unknown,
        }
    }

    /// The error frame payload for this code.
    pub fn to_payload(self) -> [u8; 2] {
        (self as u16).to_le_bytes()
    }

    /// Whether a caller should try the next provider after this answer:
    /// the refusals that prove the handler never ran.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NoHandler
                | ErrorCode::Paused
                | ErrorCode::ShuttingDown
                | ErrorCode::Backpressure
                | ErrorCode::RateLimited
        )
    }
}

/// The error of a send (`request`, `call`, `notify`, `publish`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No node serves the channel (or all of them are down, paused or draining).
    #[error("no provider serves {channel}")]
    NoProvider {
        /// The channel addressed.
        channel: Channel,
    },
    /// Every provider of the channel is skipped by this node's circuit
    /// breakers (see [`crate::breaker`]); nothing was sent.
    #[error("every provider of {channel} is cut off by this node's circuit breakers")]
    CircuitOpen {
        /// The channel addressed.
        channel: Channel,
    },
    /// The payload exceeds the configured maximum; nothing was sent.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Configured maximum.
        max: u32,
    },
    /// No reply within the timeout.
    #[error("no reply on {channel} within {after:?}")]
    Timeout {
        /// The channel addressed.
        channel: Channel,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection to the provider broke before its reply came.
    #[error("connection to {peer} lost")]
    PeerLost {
        /// The provider.
        peer: NodeId,
    },
    /// This node's own state forbids the operation.
    #[error("node is paused")]
    Paused,
    /// This node is stopping.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The channel is reserved for the bus.
    #[error("{channel} is reserved for the bus")]
    ReservedChannel {
        /// The channel addressed.
        channel: Channel,
    },
    /// A bounded queue is full.
    #[error("backpressure: {what} is full")]
    Backpressure {
        /// Which queue.
        what: &'static str,
    },
    /// The provider answered with an error.
    #[error("{peer} refused the request: {code:?}")]
    Remote {
        /// The provider.
        peer: NodeId,
        /// Its reason.
        code: ErrorCode,
    },
    /// The handler answered with an application error (see
    /// [`crate::Request::reply_error`]): never retried elsewhere, never
    /// counted by circuit breakers.
    #[error("{peer} answered with application error {code}: {message}")]
    Application {
        /// The provider.
        peer: NodeId,
        /// The application's code.
        code: u16,
        /// The application's message (at most [`MAX_APP_MESSAGE`] bytes).
        message: String,
    },
    /// A pipeline route needs between 1 and [`crate::frame::MAX_ROUTE`] + 1
    /// stages; nothing was sent.
    #[error("a route of {stages} stages (1 to {} allowed)", crate::frame::MAX_ROUTE + 1)]
    BadRoute {
        /// How many stages were given.
        stages: usize,
    },
    /// `next` on a request already answered or already handed on: handing
    /// it on again would run the next stage twice.
    #[error("the request on {channel} was already answered or handed on")]
    AlreadyAnswered {
        /// The channel of the stage that called `next`.
        channel: Channel,
    },
    /// `next` on a message at the last stage of its route (or sent
    /// without one): there is no stage to forward to.
    #[error("the message on {channel} is at the end of its route")]
    EndOfRoute {
        /// The channel of the stage that called `next`.
        channel: Channel,
    },
}

/// The longest application error message sent; longer ones are cut (at a
/// character boundary).
pub const MAX_APP_MESSAGE: usize = 1024;

/// The payload of an error frame carrying an application error: the wire
/// code [`ErrorCode::Application`] (u16 LE), the application's code (u16
/// LE), then the message (UTF-8, at most [`MAX_APP_MESSAGE`] bytes).
pub fn encode_application(code: u16, message: &str) -> Vec<u8> {
    let message = cut_message(message, MAX_APP_MESSAGE);
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&ErrorCode::Application.to_payload());
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// `message` cut to at most `max` bytes, at a character boundary.
pub fn cut_message(message: &str, max: usize) -> &str {
    let mut cut = message.len().min(max);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    &message[..cut]
}

/// An application error's code and message from an error frame's payload
/// (`None` unless it is one; a malformed message is decoded lossily).
pub fn decode_application(payload: &[u8]) -> Option<(u16, String)> {
    if ErrorCode::from_payload(payload) != ErrorCode::Application || payload.len() < 4 {
        return None;
    }
    let code = u16::from_le_bytes([payload[2], payload[3]]);
    let rest = &payload[4..payload.len().min(4 + MAX_APP_MESSAGE)];
    Some((code, String::from_utf8_lossy(rest).into_owned()))
}

/// The error of a handler's `reply`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The message was one-way (`notify`, `publish`, or a reply itself).
    #[error("the sender expects no reply")]
    NotExpected,
    /// `reply` was already called for this request.
    #[error("already replied")]
    AlreadyReplied,
    /// The reply exceeds the maximum payload.
    #[error("reply of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Reply length.
        len: usize,
        /// Configured maximum.
        max: u32,
    },
    /// The connection the reply would go to is closed or its queue is full.
    #[error("the caller is gone or its queue is full")]
    Undeliverable,
}

/// Which one-way send failed after it returned (see [`SendFailure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendOp {
    /// `call`: the provider refused it, or it could not be routed.
    Call,
    /// `notify`: it could not be routed (no provider left).
    Notify,
    /// `publish`: it could not reach one of the subscribers.
    Publish,
}

/// A `call`, `notify` or `publish` that failed after the send returned, as
/// the node's `on_send_error` hook receives it (the seed's `reject`).
///
/// What is reported: a `call` refused by its provider (paused, draining, no
/// handler, overloaded, handler panicked) or one that could not be re-routed;
/// a `notify` whose bytes never left this node and for which no other
/// provider was left; a `publish` copy that never left this node; and, for
/// the `Node` handle's sends from plain threads, any error the shard met
/// (those calls return before the shard routes them). A `call` or `notify`
/// whose bytes may have reached the peer before the connection broke is not
/// reported (delivery is at-most-once and nothing says whether it ran).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendFailure {
    /// Which operation.
    pub op: SendOp,
    /// The channel addressed.
    pub channel: Channel,
    /// The reply channel of a `call`; `Channel(0)` otherwise.
    pub reply_channel: Channel,
    /// The provider concerned, when one was chosen.
    pub peer: Option<NodeId>,
    /// What went wrong.
    pub error: BusError,
}

/// The `on_send_error` hook: called on the shard where the failure was seen.
/// Keep it short (it runs on the bus's thread); hand work elsewhere.
#[derive(Clone)]
pub struct SendErrorHook(pub std::sync::Arc<dyn Fn(&SendFailure) + Send + Sync + 'static>);

impl std::fmt::Debug for SendErrorHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendErrorHook")
    }
}

/// `ReservedChannel` for a channel user code may not send to or serve.
pub(crate) fn check_user_channel(channel: Channel) -> Result<(), BusError> {
    if channel.is_reserved() {
        return Err(BusError::ReservedChannel { channel });
    }
    Ok(())
}

/// What every send checks before routing: a user channel, a payload within
/// `max`, and a node that is not stopping.
pub(crate) fn check_send(
    channel: Channel,
    len: usize,
    max: u32,
    stopping: bool,
) -> Result<(), BusError> {
    check_user_channel(channel)?;
    if len > max as usize {
        return Err(BusError::PayloadTooLarge { len, max });
    }
    if stopping {
        return Err(BusError::ShuttingDown);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_errors_round_trip_and_are_final() {
        let p = encode_application(409, "out of stock");
        assert_eq!(&p[..4], &[9, 0, 0x99, 0x01]);
        assert_eq!(decode_application(&p), Some((409, "out of stock".into())));
        assert_eq!(ErrorCode::from_payload(&p), ErrorCode::Application);
        assert!(!ErrorCode::Application.is_retryable());
        // Other codes, and a truncated application error, are not one.
        assert_eq!(decode_application(&ErrorCode::Paused.to_payload()), None);
        assert_eq!(decode_application(&[9, 0, 1]), None);
        // Cut at a character boundary, never inside one.
        let long = "é".repeat(MAX_APP_MESSAGE);
        let (_, m) = decode_application(&encode_application(1, &long)).unwrap();
        assert_eq!(m.len(), MAX_APP_MESSAGE);
        let odd = format!("a{long}");
        let (_, m) = decode_application(&encode_application(1, &odd)).unwrap();
        assert_eq!(m.len(), MAX_APP_MESSAGE - 1);
        // Bytes that are not UTF-8 are decoded lossily.
        let (_, m) = decode_application(&[9, 0, 1, 0, 0xff]).unwrap();
        assert_eq!(m, "\u{fffd}");
    }

    #[test]
    fn send_checks_in_order() {
        assert_eq!(check_send(Channel(50), 10, 10, false), Ok(()));
        assert_eq!(
            check_send(Channel(65500), 10, 10, false),
            Err(BusError::ReservedChannel {
                channel: Channel(65500)
            })
        );
        assert_eq!(
            check_send(Channel(50), 11, 10, false),
            Err(BusError::PayloadTooLarge { len: 11, max: 10 })
        );
        assert_eq!(
            check_send(Channel(50), 1, 10, true),
            Err(BusError::ShuttingDown)
        );
        assert!(check_user_channel(Channel(65499)).is_ok());
    }
}
