//! Connection timeouts and heartbeats as pure decisions: the shard's
//! housekeeping passes in what it observed (ages, idleness) and acts on the
//! answer; nothing here reads a clock.

use std::time::{Duration, Instant};

/// The longest wait the bus arms a timer for (about 100 years): a longer
/// timeout, up to `Duration::MAX`, means "no timeout" and is clamped to this,
/// so deadline arithmetic can never overflow an `Instant`.
pub const MAX_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + wait`, with `wait` clamped to [`MAX_WAIT`] (never overflows).
pub fn deadline(now: Instant, wait: Duration) -> Instant {
    now + wait.min(MAX_WAIT)
}

/// The wire deadline that means "none": a caller that waits 71.6 minutes
/// or more (`u32::MAX` microseconds) is taken to wait forever.
pub const NO_DEADLINE: u32 = u32::MAX;

/// A request's remaining time as the wire's deadline extension carries it:
/// microseconds from `now` to `deadline`, 0 when it passed, saturating at
/// [`NO_DEADLINE`] (about 71.6 minutes; see [`crate::frame`]).
pub fn wire_remaining(now: Instant, deadline: Instant) -> u32 {
    let us = deadline.saturating_duration_since(now).as_micros();
    u32::try_from(us).unwrap_or(u32::MAX)
}

/// The deadline of a request that arrived at `now` with `micros` left.
pub fn arrival_deadline(now: Instant, micros: u32) -> Instant {
    now + Duration::from_micros(u64::from(micros))
}

/// Whether a request whose deadline is `deadline` may still start its
/// handler at `now` (one without a deadline always may).
pub fn may_start(now: Instant, deadline: Option<Instant>) -> bool {
    deadline.is_none_or(|d| now < d)
}

/// Connection time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection must complete its handshake within this.
    pub handshake: Duration,
    /// A frame that started arriving must finish within this.
    pub frame: Duration,
    /// Idle outbound connections send a heartbeat this often.
    pub heartbeat: Duration,
    /// A connection that received nothing for this long is dead.
    pub silence: Duration,
    /// An outbound connection that carried no message either way for this
    /// long closes (the next send reconnects), unless requests wait on it or
    /// bytes are still queued; with `call`s sent on it unanswered, it waits
    /// twice as long (a call's reply comes back on it; one answered later
    /// than that is dropped, as a call's handler need not answer at all).
    /// Peers talked to once stop costing heartbeats. [`MAX_WAIT`] or more
    /// keeps connections open for good.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(5),
            frame: Duration::from_secs(10),
            heartbeat: Duration::from_millis(500),
            silence: Duration::from_millis(2000),
            idle: Duration::from_secs(300),
        }
    }
}

/// Why housekeeping closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// No handshake in time.
    Handshake,
    /// A frame started and did not finish in time.
    Frame,
    /// Nothing received for the silence limit.
    Silence,
}

/// What one connection looks like to housekeeping.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    /// Handshake completed.
    pub open: bool,
    /// Part of a frame is buffered.
    pub mid_frame: bool,
    /// Time since the connection was created.
    pub age: Duration,
    /// Time since bytes last arrived (or since creation), to housekeeping's
    /// resolution: up to one housekeeping tick short.
    pub read_idle: Duration,
    /// Time since a write last made progress (or since creation), to
    /// housekeeping's resolution.
    pub write_idle: Duration,
    /// Time since this side last sent a heartbeat (or since creation).
    pub heartbeat_idle: Duration,
    /// Time since a message other than a heartbeat or handshake frame was
    /// queued or received (or since creation), to housekeeping's resolution.
    pub use_idle: Duration,
}

impl Timeouts {
    /// Whether the connection must be closed, and why.
    pub fn verdict(&self, o: &Observed) -> Option<Expired> {
        if !o.open {
            return (o.age >= self.handshake).then_some(Expired::Handshake);
        }
        if o.mid_frame && o.read_idle >= self.frame.min(self.silence) {
            return Some(Expired::Frame);
        }
        // Silent means no progress either way: a peer that still drains our
        // writes is slow, not dead.
        (o.read_idle.min(o.write_idle) >= self.silence).then_some(Expired::Silence)
    }

    /// Whether an open outbound connection should close for idleness: no
    /// message either way for [`Timeouts::idle`] (twice that while `call`s
    /// sent on it are unanswered, as a call's handler need not answer), and
    /// not `busy()` (requests waiting on it, bytes not yet written), asked
    /// only once the time is up.
    pub fn idle_close_due(
        &self,
        o: &Observed,
        unanswered_calls: bool,
        busy: impl FnOnce() -> bool,
    ) -> bool {
        let limit = if unanswered_calls {
            self.idle.saturating_mul(2)
        } else {
            self.idle
        };
        o.open && limit < MAX_WAIT && o.use_idle >= limit && !busy()
    }

    /// The connection to close to make room at the outbound cap: of
    /// `candidates` (when each was last used, and what names it), the least
    /// recently used that is not `busy`, asked in that order and only as far
    /// as needed.
    pub fn least_recently_used<T>(
        candidates: impl IntoIterator<Item = (Instant, T)>,
        mut busy: impl FnMut(&T) -> bool,
    ) -> Option<T> {
        let mut by_use: Vec<(Instant, T)> = candidates.into_iter().collect();
        by_use.sort_unstable_by_key(|(used, _)| *used);
        by_use.into_iter().map(|(_, c)| c).find(|c| !busy(c))
    }

    /// The shortest limit housekeeping must watch on a connection; outbound
    /// ones also send heartbeats and close when idle.
    pub fn shortest(&self, outbound: bool) -> Duration {
        let common = self.handshake.min(self.frame).min(self.silence);
        if outbound {
            common.min(self.heartbeat).min(self.idle)
        } else {
            common
        }
    }

    /// Whether the connecting side should send a heartbeat now: the line
    /// was idle in either direction for an interval, and none went out
    /// within the last interval. The accepting side echoes heartbeats.
    pub fn heartbeat_due(&self, o: &Observed) -> bool {
        o.open
            && o.heartbeat_idle >= self.heartbeat
            && (o.write_idle >= self.heartbeat || o.read_idle >= self.heartbeat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_deadlines_round_trip_and_saturate() {
        let now = Instant::now();
        assert_eq!(
            wire_remaining(now, now + Duration::from_millis(250)),
            250_000
        );
        assert_eq!(wire_remaining(now + Duration::from_secs(1), now), 0);
        assert_eq!(wire_remaining(now, deadline(now, Duration::MAX)), u32::MAX);
        let d = arrival_deadline(now, 1_500);
        assert_eq!(d - now, Duration::from_micros(1_500));
        assert!(may_start(now, None));
        assert!(may_start(now, Some(d)));
        assert!(!may_start(d, Some(d)));
        assert!(!may_start(d + Duration::from_micros(1), Some(d)));
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert_eq!(deadline(now, Duration::MAX), now + MAX_WAIT);
    }

    fn obs(open: bool, mid: bool, age: u64, read: u64, write: u64) -> Observed {
        Observed {
            open,
            mid_frame: mid,
            age: Duration::from_millis(age),
            read_idle: Duration::from_millis(read),
            write_idle: Duration::from_millis(write),
            heartbeat_idle: Duration::from_millis(age),
            use_idle: Duration::from_millis(age),
        }
    }

    #[test]
    fn the_least_recently_used_idle_connection_makes_room() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let conns = [(at(30), 'a'), (at(10), 'b'), (at(20), 'c')];
        assert_eq!(Timeouts::least_recently_used(conns, |_| false), Some('b'));
        let mut asked = Vec::new();
        let pick = Timeouts::least_recently_used(conns, |c| {
            asked.push(*c);
            *c == 'b'
        });
        assert_eq!(pick, Some('c'));
        assert_eq!(
            asked,
            vec!['b', 'c'],
            "asked in order of use, only as far as needed"
        );
        assert_eq!(Timeouts::least_recently_used(conns, |_| true), None);
        assert_eq!(Timeouts::least_recently_used::<char>([], |_| false), None);
    }

    #[test]
    fn idle_outbound_connections_close_unless_busy() {
        let t = Timeouts {
            idle: Duration::from_secs(10),
            ..Timeouts::default()
        };
        let used = |ms| Observed {
            use_idle: Duration::from_millis(ms),
            ..obs(true, false, 60_000, 100, 100)
        };
        let idle = || false;
        assert!(!t.idle_close_due(&used(9_999), false, idle));
        assert!(t.idle_close_due(&used(10_000), false, idle));
        assert!(
            !t.idle_close_due(&used(10_000), false, || true),
            "requests wait on it"
        );
        assert!(
            !t.idle_close_due(&used(19_999), true, idle),
            "a call may still be answered"
        );
        assert!(t.idle_close_due(&used(20_000), true, idle));
        let mut asked = false;
        assert!(!t.idle_close_due(&used(5_000), false, || {
            asked = true;
            false
        }));
        assert!(!asked, "busy is asked only once the time is up");
        let opening = Observed {
            open: false,
            ..used(60_000)
        };
        assert!(!t.idle_close_due(&opening, false, idle));
        let forever = Timeouts {
            idle: Duration::MAX,
            ..t
        };
        assert!(!forever.idle_close_due(&used(u64::MAX / 2), false, idle));
        assert!(!forever.idle_close_due(&used(u64::MAX / 2), true, idle));
        assert_eq!(
            Timeouts::default().shortest(true),
            Duration::from_millis(500)
        );
        assert_eq!(Timeouts::default().shortest(false), Duration::from_secs(2));
    }

    #[test]
    fn verdicts() {
        let t = Timeouts::default();
        assert_eq!(t.verdict(&obs(false, false, 4_999, 0, 0)), None);
        assert_eq!(
            t.verdict(&obs(false, false, 5_000, 0, 0)),
            Some(Expired::Handshake)
        );
        assert_eq!(t.verdict(&obs(true, false, 60_000, 1_999, 9_999)), None);
        assert_eq!(
            t.verdict(&obs(true, false, 60_000, 2_000, 2_000)),
            Some(Expired::Silence)
        );
        assert_eq!(
            t.verdict(&obs(true, false, 60_000, 9_000, 10)),
            None,
            "writes still drain: slow, not dead"
        );
        assert_eq!(
            t.verdict(&obs(true, true, 60_000, 2_000, 0)),
            Some(Expired::Frame)
        );
        let slow = Timeouts {
            silence: Duration::from_secs(60),
            ..t
        };
        assert_eq!(slow.verdict(&obs(true, true, 60_000, 9_999, 0)), None);
        assert_eq!(
            slow.verdict(&obs(true, true, 60_000, 10_000, 0)),
            Some(Expired::Frame)
        );
        assert!(t.heartbeat_due(&obs(true, false, 500, 0, 500)));
        assert!(
            t.heartbeat_due(&obs(true, false, 500, 500, 0)),
            "one-way senders hear echoes"
        );
        assert!(!t.heartbeat_due(&obs(true, false, 500, 499, 499)));
        assert!(!t.heartbeat_due(&obs(false, false, 10_000, 0, 10_000)));
        let recent = Observed {
            heartbeat_idle: Duration::from_millis(100),
            ..obs(true, false, 500, 900, 900)
        };
        assert!(
            !t.heartbeat_due(&recent),
            "at most one heartbeat per interval"
        );
    }
}
