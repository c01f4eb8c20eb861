//! Sends that pick their provider by key or by id, and pipelines: a
//! message along a route of channels (see [`crate::pipeline`] and
//! [`crate::rendezvous`]).

use std::time::{Duration, Instant};

use super::{LocalBus, Outgoing, Target};
use crate::channel::{Channel, NodeId};
use crate::error::BusError;
use crate::frame::{FrameKind, Route};
use crate::handler::Replier;

impl LocalBus {
    /// One-way message to the provider of `channel` that rendezvous hashing
    /// picks for `key` (the same one from every caller while the providers
    /// stay the same; see [`crate::rendezvous`]); the runner-up when that
    /// one is down or cannot take it.
    pub fn notify_keyed(
        &self,
        channel: Channel,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), BusError> {
        self.check_send(channel, payload.len())?;
        let target = Target::Keyed(crate::rendezvous::key_hash(key));
        self.to_next_provider(channel, target, &mut Vec::new(), |peer| {
            self.send_one_way(peer, channel, payload, false)
        })
    }

    /// Request to the provider that rendezvous hashing picks for `key`
    /// (see [`LocalBus::notify_keyed`]). A refusal that proves the handler
    /// never ran (paused, rate-limited…) moves it to the key's runner-up.
    pub async fn request_keyed(
        &self,
        channel: Channel,
        key: &[u8],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let out = Outgoing::new(channel, Target::Keyed(crate::rendezvous::key_hash(key)));
        self.request_for(out, payload, timeout).await
    }

    /// Request to node `node` only, which must serve `channel` (otherwise
    /// `NoProvider`); a refusal is returned, never moved elsewhere.
    pub async fn request_to(
        &self,
        node: NodeId,
        channel: Channel,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.request_for(Outgoing::new(channel, Target::To(node)), payload, timeout)
            .await
    }

    /// One-way message along a pipeline: to one provider of `stages[0]`,
    /// whose handler hands it on with `req.next(payload)` to one provider
    /// of `stages[1]`, and so on (at most [`crate::frame::MAX_ROUTE`] + 1
    /// stages).
    pub fn ventilate(&self, stages: &[Channel], payload: &[u8]) -> Result<(), BusError> {
        let (first, route) = split_route(stages)?;
        self.check_send(first, payload.len())?;
        self.send_routed(first, route, payload)
    }

    /// Request along a pipeline: like [`LocalBus::ventilate`], but each
    /// stage's `next` is a request within this one's deadline, and the last
    /// stage's reply (or application error) is this request's answer.
    pub async fn request_route(
        &self,
        stages: &[Channel],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.request_for(routed(stages)?, payload, timeout).await
    }

    pub(crate) async fn request_for(
        &self,
        out: Outgoing,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.request_within(out, payload, None, timeout).await
    }

    /// A one-way message with `route` to the next provider of `channel`.
    fn send_routed(&self, channel: Channel, route: Route, payload: &[u8]) -> Result<(), BusError> {
        let mut meta = self.meta(FrameKind::OneWay, channel, Channel(0), 0);
        self.trace(&mut meta);
        meta.ext.route = route;
        self.to_next_provider(channel, Target::Any, &mut Vec::new(), |peer| {
            self.send_to(peer, meta, payload)
        })
    }

    /// A stage's `next`: hands `payload` to the next stage of `route`. When
    /// someone waits for this stage's answer, the hand-off is a request
    /// within `deadline` whose answer becomes that answer (the replier is
    /// taken then); otherwise a one-way message. Errors known at once are
    /// returned, and the replier is left to the handler.
    pub(crate) fn next_stage(
        &self,
        meta: &crate::frame::Meta,
        payload: &[u8],
        replier: &mut Replier,
        deadline: Option<Instant>,
    ) -> Result<(), BusError> {
        let (here, route) = (meta.channel, meta.ext.route);
        if replier.answered() {
            // Answered, or handed on already: a second hand-off would run
            // the next stage twice.
            return Err(BusError::AlreadyAnswered { channel: here });
        }
        let (channel, rest) = route
            .split_first()
            .ok_or(BusError::EndOfRoute { channel: here })?;
        self.check_send(channel, payload.len())?;
        if !replier.waits() {
            // A one-way stage, or a `call` (which waits for no answer).
            self.send_routed(channel, rest, payload)?;
            drop(replier.take());
            return Ok(());
        }
        let replier = replier.take();
        let deadline = crate::handler::nested_deadline(deadline);
        let out = Outgoing {
            route: rest,
            ..Outgoing::any(channel)
        };
        let bus = self.clone();
        let payload = payload.to_vec();
        glommio::spawn_local(async move {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let result = bus
                .request_within(out, &payload, Some(deadline), timeout)
                .await;
            replier.pass_on(crate::pipeline::upstream(result));
        })
        .detach();
        Ok(())
    }
}

/// A request along `stages`: to the first, carrying the others.
pub(crate) fn routed(stages: &[Channel]) -> Result<Outgoing, BusError> {
    let (channel, route) = split_route(stages)?;
    Ok(Outgoing {
        route,
        ..Outgoing::any(channel)
    })
}

/// The first stage of a route and the stages after it.
fn split_route(stages: &[Channel]) -> Result<(Channel, Route), BusError> {
    let bad = || BusError::BadRoute {
        stages: stages.len(),
    };
    let (&first, rest) = stages.split_first().ok_or_else(bad)?;
    for &c in stages {
        crate::error::check_user_channel(c)?;
    }
    Ok((first, Route::new(rest).ok_or_else(bad)?))
}
