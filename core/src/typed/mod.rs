//! Typed messages: requests, replies and one-way messages as Rust values,
//! encoded by a [`Codec`]: [`Postcard`] by default; `Json` and `Prost`
//! (protobuf) behind the `json` and `prost` features.
//!
//! Serving: [`Handler::typed`] (async) and [`Handler::typed_sync`] (inline)
//! take a function from the request value to `Result<Resp, AppError>`;
//! [`Handler::typed_with`] and [`Handler::typed_sync_with`] take a codec and
//! give the function a [`Context`] (caller, channel, the shard's bus) too.
//!
//! ```
//! use std::time::Duration;
//! use domi_core::typed::{AppError, TypedError};
//! use domi_core::{Channel, Handler, Node};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! // A provider subscribes this to Channel(70):
//! let handler = Handler::typed(|req: Add| async move {
//!     req.a.checked_add(req.b).ok_or(AppError::new(1, "overflow"))
//! });
//!
//! // A caller, from a plain thread:
//! fn add(node: &Node, a: i64, b: i64) -> Result<i64, TypedError> {
//!     node.request_typed(Channel(70), &Add { a, b }, Duration::from_secs(1))
//! }
//! ```
//!
//! Calling: [`Node::request_typed`](crate::Node::request_typed) (blocking),
//! [`Node::request_typed_async`](crate::Node::request_typed_async),
//! [`LocalBus::request_typed`](crate::LocalBus::request_typed) (on a shard),
//! and `notify_typed` for one-way messages; each has a `_with` form taking
//! the codec. They return [`TypedError`].
//!
//! What can go wrong, and who learns it:
//! - the handler returns `Err(AppError)`: the caller gets
//!   `TypedError::Bus(BusError::Application { code, message, .. })`, as for
//!   [`Request::reply_error`](crate::Request::reply_error) (final, not retried);
//! - the request's bytes do not decode as the handler's request type: the
//!   handler does not run and the caller gets `TypedError::Bus(BusError::Remote
//!   { code: ErrorCode::Undecodable, .. })` (final, not retried; logged at
//!   debug level on the provider). A one-way message that does not decode is
//!   dropped, with the same log line;
//! - the reply does not decode as the caller's response type:
//!   [`TypedError::Decode`];
//! - the request cannot be encoded: [`TypedError::Encode`] (nothing is sent);
//!   a reply that cannot be encoded (or is over `max_payload`) is logged at
//!   warn level on the provider and its caller gets `NoReply`.
//!
//! On the wire a typed message is an ordinary payload: the codec's bytes,
//! nothing more, so typed and untyped nodes talk to each other.

mod codec;
mod send;
mod serve;

use crate::channel::{Channel, NodeId};
use crate::error::BusError;
use crate::shard::LocalBus;

#[cfg(doc)]
use crate::Handler;

#[cfg(feature = "json")]
pub use codec::Json;
#[cfg(feature = "prost")]
pub use codec::Prost;
pub use codec::{Codec, CodecError, Postcard};

/// The error a typed handler answers with: its caller receives `code` and
/// `message` as [`BusError::Application`] (see
/// [`Request::reply_error`](crate::Request::reply_error): the message is
/// cut to [`crate::error::MAX_APP_MESSAGE`] bytes).
///
/// ```
/// use domi_core::typed::AppError;
///
/// let e = AppError::new(409, "out of stock");
/// assert_eq!((e.code, e.message.as_str()), (409, "out of stock"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("application error {code}: {message}")]
pub struct AppError {
    /// The application's code.
    pub code: u16,
    /// The application's message.
    pub message: String,
}

impl AppError {
    /// An application error with `code` and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> AppError {
        AppError {
            code,
            message: message.into(),
        }
    }
}

/// The error of a typed send (`request_typed`, `notify_typed` and their forms).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedError {
    /// The send failed on the bus, or the provider answered with an error:
    /// an application error is [`BusError::Application`], a request the
    /// provider could not decode is [`BusError::Remote`] with
    /// [`ErrorCode::Undecodable`](crate::ErrorCode::Undecodable).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The message could not be encoded; nothing was sent.
    #[error("{codec} could not encode the message: {detail}")]
    Encode {
        /// The codec's [`Codec::NAME`].
        codec: &'static str,
        /// What the codec said.
        detail: String,
    },
    /// The reply is not a message of the expected type in this codec.
    #[error("{codec} could not decode the reply of {len} bytes: {detail}")]
    Decode {
        /// The codec's [`Codec::NAME`].
        codec: &'static str,
        /// What the codec said.
        detail: String,
        /// The reply's length.
        len: usize,
    },
}

impl From<CodecError> for TypedError {
    fn from(e: CodecError) -> TypedError {
        match e {
            CodecError::Encode { codec, detail } => TypedError::Encode { codec, detail },
            CodecError::Decode { codec, detail, len } => TypedError::Decode { codec, detail, len },
        }
    }
}

/// What a typed handler given to [`Handler::typed_with`] or
/// [`Handler::typed_sync_with`] knows of its message besides its value.
#[derive(Clone)]
pub struct Context {
    source: NodeId,
    channel: Channel,
    expects_reply: bool,
    bus: LocalBus,
    deadline: Option<std::time::Instant>,
}

impl Context {
    /// When the caller stops waiting (see [`crate::Request::deadline`]);
    /// a request made for this one should not outlive it.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline
    }

    /// The sender's node id.
    pub fn source(&self) -> NodeId {
        self.source
    }

    /// The channel the message was sent to.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Whether the sender waits for the reply (`false` for one-way messages,
    /// whose handler's result is dropped).
    pub fn expects_reply(&self) -> bool {
        self.expects_reply
    }

    /// The bus of the shard running the handler, to send from inside it.
    pub fn bus(&self) -> &LocalBus {
        &self.bus
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("source", &self.source)
            .field("channel", &self.channel)
            .field("expects_reply", &self.expects_reply)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn codec_errors_become_typed_errors_field_for_field() {
        let e = TypedError::from(CodecError::Decode {
            codec: "postcard",
            detail: "short".into(),
            len: 3,
        });
        assert_eq!(
            e,
            TypedError::Decode {
                codec: "postcard",
                detail: "short".into(),
                len: 3
            }
        );
        let e = TypedError::from(CodecError::Encode {
            codec: "json",
            detail: "key".into(),
        });
        assert!(matches!(e, TypedError::Encode { codec: "json", .. }));
        let e = TypedError::from(BusError::Paused);
        assert_eq!(e, TypedError::Bus(BusError::Paused));
    }

    #[test]
    fn undecodable_is_a_final_wire_code() {
        assert_eq!(ErrorCode::from_u16(10), ErrorCode::Undecodable);
        assert_eq!(
            ErrorCode::from_payload(&ErrorCode::Undecodable.to_payload()),
            ErrorCode::Undecodable
        );
        assert!(!ErrorCode::Undecodable.is_retryable());
    }
}
