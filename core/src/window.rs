//! The slots of a request window (see [`crate::LocalBus::request_window`]):
//! which of its requests still wait, and the ended ones in the order they
//! ended, for the one task that owns the window. Shard-local, like
//! [`crate::notify`]: no atomics, one `Rc` for the whole window instead of a
//! oneshot per request.
//!
//! A slot holds one request from its first attempt to the moment the window
//! hands its result out. Each attempt gets a [`WindowSender`] (what answers
//! it: the pending table, a local handler) and a [`WindowExpiry`] (what the
//! shard's expiry task ends it with); both carry the attempt's generation,
//! so an answer or a deadline of an earlier attempt, or of the slot's
//! earlier request, is ignored.
//!
//! [`Waiter`] and [`Deadline`] are what the shard holds for any waiting
//! request: a request future's oneshot, or a window's slot.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::BusError;
use crate::expiry::Expirable;

/// What a request's waiter receives.
pub(crate) type Answer = Result<Vec<u8>, BusError>;

/// An answer and when it arrived: the reading of the read that brought
/// it, or the clock when this node answered (what a request's duration
/// ends at).
pub(crate) type Arrived = (Answer, Option<Instant>);

/// How an attempt ended, as the window's owner sees it.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Answered (`at`: when the answer arrived; see [`Waiter::send`]).
    Answered(Answer, Option<Instant>),
    /// Its deadline passed first.
    Expired,
    /// Its sender was dropped unanswered (the shard stopped).
    Canceled,
}

enum State {
    /// Not in use.
    Free,
    /// An attempt is being started: answers are taken (a local handler
    /// may answer before the start returns), a dropped sender means the
    /// start failed.
    Starting,
    /// Started: waits for its answer or its deadline.
    Waiting,
    /// The start's sender was dropped unanswered; told at [`WindowSlots::started`].
    Dropped,
    /// Ended, in the done queue.
    Ended(Ended),
    /// Handed to the owner, which starts another attempt or frees it.
    Taken,
}

struct Slot {
    generation: u64,
    state: State,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots whose attempt ended, in the order they ended.
    done: VecDeque<u32>,
    waker: Option<Waker>,
    /// Slots not free.
    used: usize,
    /// The window was dropped: every handle is inert.
    closed: bool,
}

impl Table {
    fn current(&mut self, index: u32, generation: u64) -> Option<&mut State> {
        if self.closed {
            return None;
        }
        let slot = &mut self.slots[index as usize];
        (slot.generation == generation).then_some(&mut slot.state)
    }

    /// Queues slot `index` as ended; returns the owner's waker, to wake
    /// once the table is no longer borrowed.
    #[must_use]
    fn end(&mut self, index: u32, ended: Ended) -> Option<Waker> {
        self.slots[index as usize].state = State::Ended(ended);
        self.done.push_back(index);
        self.waker.take()
    }
}

/// The slots of one request window.
#[derive(Clone, Default)]
pub(crate) struct WindowSlots(Rc<RefCell<Table>>);

impl WindowSlots {
    /// A slot for a new request (reused when one is free).
    pub(crate) fn open(&self) -> u32 {
        let mut t = self.0.borrow_mut();
        t.used += 1;
        if let Some(i) = t.free.pop() {
            return i;
        }
        t.slots.push(Slot {
            generation: 0,
            state: State::Free,
        });
        (t.slots.len() - 1) as u32
    }

    /// Starts an attempt in slot `index`: its answer's sender and its
    /// deadline's handle (those of any earlier attempt become inert).
    pub(crate) fn attempt(&self, index: u32) -> (WindowSender, WindowExpiry) {
        let mut t = self.0.borrow_mut();
        let slot = &mut t.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = State::Starting;
        let generation = slot.generation;
        drop(t);
        let handle = || Handle {
            slots: self.clone(),
            index,
            generation,
        };
        (WindowSender(handle()), WindowExpiry(handle()))
    }

    /// The attempt in slot `index` was started (sent, or served locally):
    /// from now on its deadline may end it. A sender dropped during the
    /// start ends it as [`Ended::Canceled`].
    pub(crate) fn started(&self, index: u32) {
        let mut t = self.0.borrow_mut();
        let woken = match t.slots[index as usize].state {
            State::Starting => {
                t.slots[index as usize].state = State::Waiting;
                None
            }
            State::Dropped => t.end(index, Ended::Canceled),
            _ => None,
        };
        drop(t);
        wake(woken);
    }

    /// Frees slot `index` (its handles become inert).
    pub(crate) fn free(&self, index: u32) {
        let mut t = self.0.borrow_mut();
        let slot = &mut t.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = State::Free;
        t.free.push(index);
        t.used -= 1;
    }

    /// Slots in use: requests not yet handed out.
    pub(crate) fn used(&self) -> usize {
        self.0.borrow().used
    }

    /// The next ended attempt, in the order they ended; its slot stays in
    /// use until [`WindowSlots::attempt`] or [`WindowSlots::free`].
    pub(crate) fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<(u32, Ended)> {
        let mut t = self.0.borrow_mut();
        let Some(index) = t.done.pop_front() else {
            if !t.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                t.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        match std::mem::replace(&mut t.slots[index as usize].state, State::Taken) {
            State::Ended(ended) => Poll::Ready((index, ended)),
            _ => unreachable!("only ended slots are queued"),
        }
    }

    /// Makes every handle inert (the window is gone).
    pub(crate) fn close(&self) {
        let mut t = self.0.borrow_mut();
        t.closed = true;
        t.waker = None;
        t.done.clear();
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

struct Handle {
    slots: WindowSlots,
    index: u32,
    generation: u64,
}

/// Answers one attempt of a window's request; dropping it unanswered ends
/// a started attempt as [`Ended::Canceled`].
pub(crate) struct WindowSender(Handle);

impl WindowSender {
    /// Ends the attempt with `answer` (`at`: when it arrived);
    /// gives it back when the attempt no longer waits. An answer that
    /// comes after the deadline ended the attempt, but before the owner
    /// took that, still wins (as a request future's does).
    pub(crate) fn send(self, answer: Answer, at: Option<Instant>) -> Result<(), Answer> {
        let h = &self.0;
        let mut t = h.slots.0.borrow_mut();
        let woken = match t.current(h.index, h.generation) {
            Some(State::Starting | State::Waiting) => t.end(h.index, Ended::Answered(answer, at)),
            Some(s @ State::Ended(Ended::Expired)) => {
                *s = State::Ended(Ended::Answered(answer, at));
                None
            }
            _ => return Err(answer),
        };
        drop(t);
        wake(woken);
        Ok(())
    }
}

impl Drop for WindowSender {
    fn drop(&mut self) {
        let h = &self.0;
        let mut t = h.slots.0.borrow_mut();
        let woken = match t.current(h.index, h.generation) {
            Some(s @ State::Starting) => {
                *s = State::Dropped;
                None
            }
            Some(State::Waiting) => t.end(h.index, Ended::Canceled),
            _ => None,
        };
        drop(t);
        wake(woken);
    }
}

/// Ends one attempt of a window's request at its deadline (held by the
/// shard's [`crate::expiry::Expiries`]).
pub(crate) struct WindowExpiry(Handle);

impl WindowExpiry {
    /// Ends the attempt as [`Ended::Expired`], unless it already ended.
    pub(crate) fn expire(&self) {
        let h = &self.0;
        let mut t = h.slots.0.borrow_mut();
        if let Some(State::Starting | State::Waiting) = t.current(h.index, h.generation) {
            let woken = t.end(h.index, Ended::Expired);
            drop(t);
            wake(woken);
        }
    }
}

impl Expirable for WindowExpiry {
    fn is_waiting(&self) -> bool {
        let h = &self.0;
        let mut t = h.slots.0.borrow_mut();
        matches!(
            t.current(h.index, h.generation),
            Some(State::Starting | State::Waiting)
        )
    }
}

/// Who waits for a request's answer.
pub(crate) enum Waiter {
    /// A request future ([`crate::LocalBus::request`] and its kin): the
    /// answer and when it arrived.
    One(crate::notify::Sender<Arrived>),
    /// A slot of a request window.
    Window(WindowSender),
}

impl Waiter {
    /// Hands the answer over (`at`: the reading of the read that brought
    /// it; `None` for an answer of this node, dated now); gives it back
    /// when nobody waits any more.
    pub(crate) fn send(self, answer: Answer, at: Option<Instant>) -> Result<(), Answer> {
        // A local answer is dated now (a remote one by its read).
        let at = Some(at.unwrap_or_else(Instant::now));
        match self {
            Waiter::One(tx) => tx.send((answer, at)).map_err(|(answer, _)| answer),
            Waiter::Window(tx) => tx.send(answer, at),
        }
    }
}

/// What ends a waiting request at its deadline.
pub(crate) enum Deadline {
    /// A request future's.
    One(crate::notify::Expiry<Arrived>),
    /// A window slot's attempt.
    Window(WindowExpiry),
}

impl Deadline {
    /// Ends the wait, unless it already ended.
    pub(crate) fn expire(&self) {
        match self {
            Deadline::One(e) => e.expire(),
            Deadline::Window(e) => e.expire(),
        }
    }
}

impl Expirable for Deadline {
    fn is_waiting(&self) -> bool {
        match self {
            Deadline::One(e) => e.is_waiting(),
            Deadline::Window(e) => e.is_waiting(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(slots: &WindowSlots, count: &Arc<Count>) -> Poll<(u32, Ended)> {
        let waker = Waker::from(count.clone());
        slots.poll_ended(&mut Context::from_waker(&waker))
    }

    fn answered(p: Poll<(u32, Ended)>) -> (u32, Vec<u8>) {
        match p {
            Poll::Ready((i, Ended::Answered(Ok(v), _))) => (i, v),
            other => panic!("expected an answer, got {:?}", other.map(|(i, _)| i)),
        }
    }

    #[test]
    fn answers_come_out_in_the_order_they_came_and_wake_the_owner() {
        let slots = WindowSlots::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (a, b) = (slots.open(), slots.open());
        let (ta, _ea) = slots.attempt(a);
        let (tb, _eb) = slots.attempt(b);
        slots.started(a);
        slots.started(b);
        assert!(poll(&slots, &count).is_pending());
        tb.send(Ok(b"b".to_vec()), None).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        ta.send(Ok(b"a".to_vec()), None).unwrap();
        assert_eq!(answered(poll(&slots, &count)), (b, b"b".to_vec()));
        assert_eq!(answered(poll(&slots, &count)), (a, b"a".to_vec()));
        assert_eq!(slots.used(), 2, "slots stay used until freed");
        slots.free(a);
        slots.free(b);
        assert_eq!(slots.used(), 0);
        assert_eq!(slots.open(), b, "a freed slot is reused");
    }

    #[test]
    fn an_earlier_attempts_answer_and_deadline_are_ignored() {
        let slots = WindowSlots::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let i = slots.open();
        let (first, first_expiry) = slots.attempt(i);
        slots.started(i);
        first_expiry.expire();
        assert!(matches!(
            poll(&slots, &count),
            Poll::Ready((_, Ended::Expired))
        ));
        // The late answer of the expired attempt goes nowhere.
        assert!(first.send(Ok(vec![1]), None).is_err());
        let (second, second_expiry) = slots.attempt(i);
        slots.started(i);
        assert!(!first_expiry.is_waiting());
        assert!(second_expiry.is_waiting());
        first_expiry.expire();
        assert!(poll(&slots, &count).is_pending());
        second.send(Ok(vec![2]), None).unwrap();
        assert!(!second_expiry.is_waiting());
        second_expiry.expire();
        assert_eq!(answered(poll(&slots, &count)), (i, vec![2]));
        assert!(poll(&slots, &count).is_pending(), "ended once");
    }

    #[test]
    fn an_answer_after_the_deadline_but_before_the_owner_looked_wins() {
        let slots = WindowSlots::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let i = slots.open();
        let (sender, expiry) = slots.attempt(i);
        slots.started(i);
        expiry.expire();
        sender.send(Ok(vec![5]), None).unwrap();
        assert_eq!(answered(poll(&slots, &count)), (i, vec![5]));
        assert!(poll(&slots, &count).is_pending(), "queued once");
    }

    #[test]
    fn a_dropped_sender_cancels_a_started_attempt_but_not_a_failed_start() {
        let slots = WindowSlots::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let i = slots.open();
        // A start that failed: its sender is dropped before `started`;
        // the owner handles the error and tries again.
        let (sender, _) = slots.attempt(i);
        drop(sender);
        assert!(poll(&slots, &count).is_pending());
        let (sender, _) = slots.attempt(i);
        slots.started(i);
        drop(sender);
        assert!(matches!(
            poll(&slots, &count),
            Poll::Ready((_, Ended::Canceled))
        ));
        // A start whose local handler dropped the answer unsent, told at `started`.
        let j = slots.open();
        let (sender, _) = slots.attempt(j);
        drop(sender);
        slots.started(j);
        assert!(matches!(poll(&slots, &count), Poll::Ready((k, Ended::Canceled)) if k == j));
    }

    #[test]
    fn an_answer_during_the_start_counts_and_a_closed_window_takes_nothing() {
        let slots = WindowSlots::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let i = slots.open();
        let (sender, expiry) = slots.attempt(i);
        sender.send(Ok(vec![9]), None).unwrap();
        slots.started(i);
        assert_eq!(answered(poll(&slots, &count)), (i, vec![9]));
        let (sender, expiry2) = slots.attempt(i);
        slots.started(i);
        slots.close();
        assert!(sender.send(Ok(vec![1]), None).is_err());
        expiry.expire();
        assert!(!expiry2.is_waiting());
        assert!(poll(&slots, &count).is_pending());
    }
}
