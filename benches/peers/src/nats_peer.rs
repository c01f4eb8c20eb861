//! NATS workloads through a private `nats-server` on a free loopback port
//! (async-nats clients, one current-thread tokio runtime per side):
//! `nats-pub` (publish on `bench`, every message counted at the subscriber) and
//! `nats-req` (requests on `svc` to a responder echoing the same bytes,
//! `--inflight K` tasks each doing sequential requests).
//!
//! Run: `domi-peers nats-pub --payload 64 --count 200000` or
//! `domi-peers nats-req --payload 64 --count 20000 --inflight 64`
//! (needs `nats-server` on PATH, e.g. `apt-get install nats-server`, or
//! `--nats-server PATH`).
//!
//! Placement: the nats-server is started from a thread pinned to
//! `--cpu-server` (the process inherits the mask) and the subscriber /
//! responder runs on that CPU too; the publisher / requester runs on
//! `--cpu-client`. The server is killed when the run ends, on error too.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::Value;

use crate::{kill_child, new_hist, one_way_json, pin, req_json, NatsCommon, CHILD};

/// A side whose progress stops for this long fails instead of waiting for
/// the overall deadline.
const STALL: Duration = Duration::from_secs(10);
/// How long the nats-server may take to accept connections.
const START: Duration = Duration::from_secs(10);

/// The private nats-server; killed on drop.
struct NatsServer {
    port: u16,
}

impl NatsServer {
    fn start(bin: &str, cpu: Option<usize>) -> Result<NatsServer> {
        let port = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            l.local_addr()?.port()
        };
        let bin_owned = bin.to_string();
        // Spawned from a pinned thread so that the server inherits the CPU.
        let child = thread::spawn(move || -> Result<std::process::Child> {
            pin(cpu, "server")?;
            Ok(Command::new(&bin_owned)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?)
        })
        .join()
        .map_err(|_| anyhow!("spawning thread panicked"))?;
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let missing = e
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
                if missing {
                    bail!(
                        "`{bin}` not found: install nats-server (apt-get install nats-server) \
                         or pass --nats-server PATH"
                    );
                }
                return Err(e.context(format!("starting `{bin}`")));
            }
        };
        *CHILD.lock().map_err(|_| anyhow!("child lock poisoned"))? = Some(child);
        let server = NatsServer { port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let until = Instant::now() + START;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                eprintln!("domi-peers: nats-server listening on {addr}");
                return Ok(server);
            }
            if let Some(status) = CHILD
                .lock()
                .map_err(|_| anyhow!("child lock poisoned"))?
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("`{bin}` exited ({status}) before accepting connections on {addr}");
            }
            if Instant::now() > until {
                bail!(
                    "`{bin}` did not accept connections on {addr} within {} s",
                    START.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        kill_child();
    }
}

async fn connect(url: &str, capacity: usize) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(capacity)
        .event_callback(|e| async move { eprintln!("domi-peers: nats event: {e}") })
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Runs `work` as a task that bumps `progress` as it goes, and fails if
/// `progress` stops moving for `STALL`.
async fn watched<T: Send + 'static>(
    what: &str,
    progress: Arc<AtomicU64>,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let mut task = tokio::spawn(work);
    let (mut last, mut since) = (0, Instant::now());
    loop {
        tokio::select! {
            r = &mut task => return r.map_err(|e| anyhow!("{what} task failed: {e}"))?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let now = progress.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > STALL {
                    task.abort();
                    bail!("{what} stalled at {now} for {} s", STALL.as_secs());
                }
            }
        }
    }
}

fn side<T: Send + 'static>(
    name: &str,
    cpu: Option<usize>,
    role: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<thread::JoinHandle<Result<T>>> {
    Ok(thread::Builder::new().name(name.into()).spawn(move || {
        pin(cpu, role)?;
        f()
    })?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn join<T>(h: thread::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join()
        .map_err(|_| anyhow!("{what} thread panicked"))?
        .with_context(|| what.to_string())
}

fn ready_wait(rx: &mpsc::Receiver<()>, what: &str) -> Result<()> {
    rx.recv_timeout(STALL)
        .map_err(|_| anyhow!("{what} never became ready"))
}

/// Publish -> subscribe: `count` messages over the time from publishing the
/// first measured message (the first after the warm-up) to receiving the
/// last one at the subscriber.
///
/// NATS has no flow control from subscriber to publisher, so a backlog that
/// builds up during the warm-up (in the server, the socket buffers and the
/// subscription's channel) can drain afterwards much faster than messages
/// are produced: a clock running from the subscriber's first measured to its
/// last message then measured that drain and varied from 1.7 to 13 million
/// msg/s between runs. Starting the clock at the publisher bounds the figure
/// by what the whole path delivers.
pub fn pub_sub(n: &NatsCommon) -> Result<Value> {
    let c = &n.common;
    let (total, warmup, payload) = (c.total(), c.warmup(), c.payload);
    let sent_at = Arc::new(OnceLock::<Instant>::new());
    let server = NatsServer::start(&n.nats_server, c.cpu_server)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let url = server.url();
    // Room for every message, so that a slow subscriber is not dropped by
    // the client library (the server may still drop one past its limits).
    let capacity = total.clamp(1 << 16, 1 << 24) as usize;
    let sub = side("nats-sub", c.cpu_server, "server", move || {
        runtime()?.block_on(async move {
            let client = connect(&url, capacity).await?;
            let mut sub = client.subscribe("bench").await?;
            client.flush().await?;
            ready_tx.send(())?;
            let progress = Arc::new(AtomicU64::new(0));
            let p = progress.clone();
            watched("subscriber", progress, async move {
                let mut received = 0u64;
                while received < total {
                    let m = sub
                        .next()
                        .await
                        .ok_or_else(|| anyhow!("subscription closed after {received}"))?;
                    ensure!(
                        m.payload.len() == payload,
                        "got a {}-byte message, sent {payload}",
                        m.payload.len()
                    );
                    received += 1;
                    p.store(received, Ordering::Relaxed);
                }
                Ok(Instant::now())
            })
            .await
            .with_context(|| format!("subscriber received fewer than {total} messages"))
        })
    })?;
    let url = server.url();
    let first_sent = sent_at.clone();
    let publ = side("nats-pub", c.cpu_client, "client", move || {
        ready_wait(&ready_rx, "subscriber")?;
        runtime()?.block_on(async move {
            let client = connect(&url, 1 << 16).await?;
            let subject = async_nats::Subject::from_static("bench");
            let body = Bytes::from(vec![7u8; payload]);
            for i in 0..total {
                if i == warmup {
                    first_sent.set(Instant::now()).ok();
                }
                client.publish(subject.clone(), body.clone()).await?;
            }
            client.flush().await?;
            Ok(())
        })
    })?;
    join(publ, "NATS publisher")?;
    let last = join(sub, "NATS subscriber")?;
    drop(server);
    let first = *sent_at
        .get()
        .ok_or_else(|| anyhow!("no measured message was published"))?;
    let secs = last.duration_since(first).as_secs_f64();
    Ok(one_way_json("nats", "pub_sub", c, c.count as f64 / secs))
}

/// Request -> responder with `inflight` tasks each doing sequential requests.
pub fn request(n: &NatsCommon, inflight: usize) -> Result<Value> {
    let c = &n.common;
    let (total, warmup, payload) = (c.total(), c.warmup(), c.payload);
    let server = NatsServer::start(&n.nats_server, c.cpu_server)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let url = server.url();
    let responder = side("nats-responder", c.cpu_server, "server", move || {
        runtime()?.block_on(async move {
            let client = connect(&url, 1 << 16).await?;
            let mut sub = client.subscribe("svc").await?;
            client.flush().await?;
            ready_tx.send(())?;
            let progress = Arc::new(AtomicU64::new(0));
            let p = progress.clone();
            watched("responder", progress, async move {
                for i in 0..total {
                    let m = sub
                        .next()
                        .await
                        .ok_or_else(|| anyhow!("subscription closed after {i}"))?;
                    let reply = m
                        .reply
                        .ok_or_else(|| anyhow!("request without a reply subject"))?;
                    client.publish(reply, m.payload).await?;
                    p.store(i + 1, Ordering::Relaxed);
                }
                client.flush().await?;
                Ok(())
            })
            .await
        })
    })?;
    let url = server.url();
    let requester = side("nats-requester", c.cpu_client, "client", move || {
        ready_wait(&ready_rx, "responder")?;
        runtime()?.block_on(async move {
            let client = connect(&url, 1 << 16).await?;
            let issued = Arc::new(AtomicU64::new(0));
            let started = Arc::new(Mutex::new(None::<Instant>));
            let body = Bytes::from(vec![7u8; payload]);
            let mut tasks = Vec::new();
            for _ in 0..inflight {
                let (client, issued, started, body) = (
                    client.clone(),
                    issued.clone(),
                    started.clone(),
                    body.clone(),
                );
                let subject = async_nats::Subject::from_static("svc");
                tasks.push(tokio::spawn(async move {
                    let mut hist = new_hist();
                    loop {
                        let i = issued.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok::<Histogram<u64>, anyhow::Error>(hist);
                        }
                        let t = Instant::now();
                        if i == warmup {
                            *started.lock().map_err(|_| anyhow!("lock poisoned"))? = Some(t);
                        }
                        let r = client
                            .request(subject.clone(), body.clone())
                            .await
                            .with_context(|| format!("request {i}"))?;
                        let rtt = t.elapsed();
                        ensure!(
                            r.payload.len() == payload,
                            "reply of {} bytes to a {payload}-byte request",
                            r.payload.len()
                        );
                        if i >= warmup {
                            hist.record(rtt.as_nanos() as u64)?;
                        }
                    }
                }));
            }
            let mut hist = new_hist();
            for t in tasks {
                hist.add(t.await.map_err(|e| anyhow!("request task failed: {e}"))??)?;
            }
            let secs = started
                .lock()
                .map_err(|_| anyhow!("lock poisoned"))?
                .map(|s| s.elapsed().as_secs_f64())
                .ok_or_else(|| anyhow!("no measured request"))?;
            Ok((hist, secs))
        })
    })?;
    let (hist, secs) = join(requester, "NATS requester")?;
    join(responder, "NATS responder")?;
    drop(server);
    Ok(req_json("nats", "request", c, inflight, &hist, secs))
}
