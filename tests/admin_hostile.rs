//! Hostile clients at the admin port: garbage, huge and endless headers,
//! bodies declared but never sent, huge bodies, hundreds of stalled
//! connections. Through each of them a well-behaved `GET /health` is answered
//! within [`ANSWER_WITHIN`], the bus keeps serving, and the hostile
//! connection is refused or closed within a deadline.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use domi::{Channel, Handler, Node};

const CH: Channel = Channel(51);
const T: Duration = Duration::from_secs(10);
/// How fast a well-behaved client must be answered whatever else happens.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// How long a hostile connection may live: the server's head and body
/// timeouts (2 s each) plus its linger, with slack for a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(8);

/// The tests count threads and descriptors of this process: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn node() -> (Node, SocketAddr) {
    let node = small("admin")
        .http("127.0.0.1:0".parse().unwrap())
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let addr = node.http_addr().expect("an admin address");
    (node, addr)
}

/// An HTTP answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an answer from `s` until the server closes (it always does).
fn read_answer(s: &mut TcpStream, within: Duration) -> Answer {
    s.set_read_timeout(Some(within)).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A reset after the answer arrived still leaves the answer.
            Err(_) if !raw.is_empty() => break,
            Err(e) => panic!("no answer within {within:?}: {e}"),
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (status, headers, body) = common::procs::parse_http_answer(&raw)
        .unwrap_or_else(|| panic!("a status line in {raw:?}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends `request` as is and reads the answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    read_answer(&mut s, T)
}

/// `GET /health` answers 200 `serving` within [`ANSWER_WITHIN`], and a
/// request over the bus still gets its reply.
fn assert_admin_and_bus_alive(node: &Node, addr: SocketAddr) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut s, ANSWER_WITHIN);
    let took = t.elapsed();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, r#"{"state":"serving"}"#);
    assert!(took < ANSWER_WITHIN, "/health answered after {took:?}");
    assert_eq!(node.request(CH, b"x", T).unwrap(), b"pong");
}

/// Waits until the server has closed `s` (EOF or reset), discarding what it
/// sends; returns what it sent.
fn assert_closed_by_server(mut s: TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server kept the connection open");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {
                panic!("the server kept the connection open for {within:?}")
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("the server kept the connection open for {within:?}")
            }
            Err(_) => return got,
        }
    }
}

fn status_of(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw.get(..12)?)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn proc_count(what: &str) -> usize {
    match what {
        "threads" => std::fs::read_dir("/proc/self/task").unwrap().count(),
        _ => std::fs::read_dir("/proc/self/fd").unwrap().count(),
    }
}

#[test]
fn garbage_is_refused_with_400_and_the_admin_stays_up() {
    let _s = serial();
    let (node, addr) = node();
    let mut g = TcpStream::connect(addr).unwrap();
    g.write_all(b"\x00\x01\x02 NOT HTTP \r\n\r\n").unwrap();
    // A second one that never finishes its garbage: refused at its first
    // bytes, without waiting for the end of a head that will never come.
    let mut g2 = TcpStream::connect(addr).unwrap();
    g2.write_all(b"\xff\xfe\xfd").unwrap();
    assert_admin_and_bus_alive(&node, addr);
    assert_eq!(read_answer(&mut g, T).status, 400);
    let answered = assert_closed_by_server(g2, CLOSED_WITHIN);
    assert_eq!(status_of(&answered), Some(400), "refused before its end");
}

#[test]
fn a_mebibyte_header_line_is_refused_with_431() {
    let _s = serial();
    let (node, addr) = node();
    let h = TcpStream::connect(addr).unwrap();
    let big = format!(
        "GET /status HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let writer = {
        let mut h = h.try_clone().unwrap();
        std::thread::spawn(move || h.write_all(big.as_bytes()).is_ok())
    };
    assert_admin_and_bus_alive(&node, addr);
    let answered = assert_closed_by_server(h.try_clone().unwrap(), CLOSED_WITHIN);
    // The 431 is sent before the server stops reading; with a mebibyte still
    // in flight the close may reset the connection before it is read.
    if !answered.is_empty() {
        assert_eq!(status_of(&answered), Some(431));
    }
    let _ = h.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
}

#[test]
fn endless_header_bytes_are_cut_off_and_memory_stays_bounded() {
    let _s = serial();
    let (node, addr) = node();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let endless = TcpStream::connect(addr).unwrap();
    let writer = {
        let (sent, stop) = (sent.clone(), stop.clone());
        let mut s = endless.try_clone().unwrap();
        std::thread::spawn(move || {
            s.set_write_timeout(Some(T)).unwrap();
            if s.write_all(b"GET /health HTTP/1.1\r\nX-Endless: ").is_err() {
                return;
            }
            let chunk = [b'a'; 16 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match s.write(&chunk) {
                    Ok(n) => sent.fetch_add(n as u64, Ordering::Relaxed),
                    Err(_) => return,
                };
            }
        })
    };
    assert_admin_and_bus_alive(&node, addr);
    // The server refuses the head and hangs up: the writer is cut off after
    // at most the head limit, the linger allowance and the socket buffers.
    let _ = assert_closed_by_server(endless.try_clone().unwrap(), CLOSED_WITHIN);
    wait_until("the endless writer to be cut off", CLOSED_WITHIN, || {
        writer.is_finished()
    });
    stop.store(true, Ordering::Relaxed);
    let total = sent.load(Ordering::Relaxed);
    assert!(total < 32 << 20, "the server swallowed {} MiB", total >> 20);
    let _ = endless.shutdown(std::net::Shutdown::Both);
    assert_admin_and_bus_alive(&node, addr);
}

#[test]
fn bodies_declared_but_never_sent_do_not_block_the_admin() {
    let _s = serial();
    let (node, addr) = node();
    // Over tiny_http's 1 KiB buffering, under the old 1 MiB refusal: the old
    // server froze here, draining the body on its only thread.
    let mut pause = TcpStream::connect(addr).unwrap();
    pause
        .write_all(b"POST /pause HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    let mut get = TcpStream::connect(addr).unwrap();
    get.write_all(b"GET /status HTTP/1.1\r\nContent-Length: 2000\r\n\r\npartial")
        .unwrap();
    let mut status = TcpStream::connect(addr).unwrap();
    status
        .write_all(b"GET /status HTTP/1.1\r\nContent-Length: 500000\r\n\r\n")
        .unwrap();
    assert_admin_and_bus_alive(&node, addr);
    // Over the 64 KiB limit: refused at once.
    let a = read_answer(&mut status, ANSWER_WITHIN);
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.header("Connection"), Some("close"));
    // Under it: the body is awaited, then the request times out unanswered.
    assert_eq!(read_answer(&mut pause, CLOSED_WITHIN).status, 408);
    assert_eq!(read_answer(&mut get, CLOSED_WITHIN).status, 408);
    // The pause never happened.
    assert_admin_and_bus_alive(&node, addr);
}

#[test]
fn huge_bodies_are_refused_with_413_without_leaking_sockets_or_threads() {
    let _s = serial();
    let (node, addr) = node();
    // A terabyte declared, nothing sent.
    let a = exchange(
        addr,
        format!(
            "POST /pause HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            1u64 << 40
        )
        .as_bytes(),
    );
    assert_eq!(a.status, 413, "{a:?}");
    assert!(a.body.contains("payload too large"), "{}", a.body);
    // Declared with Expect: 100-continue: refused before any byte is sent.
    let a = exchange(
        addr,
        b"POST /pause HTTP/1.1\r\nContent-Length: 10000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(a.status, 413, "{a:?}");
    // Chunked: no length, refused.
    let a = exchange(
        addr,
        b"POST /pause HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(a.status, 411, "{a:?}");
    // Eight mebibytes actually streamed at it.
    let mut streamer = TcpStream::connect(addr).unwrap();
    streamer
        .write_all(b"POST /pause HTTP/1.1\r\nContent-Length: 8388608\r\n\r\n")
        .unwrap();
    let writer = {
        let mut s = streamer.try_clone().unwrap();
        std::thread::spawn(move || {
            s.set_write_timeout(Some(T)).unwrap();
            let _ = s.write_all(&vec![7u8; 8 << 20]);
        })
    };
    assert_admin_and_bus_alive(&node, addr);
    let answered = assert_closed_by_server(streamer, CLOSED_WITHIN);
    if !answered.is_empty() {
        assert_eq!(status_of(&answered), Some(413));
    }
    writer.join().unwrap();

    // Repeated, the refusals leave nothing behind (the old server leaked a
    // socket and a thread for each).
    let (fds, threads) = (proc_count("fds"), proc_count("threads"));
    for _ in 0..100 {
        let a = exchange(
            addr,
            b"GET /health HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
        );
        assert_eq!(a.status, 413);
    }
    wait_until("the refused connections to be released", T, || {
        proc_count("fds") <= fds + 4 && proc_count("threads") <= threads + 4
    });
    assert_admin_and_bus_alive(&node, addr);
}

#[test]
fn two_hundred_stalled_clients_do_not_starve_a_health_check() {
    let _s = serial();
    let (node, addr) = node();
    let threads = proc_count("threads");
    let stalled: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            let half: &[u8] = if i % 2 == 0 {
                b"GET /sta"
            } else {
                b"POST /pause HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
            };
            s.write_all(half).unwrap();
            s
        })
        .collect();
    assert_admin_and_bus_alive(&node, addr);
    // One thread per admitted connection, capped.
    let grown = proc_count("threads").saturating_sub(threads);
    assert!(
        grown <= domi_admin::server::MAX_CONNECTIONS + 2,
        "{grown} threads for 200 stalled connections"
    );
    // Every stalled connection is closed: evicted or timed out.
    let deadline = Instant::now() + CLOSED_WITHIN;
    for s in stalled {
        let _ = assert_closed_by_server(s, deadline.saturating_duration_since(Instant::now()));
    }
    assert_admin_and_bus_alive(&node, addr);
}

#[test]
fn mutating_endpoints_work_with_and_without_an_empty_body() {
    let _s = serial();
    let node = small("admin-mut")
        .http("127.0.0.1:0".parse().unwrap())
        .admin_token("s3cret")
        .subscribe(CH, Handler::sync(|r| drop(r.reply(b"pong"))))
        .start()
        .unwrap();
    let addr = node.http_addr().unwrap();
    let auth = "Authorization: bearer s3cret\r\n";
    // As curl sends it: no Content-Length at all.
    let a = exchange(
        addr,
        format!("POST /pause HTTP/1.1\r\nHost: x\r\n{auth}Accept: */*\r\n\r\n").as_bytes(),
    );
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"state":"paused"}"#));
    let a = exchange(addr, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"state":"paused"}"#));
    // Content-Length: 0, and a small body that is read and ignored.
    let a = exchange(
        addr,
        format!("POST /resume HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let a = exchange(
        addr,
        format!(
            "POST /resume HTTP/1.1\r\n{auth}Content-Length: 2\r\nExpect: 100-continue\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_eq!(a.status, 200, "{a:?}");
    // Refusals carry their headers.
    let a = exchange(addr, b"POST /pause HTTP/1.1\r\n\r\n");
    assert_eq!(a.status, 401);
    assert_eq!(a.header("WWW-Authenticate"), Some("Bearer"));
    let a = exchange(addr, b"DELETE /health HTTP/1.1\r\n\r\n");
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), Some("GET, HEAD"));
    // HEAD: headers only.
    let a = exchange(addr, b"HEAD /health HTTP/1.1\r\n\r\n");
    assert_eq!((a.status, a.body.as_str()), (200, ""));
    assert_admin_and_bus_alive(&node, addr);
    // Stop: 202, then /health says draining.
    let a = exchange(
        addr,
        format!("POST /stop HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(a.status, 202, "{a:?}");
    let _ = node.wait();
}
