//! `publish` reaches paused subscribers: pause takes a node out of the
//! round-robin of requests, but a broadcast still reaches every node
//! subscribed to the channel that is up and not draining.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::{Channel, Handler, Node};

const CH: Channel = Channel(50);
const T: Duration = Duration::from_secs(3);

fn counting(name: &str) -> (Node, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    let node = small(name)
        .subscribe(
            CH,
            Handler::sync(move |req| {
                c.fetch_add(1, Ordering::SeqCst);
                let _ = req.reply(b"ok");
            }),
        )
        .start()
        .unwrap();
    (node, n)
}

#[test]
fn a_broadcast_reaches_a_paused_subscriber_and_requests_do_not() {
    let (a, got_a) = counting("a");
    let (b, got_b) = counting("b");
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
