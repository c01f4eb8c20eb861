//! Unused outbound connections: they close after `Timeouts::idle` (never
//! while a request waits on them) and the next send reconnects; at the
//! outbound cap, dialling closes the least recently used one.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use domi::{Channel, Handler, Node};

const T: Duration = Duration::from_secs(5);

fn closed_idle(node: &Node) -> u64 {
    node.stats().closed_idle
}

#[test]
fn an_unused_connection_closes_and_the_next_send_reconnects() {
    const CH: Channel = Channel(50);
    const SLOW: Channel = Channel(51);
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let server = small("server")
        .subscribe(
            CH,
            Handler::sync(move |req| {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = req.reply(b"pong");
            }),
        )
        .subscribe(
            SLOW,
            Handler::asynchronous(|mut req| async move {
                glommio::timer::sleep(Duration::from_millis(1500)).await;
                let _ = req.reply(b"late");
            }),
        )
        .start()
        .unwrap();
    let client = small("client")
        .peer(server.local_addr())
        .configure(|c| c.timeouts.idle = Duration::from_secs(1))
        .start()
        .unwrap();
    client.wait_for_provider(CH, T).unwrap();
    assert_eq!(client.request(CH, b"x", T), Ok(b"pong".to_vec()));
    assert_eq!(connected(&client), vec![server.id()]);

    // Unused for 1 s: closed, by this node, without marking the peer down.
    wait_until("the unused connection to close", T, || {
        connected(&client).is_empty()
    });
    assert_eq!(closed_idle(&client), 1);
    assert_eq!(client.stats().bad_closes, 0);
    assert_eq!(server.stats().bad_closes, 0, "the server saw a clean close");

    // The next send dials again, at once (no reconnect backoff).
    assert_eq!(client.request(CH, b"x", T), Ok(b"pong".to_vec()));
    assert_eq!(connected(&client), vec![server.id()]);
    assert_eq!(handled.load(Ordering::SeqCst), 2);

    // A request waiting one and a half idle periods keeps its connection.
    let closed = closed_idle(&client);
    assert_eq!(client.request(SLOW, b"x", T), Ok(b"late".to_vec()));
    assert_eq!(closed_idle(&client), closed);

    // So does a `call`, whose reply comes back on it (for up to twice the
    // idle time: a call's handler need not answer).
    const REPLY: Channel = Channel(52);
    let replies = Arc::new(AtomicUsize::new(0));
    let r = replies.clone();
    client
        .subscribe(
            REPLY,
            Handler::sync(move |req| {
                assert_eq!(req.payload(), b"late");
                r.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    client.call(SLOW, b"x", REPLY).unwrap();
    wait_until("the late call's reply", T, || {
        replies.load(Ordering::SeqCst) == 1
    });
    assert_eq!(closed_idle(&client), closed);
    wait_until("the connection to close once answered", T, || {
        connected(&client).is_empty()
    });
    assert_eq!(closed_idle(&client), closed + 1);

    // A call its handler never answers holds the connection for twice the
    // idle time, not for good.
    const SILENT: Channel = Channel(53);
    server.subscribe(SILENT, Handler::sync(|_| {})).unwrap();
    client.wait_for_provider(SILENT, T).unwrap();
    client.call(SILENT, b"x", REPLY).unwrap();
    wait_until("the connection to reopen", T, || {
        connected(&client) == vec![server.id()]
    });
    wait_until("the unanswered call's connection to close", T, || {
        connected(&client).is_empty()
    });
    assert_eq!(closed_idle(&client), closed + 2);
    assert_eq!(replies.load(Ordering::SeqCst), 1);
}

#[test]
fn at_the_outbound_cap_the_least_recently_used_connection_closes() {
    let servers: Vec<_> = (0..3)
        .map(|i| pong_server(&format!("s{i}"), Channel(60 + i)))
        .collect();
    let client = small("client")
        .peers(servers.iter().map(|(s, _)| s.local_addr()))
        .configure(|c| c.max_outbound = 2)
        .start()
        .unwrap();
    for i in 0..3 {
        client.wait_for_provider(Channel(60 + i), T).unwrap();
    }
    let id = |i: usize| servers[i].0.id();
    let ask = |i: u16| client.request(Channel(60 + i), b"x", T);
    assert_eq!(ask(0), Ok(b"pong".to_vec()));
    assert_eq!(ask(1), Ok(b"pong".to_vec()));
    let mut open = connected(&client);
    open.sort();
    let mut first_two = vec![id(0), id(1)];
    first_two.sort();
    assert_eq!(open, first_two);

    // A third peer: one of the two closes to make room.
    assert_eq!(ask(2), Ok(b"pong".to_vec()));
    let open = connected(&client);
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(open.contains(&id(2)));
    assert_eq!(closed_idle(&client), 1);

    // Every server still answers; the cap holds throughout.
    for round in 0..3 {
        for i in 0..3 {
            assert_eq!(ask(i), Ok(b"pong".to_vec()), "round {round}, server {i}");
            assert!(connected(&client).len() <= 2);
        }
    }
    assert_eq!(client.stats().bad_closes, 0);
    for (s, handled) in &servers {
        assert_eq!(handled.load(Ordering::SeqCst), 4, "{}", s.id());
    }
}
