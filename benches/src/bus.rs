//! The bus workloads, driven from tasks on the client node's shards against a
//! server node running as a child process ([`crate::server`]).

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use domi::{BusError, LocalBus, Node};
use hdrhistogram::Histogram;

use crate::report::Rate;
use crate::server::{ServerArgs, ECHO, SINK, STATS};

const T: Duration = Duration::from_secs(10);

/// A server node in a child process; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// Its bus address.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `domi-bench server` with `args` and waits for its address.
    pub fn start(args: &ServerArgs) -> Result<ServerProcess> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("server")
            .arg("--shards")
            .arg(args.shards.to_string())
            .arg("--io-memory")
            .arg(args.io_memory.to_string());
        if !args.cpus.is_empty() {
            let list: Vec<String> = args.cpus.iter().map(|c| c.to_string()).collect();
            cmd.arg("--cpus").arg(list.join(","));
        }
        if let Some(us) = args.spin_us {
            cmd.arg("--spin-us").arg(us.to_string());
        }
        if let Some(dir) = &args.tls_dir {
            cmd.arg("--tls-dir").arg(dir);
        }
        if let Some(rate) = args.rate_limit {
            cmd.arg("--rate-limit").arg(rate.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server process")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut proc = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the server did not report its address within 30 s")?;
        proc.addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| anyhow!("unexpected server output {line:?}"))?
            .parse()?;
        Ok(proc)
    }

    /// Resident memory of the server process, bytes.
    pub fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS"))?;
        Ok(kb * 1024)
    }

    /// CPU time (user + system) the process used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which ends with the last ')'):
        // utime and stime are the 12th and 13th of them, in clock ticks.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("bad /proc stat"))?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            Ok(f.get(i)
                .ok_or_else(|| anyhow!("short /proc stat"))?
                .parse::<f64>()?)
        };
        // Linux reports these in USER_HZ, 100 per second.
        Ok((ticks(11)? + ticks(12)?) / 100.0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client node, connected to one server.
pub struct Client {
    /// The node.
    pub node: Node,
}

impl Client {
    /// A client with `shards` shards on `cpus`, peered with `server`.
    pub fn start(
        server: SocketAddr,
        shards: usize,
        cpus: &[usize],
        spin: Option<Duration>,
    ) -> Result<Client> {
        Self::start_with(server, shards, cpus, spin, None)
    }

    /// The same, with mutual TLS on the bus when `tls` is given.
    pub fn start_with(
        server: SocketAddr,
        shards: usize,
        cpus: &[usize],
        spin: Option<Duration>,
        tls: Option<domi::TlsConfig>,
    ) -> Result<Client> {
        Self::start_configured(server, shards, cpus, spin, |b| match tls {
            Some(tls) => b.tls(tls),
            None => b,
        })
    }

    /// The same, with `configure` applied to the node's builder.
    pub fn start_configured(
        server: SocketAddr,
        shards: usize,
        cpus: &[usize],
        spin: Option<Duration>,
        configure: impl FnOnce(domi::NodeBuilder) -> domi::NodeBuilder,
    ) -> Result<Client> {
        let mut b = configure(Node::builder("bench-client").shards(shards).peer(server));
        b = if cpus.is_empty() {
            b.pin_cpus(false)
        } else {
            b.cpus(cpus.to_vec())
        };
        if let Some(s) = spin {
            b = b.spin_before_park(s);
        }
        let node = b.start()?;
        node.wait_for_provider(ECHO, T)?;
        Ok(Client { node })
    }

    fn on_each_shard<
        T: Send + 'static,
        Fut: std::future::Future<Output = Result<T, BusError>> + 'static,
    >(
        &self,
        f: impl Fn(LocalBus) -> Fut + Send + Clone + 'static,
    ) -> Result<Vec<T>> {
        let tasks: Vec<_> = (0..self.node.shards())
            .map(|s| self.node.spawn_on(s, f.clone()))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.join().ok_or_else(|| anyhow!("client node stopped"))??);
        }
        Ok(out)
    }

    /// Sends `count` one-way messages (split over the client's shards) and
    /// returns the rate counted at the server. Fails unless every message arrived.
    pub fn one_way(&self, payload: usize, count: u64) -> Result<Rate> {
        self.on_each_shard(|bus| async move { bus.request(STATS, &[0], T).await })?;
        let shards = self.node.shards() as u64;
        let per = count / shards;
        self.on_each_shard(move |bus| async move {
            let body = vec![7u8; payload];
            // Every 64 KiB (the wire baseline's write size) the producer
            // yields, so the writer sends what it queued; every 1 MiB it
            // sleeps 1 µs, which parks it until the shard has polled I/O.
            // Yields alone would keep the shard's task queue busy, and
            // glommio reaps the writer's socket-space completions only when
            // that queue runs dry or its 100 ms preemption timer fires; a
            // sleep every 64 KiB costs the larger messages a timer and a
            // reactor poll per 64 frames.
            let frame = payload as u64 + 24;
            let batch = (64 * 1024 / frame).max(1);
            let polls = (1024 * 1024 / (batch * frame)).max(1);
            let (mut sent, mut until_flush, mut until_poll) = (0u64, batch, polls);
            while sent < per {
                bus.notify_when_ready(SINK, &body).await?;
                sent += 1;
                until_flush -= 1;
                if until_flush == 0 {
                    until_flush = batch;
                    until_poll -= 1;
                    if until_poll == 0 {
                        until_poll = polls;
                        glommio::timer::sleep(Duration::from_micros(1)).await;
                    } else {
                        futures_lite::future::yield_now().await;
                    }
                }
            }
            Ok(())
        })?;
        let stats = self.on_each_shard(|bus| async move { bus.request(STATS, &[1], T).await })?;
        // Several client connections may land on one server shard: keep the
        // largest count seen per server shard.
        let mut per_shard: std::collections::BTreeMap<u32, (u64, u64, u64)> = Default::default();
        for s in stats {
            ensure!(s.len() == 28, "bad stats reply");
            let shard = u32::from_le_bytes(s[0..4].try_into()?);
            let got = u64::from_le_bytes(s[4..12].try_into()?);
            let first = u64::from_le_bytes(s[12..20].try_into()?);
            let now = u64::from_le_bytes(s[20..28].try_into()?);
            let e = per_shard.entry(shard).or_insert((0, u64::MAX, 0));
            e.0 = e.0.max(got);
            e.1 = e.1.min(first);
            e.2 = e.2.max(now);
        }
        let received: u64 = per_shard.values().map(|v| v.0).sum();
        let first = per_shard.values().map(|v| v.1).min().unwrap_or(0);
        let last = per_shard.values().map(|v| v.2).max().unwrap_or(0);
        if received != per * shards {
            bail!(
                "one-way lost messages: sent {}, received {received}",
                per * shards
            );
        }
        Ok(Rate::new(
            received,
            payload,
            Duration::from_nanos(last.saturating_sub(first)),
        ))
    }

    /// `count` request/reply round trips with `inflight` outstanding, after
    /// `warmup`; latencies in ns and the replies-per-second rate.
    pub fn request_reply(
        &self,
        payload: usize,
        count: u64,
        warmup: u64,
        inflight: usize,
    ) -> Result<(Histogram<u64>, f64)> {
        let results = self.on_each_shard(move |bus| async move {
            let hist = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("histogram")));
            let issued = Rc::new(Cell::new(0u64));
            let total = warmup + count;
            let started = Rc::new(Cell::new(None::<Instant>));
            let mut tasks = Vec::new();
            for _ in 0..inflight {
                let (bus, hist, issued, started) =
                    (bus.clone(), hist.clone(), issued.clone(), started.clone());
                tasks.push(glommio::spawn_local(async move {
                    let body = vec![7u8; payload];
                    loop {
                        let i = issued.get();
                        if i >= total {
                            return Ok::<(), BusError>(());
                        }
                        issued.set(i + 1);
                        if i == warmup {
                            started.set(Some(Instant::now()));
                        }
                        let t = Instant::now();
                        bus.request(ECHO, &body, T).await?;
                        if i >= warmup {
                            let _ = hist.borrow_mut().record(t.elapsed().as_nanos() as u64);
                        }
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
            let secs = started
                .get()
                .map(|s| s.elapsed().as_secs_f64())
                .unwrap_or(0.0);
            let h = hist.borrow().clone();
            Ok((h, secs))
        })?;
        merge_rates(results)
    }

    /// Like [`Client::request_reply`], but each shard keeps `inflight`
    /// requests in flight from one task through a request window
    /// ([`domi::RequestWindow`]), sending the next one as each ends; the
    /// latencies are the window's own (first send to the answer's read).
    pub fn request_window(
        &self,
        payload: usize,
        count: u64,
        warmup: u64,
        inflight: usize,
    ) -> Result<(Histogram<u64>, f64)> {
        let results = self.on_each_shard(move |bus| async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let body = vec![7u8; payload];
            let total = warmup + count;
            let mut window = bus.request_window(ECHO, T);
            let mut sent = 0u64;
            while sent < total.min(inflight as u64) {
                window.send(&body)?;
                sent += 1;
            }
            let (mut done, mut started) = (0u64, (warmup == 0).then(Instant::now));
            while let Some(c) = window.next().await {
                c.result?;
                if done >= warmup {
                    let _ = hist.record(c.took.as_nanos() as u64);
                }
                done += 1;
                if done == warmup {
                    started = Some(Instant::now());
                }
                if sent < total {
                    window.send(&body)?;
                    sent += 1;
                }
            }
            let secs = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
            Ok((hist, secs))
        })?;
        merge_rates(results)
    }
}

/// The shards' latencies merged, and their rates (replies over measured
/// seconds) summed.
fn merge_rates(results: Vec<(Histogram<u64>, f64)>) -> Result<(Histogram<u64>, f64)> {
    let mut hist = Histogram::<u64>::new(3)?;
    let mut rate = 0.0;
    for (h, secs) in results {
        rate += h.len() as f64 / secs.max(1e-9);
        hist.add(&h)?;
    }
    Ok((hist, rate))
}
