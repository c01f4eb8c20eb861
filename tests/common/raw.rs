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
        id: NodeId::new(999).unwrap(),
        name: "raw".into(),
        instance: 12345,
        channels: vec![],
        state: NodeState::Serving,
    };
    let meta = Meta {
        kind: FrameKind::Control,
        channel: Channel::HELLO,
        reply_channel: Channel(0),
        source: NodeId::new(999).unwrap(),
        correlation: 0,
        ext: domi::frame::Ext::NONE,
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

/// One frame as raw bytes.
pub fn frame_bytes(
    kind: FrameKind,
    channel: Channel,
    source: NodeId,
    corr: u64,
    payload: &[u8],
) -> Vec<u8> {
    let meta = Meta {
        kind,
        channel,
        reply_channel: Channel(0),
        source,
        correlation: corr,
        ext: domi::frame::Ext::NONE,
    };
    let mut out = Vec::new();
    frame::encode(&mut out, &meta, payload);
    out
}

/// Reads one whole frame (header and payload) from a blocking stream.
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<(Meta, Vec<u8>)> {
    let mut header = [0u8; frame::HEADER_LEN];
    s.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let mut buf = header.to_vec();
    buf.resize(frame::HEADER_LEN + len, 0);
    s.read_exact(&mut buf[frame::HEADER_LEN..])?;
    match frame::decode(&buf, u32::MAX) {
        Ok(frame::Decoded::Frame { frame, .. }) => Ok((frame.meta, frame.payload.to_vec())),
        other => Err(std::io::Error::other(format!("bad frame: {other:?}"))),
    }
}

/// A hand-written "node" `id` of cluster `default` serving `channels`: it
/// answers every handshake, then reads and never writes again — a peer that
/// went silent without closing. Returns its address.
pub fn silent_server(id: NodeId, channels: Vec<Channel>) -> std::net::SocketAddr {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let channels = channels.clone();
            std::thread::spawn(move || {
                if read_frame(&mut s).is_err() {
                    return;
                }
                let info = NodeInfo {
                    version: frame::PROTOCOL_VERSION,
                    cluster: "default".into(),
                    id,
                    name: "silent".into(),
                    instance: 777,
                    channels,
                    state: NodeState::Serving,
                };
                let ack = frame_bytes(
                    FrameKind::Control,
                    Channel::HELLO_ACK,
                    id,
                    0,
                    &info.to_bytes(),
                );
                if s.write_all(&ack).is_err() {
                    return;
                }
                let mut sink = [0u8; 64 * 1024];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}
