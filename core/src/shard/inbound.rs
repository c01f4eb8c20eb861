//! The receiving side of a shard: serving a connection, executing what its
//! session ([`crate::session`]) decides for each frame (handshake, delivery,
//! answers to waiting requests), and cleaning up when a connection closes.

use std::rc::Rc;
use std::time::Instant;

use tracing::{debug, warn};

use super::LocalBus;
use crate::conn::{CloseReason, Conn, Dir};
use crate::error::BusError;
use crate::frame::{Frame, FrameKind, HEADER_LEN};
use crate::handler::ReplyTo;
use crate::session::{Action, Close};
use crate::stats::Counters;
use crate::timeouts::Expired;

impl LocalBus {
    /// Reads a connection until it closes, dispatching every frame.
    pub(super) async fn serve(&self, conn: Rc<Conn>) {
        let w = conn.clone();
        let spin = self.0.read_spin;
        glommio::spawn_local(async move {
            if let Err(e) = w.clone().write_loop(spin).await {
                w.fail(e);
            }
        })
        .detach();
        let max = self.0.shared.config.max_payload;
        let reason = conn
            .read_loop(max, self.0.read_spin, |frame| self.on_frame(&conn, frame))
            .await;
        self.on_closed(&conn, reason);
    }

    /// Executes what the connection's session decides for one frame.
    pub(super) fn on_frame(&self, conn: &Rc<Conn>, frame: Frame<'_>) -> Result<(), CloseReason> {
        let c = &self.0.counters;
        Counters::inc(&c.frames_in);
        c.bytes_in.set(
            c.bytes_in.get()
                + (HEADER_LEN + frame.meta.ext.wire_len() + frame.payload.len()) as u64,
        );
        if conn.is_closed() {
            return Ok(()); // closing: what is still buffered is not acted on
        }
        let action = conn
            .session
            .borrow_mut()
            .on_frame(&self.0.shared.local, frame);
        // The session's own frames first: an AUTH proof leaves before the
        // frames it held, a refusal is queued before the close.
        conn.flush_session();
        match action {
            Action::None | Action::Announced(_) => {}
            Action::Opened(theirs) => {
                if conn.dir == Dir::Outbound {
                    conn.release_held();
                    self.clear_down(theirs.id);
                }
                debug!(peer = %theirs.id, name = %theirs.name, dir = ?conn.dir, "connection open");
            }
            Action::Deliver => {
                conn.mark_used();
                let meta = &frame.meta;
                let to = if meta.kind == FrameKind::OneWay {
                    ReplyTo::Nobody
                } else {
                    ReplyTo::Conn {
                        conn: conn.clone(),
                        correlation: meta.correlation,
                        channel: meta.channel,
                        reply_channel: meta.reply_channel,
                    }
                };
                self.deliver(meta, frame.payload, to);
            }
            Action::CallReply => {
                // The reply to a `call` of ours, for our reply-channel handler.
                conn.mark_used();
                conn.call_answered();
                self.deliver(&frame.meta, frame.payload, ReplyTo::Nobody);
            }
            Action::Complete {
                correlation,
                result,
            } => {
                conn.mark_used();
                let peer = conn.peer().unwrap_or(frame.meta.source);
                let result = result
                    .map(<[u8]>::to_vec)
                    .map_err(|code| remote_error(peer, code, frame.payload));
                self.complete(conn.id, correlation, conn.arrival().0, result);
            }
            Action::CallFailed {
                channel,
                reply_channel,
                code,
            } => {
                // A `call` this node sent was refused (nothing ran) or its
                // handler panicked: the error names the call's channels.
                conn.mark_used();
                conn.call_answered();
                let peer = frame.meta.source;
                self.send_failed(crate::error::SendFailure {
                    op: crate::error::SendOp::Call,
                    channel,
                    reply_channel,
                    peer: Some(peer),
                    error: remote_error(peer, code, frame.payload),
                });
            }
            Action::Close(close @ Close::Refused { .. }) => {
                // Our refusal is queued: close once it is written; nothing
                // more this connection sends is acted on.
                conn.close_after_flush();
                Counters::inc(&c.bad_closes);
                Counters::inc(&c.closed_refused);
                warn!(reason = %close, "handshake refused");
            }
            Action::Close(close) => return Err(CloseReason::Session(close)),
        }
        Ok(())
    }

    /// Answers the request `corr` sent on connection `conn`. An answer on
    /// another connection (a late or forged one) is ignored.
    pub(super) fn complete(
        &self,
        conn: u64,
        corr: u64,
        arrival: Instant,
        result: Result<Vec<u8>, BusError>,
    ) {
        let mut pending = self.0.pending.borrow_mut();
        if pending.get(&corr).is_some_and(|w| w.conn == conn) {
            if let Some(w) = pending.remove(&corr) {
                drop(pending);
                self.breaker_record(w.peer, w.sent, arrival, Some(&result));
                let _ = w.tx.send(result, Some(arrival));
            }
        } else {
            debug!(
                corr,
                conn, "answer to no request waiting on this connection dropped"
            );
        }
    }

    pub(super) fn on_closed(&self, conn: &Rc<Conn>, reason: CloseReason) {
        conn.close();
        conn.release();
        let c = &self.0.counters;
        let kind = match &reason {
            CloseReason::Eof | CloseReason::Local | CloseReason::Renumbered { .. } => None,
            CloseReason::Io(_) => Some(None),
            CloseReason::Frame(_) => Some(Some(&c.closed_malformed)),
            CloseReason::Session(close) => Some(Some(match close {
                Close::Protocol { .. } => &c.closed_protocol,
                Close::Refused { .. } | Close::Rejected { .. } | Close::RefusedByPeer { .. } => {
                    &c.closed_refused
                }
                Close::Timeout {
                    expired: Expired::Silence,
                } => &c.closed_silent,
                Close::Timeout { .. } => &c.closed_timeout,
            })),
            CloseReason::Tls(_) => Some(Some(&c.closed_tls)),
        };
        match kind {
            None => debug!(peer = ?conn.peer(), "connection closed: {reason}"),
            Some(counter) => {
                Counters::inc(&c.bad_closes);
                if let Some(counter) = counter {
                    Counters::inc(counter);
                }
                warn!(peer = ?conn.peer(), dir = ?conn.dir, "connection closed: {reason}");
            }
        }
        match conn.dir {
            Dir::Inbound => {
                self.0.inbound.borrow_mut().remove(&conn.id);
            }
            Dir::Outbound => {
                let Some(peer) = conn.peer() else { return };
                {
                    let mut out = self.0.outbound.borrow_mut();
                    let slot = &mut out[peer.index()];
                    if slot.as_ref().map(|c| c.id) == Some(conn.id) {
                        *slot = None;
                        self.0.outbound_open.set(self.0.outbound_open.get() - 1);
                    }
                }
                // Closed by us (stopping, renumbered): the peer is not down.
                if !matches!(reason, CloseReason::Local | CloseReason::Renumbered { .. }) {
                    self.mark_down(peer);
                }
                // Frames that never reached the kernel go to the next
                // provider (a re-routed request's waiter moves with it)...
                if !self.0.stopping.is_raised() {
                    self.reroute(peer, conn.take_unsent());
                }
                // ...and requests still waiting on this connection may have
                // reached the peer: they fail.
                let lost: Vec<u64> = self
                    .0
                    .pending
                    .borrow()
                    .iter()
                    .filter(|(_, w)| w.conn == conn.id)
                    .map(|(k, _)| *k)
                    .collect();
                let now = Instant::now();
                for corr in lost {
                    self.complete(conn.id, corr, now, Err(BusError::PeerLost { peer }));
                }
            }
        }
    }
}

/// The error a caller gets for an error frame from `peer`: an application
/// error with its code and message, or the bus's code.
fn remote_error(
    peer: crate::channel::NodeId,
    code: crate::error::ErrorCode,
    payload: &[u8],
) -> BusError {
    match crate::error::decode_application(payload) {
        Some((code, message)) => BusError::Application {
            peer,
            code,
            message,
        },
        None => BusError::Remote { peer, code },
    }
}
