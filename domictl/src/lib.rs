//! # domictl: the operator CLI of a domi cluster
//!
//! Owns the `domictl` command: list a cluster's nodes from their etcd
//! records (`nodes`, a table or `--json`), show, pause, resume or drain one
//! through the admin endpoint its record names (`status`, `pause`,
//! `resume`, `drain`; the token from `DOMI_ADMIN_TOKEN`), print membership
//! changes as they happen (`watch`), and send one request through a
//! temporary node (`request`). It reaches etcd with domi-cluster's own
//! client setup ([`domi_cluster::etcd::ClusterView`]), so TLS, users and
//! timeouts work as for a node.
//!
//! ```text
//! $ domictl --etcd http://127.0.0.1:2379 --cluster demo nodes
//! ID  NAME    BUS              ADMIN            STATE    CHANNELS  UPTIME
//! 0   server  127.0.0.1:41234  127.0.0.1:8080   serving  50        5m03s
//! ```
//!
//! It never writes to etcd (except the temporary node of `request`, which
//! joins like any node) and never takes a secret from a flag.
//!
//! ## Layout
//! - [`cli`]: the arguments (clap derive), durations, and the secrets taken
//!   from the environment ([`Environment`]).
//! - [`resolve`]: pure: the node an `ID|NAME` means, its admin address.
//! - [`render`]: pure: record → row, the table, JSON, uptimes, one line per
//!   membership change, replies and latencies.
//! - [`error`]: [`CtlError`], one variant per way a command fails.
//! - [`admin`]: HTTP calls to a node's admin endpoints (`ureq`).
//! - `commands`: [`run`], which drives etcd, HTTP and the bus for each
//!   command; `main.rs` only parses, calls [`run`] and sets the exit code.

pub mod admin;
pub mod cli;
mod commands;
pub mod error;
pub mod render;
pub mod resolve;

pub use cli::{Cli, Command, Environment, ADMIN_TOKEN_ENV};
pub use commands::run;
pub use error::CtlError;
