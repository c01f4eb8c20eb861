//! The frame extensions: the optional fields that follow the header when
//! its flags say so (the bytes are drawn in the [`super`] module docs).

use super::{FrameError, FrameKind, FLAG_DEADLINE, FLAG_ROUTE, MAX_ROUTE};
use crate::channel::Channel;

/// A frame's optional extensions (see the module docs for their bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ext {
    /// The caller's remaining time in microseconds (requests only).
    pub deadline: Option<u32>,
    /// The pipeline stages after this one (requests and one-way messages).
    pub route: Route,
}

impl Ext {
    /// No extension.
    pub const NONE: Ext = Ext {
        deadline: None,
        route: Route::EMPTY,
    };

    /// The flag bits announcing these extensions.
    pub fn flags(&self) -> u16 {
        let mut f = 0;
        if self.deadline.is_some() {
            f |= FLAG_DEADLINE;
        }
        if !self.route.is_empty() {
            f |= FLAG_ROUTE;
        }
        f
    }

    /// Bytes these extensions take on the wire.
    pub fn wire_len(&self) -> usize {
        let d = if self.deadline.is_some() { 4 } else { 0 };
        let r = if self.route.is_empty() {
            0
        } else {
            1 + 2 * self.route.len()
        };
        d + r
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        if let Some(us) = self.deadline {
            out.extend_from_slice(&us.to_le_bytes());
        }
        if !self.route.is_empty() {
            out.push(self.route.len() as u8);
            for c in self.route.channels() {
                out.extend_from_slice(&c.0.to_le_bytes());
            }
        }
    }

    /// Parses the extensions `flags` announce at the start of `body`;
    /// returns them and how many bytes they took.
    pub(super) fn read(
        flags: u16,
        kind: FrameKind,
        body: &[u8],
    ) -> Result<(Ext, usize), FrameError> {
        let mut ext = Ext::NONE;
        let mut at = 0;
        if flags & !(FLAG_DEADLINE | FLAG_ROUTE) != 0 {
            return Err(FrameError::BadExtension {
                flags,
                what: "unknown flag bit",
            });
        }
        if flags & FLAG_DEADLINE != 0 {
            if kind != FrameKind::Request {
                return Err(FrameError::BadExtension {
                    flags,
                    what: "deadline on a frame that is not a request",
                });
            }
            let b: [u8; 4] =
                body.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(FrameError::BadExtension {
                        flags,
                        what: "deadline longer than the payload",
                    })?;
            ext.deadline = Some(u32::from_le_bytes(b));
            at = 4;
        }
        if flags & FLAG_ROUTE != 0 {
            if !matches!(kind, FrameKind::Request | FrameKind::OneWay) {
                return Err(FrameError::BadExtension {
                    flags,
                    what: "route on a reply, error or control frame",
                });
            }
            let n = *body.get(at).ok_or(FrameError::BadExtension {
                flags,
                what: "route longer than the payload",
            })? as usize;
            if n == 0 || n > MAX_ROUTE {
                return Err(FrameError::BadExtension {
                    flags,
                    what: "route of 0 or more than MAX_ROUTE stages",
                });
            }
            let hops = body
                .get(at + 1..at + 1 + 2 * n)
                .ok_or(FrameError::BadExtension {
                    flags,
                    what: "route longer than the payload",
                })?;
            let mut route = Route::EMPTY;
            for pair in hops.chunks_exact(2) {
                route.push(Channel(u16::from_le_bytes([pair[0], pair[1]])));
            }
            ext.route = route;
            at += 1 + 2 * n;
        }
        Ok((ext, at))
    }
}

/// The pipeline stages still ahead of a message, the next first (at most
/// [`MAX_ROUTE`]); kept inline so a [`super::Meta`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    len: u8,
    hops: [u16; MAX_ROUTE],
}

impl Route {
    /// No stage ahead.
    pub const EMPTY: Route = Route {
        len: 0,
        hops: [0; MAX_ROUTE],
    };

    /// The route through `stages`, or `None` when there are more than
    /// [`MAX_ROUTE`].
    pub fn new(stages: &[Channel]) -> Option<Route> {
        if stages.len() > MAX_ROUTE {
            return None;
        }
        let mut r = Route::EMPTY;
        for &c in stages {
            r.push(c);
        }
        Some(r)
    }

    fn push(&mut self, c: Channel) {
        self.hops[self.len as usize] = c.0;
        self.len += 1;
    }

    /// The stages, the next first.
    pub fn channels(&self) -> impl Iterator<Item = Channel> + '_ {
        self.hops[..self.len as usize].iter().map(|&c| Channel(c))
    }

    /// How many stages are left.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no stage is left (this is the last one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next stage and the route after it.
    pub fn split_first(&self) -> Option<(Channel, Route)> {
        if self.is_empty() {
            return None;
        }
        let mut rest = Route::EMPTY;
        for c in self.channels().skip(1) {
            rest.push(c);
        }
        Some((Channel(self.hops[0]), rest))
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.channels()).finish()
    }
}
