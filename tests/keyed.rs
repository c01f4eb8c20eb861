//! Keyed and direct routing: a key goes to the same provider every time
//! while the providers stay the same; when one leaves, only its keys move;
//! `request_to` reaches exactly the node asked for.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{small, wait_until, SETTLE};
use domi::{BusError, Channel, Handler, Node};

const KV: Channel = Channel(95);
const OTHER: Channel = Channel(96);
const T: Duration = Duration::from_secs(5);

fn provider(name: &'static str) -> Node {
    small(name)
        .subscribe(
            KV,
            Handler::sync(move |req| {
                let _ = req.reply(name.as_bytes());
            }),
        )
        .start()
        .unwrap()
}

fn owners(client: &Node, keys: u32) -> HashMap<u32, Vec<u8>> {
    (0..keys)
        .map(|k| {
            let key = format!("user-{k}");
            let owner = client.request_keyed(KV, key.as_bytes(), b"get", T).unwrap();
            (k, owner)
        })
        .collect()
}

#[test]
fn keys_stay_with_their_provider_and_only_a_leavers_keys_move() {
    let a = provider("a");
    let b = provider("b");
    let c = provider("c");
    let client = small("client")
        .peer(a.local_addr())
        .peer(b.local_addr())
        .peer(c.local_addr())
        .start()
        .unwrap();
    client.wait_for_providers(KV, 3, SETTLE).unwrap();

    let before = owners(&client, 300);
    assert_eq!(
        owners(&client, 300),
        before,
        "keys moved while nothing changed"
    );
    for name in [&b"a"[..], b"b", b"c"] {
        let n = before.values().filter(|o| o.as_slice() == name).count();
        assert!(n > 50, "keys spread over every provider: {n} on {name:?}");
    }

    b.stop();
    wait_until("the client sees b leave", SETTLE, || {
        client.peers().providers(KV).len() == 2
    });
    let after = owners(&client, 300);
    for (k, owner) in &before {
        if owner.as_slice() == b"b" {
            assert_ne!(after[k].as_slice(), b"b");
        } else {
            assert_eq!(&after[k], owner, "key {k} moved though its provider stayed");
        }
    }
}

#[test]
fn request_to_reaches_exactly_that_node() {
    let a = provider("a");
    let b = provider("b");
    let client = small("client")
        .peer(a.local_addr())
        .peer(b.local_addr())
        .start()
        .unwrap();
    client.wait_for_providers(KV, 2, SETTLE).unwrap();
    for _ in 0..20 {
        assert_eq!(client.request_to(b.id(), KV, b"x", T).unwrap(), b"b");
        assert_eq!(client.request_to(a.id(), KV, b"x", T).unwrap(), b"a");
    }
    // A node that does not serve the channel is no provider of it.
    assert!(matches!(
        client.request_to(a.id(), OTHER, b"x", T),
        Err(BusError::NoProvider { channel: OTHER })
    ));
}
