//! `Node::builder(name)`: settings, subscriptions and membership, then `start()`.

use std::net::SocketAddr;
use std::time::Duration;

use domi_cluster::{EtcdConfig, EtcdMembership, StaticConfig, StaticMembership};
use domi_core::error::SendErrorHook;
use domi_core::{Channel, Handler, Membership, NodeConfig, NodeId, SendFailure};

use crate::node::{Node, StartError};

/// How long the [`NodeBuilder::dense`] preset keeps an unused outbound
/// connection open.
pub const DENSE_IDLE: Duration = Duration::from_secs(10);

/// Builds a [`Node`]; start with [`Node::builder`]. Defaults: cluster `default`, `127.0.0.1:0`, one pinned
/// shard per CPU, static membership with no peers.
#[must_use]
pub struct NodeBuilder {
    config: NodeConfig,
    subscriptions: Vec<(Channel, Handler)>,
    statics: StaticConfig,
    etcd: Option<EtcdConfig>,
    membership: Option<Box<dyn Membership>>,
    lifecycle: crate::node::Lifecycle,
    http_advertise: Option<SocketAddr>,
}

impl NodeBuilder {
    pub(crate) fn new(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            config: NodeConfig::new(name),
            subscriptions: Vec::new(),
            statics: StaticConfig::default(),
            etcd: None,
            membership: None,
            lifecycle: crate::node::Lifecycle::default(),
            http_advertise: None,
        }
    }

    /// The bus address to bind (port 0 picks a free port; `0.0.0.0` or `::`
    /// listens on every interface).
    pub fn tcp(mut self, addr: SocketAddr) -> Self {
        self.config.tcp = addr;
        self
    }

    /// The bus address to tell the cluster (the etcd record), when peers
    /// reach this node at another address than the one it binds: behind
    /// NAT, in a container, or bound to `0.0.0.0`. Port 0 means the bound
    /// port. Without it a node bound to an unspecified address advertises
    /// the first address of an up, non-loopback interface of the same
    /// family, and refuses to start if there is none
    /// (`ConfigError::Advertise`); an unspecified address is never
    /// advertised.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.config.advertise = Some(addr);
        self
    }

    /// The admin HTTP address to tell the cluster (the record's `http`),
    /// by the same rule as [`NodeBuilder::advertise`].
    pub fn advertise_http(mut self, addr: SocketAddr) -> Self {
        self.http_advertise = Some(addr);
        self
    }

    /// The cluster name; peers of other clusters are refused.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.config.cluster = name.into();
        self
    }

    /// Number of shards.
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n;
        self
    }

    /// Pin shard `i` to CPU `i` (default on).
    pub fn pin_cpus(mut self, pin: bool) -> Self {
        self.config.pin_cpus = pin;
        self
    }

    /// Pins shard `i` to `cpus[i % len]`.
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        self.config.cpus = Some(cpus.into_iter().collect());
        self
    }

    /// io_uring buffer memory per shard (glommio `io_memory`).
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.config.io_memory = bytes;
        self
    }

    /// How long an idle pinned shard spins before parking (default
    /// [`domi_core::config::DEFAULT_SPIN`], 50 µs: lower latency for a little
    /// CPU after each burst). `Duration::ZERO` parks at once — use it when
    /// more shards than CPUs share the machine.
    pub fn spin_before_park(mut self, spin: Duration) -> Self {
        self.config.spin_before_park = (!spin.is_zero()).then_some(spin);
        self
    }

    /// The longest a shard runs ready tasks before polling its network and
    /// timers again (default [`domi_core::config::DEFAULT_POLL_INTERVAL`],
    /// 100 ms, and why); see [`domi_core::NodeConfig::poll_interval`].
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// Largest payload sent or accepted (default 16 MiB).
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.config.max_payload = bytes;
        self
    }

    /// A shared cluster secret (at least 16 bytes): connections prove both
    /// ways that they know it (HMAC challenge–response, nothing secret on the
    /// wire), and peers without it are refused.
    pub fn cluster_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.config.cluster_secret = Some(secret.into());
        self
    }

    /// Limits how often the handler of `channel` starts on this node:
    /// `per_second` on average, `burst` at once (see
    /// [`domi_core::limiter`]). Requests over it are answered `RateLimited`
    /// (their callers fail over to the next provider), one-way messages are
    /// dropped; both are counted. Change it later with
    /// `Node::set_rate_limit`.
    pub fn rate_limit(mut self, channel: Channel, per_second: u32, burst: u32) -> Self {
        self.config
            .rate_limits
            .push((channel, crate::RateLimit { per_second, burst }));
        self
    }

    /// Limits everything this node takes in, whatever the channel:
    /// `per_second` on average, `burst` at once, checked after each
    /// channel's own limit; over it, as for [`NodeBuilder::rate_limit`].
    /// Change it later with `Node::set_node_rate_limit`.
    pub fn node_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.config.node_rate_limit = Some(crate::RateLimit { per_second, burst });
        self
    }

    /// Circuit breaker settings of this node's requests (on by default with
    /// [`crate::BreakerConfig::default`]: volume 20, 50 % errors over 10 s,
    /// sleep 2 s). See [`domi_core::breaker`].
    pub fn breaker(mut self, config: crate::BreakerConfig) -> Self {
        self.config.breaker = Some(config);
        self
    }

    /// Sends a trace context with every request and one-way message, so
    /// the `domi.handler` span on the provider shares the caller's
    /// `trace_id` (27 bytes more per frame; off by default; see
    /// [`domi_core::trace`]).
    pub fn trace_context(mut self) -> Self {
        self.config.trace_context = true;
        self
    }

    /// Sends trace contexts (see [`NodeBuilder::trace_context`]) with ids
    /// from a tracing backend, and parents handler spans in it: e.g. an
    /// OpenTelemetry propagator (`examples/tracing.rs`).
    pub fn trace_propagator(mut self, propagator: impl domi_core::trace::Propagator) -> Self {
        self.config.trace_context = true;
        self.config.propagator = Some(domi_core::trace::PropagatorHook(std::sync::Arc::new(
            propagator,
        )));
        self
    }

    /// Stops timing handler runs (`domi_handler_duration_seconds` stays
    /// empty), saving the clock reads of timed runs; see
    /// [`domi_core::NodeConfig::handler_durations`].
    pub fn no_handler_durations(mut self) -> Self {
        self.config.handler_durations = false;
        self
    }

    /// Turns the circuit breakers off: requests go to every provider in
    /// turn whatever their recent errors.
    pub fn no_breaker(mut self) -> Self {
        self.config.breaker = None;
        self
    }

    /// Mutual TLS on every bus connection (see [`crate::TlsConfig`]): every
    /// node of the cluster needs it, with a certificate of the same CA. The
    /// cluster secret, when set, is checked inside TLS as without it.
    pub fn tls(mut self, tls: crate::TlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Async handlers running at once per shard (default 4096). At the cap,
    /// new requests and one-way messages for async handlers wait in a
    /// bounded per-shard queue (`max_queued`, `max_queued_bytes`); over that
    /// a request is refused with `ErrorCode::Backpressure` and its caller
    /// fails over. Replies and control frames are never held back.
    pub fn max_handlers(mut self, n: u64) -> Self {
        self.config.max_handlers = n;
        self
    }

    /// Caps the async handlers of `channel` running at once per shard;
    /// messages over the cap wait in the shard's queue like those over
    /// [`NodeBuilder::max_handlers`].
    pub fn concurrency_limit(mut self, channel: Channel, n: u32) -> Self {
        self.config
            .channel_concurrency
            .retain(|(c, _)| *c != channel);
        self.config.channel_concurrency.push((channel, n));
        self
    }

    /// Called (on the shard that saw it) when a `call`, `notify` or
    /// `publish` fails after it returned: a `call` refused by its provider
    /// (paused, draining, no handler, overloaded, handler panicked), a
    /// message that could not be re-routed after its connection failed, or
    /// any error of a send handed to a shard from a plain thread. The seed's
    /// `reject` callback. Keep it short; it runs on the bus's thread.
    ///
    /// ```no_run
    /// use domi::{Channel, Node, SendFailure};
    /// let node = Node::builder("caller")
    ///     .on_send_error(|f: &SendFailure| {
    ///         eprintln!("{:?} on {} failed: {}", f.op, f.channel, f.error);
    ///     })
    ///     .start()?;
    /// node.call(Channel(50), b"job", Channel(51))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_send_error(mut self, hook: impl Fn(&SendFailure) + Send + Sync + 'static) -> Self {
        self.config.on_send_error = Some(SendErrorHook(std::sync::Arc::new(hook)));
        self
    }

    /// Any other setting.
    pub fn configure(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Settings preset for tests and examples that run many nodes: shards
    /// float, 1 MiB of io_uring memory each.
    pub fn small(self) -> Self {
        self.pin_cpus(false).io_memory(1 << 20)
    }

    /// Settings preset for hosts that run many nodes each (hundreds on one
    /// machine): one unpinned shard (unpinned shards park at once when
    /// idle), 256 KiB of io_uring memory, a command queue of 1024 sends from
    /// plain threads (32 KiB instead of 2 MiB), and outbound connections
    /// closed after [`DENSE_IDLE`] unused (an open connection costs both
    /// ends heartbeats and wake-ups). Measured by `make scale`.
    pub fn dense(self) -> Self {
        self.small().shards(1).io_memory(256 << 10).configure(|c| {
            c.command_queue = 1024;
            c.timeouts.idle = DENSE_IDLE;
        })
    }

    /// Serves `channel` with `handler` from the start.
    pub fn subscribe(mut self, channel: Channel, handler: Handler) -> Self {
        self.subscriptions.push((channel, handler));
        self
    }

    /// Adds a static peer address.
    pub fn peer(mut self, addr: SocketAddr) -> Self {
        self.statics.peers.push(addr);
        self
    }

    /// Adds static peer addresses.
    pub fn peers(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.statics.peers.extend(addrs);
        self
    }

    /// Fixes this node's id (static membership; etcd allocates ids itself).
    ///
    /// Without it a static node derives its id from its address, which can
    /// collide (1 in 1024 per pair); a peer whose id is taken is ignored and
    /// logged. Give every node of a static cluster a distinct id.
    pub fn node_id(mut self, id: NodeId) -> Self {
        self.statics.node_id = Some(id);
        self
    }

    /// Static membership settings (heartbeat, silence, backoff).
    pub fn static_config(mut self, f: impl FnOnce(&mut StaticConfig)) -> Self {
        f(&mut self.statics);
        self
    }

    /// Joins the cluster through etcd at `endpoints` (e.g. `http://127.0.0.1:2379`)
    /// instead of a static list: the node gets a free id (the lowest, unless
    /// it loses races to nodes starting with it) and learns
    /// its peers from the watch.
    pub fn etcd(mut self, endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.etcd = Some(EtcdConfig::new(endpoints));
        self
    }

    /// etcd membership settings (lease TTL, timeouts, backoff); implies etcd.
    pub fn etcd_config(mut self, f: impl FnOnce(&mut EtcdConfig)) -> Self {
        let mut c = self
            .etcd
            .take()
            .unwrap_or_else(|| EtcdConfig::new(Vec::<String>::new()));
        f(&mut c);
        self.etcd = Some(c);
        self
    }

    /// Another membership source instead of the static list.
    pub fn membership(mut self, m: Box<dyn Membership>) -> Self {
        self.membership = Some(m);
        self
    }

    /// Serves the admin HTTP endpoints on `addr` (loopback unless you say
    /// otherwise; port 0 picks a free port).
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.lifecycle.http = Some(addr);
        self
    }

    /// Requires `Authorization: Bearer <token>` on mutating admin endpoints.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.lifecycle.token = Some(token.into());
        self
    }

    /// How long a stop may drain before giving up (default 8 s).
    pub fn drain_deadline(mut self, d: Duration) -> Self {
        self.lifecycle.drain_deadline = d;
        self
    }

    /// Starts the node (and its admin server, if configured).
    pub fn start(mut self) -> Result<Node, StartError> {
        if self
            .lifecycle
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(domi_admin::AdminError::EmptyToken.into());
        }
        let admin = match self.lifecycle.http {
            Some(addr) => {
                let server = domi_admin::AdminServer::bind(addr)?;
                if let Some(etcd) = &mut self.etcd {
                    let host = domi_core::advertise::host_addrs();
                    let http = domi_core::advertise::advertised(
                        server.local_addr(),
                        self.http_advertise,
                        &host,
                    )
                    .map_err(|e| domi_core::StartError::Config(e.into()))?;
                    etcd.http = Some(http);
                }
                Some(server)
            }
            None => None,
        };
        let membership: Box<dyn Membership> = match (self.membership, self.etcd) {
            (Some(m), _) => m,
            (None, Some(mut etcd)) => {
                etcd.shards = self.config.shards;
                Box::new(EtcdMembership::new(etcd))
            }
            (None, None) => Box::new(StaticMembership::new(self.statics)),
        };
        Node::start(
            self.config,
            self.subscriptions,
            membership,
            admin,
            self.lifecycle,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_shards_spin_by_default_and_zero_parks_at_once() {
        let default = Node::builder("a");
        assert_eq!(
            default.config.spin_before_park,
            Some(domi_core::config::DEFAULT_SPIN)
        );
        let parked = Node::builder("b").spin_before_park(Duration::ZERO);
        assert_eq!(parked.config.spin_before_park, None);
        let custom = Node::builder("c").spin_before_park(Duration::from_micros(7));
        assert_eq!(
            custom.config.spin_before_park,
            Some(Duration::from_micros(7))
        );
    }
}
