//! Tiny single-thread wake-up primitives for tasks on one shard.
//!
//! glommio tasks of one shard never run concurrently, so these use `Cell`s
//! instead of atomics: [`Wake`] is an edge (one waiter, reset when consumed),
//! [`Signal`] a level (many waiters, never reset), [`Event`] an edge for many
//! waiters (each waits for the next one after the count it saw), and
//! [`oneshot`] one value for one waiter (a request's answer), which an
//! [`Expiry`] handle can end at its deadline.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::expiry::Expirable;

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
            wake_all(&self.wakers);
        }
    }

    /// Whether the signal was raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Resolves once the signal is raised.
    pub(crate) async fn wait(&self) {
        wait_for(&self.wakers, || self.raised.get()).await
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
        wake_all(&self.wakers);
    }

    /// Resolves once the count has moved past `seen`. A waiter dropped
    /// before that leaves its waker until the next event (at most one per
    /// task that waited).
    pub(crate) async fn wait_past(&self, seen: u64) {
        wait_for(&self.wakers, || self.count.get() != seen).await
    }
}

/// Resolves once `ready` holds, waiting among `wakers` meanwhile (a task
/// polled again while waiting is listed once).
async fn wait_for(wakers: &RefCell<Vec<Waker>>, ready: impl Fn() -> bool) {
    poll_fn(|cx| {
        if ready() {
            return Poll::Ready(());
        }
        let mut w = wakers.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    })
    .await
}

/// Wakes every task in `wakers` (taken out first: a woken task may wait
/// again at once).
fn wake_all(wakers: &RefCell<Vec<Waker>>) {
    let woken = std::mem::take(&mut *wakers.borrow_mut());
    for w in woken {
        w.wake();
    }
}

/// One value from a [`Sender`] to a [`Receiver`] on the same shard (no
/// atomics, one `Rc` allocation).
pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(Slot {
        value: Cell::new(None),
        waker: Cell::new(None),
        sender: Cell::new(true),
        receiver: Cell::new(true),
        expired: Cell::new(false),
    });
    (Sender(slot.clone()), Receiver(slot))
}

struct Slot<T> {
    value: Cell<Option<T>>,
    waker: Cell<Option<Waker>>,
    /// The sender has not sent yet, nor been dropped.
    sender: Cell<bool>,
    /// The receiver still exists.
    receiver: Cell<bool>,
    /// Its deadline passed first ([`Expiry::expire`]).
    expired: Cell<bool>,
}

impl<T> Slot<T> {
    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// The sending half of a [`oneshot`]; dropping it unsent ends the wait
/// with [`Unanswered::Canceled`].
pub(crate) struct Sender<T>(Rc<Slot<T>>);

/// The receiving half of a [`oneshot`]: a future of the value.
pub(crate) struct Receiver<T>(Rc<Slot<T>>);

/// Why a [`Receiver`] got no value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// The sender was dropped without sending.
    Canceled,
    /// Its [`Expiry`] ended the wait first.
    Expired,
}

/// A handle that ends a [`oneshot`]'s wait at its deadline (held by the
/// shard's [`crate::expiry::Expiries`], so a waiting request needs no
/// timer of its own).
pub(crate) struct Expiry<T>(Rc<Slot<T>>);

impl<T> Expiry<T> {
    /// Ends the wait with [`Unanswered::Expired`], unless it already ended.
    pub(crate) fn expire(&self) {
        if self.is_waiting() {
            self.0.expired.set(true);
            self.0.wake();
        }
    }
}

impl<T> Expirable for Expiry<T> {
    fn is_waiting(&self) -> bool {
        // The sender is gone once it sent (or was dropped unsent).
        let s = &self.0;
        s.receiver.get() && s.sender.get() && !s.expired.get()
    }
}

impl<T> Sender<T> {
    /// Sends the value, waking the receiver; `Err` with the value when the
    /// receiver is gone.
    pub(crate) fn send(self, value: T) -> Result<(), T> {
        if !self.0.receiver.get() {
            return Err(value);
        }
        self.0.value.set(Some(value));
        Ok(())
        // The drop below wakes the receiver.
    }

    /// A handle that can end the receiver's wait at a deadline.
    pub(crate) fn expiry(&self) -> Expiry<T> {
        Expiry(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.sender.set(false);
        self.0.wake();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.receiver.set(false);
        // Nothing will take them: free them now, not when the sender and
        // the expiry handle go.
        self.0.waker.take();
        self.0.value.take();
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Unanswered>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = &self.0;
        // An answer that came before this poll wins, even one that came
        // after the expiry (the caller has not seen the timeout yet).
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Ok(v));
        }
        if slot.expired.get() {
            return Poll::Ready(Err(Unanswered::Expired));
        }
        if !slot.sender.get() {
            return Poll::Ready(Err(Unanswered::Canceled));
        }
        slot.waker.set(Some(cx.waker().clone()));
        Poll::Pending
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

    #[test]
    fn a_oneshot_delivers_once_or_reports_the_sender_gone() {
        let (tx, mut rx) = oneshot::<u32>();
        assert!(future::block_on(future::poll_once(&mut rx)).is_none());
        assert_eq!(tx.send(7), Ok(()));
        assert_eq!(future::block_on(rx), Ok(7));
        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(future::block_on(rx), Err(Unanswered::Canceled));
        let (tx, rx) = oneshot::<u32>();
        drop(rx);
        assert_eq!(tx.send(7), Err(7), "nobody waits");
    }

    #[test]
    fn an_expiry_ends_only_a_wait_still_going_on() {
        let (tx, rx) = oneshot::<u32>();
        let expiry = tx.expiry();
        assert!(expiry.is_waiting());
        expiry.expire();
        assert!(!expiry.is_waiting());
        assert_eq!(future::block_on(rx), Err(Unanswered::Expired));
        // Answered first: the answer stands.
        let (tx, rx) = oneshot::<u32>();
        let expiry = tx.expiry();
        tx.send(3).unwrap();
        assert!(!expiry.is_waiting());
        expiry.expire();
        assert_eq!(future::block_on(rx), Ok(3));
        // Given up by the receiver: no longer waiting.
        let (tx, rx) = oneshot::<u32>();
        drop(rx);
        assert!(!tx.expiry().is_waiting());
    }

    #[test]
    fn a_oneshot_wakes_its_waiting_receiver() {
        let (tx, rx) = oneshot::<&str>();
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = Waker::from(std::sync::Arc::new(Flag(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        let mut rx = Box::pin(rx);
        assert!(rx.as_mut().poll(&mut cx).is_pending());
        tx.send("answer").unwrap();
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(rx.as_mut().poll(&mut cx), Poll::Ready(Ok("answer")));
    }
}
