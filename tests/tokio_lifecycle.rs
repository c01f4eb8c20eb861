//! The lifecycle from tokio: start, wait for a provider, request and drain
//! as futures on a single-threaded runtime. Nothing may block its one
//! thread: a ticker task keeps ticking throughout, and the drain starts
//! on an application-owned "signal" (a oneshot standing in for
//! `tokio::signal::ctrl_c()`), with no process-wide handler.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::small;
use domi::{BusError, Channel, Handler, StopOutcome};

const CH: Channel = Channel(77);
const T: Duration = Duration::from_secs(10);

#[test]
fn the_lifecycle_runs_on_one_tokio_thread_without_blocking_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ticks = Arc::new(AtomicU64::new(0));
        let t = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                t.fetch_add(1, Ordering::Relaxed);
            }
        });

        let alone = small("alone").start_async().await.unwrap();
        // Nobody serves CH yet: the wait ends in NoProvider, on time.
        let r = alone
            .wait_for_provider_async(CH, Duration::from_millis(50))
            .await;
        assert!(
            matches!(r, Err(BusError::NoProvider { channel: CH })),
            "{r:?}"
        );
        assert!(matches!(
            alone.stop_async().await,
            StopOutcome::Drained { .. }
        ));

        let server = small("server")
            .subscribe(
                CH,
                Handler::sync(|req| {
                    let _ = req.reply(b"pong");
                }),
            )
            .start_async()
            .await
            .unwrap();
        let client = small("client")
            .peer(server.local_addr())
            .start_async()
            .await
            .unwrap();
        let before = ticks.load(Ordering::Relaxed);
        // Pending until the client's membership learns of the server.
        client.wait_for_provider_async(CH, T).await.unwrap();
        for _ in 0..100 {
            let r = client.request_async(CH, b"ping", T).await.unwrap();
            assert_eq!(r, b"pong");
        }
        assert!(
            ticks.load(Ordering::Relaxed) > before,
            "the runtime's only thread kept running other tasks"
        );

        // The application's own signal starts the drain.
        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = server.stop_when(async move {
            let _ = signal_rx.await;
        });
        let signal = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!server.is_stopped(), "nothing drained before the signal");
            signal_tx.send(()).unwrap();
        };
        let (outcome, ()) = tokio::join!(stopping, signal);
        assert!(
            matches!(outcome, StopOutcome::Drained { .. }),
            "{outcome:?}"
        );
        assert!(matches!(
            server.wait_async().await,
            StopOutcome::Drained { .. }
        ));

        // A node stopped otherwise ends `stop_when` too.
        let pending = client.stop_when(std::future::pending::<()>());
        client.halt();
        assert!(matches!(pending.await, StopOutcome::Drained { .. }));
    });
}
