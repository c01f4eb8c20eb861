//! Circuit breaking on the caller's side: per peer, per shard, an error-rate
//! breaker over a rolling window, as a pure type with the time passed in.
//!
//! - **Closed** (normal): every request may go to the peer; outcomes are
//!   counted in a rolling window (`window`, in ten buckets). Once the window
//!   holds at least `volume` outcomes and at least `error_percent` % of them
//!   are failures, the breaker opens.
//! - **Open**: the peer is skipped by this shard's round-robin of requests
//!   for `sleep`.
//! - **Half-open**: then one request (the probe) may go to it; success
//!   closes the breaker, failure opens it for another `sleep`. A probe whose
//!   outcome never comes (its caller gave up) frees the way for another
//!   after `sleep`.
//!
//! What counts as a failure is the caller's business (the shard counts
//! timeouts, lost connections and bus-level error answers; refusals such as
//! `Paused` or `RateLimited` are neither success nor failure).

use std::time::{Duration, Instant};

/// A breaker's settings. The defaults follow the seed (volume 20, sleep 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// The rolling window outcomes are counted over (default 10 s).
    pub window: Duration,
    /// Outcomes the window must hold before the breaker judges (default 20).
    pub volume: u32,
    /// Failures, in percent of the window's outcomes, that open it (default 50).
    pub error_percent: u8,
    /// How long an open breaker skips the peer before a probe (default 2 s).
    pub sleep: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(10),
            volume: 20,
            error_percent: 50,
            sleep: Duration::from_secs(2),
        }
    }
}

/// Why a [`BreakerConfig`] is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid circuit breaker setting {field}: {why}")]
pub struct InvalidBreaker {
    /// Which setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub why: &'static str,
}

impl BreakerConfig {
    /// Checks the settings: a window and a sleep of at least 10 ms, a volume
    /// of at least 1, a percentage in 1..=100.
    pub fn validate(&self) -> Result<(), InvalidBreaker> {
        let bad = |field, why| Err(InvalidBreaker { field, why });
        if self.window < Duration::from_millis(10) {
            return bad("window", "must be at least 10 ms");
        }
        if self.sleep < Duration::from_millis(10) {
            return bad("sleep", "must be at least 10 ms");
        }
        if self.volume == 0 {
            return bad("volume", "must be at least 1");
        }
        if !(1..=100).contains(&self.error_percent) {
            return bad("error_percent", "must be in 1..=100");
        }
        Ok(())
    }
}

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// The peer is skipped until the sleep is over.
    Open,
    /// One probe request may go to the peer.
    HalfOpen,
}

impl BreakerState {
    /// Its name in logs, `/status` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// How a request to the peer ended, as the breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Success,
    /// Timed out, lost, or answered with a bus-level error.
    Failure,
}

const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which slot of time (since the breaker's epoch) the counts are for.
    slot: u64,
    ok: u32,
    failed: u32,
}

/// One peer's breaker (see the module docs).
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    epoch: Instant,
    buckets: [Bucket; BUCKETS],
    /// When it opened (Open), or when the probe went (HalfOpen, if it did).
    since: Option<Instant>,
    /// The slot last counted in and the window's totals then, so counting
    /// again within that slot takes no division and no sum.
    current: Option<Current>,
}

/// The slot of time being counted in: `[start, end)`, and the window's
/// totals (this slot's bucket and the older ones still in the window).
#[derive(Clone, Copy, Debug)]
struct Current {
    slot: u64,
    start: Instant,
    end: Instant,
    ok: u64,
    failed: u64,
}

impl Breaker {
    /// A closed breaker with an empty window.
    pub fn new(config: BreakerConfig, now: Instant) -> Breaker {
        Breaker {
            config,
            state: BreakerState::Closed,
            epoch: now,
            buckets: [Bucket::default(); BUCKETS],
            since: None,
            current: None,
        }
    }

    /// The state (as of the last call).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a request may go to the peer at `now`, and the state it moved
    /// to if it moved. A `true` in half-open claims the probe.
    pub fn allow(&mut self, now: Instant) -> (bool, Option<BreakerState>) {
        match self.state {
            BreakerState::Closed => (true, None),
            BreakerState::Open => {
                if self.elapsed(now) < self.config.sleep {
                    return (false, None);
                }
                self.state = BreakerState::HalfOpen;
                self.since = Some(now);
                (true, Some(BreakerState::HalfOpen))
            }
            BreakerState::HalfOpen => {
                // One probe at a time; one that never came back frees the
                // way after a sleep.
                if self.since.is_some() && self.elapsed(now) < self.config.sleep {
                    return (false, None);
                }
                self.since = Some(now);
                (true, None)
            }
        }
    }

    /// A probe claimed by [`Breaker::allow`] was not sent: the next
    /// request may probe at once.
    pub fn unclaim(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.since = None;
        }
    }

    /// Counts the outcome, at `now`, of a request sent at `sent`; returns
    /// the new state if it moved. Late outcomes of requests sent before the
    /// breaker opened, or before the probe, are ignored.
    pub fn record(
        &mut self,
        now: Instant,
        sent: Instant,
        outcome: Outcome,
    ) -> Option<BreakerState> {
        match self.state {
            BreakerState::Open => None,
            BreakerState::HalfOpen if self.since.is_none_or(|probe| sent < probe) => None,
            BreakerState::HalfOpen => {
                self.clear();
                match outcome {
                    Outcome::Success => {
                        self.state = BreakerState::Closed;
                        self.since = None;
                    }
                    Outcome::Failure => {
                        self.state = BreakerState::Open;
                        self.since = Some(now);
                    }
                }
                Some(self.state)
            }
            BreakerState::Closed => {
                let (ok, failed) = self.count(now, outcome);
                let total = ok + failed;
                let tripped = total >= u64::from(self.config.volume)
                    && failed * 100 >= u64::from(self.config.error_percent) * total;
                if !tripped {
                    return None;
                }
                self.state = BreakerState::Open;
                self.since = Some(now);
                self.clear();
                Some(BreakerState::Open)
            }
        }
    }

    fn elapsed(&self, now: Instant) -> Duration {
        self.since
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t))
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
        self.current = None;
    }

    /// Adds `outcome` to the current bucket; returns the window's totals.
    fn count(&mut self, now: Instant, outcome: Outcome) -> (u64, u64) {
        if let Some(c) = self
            .current
            .as_mut()
            .filter(|c| c.start <= now && now < c.end)
        {
            let b = &mut self.buckets[(c.slot % BUCKETS as u64) as usize];
            match outcome {
                Outcome::Success => (b.ok += 1, c.ok += 1),
                Outcome::Failure => (b.failed += 1, c.failed += 1),
            };
            return (c.ok, c.failed);
        }
        let width = (self.config.window / BUCKETS as u32).max(Duration::from_millis(1));
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        let slot = (since / width.as_nanos()) as u64;
        let (ok, failed) = self.count_in(slot, outcome);
        // `now` is at or after the epoch when `since` is not 0.
        let into = Duration::from_nanos((since % width.as_nanos()) as u64);
        let start = now.checked_sub(into).filter(|_| since > 0).unwrap_or(now);
        self.current = (start >= self.epoch).then_some(Current {
            slot,
            start,
            end: start + width,
            ok,
            failed,
        });
        (ok, failed)
    }

    /// Adds `outcome` to `slot`'s bucket; returns the window's totals.
    fn count_in(&mut self, slot: u64, outcome: Outcome) -> (u64, u64) {
        let b = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ok: 0,
                failed: 0,
            };
        }
        match outcome {
            Outcome::Success => b.ok += 1,
            Outcome::Failure => b.failed += 1,
        }
        let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.slot >= oldest && b.slot <= slot)
            .fold((0, 0), |(ok, f), b| {
                (ok + u64::from(b.ok), f + u64::from(b.failed))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker() -> (Breaker, Instant) {
        let t0 = Instant::now();
        (Breaker::new(BreakerConfig::default(), t0), t0)
    }

    #[test]
    fn opens_at_the_error_rate_once_the_volume_is_reached() {
        let (mut b, t0) = breaker();
        // 19 failures: below the volume, still closed.
        for i in 0..19 {
            assert_eq!(b.record(t0 + i * MS, t0 + i * MS, Outcome::Failure), None);
        }
        assert!(b.allow(t0 + 19 * MS).0);
        assert_eq!(
            b.record(t0 + 20 * MS, t0 + 20 * MS, Outcome::Failure),
            Some(BreakerState::Open)
        );
        assert_eq!(b.allow(t0 + 21 * MS), (false, None));
    }

    #[test]
    fn a_low_error_rate_never_opens() {
        let (mut b, t0) = breaker();
        for i in 0..1000u32 {
            let outcome = if i % 3 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(b.record(t0 + i * MS, t0 + i * MS, outcome), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let (mut b, t0) = breaker();
        for i in 0..15 {
            b.record(t0 + i * MS, t0 + i * MS, Outcome::Failure);
        }
        // 11 s later the 15 failures are out of the 10 s window: 15 more
        // make 15, not 30 — still under the volume.
        let later = t0 + Duration::from_secs(11);
        for i in 0..15 {
            assert_eq!(
                b.record(later + i * MS, later + i * MS, Outcome::Failure),
                None
            );
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn after_the_sleep_one_probe_then_success_closes() {
        let (mut b, t0) = breaker();
        for i in 0..20 {
            b.record(t0 + i * MS, t0 + i * MS, Outcome::Failure);
        }
        let open_at = t0 + 19 * MS;
        assert!(!b.allow(open_at + Duration::from_millis(1999)).0);
        let probe = open_at + Duration::from_secs(2);
        assert_eq!(b.allow(probe), (true, Some(BreakerState::HalfOpen)));
        assert_eq!(b.allow(probe), (false, None), "one probe at a time");
        assert_eq!(
            b.record(probe + MS, probe, Outcome::Success),
            Some(BreakerState::Closed)
        );
        assert!(b.allow(probe + 2 * MS).0);
        // A fresh window: one failure does not reopen it.
        assert_eq!(
            b.record(probe + 3 * MS, probe + 3 * MS, Outcome::Failure),
            None
        );
    }

    #[test]
    fn a_failed_probe_opens_again_and_a_lost_one_frees_the_way() {
        let (mut b, t0) = breaker();
        for i in 0..20 {
            b.record(t0 + i * MS, t0 + i * MS, Outcome::Failure);
        }
        let probe = t0 + Duration::from_secs(3);
        assert!(b.allow(probe).0);
        assert_eq!(
            b.record(probe + MS, probe, Outcome::Failure),
            Some(BreakerState::Open)
        );
        assert!(!b.allow(probe + Duration::from_secs(1)).0);
        // The next probe's outcome never comes: another after a sleep.
        let second = probe + MS + Duration::from_secs(2);
        assert!(b.allow(second).0);
        assert!(!b.allow(second + Duration::from_secs(1)).0);
        assert!(b.allow(second + Duration::from_secs(2)).0);
    }

    #[test]
    fn in_half_open_only_the_probe_decides() {
        let (mut b, t0) = breaker();
        for i in 0..20 {
            b.record(t0 + i * MS, t0 + i * MS, Outcome::Failure);
        }
        let probe = t0 + Duration::from_secs(3);
        assert!(b.allow(probe).0);
        // A slow request sent before it opened answers now: ignored.
        assert_eq!(b.record(probe + MS, t0, Outcome::Success), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A probe that was not sent after all frees the way at once.
        b.unclaim();
        let again = probe + 2 * MS;
        assert!(b.allow(again).0);
        assert_eq!(
            b.record(again + MS, again, Outcome::Success),
            Some(BreakerState::Closed)
        );
    }

    #[test]
    fn late_outcomes_while_open_are_ignored() {
        let (mut b, t0) = breaker();
        for i in 0..20 {
            b.record(t0 + i * MS, t0 + i * MS, Outcome::Failure);
        }
        assert_eq!(b.record(t0 + 30 * MS, t0 + 30 * MS, Outcome::Success), None);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn settings_are_validated() {
        assert!(BreakerConfig::default().validate().is_ok());
        let bad = BreakerConfig {
            volume: 0,
            ..BreakerConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(InvalidBreaker {
                field: "volume",
                ..
            })
        ));
        let bad = BreakerConfig {
            error_percent: 0,
            ..BreakerConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    proptest::proptest! {
        /// Counting within the slot last counted in (no division, no sum)
        /// decides as counting from the buckets every time does, whatever
        /// the outcomes and however time moves (backwards a little too).
        #[test]
        fn the_cached_slot_decides_as_the_buckets_do(
            steps in proptest::collection::vec((-20i64..300, proptest::bool::weighted(0.3)), 1..400),
            volume in 1u32..30,
            error_percent in 1u8..100,
        ) {
            let config = BreakerConfig {
                volume,
                error_percent,
                window: Duration::from_millis(1000),
                sleep: Duration::from_millis(500),
            };
            let t0 = Instant::now() + Duration::from_secs(1);
            let (mut cached, mut plain) = (Breaker::new(config, t0), Breaker::new(config, t0));
            let mut at = t0;
            for (step, fails) in steps {
                at = if step >= 0 {
                    at + Duration::from_millis(step as u64)
                } else {
                    at.checked_sub(Duration::from_millis(step.unsigned_abs())).unwrap_or(at)
                };
                let outcome = if fails { Outcome::Failure } else { Outcome::Success };
                plain.current = None;
                let (a, b) = (cached.allow(at), plain.allow(at));
                proptest::prop_assert_eq!(a, b);
                let (a, b) = (cached.record(at, at, outcome), plain.record(at, at, outcome));
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(cached.state(), plain.state());
            }
        }
    }
}
