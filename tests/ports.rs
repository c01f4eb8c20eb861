//! Nodes started at the same moment on port 0 each get a port of their own
//! (the kernel must not hand two of them the same ephemeral port while
//! neither listens yet).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use common::small;

#[test]
fn nodes_started_together_on_port_zero_get_distinct_ports() {
    for _round in 0..5 {
        let n = 32;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let builder = small(&format!("p{i}"));
                    barrier.wait();
                    builder.start()
                })
            })
            .collect();
        let nodes: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().unwrap().expect("every node starts"))
            .collect();
        let ports: BTreeSet<u16> = nodes.iter().map(|n| n.local_addr().port()).collect();
        assert_eq!(ports.len(), n, "{ports:?}");
        for node in nodes {
            node.stop();
        }
    }
}
