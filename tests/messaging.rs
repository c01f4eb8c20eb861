//! Request/reply, call, notify, publish and round-robin between real nodes
//! over loopback TCP.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use domi::{BusError, Channel, Handler, NodeId};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(5);

#[test]
fn request_reply_between_two_nodes() {
    let (server, handled) = pong_server("server", CH);
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    assert_eq!(client.request(CH, b"ping", T).unwrap(), b"pong");
    let fut = client.request_async(CH, b"ping", T);
    assert_eq!(futures_lite::future::block_on(fut).unwrap(), b"pong");
    assert_eq!(handled.load(Ordering::SeqCst), 2);
    assert_eq!(client.peers().get(server.id()).unwrap().info.name, "server");
}

#[test]
fn request_from_a_shard_task() {
    let (server, _) = pong_server("server", CH);
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    let replies = client
        .spawn_on(0, |bus| async move {
            let mut ok = 0;
            for _ in 0..100 {
                if bus.request(CH, b"x", T).await.unwrap() == b"pong" {
                    ok += 1;
                }
            }
            ok
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(replies, 100);
}

#[test]
fn call_delivers_the_reply_to_the_reply_channel() {
    const REPLY: Channel = Channel(77);
    let (server, _) = pong_server("server", CH);
    type Seen = Vec<(NodeId, Channel, Vec<u8>)>;
    let got: Arc<Mutex<Seen>> = Arc::default();
    let g = got.clone();
    let client = small("client")
        .peer(server.local_addr())
        .subscribe(
            REPLY,
            Handler::sync(move |req| {
                g.lock()
                    .unwrap()
                    .push((req.source(), req.channel(), req.payload().to_vec()));
            }),
        )
        .start()
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    client.call(CH, b"ping", REPLY).unwrap();
    wait_until("the call's reply", T, || !got.lock().unwrap().is_empty());
    assert_eq!(
        got.lock().unwrap()[0],
        (server.id(), REPLY, b"pong".to_vec())
    );
}

#[test]
fn notify_reaches_one_provider_and_publish_reaches_all() {
    let servers: Vec<_> = (0..3).map(|i| pong_server(&format!("s{i}"), CH)).collect();
    let client = small("client")
        .peers(servers.iter().map(|(n, _)| n.local_addr()))
        .start()
        .unwrap();
    client.wait_for_providers(CH, 3, SETTLE).unwrap();
    let counts: Vec<_> = servers.iter().map(|(_, c)| c).collect();

    client.notify(CH, b"one").unwrap();
    wait_until("the notify", T, || total(&counts) == 1);

    client.publish(CH, b"all").unwrap();
    wait_until("the publish", T, || total(&counts) == 4);
    // Every server got the publish; exactly one also got the notify.
    let mut each: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    each.sort();
    assert_eq!(each, vec![1, 1, 2]);
}

#[test]
fn round_robin_over_three_servers_is_exactly_even() {
    let servers: Vec<_> = (0..3).map(|i| pong_server(&format!("s{i}"), CH)).collect();
    let client = small("client")
        .peers(servers.iter().map(|(n, _)| n.local_addr()))
        .start()
        .unwrap();
    client.wait_for_providers(CH, 3, SETTLE).unwrap();
    for _ in 0..300 {
        client.request(CH, b"ping", T).unwrap();
    }
    for (node, handled) in &servers {
        assert_eq!(handled.load(Ordering::SeqCst), 100, "{}", node.id());
    }
}

#[test]
fn a_node_serving_the_channel_takes_its_turn_without_tcp() {
    let (server, remote) = pong_server("server", CH);
    let local = Arc::new(AtomicUsize::new(0));
    let l = local.clone();
    let me = small("me")
        .peer(server.local_addr())
        .subscribe(
            CH,
            Handler::sync(move |req| {
                l.fetch_add(1, Ordering::SeqCst);
                let _ = req.reply(b"local");
            }),
        )
        .start()
        .unwrap();
    me.wait_for_providers(CH, 2, SETTLE).unwrap();
    let mut replies = Vec::new();
    for _ in 0..10 {
        replies.push(me.request(CH, b"?", T).unwrap());
    }
    assert_eq!(local.load(Ordering::SeqCst), 5);
    assert_eq!(remote.load(Ordering::SeqCst), 5);
    assert_eq!(
        replies.iter().filter(|r| r.as_slice() == b"local").count(),
        5
    );
}

#[test]
fn async_handlers_reply_later_and_subscriptions_change_at_run_time() {
    let server = small("server").start().unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    server
        .subscribe(
            CH,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                let mut out = req.payload().to_vec();
                out.reverse();
                let _ = req.reply(&out);
            }),
        )
        .unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    assert_eq!(client.request(CH, b"abc", T).unwrap(), b"cba");
    assert!(server.unsubscribe(CH));
    wait_until("the unsubscribe to reach the client", SETTLE, || {
        client.peers().providers(CH).is_empty()
    });
    assert_eq!(
        client.request(CH, b"abc", T),
        Err(BusError::NoProvider { channel: CH })
    );
}

#[test]
fn a_handler_that_does_not_reply_fails_fast_and_a_slow_one_times_out() {
    const SILENT: Channel = Channel(60);
    const SLOW: Channel = Channel(61);
    let server = small("server")
        .subscribe(SILENT, Handler::sync(|_req| {}))
        .subscribe(
            SLOW,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_secs(2)).await;
                let _ = req.reply(b"late");
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(SLOW, SETTLE).unwrap();
    assert!(matches!(
        client.request(SILENT, b"", T),
        Err(BusError::Remote {
            code: domi::ErrorCode::NoReply,
            ..
        })
    ));
    let t = Duration::from_millis(100);
    assert_eq!(
        client.request(SLOW, b"", t),
        Err(BusError::Timeout {
            channel: SLOW,
            after: t
        })
    );
}

#[test]
fn reserved_channels_and_unknown_channels_are_typed_errors() {
    let (server, _) = pong_server("server", CH);
    let reserved = Channel(65500);
    assert_eq!(
        server.subscribe(reserved, Handler::sync(|_| {})),
        Err(BusError::ReservedChannel { channel: reserved })
    );
    assert_eq!(
        server.request(Channel(65535), b"", T),
        Err(BusError::ReservedChannel {
            channel: Channel(65535)
        })
    );
    assert_eq!(
        server.notify(reserved, b""),
        Err(BusError::ReservedChannel { channel: reserved })
    );
    assert_eq!(
        server.call(CH, b"", reserved),
        Err(BusError::ReservedChannel { channel: reserved })
    );
    assert_eq!(
        server.request(Channel(9), b"", T),
        Err(BusError::NoProvider {
            channel: Channel(9)
        })
    );
    assert!(matches!(
        domi::Node::builder("bad")
            .small()
            .subscribe(reserved, Handler::sync(|_| {}))
            .start(),
        Err(domi::StartError::Core(domi_core::StartError::Subscribe(
            BusError::ReservedChannel { .. }
        )))
    ));
}

#[test]
fn payload_of_exactly_the_maximum_passes_and_one_more_byte_does_not() {
    let server = small("server")
        .subscribe(
            CH,
            Handler::sync(|req| {
                let n = req.payload().len() as u32;
                let _ = req.reply(&n.to_le_bytes());
            }),
        )
        .start()
        .unwrap();
    let client = small("client").peer(server.local_addr()).start().unwrap();
    client.wait_for_provider(CH, SETTLE).unwrap();
    let max = domi::DEFAULT_MAX_PAYLOAD as usize;
    let big = vec![1u8; max];
    let reply = client.request(CH, &big, Duration::from_secs(20)).unwrap();
    assert_eq!(u32::from_le_bytes(reply.try_into().unwrap()) as usize, max);
    // Heartbeats may arrive meanwhile: count what reached the handler.
    let before = server.stats().handled;
    let too_big = vec![1u8; max + 1];
    assert_eq!(
        client.request(CH, &too_big, T),
        Err(BusError::PayloadTooLarge {
            len: max + 1,
            max: max as u32
        })
    );
    assert_eq!(
        client.notify(CH, &too_big),
        Err(BusError::PayloadTooLarge {
            len: max + 1,
            max: max as u32
        })
    );
    assert_eq!(server.stats().handled, before, "nothing was sent");
    assert_eq!(client.stats().sent, 1, "only the first request left");
}

#[test]
fn nodes_of_another_cluster_are_refused() {
    let server = small("server")
        .cluster("blue")
        .subscribe(CH, Handler::sync(|req| drop(req.reply(b"x"))))
        .start()
        .unwrap();
    let client = small("client")
        .cluster("green")
        .peer(server.local_addr())
        .start()
        .unwrap();
    assert_eq!(
        client.wait_for_provider(CH, Duration::from_millis(500)),
        Err(BusError::NoProvider { channel: CH })
    );
    assert_eq!(client.peers().len(), 1, "only itself");
}

#[test]
fn pause_is_announced_to_static_peers_and_resume_brings_the_node_back() {
    let (a, handled_a) = pong_server("a", CH);
    let (b, handled_b) = pong_server("b", CH);
    let client = small("client")
        .peers([a.local_addr(), b.local_addr()])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    a.pause();
    wait_until("the client to see a paused", SETTLE, || {
        client.peers().providers(CH) == [b.id()]
    });
    let before = handled_a.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(client.request(CH, b"x", T).unwrap(), b"pong");
    }
    assert_eq!(handled_a.load(Ordering::SeqCst), before);
    assert!(handled_b.load(Ordering::SeqCst) >= 20);
    // A paused node still sends its own requests and receives the replies.
    client.pause();
    assert_eq!(client.request(CH, b"x", T).unwrap(), b"pong");
    client.resume();
    a.resume();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
}

#[test]
fn handlers_subscribe_and_unsubscribe_from_their_shard() {
    const OPEN: Channel = Channel(60);
    const CLOSE: Channel = Channel(61);
    const LATE: Channel = Channel(62);
    let server = small("self-serve")
        .subscribe(
            OPEN,
            Handler::sync(|req| {
                let r = req
                    .bus()
                    .subscribe(LATE, Handler::sync(|req| drop(req.reply(b"late"))));
                let _ = req.reply(if r.is_ok() { b"opened" } else { b"failed" });
            }),
        )
        .subscribe(
            CLOSE,
            Handler::sync(|req| {
                let was = req.bus().unsubscribe(LATE);
                let _ = req.reply(if was { b"closed" } else { b"absent" });
            }),
        )
        .start()
        .unwrap();
    let client = small("asker").peer(server.local_addr()).start().unwrap();
    client.wait_for_providers(OPEN, 1, SETTLE).unwrap();
    client.wait_for_providers(CLOSE, 1, SETTLE).unwrap();
    assert_eq!(client.request(OPEN, b"", T).unwrap(), b"opened");
    client.wait_for_provider(LATE, SETTLE).unwrap();
    assert_eq!(client.request(LATE, b"", T).unwrap(), b"late");
    assert_eq!(client.request(CLOSE, b"", T).unwrap(), b"closed");
    wait_until("the unsubscription to reach the client", SETTLE, || {
        client.peers().providers(LATE).is_empty()
    });
    assert_eq!(client.request(CLOSE, b"", T).unwrap(), b"absent");
}
