//! Finding the one node an operator means by `ID|NAME`, and its admin
//! address: pure, over the records listed from etcd.

use domi_cluster::etcd::record::NodeRecord;

use crate::CtlError;

/// The node `wanted` names among `records` of cluster `cluster`: the node
/// with that id if `wanted` is a number one has, otherwise the one node
/// with that name.
///
/// Errors: [`CtlError::UnknownNode`] (listing the nodes there are),
/// [`CtlError::AmbiguousName`] when several nodes share the name.
pub fn resolve<'a>(
    records: &'a [NodeRecord],
    wanted: &str,
    cluster: &str,
) -> Result<&'a NodeRecord, CtlError> {
    let wanted = wanted.trim();
    if let Ok(id) = wanted.parse::<u16>() {
        if let Some(r) = records.iter().find(|r| r.id == id) {
            return Ok(r);
        }
    }
    let named: Vec<&NodeRecord> = records.iter().filter(|r| r.name == wanted).collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(CtlError::UnknownNode {
            node: wanted.to_owned(),
            cluster: cluster.to_owned(),
            known: records
                .iter()
                .map(|r| format!("{} {}", r.id, r.name))
                .collect(),
        }),
        several => Err(CtlError::AmbiguousName {
            name: wanted.to_owned(),
            ids: several.iter().map(|r| r.id).collect(),
        }),
    }
}

/// The admin address of `record` (`host:port`), or
/// [`CtlError::NoAdminAddress`].
pub fn admin_address(record: &NodeRecord) -> Result<&str, CtlError> {
    record
        .http
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| CtlError::NoAdminAddress {
            id: record.id,
            name: record.name.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u16, name: &str) -> NodeRecord {
        NodeRecord {
            id,
            name: name.into(),
            version: "0.1.0".into(),
            protocol: 2,
            instance: "01".into(),
            tcp: "127.0.0.1:1".into(),
            http: (id % 2 == 0).then(|| "127.0.0.1:8080".into()),
            shards: 1,
            channels: vec![50],
            state: "serving".into(),
            started_at: 0,
        }
    }

    #[test]
    fn ids_then_unique_names() {
        let rs = [record(0, "a"), record(1, "b"), record(2, "7")];
        assert_eq!(resolve(&rs, "1", "c").unwrap().name, "b");
        assert_eq!(resolve(&rs, " a ", "c").unwrap().id, 0);
        // A number no node has as id may still be a name.
        assert_eq!(resolve(&rs, "7", "c").unwrap().id, 2);
    }

    #[test]
    fn unknown_and_ambiguous_nodes_are_typed_errors() {
        let rs = [record(0, "a"), record(1, "b"), record(2, "b")];
        match resolve(&rs, "zed", "c") {
            Err(CtlError::UnknownNode {
                node,
                cluster,
                known,
            }) => {
                assert_eq!((node.as_str(), cluster.as_str()), ("zed", "c"));
                assert_eq!(known, ["0 a", "1 b", "2 b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(&rs, "9", "c"),
            Err(CtlError::UnknownNode { .. })
        ));
        match resolve(&rs, "b", "c") {
            Err(CtlError::AmbiguousName { name, ids }) => {
                assert_eq!((name.as_str(), ids), ("b", vec![1, 2]))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(&[], "a", "c"),
            Err(CtlError::UnknownNode { known, .. }) if known.is_empty()
        ));
    }

    #[test]
    fn admin_addresses() {
        assert_eq!(admin_address(&record(0, "a")).unwrap(), "127.0.0.1:8080");
        assert!(matches!(
            admin_address(&record(1, "b")),
            Err(CtlError::NoAdminAddress { id: 1, name }) if name == "b"
        ));
    }
}
