//! Connection admission as a pure function: the admin server holds at most
//! [`MAX_CONNECTIONS`] connections, each on a thread of its own, and makes
//! room for a new one by closing the connection that has waited longest
//! without finishing its request (a slow or stalled client).

use std::time::Instant;

/// Most admin connections open at once.
pub const MAX_CONNECTIONS: usize = 32;

/// What a live connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading the request head or its (discarded) body: waiting on the client.
    Reading,
    /// Being answered: waiting on the node, not the client.
    Answering,
    /// Answered; waiting for the client to close (bounded linger).
    Closing,
    /// Already told to close; its thread is on its way out.
    Evicted,
}

/// A live connection as admission sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Connection id.
    pub id: u64,
    /// What it is doing.
    pub phase: Phase,
    /// When it was accepted.
    pub since: Instant,
}

/// The decision for a newly accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// There is room: serve it.
    Admit,
    /// Close connection `id` first (the oldest one waiting on its client),
    /// then ask again once its thread has left.
    Evict(u64),
    /// Full, and nothing can be evicted right now: wait for a slot to free.
    Wait,
}

/// Decides for a new connection, given the live ones and the cap.
pub fn admit(live: &[Slot], cap: usize) -> Admission {
    if live.len() < cap {
        return Admission::Admit;
    }
    // Connections already on their way out will free their slots.
    if live.iter().any(|s| s.phase == Phase::Evicted) {
        return Admission::Wait;
    }
    live.iter()
        .filter(|s| matches!(s.phase, Phase::Reading | Phase::Closing))
        .min_by_key(|s| (s.phase == Phase::Reading, s.since, s.id))
        .map_or(Admission::Wait, |s| Admission::Evict(s.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slot(id: u64, phase: Phase, at: u64) -> Slot {
        let t0 = Instant::now();
        Slot {
            id,
            phase,
            since: t0 + Duration::from_secs(at),
        }
    }

    #[test]
    fn admits_below_the_cap() {
        assert_eq!(admit(&[], 2), Admission::Admit);
        assert_eq!(admit(&[slot(1, Phase::Reading, 0)], 2), Admission::Admit);
    }

    #[test]
    fn evicts_the_oldest_waiting_on_its_client() {
        let t0 = Instant::now();
        let at = |id, phase, s| Slot {
            id,
            phase,
            since: t0 + Duration::from_secs(s),
        };
        let live = [
            at(1, Phase::Answering, 0),
            at(2, Phase::Reading, 3),
            at(3, Phase::Reading, 1),
            at(4, Phase::Reading, 2),
        ];
        assert_eq!(admit(&live, 4), Admission::Evict(3));
        // A connection lingering after its answer goes before any reader.
        let live = [at(1, Phase::Reading, 0), at(2, Phase::Closing, 5)];
        assert_eq!(admit(&live, 2), Admission::Evict(2));
    }

    #[test]
    fn never_evicts_one_being_answered_and_waits_for_leavers() {
        let live = [slot(1, Phase::Answering, 0), slot(2, Phase::Answering, 0)];
        assert_eq!(admit(&live, 2), Admission::Wait);
        let live = [slot(1, Phase::Evicted, 0), slot(2, Phase::Reading, 0)];
        assert_eq!(admit(&live, 2), Admission::Wait);
        assert_eq!(admit(&[], 0), Admission::Wait);
    }
}
