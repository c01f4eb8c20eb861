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
//!
//! Fast sync handlers are timed by sample ([`HandlerSampler`]): the two
//! clock reads of a timed run cost about as much as a small handler's
//! whole dispatch, so a channel whose last timed run was short is timed
//! one run in [`SAMPLE_EVERY`], and each timed run stands for the untimed
//! runs before it. Counts stay exact; buckets and sums are estimates.

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
        self.observe_n(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), 1);
    }

    /// Counts `n` observations of `ns` nanoseconds each.
    fn observe_n(&mut self, ns: u64, n: u64) {
        // Scanned from the shortest bound: most runs fall in the first buckets.
        let i = BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUNDS_NS.len());
        self.counts[i] += n;
        self.sum_ns += u128::from(ns) * u128::from(n);
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
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.handlers(channel, ns, 1);
    }

    /// Counts `n` handler runs on `channel` of `ns` nanoseconds each.
    fn handlers(&mut self, channel: Channel, ns: u64, n: u64) {
        match self.channels.get_mut(&channel) {
            Some(c) => c.handler.observe_n(ns, n),
            None => self
                .channels
                .entry(channel)
                .or_default()
                .handler
                .observe_n(ns, n),
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

/// A fast channel's sync handler runs are timed one in this many.
pub const SAMPLE_EVERY: u32 = 16;

/// A channel whose last timed run took this long or longer has every run
/// timed: the two clock reads (about 20 ns) are under 1 % of such a run.
pub const TIME_EVERY_RUN_ABOVE: Duration = Duration::from_micros(4);

/// Which sync handler runs a shard times, and what the untimed ones count
/// as. It follows one channel, the last one run: a run on another channel,
/// the first run, and every run of a channel whose last timed run took
/// [`TIME_EVERY_RUN_ABOVE`] or more are timed; otherwise one run in
/// [`SAMPLE_EVERY`] is. A timed run is counted for itself and for the
/// untimed runs before it (an unbiased estimate); untimed runs still
/// waiting when the channel changes or the telemetry is read count as the
/// channel's last timed run. Every run is counted exactly once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerSampler {
    /// The channel followed, once a run was timed.
    channel: Option<Channel>,
    /// Its last timed run, in nanoseconds.
    last_ns: u64,
    /// Its runs since then, not counted yet.
    untimed: u32,
}

impl HandlerSampler {
    /// A sync handler is about to run on `channel`: whether to time it
    /// (then [`HandlerSampler::timed`] counts it when it ends). A run that
    /// is not timed is counted here, at once, on its own channel: a handler
    /// that delivers to another channel of this shard while it runs (a
    /// nested run) moves the sampler before this run ends.
    #[inline]
    pub fn begin(&mut self, channel: Channel) -> bool {
        let time = self.channel != Some(channel)
            || self.untimed + 1 >= SAMPLE_EVERY
            || self.last_ns >= TIME_EVERY_RUN_ABOVE.as_nanos() as u64;
        if !time {
            self.untimed += 1;
        }
        time
    }

    /// Counts a timed run of `channel` that took `took`, with the untimed
    /// runs it stands for, into `t`.
    pub fn timed(&mut self, channel: Channel, took: Duration, t: &mut Telemetry) {
        if self.channel != Some(channel) {
            self.flush(t);
            self.channel = Some(channel);
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        t.handlers(channel, ns, u64::from(self.untimed) + 1);
        self.last_ns = ns;
        self.untimed = 0;
    }

    /// Counts the untimed runs still waiting into `t` (as the last timed
    /// run of their channel).
    pub fn flush(&mut self, t: &mut Telemetry) {
        if let (Some(ch), n @ 1..) = (self.channel, self.untimed) {
            t.handlers(ch, self.last_ns, u64::from(n));
            self.untimed = 0;
        }
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

    /// Runs `n` handlers on `ch` through `s`, each taking `took` when timed;
    /// how many were timed.
    fn run(s: &mut HandlerSampler, t: &mut Telemetry, ch: Channel, n: u32, took: Duration) -> u32 {
        let mut timed = 0;
        for _ in 0..n {
            if s.begin(ch) {
                s.timed(ch, took, t);
                timed += 1;
            }
        }
        timed
    }

    fn handler_of(t: &Telemetry, ch: Channel) -> Histogram {
        t.channels
            .get(&ch)
            .map(|c| c.handler.clone())
            .unwrap_or_default()
    }

    #[test]
    fn fast_runs_are_timed_one_in_sample_every_and_all_counted() {
        let (mut s, mut t) = (HandlerSampler::default(), Telemetry::default());
        let ch = Channel(7);
        let fast = Duration::from_nanos(300);
        // The first run, then one in SAMPLE_EVERY.
        assert_eq!(run(&mut s, &mut t, ch, 1 + 3 * SAMPLE_EVERY, fast), 4);
        assert_eq!(handler_of(&t, ch).count(), u64::from(1 + 3 * SAMPLE_EVERY));
        // A partial round is counted when the telemetry is read.
        assert_eq!(run(&mut s, &mut t, ch, 5, fast), 0);
        assert_eq!(handler_of(&t, ch).count(), u64::from(1 + 3 * SAMPLE_EVERY));
        s.flush(&mut t);
        let h = handler_of(&t, ch);
        assert_eq!(h.count(), u64::from(6 + 3 * SAMPLE_EVERY));
        let expected = f64::from(6 + 3 * SAMPLE_EVERY) * 300e-9;
        assert!((h.sum_seconds() - expected).abs() < 1e-12);
        // Flushing twice counts nothing twice.
        s.flush(&mut t);
        assert_eq!(handler_of(&t, ch).count(), u64::from(6 + 3 * SAMPLE_EVERY));
    }

    #[test]
    fn slow_runs_are_each_timed() {
        let (mut s, mut t) = (HandlerSampler::default(), Telemetry::default());
        let ch = Channel(7);
        assert_eq!(run(&mut s, &mut t, ch, 50, TIME_EVERY_RUN_ABOVE), 50);
        assert_eq!(handler_of(&t, ch).count(), 50);
        // A slow run seen by sample turns timing of every run back on.
        let (mut s, mut t) = (HandlerSampler::default(), Telemetry::default());
        assert_eq!(run(&mut s, &mut t, ch, 1, Duration::from_nanos(100)), 1);
        for _ in 0..SAMPLE_EVERY - 1 {
            assert!(!s.begin(ch));
        }
        assert!(s.begin(ch));
        s.timed(ch, Duration::from_millis(3), &mut t);
        assert!(s.begin(ch), "after a slow run, every run is timed");
        s.timed(ch, Duration::from_millis(3), &mut t);
        let h = handler_of(&t, ch);
        assert_eq!(h.count(), u64::from(2 + SAMPLE_EVERY));
        // The slow run stands for the untimed runs before it.
        assert_eq!(h.cumulative()[0].1, 1);
    }

    #[test]
    fn a_change_of_channel_counts_the_untimed_runs_on_their_own_channel() {
        let (mut s, mut t) = (HandlerSampler::default(), Telemetry::default());
        let (a, b) = (Channel(1), Channel(2));
        let fast = Duration::from_nanos(200);
        run(&mut s, &mut t, a, 10, fast);
        assert_eq!(handler_of(&t, a).count(), 1);
        // Another channel is always timed, and settles the first one's runs.
        assert_eq!(run(&mut s, &mut t, b, 1, Duration::from_millis(1)), 1);
        assert_eq!(handler_of(&t, a).count(), 10);
        assert_eq!(handler_of(&t, b).count(), 1);
        assert!((handler_of(&t, a).sum_seconds() - 10.0 * 200e-9).abs() < 1e-12);
    }

    #[test]
    fn a_run_on_another_channel_inside_an_untimed_run_leaves_each_its_own_count() {
        let (mut s, mut t) = (HandlerSampler::default(), Telemetry::default());
        let (a, b) = (Channel(1), Channel(2));
        let fast = Duration::from_nanos(200);
        run(&mut s, &mut t, a, 1, fast);
        // An untimed run on `a` whose handler delivers to `b` on this shard.
        assert!(!s.begin(a));
        assert!(s.begin(b), "another channel is timed");
        s.timed(b, fast, &mut t);
        // (the run on `a` ends here: nothing more to count)
        s.flush(&mut t);
        assert_eq!(handler_of(&t, a).count(), 2);
        assert_eq!(handler_of(&t, b).count(), 1);
        // The same inside a timed run: its end counts it on its own channel.
        let (mut s, mut t) = (HandlerSampler::default(), Telemetry::default());
        assert!(s.begin(a));
        assert!(s.begin(b));
        s.timed(b, fast, &mut t);
        s.timed(a, fast, &mut t);
        s.flush(&mut t);
        assert_eq!(handler_of(&t, a).count(), 1);
        assert_eq!(handler_of(&t, b).count(), 1);
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
