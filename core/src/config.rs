//! Node configuration, validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::frame::DEFAULT_MAX_PAYLOAD;
use crate::timeouts::Timeouts;

/// Settings of one node. Build with [`NodeConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node name (at most 255 bytes).
    pub name: String,
    /// Cluster name (at most 255 bytes); peers of other clusters are refused.
    pub cluster: String,
    /// Bus address to bind; port 0 picks a free port. May be unspecified
    /// (`0.0.0.0`, `::`) to listen on every interface.
    pub tcp: SocketAddr,
    /// The bus address to tell the cluster, when it differs from `tcp`
    /// (NAT, containers, a node bound to `0.0.0.0`); port 0 means the bound
    /// port. Unset, the bound address is advertised, or — bound to an
    /// unspecified address — the first routable address of the host (see
    /// [`crate::advertise`]).
    pub advertise: Option<SocketAddr>,
    /// Number of shards (glommio executors).
    pub shards: usize,
    /// Pin shard `i` to CPU `i`; off, shards float (tests running many nodes).
    pub pin_cpus: bool,
    /// Explicit CPUs: shard `i` runs on `cpus[i % len]` (overrides `pin_cpus`).
    pub cpus: Option<Vec<usize>>,
    /// Memory glommio registers per shard for io_uring buffers.
    pub io_memory: usize,
    /// Spin this long before parking an idle shard: a message arriving
    /// meanwhile is picked up without a wake-up (tens of µs on a VM). Default
    /// [`DEFAULT_SPIN`] for pinned shards; glommio never spins unpinned ones.
    /// `None` (or zero) parks at once: use it when more shards than CPUs
    /// share a machine, where spinning shards would steal each other's time.
    pub spin_before_park: Option<Duration>,
    /// The longest a shard runs ready tasks before it polls its network
    /// completions and timers again (glommio's preemption timer). A task
    /// that keeps the shard busy — a producer retrying `Backpressure`, a
    /// long batch of handlers — delays reads, writes waiting for socket
    /// space and heartbeats by at most this much. Default
    /// [`DEFAULT_POLL_INTERVAL`] (see there before lowering it).
    pub poll_interval: Duration,
    /// Largest payload sent or accepted.
    pub max_payload: u32,
    /// Bytes queued per connection before sends fail with `Backpressure`.
    pub max_write_queue: usize,
    /// Requests waiting per shard before sends fail with `Backpressure`.
    pub max_pending: usize,
    /// Commands queued per shard from plain threads (sends from a thread
    /// that finds it full fail with `Backpressure`). The queue is allocated
    /// and initialized whole at start: 32 bytes per slot, 2 MiB per shard by
    /// default.
    pub command_queue: usize,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Reconnect backoff after a failed connection.
    pub backoff: Backoff,
    /// Handshake, half-frame, heartbeat, silence and idle limits.
    pub timeouts: Timeouts,
    /// Inbound connections accepted per node (split evenly over shards);
    /// more are closed at once and counted.
    pub max_connections: usize,
    /// Outbound connections each shard keeps open (each shard dials its own
    /// connection to a peer): dialling one more first closes the least
    /// recently used one that nothing depends on. The default, 1024, never
    /// binds (a cluster has at most 1023 other nodes); a lower cap bounds
    /// sockets and buffers at the price of reconnecting to peers used less
    /// often.
    pub max_outbound: usize,
    /// Shared cluster secret: when set, every connection proves knowledge of
    /// it both ways (see [`crate::auth`]) and peers without it are refused.
    pub cluster_secret: Option<Vec<u8>>,
    /// Mutual TLS on every bus connection (see [`crate::tls`]): this node
    /// and its peers must all have it, with certificates of one CA; a peer
    /// without TLS, or with a certificate the CA did not sign, is refused.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Async handlers running per shard. At the cap, new inbound requests
    /// and one-way messages for async handlers wait in a bounded per-shard
    /// queue (FIFO per channel); replies, errors, heartbeats and control
    /// frames are always read, so handlers awaiting nested requests finish.
    /// See [`crate::overload`].
    pub max_handlers: u64,
    /// Messages queued per shard while `max_handlers` is reached; over it
    /// (or over `max_queued_bytes`) a request is refused with
    /// `ErrorCode::Backpressure` (callers fail over) and a one-way message
    /// is dropped, both counted.
    pub max_queued: usize,
    /// Payload bytes queued per shard at most while `max_handlers` is reached.
    pub max_queued_bytes: usize,
    /// Optional caps on async handlers of one channel running at once per
    /// shard (messages over it queue like those over `max_handlers`).
    pub channel_concurrency: Vec<(crate::channel::Channel, u32)>,
    /// Rate limits of channels served by this node (see [`crate::limiter`];
    /// changeable later with [`crate::Node::set_rate_limit`]).
    pub rate_limits: Vec<(crate::channel::Channel, crate::limiter::RateLimit)>,
    /// A rate limit on everything this node takes in, whatever the channel
    /// (checked after the channel's; changeable later with
    /// [`crate::Node::set_node_rate_limit`]).
    pub node_rate_limit: Option<crate::limiter::RateLimit>,
    /// Circuit breakers on this node's requests, one per peer per shard
    /// (see [`crate::breaker`]); `None` turns them off. On by default.
    pub breaker: Option<crate::breaker::BreakerConfig>,
    /// Time handler runs for `domi_handler_duration_seconds`: async
    /// handlers and slow sync ones every run, fast sync handlers (under
    /// 4 µs) one run in 16, each sample standing for the runs before it
    /// (see [`crate::telemetry::HandlerSampler`]; a timed run costs two
    /// reads of the TSC clock, about 20 ns here). Counts are exact
    /// either way. On by default; off, the histogram stays empty.
    pub handler_durations: bool,
    /// Send a trace context with every request and one-way message (the
    /// frame's trace extension, 27 bytes; see [`crate::trace`]). Off by
    /// default: nothing is added to any frame.
    pub trace_context: bool,
    /// Ties domi's spans to a tracing backend's ids (e.g. OpenTelemetry);
    /// see [`crate::trace::Propagator`].
    pub propagator: Option<crate::trace::PropagatorHook>,
    /// Called when a `call`, `notify` or `publish` fails after it returned
    /// (see [`crate::error::SendFailure`]); failures are logged at debug
    /// level when unset.
    pub on_send_error: Option<crate::error::SendErrorHook>,
}

impl NodeConfig {
    /// Defaults: cluster `default`, `127.0.0.1:0`, one shard per CPU this
    /// process may use ([`allowed_cpus`]), pinned.
    pub fn new(name: impl Into<String>) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            cluster: "default".into(),
            tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            shards: allowed_cpus().len(),
            pin_cpus: true,
            cpus: None,
            io_memory: 10 << 20,
            spin_before_park: Some(DEFAULT_SPIN),
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_write_queue: 64 << 20,
            max_pending: 1 << 16,
            command_queue: 1 << 16,
            connect_timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
            timeouts: Timeouts::default(),
            max_connections: 4096,
            max_outbound: 1024,
            max_handlers: 4096,
            max_queued: 16 * 1024,
            max_queued_bytes: 64 << 20,
            channel_concurrency: Vec::new(),
            rate_limits: Vec::new(),
            node_rate_limit: None,
            breaker: Some(crate::breaker::BreakerConfig::default()),
            handler_durations: true,
            trace_context: false,
            propagator: None,
            on_send_error: None,
            cluster_secret: None,
            tls: None,
        }
    }

    /// Checks the settings; the node refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [("name", &self.name), ("cluster", &self.cluster)] {
            if value.is_empty() || value.len() > 255 {
                return Err(ConfigError::BadName {
                    field,
                    len: value.len(),
                });
            }
        }
        if self.shards == 0 {
            return Err(ConfigError::NoShards);
        }
        let cpus = available_cpus();
        let allowed = allowed_cpus().len();
        if self.pin_cpus && self.cpus.is_none() && self.shards > allowed {
            return Err(ConfigError::TooManyShards {
                requested: self.shards,
                available: allowed,
            });
        }
        if let Some(list) = &self.cpus {
            if list.is_empty() {
                return Err(ConfigError::ZeroLimit { field: "cpus" });
            }
            if let Some(&cpu) = list.iter().find(|&&c| c >= cpus) {
                return Err(ConfigError::NoSuchCpu {
                    cpu,
                    available: cpus,
                });
            }
        }
        if self.max_payload == 0 {
            return Err(ConfigError::ZeroLimit {
                field: "max_payload",
            });
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::ZeroLimit {
                field: "poll_interval",
            });
        }
        let t = &self.timeouts;
        if t.silence < t.heartbeat * 2 {
            return Err(ConfigError::SilenceBelowHeartbeats {
                silence: t.silence,
                heartbeat: t.heartbeat,
            });
        }
        if self.max_write_queue < self.max_payload as usize {
            return Err(ConfigError::QueueBelowPayload {
                queue: self.max_write_queue,
                payload: self.max_payload,
            });
        }
        if self.max_pending == 0
            || self.command_queue == 0
            || self.max_connections == 0
            || self.max_outbound == 0
            || self.max_handlers == 0
        {
            return Err(ConfigError::ZeroLimit {
                field: "max_pending/command_queue/max_connections/max_outbound/max_handlers",
            });
        }
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        for &(channel, limit) in &self.rate_limits {
            limit.validate(channel)?;
        }
        if let Some(limit) = self.node_rate_limit {
            limit.validate_node()?;
        }
        if let Some(&(channel, _)) = self.channel_concurrency.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError::ZeroConcurrency { channel });
        }
        if let Some(addr) = self.advertise.filter(|a| a.ip().is_unspecified()) {
            return Err(crate::advertise::AdvertiseError::Unspecified { addr }.into());
        }
        if self.cluster_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::WeakSecret);
        }
        if self.io_memory < 64 * 1024 {
            return Err(ConfigError::IoMemoryTooSmall {
                bytes: self.io_memory,
            });
        }
        Ok(())
    }
}

/// How long a pinned shard spins before parking, by default (a low-latency
/// bus: it costs at most this much CPU after each burst of work).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// How long a shard runs ready tasks at most before polling I/O again, by
/// default: glommio's own 100 ms. Shorter makes a busy shard poll sooner
/// (10 ms kept one-way throughput steady under a producer that retries
/// with `yield_now`), but with glommio 0.9 it made executors stall at start
/// in crowd starts (2 of 127 node processes, "shard did not report ready",
/// in each of two 128-node runs; none at 100 ms), so it stays at 100 ms;
/// producers on a shard should use [`crate::LocalBus::notify_when_ready`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The CPUs this process may run on (its affinity mask, so `taskset` and
/// cpusets are honoured), in ascending order. Pinned shards go to these:
/// shard `i` on `allowed_cpus()[i]`. Falls back to `0..available_cpus()`.
pub fn allowed_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => {
            let mut v: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
            v.sort_unstable();
            v
        }
        _ => (0..available_cpus()).collect(),
    }
}

/// CPUs online on this machine (what explicit `cpus` lists are checked
/// against; glommio pins by CPU number).
pub fn available_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .or_else(|| std::thread::available_parallelism().map(|n| n.get()).ok())
        .unwrap_or(1)
}

/// Counts the CPUs of a kernel CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// An invalid [`NodeConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Empty or longer than 255 bytes.
    #[error("{field} must be 1..=255 bytes, got {len}")]
    BadName {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// Zero shards.
    #[error("a node needs at least one shard")]
    NoShards,
    /// More pinned shards than CPUs.
    #[error("{requested} pinned shards requested, {available} CPUs available")]
    TooManyShards {
        /// Requested shards.
        requested: usize,
        /// CPUs available.
        available: usize,
    },
    /// A cluster secret shorter than 16 bytes.
    #[error("the cluster secret must be at least 16 bytes")]
    WeakSecret,
    /// A CPU that does not exist.
    #[error("CPU {cpu} requested, {available} CPUs available")]
    NoSuchCpu {
        /// Requested CPU.
        cpu: usize,
        /// CPUs available.
        available: usize,
    },
    /// A limit of zero.
    #[error("{field} must be greater than zero")]
    ZeroLimit {
        /// Which field.
        field: &'static str,
    },
    /// No address to advertise (see [`crate::advertise`]).
    #[error(transparent)]
    Advertise(#[from] crate::advertise::AdvertiseError),
    /// Invalid circuit breaker settings.
    #[error(transparent)]
    Breaker(#[from] crate::breaker::InvalidBreaker),
    /// A rate limit of zero.
    #[error(transparent)]
    RateLimit(#[from] crate::limiter::InvalidRateLimit),
    /// A per-channel concurrency cap of zero.
    #[error("the concurrency cap of {channel} must be greater than zero")]
    ZeroConcurrency {
        /// The channel.
        channel: crate::channel::Channel,
    },
    /// A write queue smaller than one maximal frame.
    #[error("max_write_queue ({queue}) must hold at least one max_payload ({payload})")]
    QueueBelowPayload {
        /// Queue bound.
        queue: usize,
        /// Payload bound.
        payload: u32,
    },
    /// A silence limit under two heartbeats: a live but idle peer could be
    /// taken for dead (idle times are measured to housekeeping's
    /// resolution, a quarter heartbeat, and a heartbeat may leave that late).
    #[error(
        "timeouts.silence ({silence:?}) must be at least twice timeouts.heartbeat ({heartbeat:?})"
    )]
    SilenceBelowHeartbeats {
        /// The silence limit.
        silence: std::time::Duration,
        /// The heartbeat interval.
        heartbeat: std::time::Duration,
    },
    /// Too little io_uring buffer memory for glommio.
    #[error("io_memory of {bytes} bytes is below 64 KiB")]
    IoMemoryTooSmall {
        /// Requested bytes.
        bytes: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }

    #[test]
    fn validation_catches_each_mistake() {
        let ok = NodeConfig {
            pin_cpus: false,
            ..NodeConfig::new("n")
        };
        assert_eq!(ok.validate(), Ok(()));
        let c = NodeConfig {
            shards: 0,
            ..ok.clone()
        };
        assert_eq!(c.validate(), Err(ConfigError::NoShards));
        let mut c = ok.clone();
        c.timeouts.silence = c.timeouts.heartbeat * 3 / 2;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SilenceBelowHeartbeats { .. })
        ));
        let c = NodeConfig {
            name: String::new(),
            ..ok.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BadName { field: "name", .. })
        ));
        let c = NodeConfig {
            shards: 10_000,
            pin_cpus: true,
            ..ok.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooManyShards { .. })
        ));
        let c = NodeConfig {
            max_write_queue: 10,
            ..ok.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::QueueBelowPayload { .. })
        ));
        let c = NodeConfig {
            poll_interval: Duration::ZERO,
            ..ok.clone()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroLimit {
                field: "poll_interval"
            })
        );
        let c = NodeConfig {
            cpus: Some(vec![10_000]),
            ..ok.clone()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NoSuchCpu { cpu: 10_000, .. })
        ));
        let c = NodeConfig {
            channel_concurrency: vec![(crate::Channel(3), 0)],
            ..ok.clone()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroConcurrency {
                channel: crate::Channel(3)
            })
        );
        let c = NodeConfig { io_memory: 1, ..ok };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::IoMemoryTooSmall { .. })
        ));
    }
}
