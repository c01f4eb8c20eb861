//! Per-channel telemetry: request and handler durations as histograms and
//! request outcomes as counters, kept per shard in plain integers (no lock,
//! no atomic on the message path) and merged when scraped. Pure: durations
//! come in measured.
//!
//! Caller side, per channel: how long each request of this node took, from
//! the call to its answer or error ([`ChannelTelemetry::request`]), and how
//! it ended ([`Outcome`]). Server side, per channel: how long each handler
//! run took ([`ChannelTelemetry::handler`]): a sync handler's call, an async
//! handler's future from its start to its end (awaits included).

use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::channel::Channel;
use crate::error::{BusError, ErrorCode};

/// Upper bounds of the histogram buckets, in seconds (Prometheus `le`),
/// from 5 µs to 10 s; a last bucket counts everything above.
pub const BUCKETS: [f64; 20] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`BUCKETS`] in nanoseconds, for the per-observation comparison.
const BOUNDS_NS: [u64; 20] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A duration histogram with the fixed [`BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; BUCKETS.len() + 1],
    sum_ns: u128,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Scanned from the shortest bound: most runs fall in the first buckets.
        let i = BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUNDS_NS.len());
        self.counts[i] += 1;
        self.sum_ns += u128::from(ns);
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// `(le, observations ≤ le)` for each bound of [`BUCKETS`], cumulative
    /// as Prometheus wants them (`+Inf` is [`Histogram::count`]).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        BUCKETS
            .iter()
            .zip(self.counts)
            .map(|(&le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }
}

/// How a request of this node ended, as its label says (`code="…"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered with a reply.
    Ok,
    /// Answered with an application error.
    Application,
    /// No answer within the timeout.
    Timeout,
    /// The connection broke after the request may have left.
    PeerLost,
    /// No provider (or every one down, paused, draining).
    NoProvider,
    /// Every provider cut off by this node's circuit breakers.
    CircuitOpen,
    /// A bounded queue of this node was full.
    Backpressure,
    /// A provider's error answer (the last refusal when all refused).
    Remote(ErrorCode),
    /// Refused before sending for another reason (payload too large, a
    /// reserved channel, this node stopping, a bad route).
    Refused,
}

impl Outcome {
    /// The outcome of a request's result.
    pub fn of(result: &Result<Vec<u8>, BusError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(BusError::Application { .. }) => Outcome::Application,
            Err(BusError::Timeout { .. }) => Outcome::Timeout,
            Err(BusError::PeerLost { .. }) => Outcome::PeerLost,
            Err(BusError::NoProvider { .. }) => Outcome::NoProvider,
            Err(BusError::CircuitOpen { .. }) => Outcome::CircuitOpen,
            Err(BusError::Backpressure { .. }) => Outcome::Backpressure,
            Err(BusError::Remote { code, .. }) => Outcome::Remote(*code),
            Err(_) => Outcome::Refused,
        }
    }

    /// The label value: `ok`, `timeout`, …, or the provider's code in
    /// snake case (`paused`, `handler_panicked`, …).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Application => "application",
            Outcome::Timeout => "timeout",
            Outcome::PeerLost => "peer_lost",
            Outcome::NoProvider => "no_provider",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::Backpressure => "backpressure",
            Outcome::Refused => "refused",
            Outcome::Remote(code) => match code {
                ErrorCode::NoHandler => "no_handler",
                ErrorCode::Paused => "paused",
                ErrorCode::ShuttingDown => "shutting_down",
                ErrorCode::NoReply => "no_reply",
                ErrorCode::Refused => "remote_refused",
                ErrorCode::Backpressure => "remote_backpressure",
                ErrorCode::HandlerPanicked => "handler_panicked",
                ErrorCode::RateLimited => "rate_limited",
                ErrorCode::Application => "remote_application",
                ErrorCode::Undecodable => "undecodable",
                ErrorCode::RouteFailed => "route_failed",
                ErrorCode::Unknown => "unknown",
            },
        }
    }
}

/// One channel's telemetry on one shard (or merged over a node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelTelemetry {
    /// Durations of this node's requests on the channel.
    pub request: Histogram,
    /// Durations of this node's handler runs on the channel.
    pub handler: Histogram,
    /// This node's requests on the channel, by outcome.
    pub outcomes: FxHashMap<Outcome, u64>,
}

impl ChannelTelemetry {
    fn merge(&mut self, other: &ChannelTelemetry) {
        self.request.merge(&other.request);
        self.handler.merge(&other.handler);
        for (o, n) in &other.outcomes {
            *self.outcomes.entry(*o).or_default() += n;
        }
    }
}

/// Telemetry per channel: a shard's, or a node's once merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Telemetry {
    channels: FxHashMap<Channel, ChannelTelemetry>,
}

impl Telemetry {
    /// Counts a request of this node on `channel` that took `took`.
    pub fn request(&mut self, channel: Channel, took: Duration, outcome: Outcome) {
        let c = self.channels.entry(channel).or_default();
        c.request.observe(took);
        *c.outcomes.entry(outcome).or_default() += 1;
    }

    /// Counts a handler run on `channel` that took `took`.
    pub fn handler(&mut self, channel: Channel, took: Duration) {
        match self.channels.get_mut(&channel) {
            Some(c) => c.handler.observe(took),
            None => self
                .channels
                .entry(channel)
                .or_default()
                .handler
                .observe(took),
        }
    }

    /// Adds `other` (another shard's) to this.
    pub fn merge(&mut self, other: &Telemetry) {
        for (ch, t) in &other.channels {
            self.channels.entry(*ch).or_default().merge(t);
        }
    }

    /// Every channel seen, sorted, with its telemetry.
    pub fn channels(&self) -> Vec<(Channel, &ChannelTelemetry)> {
        let mut all: Vec<_> = self.channels.iter().map(|(c, t)| (*c, t)).collect();
        all.sort_by_key(|(c, _)| *c);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::NodeId;

    #[test]
    fn buckets_are_the_bounds_in_nanoseconds() {
        for (s, ns) in BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(5)); // exactly on a bound: that bucket
        h.observe(Duration::from_micros(6));
        h.observe(Duration::from_secs(60)); // above every bound: +Inf only
        h.observe(Duration::ZERO);
        let c = h.cumulative();
        assert_eq!(c[0], (0.000_005, 2));
        assert_eq!(c[1], (0.000_01, 3));
        assert_eq!(c.last(), Some(&(10.0, 3)));
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 60.000_011).abs() < 1e-9);
    }

    #[test]
    fn shards_merge() {
        let (a, b) = (Channel(1), Channel(2));
        let mut one = Telemetry::default();
        one.request(a, Duration::from_millis(1), Outcome::Ok);
        one.handler(b, Duration::from_micros(3));
        let mut two = Telemetry::default();
        two.request(a, Duration::from_millis(2), Outcome::Timeout);
        two.request(a, Duration::from_millis(2), Outcome::Ok);
        one.merge(&two);
        let all = one.channels();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1.request.count(), 3);
        assert_eq!(all[0].1.outcomes[&Outcome::Ok], 2);
        assert_eq!(all[0].1.outcomes[&Outcome::Timeout], 1);
        assert_eq!(all[1].1.handler.count(), 1);
        assert_eq!(all[1].1.request.count(), 0);
    }

    #[test]
    fn outcomes_are_labelled() {
        let peer = NodeId::test(1);
        let r = |e| Outcome::of(&Err(e));
        assert_eq!(Outcome::of(&Ok(vec![])).label(), "ok");
        assert_eq!(
            r(BusError::Remote {
                peer,
                code: ErrorCode::Paused
            })
            .label(),
            "paused"
        );
        assert_eq!(r(BusError::PeerLost { peer }).label(), "peer_lost");
        assert_eq!(r(BusError::ShuttingDown).label(), "refused");
    }
}
