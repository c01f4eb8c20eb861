//! The node's lifecycle as futures, for tokio or any other executor: none
//! of them blocks the thread that polls it (what blocks — joining etcd,
//! draining — runs on a thread of its own), and none installs a
//! process-wide signal handler, so they compose with `tokio::signal`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use domi::{Channel, Handler, Node};
//!
//! let node = Node::builder("svc")
//!     .subscribe(Channel(50), Handler::sync(|req| { let _ = req.reply(b"ok"); }))
//!     .start_async()
//!     .await?;
//! node.wait_for_provider_async(Channel(50), Duration::from_secs(5)).await?;
//! let reply = node.request_async(Channel(50), b"hi", Duration::from_secs(1)).await?;
//! // Drain when the runtime's own signal handling says so.
//! # let ctrl_c = async {};
//! let outcome = node.stop_when(ctrl_c).await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use domi_core::{BusError, Channel};
use futures_lite::future;

use crate::node::{Node, StartError, StopOutcome};
use crate::NodeBuilder;

impl NodeBuilder {
    /// [`NodeBuilder::start`] as a future: the start (binding, joining the
    /// cluster, which may wait for etcd up to its join timeout) runs on a
    /// thread of its own.
    pub fn start_async(self) -> impl Future<Output = Result<Node, StartError>> + Send + 'static {
        let (tx, rx) = futures_channel::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("domi-start".into())
            .spawn(move || {
                let _ = tx.send(self.start());
            });
        async move {
            spawned.map_err(StartError::Thread)?;
            rx.await.unwrap_or_else(|_| {
                Err(StartError::Thread(std::io::Error::other(
                    "the start thread ended without an answer (it panicked)",
                )))
            })
        }
    }
}

impl Node {
    /// A future that ends when the node has stopped (by any means), with
    /// how: [`Node::wait`] without blocking.
    pub fn wait_async(&self) -> impl Future<Output = StopOutcome> + Send + 'static {
        let node = self.clone();
        std::future::poll_fn(move |cx| node.poll_stopped(cx))
    }

    /// [`Node::stop`] as a future: the drain runs on a thread of its own;
    /// the node is `draining` as soon as this is called.
    pub fn stop_async(&self) -> impl Future<Output = StopOutcome> + Send + 'static {
        self.stop_in_background();
        self.wait_async()
    }

    /// Drains once `signal` completes (e.g. `tokio::signal::ctrl_c()`), or
    /// ends early if the node stopped otherwise: the signal handling stays
    /// the application's, nothing process-wide is installed.
    pub fn stop_when<F>(&self, signal: F) -> impl Future<Output = StopOutcome> + 'static
    where
        F: Future + 'static,
    {
        let node = self.clone();
        async move {
            let stopped = node.wait_async();
            let signalled = async {
                signal.await;
                None
            };
            match future::or(async { Some(stopped.await) }, signalled).await {
                Some(outcome) => outcome,
                None => node.stop_async().await,
            }
        }
    }

    /// [`Node::wait_for_provider`] as a future (woken by membership
    /// changes; no thread parks).
    pub fn wait_for_provider_async(
        &self,
        channel: Channel,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send + 'static {
        self.wait_for_providers_async(channel, 1, timeout)
    }

    /// [`Node::wait_for_providers`] as a future.
    pub fn wait_for_providers_async(
        &self,
        channel: Channel,
        count: usize,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), BusError>> + Send + 'static {
        let ready = self.core().providers_ready(channel, count);
        async move {
            let ready = async {
                ready.await;
                Ok(())
            };
            let late = async {
                futures_timer::Delay::new(timeout).await;
                Err(BusError::NoProvider { channel })
            };
            future::or(ready, late).await
        }
    }
}
