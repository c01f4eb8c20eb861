//! Handler fault isolation: a panic in a handler (sync or async) is caught
//! per message, so the shard keeps serving every other request.
//!
//! ## The `UnwindSafe` stance
//! Handlers are not required to be `UnwindSafe`: the bus wraps every call in
//! `AssertUnwindSafe`. What a panicking handler leaves behind is the
//! handler's own business, as with a panicking thread: state it shares with
//! other requests (a `RefCell`, a `Mutex` it poisons, a half-updated map)
//! may be observed half-updated by the next request. The bus's own state is
//! never left half-updated by a handler panic: the handler runs with no bus
//! borrow held. With `panic = "abort"` in the build profile nothing can be
//! caught and a handler panic ends the process.
//!
//! ## Logging
//! A panic caught here is reported once, through `tracing` by the shard (with
//! channel and shard). The process-wide panic hook installed by
//! [`install_hook`] stays silent for panics inside handlers and hands every
//! other panic to the previous hook unchanged.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// Set while a handler runs on this thread (hook: record, do not print).
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    /// Set while the state of a panicked handler is dropped (a `Replier`
    /// dropped then answers `HandlerPanicked` instead of `NoReply`).
    static UNWOUND: Cell<bool> = const { Cell::new(false) };
    /// What the hook saw of the last handler panic on this thread.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A caught handler panic: its message and where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panicked {
    /// The panic message (`"<non-string panic payload>"` if not a string).
    pub message: String,
}

/// Installs (once per process) the panic hook that keeps handler panics
/// out of stderr; they are logged by the shard instead.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_HANDLER.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = payload_text(info.payload());
                LAST.with(|l| *l.borrow_mut() = Some(format!("{message}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    let was = IN_HANDLER.with(|h| h.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    IN_HANDLER.with(|h| h.set(was));
    result.map_err(|payload| Panicked {
        message: LAST
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| payload_text(&*payload)),
    })
}

/// Runs `f`, catching a panic.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    guarded(f)
}

/// Drops `value` as the remains of a panicked handler: repliers dropped now
/// answer `HandlerPanicked`. A panic in a destructor is caught too.
pub fn drop_unwound<T>(value: T) {
    UNWOUND.with(|u| u.set(true));
    let _ = guarded(move || drop(value));
    UNWOUND.with(|u| u.set(false));
}

/// Whether the current drop is the remains of a panicked handler: dropped
/// by [`drop_unwound`], or by the unwinding itself inside a handler.
pub(crate) fn unwinding_handler() -> bool {
    UNWOUND.with(Cell::get) || (IN_HANDLER.with(Cell::get) && std::thread::panicking())
}

/// A future whose panics are caught: it resolves to `Err` on a panic (the
/// inner future is then dropped as panicked remains, see [`drop_unwound`]).
/// Takes an `Unpin` future (box one that is not: `Box::pin(fut)`).
pub struct CatchPanic<F> {
    inner: Option<F>,
}

impl<F: Future + Unpin> CatchPanic<F> {
    /// Wraps `fut`.
    pub fn new(fut: F) -> CatchPanic<F> {
        CatchPanic { inner: Some(fut) }
    }
}

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending; // polled after completion: never again ready
        };
        match guarded(|| Pin::new(inner).poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                self.inner = None;
                Poll::Ready(Ok(v))
            }
            Err(p) => {
                if let Some(f) = self.inner.take() {
                    drop_unwound(f);
                }
                Poll::Ready(Err(p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn a_panic_is_caught_with_its_message() {
        install_hook();
        let r = catch(|| -> u32 { panic!("bad payload {}", 7) });
        let p = r.unwrap_err();
        assert!(p.message.starts_with("bad payload 7 at "), "{}", p.message);
        assert_eq!(catch(|| 5), Ok(5));
    }

    #[test]
    fn an_async_panic_is_caught_and_its_state_dropped_as_unwound() {
        install_hook();
        struct Probe(std::rc::Rc<Cell<Option<bool>>>);
        impl Drop for Probe {
            fn drop(&mut self) {
                self.0.set(Some(unwinding_handler()));
            }
        }
        let seen = std::rc::Rc::new(Cell::new(None));
        let probe = Probe(seen.clone());
        let fut = CatchPanic::new(Box::pin(async move {
            let _p = probe;
            future::yield_now().await;
            panic!("later");
        }));
        let r: Result<(), Panicked> = future::block_on(fut);
        assert!(r.unwrap_err().message.starts_with("later"));
        // The panic unwound through the future, dropping `_p` while
        // unwinding; either way the remains count as a panicked handler's.
        assert_eq!(seen.get(), Some(true));
        assert!(!unwinding_handler());
        let ok = future::block_on(CatchPanic::new(Box::pin(async { 3 })));
        assert_eq!(ok, Ok(3));
    }
}
