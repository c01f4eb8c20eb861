//! # domi-cluster: membership
//!
//! Owns how a node learns its id and its peers, and keeps the bus's peer
//! table ([`domi_core::Directory`]) current through the
//! [`domi_core::Membership`] seam. The peer table itself, and round-robin
//! selection over it, are pure types of `domi-core` (`route`), shared by every
//! membership source.
//!
//! ## Layout
//! - [`static_list`]: static membership, the embedded default: a fixed list
//!   of peer addresses, channels learned from handshakes, heartbeats.
//! - [`etcd`]: etcd membership: lease, id allocation by transaction, list +
//!   watch into the peer table, on a discovery thread with its own tokio runtime.
//!   [`etcd::record`] is its pure data model (keys, JSON record, event application);
//!   [`etcd::ClusterView`] reads and watches the records without joining (for tools).
//! - `wire` (private): blocking frame I/O over the core codec.
//!
//! It never touches a shard: membership runs on threads of its own and only
//! publishes tables.

pub mod etcd;
pub mod static_list;
mod wire;

pub use etcd::{EtcdConfig, EtcdMembership};
pub use static_list::{derived_id, StaticConfig, StaticMembership};
