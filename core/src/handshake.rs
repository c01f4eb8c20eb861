//! The connection handshake and node announcements: pure encode, decode, validate.
//!
//! A connection opens with a control frame on [`Channel::HELLO`] from the
//! connecting side, answered by one on [`Channel::HELLO_ACK`] (or an error frame
//! and a close). Both carry a [`NodeInfo`]; later control frames on
//! [`Channel::ANNOUNCE`] carry an updated one (channels or state changed).
//!
//! Payload layout (little-endian):
//!
//! ```text
//! byte 0       protocol version   u8
//! byte 1       state              u8   0 serving, 1 paused, 2 draining
//! byte 2..4    node id            u16
//! byte 4..12   instance           u64  random per process start: detects self-connections
//! byte 12      cluster length C   u8
//! byte 13      name length N      u8
//! byte 14..16  channel count K    u16
//! byte 16..    cluster (C bytes UTF-8), name (N bytes UTF-8), K channels (u16 each)
//! ```

use crate::channel::{Channel, NodeId};
use crate::frame::PROTOCOL_VERSION;

const FIXED: usize = 16;

/// The largest frame payload accepted before a connection's handshake is
/// done: a node info naming every channel (128 KiB) plus names and the
/// authentication block fits well within it.
pub const MAX_HANDSHAKE_PAYLOAD: u32 = 256 * 1024;

/// Whether a node takes new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NodeState {
    /// In rotation.
    #[default]
    Serving,
    /// Out of rotation; still sends its own requests and receives replies.
    Paused,
    /// Shutting down: out of rotation, finishing in-flight work.
    Draining,
}

/// The one place `NodeState` is encoded: its wire byte and its name.
impl NodeState {
    /// Every state, in wire order.
    pub const ALL: [NodeState; 3] = [NodeState::Serving, NodeState::Paused, NodeState::Draining];

    /// The wire byte (handshake and announcements).
    pub const fn to_u8(self) -> u8 {
        match self {
            NodeState::Serving => 0,
            NodeState::Paused => 1,
            NodeState::Draining => 2,
        }
    }

    /// The state of a wire byte, if known.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(NodeState::Serving),
            1 => Some(NodeState::Paused),
            2 => Some(NodeState::Draining),
            _ => None,
        }
    }

    /// The lowercase name used in records and status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Paused => "paused",
            NodeState::Draining => "draining",
        }
    }

    /// The state of a name given by [`NodeState::as_str`], if known.
    pub fn from_name(name: &str) -> Option<Self> {
        NodeState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node says about itself in a handshake or an announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Protocol version spoken.
    pub version: u8,
    /// Cluster name; peers of another cluster are refused.
    pub cluster: String,
    /// Node id, `0..=1023`.
    pub id: NodeId,
    /// Human-readable node name.
    pub name: String,
    /// Random per process start.
    pub instance: u64,
    /// Channels this node serves, sorted and de-duplicated.
    pub channels: Vec<Channel>,
    /// Serving, paused or draining.
    pub state: NodeState,
}

/// A handshake or announcement that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The payload ended early.
    #[error("handshake truncated: need {need} bytes at offset {offset}, have {have}")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
        /// Bytes that field needs.
        need: usize,
        /// Bytes that were there.
        have: usize,
    },
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {theirs}, this build speaks {ours}")]
    VersionMismatch {
        /// Our version.
        ours: u8,
        /// Theirs.
        theirs: u8,
    },
    /// The peer belongs to another cluster.
    #[error("peer belongs to cluster {theirs:?}, this node to {ours:?}")]
    WrongCluster {
        /// Our cluster.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// A name or cluster that is not UTF-8 or too long.
    #[error("invalid {field} in handshake")]
    InvalidField {
        /// Which field.
        field: &'static str,
    },
    /// The peer is this very process (a static peer list naming ourselves).
    #[error("connected to itself")]
    SelfConnection,
    /// Trailing bytes after the channel list.
    #[error("{extra} unexpected trailing bytes in handshake")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

impl NodeInfo {
    /// Appends this info's payload encoding to `out`.
    ///
    /// Names longer than 255 bytes are refused by [`NodeInfo::check`], which
    /// node configuration runs before anything is sent.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.push(self.state.to_u8());
        out.extend_from_slice(&self.id.get().to_le_bytes());
        out.extend_from_slice(&self.instance.to_le_bytes());
        out.push(self.cluster.len().min(255) as u8);
        out.push(self.name.len().min(255) as u8);
        out.extend_from_slice(&(self.channels.len().min(u16::MAX as usize) as u16).to_le_bytes());
        out.extend_from_slice(&self.cluster.as_bytes()[..self.cluster.len().min(255)]);
        out.extend_from_slice(&self.name.as_bytes()[..self.name.len().min(255)]);
        for ch in self.channels.iter().take(u16::MAX as usize) {
            out.extend_from_slice(&ch.0.to_le_bytes());
        }
    }

    /// The encoded payload as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FIXED + self.cluster.len() + self.name.len());
        self.encode(&mut v);
        v
    }

    /// Checks that names fit the wire format (at most 255 bytes each).
    pub fn check(&self) -> Result<(), HandshakeError> {
        if self.cluster.len() > 255 {
            return Err(HandshakeError::InvalidField { field: "cluster" });
        }
        if self.name.len() > 255 {
            return Err(HandshakeError::InvalidField { field: "name" });
        }
        Ok(())
    }

    /// Decodes a payload that must hold exactly one node info.
    pub fn decode(buf: &[u8]) -> Result<NodeInfo, HandshakeError> {
        let (info, rest) = NodeInfo::decode_prefix(buf)?;
        if !rest.is_empty() {
            return Err(HandshakeError::TrailingBytes { extra: rest.len() });
        }
        Ok(info)
    }

    /// Decodes a node info at the start of `buf` and returns what follows it
    /// (the handshake's authentication block, see [`crate::auth`]); never
    /// panics on any input.
    pub fn decode_prefix(buf: &[u8]) -> Result<(NodeInfo, &[u8]), HandshakeError> {
        let take = |offset: usize, need: usize| -> Result<&[u8], HandshakeError> {
            buf.get(offset..offset + need)
                .ok_or(HandshakeError::Truncated {
                    offset,
                    need,
                    have: buf.len().saturating_sub(offset),
                })
        };
        let fixed = take(0, FIXED)?;
        let version = fixed[0];
        let state =
            NodeState::from_u8(fixed[1]).ok_or(HandshakeError::InvalidField { field: "state" })?;
        let id = NodeId::new(u16::from_le_bytes([fixed[2], fixed[3]]))
            .ok_or(HandshakeError::InvalidField { field: "node id" })?;
        let instance = u64::from_le_bytes(fixed[4..12].try_into().expect("8 bytes"));
        let clen = fixed[12] as usize;
        let nlen = fixed[13] as usize;
        let count = u16::from_le_bytes([fixed[14], fixed[15]]) as usize;
        let cluster = std::str::from_utf8(take(FIXED, clen)?)
            .map_err(|_| HandshakeError::InvalidField { field: "cluster" })?
            .to_owned();
        let name = std::str::from_utf8(take(FIXED + clen, nlen)?)
            .map_err(|_| HandshakeError::InvalidField { field: "name" })?
            .to_owned();
        let start = FIXED + clen + nlen;
        let list = take(start, count * 2)?;
        let mut channels: Vec<Channel> = list
            .chunks_exact(2)
            .map(|c| Channel(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        channels.sort_unstable();
        channels.dedup();
        let end = start + count * 2;
        let info = NodeInfo {
            version,
            cluster,
            id,
            name,
            instance,
            channels,
            state,
        };
        Ok((info, &buf[end..]))
    }
}

/// Decides whether `theirs` may talk to a node described by `ours`.
pub fn validate(ours: &NodeInfo, theirs: &NodeInfo) -> Result<(), HandshakeError> {
    if theirs.version != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: theirs.version,
        });
    }
    if theirs.cluster != ours.cluster {
        return Err(HandshakeError::WrongCluster {
            ours: ours.cluster.clone(),
            theirs: theirs.cluster.clone(),
        });
    }
    if theirs.instance == ours.instance {
        return Err(HandshakeError::SelfConnection);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info() -> NodeInfo {
        NodeInfo {
            version: PROTOCOL_VERSION,
            cluster: "prod".into(),
            id: NodeId::test(7),
            name: "alpha".into(),
            instance: 42,
            channels: vec![Channel(50), Channel(51)],
            state: NodeState::Paused,
        }
    }

    #[test]
    fn golden_bytes() {
        let bytes = info().to_bytes();
        let expected: Vec<u8> = [
            &[PROTOCOL_VERSION, 1, 7, 0][..],
            &42u64.to_le_bytes(),
            &[4, 5, 2, 0],
            b"prod",
            b"alpha",
            &[50, 0, 51, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(NodeInfo::decode(&bytes), Ok(info()));
    }

    #[test]
    fn validation_refuses_wrong_cluster_version_and_self() {
        let ours = NodeInfo {
            instance: 1,
            ..info()
        };
        assert_eq!(validate(&ours, &info()), Ok(()));
        let other = NodeInfo {
            cluster: "dev".into(),
            ..info()
        };
        assert!(matches!(
            validate(&ours, &other),
            Err(HandshakeError::WrongCluster { .. })
        ));
        let old = NodeInfo {
            version: 0,
            ..info()
        };
        assert_eq!(
            validate(&ours, &old),
            Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 0
            })
        );
        assert_eq!(validate(&ours, &ours), Err(HandshakeError::SelfConnection));
    }

    #[test]
    fn truncation_and_trailing_bytes_are_typed() {
        let bytes = info().to_bytes();
        assert!(matches!(
            NodeInfo::decode(&bytes[..10]),
            Err(HandshakeError::Truncated {
                offset: 0,
                need: 16,
                have: 10
            })
        ));
        assert!(matches!(
            NodeInfo::decode(&bytes[..bytes.len() - 1]),
            Err(HandshakeError::Truncated { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            NodeInfo::decode(&longer),
            Err(HandshakeError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn long_names_fail_the_check() {
        let long = NodeInfo {
            name: "x".repeat(256),
            ..info()
        };
        assert_eq!(
            long.check(),
            Err(HandshakeError::InvalidField { field: "name" })
        );
        assert_eq!(info().check(), Ok(()));
    }

    proptest! {
        #[test]
        fn round_trip(cluster in "[a-z]{0,40}", name in "\\PC{0,40}", id in 0u16..=1023,
                      instance: u64, chans in proptest::collection::btree_set(any::<u16>(), 0..64),
                      state in 0u8..3) {
            let i = NodeInfo { version: PROTOCOL_VERSION, cluster, id: NodeId::test(id), name,
                instance, channels: chans.into_iter().map(Channel).collect(),
                state: NodeState::from_u8(state).unwrap() };
            prop_assume!(i.check().is_ok());
            prop_assert_eq!(NodeInfo::decode(&i.to_bytes()), Ok(i));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = NodeInfo::decode(&bytes);
        }
    }
}
