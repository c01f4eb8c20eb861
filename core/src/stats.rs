//! Per-shard counters: plain `Cell`s on the hot path, summed on demand.

use std::cell::Cell;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// A shard's counters (single-threaded; no atomics on the message path).
        #[derive(Default, Debug)]
        pub(crate) struct Counters {
            $(pub(crate) $name: Cell<u64>,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.get(),)* }
            }
        }

        /// A copy of counters, per shard or summed over a node.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl std::ops::Add for Snapshot {
            type Output = Snapshot;
            fn add(self, o: Snapshot) -> Snapshot {
                Snapshot { $($name: self.$name + o.$name,)* }
            }
        }

        impl Snapshot {
            /// Every counter as (name, value), for status and metrics output.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }

            /// What the counter `name` counts (its documentation, one line).
            pub fn help(name: &str) -> Option<&'static str> {
                match name {
                    $(stringify!($name) => Some(concat!($($doc),*).trim_ascii_start()),)*
                    _ => None,
                }
            }
        }
    };
}

counters! {
    /// Frames received.
    frames_in,
    /// Bytes received (headers included).
    bytes_in,
    /// Frames queued for sending.
    frames_out,
    /// Bytes queued for sending (headers included).
    bytes_out,
    /// Socket writes: frames queued in one reactor turn leave in one write,
    /// so this grows much slower than `frames_out` under load.
    writes,
    /// Messages sent by this node (requests, calls, one-way).
    sent,
    /// Messages handed to a handler.
    handled,
    /// Replies sent by handlers.
    replies,
    /// Messages for a channel with no handler.
    unhandled,
    /// Requests refused because the node is paused.
    refused_paused,
    /// Requests refused because the node is draining.
    refused_draining,
    /// Sends refused because a queue was full.
    backpressure,
    /// Requests of this node that timed out.
    timeouts,
    /// Requests of this node that failed because their provider's connection was lost.
    peer_lost,
    /// Requests of this node answered with an application error.
    app_errors,
    /// Sends of this node that found no provider.
    no_provider,
    /// Requests of this node answered with an error code by the provider.
    remote_errors,
    /// Connections closed because of an error (any of the reasons below, or i/o).
    bad_closes,
    /// Connections closed for a malformed frame (bad magic, version, kind, length).
    closed_malformed,
    /// Connections closed for a protocol violation (e.g. a user frame to a reserved channel).
    closed_protocol,
    /// Handshakes refused (other cluster, other version, self).
    closed_refused,
    /// Connections closed for an unfinished handshake or frame.
    closed_timeout,
    /// Connections to peers that fell silent.
    closed_silent,
    /// Connections closed by TLS: a failed handshake, a certificate refused
    /// (by either side), or a peer without TLS talking to this TLS node or
    /// the reverse.
    closed_tls,
    /// Inbound connections refused over the connection limit.
    refused_connections,
    /// Outbound connections this node closed because they were unused
    /// (`Timeouts::idle`) or least recently used at the outbound cap
    /// (`NodeConfig::max_outbound`); the next send reconnects.
    closed_idle,
    /// Handler panics caught (sync or async); each was answered with
    /// `HandlerPanicked` when a reply was expected.
    handler_panics,
    /// Messages of this node whose bytes never left it (connection refused,
    /// still connecting, or still queued when it failed), sent again to the
    /// next provider.
    rerouted,
    /// Inbound messages that waited in the async-handler queue (cap reached).
    overload_queued,
    /// Inbound requests refused with `Backpressure` (async-handler queue full).
    overload_refused,
    /// Inbound one-way messages dropped (async-handler queue full).
    overload_dropped,
    /// Inbound messages over their channel's rate limit: requests answered
    /// `RateLimited`, one-way messages dropped.
    rate_limited,
    /// Circuit breakers (of this node's requests, per peer) that opened.
    breaker_opened,
    /// Circuit breakers that went half-open (a probe request let through).
    breaker_half_open,
    /// Circuit breakers that closed again (the probe succeeded).
    breaker_closed,
    /// Queued requests not run because their caller's connection closed
    /// while they waited.
    overload_abandoned,
    /// Inbound requests whose deadline passed before their handler started
    /// (arrived late, or waited in the async-handler queue): never run,
    /// never answered (their caller has timed out).
    deadline_expired,
    /// `call`/`notify`/`publish` failures reported after the send returned.
    send_failures,
    /// Inbound requests refused with `Backpressure` because the consumer of
    /// their channel's watch fell behind (its queue was full).
    watch_refused,
    /// Inbound one-way messages dropped because the consumer of their
    /// channel's watch fell behind (its queue was full).
    watch_dropped,
}

impl Counters {
    pub(crate) fn inc(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_documentation_as_help() {
        for (name, _) in Snapshot::default().fields() {
            let help = Snapshot::help(name).unwrap();
            assert!(
                help.len() > 10 && !help.starts_with(' '),
                "{name}: {help:?}"
            );
        }
        assert_eq!(Snapshot::help("frames_in"), Some("Frames received."));
        assert!(Snapshot::help("writes")
            .unwrap()
            .contains("write, so this grows"));
        assert_eq!(Snapshot::help("nope"), None);
    }
}
