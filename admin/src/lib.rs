//! # domi-admin: the admin HTTP server
//!
//! Owns the node's admin endpoints, served on threads of its own (tiny_http
//! types and response writer over sockets this crate accepts and bounds),
//! and talks to the node only through the [`Control`] trait:
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/stop` | 202, starts the drain |
//! | POST | `/pause` | 200, state `paused` (out of rotation) |
//! | POST | `/resume` | 200, state `serving` |
//! | GET | `/status` | 200, JSON: id, name, cluster, state, channels, shards, uptime, peers, counters |
//! | GET | `/metrics` | 200, Prometheus text exposition |
//! | GET | `/health` | 200 `{"state":"serving"}` (or `paused`), 503 `{"state":"draining"}` |
//!
//! `GET` endpoints also answer `HEAD`. Unknown paths answer 404, wrong
//! methods 405 with `Allow`, and with a token configured the mutating
//! endpoints answer 401 (with `WWW-Authenticate: Bearer`) without
//! `Authorization: Bearer <token>`. Errors are small JSON bodies.
//!
//! ## Hostile clients
//! Each connection carries one request and is closed after its answer. At
//! most [`server::MAX_CONNECTIONS`] are open (the longest-stalled one makes
//! room for a newcomer); the head must arrive within [`server::HEAD_TIMEOUT`]
//! and fit in [`http::MAX_HEAD`] bytes (else 408 or 431); a declared body over
//! [`http::MAX_BODY`] is refused with 413 and a chunked one with 411, a
//! smaller one is read and discarded. Memory and threads stay bounded and a
//! well-behaved client is answered whatever the others do.
//!
//! ## Layout
//! - [`routes`]: the pure route decision (method, path, credentials → endpoint or error).
//! - [`http`]: the pure request-head reading (with httparse) and body decision.
//! - [`admission`]: the pure connection-cap decision.
//! - [`metrics`]: the pure Prometheus text renderer.
//! - [`server`]: the socket driver and the [`Control`] trait.

pub mod admission;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod server;

pub use metrics::{render, Metric, MetricKind, Value};
pub use routes::{route, Endpoint, RouteError};
pub use server::{AdminError, AdminServer, Control, PeerStatus, Status};
