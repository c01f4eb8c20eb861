//! A membership that publishes a fixed peer table and never changes it: the
//! caller keeps routing by it whatever the peers announce, so a test can
//! make a caller route to a dead address, or to a node that paused after
//! the caller's table was made.

use std::net::SocketAddr;

use domi::route::Peer;
use domi::{
    Channel, Membership, MembershipContext, MembershipError, Node, NodeBuilder, NodeId, NodeInfo,
};

/// Membership over exactly these peers (the local node is added by the node).
pub struct Fixed {
    pub id: NodeId,
    pub peers: Vec<Peer>,
}

impl Membership for Fixed {
    fn join(&mut self, _local: &NodeInfo, _addr: SocketAddr) -> Result<NodeId, MembershipError> {
        Ok(self.id)
    }

    fn start(&mut self, ctx: MembershipContext) -> Result<(), MembershipError> {
        let peers = self.peers.clone();
        ctx.directory
            .update(|t| peers.into_iter().fold(t.clone(), |t, p| t.with_peer(p)));
        Ok(())
    }

    fn local_changed(&self, _info: &NodeInfo) {}

    fn leave(&mut self) {}
}

/// A running node as a fixed peer entry (as the caller first saw it).
pub fn peer_of(node: &Node) -> Peer {
    Peer {
        info: node.info(),
        addr: node.local_addr(),
        up: true,
    }
}

/// A peer `id` serving `channels` at an address where nothing listens.
pub fn dead_peer(id: u16, channels: &[Channel], like: &Node) -> Peer {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut info = like.info();
    info.id = NodeId::new(id).unwrap();
    info.name = format!("dead{id}");
    info.instance = u64::from(id);
    info.channels = channels.to_vec();
    Peer {
        info,
        addr,
        up: true,
    }
}

/// A caller named `name` whose table holds exactly `peers`.
pub fn caller(name: &str, shards: usize, peers: Vec<Peer>) -> NodeBuilder {
    Node::builder(name)
        .shards(shards)
        .small()
        .membership(Box::new(Fixed {
            id: NodeId::new(1000).expect("in range"),
            peers,
        }))
}
