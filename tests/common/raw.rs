//! Raw-socket helpers: speak the wire protocol by hand, as hostile or
//! foreign clients do.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use domi::frame::{self, FrameKind, Meta};
use domi::{Channel, NodeId, NodeInfo, NodeState};

/// A HELLO frame from node 999 of `cluster`, with no authentication block.
pub fn hello(cluster: &str) -> Vec<u8> {
    let info = NodeInfo {
        version: frame::PROTOCOL_VERSION,
        cluster: cluster.into(),
        id: NodeId(999),
        name: "raw".into(),
        instance: 12345,
        channels: vec![],
        state: NodeState::Serving,
    };
    let meta = Meta {
        kind: FrameKind::Control,
        channel: Channel::HELLO,
        reply_channel: Channel(0),
        source: NodeId(999),
        correlation: 0,
    };
    let mut out = Vec::new();
    frame::encode(&mut out, &meta, &info.to_bytes());
    out
}

/// Reads until the peer closes the connection; panics unless that happens
/// within `within` (plus a second of slack).
pub fn assert_closed_within(mut s: TcpStream, within: Duration) {
    s.set_read_timeout(Some(within + Duration::from_secs(2)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue, // an error frame may come first
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("connection not closed: {e}"),
        }
    }
    assert!(
        started.elapsed() <= within + Duration::from_secs(1),
        "closed after {:?}",
        started.elapsed()
    );
}
