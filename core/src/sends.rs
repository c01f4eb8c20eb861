//! The keyed, direct and pipeline sends of [`Node`], for plain threads
//! (the shard-side forms are on [`crate::LocalBus`]; see
//! [`crate::rendezvous`] and [`crate::pipeline`]).

use std::future::Future;
use std::time::Duration;

use crate::channel::{Channel, NodeId};
use crate::error::{BusError, SendOp};
use crate::node::{failure, Node};
use crate::shard::{routed, Outgoing, Target};

impl Node {
    /// The shard that sends everything of `key`, so a key's messages leave
    /// in the order they were sent (one connection, one queue).
    fn shard_of(&self, key: u64) -> usize {
        (key % self.shards() as u64) as usize
    }

    /// One-way message to the provider rendezvous hashing picks for `key`
    /// (see [`crate::LocalBus::notify_keyed`]). Messages of one key leave
    /// from one shard, in order, so a serial handler
    /// ([`crate::Handler::serial`]) on the provider sees them in order.
    /// Later failures go to the `on_send_error` hook.
    pub fn notify_keyed(
        &self,
        channel: Channel,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), BusError> {
        self.pre_check(channel, payload.len())?;
        self.has_provider(channel, false)?;
        let (key, payload) = (key.to_vec(), payload.to_vec());
        let shard = self.shard_of(crate::rendezvous::key_hash(&key));
        self.run_on(shard, move |bus| {
            if let Err(error) = bus.notify_keyed(channel, &key, &payload) {
                bus.send_failed(failure(SendOp::Notify, channel, Channel(0), error));
            }
        })
    }

    /// Request to the provider rendezvous hashing picks for `key`
    /// (blocking; see [`crate::LocalBus::request_keyed`]).
    pub fn request_keyed(
        &self,
        channel: Channel,
        key: &[u8],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let key = crate::rendezvous::key_hash(key);
        let out = Outgoing::new(channel, Target::Keyed(key));
        self.request_blocking(out, Some(self.shard_of(key)), payload, timeout)
    }

    /// Request to node `node` only (blocking; see
    /// [`crate::LocalBus::request_to`]).
    pub fn request_to(
        &self,
        node: NodeId,
        channel: Channel,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let out = Outgoing::new(channel, Target::To(node));
        self.request_blocking(out, None, payload, timeout)
    }

    /// One-way message along a pipeline of channels (see
    /// [`crate::LocalBus::ventilate`]); later failures go to the
    /// `on_send_error` hook.
    pub fn ventilate(&self, stages: &[Channel], payload: &[u8]) -> Result<(), BusError> {
        let first = routed(stages)?.channel;
        self.pre_check(first, payload.len())?;
        self.has_provider(first, false)?;
        let (stages, payload) = (stages.to_vec(), payload.to_vec());
        self.run(move |bus| {
            if let Err(error) = bus.ventilate(&stages, &payload) {
                bus.send_failed(failure(SendOp::Notify, first, Channel(0), error));
            }
        })
    }

    /// Request along a pipeline: the last stage's answer (blocking; see
    /// [`crate::LocalBus::request_route`]).
    pub fn request_route(
        &self,
        stages: &[Channel],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.request_blocking(routed(stages)?, None, payload, timeout)
    }

    /// [`Node::request_route`] as a `Send` future usable on any executor.
    pub fn request_route_async(
        &self,
        stages: &[Channel],
        payload: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, BusError>> + Send + 'static {
        let started = routed(stages).map(|out| self.request_future(out, None, payload, timeout));
        async move { started?.await }
    }
}
