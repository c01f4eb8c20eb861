//! A real network partition: one server runs in a network namespace of its
//! own, reached over a veth pair; the test cuts the link (no RST, packets
//! vanish), checks that requests fail over within the silence timeout, then
//! restores the link and checks the node is used again. Namespaces are
//! created and removed by the test; where they cannot be created (no root,
//! no `ip`), the test says so and skips.

mod common;

use std::time::{Duration, Instant};

use common::netns::Netns;
use common::procs::{example_path, Server};
use common::*;
use domi::{BusError, Channel};

const CH: Channel = Channel(50);

#[test]
fn a_partitioned_node_is_routed_around_and_heals() {
    let ns = match Netns::create(7) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("SKIPPED: cannot create network namespaces here: {e}");
            return;
        }
    };
    let far = Server::start_cmd(
        "far",
        ns.exec(example_path("server")),
        &["--tcp", "10.231.7.2:0", "--node-id", "961"],
    );
    let near = Server::start("near", 962);
    let client = small("client")
        .peers([far.addr, near.addr])
        .start()
        .unwrap();
    client.wait_for_providers(CH, 2, SETTLE).unwrap();
    for _ in 0..20 {
        client.request(CH, b"x", Duration::from_secs(5)).unwrap();
    }

    ns.cut();
    let cut = Instant::now();
    let mut late_failures = 0;
    let mut answered = 0;
    while cut.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        match client.request(CH, b"x", Duration::from_secs(5)) {
            Ok(_) => answered += 1,
            Err(BusError::PeerLost { .. }) | Err(BusError::Timeout { .. }) => {
                if t > cut + Duration::from_secs(4) {
                    late_failures += 1;
                }
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(answered > 0);
    assert_eq!(
        late_failures, 0,
        "within the timeout every request goes to the reachable node"
    );
    assert_eq!(
        client.peers().providers(CH),
        [domi::NodeId::new(near.id).unwrap()],
        "the far node is out of rotation"
    );

    ns.heal();
    wait_until("the far node to be back", Duration::from_secs(20), || {
        client.peers().providers(CH).len() == 2
    });
    // Round-robin over both again; every request is answered.
    for _ in 0..20 {
        client.request(CH, b"x", Duration::from_secs(5)).unwrap();
    }
    drop(far);
}
