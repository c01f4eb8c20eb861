//! Zenoh workloads, peer to peer over TCP loopback (no router, no
//! scouting: the client session connects to the server session's listening
//! endpoint): `zenoh-put` (a publisher with congestion control `Block`, so
//! nothing is dropped; every sample counted at the subscriber) and
//! `zenoh-get` (a querier whose queries a queryable answers with the same
//! bytes; `--inflight K` tasks each doing sequential queries). Queries and
//! replies use zenoh's batching defaults: `express` (no batching) barely
//! changed one query in flight here and cut 64 in flight fivefold.
//!
//! Zenoh runs its I/O on runtimes of its own, shared by every session of a
//! process, so the server side runs in a child process (this binary, role
//! `zenoh-serve`) started from a thread pinned to `--cpu-server`; the client
//! side and its runtimes are pinned to `--cpu-client`. The child prints
//! `ready` once its subscriber or queryable is declared, and (for
//! `zenoh-put`) one JSON line with the receiver's count and interval when
//! the last sample arrived.
//!
//! Run: `domi-peers zenoh-put --payload 64 --count 200000` or
//! `domi-peers zenoh-get --payload 64 --count 20000 --inflight 64`.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde_json::{json, Value};
use zenoh::bytes::ZBytes;
use zenoh::qos::CongestionControl;
use zenoh::Wait;

use crate::{kill_child, new_hist, one_way_json, pin, req_json, Common, CHILD};

/// The key one-way samples go to.
const PUT_KEY: &str = "domi/bench/put";
/// The key queries go to.
const GET_KEY: &str = "domi/bench/get";
/// How long a query may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer-mode configuration: listening on `listen` and/or connecting to
/// `connect`, with scouting off.
fn config(listen: Option<&str>, connect: Option<&str>) -> Result<zenoh::Config> {
    let mut c = zenoh::Config::default();
    let set = |c: &mut zenoh::Config, key: &str, value: &str| {
        c.insert_json5(key, value)
            .map_err(|e| anyhow!("zenoh config {key} = {value}: {e}"))
    };
    set(&mut c, "mode", r#""peer""#)?;
    set(&mut c, "scouting/multicast/enabled", "false")?;
    set(&mut c, "scouting/gossip/enabled", "false")?;
    let endpoints = |e: Option<&str>| match e {
        Some(e) => format!(r#"["tcp/{e}"]"#),
        None => "[]".into(),
    };
    set(&mut c, "listen/endpoints", &endpoints(listen))?;
    set(&mut c, "connect/endpoints", &endpoints(connect))?;
    Ok(c)
}

/// A free loopback port.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// The child's stdout, line by line.
type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts the server side (`domi-peers zenoh-serve`) pinned to `cpu`,
/// listening on `addr`; returns once it printed `ready`.
fn start_server(role: &str, addr: &str, c: &Common) -> Result<Lines> {
    let exe = std::env::current_exe()?;
    let args = vec![
        "zenoh-serve".to_string(),
        "--role".into(),
        role.into(),
        "--listen".into(),
        addr.into(),
        "--payload".into(),
        c.payload.to_string(),
        "--count".into(),
        c.total().to_string(),
        "--warmup".into(),
        c.warmup().to_string(),
    ];
    let cpu = c.cpu_server;
    // Spawned from a pinned thread so that the child inherits the CPU.
    let mut child = thread::spawn(move || -> Result<std::process::Child> {
        pin(cpu, "server")?;
        // The child exits when its stdin closes: when this process ends,
        // however it ends.
        Ok(Command::new(exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?)
    })
    .join()
    .map_err(|_| anyhow!("spawning thread panicked"))??;
    let stdout = child.stdout.take().context("the child's stdout")?;
    *CHILD.lock().map_err(|_| anyhow!("child lock poisoned"))? = Some(child);
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => Ok(lines),
        other => bail!("the zenoh server side did not get ready: {other:?}"),
    }
}

/// The server side, in its own process: a subscriber counting samples
/// (role `sub`, which exits after the last one) or a queryable echoing
/// queries (role `queryable`, which serves until its parent kills it).
pub fn serve(role: &str, listen: &str, payload: usize, total: u64, warmup: u64) -> Result<()> {
    thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let session = zenoh::open(config(Some(listen), None)?)
        .wait()
        .map_err(|e| anyhow!("opening the zenoh session: {e}"))?;
    match role {
        "sub" => {
            // The receiver's clock runs from the first measured sample to
            // the last one.
            let state = Arc::new(Mutex::new((0u64, None::<Instant>)));
            let (done_tx, done_rx) = std::sync::mpsc::channel::<Duration>();
            let done_tx = Mutex::new(Some(done_tx));
            let s = state.clone();
            let _sub = session
                .declare_subscriber(PUT_KEY)
                .callback(move |sample| {
                    if sample.payload().len() != payload {
                        return;
                    }
                    let mut st = s.lock().unwrap_or_else(|e| e.into_inner());
                    st.0 += 1;
                    if st.0 == warmup + 1 || (warmup == 0 && st.0 == 1) {
                        st.1 = Some(Instant::now());
                    }
                    if st.0 == total {
                        let from = st.1.unwrap_or_else(Instant::now);
                        if let Some(tx) = done_tx.lock().ok().and_then(|mut t| t.take()) {
                            let _ = tx.send(from.elapsed());
                        }
                    }
                })
                .wait()
                .map_err(|e| anyhow!("declaring the subscriber: {e}"))?;
            println!("ready");
            let elapsed = done_rx
                .recv()
                .map_err(|_| anyhow!("the subscriber ended early"))?;
            let got = state.lock().unwrap_or_else(|e| e.into_inner()).0;
            println!(
                "{}",
                json!({ "received": got, "measured_s": elapsed.as_secs_f64() })
            );
        }
        "queryable" => {
            let _q = session
                .declare_queryable(GET_KEY)
                .callback(|query| {
                    // The query's bytes back (a shared buffer, not a copy).
                    let body = query.payload().cloned().unwrap_or_default();
                    let _ = query.reply(GET_KEY, body).wait();
                })
                .wait()
                .map_err(|e| anyhow!("declaring the queryable: {e}"))?;
            println!("ready");
            // Serve until the parent ends (stdin closes, or it kills us).
            loop {
                thread::park();
            }
        }
        other => bail!("unknown zenoh server role {other:?}"),
    }
    Ok(())
}

/// The client's session, connected to `addr`.
async fn client_session(addr: &str) -> Result<zenoh::Session> {
    zenoh::open(config(None, Some(addr))?)
        .await
        .map_err(|e| anyhow!("opening the zenoh session: {e}"))
}

/// A one-worker tokio runtime for the client side (zenoh's own runtimes do
/// the I/O; it refuses a current-thread runtime).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// Publisher -> subscriber: the rate the subscriber measured over the
/// samples after the warm-up.
pub fn put_sub(c: &Common) -> Result<Value> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut lines = start_server("sub", &addr, c)?;
    pin(c.cpu_client, "client")?;
    let rt = runtime()?;
    let (total, payload) = (c.total(), c.payload);
    // On the runtime's worker (see `get_queryable`).
    let run = rt.spawn(async move {
        let session = client_session(&addr).await?;
        let publisher = session
            .declare_publisher(PUT_KEY)
            .congestion_control(CongestionControl::Block)
            .await
            .map_err(|e| anyhow!("declaring the publisher: {e}"))?;
        wait_matching(&publisher).await?;
        // One buffer, shared by every put (as the bus sends from a slice).
        let body = ZBytes::from(vec![7u8; payload]);
        for _ in 0..total {
            publisher
                .put(body.clone())
                .await
                .map_err(|e| anyhow!("put: {e}"))?;
        }
        Ok::<_, anyhow::Error>(session)
    });
    let _session = rt
        .block_on(run)
        .map_err(|e| anyhow!("the publishing task: {e}"))??;
    let line = lines
        .next()
        .context("the subscriber's result")?
        .context("reading the subscriber's result")?;
    kill_child();
    let v: Value = serde_json::from_str(&line).context("the subscriber's JSON")?;
    let got = v["received"].as_u64().unwrap_or(0);
    ensure!(got == total, "zenoh lost samples: {got} of {total}");
    let secs = v["measured_s"].as_f64().unwrap_or(0.0).max(1e-9);
    Ok(one_way_json("zenoh", "put-sub", c, c.count as f64 / secs))
}

/// Waits until the publisher has a matching subscriber (the connection
/// and the declaration arrived), within 10 s.
async fn wait_matching(publisher: &zenoh::pubsub::Publisher<'static>) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = publisher
            .matching_status()
            .await
            .map_err(|e| anyhow!("matching status: {e}"))?;
        if status.matching() {
            return Ok(());
        }
        ensure!(
            Instant::now() < until,
            "no zenoh subscriber matched within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Querier -> queryable: latencies of the queries after the warm-up and
/// their rate, with `inflight` tasks each doing sequential queries.
pub fn get_queryable(c: &Common, inflight: usize) -> Result<Value> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let _lines = start_server("queryable", &addr, c)?;
    pin(c.cpu_client, "client")?;
    let rt = runtime()?;
    let (total, warmup, payload) = (c.total(), c.warmup(), c.payload);
    // On the runtime's worker: zenoh blocks in place, which only a worker
    // of a multi-thread runtime may.
    let run = rt.spawn(async move {
        let session = client_session(&addr).await?;
        let querier = Arc::new(
            session
                .declare_querier(GET_KEY)
                // Each reply as it comes (the default waits for the query's
                // end to consolidate replies of several queryables).
                .consolidation(zenoh::query::ConsolidationMode::None)
                .timeout(QUERY_TIMEOUT)
                .await
                .map_err(|e| anyhow!("declaring the querier: {e}"))?,
        );
        // One query answered before the clock: the queryable is there.
        let until = Instant::now() + Duration::from_secs(10);
        while query_once(&querier, &ZBytes::from(vec![0u8; 8]))
            .await
            .is_err()
        {
            ensure!(
                Instant::now() < until,
                "no zenoh queryable answered within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let next = Arc::new(AtomicU64::new(0));
        let measured_from = Arc::new(Mutex::new(None::<Instant>));
        let tasks: Vec<_> = (0..inflight)
            .map(|_| {
                let (querier, next, from) = (querier.clone(), next.clone(), measured_from.clone());
                tokio::spawn(async move {
                    let body = ZBytes::from(vec![7u8; payload]);
                    let mut hist = new_hist();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok::<_, anyhow::Error>(hist);
                        }
                        if i == warmup {
                            from.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert_with(Instant::now);
                        }
                        let t = Instant::now();
                        query_once(&querier, &body).await?;
                        if i >= warmup {
                            hist.record(t.elapsed().as_nanos() as u64)?;
                        }
                    }
                })
            })
            .collect();
        let mut all = new_hist();
        for t in tasks {
            all.add(t.await.map_err(|e| anyhow!("query task: {e}"))??)?;
        }
        let from = measured_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now);
        let secs = from.elapsed().as_secs_f64();
        drop(session);
        Ok::<_, anyhow::Error>((all, secs))
    });
    let (hist, secs) = rt
        .block_on(run)
        .map_err(|e| anyhow!("the querying task: {e}"))??;
    kill_child();
    Ok(req_json("zenoh", "get-queryable", c, inflight, &hist, secs))
}

/// One query with `body`: Ok once its reply arrived with the same length.
async fn query_once(querier: &zenoh::query::Querier<'static>, body: &ZBytes) -> Result<()> {
    let replies = querier
        .get()
        .payload(body.clone())
        .await
        .map_err(|e| anyhow!("get: {e}"))?;
    let reply = replies
        .recv_async()
        .await
        .map_err(|_| anyhow!("the query ended without a reply"))?;
    let sample = reply
        .result()
        .map_err(|e| anyhow!("the queryable answered an error: {e:?}"))?;
    ensure!(
        sample.payload().len() == body.len(),
        "a reply of the wrong size"
    );
    Ok(())
}
