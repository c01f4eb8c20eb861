//! Deadlines of a shard's waiting requests, for one timer task per shard
//! instead of one timer per request ([`Expiries`]). Pure: the caller reads
//! the clock and ends the waits it is handed.
//!
//! Requests of one shard mostly share a timeout, so their deadlines come in
//! order: they queue in a `VecDeque` (push at the back, expire from the
//! front). A deadline earlier than the last one queued goes to a sorted map
//! instead. Answered requests are not looked up and removed: they leave
//! the fronts as they are reached, and a sweep drops them whenever the
//! entries held have doubled since the last one, so memory stays
//! proportional to the requests still waiting (at most about twice that,
//! or [`SWEEP_FROM`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// A wait that a deadline can end.
pub(crate) trait Expirable {
    /// Whether it still waits (not answered, not given up, not expired).
    fn is_waiting(&self) -> bool;
}

/// Fewest entries held before a sweep for answered ones is worth it.
pub(crate) const SWEEP_FROM: usize = 1024;

/// The deadlines of the waits of one shard.
pub(crate) struct Expiries<W> {
    /// Deadlines in the order they came, which is also their time order.
    in_order: VecDeque<(Instant, W)>,
    /// Deadlines that came earlier than the last one queued, by time (and
    /// arrival, to keep equal ones apart).
    early: BTreeMap<(Instant, u64), W>,
    /// Entries put in `early` so far (the tie-breaker of equal deadlines).
    arrivals: u64,
    /// Entries held that trigger the next sweep.
    sweep_at: usize,
    /// The deadline the timer is set to (`None`: no timer).
    armed: Option<Instant>,
}

impl<W> Default for Expiries<W> {
    fn default() -> Self {
        Expiries {
            in_order: VecDeque::new(),
            early: BTreeMap::new(),
            arrivals: 0,
            sweep_at: SWEEP_FROM,
            armed: None,
        }
    }
}

impl<W: Expirable> Expiries<W> {
    /// Adds a wait that ends at `at`; true when the timer must be set
    /// again: there is none, or it is set to a later deadline. (A timer set
    /// to an earlier deadline fires first and is then set to the next one,
    /// so a stream of requests with one timeout sets it once per timeout.)
    pub(crate) fn add(&mut self, at: Instant, w: W) -> bool {
        self.drop_answered_fronts();
        let rearm = self.armed.is_none_or(|armed| at < armed);
        if rearm {
            self.armed = Some(at);
        }
        if self.in_order.back().is_none_or(|(last, _)| *last <= at) {
            self.in_order.push_back((at, w));
        } else {
            self.arrivals += 1;
            self.early.insert((at, self.arrivals), w);
        }
        if self.held() >= self.sweep_at {
            self.in_order.retain(|(_, w)| w.is_waiting());
            self.early.retain(|_, w| w.is_waiting());
            self.sweep_at = (2 * self.held()).max(SWEEP_FROM);
        }
        rearm
    }

    /// Sets the timer to the earliest deadline of a wait still going on;
    /// returns it (`None`: no wait left, no timer).
    pub(crate) fn arm(&mut self) -> Option<Instant> {
        self.drop_answered_fronts();
        self.armed = self.next();
        self.armed
    }

    /// Drops the answered waits at the front of both orders.
    fn drop_answered_fronts(&mut self) {
        while self.in_order.front().is_some_and(|(_, w)| !w.is_waiting()) {
            self.in_order.pop_front();
        }
        while self
            .early
            .first_key_value()
            .is_some_and(|(_, w)| !w.is_waiting())
        {
            self.early.pop_first();
        }
    }

    /// The earliest deadline (possibly of a wait already over).
    pub(crate) fn next(&self) -> Option<Instant> {
        let queued = self.in_order.front().map(|(at, _)| *at);
        let early = self.early.first_key_value().map(|((at, _), _)| *at);
        match (queued, early) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes out every wait whose deadline is `now` or earlier; returns
    /// those still waiting (to be ended by the caller).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<W> {
        let mut due = Vec::new();
        while self.in_order.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, w)) = self.in_order.pop_front() {
                due.push(w);
            }
        }
        while self
            .early
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= now)
        {
            if let Some((_, w)) = self.early.pop_first() {
                due.push(w);
            }
        }
        due.retain(W::is_waiting);
        // After a peak, sweep again at twice what is left.
        self.sweep_at = self.sweep_at.min((2 * self.held()).max(SWEEP_FROM));
        due
    }

    /// How many entries are held (waiting or not yet dropped).
    fn held(&self) -> usize {
        self.in_order.len() + self.early.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    /// A test wait: waiting until its flag is cleared.
    #[derive(Clone)]
    struct W(u32, Rc<Cell<bool>>);

    impl Expirable for W {
        fn is_waiting(&self) -> bool {
            self.1.get()
        }
    }

    fn w(id: u32) -> W {
        W(id, Rc::new(Cell::new(true)))
    }

    fn ids(ws: Vec<W>) -> Vec<u32> {
        ws.into_iter().map(|w| w.0).collect()
    }

    #[test]
    fn waits_expire_in_deadline_order_whatever_order_they_came_in() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut e = Expiries::default();
        assert_eq!(e.next(), None);
        assert!(e.add(ms(50), w(1)), "no timer yet: set it");
        assert!(!e.add(ms(60), w(2)), "the timer fires earlier anyway");
        assert!(e.add(ms(10), w(3)), "an earlier deadline moves the timer");
        assert!(!e.add(ms(55), w(4)));
        assert_eq!(e.arm(), Some(ms(10)));
        assert!(ids(e.due(ms(9))).is_empty());
        assert_eq!(ids(e.due(ms(10))), vec![3]);
        assert_eq!(e.arm(), Some(ms(50)));
        assert!(!e.add(ms(70), w(5)));
        let mut late = ids(e.due(ms(100)));
        late.sort();
        assert_eq!(late, vec![1, 2, 4, 5]);
        assert_eq!(e.arm(), None);
        assert!(e.add(ms(200), w(6)), "no timer: set it");
    }

    #[test]
    fn answered_waits_are_not_handed_out_and_do_not_pile_up() {
        let t0 = Instant::now();
        let mut e = Expiries::default();
        let answered = w(1);
        e.add(t0, answered.clone());
        e.add(t0, w(2));
        answered.1.set(false);
        assert_eq!(ids(e.due(t0)), vec![2]);
        // A long stream of answered requests behind one that still waits:
        // the queue is swept whenever it doubled, so it stays small.
        let stuck = w(0);
        e.add(t0 + Duration::from_secs(5), stuck.clone());
        for i in 0..100_000u32 {
            let x = w(i + 10);
            e.add(
                t0 + Duration::from_secs(5) + Duration::from_micros(u64::from(i)),
                x.clone(),
            );
            x.1.set(false);
        }
        assert!(e.held() <= 2 * SWEEP_FROM, "{} entries held", e.held());
        assert_eq!(ids(e.due(t0 + Duration::from_secs(60))), vec![0]);
    }

    #[test]
    fn answered_waits_with_earlier_deadlines_do_not_pile_up_either() {
        // One long wait queued first: every later, shorter one comes
        // "early" (out of order).
        let t0 = Instant::now();
        let mut e = Expiries::default();
        let long = w(0);
        e.add(t0 + Duration::from_secs(100), long.clone());
        for i in 0..100_000u32 {
            let x = w(i + 1);
            e.add(
                t0 + Duration::from_secs(1) + Duration::from_micros(u64::from(i)),
                x.clone(),
            );
            x.1.set(false);
        }
        assert!(e.held() <= 2 * SWEEP_FROM, "{} entries held", e.held());
        // The timer goes to the long wait, not to answered ones.
        assert_eq!(e.arm(), Some(t0 + Duration::from_secs(100)));
    }
}
