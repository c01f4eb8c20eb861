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
    /// The node is overloaded.
    Backpressure = 6,
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

    /// Whether a caller should try the next provider after this answer.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::NoHandler | ErrorCode::Paused | ErrorCode::ShuttingDown
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
