//! The serving side of typed messages: [`Handler`] constructors that decode
//! the request, run the user's function and encode its answer.

use std::future::Future;
use std::sync::Arc;

use tracing::{debug, warn};

use super::{AppError, Codec, Context, Postcard};
use crate::channel::{Channel, NodeId};
use crate::error::{ErrorCode, ReplyError};
use crate::handler::{Handler, OwnedRequest, Request};

impl Handler {
    /// An async typed handler over [`Postcard`]: `f` gets the decoded
    /// request and answers a response or an [`AppError`]. Like
    /// [`Handler::asynchronous`] it runs as a task and may await (and
    /// counts against `max_handlers`).
    ///
    /// A request that does not decode as `Req` is answered with
    /// [`ErrorCode::Undecodable`] without running `f`; see
    /// [`crate::typed`] for every outcome.
    ///
    /// ```
    /// use domi_core::typed::AppError;
    /// use domi_core::Handler;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Reserve { item: String, quantity: u32 }
    ///
    /// let handler = Handler::typed(|req: Reserve| async move {
    ///     if req.quantity > 10 {
    ///         return Err(AppError::new(409, "out of stock"));
    ///     }
    ///     Ok(format!("{} x {} reserved", req.quantity, req.item))
    /// });
    /// ```
    pub fn typed<Req, Resp, F, Fut>(f: F) -> Handler
    where
        Postcard: Codec<Req> + Codec<Resp>,
        Req: 'static,
        Resp: 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, AppError>> + 'static,
    {
        Handler::typed_with(Postcard, move |req, _: Context| f(req))
    }

    /// An inline typed handler over [`Postcard`]: like [`Handler::typed`],
    /// but `f` runs on the receiving shard at once, as [`Handler::sync`]
    /// does (no task, no copy of the payload); it must not block.
    ///
    /// ```
    /// use domi_core::typed::AppError;
    /// use domi_core::Handler;
    ///
    /// let handler = Handler::typed_sync(|s: String| {
    ///     if s.is_empty() {
    ///         return Err(AppError::new(1, "empty string"));
    ///     }
    ///     Ok(s.to_uppercase())
    /// });
    /// ```
    pub fn typed_sync<Req, Resp, F>(f: F) -> Handler
    where
        Postcard: Codec<Req> + Codec<Resp>,
        Req: 'static,
        Resp: 'static,
        F: Fn(Req) -> Result<Resp, AppError> + Send + Sync + 'static,
    {
        Handler::typed_sync_with(Postcard, move |req, _: Context| f(req))
    }

    /// [`Handler::typed`] with another codec, and the message's
    /// [`Context`] (its sender, its channel, the shard's bus) for `f`.
    ///
    /// ```
    /// # #[cfg(feature = "json")] {
    /// use domi_core::typed::{AppError, Context, Json};
    /// use domi_core::{Channel, Handler};
    /// use std::time::Duration;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Price { item: String }
    ///
    /// // Asks another channel from inside the handler, over the shard's bus.
    /// let handler = Handler::typed_with(Json, |req: Price, ctx: Context| async move {
    ///     let cents: u64 = ctx
    ///         .bus()
    ///         .request_typed(Channel(71), &req.item, Duration::from_secs(1))
    ///         .await
    ///         .map_err(|e| AppError::new(502, e.to_string()))?;
    ///     Ok(cents)
    /// });
    /// # }
    /// ```
    pub fn typed_with<C, Req, Resp, F, Fut>(codec: C, f: F) -> Handler
    where
        C: Codec<Req> + Codec<Resp>,
        Req: 'static,
        Resp: 'static,
        F: Fn(Req, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, AppError>> + 'static,
    {
        let codec = Arc::new(codec);
        Handler::asynchronous(move |mut req: OwnedRequest| {
            let run = decode::<C, Req>(&codec, &mut req).map(|value| {
                let ctx = Context {
                    source: req.source(),
                    channel: req.channel(),
                    expects_reply: req.expects_reply(),
                    bus: req.bus().clone(),
                    deadline: req.deadline(),
                };
                f(value, ctx)
            });
            let codec = codec.clone();
            async move {
                if let Some(run) = run {
                    let result = run.await;
                    answer::<C, Resp>(&codec, &mut req, result);
                }
            }
        })
    }

    /// [`Handler::typed_sync`] with another codec, and the message's
    /// [`Context`] for `f`.
    ///
    /// ```
    /// use domi_core::typed::{Context, Postcard};
    /// use domi_core::Handler;
    ///
    /// // Answers with the caller's node id.
    /// let handler = Handler::typed_sync_with(Postcard, |_: (), ctx: Context| Ok(ctx.source().get()));
    /// ```
    pub fn typed_sync_with<C, Req, Resp, F>(codec: C, f: F) -> Handler
    where
        C: Codec<Req> + Codec<Resp>,
        Req: 'static,
        Resp: 'static,
        F: Fn(Req, Context) -> Result<Resp, AppError> + Send + Sync + 'static,
    {
        Handler::sync(move |req: &mut Request<'_>| {
            let Some(value) = decode::<C, Req>(&codec, req) else {
                return;
            };
            let ctx = Context {
                source: req.source(),
                channel: req.channel(),
                expects_reply: req.expects_reply(),
                bus: req.bus().clone(),
                deadline: req.deadline(),
            };
            let result = f(value, ctx);
            answer::<C, Resp>(&codec, req, result);
        })
    }
}

/// What the typed layer needs of [`Request`] and [`OwnedRequest`] alike.
trait Answer {
    fn source(&self) -> NodeId;
    fn channel(&self) -> Channel;
    fn payload(&self) -> &[u8];
    fn expects_reply(&self) -> bool;
    fn reply(&mut self, bytes: &[u8]) -> Result<(), ReplyError>;
    fn reply_error(&mut self, code: u16, message: &str) -> Result<(), ReplyError>;
    /// Answers with a bus error code (not an application error).
    fn fail(&mut self, code: ErrorCode) -> Result<(), ReplyError>;
}

impl Answer for Request<'_> {
    fn source(&self) -> NodeId {
        Request::source(self)
    }
    fn channel(&self) -> Channel {
        Request::channel(self)
    }
    fn payload(&self) -> &[u8] {
        Request::payload(self)
    }
    fn expects_reply(&self) -> bool {
        Request::expects_reply(self)
    }
    fn reply(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        Request::reply(self, bytes)
    }
    fn reply_error(&mut self, code: u16, message: &str) -> Result<(), ReplyError> {
        Request::reply_error(self, code, message)
    }
    fn fail(&mut self, code: ErrorCode) -> Result<(), ReplyError> {
        self.replier.fail(code)
    }
}

impl Answer for OwnedRequest {
    fn source(&self) -> NodeId {
        OwnedRequest::source(self)
    }
    fn channel(&self) -> Channel {
        OwnedRequest::channel(self)
    }
    fn payload(&self) -> &[u8] {
        OwnedRequest::payload(self)
    }
    fn expects_reply(&self) -> bool {
        OwnedRequest::expects_reply(self)
    }
    fn reply(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        OwnedRequest::reply(self, bytes)
    }
    fn reply_error(&mut self, code: u16, message: &str) -> Result<(), ReplyError> {
        OwnedRequest::reply_error(self, code, message)
    }
    fn fail(&mut self, code: ErrorCode) -> Result<(), ReplyError> {
        self.replier.fail(code)
    }
}

/// The request's value; `None` when it does not decode, after answering
/// [`ErrorCode::Undecodable`] (a one-way message is dropped).
fn decode<C: Codec<Req>, Req>(codec: &C, req: &mut impl Answer) -> Option<Req> {
    match codec.decode(req.payload()) {
        Ok(value) => Some(value),
        Err(error) => {
            let (channel, source) = (req.channel(), req.source());
            if req.expects_reply() {
                debug!(%channel, %source, %error, "typed request not decodable: answered Undecodable");
                let _ = req.fail(ErrorCode::Undecodable);
            } else {
                debug!(%channel, %source, %error, "typed one-way message not decodable: dropped");
            }
            None
        }
    }
}

/// Sends the handler's answer: the encoded response, or its application
/// error. A response that cannot be sent leaves the request unanswered,
/// so its caller gets `NoReply` (when the request is dropped).
fn answer<C: Codec<Resp>, Resp>(codec: &C, req: &mut impl Answer, result: Result<Resp, AppError>) {
    let channel = req.channel();
    if !req.expects_reply() {
        if let Err(e) = result {
            debug!(%channel, code = e.code, message = %e.message, "typed one-way handler failed");
        }
        return;
    }
    match result {
        Ok(resp) => {
            let mut out = Vec::new();
            if let Err(error) = codec.encode(&resp, &mut out) {
                warn!(%channel, %error, "typed reply not encodable: its caller gets NoReply");
                return;
            }
            match req.reply(&out) {
                Ok(()) => {}
                Err(error @ ReplyError::TooLarge { .. }) => {
                    warn!(%channel, %error, "typed reply too large: its caller gets NoReply");
                }
                // The caller is gone (or its connection's queue is full).
                Err(error) => debug!(%channel, %error, "typed reply not sent"),
            }
        }
        Err(e) => {
            if let Err(error) = req.reply_error(e.code, &e.message) {
                debug!(%channel, %error, "typed application error not sent");
            }
        }
    }
}
