//! # domi
//!
//! A thread-per-core io_uring message bus for low-latency Linux services.
//! A node subscribes handlers to 16-bit channels; any node sends to a channel
//! and the bus delivers to one node that serves it, round-robin; the handler
//! can reply.
//!
//! ```no_run
//! use std::time::Duration;
//! use domi::{Channel, Handler, Node};
//!
//! let server = Node::builder("server")
//!     .subscribe(Channel(50), Handler::sync(|req| {
//!         let _ = req.reply(b"pong");
//!     }))
//!     .start()?;
//! let client = Node::builder("client").peer(server.local_addr()).start()?;
//! client.wait_for_provider(Channel(50), Duration::from_secs(5))?;
//! let reply = client.request(Channel(50), b"ping", Duration::from_secs(1))?;
//! assert_eq!(reply, b"pong");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## What a node offers
//! - Sends: `request` (blocking) / `request_async` (a `Send` future),
//!   `notify`, `publish`, the seed's `call`; by key (`request_keyed`,
//!   `notify_keyed`: rendezvous hashing, see [`rendezvous`]), to one node
//!   (`request_to`), along a pipeline (`request_route`, `ventilate`; a stage
//!   calls `req.next`, see [`pipeline`]).
//! - Handlers: `Handler::sync` (inline, payload borrowed), `asynchronous`,
//!   `serial` (one sender's messages in order), typed ones (`Handler::typed`
//!   over a [`Codec`]: postcard by default, JSON with feature `json`,
//!   protobuf with feature `prost`; see [`typed`]), or a channel consumed as a
//!   `Stream` / blocking iterator from any thread (`node.watch`, see [`watch`]).
//! - Failure semantics: typed [`BusError`]s, application errors
//!   (`req.reply_error`), deadlines that travel with requests
//!   (`req.deadline()`), rate limits and circuit breakers (see the README's
//!   Reliability section), traces across nodes (see [`trace`]).
//! - Lifecycle: pause/resume, the drain on stop, `/status` and `/metrics`;
//!   async forms for tokio (`start_async`, `stop_when`,
//!   `wait_for_provider_async`).
//!
//! ## Layout
//! - [`builder`]: `Node::builder(name)`, choosing the membership (static by default).
//! - [`node`]: the running node's lifecycle: pause/resume, the drain on stop,
//!   signals, `wait()`, and the admin HTTP server (`domi-admin`); its async
//!   forms (`asynchronous`, private) and its `/metrics` (`metrics`, private).
//! - The bus itself lives in `domi-core` (re-exported here: [`typed`],
//!   [`watch`], [`trace`], [`pipeline`], [`rendezvous`], [`frame`],
//!   [`error`]), membership in `domi-cluster`, the admin HTTP server in
//!   `domi-admin`, the operator CLI in `domictl`.

mod asynchronous;
pub mod builder;
mod metrics;
pub mod node;

pub use builder::NodeBuilder;
pub use domi_cluster::etcd::{EtcdAuth, EtcdSecurityFlags, EtcdTls, PemSource, PASSWORD_ENV};
pub use domi_cluster::{EtcdConfig, EtcdMembership, StaticConfig, StaticMembership};
pub use domi_core::frame::DEFAULT_MAX_PAYLOAD;
pub use domi_core::{error, frame, pipeline, rendezvous, route, trace, typed, watch};
pub use domi_core::{AppError, Codec, TypedError};
pub use domi_core::{
    BreakerConfig, BreakerState, BusError, Channel, Completion, ConfigError, ErrorCode, Handler,
    InvalidBreaker, InvalidRateLimit, LocalBus, Membership, MembershipContext, MembershipError,
    NodeConfig, NodeId, NodeInfo, NodeState, OwnedRequest, PeerTable, RateLimit, ReplyError,
    Request, RequestWindow, SendFailure, SendOp, ShardTask, Snapshot, TlsClose, TlsConfig,
    TlsConfigError,
};
pub use domi_core::{Delivery, Watch, BATCH_IN_FLIGHT};
pub use node::{Node, StartError, StopOutcome};
