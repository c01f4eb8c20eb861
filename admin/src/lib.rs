//! # domi-admin: the admin HTTP server
//!
//! Owns the node's admin endpoints, served by tiny_http on a thread of its
//! own, and talks to the node only through the [`Control`] trait:
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/stop` | 202, starts the drain |
//! | POST | `/pause` | 200, state `paused` (out of rotation) |
//! | POST | `/resume` | 200, state `serving` |
//! | GET | `/status` | 200, JSON: id, name, cluster, state, channels, shards, uptime, peers, counters |
//! | GET | `/metrics` | 200, Prometheus text exposition |
//! | GET | `/health` | 200 while serving or paused, 503 while draining |
//!
//! Unknown paths answer 404, wrong methods 405 with `Allow`, and with a token
//! configured the mutating endpoints answer 401 without
//! `Authorization: Bearer <token>`. Errors are small JSON bodies.
//!
//! ## Layout
//! - [`routes`]: the pure route decision (method, path, credentials → endpoint or error).
//! - [`metrics`]: the pure Prometheus text renderer.
//! - [`server`]: the tiny_http driver and the [`Control`] trait.

pub mod metrics;
pub mod routes;
pub mod server;

pub use metrics::{render, Metric, MetricKind};
pub use routes::{route, Endpoint, RouteError};
pub use server::{AdminError, AdminServer, Control, PeerStatus, Status};
