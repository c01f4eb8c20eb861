//! The etcd data model, as pure functions: key layout, the JSON node record,
//! lowest-free-id choice, and applying list results and watch events to a
//! peer table. No etcd client here; the discovery thread only drives these.
//!
//! ```text
//! /domi/<cluster>/ids/<id>     -> instance (hex), under the node's lease: the id claim
//! /domi/<cluster>/nodes/<id>   -> NodeRecord as JSON, under the same lease
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;

use domi_core::frame::PROTOCOL_VERSION;
use domi_core::{Channel, NodeId, NodeInfo, NodeState, Peer, PeerTable};
use serde::{Deserialize, Serialize};

/// `/domi/<cluster>/nodes/`.
pub fn nodes_prefix(cluster: &str) -> String {
    format!("/domi/{cluster}/nodes/")
}

/// `/domi/<cluster>/ids/`.
pub fn ids_prefix(cluster: &str) -> String {
    format!("/domi/{cluster}/ids/")
}

/// `/domi/<cluster>/nodes/<id>`.
pub fn node_key(cluster: &str, id: NodeId) -> String {
    format!("{}{}", nodes_prefix(cluster), id.get())
}

/// `/domi/<cluster>/ids/<id>`.
pub fn id_key(cluster: &str, id: NodeId) -> String {
    format!("{}{}", ids_prefix(cluster), id.get())
}

/// The value of an id's claim key, and the record's `instance` field: a
/// node's instance as 16 hex digits.
pub fn claim_value(instance: u64) -> String {
    format!("{instance:016x}")
}

/// The id at the end of a key under `prefix`, if it is one.
pub fn parse_id(prefix: &str, key: &[u8]) -> Option<NodeId> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.len() > 4 {
        return None;
    }
    NodeId::new(rest.parse().ok()?)
}

/// The lowest id in `0..=1023` not in `taken`.
pub fn lowest_free(taken: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
    pick_free(taken, 0, 0.0)
}

/// The id a node tries to claim after losing `lost` races in a row: the
/// lowest free id at first (so ids stay compact and freed ids are reused),
/// then one drawn (`unit` in `[0, 1)`) from the lowest 2, 4, 8, … free ids,
/// so that many nodes starting together spread out instead of all racing
/// for the same id. `None` when every id is taken.
pub fn pick_free(taken: impl IntoIterator<Item = NodeId>, lost: u32, unit: f64) -> Option<NodeId> {
    let mut used = [false; NodeId::MAX as usize + 1];
    for id in taken {
        if let Some(slot) = used.get_mut(id.index()) {
            *slot = true;
        }
    }
    let free = used.iter().filter(|u| !**u).count();
    let window = 1usize
        .checked_shl(lost.min(16))
        .unwrap_or(usize::MAX)
        .min(free);
    if window == 0 {
        return None;
    }
    let nth = ((unit.clamp(0.0, 1.0) * window as f64) as usize).min(window - 1);
    used.iter()
        .enumerate()
        .filter(|(_, u)| !**u)
        .nth(nth)
        .and_then(|(i, _)| NodeId::new(i as u16))
}

/// Who holds a node id's claim key (`/domi/<cluster>/ids/<id>`), as far as
/// this node is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The claim hangs on our lease: we hold the id.
    Held,
    /// No claim key: nobody holds the id (our lease ended and took it along).
    Free,
    /// The claim hangs on another lease (or on none): another node holds the id.
    Taken {
        /// The holder's lease id (0 for a key without a lease).
        holder_lease: i64,
    },
}

/// Who holds an id, given the lease of its claim key (`None` when there is no
/// such key) and our lease (`None` when we hold none).
pub fn claim_state(holder_lease: Option<i64>, our_lease: Option<i64>) -> Claim {
    match (holder_lease, our_lease) {
        (None, _) => Claim::Free,
        (Some(h), Some(o)) if h == o => Claim::Held,
        (Some(holder_lease), _) => Claim::Taken { holder_lease },
    }
}

/// gRPC status code `NOT_FOUND`.
pub const GRPC_NOT_FOUND: i32 = 5;

/// Whether an etcd error means "this lease does not exist (any more)".
///
/// etcd answers `NOT_FOUND` with `etcdserver: requested lease not found`; the
/// code is checked when the error carries one, the message otherwise (the
/// client also reports some errors only as text).
pub fn is_lease_not_found(grpc_code: Option<i32>, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    match grpc_code {
        Some(GRPC_NOT_FOUND) => message.contains("lease"),
        // etcd's own text, and etcd-client's when a keep-alive stream's
        // first answer says the lease is gone ("lease keep alive error:
        // lease not found").
        _ => message.contains("lease not found"),
    }
}

/// A node's record, as stored in etcd and read by `etcdctl get --prefix /domi/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: u16,
    /// Node name.
    pub name: String,
    /// Software version.
    pub version: String,
    /// Wire protocol version.
    pub protocol: u8,
    /// Random per process start (hex).
    pub instance: String,
    /// Bus address.
    pub tcp: String,
    /// Admin HTTP address, if any.
    pub http: Option<String>,
    /// Shards.
    pub shards: usize,
    /// Channels served.
    pub channels: Vec<u16>,
    /// `serving`, `paused` or `draining`.
    pub state: String,
    /// Start time, Unix seconds.
    pub started_at: u64,
}

/// A record that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of the expected shape.
    #[error("record is not valid JSON: {reason}")]
    Json {
        /// The parser's message.
        reason: String,
    },
    /// A field with an impossible value.
    #[error("record field {field} is invalid: {value:?}")]
    Field {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// The record's id disagrees with its key.
    #[error("record for id {record} stored under key id {key}")]
    IdMismatch {
        /// Id in the key.
        key: u16,
        /// Id in the record.
        record: u16,
    },
}

impl NodeRecord {
    /// The record describing `info` at `addr`.
    pub fn from_info(
        info: &NodeInfo,
        addr: SocketAddr,
        http: Option<SocketAddr>,
        shards: usize,
        started_at: u64,
    ) -> NodeRecord {
        NodeRecord {
            id: info.id.get(),
            name: info.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: info.version,
            instance: claim_value(info.instance),
            tcp: addr.to_string(),
            http: http.map(|h| h.to_string()),
            shards,
            channels: info.channels.iter().map(|c| c.0).collect(),
            state: info.state.as_str().into(),
            started_at,
        }
    }

    /// JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serializes")
    }

    /// Parses JSON bytes; never panics.
    pub fn from_json(bytes: &[u8]) -> Result<NodeRecord, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::Json {
            reason: e.to_string(),
        })
    }

    /// The peer-table entry for this record of cluster `cluster`.
    pub fn to_peer(&self, cluster: &str) -> Result<Peer, RecordError> {
        let field = |field, value: &dyn ToString| RecordError::Field {
            field,
            value: value.to_string(),
        };
        let id = NodeId::new(self.id).ok_or_else(|| field("id", &self.id))?;
        let addr: SocketAddr = self.tcp.parse().map_err(|_| field("tcp", &self.tcp))?;
        let state = NodeState::from_name(&self.state).ok_or_else(|| field("state", &self.state))?;
        let instance = u64::from_str_radix(&self.instance, 16)
            .map_err(|_| field("instance", &self.instance))?;
        if self.name.len() > 255 {
            return Err(field("name", &self.name));
        }
        let mut channels: Vec<Channel> = self.channels.iter().map(|c| Channel(*c)).collect();
        channels.sort_unstable();
        channels.dedup();
        Ok(Peer {
            info: NodeInfo {
                version: self.protocol,
                cluster: cluster.into(),
                id,
                name: self.name.clone(),
                instance,
                channels,
                state,
            },
            addr,
            up: true,
        })
    }
}

/// A change seen by the watch (or a listed key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A key was created or updated.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// A key was deleted (or its lease ended).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// Builds the table from a full listing of the nodes prefix, keeping `local`.
/// Records that fail to parse are skipped and returned for logging.
pub fn table_from_list(
    cluster: &str,
    local: &Peer,
    kvs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    epoch: u64,
) -> (PeerTable, Vec<(NodeId, RecordError)>) {
    let prefix = nodes_prefix(cluster);
    let mut peers = BTreeMap::new();
    let mut bad = Vec::new();
    for (key, value) in kvs {
        let Some(id) = parse_id(&prefix, &key) else {
            continue;
        };
        if id == local.info.id {
            continue;
        }
        match parse_peer(cluster, id, &value) {
            Ok(p) => {
                peers.insert(id, p);
            }
            Err(e) => bad.push((id, e)),
        }
    }
    peers.insert(local.info.id, local.clone());
    (PeerTable::from_peers(epoch, peers), bad)
}

fn parse_peer(cluster: &str, key_id: NodeId, value: &[u8]) -> Result<Peer, RecordError> {
    let rec = NodeRecord::from_json(value)?;
    if rec.id != key_id.get() {
        return Err(RecordError::IdMismatch {
            key: key_id.get(),
            record: rec.id,
        });
    }
    let peer = rec.to_peer(cluster)?;
    if peer.info.version != PROTOCOL_VERSION {
        return Err(RecordError::Field {
            field: "protocol",
            value: peer.info.version.to_string(),
        });
    }
    Ok(peer)
}

/// Applies a batch of watch changes with one table rebuild. Changes to the
/// local node's key are ignored; unusable records are skipped and returned.
pub fn apply_all(
    cluster: &str,
    local: NodeId,
    table: &PeerTable,
    changes: &[Change],
) -> (PeerTable, Vec<RecordError>) {
    let prefix = nodes_prefix(cluster);
    let mut batch = Vec::with_capacity(changes.len());
    let mut bad = Vec::new();
    for change in changes {
        match change {
            Change::Put { key, value } => match parse_id(&prefix, key) {
                Some(id) if id != local => match parse_peer(cluster, id, value) {
                    Ok(p) => batch.push((id, Some(p))),
                    Err(e) => bad.push(e),
                },
                _ => {}
            },
            Change::Delete { key } => match parse_id(&prefix, key) {
                Some(id) if id != local => batch.push((id, None)),
                _ => {}
            },
        }
    }
    (table.with_changes(batch), bad)
}

/// Applies one watch change to `table`. The local node's own key is ignored
/// (the node maintains its own entry). Returns the new table, or the old one
/// and an error for a record that cannot be used.
pub fn apply(
    cluster: &str,
    local: NodeId,
    table: &PeerTable,
    change: &Change,
) -> Result<PeerTable, RecordError> {
    let prefix = nodes_prefix(cluster);
    match change {
        Change::Put { key, value } => match parse_id(&prefix, key) {
            Some(id) if id != local => Ok(table.with_peer(parse_peer(cluster, id, value)?)),
            _ => Ok(table.clone()),
        },
        Change::Delete { key } => match parse_id(&prefix, key) {
            Some(id) if id != local => Ok(table.without(id)),
            _ => Ok(table.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    fn nid(v: u16) -> NodeId {
        NodeId::new(v).expect("in range")
    }

    use super::*;

    fn info(id: u16, chans: &[u16]) -> NodeInfo {
        NodeInfo {
            version: PROTOCOL_VERSION,
            cluster: "c".into(),
            id: nid(id),
            name: format!("n{id}"),
            instance: 0xabc + id as u64,
            channels: chans.iter().map(|c| Channel(*c)).collect(),
            state: NodeState::Serving,
        }
    }

    fn kv(id: u16, chans: &[u16]) -> (Vec<u8>, Vec<u8>) {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000 + id));
        let rec = NodeRecord::from_info(&info(id, chans), addr, None, 2, 1);
        (node_key("c", nid(id)).into_bytes(), rec.to_json())
    }

    fn local() -> Peer {
        Peer {
            info: info(9, &[]),
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            up: true,
        }
    }

    #[test]
    fn keys_and_ids() {
        assert_eq!(node_key("c", nid(7)), "/domi/c/nodes/7");
        assert_eq!(id_key("c", nid(7)), "/domi/c/ids/7");
        assert_eq!(
            parse_id("/domi/c/nodes/", b"/domi/c/nodes/1023"),
            Some(nid(1023))
        );
        assert_eq!(parse_id("/domi/c/nodes/", b"/domi/c/nodes/1024"), None);
        assert_eq!(parse_id("/domi/c/nodes/", b"/domi/c/nodes/x"), None);
        assert_eq!(parse_id("/domi/c/nodes/", b"/domi/c/nodes/"), None);
        assert_eq!(parse_id("/domi/c/nodes/", b"/domi/d/nodes/1"), None);
        assert_eq!(lowest_free([nid(0), nid(2)]), Some(nid(1)));
        assert_eq!(lowest_free([]), Some(nid(0)));
        assert_eq!(lowest_free((0..=1023).map(nid)), None);
        // pick_free: the lowest at first, then spread over more and more.
        let taken = [nid(0), nid(2), nid(5)];
        assert_eq!(pick_free(taken, 0, 0.99), Some(nid(1)));
        assert_eq!(pick_free(taken, 1, 0.0), Some(nid(1)));
        assert_eq!(pick_free(taken, 1, 0.99), Some(nid(3)));
        assert_eq!(pick_free(taken, 2, 0.99), Some(nid(6)));
        assert_eq!(pick_free(taken, 40, 1.0), Some(nid(1023)));
        assert_eq!(pick_free((0..=1023).map(nid), 3, 0.5), None);
        assert_eq!(pick_free((1..=1023).map(nid), 9, 0.99), Some(nid(0)));
        // Many draws in a window of 8 cover it and stay inside it.
        let drawn: std::collections::BTreeSet<u16> = (0..64)
            .filter_map(|i| pick_free([], 3, i as f64 / 64.0))
            .map(|n| n.get())
            .collect();
        assert_eq!(drawn, (0..8).collect());
    }

    #[test]
    fn record_round_trip_and_fields() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let rec = NodeRecord::from_info(&info(3, &[51, 50]), addr, None, 2, 99);
        let json: serde_json::Value = serde_json::from_slice(&rec.to_json()).unwrap();
        assert_eq!(json["id"], 3);
        assert_eq!(json["state"], "serving");
        assert_eq!(json["tcp"], "127.0.0.1:7000");
        assert_eq!(json["channels"], serde_json::json!([51, 50]));
        let back = NodeRecord::from_json(&rec.to_json()).unwrap();
        let peer = back.to_peer("c").unwrap();
        assert_eq!(peer.info.channels, vec![Channel(50), Channel(51)]);
        assert!(matches!(
            NodeRecord::from_json(b"{"),
            Err(RecordError::Json { .. })
        ));
        let bad = NodeRecord {
            state: "asleep".into(),
            ..back.clone()
        };
        assert!(matches!(
            bad.to_peer("c"),
            Err(RecordError::Field { field: "state", .. })
        ));
        let bad = NodeRecord {
            tcp: "nowhere".into(),
            ..back
        };
        assert!(matches!(
            bad.to_peer("c"),
            Err(RecordError::Field { field: "tcp", .. })
        ));
    }

    #[test]
    fn list_then_watch_events() {
        let (t, bad) = table_from_list(
            "c",
            &local(),
            [
                kv(0, &[50]),
                kv(1, &[50]),
                (b"/domi/c/nodes/2".to_vec(), b"garbage".to_vec()),
            ],
            1,
        );
        assert_eq!(t.providers(Channel(50)), &[nid(0), nid(1)]);
        assert_eq!(bad.len(), 1);
        assert!(t.get(nid(9)).is_some(), "local entry kept");

        let (k, v) = kv(4, &[50]);
        let t = apply(
            "c",
            nid(9),
            &t,
            &Change::Put {
                key: k.clone(),
                value: v,
            },
        )
        .unwrap();
        assert_eq!(t.providers(Channel(50)).len(), 3);
        let t = apply("c", nid(9), &t, &Change::Delete { key: k }).unwrap();
        assert_eq!(t.providers(Channel(50)).len(), 2);
        // The local key is never applied from the watch.
        let t2 = apply(
            "c",
            nid(9),
            &t,
            &Change::Delete {
                key: node_key("c", nid(9)).into_bytes(),
            },
        )
        .unwrap();
        assert!(t2.get(nid(9)).is_some());
        // A record under the wrong key is refused.
        let (_, v) = kv(5, &[50]);
        let e = apply(
            "c",
            nid(9),
            &t,
            &Change::Put {
                key: node_key("c", nid(6)).into_bytes(),
                value: v,
            },
        );
        assert_eq!(
            e.unwrap_err(),
            RecordError::IdMismatch { key: 6, record: 5 }
        );
        // A batch gives the same result as one change at a time.
        let (k1, v1) = kv(6, &[50]);
        let (k2, v2) = kv(7, &[50]);
        let batch = [
            Change::Put {
                key: k1.clone(),
                value: v1,
            },
            Change::Put { key: k2, value: v2 },
            Change::Delete { key: k1 },
            Change::Put {
                key: b"/domi/c/nodes/8".to_vec(),
                value: b"nope".to_vec(),
            },
        ];
        let (tb, bad) = apply_all("c", nid(9), &t, &batch);
        let mut one = t.clone();
        for c in &batch[..3] {
            one = apply("c", nid(9), &one, c).unwrap();
        }
        assert_eq!(tb.providers(Channel(50)), one.providers(Channel(50)));
        assert_eq!(bad.len(), 1);
        // Paused records leave the rotation.
        let mut paused = info(1, &[50]);
        paused.state = NodeState::Paused;
        let rec = NodeRecord::from_info(
            &paused,
            SocketAddr::from(([127, 0, 0, 1], 7001)),
            None,
            1,
            1,
        );
        let t = apply(
            "c",
            nid(9),
            &t,
            &Change::Put {
                key: node_key("c", nid(1)).into_bytes(),
                value: rec.to_json(),
            },
        )
        .unwrap();
        assert_eq!(t.providers(Channel(50)), &[nid(0)]);
    }

    #[test]
    fn claim_states() {
        assert_eq!(claim_state(None, Some(7)), Claim::Free);
        assert_eq!(claim_state(None, None), Claim::Free);
        assert_eq!(claim_state(Some(7), Some(7)), Claim::Held);
        assert_eq!(
            claim_state(Some(8), Some(7)),
            Claim::Taken { holder_lease: 8 }
        );
        assert_eq!(claim_state(Some(0), None), Claim::Taken { holder_lease: 0 });
    }

    #[test]
    fn lease_not_found_errors() {
        assert!(is_lease_not_found(
            Some(GRPC_NOT_FOUND),
            "etcdserver: requested lease not found"
        ));
        assert!(is_lease_not_found(
            None,
            "grpc request error: status: NotFound, message: \"etcdserver: requested lease not found\""
        ));
        assert!(!is_lease_not_found(Some(14), "transport error"));
        assert!(!is_lease_not_found(None, "etcdserver: request timed out"));
        assert!(!is_lease_not_found(Some(GRPC_NOT_FOUND), "key not found"));
    }
}
