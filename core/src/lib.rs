//! # domi-core: the bus
//!
//! Owns the wire format, the handlers, the sharded glommio executor and the
//! TCP transport. It never talks to etcd or HTTP: membership plugs in through
//! the [`Membership`] seam and publishes [`PeerTable`]s into a [`Directory`].
//!
//! ## Layout
//! - [`advertise`]: which bus address a node tells the cluster (never an
//!   unspecified one), as a pure decision.
//! - [`channel`]: `Channel` and `NodeId`, the reserved channel range.
//! - [`frame`]: the 24-byte header, pure decode/encode (byte layout documented there).
//! - [`handshake`]: `NodeInfo` exchanged when a connection opens; validation.
//! - [`auth`]: optional cluster-secret challenge–response (HMAC-SHA256).
//! - [`error`]: `BusError`, `ReplyError`, wire `ErrorCode`s, `SendFailure`
//!   (what the `on_send_error` hook receives).
//! - [`telemetry`]: per-channel request and handler durations (histograms)
//!   and request outcomes, per shard, merged on scrape.
//! - [`fault`]: catching handler panics per message (the `UnwindSafe` stance).
//! - [`overload`]: the async-handler cap and its bounded queue, as a pure type.
//! - [`limiter`]: per-channel rate limits (GCRA on one atomic per channel).
//! - [`breaker`]: per-peer circuit breakers of a caller, as a pure type.
//! - [`rendezvous`]: keyed routing (which provider serves a key), pure.
//! - [`pipeline`]: what a pipeline stage answers the stage before it, pure.
//! - [`serial`]: handlers that take one sender's messages one at a time.
//! - [`write_queue`]: a connection's outgoing bytes, and which frames never
//!   left when it fails (what may be re-routed), as a pure type.
//! - [`handler`]: sync and async handlers, the request context, the handler table.
//! - [`route`]: the immutable peer table, round-robin selection, the `Directory`.
//! - [`backoff`]: jittered exponential backoff arithmetic.
//! - [`timeouts`]: handshake, half-frame, heartbeat and silence decisions.
//! - [`session`]: the connection protocol as one sans-I/O state machine
//!   (handshake, authentication, which frame is legal when): frames in, actions out.
//! - [`trace`]: trace context across nodes (`domi.request` / `domi.handler`
//!   spans, the frame's trace extension, an OpenTelemetry hook).
//! - [`tls`]: optional mutual TLS on bus connections: `TlsConfig`, and the
//!   per-connection record engine (sans-I/O, like the session).
//! - [`config`]: `NodeConfig` and its validation.
//! - [`membership`]: the seam membership implementations plug into.
//! - `conn`, `shard`, `notify` (private): the glommio drivers: connections,
//!   the per-shard runtime, single-thread wake-ups.
//! - `shared` (private): what the node handle and its shards share (config,
//!   directory, handler table, state, down-marks) and the changes to it.
//! - `fd_limit` (private): raising the process's open-file soft limit once.
//! - `expiry` (private): the deadlines of a shard's waiting requests, for
//!   one timer per shard instead of one per request, as a pure type.
//! - `stamp` (private): event and arrival times without a clock read per
//!   message (dated by housekeeping, or once per read).
//! - [`node`]: starting a node; the `Send + Sync` handle for plain threads
//!   (`sends`, private: its keyed, direct and pipeline sends).
//! - [`watch`]: stream consumers: a channel's messages in a bounded queue
//!   consumed from any executor or thread (`Node::watch`), answerable from
//!   any thread.
//! - [`typed`]: typed messages: the `Codec` trait and its codecs (postcard;
//!   JSON and protobuf behind features), typed handlers and typed sends.
//!
//! Decisions (decode, validate, select, back off) are pure functions tested
//! without io_uring; `conn` and `shard` only move bytes and call them.

pub mod advertise;
pub mod auth;
pub mod backoff;
pub mod breaker;
pub mod channel;
pub mod config;
mod conn;
pub mod error;
mod expiry;
pub mod fault;
mod fd_limit;
pub mod frame;
pub mod handler;
pub mod handshake;
pub mod limiter;
pub mod membership;
pub mod node;
mod notify;
pub mod overload;
pub mod pipeline;
pub mod rendezvous;
pub mod route;
mod sends;
pub mod serial;
pub mod session;
mod shard;
mod shared;
mod stamp;
pub mod stats;
pub mod telemetry;
pub mod timeouts;
pub mod tls;
pub mod trace;
pub mod typed;
pub mod watch;
mod window;
pub mod write_queue;

pub use breaker::{BreakerConfig, BreakerState, InvalidBreaker};
pub use channel::{Channel, NodeId};
pub use config::{ConfigError, NodeConfig};
pub use error::{BusError, ErrorCode, ReplyError, SendFailure, SendOp};
pub use handler::{Handler, OwnedRequest, Request};
pub use handshake::{NodeInfo, NodeState};
pub use limiter::{InvalidRateLimit, RateLimit};
pub use membership::{LocalNode, Membership, MembershipContext, MembershipError};
pub use node::{Node, ShardTask, StartError};
pub use route::{Directory, Peer, PeerTable};
pub use sends::BATCH_IN_FLIGHT;
pub use shard::{Completion, LocalBus, RequestWindow};
pub use stats::Snapshot;
pub use tls::{TlsClose, TlsConfig, TlsConfigError};
pub use typed::{AppError, Codec, CodecError, TypedError};
pub use watch::{Delivery, Watch};
