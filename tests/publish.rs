//! `publish` reaches paused subscribers: pause takes a node out of the
//! round-robin of requests, but a broadcast still reaches every node
//! subscribed to the channel that is up and not draining.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{pong_server, small, wait_until, SETTLE};
use domi::Channel;

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(3);

#[test]
fn a_broadcast_reaches_a_paused_subscriber_and_requests_do_not() {
    let (a, got_a) = pong_server("a", CH);
    let (b, got_b) = pong_server("b", CH);
    let client = small("client")
        .peers([a.local_addr(), b.local_addr()])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    b.pause();
    wait_until("the client to see b paused", SETTLE, || {
        client.peers().providers(CH) == [a.id()]
    });
    assert_eq!(client.peers().subscribers(CH).len(), 2);
    client.publish(CH, b"news").unwrap();
    wait_until("both subscribers to get the broadcast", T, || {
        got_a.load(Ordering::SeqCst) == 1 && got_b.load(Ordering::SeqCst) == 1
    });
    for _ in 0..10 {
        client.request(CH, b"q", T).unwrap();
    }
    assert_eq!(
        got_b.load(Ordering::SeqCst),
        1,
        "no request reached paused b"
    );
    assert_eq!(got_a.load(Ordering::SeqCst), 11);
}
