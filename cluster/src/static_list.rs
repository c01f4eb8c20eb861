//! Static membership: a fixed list of peer addresses (the embedded default).
//!
//! One probe thread per listed address keeps a control connection to that
//! peer: it learns the peer's id, name, channels and state from the
//! handshake and from later announcements, sends heartbeats, and marks the
//! peer down in the [`Directory`](domi_core::Directory) when the connection breaks or falls silent;
//! it reconnects with jittered exponential backoff.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domi_core::auth;
use domi_core::backoff::Backoff;
use domi_core::frame::DEFAULT_MAX_PAYLOAD;
use domi_core::handshake::NodeInfo;
use domi_core::session::{Action, Close, Session};
use domi_core::timeouts::{Observed, Timeouts};
use domi_core::tls::classify_io;
use domi_core::{Membership, MembershipContext, MembershipError, NodeId, Peer};
use tracing::{debug, info, warn};

use crate::wire::{is_timeout, write_queued, BusStream, Framer, OpenError, ReadError};

/// Settings of [`StaticMembership`].
#[derive(Clone, Debug)]
pub struct StaticConfig {
    /// Peer bus addresses (this node's own address is skipped if listed).
    pub peers: Vec<SocketAddr>,
    /// This node's id; derived from its address when `None`.
    pub node_id: Option<NodeId>,
    /// Heartbeat interval on the control connection.
    pub heartbeat: Duration,
    /// Silence after which a peer is marked down.
    pub silence: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

impl Default for StaticConfig {
    fn default() -> Self {
        StaticConfig {
            peers: Vec::new(),
            node_id: None,
            heartbeat: Duration::from_millis(500),
            silence: Duration::from_millis(1500),
            backoff: Backoff::default(),
        }
    }
}

/// Membership from a fixed peer list; channels are learned from handshakes.
pub struct StaticMembership {
    config: StaticConfig,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl StaticMembership {
    /// Membership over `config.peers`.
    pub fn new(config: StaticConfig) -> StaticMembership {
        StaticMembership {
            config,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }
}

/// The id a node takes when none is configured: a hash of its address, so
/// that nodes on distinct ports usually differ. Configure ids explicitly
/// for clusters that must never collide (or use etcd, which allocates them).
pub fn derived_id(addr: SocketAddr) -> NodeId {
    let mut h: u32 = 0x811c_9dc5;
    for b in addr.to_string().bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    NodeId::new((h % 1024) as u16).unwrap_or(NodeId::FIRST)
}

impl Membership for StaticMembership {
    fn join(&mut self, _local: &NodeInfo, addr: SocketAddr) -> Result<NodeId, MembershipError> {
        // A `NodeId` is always in range: no check needed.
        Ok(self.config.node_id.unwrap_or_else(|| derived_id(addr)))
    }

    fn start(&mut self, ctx: MembershipContext) -> Result<(), MembershipError> {
        let own = ctx.local.addr();
        for &addr in &self.config.peers {
            if addr == own {
                continue;
            }
            let probe = Probe {
                addr,
                ctx: ctx.clone(),
                stop: self.stop.clone(),
                config: self.config.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("domi-static-{addr}"))
                .spawn(move || probe.run())
                .map_err(|e| MembershipError::Unavailable {
                    reason: format!("cannot start probe thread: {e}"),
                })?;
            self.threads.push(t);
        }
        Ok(())
    }

    fn local_changed(&self, _info: &NodeInfo) {
        // Static peers learn our changes from the shards' announcements.
    }

    fn leave(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("write: {0}")]
    Write(#[from] io::Error),
    #[error(transparent)]
    Closed(#[from] Close),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("peer has this node's id {0}; configure distinct node ids")]
    DuplicateId(NodeId),
    #[error(
        "peer claims id {id}, already taken by the peer at {other}; configure distinct node ids"
    )]
    IdTaken { id: NodeId, other: SocketAddr },
}

struct Probe {
    addr: SocketAddr,
    ctx: MembershipContext,
    stop: Arc<AtomicBool>,
    config: StaticConfig,
}

const POLL: Duration = Duration::from_millis(50);

impl Probe {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn run(self) {
        let mut attempt = 0u32;
        let mut known: Option<NodeId> = None;
        while !self.stopped() {
            let result = self.session(&mut known, &mut attempt);
            if let Some(id) = known {
                self.ctx.directory.update(|t| t.with_up(id, false));
            }
            match result {
                Ok(()) => return,
                Err(e @ ProbeError::Open(OpenError::Tls(_))) => {
                    if attempt == 0 {
                        warn!(peer = %self.addr, error = %e, "static peer refused over TLS; retrying with backoff");
                    }
                }
                Err(e @ (ProbeError::DuplicateId(_) | ProbeError::IdTaken { .. })) => {
                    if attempt == 0 {
                        tracing::error!(peer = %self.addr, error = %e, "static peer ignored");
                    }
                }
                Err(e) => {
                    if attempt < 2 {
                        debug!(peer = %self.addr, error = %e, "static peer unreachable");
                    } else if attempt == 2 {
                        warn!(peer = %self.addr, error = %e, "static peer unreachable; retrying with backoff");
                    }
                }
            }
            let delay = self.config.backoff.delay(attempt, fastrand::f64());
            attempt = attempt.saturating_add(1);
            let until = Instant::now() + delay;
            while !self.stopped() && Instant::now() < until {
                std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
            }
        }
    }

    /// One control connection, driven by the bus's own connection state
    /// machine ([`Session`]): the handshake, authentication, heartbeats and
    /// the silence rule are the shards' own.
    fn session(&self, known: &mut Option<NodeId>, attempt: &mut u32) -> Result<(), ProbeError> {
        let me = self.ctx.local.info().id;
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))
            .map_err(ProbeError::Connect)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
        let mut s = BusStream::open(s, self.ctx.tls.as_ref(), self.config.silence)?;
        let timeouts = Timeouts {
            handshake: self.config.silence,
            frame: self.config.silence,
            heartbeat: self.config.heartbeat,
            silence: self.config.silence,
            idle: domi_core::timeouts::MAX_WAIT,
        };
        let mut session = Session::connect(&self.ctx.local, None, auth::nonce());
        let started = Instant::now();
        let mut wrote = started;
        let mut framer = Framer::default();
        while !self.stopped() {
            let now = Instant::now();
            let seen = Observed {
                open: session.is_open(),
                mid_frame: framer.mid_frame(),
                age: now.saturating_duration_since(started),
                read_idle: now.saturating_duration_since(framer.arrived().unwrap_or(started)),
                write_idle: now.saturating_duration_since(wrote),
                heartbeat_idle: now.saturating_duration_since(started),
                // The probe sends no messages and never closes for idleness.
                use_idle: Duration::ZERO,
            };
            if let Some(close) = session.on_tick(now, &timeouts, &seen) {
                return Err(close.into());
            }
            if write_queued(&mut s, &mut session)? {
                wrote = Instant::now();
            }
            let f = match framer.read(&mut s, session.payload_limit(DEFAULT_MAX_PAYLOAD)) {
                Ok(f) => f,
                Err(ReadError::Io(e)) if is_timeout(&e) => continue,
                // TLS 1.3 ends the client's handshake first: a refusal of
                // this node's certificate arrives as the first read.
                Err(ReadError::Io(e)) if classify_io(&e).is_some() => {
                    return Err(OpenError::Tls(classify_io(&e).expect("checked")).into())
                }
                Err(e) => return Err(e.into()),
            };
            let action = session.on_frame(&self.ctx.local, f.frame());
            if write_queued(&mut s, &mut session)? {
                wrote = Instant::now();
            }
            match action {
                Action::Opened(theirs) => {
                    self.opened(me, theirs, known)?;
                    *attempt = 0;
                }
                Action::Announced(info) => self.publish(info),
                Action::Close(close) => return Err(close.into()),
                // Heartbeat echoes; the prober sends no requests, so user
                // frames and answers do not concern it.
                _ => {}
            }
        }
        Ok(())
    }

    /// The handshake with the peer `theirs` is done: checks its id, then
    /// publishes it.
    fn opened(
        &self,
        me: NodeId,
        theirs: NodeInfo,
        known: &mut Option<NodeId>,
    ) -> Result<(), ProbeError> {
        if theirs.id == me {
            return Err(ProbeError::DuplicateId(theirs.id));
        }
        if let Some(p) = self.ctx.directory.load().get(theirs.id) {
            if p.addr != self.addr && p.up {
                return Err(ProbeError::IdTaken {
                    id: theirs.id,
                    other: p.addr,
                });
            }
        }
        if let Some(old) = known.replace(theirs.id) {
            if old != theirs.id {
                self.ctx.directory.update(|t| t.without(old));
            }
        }
        info!(peer = %theirs.id, name = %theirs.name, addr = %self.addr, "static peer up");
        self.publish(theirs);
        Ok(())
    }

    fn publish(&self, info: NodeInfo) {
        let addr = self.addr;
        self.ctx.directory.update(|t| {
            t.with_peer(Peer {
                info,
                addr,
                up: true,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_in_range_and_stable() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(derived_id(a), derived_id(a));
        assert!(derived_id(a).get() <= NodeId::MAX);
        let distinct: std::collections::HashSet<_> = (4000..4010)
            .map(|p| derived_id(SocketAddr::from(([127, 0, 0, 1], p))))
            .collect();
        assert!(distinct.len() >= 9);
    }
}
