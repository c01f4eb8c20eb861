//! The tiny_http driver: one thread answering admin requests through a
//! [`Control`]. Routing and rendering are the pure [`crate::routes`] and
//! [`crate::metrics`]; this file only moves requests and responses.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use tiny_http::{Header, Response, Server};
use tracing::{debug, info, warn};

use crate::metrics::{render, Metric};
use crate::routes::{route, Endpoint, RouteError};

/// A peer as `/status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Node id.
    pub id: u16,
    /// Node name.
    pub name: String,
    /// Bus address.
    pub address: String,
    /// `serving`, `paused` or `draining` (`down` when membership lost it).
    pub state: String,
    /// Whether this node holds an open connection to it.
    pub connected: bool,
}

/// The body of `GET /status`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Node id.
    pub id: u16,
    /// Node name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// `serving`, `paused` or `draining`.
    pub state: String,
    /// Channels served.
    pub channels: Vec<u16>,
    /// Shards.
    pub shards: usize,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Other nodes.
    pub peers: Vec<PeerStatus>,
    /// Counters summed over shards.
    pub counters: BTreeMap<String, u64>,
}

/// What the admin server may ask of a node.
pub trait Control: Send + Sync + 'static {
    /// The current status.
    fn status(&self) -> Status;
    /// The current metrics.
    fn metrics(&self) -> Vec<Metric>;
    /// Takes the node out of rotation.
    fn pause(&self);
    /// Puts it back.
    fn resume(&self);
    /// Starts the drain and returns at once.
    fn stop(&self);
    /// Whether the node is draining.
    fn is_draining(&self) -> bool;
}

/// The admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An empty token would accept `Authorization: Bearer ` with nothing after it.
    #[error("the admin token must not be empty")]
    EmptyToken,
    /// The address could not be bound.
    #[error("cannot bind the admin address {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A bound admin server; [`AdminServer::serve`] starts answering.
pub struct AdminServer {
    server: Arc<Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> Result<AdminServer, AdminError> {
        let server = Server::http(addr).map_err(|e| AdminError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        Ok(AdminServer {
            server: Arc::new(server),
            addr: bound,
            thread: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests on a thread of its own until [`AdminServer::shutdown`].
    pub fn serve(&mut self, token: Option<String>, control: Arc<dyn Control>) {
        let server = self.server.clone();
        let addr = self.addr;
        let t = std::thread::Builder::new()
            .name("domi-admin".into())
            .spawn(move || {
                info!(%addr, "admin HTTP listening");
                for request in server.incoming_requests() {
                    answer(request, token.as_deref(), control.as_ref());
                }
            })
            .expect("spawning the admin thread");
        self.thread = Some(t);
    }

    /// Stops answering and joins the thread.
    pub fn shutdown(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            if std::thread::current().id() != t.thread().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn json_header() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("valid header")
}

fn respond(
    request: tiny_http::Request,
    code: u16,
    body: String,
    extra: Option<Header>,
    content: Header,
) {
    let mut resp = Response::from_string(body)
        .with_status_code(code)
        .with_header(content);
    if let Some(h) = extra {
        resp = resp.with_header(h);
    }
    if let Err(e) = request.respond(resp) {
        debug!(error = %e, "admin client went away");
    }
}

/// Largest request body the admin accepts (its endpoints take none).
const MAX_BODY: usize = 1 << 20;

/// Answers 413 to a request declaring a body over [`MAX_BODY`].
///
/// tiny_http 0.12 drains an unread body on drop by allocating a buffer of
/// the whole declared length, so a request declaring a terabyte aborts the
/// process. Such a request is answered over the raw stream, which is then
/// deliberately never dropped: it costs one socket, not the process.
fn refuse_huge_body(request: tiny_http::Request, declared: usize) {
    warn!(
        declared,
        "admin request with an oversized body refused (connection left open)"
    );
    let response = Response::from_string("{\"error\":\"payload too large\"}")
        .with_status_code(413)
        .with_header(json_header())
        .with_header(Header::from_bytes("Connection", "close").expect("valid header"));
    let mut stream = request.upgrade("none", response);
    let _ = stream.flush();
    std::mem::forget(stream);
}

fn answer(request: tiny_http::Request, token: Option<&str>, control: &dyn Control) {
    if let Some(declared) = request.body_length().filter(|n| *n > MAX_BODY) {
        return refuse_huge_body(request, declared);
    }
    let auth = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let endpoint = route(&method, request.url(), auth.as_deref(), token);
    let json = |v: serde_json::Value| v.to_string();
    match endpoint {
        Err(e) => {
            let extra = e
                .headers()
                .first()
                .and_then(|(k, v)| Header::from_bytes(*k, *v).ok());
            if e == RouteError::Unauthorized {
                warn!(
                    url = request.url(),
                    "admin request without a valid token refused"
                );
            }
            respond(
                request,
                e.status(),
                json(serde_json::json!({ "error": e.to_string() })),
                extra,
                json_header(),
            );
        }
        Ok(Endpoint::Stop) => {
            control.stop();
            respond(
                request,
                202,
                json(serde_json::json!({ "state": "draining" })),
                None,
                json_header(),
            );
        }
        Ok(Endpoint::Pause) => {
            control.pause();
            respond(
                request,
                200,
                json(serde_json::json!({ "state": "paused" })),
                None,
                json_header(),
            );
        }
        Ok(Endpoint::Resume) => {
            control.resume();
            respond(
                request,
                200,
                json(serde_json::json!({ "state": "serving" })),
                None,
                json_header(),
            );
        }
        Ok(Endpoint::Status) => {
            let body = serde_json::to_string(&control.status())
                .unwrap_or_else(|e| json(serde_json::json!({ "error": e.to_string() })));
            respond(request, 200, body, None, json_header());
        }
        Ok(Endpoint::Metrics) => {
            let text = Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                .expect("valid header");
            respond(request, 200, render(&control.metrics()), None, text);
        }
        Ok(Endpoint::Health) => {
            let (code, state) = if control.is_draining() {
                (503, "draining")
            } else {
                (200, "ok")
            };
            respond(
                request,
                code,
                json(serde_json::json!({ "status": state })),
                None,
                json_header(),
            );
        }
    }
}
