//! Keyed routing: which provider of a channel serves a key, by rendezvous
//! (highest-random-weight) hashing. Pure, no I/O.
//!
//! Every provider gets a score for the key; the highest wins. The choice is
//! stable while the provider list is: the same key goes to the same node
//! from every caller (the hash is defined here, byte for byte, not taken
//! from `std`, so callers built at different times agree). When a provider
//! leaves, only the keys it held move (each to its next-highest score);
//! when one joins, it takes only the keys it now wins. A provider that is
//! skipped (down, paused, its breaker open) hands its keys to the
//! runner-up the same way, and gets them back when it returns.

use crate::channel::NodeId;

/// The 64-bit FNV-1a hash of a key (the key's part of every score).
pub fn key_hash(key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The score of `node` for a key hashed with [`key_hash`]: SplitMix64's
/// finaliser over the key hash mixed with the node id.
pub fn score(key: u64, node: NodeId) -> u64 {
    let mut z = key ^ u64::from(node.get()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The provider with the highest score for `key` among those `skip` does
/// not rule out; `None` when every one is ruled out (or there is none).
/// Ties (equal scores) go to the lower node id, so the choice never
/// depends on the list's order. `skip` is asked in score order and only
/// until one passes, so a check with side effects (a circuit breaker
/// letting a probe through) only runs for the providers in front of the
/// chosen one.
pub fn select(
    providers: &[NodeId],
    key: u64,
    mut skip: impl FnMut(NodeId) -> bool,
) -> Option<NodeId> {
    let mut ranked: Vec<(u64, NodeId)> = providers.iter().map(|&id| (score(key, id), id)).collect();
    // Highest score first; equal scores: the lower id first.
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, id)| id).find(|&id| !skip(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<u16>) -> Vec<NodeId> {
        range.map(NodeId::test).collect()
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a's published test vectors: the hash never changes with
        // the build, so every caller picks the same provider.
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_same_key_goes_to_the_same_node_whatever_the_order() {
        let mut p = ids(0..8);
        let k = key_hash(b"user-42");
        let first = select(&p, k, |_| false).unwrap();
        p.reverse();
        assert_eq!(select(&p, k, |_| false), Some(first));
        assert_eq!(select(&[], k, |_| false), None);
        assert_eq!(select(&p, k, |_| true), None);
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_keys() {
        let all = ids(0..8);
        let gone = NodeId::test(3);
        let rest: Vec<NodeId> = all.iter().copied().filter(|&i| i != gone).collect();
        for n in 0..5_000u32 {
            let k = key_hash(&n.to_le_bytes());
            let before = select(&all, k, |_| false).unwrap();
            let after = select(&rest, k, |_| false).unwrap();
            if before != gone {
                assert_eq!(before, after, "key {n} moved though its node stayed");
            }
            // Skipping the node is the same as removing it.
            assert_eq!(select(&all, k, |i| i == gone), Some(after));
        }
    }

    #[test]
    fn a_joining_node_takes_only_keys_it_wins() {
        let old = ids(0..8);
        let new = ids(0..9);
        let joined = NodeId::test(8);
        let mut taken = 0;
        for n in 0..5_000u32 {
            let k = key_hash(&n.to_le_bytes());
            let before = select(&old, k, |_| false).unwrap();
            let after = select(&new, k, |_| false).unwrap();
            if after == joined {
                taken += 1;
            } else {
                assert_eq!(before, after);
            }
        }
        // About 1/9 of the keys.
        assert!((400..=720).contains(&taken), "{taken}");
    }

    #[test]
    fn only_providers_ranked_ahead_of_the_choice_are_asked() {
        let p = ids(0..16);
        let k = key_hash(b"probe");
        let first = select(&p, k, |_| false).unwrap();
        let mut asked = Vec::new();
        let chosen = select(&p, k, |id| {
            asked.push(id);
            id == first
        })
        .unwrap();
        assert_eq!(
            asked,
            vec![first, chosen],
            "the leader, then the runner-up only"
        );
    }

    #[test]
    fn keys_spread_evenly() {
        let p = ids(100..108);
        let mut count = [0u32; 8];
        for n in 0..16_000u32 {
            let id = select(&p, key_hash(format!("key-{n}").as_bytes()), |_| false).unwrap();
            count[(id.get() - 100) as usize] += 1;
        }
        for c in count {
            assert!((1_600..=2_400).contains(&c), "{count:?}");
        }
    }
}
