//! Times the message path needs without a clock read per message: when
//! something last happened, to housekeeping's resolution ([`Stamp`]), and
//! when the frames of one read arrived ([`Arrival`]).

use std::cell::Cell;
use std::time::Instant;

/// When something last happened, to housekeeping's resolution: the hot path only raises a flag (no clock read per message
/// or per read), and housekeeping, which reads the clock each tick anyway,
/// dates the flag when it looks. A time read from it is at most one
/// housekeeping tick later than the event; idle times are that much short.
pub(crate) struct Stamp {
    /// The event happened since housekeeping last looked.
    since: Cell<bool>,
    /// When housekeeping last saw it happen (or creation).
    at: Cell<Instant>,
}

impl Stamp {
    pub(crate) fn new() -> Stamp {
        Stamp {
            since: Cell::new(false),
            at: Cell::new(Instant::now()),
        }
    }

    /// The event happened.
    #[inline]
    pub(crate) fn mark(&self) {
        self.since.set(true);
    }

    /// Whether it happened since the last look (which this does not count
    /// as a look).
    pub(crate) fn happened_since_last_look(&self) -> bool {
        self.since.get()
    }

    /// When it last happened, as seen at `now`.
    pub(crate) fn at(&self, now: Instant) -> Instant {
        if self.since.replace(false) {
            self.at.set(now);
        }
        self.at.get()
    }
}

/// When the bytes being handled arrived: the clock is read at the first
/// [`Arrival::get`] after each read and shared by every frame of that read.
/// A frame handled after others of its read (slow sync handlers, a yield)
/// keeps the read's time, so its deadline counts the wait; its reading is
/// then not fresh, and whoever must know whether that deadline passed reads
/// the clock.
#[derive(Default)]
pub(crate) struct Arrival(Cell<Option<Instant>>);

impl Arrival {
    /// New bytes were read.
    #[inline]
    pub(crate) fn reset(&self) {
        self.0.set(None);
    }

    /// When the current read's bytes arrived, and whether that reading was
    /// taken just now (by this call, from `now`).
    #[inline]
    pub(crate) fn get(&self, now: impl FnOnce() -> Instant) -> (Instant, bool) {
        match self.0.get() {
            Some(at) => (at, false),
            None => {
                let at = now();
                self.0.set(Some(at));
                (at, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_event_is_dated_by_the_first_look_after_it() {
        let s = Stamp::new();
        let created = s.at(Instant::now());
        let later = created + Duration::from_secs(1);
        // Nothing happened: still the creation time.
        assert_eq!(s.at(later), created);
        s.mark();
        assert_eq!(s.at(later), later);
        // Dated once: a later look without a new event keeps that date.
        assert_eq!(s.at(later + Duration::from_secs(5)), later);
    }

    #[test]
    fn the_frames_of_one_read_share_its_first_reading() {
        let a = Arrival::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(3);
        assert_eq!(a.get(|| t0), (t0, true));
        assert_eq!(a.get(|| t1), (t0, false), "same read: the first reading");
        a.reset();
        assert_eq!(a.get(|| t1), (t1, true), "a new read: a new reading");
    }
}
