//! The frame extensions: the optional fields that follow the header when
//! its flags say so (the bytes are drawn in the [`super`] module docs).

use super::{FrameError, FrameKind, FLAG_EXT, MAX_ROUTE};
use crate::channel::Channel;
use crate::trace::TraceContext;

/// A frame's optional extensions (see the module docs for their bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ext {
    /// The caller's remaining time in microseconds (requests only).
    pub deadline: Option<u32>,
    /// The pipeline stages after this one (requests and one-way messages).
    pub route: Route,
    /// The sender's trace (requests and one-way messages; see
    /// [`crate::trace`]).
    pub trace: Option<TraceContext>,
}

/// Tag of the deadline field.
const TAG_DEADLINE: u8 = 1;
/// Tag of the route field.
const TAG_ROUTE: u8 = 2;
/// Tag of the trace-context field.
const TAG_TRACE: u8 = 3;

impl Ext {
    /// No extension.
    pub const NONE: Ext = Ext {
        deadline: None,
        route: Route::EMPTY,
        trace: None,
    };

    /// Whether there is no extension (no block on the wire).
    pub fn is_empty(&self) -> bool {
        self.deadline.is_none() && self.route.is_empty() && self.trace.is_none()
    }

    /// The header flags announcing these extensions.
    pub fn flags(&self) -> u16 {
        if self.is_empty() {
            0
        } else {
            FLAG_EXT
        }
    }

    /// Bytes the extension block takes on the wire (0 without one).
    pub fn wire_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        2 + self.fields_len()
    }

    fn fields_len(&self) -> usize {
        let d = if self.deadline.is_some() { 2 + 4 } else { 0 };
        let r = if self.route.is_empty() {
            0
        } else {
            2 + 2 * self.route.len()
        };
        let t = if self.trace.is_some() {
            2 + TraceContext::LEN
        } else {
            0
        };
        d + r + t
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        if self.is_empty() {
            return;
        }
        out.extend_from_slice(&(self.fields_len() as u16).to_le_bytes());
        if let Some(us) = self.deadline {
            out.extend_from_slice(&[TAG_DEADLINE, 4]);
            out.extend_from_slice(&us.to_le_bytes());
        }
        if !self.route.is_empty() {
            out.extend_from_slice(&[TAG_ROUTE, 2 * self.route.len() as u8]);
            for c in self.route.channels() {
                out.extend_from_slice(&c.0.to_le_bytes());
            }
        }
        if let Some(t) = &self.trace {
            out.extend_from_slice(&[TAG_TRACE, TraceContext::LEN as u8]);
            out.extend_from_slice(&t.to_bytes());
        }
    }

    /// Parses the extension block at the start of `body` (the header's
    /// flags announced one); returns it and how many bytes it took.
    /// Fields with a tag this build does not know are skipped.
    pub(super) fn read(
        flags: u16,
        kind: FrameKind,
        body: &[u8],
    ) -> Result<(Ext, usize), FrameError> {
        let bad = |what| FrameError::BadExtension { flags, what };
        if flags & !FLAG_EXT != 0 {
            return Err(bad("reserved flag bit set"));
        }
        let len = match body {
            [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
            _ => return Err(bad("extension block longer than the payload")),
        };
        if 2 + len > super::MAX_EXT_LEN as usize {
            return Err(bad("extension block longer than MAX_EXT_LEN"));
        }
        let mut fields = body
            .get(2..2 + len)
            .ok_or(bad("extension block longer than the payload"))?;
        if fields.is_empty() {
            return Err(bad("empty extension block"));
        }
        let mut ext = Ext::NONE;
        let (mut seen_deadline, mut seen_route, mut seen_trace) = (false, false, false);
        while !fields.is_empty() {
            let [tag, n, rest @ ..] = fields else {
                return Err(bad("truncated extension field"));
            };
            let n = *n as usize;
            let value = rest
                .get(..n)
                .ok_or(bad("extension field longer than its block"))?;
            match *tag {
                TAG_DEADLINE => {
                    if kind != FrameKind::Request {
                        return Err(bad("deadline on a frame that is not a request"));
                    }
                    let v: [u8; 4] = value.try_into().map_err(|_| bad("deadline not 4 bytes"))?;
                    if std::mem::replace(&mut seen_deadline, true) {
                        return Err(bad("two deadlines"));
                    }
                    ext.deadline = Some(u32::from_le_bytes(v));
                }
                TAG_ROUTE => {
                    if !matches!(kind, FrameKind::Request | FrameKind::OneWay) {
                        return Err(bad("route on a reply, error or control frame"));
                    }
                    if n == 0 || n % 2 != 0 || n / 2 > MAX_ROUTE {
                        return Err(bad("route of 0, odd or more than MAX_ROUTE stages"));
                    }
                    if std::mem::replace(&mut seen_route, true) {
                        return Err(bad("two routes"));
                    }
                    let mut route = Route::EMPTY;
                    for pair in value.chunks_exact(2) {
                        route.push(Channel(u16::from_le_bytes([pair[0], pair[1]])));
                    }
                    ext.route = route;
                }
                TAG_TRACE => {
                    if !matches!(kind, FrameKind::Request | FrameKind::OneWay) {
                        return Err(bad("trace context on a reply, error or control frame"));
                    }
                    let v: &[u8; TraceContext::LEN] = value
                        .try_into()
                        .map_err(|_| bad("trace context not 25 bytes"))?;
                    if std::mem::replace(&mut seen_trace, true) {
                        return Err(bad("two trace contexts"));
                    }
                    ext.trace = Some(TraceContext::from_bytes(v));
                }
                // A field of a later version: skipped.
                _ => {}
            }
            fields = &rest[n..];
        }
        Ok((ext, 2 + len))
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
