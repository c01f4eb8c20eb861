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
//! ## Layout
//! - [`builder`]: `Node::builder(name)`, choosing the membership (static by default).
//! - [`node`]: the running node's lifecycle: pause/resume, the drain on stop,
//!   signals, `wait()`, and the admin HTTP server (`domi-admin`).
//! - [`typed`]: typed messages (`Handler::typed`, `node.request_typed`) over
//!   a `Codec`: postcard by default, JSON (feature `json`) and protobuf
//!   (feature `prost`).
//! - The bus itself lives in `domi-core` (re-exported here), membership in
//!   `domi-cluster`, the admin HTTP server in `domi-admin`.

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
    BreakerConfig, BreakerState, BusError, Channel, ConfigError, ErrorCode, Handler,
    InvalidBreaker, InvalidRateLimit, LocalBus, Membership, MembershipContext, MembershipError,
    NodeConfig, NodeId, NodeInfo, NodeState, OwnedRequest, PeerTable, RateLimit, ReplyError,
    Request, SendFailure, SendOp, ShardTask, Snapshot, TlsClose, TlsConfig, TlsConfigError,
};
pub use domi_core::{Delivery, Watch};
pub use node::{Node, StartError, StopOutcome};
