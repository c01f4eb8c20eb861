//! The admin HTTP server: a std [`TcpListener`] with an accept loop of its
//! own, one bounded thread per connection, tiny_http's types and response
//! writer. Routing, request-head parsing, body and admission decisions are
//! the pure [`crate::routes`], [`crate::http`] and [`crate::admission`];
//! this file only moves bytes.
//!
//! tiny_http 0.12's own server cannot be made safe for a hostile client: it
//! accepts internally (no hook to set socket timeouts), reads header lines
//! without a length bound, spawns a thread per connection without a cap, and
//! drains an unread body on drop with a blocking read. So the server here
//! owns the sockets:
//!
//! - at most [`MAX_CONNECTIONS`] connections; when full, the one that has
//!   waited longest on its client is closed to make room,
//! - every socket has read and write timeouts; the head must arrive within
//!   [`HEAD_TIMEOUT`] and is at most [`crate::http::MAX_HEAD`] bytes,
//! - a declared body over [`crate::http::MAX_BODY`] is refused with 413 at
//!   once, a smaller one is read (within [`BODY_TIMEOUT`]) and discarded,
//! - one request per connection (`Connection: close`), then a bounded linger
//!   so the answer is not lost to a reset.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tiny_http::{HTTPVersion, Header, Response};
use tracing::{debug, info, warn};

pub use crate::admission::MAX_CONNECTIONS;
use crate::admission::{admit, Admission, Phase, Slot};
use crate::http::{body_plan, parse_head, BodyPlan, Head};
use crate::metrics::render;
use crate::metrics::Metric;
use crate::routes::{route, Endpoint, RouteError};

/// Time a client has, from connecting, to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to send the (small, discarded) body it declared.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a write to a client may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the server waits for a client to close after its answer.
const LINGER: Duration = Duration::from_millis(500);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024;
/// Longest the accept loop waits for a free slot before closing a newcomer.
const ADMIT_WAIT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Stack of a connection thread.
const CONNECTION_STACK: usize = 256 * 1024;
/// Longest [`AdminServer::shutdown`] waits for answers being written.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

thread_local! {
    /// Set on connection threads (so that a shutdown asked from one does not
    /// wait for itself).
    static ON_CONNECTION_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

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
    /// This node's circuit breaker of it: `closed`, `open` or `half_open`
    /// (the worst over the shards).
    pub breaker: String,
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
    /// `serving`, `paused` or `draining`, as `/health` reports it. The
    /// default asks [`Control::status`] unless draining; `/health` is polled,
    /// so an implementation that can read its state cheaply should override it.
    fn state(&self) -> String {
        if self.is_draining() {
            "draining".to_owned()
        } else {
            self.status().state
        }
    }
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

/// A live connection: its admission slot and a handle to close it.
struct Live {
    slot: Slot,
    stream: TcpStream,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    live: Vec<Live>,
}

/// State shared by the accept loop, the connection threads and the owner.
#[derive(Default)]
struct Shared {
    closing: AtomicBool,
    table: Mutex<Table>,
    /// Signalled whenever a connection leaves.
    freed: Condvar,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds a slot for `stream` (evicting a stalled client if full), or
    /// `None` if none frees up within [`ADMIT_WAIT`].
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let deadline = Instant::now() + ADMIT_WAIT;
        let mut table = self.table();
        loop {
            if self.closing.load(Ordering::Acquire) {
                return None;
            }
            let slots: Vec<Slot> = table.live.iter().map(|l| l.slot).collect();
            match admit(&slots, MAX_CONNECTIONS) {
                Admission::Admit => {
                    let handle = stream.try_clone().ok()?;
                    let id = table.next_id;
                    table.next_id += 1;
                    table.live.push(Live {
                        slot: Slot {
                            id,
                            phase: Phase::Reading,
                            since: Instant::now(),
                        },
                        stream: handle,
                    });
                    return Some(id);
                }
                Admission::Evict(victim) => {
                    if let Some(l) = table.live.iter_mut().find(|l| l.slot.id == victim) {
                        debug!(id = victim, "admin full: closing the oldest stalled client");
                        l.slot.phase = Phase::Evicted;
                        let _ = l.stream.shutdown(Shutdown::Both);
                    }
                }
                Admission::Wait => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    table = self
                        .freed
                        .wait_timeout(table, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Moves connection `id` to `phase` (an evicted one stays evicted).
    fn set_phase(&self, id: u64, phase: Phase) {
        if let Some(l) = self.table().live.iter_mut().find(|l| l.slot.id == id) {
            if l.slot.phase != Phase::Evicted {
                l.slot.phase = phase;
            }
        }
    }

    /// Waits until no connection is left but the caller's own, or `grace`
    /// has passed. Call once closing: no connection joins any more.
    fn wait_for_answers(&self, grace: Duration) {
        let own = usize::from(ON_CONNECTION_THREAD.with(std::cell::Cell::get));
        let deadline = Instant::now() + grace;
        let mut table = self.table();
        while table.live.len() > own {
            let now = Instant::now();
            if now >= deadline {
                debug!(
                    left = table.live.len(),
                    "admin answers still being written at shutdown"
                );
                return;
            }
            table = self
                .freed
                .wait_timeout(table, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn leave(&self, id: u64) {
        self.table().live.retain(|l| l.slot.id != id);
        self.freed.notify_all();
    }
}

/// Frees a connection's slot when its thread ends, however it ends.
struct Leave<'a>(&'a Shared, u64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// A bound admin server; [`AdminServer::serve`] starts answering.
pub struct AdminServer {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> Result<AdminServer, AdminError> {
        let bind_error = |e: io::Error| AdminError::Bind {
            addr,
            reason: e.to_string(),
        };
        let listener = TcpListener::bind(addr).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        Ok(AdminServer {
            listener: Some(listener),
            addr: bound,
            shared: Arc::default(),
            thread: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests on threads of its own until [`AdminServer::shutdown`].
    /// Does nothing if already serving or shut down.
    pub fn serve(&mut self, token: Option<String>, control: Arc<dyn Control>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let shared = self.shared.clone();
        let addr = self.addr;
        let token: Option<Arc<str>> = token.map(Arc::from);
        let t = std::thread::Builder::new()
            .name("domi-admin".into())
            .spawn(move || {
                info!(%addr, "admin HTTP listening");
                accept_loop(&listener, &shared, token, control);
            })
            .expect("spawning the admin thread");
        self.thread = Some(t);
    }

    /// Stops accepting, closes connections that wait on their clients, joins
    /// the accept thread, and waits (at most `ANSWER_GRACE`, 1 s) for the
    /// connections being answered to finish their answer, so that a process
    /// exiting next does not cut them. A client sees an answer or a closed
    /// connection, never an answer made up by the shutdown.
    pub fn shutdown(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        for l in self.shared.table().live.iter() {
            if l.slot.phase != Phase::Answering {
                let _ = l.stream.shutdown(Shutdown::Both);
            }
        }
        self.shared.freed.notify_all();
        self.listener = None;
        let Some(t) = self.thread.take() else {
            return;
        };
        if std::thread::current().id() == t.thread().id() {
            return;
        }
        // The accept thread blocks in accept(): a connection wakes it.
        match TcpStream::connect_timeout(&wake_address(self.addr), Duration::from_secs(1)) {
            Ok(_) => {
                let _ = t.join();
            }
            Err(e) => warn!(error = %e, "cannot wake the admin accept thread; leaving it"),
        }
        self.shared.wait_for_answers(ANSWER_GRACE);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where to connect to reach a listener bound to `addr`.
fn wake_address(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    token: Option<Arc<str>>,
    control: Arc<dyn Control>,
) {
    for conn in listener.incoming() {
        if shared.closing.load(Ordering::Acquire) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let Some(id) = shared.admit(&stream) else {
            debug!("admin connections full; newcomer closed");
            continue;
        };
        let (shared2, token, control) = (shared.clone(), token.clone(), control.clone());
        let spawned = std::thread::Builder::new()
            .name("domi-admin-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                ON_CONNECTION_THREAD.with(|on| on.set(true));
                let _leave = Leave(&shared2, id);
                serve_connection(stream, id, &shared2, token.as_deref(), control.as_ref());
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot spawn an admin connection thread");
            shared.leave(id);
        }
    }
    debug!("admin accept loop ended");
}

/// Why a connection ends without an ordinary answer.
enum Fail {
    /// The client closed, reset, or was evicted: nothing to say.
    Gone,
    /// Answer with this status and message, then close.
    Refuse(u16, String),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                Fail::Refuse(408, "request timeout".into())
            }
            _ => Fail::Gone,
        }
    }
}

/// Reads into `buf` with whatever time is left before `deadline`.
fn read_before(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    stream.read(buf)
}

/// Reads a request head (and discards the small body it may declare).
fn read_request(stream: &mut TcpStream, accepted: Instant) -> Result<Head, Fail> {
    let deadline = accepted + HEAD_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (end, head) = loop {
        let n = read_before(stream, &mut chunk, deadline)?;
        if n == 0 {
            return Err(Fail::Gone);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_head(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => return Err(Fail::Refuse(e.status(), e.to_string())),
        }
    };
    match body_plan(&head).map_err(|e| Fail::Refuse(e.status(), e.to_string()))? {
        BodyPlan::None => {}
        BodyPlan::Discard { len, send_continue } => {
            let received = (buf.len() - end) as u64;
            let mut left = len.saturating_sub(received);
            if send_continue && left > 0 {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let deadline = Instant::now() + BODY_TIMEOUT;
            while left > 0 {
                let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = read_before(stream, &mut chunk[..want], deadline)?;
                if n == 0 {
                    return Err(Fail::Gone);
                }
                left -= n as u64;
            }
        }
    }
    Ok(head)
}

/// One connection: one request, one answer, a bounded linger, close.
fn serve_connection(
    mut stream: TcpStream,
    id: u64,
    shared: &Shared,
    token: Option<&str>,
    control: &dyn Control,
) {
    let accepted = Instant::now();
    let _ = stream.set_nodelay(true);
    if stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let reply = match read_request(&mut stream, accepted) {
        Ok(head) => {
            shared.set_phase(id, Phase::Answering);
            let reply = answer(&head, token, control);
            (reply, head.version.clone(), head.head_only())
        }
        Err(Fail::Gone) => return,
        Err(Fail::Refuse(status, message)) => {
            debug!(status, %message, "admin request refused");
            (Reply::error(status, &message), HTTPVersion(1, 1), false)
        }
    };
    let (reply, version, head_only) = reply;
    if let Err(e) = reply.write(&mut stream, version, head_only) {
        debug!(error = %e, "admin client went away");
        return;
    }
    shared.set_phase(id, Phase::Closing);
    linger(&mut stream);
}

/// Half-closes, then reads and drops what the client still sends (bounded in
/// bytes and time), so that closing with unread data does not reset the
/// connection before the client has read the answer.
fn linger(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut chunk = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match read_before(stream, &mut chunk, deadline) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// An answer, written by tiny_http.
struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

impl Reply {
    fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            content_type: "application/json",
            headers: vec![],
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, serde_json::json!({ "error": message }))
    }

    /// The answer's bytes, `Connection: close` included.
    ///
    /// tiny_http prints the response but drops a `Connection` header given
    /// to it (`Response::add_header`), while a server that closes after each
    /// answer must send one (RFC 9112 §9.6): it goes in after the status line.
    fn render(self, version: HTTPVersion, head_only: bool) -> io::Result<Vec<u8>> {
        let header = |k: &str, v: &str| Header::from_bytes(k, v).expect("valid header");
        let mut response = Response::from_string(self.body)
            .with_status_code(self.status)
            .with_chunked_threshold(usize::MAX)
            .with_header(header("Content-Type", self.content_type));
        for (k, v) in self.headers {
            response.add_header(header(k, v));
        }
        let mut out = Vec::with_capacity(512);
        response.raw_print(&mut out, version, &[], head_only, None)?;
        let status_line = out.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
        out.splice(status_line..status_line, *b"Connection: close\r\n");
        Ok(out)
    }

    fn write(
        self,
        stream: &mut TcpStream,
        version: HTTPVersion,
        head_only: bool,
    ) -> io::Result<()> {
        stream.write_all(&self.render(version, head_only)?)?;
        stream.flush()
    }
}

/// Routes `head` and asks `control`.
fn answer(head: &Head, token: Option<&str>, control: &dyn Control) -> Reply {
    let endpoint = route(
        head.method.as_str(),
        &head.target,
        head.header("Authorization"),
        token,
    );
    match endpoint {
        Err(e) => {
            if e == RouteError::Unauthorized {
                warn!(
                    url = head.target,
                    "admin request without a valid token refused"
                );
            }
            let mut reply = Reply::error(e.status(), &e.to_string());
            reply.headers = e.headers();
            reply
        }
        Ok(Endpoint::Stop) => {
            control.stop();
            Reply::json(202, serde_json::json!({ "state": "draining" }))
        }
        Ok(Endpoint::Pause) => {
            control.pause();
            Reply::json(200, serde_json::json!({ "state": "paused" }))
        }
        Ok(Endpoint::Resume) => {
            control.resume();
            Reply::json(200, serde_json::json!({ "state": "serving" }))
        }
        Ok(Endpoint::Status) => match serde_json::to_string(&control.status()) {
            Ok(body) => Reply {
                status: 200,
                body,
                content_type: "application/json",
                headers: vec![],
            },
            Err(e) => Reply::error(500, &e.to_string()),
        },
        Ok(Endpoint::Metrics) => Reply {
            status: 200,
            body: render(&control.metrics()),
            content_type: "text/plain; version=0.0.4",
            headers: vec![],
        },
        Ok(Endpoint::Health) => {
            let state = control.state();
            let code = if state == "draining" { 503 } else { 200 };
            Reply::json(code, serde_json::json!({ "state": state }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_say_connection_close_and_head_has_no_body() {
        let text =
            |r: Reply, v, head_only| String::from_utf8(r.render(v, head_only).unwrap()).unwrap();
        let t = text(Reply::error(413, "too large"), HTTPVersion(1, 1), false);
        assert!(t.starts_with("HTTP/1.1 413 "), "{t}");
        assert!(t.contains("\r\nConnection: close\r\n"), "{t}");
        assert!(t.contains("\r\nContent-Length: 21\r\n"), "{t}");
        assert!(t.ends_with("\r\n\r\n{\"error\":\"too large\"}"), "{t}");
        let mut r = Reply::json(405, serde_json::json!({}));
        r.headers = vec![("Allow", "GET, HEAD")];
        let t = text(r, HTTPVersion(1, 0), true);
        assert!(t.starts_with("HTTP/1.0 405 "), "{t}");
        assert!(t.contains("\r\nAllow: GET, HEAD\r\n"), "{t}");
        assert!(t.ends_with("\r\n\r\n"), "{t}");
    }
}

#[cfg(test)]
mod shutdown_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A draining node whose `/health` takes `SLOW` to answer.
    #[derive(Default)]
    struct SlowHealth {
        asked: AtomicUsize,
    }

    const SLOW: Duration = Duration::from_millis(300);

    impl Control for SlowHealth {
        fn status(&self) -> Status {
            unreachable!("/health must not ask for the status")
        }
        fn metrics(&self) -> Vec<Metric> {
            vec![]
        }
        fn pause(&self) {}
        fn resume(&self) {}
        fn stop(&self) {}
        fn is_draining(&self) -> bool {
            true
        }
        fn state(&self) -> String {
            self.asked.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(SLOW);
            "draining".into()
        }
    }

    /// Sends `GET /health`; the answer (once read to its end) comes on the
    /// channel before the client closes its end.
    fn get_health(addr: SocketAddr) -> std::sync::mpsc::Receiver<io::Result<String>> {
        let mut s = TcpStream::connect(addr).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut answer = String::new();
            let read = s
                .set_read_timeout(Some(Duration::from_secs(5)))
                .and_then(|()| s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
                .and_then(|()| s.read_to_string(&mut answer));
            let _ = tx.send(read.map(|_| answer));
            drop(s);
        });
        rx
    }

    #[test]
    fn shutdown_lets_answers_finish_and_closes_the_rest_without_one() {
        let control = Arc::new(SlowHealth::default());
        let mut server = AdminServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        server.serve(None, control.clone());
        let addr = server.local_addr();
        let answered = get_health(addr);
        let deadline = Instant::now() + Duration::from_secs(5);
        while control.asked.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "/health never asked");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A client that has sent nothing yet, and one mid-head.
        let mut silent = TcpStream::connect(addr).unwrap();
        let mut partial = TcpStream::connect(addr).unwrap();
        partial.write_all(b"GET /hea").unwrap();
        std::thread::sleep(Duration::from_millis(20));

        let t = Instant::now();
        server.shutdown();
        assert!(t.elapsed() <= ANSWER_GRACE + SLOW, "took {:?}", t.elapsed());
        // Complete when shutdown returns, not merely some time later.
        let answer = answered
            .try_recv()
            .expect("answered before shutdown returned")
            .expect("the answer arrives");
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.ends_with(r#"{"state":"draining"}"#), "{answer:?}");
        for s in [&mut silent, &mut partial] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut rest = Vec::new();
            match s.read_to_end(&mut rest) {
                Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
                Err(e) => assert_ne!(e.kind(), ErrorKind::WouldBlock, "not closed"),
            }
        }
        assert!(TcpStream::connect(addr).is_err(), "still accepting");
    }
}
