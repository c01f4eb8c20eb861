//! Fuzzes the etcd node record parser and the watch-event path of
//! `domi_cluster::etcd::record`.
//!
//! The input is used as record JSON: `NodeRecord::from_json` must give a value
//! or a typed error; a parsed record must convert with `to_peer` without
//! panicking and survive `from_json(to_json(x)) == x`. The same bytes are fed
//! as the value of a watch `Put` on `/domi/c/nodes/3` through `apply_all`, and
//! as a key to `parse_id`.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run record -- -max_total_time=60`
//! from `fuzz/` (or `fuzz/run.sh` for all targets).
#![no_main]

use domi_cluster::etcd::record::{self, Change, NodeRecord};
use domi_core::{NodeId, PeerTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = NodeRecord::from_json(data) {
        let _ = rec.to_peer("c");
        let json = rec.to_json();
        assert_eq!(
            NodeRecord::from_json(&json).as_ref(),
            Ok(&rec),
            "from_json(to_json(x)) != x"
        );
    }

    let (_table, _bad) = record::apply_all(
        "c",
        NodeId::new(9).unwrap(),
        &PeerTable::new(),
        &[Change::Put {
            key: b"/domi/c/nodes/3".to_vec(),
            value: data.to_vec(),
        }],
    );

    if let Some(id) = record::parse_id("/domi/c/nodes/", data) {
        assert!(id.get() <= NodeId::MAX);
    }
});
