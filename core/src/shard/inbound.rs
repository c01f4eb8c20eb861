//! The receiving side of a shard: serving a connection, dispatching its
//! frames, the handshake (with optional authentication), answering waiting
//! requests, and cleaning up when a connection closes.

use std::rc::Rc;

use tracing::{debug, warn};

use super::LocalBus;
use crate::auth;
use crate::channel::Channel;
use crate::conn::{AuthState, CloseReason, Conn, Dir};
use crate::error::{BusError, ErrorCode};
use crate::frame::{Frame, FrameKind, Meta, HEADER_LEN};
use crate::handler::ReplyTo;
use crate::handshake::{self, NodeInfo};
use crate::stats::Counters;

impl LocalBus {
    /// Reads a connection until it closes, dispatching every frame.
    pub(super) async fn serve(&self, conn: Rc<Conn>) {
        let w = conn.clone();
        glommio::spawn_local(async move {
            if let Err(e) = w.clone().write_loop().await {
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

    pub(super) fn on_frame(&self, conn: &Rc<Conn>, frame: Frame<'_>) -> Result<(), CloseReason> {
        let c = &self.0.counters;
        c.frames_in.set(c.frames_in.get() + 1);
        c.bytes_in
            .set(c.bytes_in.get() + (HEADER_LEN + frame.payload.len()) as u64);
        if conn.is_closing() {
            return Ok(()); // refused: only its refusal is still to be written
        }
        if !conn.open.get() {
            return self.on_handshake(conn, frame);
        }
        let meta = frame.meta;
        if Some(meta.source) != conn.peer.get() {
            return Err(CloseReason::Protocol(format!(
                "frame from {} on the connection of {:?}",
                meta.source,
                conn.peer.get()
            )));
        }
        match meta.kind {
            FrameKind::Request | FrameKind::OneWay => {
                if meta.channel.is_reserved() {
                    return Err(CloseReason::Protocol(format!(
                        "user frame to reserved {}",
                        meta.channel
                    )));
                }
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
            FrameKind::Reply if meta.correlation == 0 => {
                let one_way = Meta {
                    kind: FrameKind::OneWay,
                    ..meta
                };
                self.deliver(one_way, frame.payload, ReplyTo::Nobody);
            }
            FrameKind::Reply => {
                self.complete(conn.id, meta.correlation, Ok(frame.payload.to_vec()))
            }
            FrameKind::Error if meta.correlation == 0 => {
                // A `call` this node sent was refused (nothing ran) or its
                // handler panicked: the error names the call's channels.
                let code = ErrorCode::from_payload(frame.payload);
                self.send_failed(crate::error::SendFailure {
                    op: crate::error::SendOp::Call,
                    channel: meta.channel,
                    reply_channel: meta.reply_channel,
                    peer: Some(meta.source),
                    error: BusError::Remote {
                        peer: meta.source,
                        code,
                    },
                });
            }
            FrameKind::Error => {
                let code = ErrorCode::from_payload(frame.payload);
                self.complete(
                    conn.id,
                    meta.correlation,
                    Err(BusError::Remote {
                        peer: meta.source,
                        code,
                    }),
                );
            }
            FrameKind::Control => match meta.channel {
                Channel::HEARTBEAT if conn.dir == Dir::Inbound => {
                    conn.push_control(self.node_id(), Channel::HEARTBEAT, &[]);
                }
                Channel::HEARTBEAT | Channel::ANNOUNCE => {}
                other => {
                    return Err(CloseReason::Protocol(format!(
                        "unexpected control frame on {other}"
                    )))
                }
            },
        }
        Ok(())
    }

    pub(super) fn on_handshake(
        &self,
        conn: &Rc<Conn>,
        frame: Frame<'_>,
    ) -> Result<(), CloseReason> {
        let meta = frame.meta;
        if meta.kind == FrameKind::Error {
            return Err(CloseReason::Refused(format!(
                "{:?}",
                ErrorCode::from_payload(frame.payload)
            )));
        }
        let secret = self.0.shared.secret();
        let cluster = self.0.shared.config.cluster.as_str();
        if let AuthState::AwaitClient { nonce_c, nonce_s } = conn.auth.get() {
            // Accepting side: the only acceptable frame now is the client's proof.
            if meta.kind != FrameKind::Control || meta.channel != Channel::AUTH {
                return self.refuse_inbound(conn, "expected the authentication proof");
            }
            let key = secret.unwrap_or_default();
            if let Err(e) = auth::check_client(key, cluster, &nonce_c, &nonce_s, frame.payload) {
                return self.refuse_inbound(conn, e);
            }
            conn.auth.set(AuthState::Done);
            conn.open.set(true);
            debug!(peer = ?conn.peer.get(), "connection open (authenticated)");
            return Ok(());
        }
        let expected = match conn.dir {
            Dir::Inbound => Channel::HELLO,
            Dir::Outbound => Channel::HELLO_ACK,
        };
        if meta.kind != FrameKind::Control || meta.channel != expected {
            return Err(CloseReason::Protocol(format!(
                "expected handshake, got {:?} on {}",
                meta.kind, meta.channel
            )));
        }
        let ours = self.0.shared.local_info();
        let parsed = NodeInfo::decode_prefix(frame.payload)
            .and_then(|(t, extra)| handshake::validate(&ours, &t).map(|()| (t, extra)));
        let (theirs, extra) = match parsed {
            Ok(t) => t,
            Err(e) if conn.dir == Dir::Inbound => return self.refuse_inbound(conn, e),
            Err(e) => return Err(CloseReason::Refused(e.to_string())),
        };
        match conn.dir {
            Dir::Inbound => {
                let nonce_c = match auth::hello_nonce(secret, extra) {
                    Ok(n) => n,
                    Err(e) => return self.refuse_inbound(conn, e),
                };
                conn.peer.set(Some(theirs.id));
                let mut ack = ours.to_bytes();
                match (nonce_c, secret) {
                    (Some(nonce_c), Some(key)) => {
                        let nonce_s = auth::nonce();
                        ack.extend_from_slice(&nonce_s);
                        ack.extend_from_slice(&auth::server_proof(
                            key, cluster, &nonce_c, &nonce_s,
                        ));
                        conn.auth.set(AuthState::AwaitClient { nonce_c, nonce_s });
                    }
                    _ => conn.open.set(true),
                }
                conn.push_control(self.node_id(), Channel::HELLO_ACK, &ack);
            }
            Dir::Outbound => {
                if conn.peer.get() != Some(theirs.id) {
                    return Err(CloseReason::Refused(format!(
                        "expected {:?} at that address, found {}",
                        conn.peer.get(),
                        theirs.id
                    )));
                }
                let block = auth::ack_auth(secret, extra)
                    .map_err(|e| CloseReason::Refused(e.to_string()))?;
                if let (Some((nonce_s, proof)), Some(key)) = (block, secret) {
                    let AuthState::AwaitServer { nonce_c } = conn.auth.get() else {
                        return Err(CloseReason::Protocol(
                            "unexpected authentication data".into(),
                        ));
                    };
                    auth::check_server(key, cluster, &nonce_c, &nonce_s, proof)
                        .map_err(|e| CloseReason::Refused(e.to_string()))?;
                    conn.push_control(
                        self.node_id(),
                        Channel::AUTH,
                        &auth::client_proof(key, cluster, &nonce_c, &nonce_s),
                    );
                    conn.auth.set(AuthState::Done);
                }
                conn.release_held();
                conn.open.set(true);
                self.clear_down(theirs.id);
            }
        }
        debug!(peer = %theirs.id, name = %theirs.name, dir = ?conn.dir, "handshake done");
        Ok(())
    }

    /// Answers a refused inbound handshake with an error frame, then closes.
    pub(super) fn refuse_inbound(
        &self,
        conn: &Rc<Conn>,
        reason: impl std::fmt::Display,
    ) -> Result<(), CloseReason> {
        if !conn.is_closing() {
            let answered = self.meta(FrameKind::Control, Channel(0), Channel(0), 0);
            conn.push_error(self.node_id(), &answered, ErrorCode::Refused);
            conn.close_after_flush();
            Counters::inc(&self.0.counters.bad_closes);
            Counters::inc(&self.0.counters.closed_refused);
            warn!(%reason, "handshake refused");
        }
        Ok(())
    }

    /// Answers the request `corr` sent on connection `conn`. An answer on
    /// another connection (a late or forged one) is ignored.
    pub(super) fn complete(&self, conn: u64, corr: u64, result: Result<Vec<u8>, BusError>) {
        let mut pending = self.0.pending.borrow_mut();
        if pending.get(&corr).is_some_and(|w| w.conn == conn) {
            if let Some(w) = pending.remove(&corr) {
                drop(pending);
                let _ = w.tx.send(result);
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
            CloseReason::Eof | CloseReason::Local => None,
            CloseReason::Io(_) => Some(None),
            CloseReason::Frame(_) => Some(Some(&c.closed_malformed)),
            CloseReason::Protocol(_) => Some(Some(&c.closed_protocol)),
            CloseReason::Refused(_) => Some(Some(&c.closed_refused)),
            CloseReason::Timeout(crate::timeouts::Expired::Silence) => Some(Some(&c.closed_silent)),
            CloseReason::Timeout(_) => Some(Some(&c.closed_timeout)),
        };
        match kind {
            None => debug!(peer = ?conn.peer.get(), "connection closed: {reason}"),
            Some(counter) => {
                Counters::inc(&c.bad_closes);
                if let Some(counter) = counter {
                    Counters::inc(counter);
                }
                warn!(peer = ?conn.peer.get(), dir = ?conn.dir, "connection closed: {reason}");
            }
        }
        match conn.dir {
            Dir::Inbound => {
                self.0.inbound.borrow_mut().remove(&conn.id);
            }
            Dir::Outbound => {
                let Some(peer) = conn.peer.get() else { return };
                {
                    let mut out = self.0.outbound.borrow_mut();
                    let slot = &mut out[peer.0 as usize];
                    if slot.as_ref().map(|c| c.id) == Some(conn.id) {
                        *slot = None;
                    }
                }
                // Frames that never reached the kernel go to the next
                // provider; requests that may have reached the peer fail.
                let unsent = if self.0.stopping.is_raised() {
                    Vec::new()
                } else {
                    conn.take_unsent()
                };
                let unsent_requests: rustc_hash::FxHashSet<u64> = unsent
                    .iter()
                    .filter_map(|(bytes, _)| match crate::frame::decode(bytes, u32::MAX) {
                        Ok(crate::frame::Decoded::Frame { frame, .. })
                            if frame.meta.kind == FrameKind::Request =>
                        {
                            Some(frame.meta.correlation).filter(|&c| c != 0)
                        }
                        _ => None,
                    })
                    .collect();
                let lost: Vec<u64> = self
                    .0
                    .pending
                    .borrow()
                    .iter()
                    .filter(|(corr, w)| w.conn == conn.id && !unsent_requests.contains(corr))
                    .map(|(k, _)| *k)
                    .collect();
                for corr in lost {
                    self.complete(conn.id, corr, Err(BusError::PeerLost { peer }));
                }
                if !matches!(reason, CloseReason::Local) {
                    self.mark_down(peer);
                }
                self.reroute(peer, unsent);
            }
        }
    }
}
