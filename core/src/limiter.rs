//! Server-side rate limits: a token bucket per channel, shared by all of a
//! node's shards, so a channel's handler starts at most `per_second` times a
//! second (after a burst of `burst`) however connections land on shards;
//! and optionally one for the whole node, which every inbound request and
//! one-way message passes too (after its channel's), whatever its channel.
//!
//! The bucket is GCRA (the generic cell rate algorithm, a token bucket
//! written as one "theoretical arrival time"): one atomic `u64` and one
//! compare-and-swap per admitted message, no lock, no timer. The decision
//! itself is [`gcra`], a pure function of the time passed in. With no
//! channel limited, the check is one relaxed load (`make bench`'s
//! micro-benchmarks: about 2 ns; an admitted message on a limited channel
//! about 35 ns, most of it reading the clock).
//!
//! A request over its channel's limit is answered with
//! [`crate::ErrorCode::RateLimited`] (its caller fails over to the next
//! provider, as for `Paused`); a one-way message over it is dropped. Both
//! are counted, per shard (`rate_limited`) and per channel
//! ([`Limiter::limited`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use crate::channel::Channel;

/// The highest rate a limit may have (one message a nanosecond).
pub const MAX_RATE: u32 = 1_000_000_000;

/// A channel's limit: `per_second` on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages admitted per second, on average (≥ 1).
    pub per_second: u32,
    /// Messages admitted at once after a quiet spell (≥ 1).
    pub burst: u32,
}

/// Why a [`RateLimit`] is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit for {}: {per_second}/s, burst {burst} (both at least 1, the rate at most 1,000,000,000)", channel.map_or("the node".to_string(), |c| format!("channel {c}")))]
pub struct InvalidRateLimit {
    /// The channel; `None` for the node-wide limit.
    pub channel: Option<Channel>,
    /// The rate given.
    pub per_second: u32,
    /// The burst given.
    pub burst: u32,
}

impl RateLimit {
    /// Checks both numbers are at least 1, and the rate at most 10⁹ a
    /// second (the bucket counts in nanoseconds).
    pub fn validate(self, channel: Channel) -> Result<(), InvalidRateLimit> {
        self.check(Some(channel))
    }

    /// [`RateLimit::validate`] for the node-wide limit.
    pub fn validate_node(self) -> Result<(), InvalidRateLimit> {
        self.check(None)
    }

    fn check(self, channel: Option<Channel>) -> Result<(), InvalidRateLimit> {
        if self.per_second == 0 || self.burst == 0 || self.per_second > MAX_RATE {
            return Err(InvalidRateLimit {
                channel,
                per_second: self.per_second,
                burst: self.burst,
            });
        }
        Ok(())
    }

    /// The time one message "costs": 1 / `per_second`, in ns.
    fn interval_ns(self) -> u64 {
        1_000_000_000 / u64::from(self.per_second.max(1))
    }

    /// How far ahead of the present the bucket may run: (burst − 1) intervals.
    fn tolerance_ns(self) -> u64 {
        self.interval_ns() * u64::from(self.burst.max(1) - 1)
    }
}

/// GCRA: with the bucket's theoretical arrival time `tat` and a message
/// arriving at `now` (both in ns on one clock), the new `tat` if the
/// message is admitted, `None` if it is over the limit.
pub fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> Option<u64> {
    let start = tat.max(now);
    if start - now > tolerance {
        return None;
    }
    Some(start + interval)
}

/// One channel's bucket, shared by the shards.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    interval: u64,
    tolerance: u64,
    epoch: Instant,
    /// Theoretical arrival time, ns since `epoch`.
    tat: AtomicU64,
    limited: AtomicU64,
}

impl Limiter {
    /// A full bucket for `limit`.
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            interval: limit.interval_ns(),
            tolerance: limit.tolerance_ns(),
            epoch: Instant::now(),
            tat: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// The limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Whether a message arriving at `now` may run; counts it when not.
    pub fn admit(&self, now: Instant) -> bool {
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let Some(next) = gcra(tat, now, self.interval, self.tolerance) else {
                self.limited.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }

    /// Messages refused or dropped over the limit so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// The limits of a node's channels, changeable while it runs: shards read
/// them with one atomic load per message (and nothing more when no channel
/// is limited).
#[derive(Default)]
pub struct Limits {
    /// Whether any channel is limited: the default path is one relaxed load.
    any: AtomicBool,
    /// Serializes changes, so `any` always matches the map.
    update: std::sync::Mutex<()>,
    map: ArcSwap<FxHashMap<Channel, Arc<Limiter>>>,
    /// The node-wide limit, if any.
    node: arc_swap::ArcSwapOption<Limiter>,
}

impl Limits {
    /// Limits for `initial`.
    pub fn new(initial: &[(Channel, RateLimit)]) -> Limits {
        let limits = Limits::default();
        for &(channel, limit) in initial {
            limits.set(channel, Some(limit));
        }
        limits
    }

    /// Sets (`Some`) or lifts (`None`) `channel`'s limit. A new limit
    /// starts with a full bucket; per-channel counts of the old one go.
    pub fn set(&self, channel: Channel, limit: Option<RateLimit>) {
        let _one = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let map = self.map.rcu(|map| {
            let mut map = FxHashMap::clone(map);
            match limit {
                Some(l) => map.insert(channel, Arc::new(Limiter::new(l))),
                None => map.remove(&channel),
            };
            map
        });
        // `rcu` returns the map it replaced; look at the current one.
        drop(map);
        self.refresh_any();
    }

    /// Sets (`Some`) or lifts (`None`) the node-wide limit; a new one
    /// starts with a full bucket.
    pub fn set_node(&self, limit: Option<RateLimit>) {
        let _one = self.update.lock().unwrap_or_else(|e| e.into_inner());
        self.node.store(limit.map(|l| Arc::new(Limiter::new(l))));
        self.refresh_any();
    }

    /// The node-wide limit and how many messages it limited.
    pub fn node(&self) -> Option<(RateLimit, u64)> {
        self.node.load().as_ref().map(|l| (l.limit(), l.limited()))
    }

    fn refresh_any(&self) {
        let any = !self.map.load().is_empty() || self.node.load().is_some();
        self.any.store(any, Ordering::Release);
    }

    /// Whether a message for `channel` arriving at `now` may run: the
    /// channel's limit first, then the node-wide one, so a flood that its
    /// channel's limit refuses spends none of the node's budget (the clock
    /// is read only when one applies).
    pub fn admit(&self, channel: Channel, now: impl FnOnce() -> Instant) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return true;
        }
        let mut now = Some(now);
        let mut at = None;
        let mut time = || *at.get_or_insert_with(|| (now.take().expect("read once"))());
        if !self
            .map
            .load()
            .get(&channel)
            .is_none_or(|l| l.admit(time()))
        {
            return false;
        }
        self.node
            .load()
            .as_ref()
            .is_none_or(|node| node.admit(time()))
    }

    /// Every limited channel with its limit and how many messages it
    /// limited, by channel.
    pub fn snapshot(&self) -> Vec<(Channel, RateLimit, u64)> {
        let mut all: Vec<_> = self
            .map
            .load()
            .iter()
            .map(|(c, l)| (*c, l.limit(), l.limited()))
            .collect();
        all.sort_by_key(|e| e.0);
        all
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        // 1,000/s (1 ms apart), burst 5: five at once at t=0, then one per ms.
        let l = RateLimit {
            per_second: 1000,
            burst: 5,
        };
        let (interval, tolerance) = (l.interval_ns(), l.tolerance_ns());
        assert_eq!((interval, tolerance), (MS, 4 * MS));
        let mut tat = 0;
        let mut admitted = 0;
        for _ in 0..10 {
            if let Some(t) = gcra(tat, 0, interval, tolerance) {
                tat = t;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(gcra(tat, MS / 2, interval, tolerance), None, "too early");
        let t = gcra(tat, MS, interval, tolerance).expect("one more after 1 ms");
        assert_eq!(gcra(t, MS, interval, tolerance), None);
    }

    #[test]
    fn over_a_long_run_admits_rate_times_time_plus_burst() {
        let l = RateLimit {
            per_second: 1000,
            burst: 50,
        };
        let (interval, tolerance) = (l.interval_ns(), l.tolerance_ns());
        let mut tat = 0;
        let mut admitted = 0u64;
        // Offered every 10 µs for 2 s (100× the rate).
        for i in 0..200_000u64 {
            if let Some(t) = gcra(tat, i * 10_000, interval, tolerance) {
                tat = t;
                admitted += 1;
            }
        }
        assert!((2000..=2000 + 50).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_quiet_spell_refills_the_burst_only() {
        let l = RateLimit {
            per_second: 10,
            burst: 3,
        };
        let (interval, tolerance) = (l.interval_ns(), l.tolerance_ns());
        let mut tat = 0;
        let mut at = |now: u64| {
            let r = gcra(tat, now, interval, tolerance);
            if let Some(t) = r {
                tat = t;
            }
            r.is_some()
        };
        assert!(at(0) && at(0) && at(0) && !at(0));
        // An hour later: a burst of 3 again, not 36,000.
        let hour = 3_600_000 * MS;
        assert!(at(hour) && at(hour) && at(hour) && !at(hour));
    }

    #[test]
    fn the_shared_limiter_counts_what_it_refuses() {
        let limiter = Limiter::new(RateLimit {
            per_second: 1,
            burst: 2,
        });
        let now = Instant::now();
        let admitted = (0..10).filter(|_| limiter.admit(now)).count();
        assert_eq!(admitted, 2);
        assert_eq!(limiter.limited(), 8);
    }

    #[test]
    fn limits_change_while_running() {
        let ch = Channel(7);
        let limits = Limits::new(&[(
            ch,
            RateLimit {
                per_second: 1,
                burst: 1,
            },
        )]);
        let now = Instant::now();
        assert!(limits.admit(ch, || now));
        assert!(!limits.admit(ch, || now));
        assert!(limits.admit(Channel(8), || now), "other channels are free");
        assert_eq!(limits.snapshot()[0].2, 1);
        limits.set(ch, None);
        assert!(limits.admit(ch, || now));
        assert!(limits.snapshot().is_empty());
    }

    #[test]
    fn the_node_limit_applies_to_every_channel_after_the_channels() {
        let limits = Limits::default();
        let one = RateLimit {
            per_second: 1,
            burst: 2,
        };
        limits.set_node(Some(one));
        let now = Instant::now();
        assert!(limits.admit(Channel(1), || now));
        assert!(limits.admit(Channel(2), || now));
        assert!(
            !limits.admit(Channel(3), || now),
            "the node's burst is spent"
        );
        assert_eq!(limits.node(), Some((one, 1)));
        // A channel limit still applies under the node's.
        limits.set_node(None);
        limits.set(Channel(1), Some(one));
        assert!(limits.admit(Channel(1), || now));
        assert!(limits.admit(Channel(1), || now));
        assert!(!limits.admit(Channel(1), || now));
        assert!(limits.admit(Channel(2), || now));
        assert_eq!(limits.node(), None);
        limits.set(Channel(1), None);
        assert!(
            !limits.any.load(Ordering::Relaxed),
            "nothing limited: the fast path"
        );
        // Both: what the channel's limit refuses spends none of the node's.
        let later = now + std::time::Duration::from_secs(60);
        limits.set_node(Some(one));
        limits.set(
            Channel(1),
            Some(RateLimit {
                per_second: 1,
                burst: 1,
            }),
        );
        assert!(limits.admit(Channel(1), || later));
        assert!(!limits.admit(Channel(1), || later), "the channel's burst");
        assert!(
            limits.admit(Channel(2), || later),
            "the node's second token"
        );
        assert!(!limits.admit(Channel(3), || later));
        assert_eq!(limits.node(), Some((one, 1)));
    }

    #[test]
    fn zero_is_refused() {
        let bad = RateLimit {
            per_second: 0,
            burst: 1,
        };
        assert!(matches!(
            bad.validate(Channel(3)),
            Err(InvalidRateLimit {
                per_second: 0,
                channel: Some(Channel(3)),
                ..
            })
        ));
        assert!(matches!(
            bad.validate_node(),
            Err(InvalidRateLimit { channel: None, .. })
        ));
    }
}
