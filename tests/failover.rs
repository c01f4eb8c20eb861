//! Nothing deliverable is lost on failover: a message whose bytes never
//! left the caller (connection refused, still connecting, still queued when
//! the connection failed) goes to the next provider within the same
//! timeout; only requests that may have reached the peer fail with
//! `PeerLost`. A dial failure marks the peer down on every shard.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::etcd::Etcd;
use common::fixed::{caller, dead_peer, peer_of};
use common::procs::Server;
use common::{burst, pong_server, small, wait_until, SETTLE};
use domi::{BusError, Channel, Handler, Node, NodeId, SendFailure, SendOp};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(3);

/// A caller whose table lists `dead` providers (nothing listens at their
/// addresses) next to the live `server`.
fn caller_with_dead_peers(
    server: &Node,
    dead: &[u16],
    shards: usize,
    hook: Option<Arc<Mutex<Vec<SendFailure>>>>,
) -> Node {
    let mut peers = vec![peer_of(server)];
    peers.extend(dead.iter().map(|&id| dead_peer(id, &[CH], server)));
    let mut b = caller("caller", shards, peers);
    if let Some(seen) = hook {
        b = b.on_send_error(move |f| seen.lock().unwrap().push(f.clone()));
    }
    b.start().unwrap()
}

#[test]
fn requests_queued_on_a_refused_connection_go_to_the_next_provider() {
    let (server, handled) = pong_server("live", CH);
    let caller = caller_with_dead_peers(&server, &[900, 901], 2, None);
    // Every shard sends at once, so requests queue on the dead peers'
    // connections before their dials fail.
    let tasks: Vec<_> = (0..2)
        .map(|shard| {
            let caller = caller.clone();
            std::thread::spawn(move || burst(&caller, shard, CH, 300, T).0)
        })
        .collect();
    for t in tasks {
        for r in t.join().unwrap() {
            assert_eq!(r.as_deref(), Ok(&b"pong"[..]));
        }
    }
    assert_eq!(handled.load(Ordering::SeqCst), 600);
    let s = caller.stats();
    assert!(s.rerouted > 0, "{s:?}");
    assert_eq!(s.peer_lost, 0);
    // Both shards skip the dead peers now, whichever saw the dial fail.
    for shard in 0..2 {
        let r = caller
            .spawn_on(
                shard,
                |bus| async move { bus.request(CH, b"ping", T).await },
            )
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(r.as_deref(), Ok(&b"pong"[..]));
    }
}

#[test]
fn a_dial_failure_on_one_shard_keeps_every_shard_off_the_peer() {
    let (server, _) = pong_server("live", CH);
    let caller = caller_with_dead_peers(&server, &[900], 2, None);
    let ok = |shard: usize| {
        let (results, _) = burst(&caller, shard, CH, 20, T);
        results.iter().filter(|r| r.is_ok()).count()
    };
    // Shard 0 alone meets the dead peer: its dial fails, its requests move.
    assert_eq!(ok(0), 20);
    let rerouted = caller.stats().rerouted;
    assert!(rerouted > 0);
    // Shard 1 never tried it, yet skips it: nothing of its is re-routed.
    assert_eq!(ok(1), 20);
    assert_eq!(caller.stats().rerouted, rerouted);
}

#[test]
fn notify_and_call_are_rerouted_and_unroutable_ones_reported() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = small("live")
        .subscribe(
            CH,
            Handler::sync(move |req| {
                c.fetch_add(1, Ordering::SeqCst);
                let _ = req.reply(b"re");
            }),
        )
        .start()
        .unwrap();
    let failures: Arc<Mutex<Vec<SendFailure>>> = Arc::default();
    let caller = caller_with_dead_peers(&server, &[900], 1, Some(failures.clone()));
    for _ in 0..50 {
        caller.notify(CH, b"n").unwrap();
        caller.call(CH, b"c", Channel(7)).unwrap();
    }
    wait_until("all 100 messages to reach the live provider", T, || {
        count.load(Ordering::SeqCst) == 100
    });
    assert!(caller.stats().rerouted > 0);
    assert!(failures.lock().unwrap().is_empty());
    // The dead peer is marked down now: a publish skips it and says so.
    caller.publish(CH, b"p").unwrap();
    wait_until("the skipped subscriber to be reported", T, || {
        let f = failures.lock().unwrap();
        f.len() == 1 && f[0].op == SendOp::Publish && f[0].peer == NodeId::new(900)
    });
    wait_until("the live subscriber's copy", T, || {
        count.load(Ordering::SeqCst) == 101
    });

    // A publish copy for a dead peer not yet known down is never sent
    // elsewhere (every subscriber has its own copy): it is reported.
    let failures: Arc<Mutex<Vec<SendFailure>>> = Arc::default();
    let caller = caller_with_dead_peers(&server, &[900], 1, Some(failures.clone()));
    let before = count.load(Ordering::SeqCst);
    caller.publish(CH, b"p").unwrap();
    wait_until("the lost publish copy to be reported", T, || {
        failures
            .lock()
            .unwrap()
            .iter()
            .any(|f| f.op == SendOp::Publish)
    });
    let f = failures.lock().unwrap()[0].clone();
    assert_eq!(f.peer, Some(NodeId::new(900).unwrap()));
    assert_eq!(
        f.error,
        BusError::PeerLost {
            peer: NodeId::new(900).unwrap()
        }
    );
    wait_until("the live subscriber's copy", T, || {
        count.load(Ordering::SeqCst) == before + 1
    });
    assert_eq!(failures.lock().unwrap().len(), 1);
}

#[test]
fn a_notify_with_no_provider_left_reaches_the_hook() {
    let (template, _) = pong_server("template", CH);
    let failures: Arc<Mutex<Vec<SendFailure>>> = Arc::default();
    let seen = failures.clone();
    // Two providers listed, neither listening: nothing can take a notify.
    let peers = vec![
        dead_peer(900, &[CH], &template),
        dead_peer(901, &[CH], &template),
    ];
    let caller = caller("caller", 1, peers)
        .on_send_error(move |f| seen.lock().unwrap().push(f.clone()))
        .start()
        .unwrap();
    for _ in 0..4 {
        caller.notify(CH, b"n").unwrap();
    }
    wait_until("the failures to be reported", T, || {
        failures.lock().unwrap().len() == 4
    });
    for f in failures.lock().unwrap().iter() {
        assert_eq!(f.op, SendOp::Notify);
        assert!(
            matches!(f.error, BusError::NoProvider { .. }),
            "{:?}",
            f.error
        );
    }
}

/// The scenario: three providers on etcd, one SIGKILLed; fresh
/// callers started right after (their tables still list the dead node until
/// its lease expires) send 3,000 requests each with no error.
#[test]
fn fresh_callers_after_a_sigkill_see_no_errors() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let args = ["--etcd", ep.as_str(), "--cluster", "failover"];
    let mut servers: Vec<Server> = (0..3)
        .map(|i| Server::start_with(&format!("s{i}"), &args))
        .collect();
    wait_until("three records", SETTLE, || {
        etcd.get_prefix("/domi/failover/nodes/").len() == 3
    });
    let mut victim = servers.remove(0);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    for round in 0..3 {
        let client = Node::builder(format!("client{round}"))
            .shards(1)
            .small()
            .cluster("failover")
            .etcd([ep.clone()])
            .start()
            .unwrap();
        if round == 0 {
            // The dead node's record is still there (its lease lives on).
            client.wait_for_providers(CH, 3, SETTLE).unwrap();
        } else {
            client.wait_for_providers(CH, 2, SETTLE).unwrap();
        }
        let (results, _) = burst(&client, 0, CH, 3000, T);
        let results: Vec<_> = results.into_iter().filter_map(Result::err).collect();
        assert!(results.is_empty(), "round {round}: {results:?}");
        if round == 0 {
            let s = client.stats();
            assert!(s.rerouted > 0, "the dead node was tried: {s:?}");
        }
        client.stop();
    }
    drop(servers);
}

#[test]
fn a_dropped_request_async_frees_its_slot_at_once() {
    let server = small("server")
        .subscribe(
            CH,
            Handler::asynchronous(|mut req| async move {
                if req.payload() == b"hold" {
                    glommio::timer::sleep(Duration::from_secs(30)).await;
                }
                let _ = req.reply(b"pong");
            }),
        )
        .start()
        .unwrap();
    let client = small("client")
        .configure(|c| c.max_pending = 4)
        .peer(server.local_addr())
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    let held: Vec<_> = (0..4)
        .map(|_| client.request_async(CH, b"hold", Duration::from_secs(60)))
        .collect();
    wait_until("the held requests to take every slot", T, || {
        matches!(
            client.request(CH, b"x", T),
            Err(BusError::Backpressure { .. })
        )
    });
    drop(held);
    wait_until("the slots to be freed", T, || {
        client.request(CH, b"x", T).is_ok()
    });
    // The same for a request dropped on a shard (`LocalBus::request`).
    let after = client
        .spawn_on(0, |bus| async move {
            let held = bus.request(CH, b"hold", Duration::from_secs(60));
            let gave_up = async {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                Err(BusError::ShuttingDown)
            };
            let first = futures_lite::future::or(held, gave_up).await;
            // The held request's future is gone: its slot is free again.
            // Four requests fit in `max_pending` again; all four stay waiting
            // (none refused with Backpressure) while they are held here.
            let mut full: Vec<_> = (0..4)
                .map(|_| Box::pin(bus.request(CH, b"hold", Duration::from_secs(60))))
                .collect();
            let mut polled = Vec::new();
            for f in full.iter_mut() {
                polled.push(futures_lite::future::poll_once(f).await.is_none());
            }
            (first, polled)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(after.0, Err(BusError::ShuttingDown));
    assert_eq!(after.1, vec![true; 4], "all four slots were free again");
}
