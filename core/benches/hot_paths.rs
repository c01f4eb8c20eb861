//! Micro-benchmarks of the pure hot paths, in ns: header decode, frame
//! encode, provider selection. Run: `cargo bench -p domi-core --bench hot_paths`
//! (part of `make bench`).

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use domi_core::frame::{self, Decoded, FrameKind, Meta, PROTOCOL_VERSION};
use domi_core::route::{self, Peer, PeerTable};
use domi_core::{Channel, NodeId, NodeInfo, NodeState};

fn meta() -> Meta {
    Meta {
        kind: FrameKind::Request,
        channel: Channel(50),
        reply_channel: Channel(0),
        source: NodeId::new(3).unwrap(),
        correlation: 42,
        ext: domi_core::frame::Ext::NONE,
    }
}

fn codec(c: &mut Criterion) {
    let mut buf = Vec::new();
    frame::encode(&mut buf, &meta(), &[7u8; 64]);
    c.bench_function("decode 64 B frame", |b| {
        b.iter(|| match frame::decode(black_box(&buf), 1 << 24) {
            Ok(Decoded::Frame { frame, .. }) => frame.payload.len(),
            _ => 0,
        })
    });
    let payload = [7u8; 64];
    let mut out = Vec::with_capacity(1 << 16);
    c.bench_function("encode 64 B frame", |b| {
        b.iter(|| {
            if out.len() > 60_000 {
                out.clear();
            }
            frame::encode(&mut out, black_box(&meta()), black_box(&payload));
        })
    });
}

fn table(peers: u16, channels_each: u16) -> PeerTable {
    let mut map = BTreeMap::new();
    for id in 0..peers {
        map.insert(
            NodeId::new(id).unwrap(),
            Peer {
                info: NodeInfo {
                    version: PROTOCOL_VERSION,
                    cluster: "c".into(),
                    id: NodeId::new(id).unwrap(),
                    name: format!("n{id}"),
                    instance: id as u64,
                    channels: (0..channels_each).map(|c| Channel(c + (id % 8))).collect(),
                    state: NodeState::Serving,
                },
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + id)),
                up: true,
            },
        );
    }
    PeerTable::from_peers(1, map)
}

fn selection(c: &mut Criterion) {
    for (peers, chans) in [(3u16, 4u16), (1024, 16)] {
        let t = table(peers, chans);
        let mut cursor = 0usize;
        c.bench_function(&format!("select provider ({peers} peers)"), |b| {
            b.iter(|| {
                let p = t.providers(black_box(Channel(3)));
                route::select(p, &mut cursor, |_| false)
            })
        });
    }
}

/// The per-message cost of the rate-limit check: no channel limited (the
/// default), and an admitted message on a limited channel (one CAS).
fn limiter(c: &mut Criterion) {
    use domi_core::limiter::{Limits, RateLimit};
    let none = Limits::default();
    let now = std::time::Instant::now();
    c.bench_function("rate limit check, no limits", |b| {
        b.iter(|| none.admit(black_box(Channel(5)), || now))
    });
    let limited = Limits::new(&[(
        Channel(5),
        RateLimit {
            per_second: domi_core::limiter::MAX_RATE,
            burst: u32::MAX,
        },
    )]);
    c.bench_function("rate limit check, limited channel", |b| {
        b.iter(|| limited.admit(black_box(Channel(5)), std::time::Instant::now))
    });
}

/// The per-request cost of a closed circuit breaker: counting an outcome
/// (the check itself, closed, reads one field).
fn breaker(c: &mut Criterion) {
    use domi_core::breaker::{Breaker, BreakerConfig, Outcome};
    let now = std::time::Instant::now();
    let mut b = Breaker::new(BreakerConfig::default(), now);
    c.bench_function("circuit breaker: check and count a success", |bench| {
        bench.iter(|| {
            let t = std::time::Instant::now();
            black_box(b.allow(t));
            black_box(b.record(t, t, Outcome::Success))
        })
    });
}

/// What timing one handler run costs: two reads of the shard's clock and
/// one histogram update (what `/metrics`' handler durations cost per message).
fn telemetry(c: &mut Criterion) {
    let clock = quanta::Clock::new();
    let mut t = domi_core::telemetry::Telemetry::default();
    c.bench_function("telemetry: time and count a handler run", |b| {
        b.iter(|| {
            let t0 = clock.raw();
            let took = clock.delta(t0, clock.raw());
            t.handler(black_box(Channel(50)), took);
        })
    });
    c.bench_function("telemetry: two raw clock reads", |b| {
        b.iter(|| {
            let t0 = clock.raw();
            black_box(clock.raw().wrapping_sub(t0))
        })
    });
    let mut h = domi_core::telemetry::Histogram::default();
    c.bench_function("telemetry: one histogram observation", |b| {
        b.iter(|| h.observe(black_box(std::time::Duration::from_nanos(700))))
    });
    let mut t = domi_core::telemetry::Telemetry::default();
    c.bench_function("telemetry: count a request (std clock)", |b| {
        b.iter(|| {
            let started = std::time::Instant::now();
            t.request(
                black_box(Channel(50)),
                started.elapsed(),
                domi_core::telemetry::Outcome::Ok,
            );
        })
    });
}

criterion_group!(benches, codec, selection, limiter, breaker, telemetry);
criterion_main!(benches);
