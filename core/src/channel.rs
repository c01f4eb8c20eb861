//! Channels and node ids: the two numbers every frame carries.

use std::fmt;

/// A 16-bit bus channel. Handlers subscribe to channels; senders address them.
///
/// Values [`Channel::RESERVED_START`]`..=65535` belong to the bus itself
/// (handshake, heartbeat, announcements); user code can neither subscribe to
/// them nor send to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(pub u16);

impl Channel {
    /// First channel value reserved for the bus.
    pub const RESERVED_START: u16 = 65500;
    /// Control channel of the opening handshake (sent by the connecting side).
    pub const HELLO: Channel = Channel(65535);
    /// Control channel of the handshake answer (sent by the accepting side).
    pub const HELLO_ACK: Channel = Channel(65534);
    /// Control channel of heartbeats on idle connections.
    pub const HEARTBEAT: Channel = Channel(65533);
    /// Control channel of announcements: channels served and state changed.
    pub const ANNOUNCE: Channel = Channel(65532);
    /// Control channel of the connecting side's authentication proof.
    pub const AUTH: Channel = Channel(65531);

    /// Whether this channel belongs to the bus.
    pub const fn is_reserved(self) -> bool {
        self.0 >= Self::RESERVED_START
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ch{}", self.0)
    }
}

impl From<u16> for Channel {
    fn from(v: u16) -> Self {
        Channel(v)
    }
}

/// A node's id within its cluster: `0..=1023`, the source id on the wire.
///
/// Only in-range ids exist: build one with [`NodeId::new`] or `try_from`, so
/// an id from a custom membership or the wire can never index past a
/// per-peer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u16);

impl NodeId {
    /// Largest valid node id.
    pub const MAX: u16 = 1023;

    /// Node id 0, the lowest.
    pub const FIRST: NodeId = NodeId(0);

    /// A node id if `v` is in range.
    pub const fn new(v: u16) -> Option<NodeId> {
        if v <= Self::MAX {
            Some(NodeId(v))
        } else {
            None
        }
    }

    /// An id for unit tests of this crate (panics when out of range).
    #[cfg(test)]
    pub(crate) const fn test(v: u16) -> NodeId {
        assert!(v <= Self::MAX);
        NodeId(v)
    }

    /// The id as a number, `0..=1023`.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The id as an index into per-peer tables of `MAX + 1` entries.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A node id outside `0..=1023`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node id {value} out of range 0..=1023")]
pub struct NodeIdOutOfRange {
    /// The value given.
    pub value: u16,
}

impl TryFrom<u16> for NodeId {
    type Error = NodeIdOutOfRange;

    fn try_from(value: u16) -> Result<NodeId, NodeIdOutOfRange> {
        NodeId::new(value).ok_or(NodeIdOutOfRange { value })
    }
}

impl From<NodeId> for u16 {
    fn from(id: NodeId) -> u16 {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_range_boundaries() {
        assert!(!Channel(65499).is_reserved());
        assert!(Channel(65500).is_reserved());
        assert!(Channel::HELLO.is_reserved());
        assert!(Channel::ANNOUNCE.is_reserved());
    }

    #[test]
    fn node_id_range() {
        assert_eq!(NodeId::new(1023).map(NodeId::get), Some(1023));
        assert_eq!(NodeId::new(1024), None);
        assert_eq!(
            NodeId::try_from(2000),
            Err(NodeIdOutOfRange { value: 2000 })
        );
        assert_eq!(NodeId::try_from(7).map(u16::from), Ok(7));
    }
}
