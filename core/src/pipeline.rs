//! Pipelines (the seed's `Ventilator` and `ctx.Next`): a message sent along
//! a route of channels, each stage handing it on to one provider of the
//! next. What a stage tells the stage before it is decided here, purely.
//!
//! - `ventilate(&[a, b, c], payload)` sends a one-way message to a provider
//!   of `a` whose frame carries the route `[b, c]` (see [`crate::frame`]).
//!   Its handler calls `req.next(payload)`: a one-way message to a provider
//!   of `b` with the route `[c]`, and so on; `next` at `c` is
//!   [`BusError::EndOfRoute`].
//! - `request_route(&[a, b, c], payload, timeout)` does the same with a
//!   request: each `next` is a request to the next stage within the
//!   original deadline, and its answer becomes this stage's answer (see
//!   [`upstream`]), so the last stage's `reply` (or `reply_error`) reaches
//!   the originator.
//!
//! Each hop is at most once, like any send: a stage that ran is never run
//! again because a later one failed.

use crate::error::{BusError, ErrorCode};

/// What a stage answers the stage before it once its `next` request ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Upstream {
    /// The later stages' reply, passed on.
    Reply(Vec<u8>),
    /// An application error of a later stage, passed on unchanged.
    Application {
        /// The application's code.
        code: u16,
        /// Its message.
        message: String,
    },
    /// A bus error code.
    Code(ErrorCode),
    /// Nothing: the request timed out, and so did every earlier stage's
    /// (they share one deadline), so no one waits for an answer.
    Silent,
}

/// The answer a stage gives for the result of its `next` request.
///
/// A later stage's failure that proved nothing ran there (all providers
/// paused, none left, a breaker open) must not look retryable upstream:
/// this stage and the ones before it did run, and retrying them elsewhere
/// would run them twice. Those become [`ErrorCode::RouteFailed`]; codes
/// that are already final (no reply, a panic) pass unchanged.
pub fn upstream(result: Result<Vec<u8>, BusError>) -> Upstream {
    match result {
        Ok(reply) => Upstream::Reply(reply),
        Err(BusError::Application { code, message, .. }) => Upstream::Application { code, message },
        Err(BusError::Timeout { .. }) => Upstream::Silent,
        Err(BusError::Remote { code, .. }) if !code.is_retryable() => Upstream::Code(code),
        Err(_) => Upstream::Code(ErrorCode::RouteFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Channel, NodeId};
    use std::time::Duration;

    #[test]
    fn answers_pass_upstream_and_refusals_become_final() {
        let peer = NodeId::test(4);
        assert_eq!(upstream(Ok(b"r".to_vec())), Upstream::Reply(b"r".to_vec()));
        assert_eq!(
            upstream(Err(BusError::Application {
                peer,
                code: 7,
                message: "no".into()
            })),
            Upstream::Application {
                code: 7,
                message: "no".into()
            }
        );
        assert_eq!(
            upstream(Err(BusError::Timeout {
                channel: Channel(1),
                after: Duration::from_millis(5)
            })),
            Upstream::Silent
        );
        assert_eq!(
            upstream(Err(BusError::Remote {
                peer,
                code: ErrorCode::HandlerPanicked
            })),
            Upstream::Code(ErrorCode::HandlerPanicked)
        );
        for refusal in [
            BusError::Remote {
                peer,
                code: ErrorCode::Paused,
            },
            BusError::NoProvider {
                channel: Channel(2),
            },
            BusError::CircuitOpen {
                channel: Channel(2),
            },
            BusError::PeerLost { peer },
        ] {
            assert_eq!(
                upstream(Err(refusal)),
                Upstream::Code(ErrorCode::RouteFailed)
            );
        }
        assert!(!ErrorCode::RouteFailed.is_retryable());
    }
}
