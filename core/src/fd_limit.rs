//! The process's open-file limit: each shard of a node may hold two sockets
//! per peer (one dialled, one accepted) for up to 1023 peers, more than the
//! usual soft limit of 1024 descriptors. The first node started in a process raises the
//! soft limit to the hard one, as the Go runtime does at start-up; the hard
//! limit is never touched.

use std::sync::Once;

use tracing::{debug, warn};

/// The soft limit to set, if any: the hard limit, when the soft one is
/// lower (an unlimited hard limit is capped at `cap`, since some kernels
/// refuse an infinite `RLIMIT_NOFILE`).
pub(crate) fn raised(soft: u64, hard: u64, cap: u64) -> Option<u64> {
    let target = hard.min(cap);
    (soft < target).then_some(target)
}

/// The cap on an unlimited hard limit (`fs.nr_open`'s usual default).
const UNLIMITED_CAP: u64 = 1 << 20;

/// Raises the soft open-file limit once per process (see the module docs).
pub(crate) fn raise_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return;
        };
        if let Some(target) = raised(soft, hard, UNLIMITED_CAP) {
            match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
                Ok(()) => debug!(from = soft, to = target, "raised the open-file soft limit"),
                Err(e) => {
                    warn!(soft, hard, error = %e, "could not raise the open-file soft limit; a node with many peers may run out of sockets")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_the_hard_one_and_never_falls() {
        assert_eq!(raised(1024, 524_288, UNLIMITED_CAP), Some(524_288));
        assert_eq!(raised(1024, u64::MAX, UNLIMITED_CAP), Some(UNLIMITED_CAP));
        assert_eq!(raised(4096, 4096, UNLIMITED_CAP), None);
        assert_eq!(raised(65_536, 4096, UNLIMITED_CAP), None);
    }
}
