//! Event times to housekeeping's resolution ([`Stamp`]): the message path
//! raises a flag instead of reading the clock.

use std::cell::Cell;
use std::time::Instant;

/// When something last happened, to housekeeping's resolution: the hot path only raises a flag (no clock read per message
/// or per read), and housekeeping, which reads the clock each tick anyway,
/// dates the flag when it looks. A time read from it is at most one
/// housekeeping tick later than the event; idle times are that much short.
pub(crate) struct Stamp {
    /// The event happened since housekeeping last looked.
    pub(crate) since: Cell<bool>,
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

    /// When it last happened, as seen at `now`.
    pub(crate) fn at(&self, now: Instant) -> Instant {
        if self.since.replace(false) {
            self.at.set(now);
        }
        self.at.get()
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
}
