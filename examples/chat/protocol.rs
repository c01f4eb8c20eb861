//! The chat's messages, as JSON (serde): browser ⇄ gateway over the
//! WebSocket, and gateway ⇄ room node over the bus.
//!
//! ```text
//! browser ──ClientMsg──▶ gateway ──RoomRequest (ROOM, keyed by room)──▶ room node
//! browser ◀─ServerMsg─── gateway ◀─GatewayMsg (GATEWAY, to one node)─── room node
//! ```
//!
//! A member is `(gateway node id, connection id)`: the room node learns the
//! gateway from the message's source, the gateway names its connections.

use domi::Channel;
use serde::{Deserialize, Serialize};

/// Served by room nodes; gateways send to it keyed by the room name, so one
/// room node owns a room while the room nodes stay the same.
pub const ROOM: Channel = Channel(80);
/// Served by gateways (a `Node::watch` stream); room nodes send to one
/// gateway at a time (`request_to`).
pub const GATEWAY: Channel = Channel(81);

/// Browser → gateway.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Enter `room` as `name` (leaving the room this socket was in).
    Join { name: String, room: String },
    /// Say something in the current room.
    Say { text: String },
    /// Leave the current room.
    Leave,
}

/// Gateway → browser.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The join went through: who is there, and which room node owns it.
    Joined {
        room: String,
        members: Vec<String>,
        node: u16,
    },
    /// Someone (this user included) said something. `id` is unique per
    /// message; the page drops a second copy (a retried say).
    Message {
        room: String,
        id: String,
        from: String,
        text: String,
    },
    /// Someone came in or went out.
    Presence {
        room: String,
        name: String,
        joined: bool,
    },
    /// This socket left its room.
    Left { room: String },
    /// Another room node answers for the room now (the old one died or a
    /// new one took the room over).
    Moved { room: String, node: u16 },
    /// Something went wrong; the socket stays open.
    Error { message: String },
}

/// Gateway → room node, on [`ROOM`] keyed by `room`.
#[derive(Debug, Deserialize, Serialize)]
pub struct RoomRequest {
    pub room: String,
    pub op: RoomOp,
}

/// What a gateway asks of a room.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomOp {
    Join {
        conn: u64,
        name: String,
    },
    /// `id` identifies the message (a retry carries the same one).
    Say {
        conn: u64,
        name: String,
        text: String,
        id: String,
    },
    Leave {
        conn: u64,
    },
}

/// The room node's answer to a [`RoomRequest`].
#[derive(Debug, Deserialize, Serialize)]
pub struct RoomReply {
    /// The room node that handled it.
    pub node: u16,
    /// Names in the room now.
    pub members: Vec<String>,
}

/// Room node → gateway, on [`GATEWAY`].
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayMsg {
    /// Which of your connections are in `room`? Answered with
    /// [`LocalMembers`]; a room node asks every gateway when it takes a
    /// room over (or its view of the cluster changed).
    Members { room: String },
    /// Deliver to your connections in `room`.
    Event { room: String, event: RoomEvent },
}

/// A gateway's answer to [`GatewayMsg::Members`]: `(connection, name)`.
pub type LocalMembers = Vec<(u64, String)>;

/// What happened in a room.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomEvent {
    Said {
        id: String,
        from: String,
        text: String,
    },
    Joined {
        name: String,
    },
    Left {
        name: String,
    },
}

impl RoomEvent {
    /// What the browsers of `room` are sent.
    pub fn to_client(&self, room: &str) -> ServerMsg {
        let room = room.to_owned();
        match self.clone() {
            RoomEvent::Said { id, from, text } => ServerMsg::Message {
                room,
                id,
                from,
                text,
            },
            RoomEvent::Joined { name } => ServerMsg::Presence {
                room,
                name,
                joined: true,
            },
            RoomEvent::Left { name } => ServerMsg::Presence {
                room,
                name,
                joined: false,
            },
        }
    }
}

/// Longest name, room or message accepted from a browser (bytes).
pub const MAX_NAME: usize = 64;
/// Longest message text accepted from a browser (bytes).
pub const MAX_TEXT: usize = 2000;

/// `s` trimmed, or an error naming `what` when empty or longer than `max`.
pub fn checked(what: &str, s: &str, max: usize) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        Err(format!("{what} is empty"))
    } else if s.len() > max {
        Err(format!("{what} is longer than {max} bytes"))
    } else {
        Ok(s.to_owned())
    }
}
