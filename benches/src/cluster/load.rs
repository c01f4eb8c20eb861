//! Load for the cluster run: a fixed number of requests kept in flight from
//! the driver node, each outcome tallied.
//!
//! A request ends in a reply, or in a typed error (`failed`), or only in its
//! timeout (`lost`: the bus neither answered it nor said why). A killed
//! provider's requests must fail with a typed error, never be lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domi::{BusError, Node};

use super::node::WORK;

/// How long a request may take before it counts as lost.
pub const LOST_AFTER: Duration = Duration::from_secs(5);

/// Outcomes so far.
#[derive(Clone, Default)]
pub struct Tally {
    /// Replies.
    pub ok: u64,
    /// Replies by the id of the node that answered (index = id).
    pub by_responder: Vec<u64>,
    /// Typed errors, by variant.
    pub failed: BTreeMap<String, u64>,
    /// Requests that ended only by their timeout.
    pub lost: u64,
    /// When the last typed error or loss happened.
    pub last_failure: Option<Instant>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("ok", &self.ok)
            .field("responders", &self.responders())
            .field("failed", &self.failed)
            .field("lost", &self.lost)
            .finish()
    }
}

impl Tally {
    /// Typed errors in all.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// How many nodes answered at least once.
    pub fn responders(&self) -> usize {
        self.by_responder.iter().filter(|&&n| n > 0).count()
    }

    /// The largest share of the replies one node gave, and its id.
    pub fn top_responder(&self) -> Option<(u16, f64)> {
        let (id, &n) = self
            .by_responder
            .iter()
            .enumerate()
            .max_by_key(|(_, &n)| n)?;
        (n > 0).then(|| (id as u16, n as f64 / self.ok.max(1) as f64))
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &Tally) -> Tally {
        let mut failed = self.failed.clone();
        for (k, v) in &earlier.failed {
            if let Some(x) = failed.get_mut(k) {
                *x -= v;
            }
        }
        failed.retain(|_, v| *v > 0);
        let mut by_responder = self.by_responder.clone();
        for (now, before) in by_responder.iter_mut().zip(&earlier.by_responder) {
            *now -= before;
        }
        Tally {
            ok: self.ok - earlier.ok,
            by_responder,
            failed,
            lost: self.lost - earlier.lost,
            last_failure: self.last_failure,
        }
    }
}

/// The name of an error's variant (`PeerLost`, `NoProvider`, …).
pub fn variant(e: &BusError) -> String {
    let d = format!("{e:?}");
    d.split([' ', '(', '{']).next().unwrap_or("?").to_owned()
}

/// Requests kept in flight by as many threads.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `in_flight` requests in a loop on `node`.
    pub fn start(node: &Node, in_flight: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally {
            by_responder: vec![0; 1024],
            ..Tally::default()
        }));
        let threads = (0..in_flight)
            .map(|_| {
                let (node, stop, tally) = (node.clone(), stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = node.request(WORK, b"scale", LOST_AFTER);
                        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                        match r {
                            Ok(reply) => {
                                t.ok += 1;
                                if let [a, b] = reply[..] {
                                    let id = usize::from(u16::from_le_bytes([a, b]));
                                    if let Some(n) = t.by_responder.get_mut(id) {
                                        *n += 1;
                                    }
                                }
                            }
                            Err(BusError::Timeout { .. }) => {
                                t.lost += 1;
                                t.last_failure = Some(Instant::now());
                            }
                            Err(e) => {
                                *t.failed.entry(variant(&e)).or_default() += 1;
                                t.last_failure = Some(Instant::now());
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
        }
    }

    /// The outcomes so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops and returns every outcome (each thread finishes its request).
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.tally()
    }
}
