//! Handlers, the request context they receive, and the channel → handler table.
//!
//! A sync handler gets a [`Request`] whose payload is borrowed from the
//! connection's receive buffer (zero-copy) and may [`Request::reply`] at once.
//! An async handler gets an [`OwnedRequest`] (payload copied once) and may
//! await before replying. A request whose handler finishes without replying
//! is answered with an error frame ([`ErrorCode::NoReply`]) so the caller
//! fails fast instead of waiting for its timeout; one whose handler panicked
//! is answered with [`ErrorCode::HandlerPanicked`] (see [`crate::fault`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{Channel, NodeId};
use crate::conn::Conn;
use crate::error::{BusError, ErrorCode, ReplyError};
use crate::frame::{FrameKind, Meta};
use crate::shard::LocalBus;

type SyncFn = dyn Fn(&mut Request<'_>) + Send + Sync + 'static;
pub(crate) type AsyncFn =
    dyn Fn(OwnedRequest) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync + 'static;

/// A message handler bound to a channel.
#[derive(Clone)]
pub enum Handler {
    /// Runs inline on the receiving shard with the payload borrowed in place.
    Sync(Arc<SyncFn>),
    /// Spawned as a task on the receiving shard; may await.
    Async(Arc<AsyncFn>),
}

impl Handler {
    /// A handler that runs inline: `|req| { req.reply(b"pong").ok(); }`.
    pub fn sync(f: impl Fn(&mut Request<'_>) + Send + Sync + 'static) -> Handler {
        Handler::Sync(Arc::new(f))
    }

    /// A handler that may await: `|req| async move { req.reply(b"pong").ok(); }`.
    ///
    /// The closure is shared by every shard; the future it returns runs on one
    /// shard and need not be `Send`.
    pub fn asynchronous<F, Fut>(f: F) -> Handler
    where
        F: Fn(OwnedRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Handler::Async(Arc::new(move |r| Box::pin(f(r))))
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Sync(_) => "Handler::Sync",
            Handler::Async(_) => "Handler::Async",
        })
    }
}

/// An immutable channel → handler map; replaced as a whole on change.
///
/// Looked up once per delivered message, so lookups go through a two-level
/// index by the channel's high and low bytes (no hashing): a page of 256
/// slot numbers (512 bytes) exists only for high bytes some channel uses,
/// and a slot number points into the handlers kept in channel order.
/// Changes rebuild the index (they are rare: subscribe and unsubscribe).
#[derive(Clone)]
pub struct HandlerTable {
    /// The bound channels with their handlers, in channel order.
    handlers: Vec<(Channel, Handler)>,
    /// Per high byte, the slot numbers of its 256 channels: 0 for none,
    /// `i + 1` for `handlers[i]`.
    pages: Box<[Option<Box<Page>>; PAGES]>,
}

/// Pages of the index: one per high byte of a channel.
const PAGES: usize = 256;
/// A page: one slot number per low byte of a channel.
type Page = [u16; 256];

impl Default for HandlerTable {
    fn default() -> HandlerTable {
        HandlerTable::build(Vec::new())
    }
}

impl std::fmt::Debug for HandlerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.handlers.iter().map(|(c, h)| (c, h)))
            .finish()
    }
}

impl HandlerTable {
    /// The handler of `channel`.
    #[inline]
    pub fn get(&self, channel: Channel) -> Option<&Handler> {
        let [hi, lo] = channel.0.to_be_bytes();
        let slot = self.pages[usize::from(hi)].as_ref()?[usize::from(lo)];
        let (_, handler) = self.handlers.get(usize::from(slot).checked_sub(1)?)?;
        Some(handler)
    }

    /// A table with `channel` bound to `handler`; reserved channels are refused.
    pub fn with(&self, channel: Channel, handler: Handler) -> Result<HandlerTable, BusError> {
        crate::error::check_user_channel(channel)?;
        let mut handlers = self.handlers.clone();
        match handlers.binary_search_by_key(&channel, |(c, _)| *c) {
            Ok(i) => handlers[i].1 = handler,
            Err(i) => handlers.insert(i, (channel, handler)),
        }
        Ok(HandlerTable::build(handlers))
    }

    /// A table without `channel`.
    pub fn without(&self, channel: Channel) -> HandlerTable {
        let Ok(i) = self.handlers.binary_search_by_key(&channel, |(c, _)| *c) else {
            return self.clone();
        };
        let mut handlers = self.handlers.clone();
        handlers.remove(i);
        HandlerTable::build(handlers)
    }

    /// The channels served, sorted.
    pub fn channels(&self) -> Vec<Channel> {
        self.handlers.iter().map(|(c, _)| *c).collect()
    }

    /// The table of `handlers` (sorted by channel), its index built. At most
    /// 65,500 user channels exist, so a slot number (`i + 1`) always fits in
    /// a `u16`.
    fn build(handlers: Vec<(Channel, Handler)>) -> HandlerTable {
        let mut pages: Box<[Option<Box<Page>>; PAGES]> = Box::new(std::array::from_fn(|_| None));
        for (i, (channel, _)) in handlers.iter().enumerate() {
            let [hi, lo] = channel.0.to_be_bytes();
            let page = pages[usize::from(hi)].get_or_insert_with(|| Box::new([0; 256]));
            page[usize::from(lo)] = (i + 1) as u16;
        }
        HandlerTable { handlers, pages }
    }
}

/// Where a reply goes.
pub(crate) enum ReplyTo {
    /// Nowhere: the message was one-way.
    Nobody,
    /// Back over the connection the request came in on (a `call` when
    /// `correlation` is 0: its reply goes to `reply_channel`).
    Conn {
        conn: Rc<Conn>,
        correlation: u64,
        channel: Channel,
        reply_channel: Channel,
    },
    /// To a waiter on this shard (the node served its own request).
    Waiter(crate::window::Waiter),
    /// To this node's own reply-channel handler (`call` served locally).
    LocalCall {
        bus: LocalBus,
        channel: Channel,
        reply_channel: Channel,
    },
}

impl ReplyTo {
    /// When the message arrived — its read, for one from another node (see
    /// [`Conn::arrival`]); now otherwise — and whether the clock was read
    /// for it just now.
    pub(crate) fn arrival(&self) -> (std::time::Instant, bool) {
        match self {
            ReplyTo::Conn { conn, .. } => conn.arrival(),
            _ => (std::time::Instant::now(), true),
        }
    }

    /// Whether the answer can no longer reach anyone who waits for it: the
    /// connection of a remote request closed.
    pub(crate) fn is_gone(&self) -> bool {
        matches!(self, ReplyTo::Conn { conn, correlation, .. } if *correlation != 0 && conn.is_closed())
    }

    /// Answers with an error instead of a reply: an error frame to a
    /// remote caller (a refused `call` too, so its sender can report it),
    /// an error to a local waiter, the send-error hook for a local `call`.
    pub(crate) fn fail(self, me: NodeId, code: ErrorCode) {
        match self {
            ReplyTo::Nobody => {}
            ReplyTo::Conn {
                conn,
                correlation,
                channel,
                reply_channel,
            } => {
                conn.push_error(me, &answered(me, correlation, channel, reply_channel), code);
            }
            ReplyTo::Waiter(tx) => {
                let _ = tx.send(Err(BusError::Remote { peer: me, code }), None);
            }
            ReplyTo::LocalCall {
                bus,
                channel,
                reply_channel,
            } => bus.send_failed(crate::error::SendFailure {
                op: crate::error::SendOp::Call,
                channel,
                reply_channel,
                peer: Some(me),
                error: BusError::Remote { peer: me, code },
            }),
        }
    }
}

/// The request an error frame answers (what the frame echoes of it).
fn answered(me: NodeId, correlation: u64, channel: Channel, reply_channel: Channel) -> Meta {
    Meta {
        kind: FrameKind::Request,
        channel,
        reply_channel,
        source: me,
        correlation,
        ext: crate::frame::Ext::NONE,
    }
}

/// The reply side of a request; answers `NoReply` if dropped unanswered.
pub(crate) struct Replier {
    to: ReplyTo,
    me: NodeId,
    max_payload: u32,
    /// The sender expects an answer (whether or not it was given yet).
    expected: bool,
}

impl Replier {
    pub(crate) fn new(to: ReplyTo, me: NodeId, max_payload: u32) -> Replier {
        let expected = !matches!(to, ReplyTo::Nobody);
        Replier {
            to,
            me,
            max_payload,
            expected,
        }
    }

    /// Why there is nobody to answer: a one-way message, or an answer given.
    fn nobody(&self) -> ReplyError {
        if self.expected {
            ReplyError::AlreadyReplied
        } else {
            ReplyError::NotExpected
        }
    }

    fn reply(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        if bytes.len() > self.max_payload as usize {
            return Err(ReplyError::TooLarge {
                len: bytes.len(),
                max: self.max_payload,
            });
        }
        match std::mem::replace(&mut self.to, ReplyTo::Nobody) {
            ReplyTo::Nobody => Err(self.nobody()),
            ReplyTo::Conn {
                conn,
                correlation,
                reply_channel,
                ..
            } => {
                let meta = Meta {
                    kind: FrameKind::Reply,
                    channel: reply_channel,
                    reply_channel: Channel(0),
                    source: self.me,
                    correlation,
                    ext: crate::frame::Ext::NONE,
                };
                conn.push(&meta, bytes)
                    .map_err(|_| ReplyError::Undeliverable)
            }
            ReplyTo::Waiter(tx) => tx
                .send(Ok(bytes.to_vec()), None)
                .map_err(|_| ReplyError::Undeliverable),
            ReplyTo::LocalCall {
                bus, reply_channel, ..
            } => {
                bus.deliver_reply_locally(reply_channel, bytes.to_vec());
                Ok(())
            }
        }
    }

    /// Answers with an application error instead of a reply (at most once,
    /// like `reply`).
    fn reply_error(&mut self, code: u16, message: &str) -> Result<(), ReplyError> {
        let me = self.me;
        // The error frame fits the payload bound whatever it is.
        let room = (self.max_payload as usize).saturating_sub(4);
        let message = crate::error::cut_message(message, room.min(crate::error::MAX_APP_MESSAGE));
        let error = || BusError::Application {
            peer: me,
            code,
            message: message.to_string(),
        };
        match std::mem::replace(&mut self.to, ReplyTo::Nobody) {
            ReplyTo::Nobody => Err(self.nobody()),
            ReplyTo::Conn {
                conn,
                correlation,
                channel,
                reply_channel,
            } => {
                let payload = crate::error::encode_application(code, message);
                conn.push_error_payload(
                    me,
                    &answered(me, correlation, channel, reply_channel),
                    &payload,
                )
                .map_err(|_| ReplyError::Undeliverable)
            }
            ReplyTo::Waiter(tx) => tx
                .send(Err(error()), None)
                .map_err(|_| ReplyError::Undeliverable),
            ReplyTo::LocalCall {
                bus,
                channel,
                reply_channel,
            } => {
                bus.send_failed(crate::error::SendFailure {
                    op: crate::error::SendOp::Call,
                    channel,
                    reply_channel,
                    peer: Some(me),
                    error: error(),
                });
                Ok(())
            }
        }
    }

    fn expects_reply(&self) -> bool {
        !matches!(self.to, ReplyTo::Nobody)
    }

    /// Whether someone waits for the answer: a remote request (not a
    /// `call`) or this node's own request.
    pub(crate) fn waits(&self) -> bool {
        matches!(self.to, ReplyTo::Waiter(_))
            || matches!(self.to, ReplyTo::Conn { correlation, .. } if correlation != 0)
    }

    /// Gives up the duty to answer without answering (nobody can use it).
    pub(crate) fn forget(&mut self) {
        self.to = ReplyTo::Nobody;
    }

    /// Whether the sender expected an answer and it was given (or handed
    /// on by `next`).
    pub(crate) fn answered(&self) -> bool {
        self.expected && matches!(self.to, ReplyTo::Nobody)
    }

    /// Moves the duty to answer into a new replier; this one is left
    /// answered (a later `reply` is `AlreadyReplied`).
    pub(crate) fn take(&mut self) -> Replier {
        let to = std::mem::replace(&mut self.to, ReplyTo::Nobody);
        Replier::new(to, self.me, self.max_payload)
    }

    /// Answers with what a later pipeline stage answered (see
    /// [`crate::pipeline::upstream`]).
    pub(crate) fn pass_on(mut self, up: crate::pipeline::Upstream) {
        use crate::pipeline::Upstream;
        match up {
            Upstream::Reply(bytes) => {
                let _ = self.reply(&bytes);
            }
            Upstream::Application { code, message } => {
                let _ = self.reply_error(code, &message);
            }
            Upstream::Code(code) => {
                let _ = self.fail(code);
            }
            // Nobody waits any more: no answer at all (not `NoReply`).
            Upstream::Silent => self.to = ReplyTo::Nobody,
        }
    }

    /// Answers with a bus error code instead of a reply (at most once, like
    /// `reply`); e.g. [`ErrorCode::Undecodable`] from a typed handler.
    pub(crate) fn fail(&mut self, code: ErrorCode) -> Result<(), ReplyError> {
        match std::mem::replace(&mut self.to, ReplyTo::Nobody) {
            ReplyTo::Nobody => Err(self.nobody()),
            to => {
                to.fail(self.me, code);
                Ok(())
            }
        }
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        // A one-way message, or an answer already given: nothing to do
        // (the common case, checked before anything else).
        if matches!(self.to, ReplyTo::Nobody) {
            return;
        }
        let to = std::mem::replace(&mut self.to, ReplyTo::Nobody);
        if crate::fault::unwinding_handler() {
            // The remains of a panicked handler: every caller learns it.
            to.fail(self.me, ErrorCode::HandlerPanicked);
            return;
        }
        match to {
            // A `call` needs no reply.
            ReplyTo::Conn { correlation: 0, .. } | ReplyTo::LocalCall { .. } => {}
            to => to.fail(self.me, ErrorCode::NoReply),
        }
    }
}

/// A request as a sync handler sees it: payload borrowed from the receive buffer.
pub struct Request<'a> {
    pub(crate) meta: &'a Meta,
    pub(crate) payload: &'a [u8],
    pub(crate) replier: Replier,
    pub(crate) bus: &'a LocalBus,
    pub(crate) deadline: Option<Instant>,
}

impl<'a> Request<'a> {
    /// The request bytes, borrowed in place (valid for the handler call).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The caller's node id.
    pub fn source(&self) -> NodeId {
        self.meta.source
    }

    /// The channel the request was sent to.
    pub fn channel(&self) -> Channel {
        self.meta.channel
    }

    /// The caller's reply channel (`call`); `Channel(0)` otherwise.
    pub fn reply_channel(&self) -> Channel {
        self.meta.reply_channel
    }

    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.replier.expects_reply()
    }

    /// Sends the reply (at most once).
    pub fn reply(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        self.replier.reply(bytes)
    }

    /// Answers with an application error instead of a reply (at most once,
    /// like [`Request::reply`]): the caller gets
    /// [`BusError::Application`] with `code` and `message` (cut to
    /// [`crate::error::MAX_APP_MESSAGE`] bytes). It is not retried on
    /// another provider, and circuit breakers do not count it.
    pub fn reply_error(&mut self, code: u16, message: &str) -> Result<(), ReplyError> {
        self.replier.reply_error(code, message)
    }

    /// The bus of the shard running this handler, to send from inside it.
    pub fn bus(&self) -> &LocalBus {
        self.bus
    }

    /// When the caller stops waiting: the remaining time it sent with the
    /// request, counted from the request's arrival here. `None` for one-way
    /// messages, `call`s and requests sent without a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left until [`Request::deadline`] (zero once it passed).
    pub fn remaining(&self) -> Option<Duration> {
        remaining(self.deadline)
    }

    /// Hands the message to the next stage of its pipeline (see
    /// [`crate::pipeline`]): a one-way message goes on as one; a request
    /// goes on as a request within this one's deadline, and the next
    /// stages' answer becomes this request's answer (so this handler must
    /// not reply too: a later `reply` is `AlreadyReplied`).
    ///
    /// `EndOfRoute` at the last stage (or for a message sent without a
    /// route); errors known at once (no provider, payload too large) are
    /// returned and leave the answer to this handler.
    pub fn next(&mut self, payload: &[u8]) -> Result<(), BusError> {
        self.bus
            .next_stage(self.meta, payload, &mut self.replier, self.deadline)
    }

    /// The pipeline stages after this one (empty at the last stage).
    pub fn route(&self) -> Vec<Channel> {
        self.meta.ext.route.channels().collect()
    }

    /// A request made on behalf of this one: it gets this request's
    /// remaining deadline (or [`NESTED_TIMEOUT`] when this one has none).
    /// The returned future owns what it needs, so a sync handler can spawn
    /// it on its shard.
    pub fn request(
        &self,
        channel: Channel,
        payload: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>, BusError>> + 'static {
        nested(self.bus.clone(), self.deadline, channel, payload.to_vec())
    }

    /// An owned copy for work that must outlive this call (one payload copy).
    pub fn into_owned(self) -> OwnedRequest {
        OwnedRequest {
            meta: *self.meta,
            payload: self.payload.to_vec(),
            replier: self.replier,
            bus: self.bus.clone(),
            deadline: self.deadline,
        }
    }

    /// Answers with a bus error code instead of a reply (e.g.
    /// `Backpressure` from a full [`crate::watch::Watch`]); nothing for a
    /// one-way message or a request already answered.
    pub(crate) fn fail(&mut self, code: ErrorCode) {
        let _ = self.replier.fail(code);
    }
}

/// A request as an async handler sees it: payload owned.
pub struct OwnedRequest {
    pub(crate) meta: Meta,
    pub(crate) payload: Vec<u8>,
    pub(crate) replier: Replier,
    pub(crate) bus: LocalBus,
    pub(crate) deadline: Option<Instant>,
}

impl OwnedRequest {
    /// The request bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The caller's node id.
    pub fn source(&self) -> NodeId {
        self.meta.source
    }

    /// The channel the request was sent to.
    pub fn channel(&self) -> Channel {
        self.meta.channel
    }

    /// The caller's reply channel (`call`); `Channel(0)` otherwise.
    pub fn reply_channel(&self) -> Channel {
        self.meta.reply_channel
    }

    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.replier.expects_reply()
    }

    /// Sends the reply (at most once).
    pub fn reply(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        self.replier.reply(bytes)
    }

    /// Answers with an application error (see [`Request::reply_error`]).
    pub fn reply_error(&mut self, code: u16, message: &str) -> Result<(), ReplyError> {
        self.replier.reply_error(code, message)
    }

    /// The bus of the shard running this handler.
    pub fn bus(&self) -> &LocalBus {
        &self.bus
    }

    /// When the caller stops waiting (see [`Request::deadline`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left until [`OwnedRequest::deadline`] (zero once it passed).
    pub fn remaining(&self) -> Option<Duration> {
        remaining(self.deadline)
    }

    /// Whether this request, from another node, can no longer be of use
    /// now that its turn came (a serial lane): its caller's connection
    /// closed, or its deadline passed. Then it is dropped unanswered and
    /// counted, like one that waited in the async-handler queue.
    pub(crate) fn missed_its_turn(&mut self) -> bool {
        let unwanted = self.bus.unwanted(&self.replier.to, self.deadline);
        if unwanted {
            self.replier.forget();
        }
        unwanted
    }

    /// Hands the message to the next stage of its pipeline (see
    /// [`Request::next`]).
    pub fn next(&mut self, payload: &[u8]) -> Result<(), BusError> {
        self.bus
            .next_stage(&self.meta, payload, &mut self.replier, self.deadline)
    }

    /// The pipeline stages after this one (empty at the last stage).
    pub fn route(&self) -> Vec<Channel> {
        self.meta.ext.route.channels().collect()
    }

    /// A request made on behalf of this one, within its remaining deadline
    /// (see [`Request::request`]).
    pub async fn request(&self, channel: Channel, payload: &[u8]) -> Result<Vec<u8>, BusError> {
        self.bus
            .request_until(channel, payload, nested_deadline(self.deadline))
            .await
    }
}

/// How long a request made from a handler waits when the request being
/// handled carries no deadline (a one-way message, a `call`).
pub const NESTED_TIMEOUT: Duration = Duration::from_secs(5);

/// The time left until `deadline` (zero once it passed).
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

pub(crate) fn nested_deadline(deadline: Option<Instant>) -> Instant {
    deadline.unwrap_or_else(|| crate::timeouts::deadline(Instant::now(), NESTED_TIMEOUT))
}

async fn nested(
    bus: LocalBus,
    deadline: Option<Instant>,
    channel: Channel,
    payload: Vec<u8>,
) -> Result<Vec<u8>, BusError> {
    bus.request_until(channel, &payload, nested_deadline(deadline))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(n: u8) -> Handler {
        Handler::sync(move |req| {
            req.reply(&[n]).ok();
        })
    }

    /// Whether `a` and `b` are the same handler (they share its pointer).
    fn same(a: &Handler, b: &Handler) -> bool {
        match (a, b) {
            (Handler::Sync(a), Handler::Sync(b)) => Arc::ptr_eq(a, b),
            (Handler::Async(a), Handler::Async(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    #[test]
    fn lookups_find_each_channel_across_pages_and_nothing_else() {
        let served = [0u16, 1, 255, 256, 257, 4660, 65280, 65499];
        let handlers: Vec<Handler> = (0..served.len() as u8).map(tagged).collect();
        let mut t = HandlerTable::default();
        for (&c, h) in served.iter().zip(&handlers) {
            t = t.with(Channel(c), h.clone()).unwrap();
        }
        for (&c, h) in served.iter().zip(&handlers) {
            assert!(same(t.get(Channel(c)).unwrap(), h), "channel {c}");
        }
        for c in [2u16, 254, 258, 511, 4661, 65281, 65535] {
            assert!(t.get(Channel(c)).is_none(), "channel {c}");
        }
        let sorted: Vec<Channel> = served.iter().map(|&c| Channel(c)).collect();
        assert_eq!(t.channels(), sorted);
    }

    #[test]
    fn with_and_without_leave_the_original_table_alone() {
        let a = HandlerTable::default()
            .with(Channel(300), tagged(1))
            .unwrap();
        let b = a.with(Channel(301), tagged(2)).unwrap();
        let c = b.without(Channel(300));
        assert_eq!(a.channels(), vec![Channel(300)]);
        assert_eq!(b.channels(), vec![Channel(300), Channel(301)]);
        assert_eq!(c.channels(), vec![Channel(301)]);
        let empty = c.without(Channel(301));
        assert!(empty.channels().is_empty());
        assert!(
            empty.pages.iter().all(Option::is_none),
            "an empty page is dropped"
        );
        // Rebinding replaces.
        let h = tagged(3);
        let d = b.with(Channel(300), h.clone()).unwrap();
        assert!(same(d.get(Channel(300)).unwrap(), &h));
        assert_eq!(d.channels().len(), 2);
    }

    #[test]
    fn reserved_channels_are_refused() {
        let t = HandlerTable::default();
        for c in [Channel::RESERVED_START, Channel::HELLO.0] {
            assert!(matches!(
                t.with(Channel(c), tagged(0)),
                Err(BusError::ReservedChannel { channel }) if channel == Channel(c)
            ));
        }
    }
}
