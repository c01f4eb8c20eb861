//! A shard's circuit breakers (see [`crate::breaker`]): one per peer, made
//! on a peer's first counted request, consulted when a request picks its
//! provider, fed with each request's outcome.

use std::time::Instant;

use tracing::{info, warn};

use super::LocalBus;
use crate::breaker::{Breaker, BreakerState, Outcome};
use crate::channel::NodeId;
use crate::error::{BusError, ErrorCode};
use crate::stats::Counters;

impl LocalBus {
    /// Whether this shard's breaker of `peer` lets a request through now (a
    /// `true` in half-open is the probe).
    pub(super) fn breaker_allows(&self, peer: NodeId) -> bool {
        let mut all = self.0.breakers.borrow_mut();
        let Some(b) = all[peer.index()].as_mut() else {
            return true; // nothing counted yet: closed
        };
        if b.state() == BreakerState::Closed {
            return true;
        }
        let (allowed, moved) = b.allow(Instant::now());
        drop(all);
        if let Some(state) = moved {
            self.breaker_moved(peer, state);
        }
        allowed
    }

    /// A probe claimed for `peer` was not sent after all (nothing left this
    /// node): another request may probe at once.
    pub(super) fn breaker_unclaim(&self, peer: NodeId) {
        if let Some(b) = self.0.breakers.borrow_mut()[peer.index()].as_mut() {
            b.unclaim();
        }
    }

    /// Counts how a request sent to `peer` at `sent` ended at `now` (see
    /// [`outcome`]). For an answer, `now` is the reading of the read that
    /// brought it ([`crate::conn::Conn::arrival`]): never before `sent`, and
    /// at most one read's handling behind the clock.
    pub(super) fn breaker_record(
        &self,
        peer: NodeId,
        sent: Instant,
        now: Instant,
        result: Option<&Result<Vec<u8>, BusError>>,
    ) {
        let Some(config) = self.0.shared.config.breaker else {
            return;
        };
        let outcome = match outcome(result) {
            Some(o) => o,
            // An application error (or an undecodable request, or a later
            // pipeline stage failing) leaves the window alone, but for a
            // probe it shows the peer answered for itself: it is well.
            None if result.is_some_and(answered_for_itself)
                && self.0.breakers.borrow()[peer.index()]
                    .as_ref()
                    .is_some_and(|b| b.state() == BreakerState::HalfOpen) =>
            {
                Outcome::Success
            }
            None => return,
        };
        let moved = {
            let mut all = self.0.breakers.borrow_mut();
            all[peer.index()]
                .get_or_insert_with(|| Breaker::new(config, now))
                .record(now, sent, outcome)
        };
        if let Some(state) = moved {
            self.breaker_moved(peer, state);
        }
    }

    fn breaker_moved(&self, peer: NodeId, state: BreakerState) {
        let c = &self.0.counters;
        match state {
            BreakerState::Open => {
                Counters::inc(&c.breaker_opened);
                warn!(%peer, shard = self.0.index, "circuit breaker open: requests skip this peer for a while");
            }
            BreakerState::HalfOpen => {
                Counters::inc(&c.breaker_half_open);
                info!(%peer, shard = self.0.index, "circuit breaker half-open: one probe request");
            }
            BreakerState::Closed => {
                Counters::inc(&c.breaker_closed);
                info!(%peer, shard = self.0.index, "circuit breaker closed: the probe succeeded");
            }
        }
    }

    /// The peers whose breaker on this shard is not closed.
    pub fn breaker_states(&self) -> Vec<(NodeId, BreakerState)> {
        self.0
            .breakers
            .borrow()
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let state = b.as_ref()?.state();
                (state != BreakerState::Closed)
                    .then(|| NodeId::new(i as u16).map(|id| (id, state)))
                    .flatten()
            })
            .collect()
    }
}

/// How a breaker counts a request's result (`None`: timed out): answers
/// succeed; timeouts, lost connections and bus-level error answers fail;
/// refusals that prove nothing ran (`Paused`, `RateLimited`…) count as
/// neither, nor do errors raised before anything was sent.
fn outcome(result: Option<&Result<Vec<u8>, BusError>>) -> Option<Outcome> {
    match result {
        None => Some(Outcome::Failure),
        Some(Ok(_)) => Some(Outcome::Success),
        Some(Err(BusError::PeerLost { .. })) => Some(Outcome::Failure),
        Some(Err(BusError::Remote { code, .. })) if !code.is_retryable() => match code {
            ErrorCode::HandlerPanicked | ErrorCode::NoReply => Some(Outcome::Failure),
            // A newer node's code: not proof the peer is unwell.
            _ => None,
        },
        Some(Err(_)) => None,
    }
}

/// An error the peer's own code answered with: the peer is well, and the
/// request was the problem (or a stage after it).
fn answered_for_itself(result: &Result<Vec<u8>, BusError>) -> bool {
    matches!(
        result,
        Err(BusError::Application { .. })
            | Err(BusError::Remote {
                code: ErrorCode::Undecodable | ErrorCode::RouteFailed,
                ..
            })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_a_failure() {
        let peer = NodeId::new(3).unwrap();
        let remote = |code| Some(Err(BusError::Remote { peer, code }));
        assert_eq!(outcome(None), Some(Outcome::Failure));
        assert_eq!(outcome(Some(&Ok(vec![]))), Some(Outcome::Success));
        assert_eq!(
            outcome(Some(&Err(BusError::PeerLost { peer }))),
            Some(Outcome::Failure)
        );
        assert_eq!(
            outcome(remote(ErrorCode::HandlerPanicked).as_ref()),
            Some(Outcome::Failure)
        );
        assert_eq!(outcome(remote(ErrorCode::Unknown).as_ref()), None);
        for own in [ErrorCode::Undecodable, ErrorCode::RouteFailed] {
            assert_eq!(outcome(remote(own).as_ref()), None, "{own:?}");
            assert!(answered_for_itself(&Err(BusError::Remote {
                peer,
                code: own
            })));
        }
        for refusal in [
            ErrorCode::Paused,
            ErrorCode::RateLimited,
            ErrorCode::Backpressure,
            ErrorCode::ShuttingDown,
            ErrorCode::NoHandler,
        ] {
            assert_eq!(outcome(remote(refusal).as_ref()), None, "{refusal:?}");
        }
    }
}
