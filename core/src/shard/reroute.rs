//! What a shard does with messages a failed connection never sent, and
//! with sends that failed after they returned.
//!
//! The delivery rule: at most once for anything that may have reached a
//! peer. A frame whose bytes never reached the kernel (connection refused,
//! still connecting, still queued when it failed) cannot have reached it,
//! so it goes to the next provider: a request keeps its waiter (same
//! correlation, same timeout), a `call` or `notify` is sent again. A
//! `publish` copy is never sent elsewhere (every subscriber has its own);
//! it is reported instead. Requests that may have reached the peer fail
//! with `PeerLost`.

use tracing::debug;

use super::{LocalBus, Target};
use crate::channel::NodeId;
use crate::error::{BusError, SendFailure, SendOp};
use crate::fault;
use crate::frame::{self, Decoded, FrameKind};
use crate::handler::ReplyTo;
use crate::stats::Counters;
use crate::write_queue::Unsent;

impl LocalBus {
    /// Sends again, to the next provider, the frames `dead`'s connection
    /// never sent (see the module docs). A re-routed request's waiter moves
    /// to its new connection; the waiters left on the dead one are the
    /// requests that may have reached the peer.
    pub(super) fn reroute(&self, dead: NodeId, unsent: Vec<Unsent>) {
        for Unsent { bytes, publish } in unsent {
            let Ok(Decoded::Frame { frame, .. }) = frame::decode(&bytes, u32::MAX) else {
                continue;
            };
            let meta = frame.meta;
            let payload = frame.payload;
            let op = match meta.kind {
                FrameKind::Request if meta.correlation != 0 => {
                    self.reroute_request(dead, meta, payload);
                    continue;
                }
                FrameKind::Request => SendOp::Call,
                FrameKind::OneWay if publish => {
                    self.send_failed(SendFailure {
                        op: SendOp::Publish,
                        channel: meta.channel,
                        reply_channel: meta.reply_channel,
                        peer: Some(dead),
                        error: BusError::PeerLost { peer: dead },
                    });
                    continue;
                }
                FrameKind::OneWay => SendOp::Notify,
                // Control frames, replies and errors are never re-sent.
                _ => continue,
            };
            let sent = self.to_next_provider(meta.channel, Target::Any, &mut vec![dead], |peer| {
                self.send_to(peer, meta, payload)
            });
            match sent {
                Ok(()) => Counters::inc(&self.0.counters.rerouted),
                Err(error) => self.send_failed(SendFailure {
                    op,
                    channel: meta.channel,
                    reply_channel: meta.reply_channel,
                    peer: Some(dead),
                    error,
                }),
            }
        }
    }

    /// Moves a waiting request to the next provider; its waiter keeps
    /// waiting (same correlation, same deadline). A waiter that is gone
    /// (the caller dropped the request) is left alone.
    fn reroute_request(&self, dead: NodeId, mut meta: frame::Meta, payload: &[u8]) {
        let corr = meta.correlation;
        let Some((deadline, target)) = self
            .0
            .pending
            .borrow()
            .get(&corr)
            .map(|w| (w.deadline, w.target))
        else {
            return;
        };
        // The copy carries the time left now, not when the first one was
        // queued; with none left it is not sent, and its waiter times out
        // (detached from the dead connection, whose waiters fail with
        // `PeerLost`: this one provably never left).
        let now = std::time::Instant::now();
        if now >= deadline {
            if let Some(w) = self.0.pending.borrow_mut().get_mut(&corr) {
                w.conn = super::NO_CONN;
            }
            return;
        }
        meta.ext.deadline = Some(crate::timeouts::wire_remaining(now, deadline));
        let result = self.to_next_provider(meta.channel, target, &mut vec![dead], |peer| {
            if peer == self.node_id() {
                // Served here: the waiter is answered by this node's handler
                // (taken out first: the handler runs with no borrow held).
                let waiting = self.0.pending.borrow_mut().remove(&corr);
                if let Some(w) = waiting {
                    self.deliver(&meta, payload, ReplyTo::Waiter(w.tx));
                }
                return Ok(());
            }
            let conn = self.conn_to(peer)?;
            Self::push_to(&conn, peer, &meta, payload)?;
            if let Some(w) = self.0.pending.borrow_mut().get_mut(&corr) {
                w.conn = conn.id;
                w.peer = peer;
                w.sent = now;
            }
            Ok(())
        });
        match result {
            Ok(()) => Counters::inc(&self.0.counters.rerouted),
            Err(e) => {
                let waiting = self.0.pending.borrow_mut().remove(&corr);
                if let Some(w) = waiting {
                    let _ = w.tx.send(Err(e), None);
                }
            }
        }
    }

    /// Reports a send that failed after it returned: to the node's
    /// `on_send_error` hook when one is set (a panicking hook is caught),
    /// otherwise to the debug log; counted either way.
    pub(crate) fn send_failed(&self, failure: SendFailure) {
        Counters::inc(&self.0.counters.send_failures);
        match &self.0.shared.config.on_send_error {
            Some(hook) => {
                if let Err(p) = fault::catch(|| (hook.0)(&failure)) {
                    tracing::error!(panic = %p.message, "on_send_error hook panicked");
                }
            }
            None => debug!(?failure, "send failed after it returned"),
        }
    }
}
