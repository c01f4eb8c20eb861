//! A shard's round-robin positions, one per channel, with the channel it
//! sent to last held at hand: a stream of sends to one channel reads its
//! providers and cursor without a map lookup while the peer table stays the
//! same (the table's change counter is the key).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::channel::{Channel, NodeId};

/// Per-channel round-robin cursors of one shard (see the module docs).
#[derive(Debug)]
pub struct Cursors {
    /// Where a channel's cursor starts (the shard's index, so shards of one
    /// node do not all begin with the same provider).
    start: usize,
    hot: Option<Hot>,
    /// Cursors of the other channels (the hot one's is in `hot`).
    others: FxHashMap<Channel, usize>,
}

#[derive(Debug)]
struct Hot {
    changes: u64,
    channel: Channel,
    providers: Arc<[NodeId]>,
    cursor: usize,
}

impl Cursors {
    /// No cursor yet; each channel's starts at `start`.
    pub fn new(start: usize) -> Cursors {
        Cursors {
            start,
            hot: None,
            others: FxHashMap::default(),
        }
    }

    /// The providers of `channel` in the table whose change counter is
    /// `changes`, and the channel's cursor. `providers` is asked only when
    /// the channel or the table changed since the last call.
    pub fn route(
        &mut self,
        changes: u64,
        channel: Channel,
        providers: impl FnOnce() -> Arc<[NodeId]>,
    ) -> (&[NodeId], &mut usize) {
        let stale = match &self.hot {
            Some(h) if h.channel == channel => h.changes != changes,
            Some(h) => {
                self.others.insert(h.channel, h.cursor);
                true
            }
            None => true,
        };
        if stale {
            let cursor = match &self.hot {
                Some(h) if h.channel == channel => h.cursor,
                _ => self.others.remove(&channel).unwrap_or(self.start),
            };
            self.hot = Some(Hot {
                changes,
                channel,
                providers: providers(),
                cursor,
            });
        }
        let hot = self.hot.as_mut().expect("set above");
        (&hot.providers, &mut hot.cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::select;

    fn ids(v: &[u16]) -> Arc<[NodeId]> {
        v.iter().map(|&i| NodeId::new(i).unwrap()).collect()
    }

    /// Sends `n` to `channel` and returns the ids picked.
    fn send(c: &mut Cursors, changes: u64, channel: u16, table: &[u16], n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| {
                let (p, cursor) = c.route(changes, Channel(channel), || ids(table));
                select(p, cursor, |_| false).unwrap().get()
            })
            .collect()
    }

    #[test]
    fn each_channel_keeps_its_own_round_robin_across_switches() {
        let mut c = Cursors::new(0);
        assert_eq!(send(&mut c, 1, 10, &[1, 2, 3], 2), [1, 2]);
        assert_eq!(send(&mut c, 1, 20, &[4, 5], 1), [4]);
        assert_eq!(send(&mut c, 1, 10, &[1, 2, 3], 2), [3, 1]);
        assert_eq!(send(&mut c, 1, 20, &[4, 5], 2), [5, 4]);
    }

    #[test]
    fn a_channel_starts_at_the_shard_index() {
        let mut c = Cursors::new(1);
        assert_eq!(send(&mut c, 1, 10, &[1, 2, 3], 3), [2, 3, 1]);
    }

    #[test]
    fn providers_are_asked_again_only_when_the_table_or_channel_changes() {
        let mut c = Cursors::new(0);
        let mut asked = 0;
        for (changes, channel) in [(1, 10), (1, 10), (2, 10), (2, 10), (2, 20), (2, 10)] {
            c.route(changes, Channel(channel), || {
                asked += 1;
                ids(&[1])
            });
        }
        assert_eq!(asked, 4);
    }

    #[test]
    fn a_new_table_keeps_the_cursor_and_uses_the_new_providers() {
        let mut c = Cursors::new(0);
        assert_eq!(send(&mut c, 1, 10, &[1, 2, 3], 2), [1, 2]);
        // Provider 3 left: the cursor (at 2) wraps into the shorter list.
        assert_eq!(send(&mut c, 2, 10, &[1, 2], 3), [1, 2, 1]);
        assert_eq!(send(&mut c, 3, 10, &[], 0), Vec::<u16>::new());
        let (p, _) = c.route(3, Channel(10), || ids(&[]));
        assert!(p.is_empty());
    }
}
