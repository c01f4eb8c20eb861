//! Static membership: a fixed list of peer addresses (the embedded default).
//!
//! One probe thread per listed address keeps a control connection to that
//! peer: it learns the peer's id, name, channels and state from the
//! handshake and from later announcements, sends heartbeats, and marks the
//! peer down in the [`Directory`] when the connection breaks or falls silent;
//! it reconnects with jittered exponential backoff.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domi_core::auth::{self, AuthError};
use domi_core::backoff::Backoff;
use domi_core::frame::{FrameKind, DEFAULT_MAX_PAYLOAD};
use domi_core::handshake::{self, HandshakeError, NodeInfo};
use domi_core::{Channel, Membership, MembershipContext, MembershipError, NodeId, Peer};
use tracing::{debug, info, warn};

use crate::wire::{write_control, Framer, ReadError};

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
    NodeId((h % 1024) as u16)
}

impl Membership for StaticMembership {
    fn join(&mut self, _local: &NodeInfo, addr: SocketAddr) -> Result<NodeId, MembershipError> {
        if let Some(id) = self.config.node_id {
            if NodeId::new(id.0).is_none() {
                return Err(MembershipError::Config {
                    reason: format!("node id {} out of range 0..=1023", id.0),
                });
            }
            return Ok(id);
        }
        Ok(derived_id(addr))
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
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("peer refused the handshake")]
    Refused,
    #[error("unexpected {0:?} frame during handshake")]
    Unexpected(FrameKind),
    #[error("peer has this node's id {0}; configure distinct node ids")]
    DuplicateId(NodeId),
    #[error(
        "peer claims id {id}, already taken by the peer at {other}; configure distinct node ids"
    )]
    IdTaken { id: NodeId, other: SocketAddr },
    #[error("peer silent for {0:?}")]
    Silent(Duration),
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

    fn session(&self, known: &mut Option<NodeId>, attempt: &mut u32) -> Result<(), ProbeError> {
        let ours = self.ctx.local.info();
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))
            .map_err(ProbeError::Connect)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
        let secret = self.ctx.local.secret();
        let nonce_c = secret.map(|_| auth::nonce());
        let mut hello = ours.to_bytes();
        if let Some(n) = &nonce_c {
            hello.extend_from_slice(n);
        }
        write_control(&mut s, ours.id, Channel::HELLO, &hello)?;
        let mut framer = Framer::default();
        let started = Instant::now();
        let ack = loop {
            match framer.read(&mut s, DEFAULT_MAX_PAYLOAD) {
                Ok(f) => break f,
                Err(ReadError::Io(e))
                    if is_timeout(&e) && started.elapsed() < self.config.silence =>
                {
                    if self.stopped() {
                        return Ok(());
                    }
                }
                Err(ReadError::Io(e)) if is_timeout(&e) => {
                    return Err(ProbeError::Silent(self.config.silence))
                }
                Err(e) => return Err(e.into()),
            }
        };
        match (ack.meta.kind, ack.meta.channel) {
            (FrameKind::Control, Channel::HELLO_ACK) => {}
            (FrameKind::Error, _) => return Err(ProbeError::Refused),
            (k, _) => return Err(ProbeError::Unexpected(k)),
        }
        let (theirs, extra) = NodeInfo::decode_prefix(&ack.payload)?;
        handshake::validate(&ours, &theirs)?;
        if let (Some((nonce_s, proof)), Some(key), Some(nonce_c)) =
            (auth::ack_auth(secret, extra)?, secret, nonce_c)
        {
            auth::check_server(key, &ours.cluster, &nonce_c, &nonce_s, proof)?;
            let mine = auth::client_proof(key, &ours.cluster, &nonce_c, &nonce_s);
            write_control(&mut s, ours.id, Channel::AUTH, &mine)?;
        }
        if theirs.id == ours.id {
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
        *attempt = 0;
        let mut last_seen = Instant::now();
        let mut last_beat = Instant::now();
        while !self.stopped() {
            if last_beat.elapsed() >= self.config.heartbeat {
                write_control(&mut s, ours.id, Channel::HEARTBEAT, &[])?;
                last_beat = Instant::now();
            }
            match framer.read(&mut s, DEFAULT_MAX_PAYLOAD) {
                Ok(f) => {
                    last_seen = Instant::now();
                    if f.meta.kind == FrameKind::Control && f.meta.channel == Channel::ANNOUNCE {
                        let info = NodeInfo::decode(&f.payload)?;
                        if Some(info.id) == *known {
                            self.publish(info);
                        }
                    }
                }
                Err(ReadError::Io(e)) if is_timeout(&e) => {
                    if last_seen.elapsed() > self.config.silence {
                        return Err(ProbeError::Silent(self.config.silence));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_in_range_and_stable() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(derived_id(a), derived_id(a));
        assert!(derived_id(a).0 <= NodeId::MAX);
        let distinct: std::collections::HashSet<_> = (4000..4010)
            .map(|p| derived_id(SocketAddr::from(([127, 0, 0, 1], p))))
            .collect();
        assert!(distinct.len() >= 9);
    }
}
