//! The calling side of typed messages: typed forms of `request` and
//! `notify` on the node's handle and on a shard's bus. Each encodes, sends
//! through the untyped method (same routing, fail-over and errors), and
//! decodes the reply.

use std::future::Future;
use std::time::Duration;

use super::{Codec, Postcard, TypedError};
use crate::channel::Channel;
use crate::node::Node;
use crate::shard::LocalBus;

/// `value` encoded by `codec`.
fn encode<C: Codec<T>, T>(codec: &C, value: &T) -> Result<Vec<u8>, TypedError> {
    let mut out = Vec::new();
    codec.encode(value, &mut out)?;
    Ok(out)
}

/// A reply decoded by `codec`.
fn decode<C: Codec<T>, T>(codec: &C, reply: &[u8]) -> Result<T, TypedError> {
    Ok(codec.decode(reply)?)
}

impl Node {
    /// A typed [`Node::request`] over [`Postcard`]: blocks until the reply,
    /// decoded as `Resp`, or a [`TypedError`] within `timeout`.
    ///
    /// ```no_run
    /// # fn f(node: &domi_core::Node) -> Result<(), domi_core::typed::TypedError> {
    /// use std::time::Duration;
    /// use domi_core::Channel;
    ///
    /// let upper: String = node.request_typed(Channel(60), &"hello".to_string(), Duration::from_secs(1))?;
    /// # Ok(()) }
    /// ```
    pub fn request_typed<Req, Resp>(
        &self,
        channel: Channel,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TypedError>
    where
        Postcard: Codec<Req> + Codec<Resp>,
    {
        self.request_typed_with(Postcard, channel, req, timeout)
    }

    /// [`Node::request_typed`] with another codec.
    ///
    /// ```no_run
    /// # #[cfg(feature = "json")]
    /// # fn f(node: &domi_core::Node) -> Result<(), domi_core::typed::TypedError> {
    /// use std::time::Duration;
    /// use domi_core::typed::Json;
    /// use domi_core::Channel;
    ///
    /// let hello = "hello".to_string();
    /// let n: usize = node.request_typed_with(Json, Channel(61), &hello, Duration::from_secs(1))?;
    /// # Ok(()) }
    /// ```
    pub fn request_typed_with<C, Req, Resp>(
        &self,
        codec: C,
        channel: Channel,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TypedError>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        let payload = encode(&codec, req)?;
        let reply = self.request(channel, &payload, timeout)?;
        decode(&codec, &reply)
    }

    /// A typed [`Node::request_async`] over [`Postcard`]: a `Send` future
    /// usable on any executor; dropping it cancels the request.
    pub fn request_typed_async<Req, Resp>(
        &self,
        channel: Channel,
        req: &Req,
        timeout: Duration,
    ) -> impl Future<Output = Result<Resp, TypedError>> + Send + 'static
    where
        Postcard: Codec<Req> + Codec<Resp>,
        Req: 'static,
        Resp: 'static,
    {
        self.request_typed_async_with(Postcard, channel, req, timeout)
    }

    /// [`Node::request_typed_async`] with another codec.
    pub fn request_typed_async_with<C, Req, Resp>(
        &self,
        codec: C,
        channel: Channel,
        req: &Req,
        timeout: Duration,
    ) -> impl Future<Output = Result<Resp, TypedError>> + Send + 'static
    where
        C: Codec<Req> + Codec<Resp>,
        Req: 'static,
        Resp: 'static,
    {
        let sent = encode(&codec, req).map(|p| self.request_async(channel, &p, timeout));
        async move {
            let reply = sent?.await?;
            decode(&codec, &reply)
        }
    }

    /// A typed [`Node::notify`] over [`Postcard`]: a one-way message to one
    /// provider. A provider that cannot decode it drops it (logged at debug
    /// level there).
    pub fn notify_typed<M>(&self, channel: Channel, msg: &M) -> Result<(), TypedError>
    where
        Postcard: Codec<M>,
    {
        self.notify_typed_with(Postcard, channel, msg)
    }

    /// [`Node::notify_typed`] with another codec.
    pub fn notify_typed_with<C, M>(
        &self,
        codec: C,
        channel: Channel,
        msg: &M,
    ) -> Result<(), TypedError>
    where
        C: Codec<M>,
    {
        Ok(self.notify(channel, &encode(&codec, msg)?)?)
    }
}

impl LocalBus {
    /// A typed [`LocalBus::request`] over [`Postcard`], from a task or a
    /// handler on a shard (no hop to reach the bus).
    ///
    /// ```no_run
    /// # async fn f(bus: &domi_core::LocalBus) -> Result<(), domi_core::typed::TypedError> {
    /// use std::time::Duration;
    /// use domi_core::Channel;
    ///
    /// let hello = "hello".to_string();
    /// let count: u64 = bus.request_typed(Channel(61), &hello, Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_typed<Req, Resp>(
        &self,
        channel: Channel,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TypedError>
    where
        Postcard: Codec<Req> + Codec<Resp>,
    {
        self.request_typed_with(Postcard, channel, req, timeout)
            .await
    }

    /// [`LocalBus::request_typed`] with another codec.
    pub async fn request_typed_with<C, Req, Resp>(
        &self,
        codec: C,
        channel: Channel,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TypedError>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        let payload = encode(&codec, req)?;
        let reply = self.request(channel, &payload, timeout).await?;
        decode(&codec, &reply)
    }

    /// A typed [`LocalBus::notify`] over [`Postcard`].
    pub fn notify_typed<M>(&self, channel: Channel, msg: &M) -> Result<(), TypedError>
    where
        Postcard: Codec<M>,
    {
        self.notify_typed_with(Postcard, channel, msg)
    }

    /// [`LocalBus::notify_typed`] with another codec.
    pub fn notify_typed_with<C, M>(
        &self,
        codec: C,
        channel: Channel,
        msg: &M,
    ) -> Result<(), TypedError>
    where
        C: Codec<M>,
    {
        Ok(self.notify(channel, &encode(&codec, msg)?)?)
    }
}
