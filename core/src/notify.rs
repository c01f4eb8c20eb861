//! Tiny single-thread wake-up primitives for tasks on one shard.
//!
//! glommio tasks of one shard never run concurrently, so these use `Cell`s
//! instead of atomics: [`Wake`] is an edge (one waiter, reset when consumed),
//! [`Signal`] a level (many waiters, never reset), [`Event`] an edge for many
//! waiters (each waits for the next one after the count it saw).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// An edge-triggered wake-up for one waiting task (e.g. a connection's writer).
#[derive(Default)]
pub(crate) struct Wake {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Wake {
    /// Marks the wake-up pending and wakes the waiter, if any.
    pub(crate) fn notify(&self) {
        if !self.pending.replace(true) {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Resolves once a wake-up is pending, and consumes it.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A level-triggered signal: once raised it stays raised; any number of waiters.
#[derive(Default)]
pub(crate) struct Signal {
    raised: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Raises the signal and wakes every waiter.
    pub(crate) fn raise(&self) {
        if !self.raised.replace(true) {
            for w in self.wakers.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Whether the signal was raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Resolves once the signal is raised.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.raised.get() {
                Poll::Ready(())
            } else {
                park(&self.wakers, cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

/// An edge for many waiters: [`Event::notify_all`] wakes every task waiting
/// for an event after the count it saw ([`Event::count`]).
#[derive(Default)]
pub(crate) struct Event {
    count: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    /// Events so far (read before trying what the event lets succeed, so
    /// one in between is not missed).
    pub(crate) fn count(&self) -> u64 {
        self.count.get()
    }

    /// One more event: wakes every waiter.
    pub(crate) fn notify_all(&self) {
        self.count.set(self.count.get() + 1);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once the count has moved past `seen`. A waiter dropped
    /// before that leaves its waker until the next event (at most one per
    /// task that waited).
    pub(crate) async fn wait_past(&self, seen: u64) {
        poll_fn(|cx| {
            if self.count.get() != seen {
                Poll::Ready(())
            } else {
                park(&self.wakers, cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

/// Adds `waker` to `wakers` unless it is there already (a task polled
/// again while waiting).
fn park(wakers: &RefCell<Vec<Waker>>, waker: &Waker) {
    let mut w = wakers.borrow_mut();
    if !w.iter().any(|x| x.will_wake(waker)) {
        w.push(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn wake_is_consumed_and_signal_stays() {
        let w = Wake::default();
        w.notify();
        w.notify();
        future::block_on(w.wait());
        assert!(future::block_on(future::poll_once(w.wait())).is_none());
        let s = Signal::default();
        assert!(future::block_on(future::poll_once(s.wait())).is_none());
        s.raise();
        assert!(s.is_raised());
        future::block_on(s.wait());
        future::block_on(s.wait());
    }

    #[test]
    fn an_event_wakes_waiters_of_the_count_they_saw_only() {
        let e = Event::default();
        let seen = e.count();
        assert!(future::block_on(future::poll_once(e.wait_past(seen))).is_none());
        e.notify_all();
        future::block_on(e.wait_past(seen));
        // Waiting past the new count waits for the next event.
        assert!(future::block_on(future::poll_once(e.wait_past(e.count()))).is_none());
    }
}
