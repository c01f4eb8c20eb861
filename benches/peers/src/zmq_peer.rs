//! ZeroMQ workloads over TCP loopback (libzmq through the `zmq` crate):
//! `zmq-push` (PUSH -> PULL, rate counted at the PULL) and `zmq-reqrep`
//! (DEALER -> echoing ROUTER, `--inflight K` requests outstanding).
//!
//! Run: `domi-peers zmq-push --payload 64 --count 200000` or
//! `domi-peers zmq-reqrep --payload 64 --count 20000 --inflight 64`.
//!
//! Each side runs in its own thread with its own zmq context, created after
//! the thread is pinned, so the context's I/O thread inherits that side's CPU:
//! the server side (PULL / ROUTER) on `--cpu-server`, the client side
//! (PUSH / DEALER) on `--cpu-client`.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::{new_hist, one_way_json, pin, req_json, Common};

/// A side that hears nothing for this long fails (the other side died or
/// messages were lost) instead of waiting for the overall deadline.
const STALL_MS: i32 = 10_000;

fn server_socket(kind: zmq::SocketType) -> Result<(zmq::Context, zmq::Socket, String)> {
    let ctx = zmq::Context::new();
    let s = ctx.socket(kind)?;
    s.set_rcvtimeo(STALL_MS)?;
    s.set_sndtimeo(STALL_MS)?;
    s.set_linger(STALL_MS)?;
    s.bind("tcp://127.0.0.1:*")?;
    let ep = s
        .get_last_endpoint()?
        .map_err(|_| anyhow!("zmq endpoint is not UTF-8"))?;
    Ok((ctx, s, ep))
}

fn client_socket(
    kind: zmq::SocketType,
    ep: &mpsc::Receiver<String>,
) -> Result<(zmq::Context, zmq::Socket)> {
    let ep = ep
        .recv_timeout(Duration::from_secs(10))
        .context("server side never bound its socket")?;
    let ctx = zmq::Context::new();
    let s = ctx.socket(kind)?;
    s.set_rcvtimeo(STALL_MS)?;
    s.set_sndtimeo(STALL_MS)?;
    // The PUSH side keeps queued messages up to this long when closing.
    s.set_linger(STALL_MS)?;
    s.connect(&ep)?;
    Ok((ctx, s))
}

fn join<T>(h: thread::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join()
        .map_err(|_| anyhow!("{what} thread panicked"))?
        .with_context(|| what.to_string())
}

/// PUSH -> PULL: returns the rate measured at the PULL after the warm-up.
pub fn push_pull(c: &Common) -> Result<Value> {
    let (total, warmup, payload) = (c.total(), c.warmup(), c.payload);
    let (cs, cc) = (c.cpu_server, c.cpu_client);
    let (ep_tx, ep_rx) = mpsc::channel();
    let server =
        thread::Builder::new()
            .name("zmq-pull".into())
            .spawn(move || -> Result<(u64, f64)> {
                pin(cs, "server")?;
                let (_ctx, pull, ep) = server_socket(zmq::PULL)?;
                ep_tx.send(ep)?;
                let mut buf = vec![0u8; payload + 1];
                // The clock starts at the last warm-up message (or the first
                // message when there is no warm-up).
                let start_at = warmup.max(1);
                let mut t0 = Instant::now();
                let mut received = 0u64;
                while received < total {
                    let n = match pull.recv_into(&mut buf, 0) {
                        Ok(n) => n,
                        Err(zmq::Error::EAGAIN) => bail!(
                            "PULL received {received} of {total} messages, then nothing for {} s",
                            STALL_MS / 1000
                        ),
                        Err(e) => return Err(e.into()),
                    };
                    ensure!(n == payload, "PULL got a {n}-byte message, sent {payload}");
                    received += 1;
                    if received == start_at {
                        t0 = Instant::now();
                    }
                }
                Ok((total - start_at, t0.elapsed().as_secs_f64()))
            })?;
    let client = thread::Builder::new()
        .name("zmq-push".into())
        .spawn(move || -> Result<()> {
            pin(cc, "client")?;
            let (_ctx, push) = client_socket(zmq::PUSH, &ep_rx)?;
            let body = vec![7u8; payload];
            for i in 0..total {
                match push.send(&body[..], 0) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => {
                        bail!("PUSH blocked for {} s after {i} messages", STALL_MS / 1000)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })?;
    join(client, "zmq PUSH side")?;
    let (n, secs) = join(server, "zmq PULL side")?;
    ensure!(n > 0, "nothing to time: use --count >= 2 or a warm-up");
    Ok(one_way_json("zmq", "push_pull", c, n as f64 / secs))
}

/// DEALER -> ROUTER echo with `inflight` requests outstanding.
pub fn dealer_router(c: &Common, inflight: usize) -> Result<Value> {
    let (total, warmup, payload) = (c.total(), c.warmup(), c.payload);
    let (cs, cc) = (c.cpu_server, c.cpu_client);
    let (ep_tx, ep_rx) = mpsc::channel();
    let server =
        thread::Builder::new()
            .name("zmq-router".into())
            .spawn(move || -> Result<()> {
                pin(cs, "server")?;
                let (_ctx, router, ep) = server_socket(zmq::ROUTER)?;
                ep_tx.send(ep)?;
                for i in 0..total {
                    let mut id = zmq::Message::new();
                    let mut body = zmq::Message::new();
                    match router.recv(&mut id, 0) {
                        Ok(()) => {}
                        Err(zmq::Error::EAGAIN) => bail!(
                            "ROUTER answered {i} of {total} requests, then heard nothing for {} s",
                            STALL_MS / 1000
                        ),
                        Err(e) => return Err(e.into()),
                    }
                    ensure!(router.get_rcvmore()?, "ROUTER got a request without a body");
                    router.recv(&mut body, 0)?;
                    router.send(id, zmq::SNDMORE)?;
                    router.send(body, 0)?;
                }
                Ok(())
            })?;
    let client = thread::Builder::new().name("zmq-dealer".into()).spawn(
        move || -> Result<(hdrhistogram::Histogram<u64>, f64)> {
            pin(cc, "client")?;
            let (_ctx, dealer) = client_socket(zmq::DEALER, &ep_rx)?;
            let k = inflight as u64;
            let mut body = vec![7u8; payload];
            // Send time of each outstanding request, in slot seq % K (replies
            // come back in order, so the outstanding sequence numbers are K
            // consecutive ones; the check below catches anything else).
            let mut slots: Vec<Option<(u64, Instant)>> = vec![None; inflight];
            let mut hist = new_hist();
            let mut t0 = Instant::now();
            let mut send = |seq: u64, slots: &mut Vec<Option<(u64, Instant)>>| -> Result<()> {
                if k > 1 {
                    body[..8].copy_from_slice(&seq.to_le_bytes());
                }
                let slot = &mut slots[(seq % k) as usize];
                ensure!(slot.is_none(), "request {seq}: slot still busy");
                let now = Instant::now();
                if seq == warmup {
                    t0 = now;
                }
                *slot = Some((seq, now));
                match dealer.send(&body[..], 0) {
                    Ok(()) => Ok(()),
                    Err(zmq::Error::EAGAIN) => {
                        bail!("DEALER blocked for {} s at request {seq}", STALL_MS / 1000)
                    }
                    Err(e) => Err(e.into()),
                }
            };
            let mut sent = 0u64;
            while sent < k.min(total) {
                send(sent, &mut slots)?;
                sent += 1;
            }
            let mut reply = zmq::Message::new();
            let mut got = 0u64;
            while got < total {
                match dealer.recv(&mut reply, 0) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => bail!(
                        "DEALER got {got} of {total} replies, then nothing for {} s",
                        STALL_MS / 1000
                    ),
                    Err(e) => return Err(e.into()),
                }
                let now = Instant::now();
                ensure!(
                    reply.len() == payload,
                    "reply of {} bytes to a {payload}-byte request",
                    reply.len()
                );
                let seq = if k > 1 {
                    u64::from_le_bytes(reply[..8].try_into()?)
                } else {
                    got
                };
                let (s, t) = slots[(seq % k) as usize]
                    .take()
                    .ok_or_else(|| anyhow!("reply {seq} to no outstanding request"))?;
                ensure!(s == seq, "reply {seq} found request {s} in its slot");
                if seq >= warmup {
                    hist.record(now.duration_since(t).as_nanos() as u64)?;
                }
                got += 1;
                if sent < total {
                    send(sent, &mut slots)?;
                    sent += 1;
                }
            }
            Ok((hist, t0.elapsed().as_secs_f64()))
        },
    )?;
    let (hist, secs) = join(client, "zmq DEALER side")?;
    join(server, "zmq ROUTER side")?;
    Ok(req_json("zmq", "dealer_router", c, inflight, &hist, secs))
}
