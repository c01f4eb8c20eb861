//! The WebSocket gateway (axum on tokio): serves the page at `/`, browsers
//! at `/ws`, and what it sees of the cluster at `/status`; translates
//! between browsers and room nodes. Browsers never reach the bus.
//!
//! Towards the rooms it sends keyed requests on [`ROOM`] (the room name is
//! the key) and retries once when the room node died with the request.
//! From the rooms it takes [`GATEWAY`] messages through a `Node::watch`
//! stream on a tokio task: events for its connections in a room, and
//! "which of your connections are in this room?" when a room node takes a
//! room over.
//!
//! No tokio worker ever blocks on the bus: requests are shard tasks whose
//! answers come back through a oneshot channel ([`keyed_request`]).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use domi::{BusError, Channel, Delivery};
use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::protocol::{checked, ClientMsg, GatewayMsg, LocalMembers, RoomOp, RoomReply};
use crate::protocol::{RoomRequest, ServerMsg, GATEWAY, MAX_NAME, MAX_TEXT, ROOM};

/// The page served at `/`.
const PAGE: &str = include_str!("page.html");
/// How long a room node has to answer one request (a resync and a
/// fan-out, each bounded by the room node's 1 s per gateway).
const ROOM_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages from room nodes waiting for the gateway's consumer; over it the
/// bus refuses them (`Backpressure`) and the room node logs it.
const WATCH_CAPACITY: usize = 4096;

/// One gateway: its bus node and the browsers connected to it.
pub struct Gateway {
    node: domi::Node,
    local: Mutex<Local>,
    next_conn: AtomicU64,
}

/// The browsers of this gateway, and which rooms they are in.
#[derive(Default)]
struct Local {
    conns: HashMap<u64, Conn>,
    rooms: HashMap<String, BTreeSet<u64>>,
}

struct Conn {
    name: String,
    room: Option<String>,
    /// The room node that last answered for `room`.
    owner: Option<u16>,
    /// Messages said so far (their ids are `gateway-conn-n`).
    said: u64,
    tx: mpsc::UnboundedSender<ServerMsg>,
}

impl Local {
    fn enter(&mut self, conn: u64, name: &str, room: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.name = name.to_owned();
            c.room = Some(room.to_owned());
            c.owner = None;
            self.rooms.entry(room.to_owned()).or_default().insert(conn);
        }
    }

    /// Takes `conn` out of its room; the room it was in.
    fn exit(&mut self, conn: u64) -> Option<String> {
        let room = self.conns.get_mut(&conn)?.room.take()?;
        if let Some(set) = self.rooms.get_mut(&room) {
            set.remove(&conn);
            if set.is_empty() {
                self.rooms.remove(&room);
            }
        }
        Some(room)
    }

    fn send(&self, conn: u64, msg: ServerMsg) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(msg);
        }
    }
}

impl Gateway {
    /// A gateway on `node`: starts consuming [`GATEWAY`] (a tokio task on
    /// the current runtime).
    pub fn start(node: domi::Node) -> anyhow::Result<Arc<Gateway>> {
        let mut watch = node.watch(GATEWAY, WATCH_CAPACITY)?;
        let gw = Arc::new(Gateway {
            node,
            local: Mutex::default(),
            next_conn: AtomicU64::new(1),
        });
        let consumer = gw.clone();
        tokio::spawn(async move {
            while let Some(mut delivery) = watch.next().await {
                consumer.on_bus(&mut delivery);
            }
        });
        Ok(gw)
    }

    /// The routes: `/` (the page), `/ws` (browsers), `/status` (JSON).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/ws", get(ws))
            .route("/status", get(status))
            .with_state(self.clone())
    }

    /// Serves browsers on `listener` until `shutdown` completes.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        tokio::select! {
            r = axum::serve(listener, router) => r,
            () = shutdown => Ok(()),
        }
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A message from a room node.
    fn on_bus(&self, delivery: &mut Delivery) {
        let answer = match serde_json::from_slice::<GatewayMsg>(delivery.payload()) {
            Ok(GatewayMsg::Members { room }) => {
                let local = self.local();
                let members: LocalMembers = local
                    .rooms
                    .get(&room)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| Some((*id, local.conns.get(id)?.name.clone())))
                    .collect();
                Ok(serde_json::to_vec(&members).expect("members serialize"))
            }
            Ok(GatewayMsg::Event { room, event }) => {
                let local = self.local();
                let msg = event.to_client(&room);
                for id in local.rooms.get(&room).into_iter().flatten() {
                    local.send(*id, msg.clone());
                }
                Ok(b"ok".to_vec())
            }
            Err(e) => Err(format!("not a gateway message: {e}")),
        };
        if delivery.expects_reply() {
            let _ = match answer {
                Ok(bytes) => delivery.reply(&bytes),
                Err(e) => delivery.reply_error(400, &e),
            };
        }
    }

    /// One browser, from upgrade to close.
    async fn session(self: Arc<Self>, mut socket: WebSocket) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.local().conns.insert(
            conn,
            Conn {
                name: String::new(),
                room: None,
                owner: None,
                said: 0,
                tx,
            },
        );
        debug!(conn, "browser connected");
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some(msg) = out else { break };
                    let text = serde_json::to_string(&msg).expect("a message serializes");
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                inbound = socket.recv() => match inbound {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                        Ok(msg) => self.on_client(conn, msg).await,
                        Err(e) => self.local().send(conn, ServerMsg::Error {
                            message: format!("not understood: {e}"),
                        }),
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {} // pings are answered by axum; binary ignored
                },
            }
        }
        self.leave(conn, false).await;
        self.local().conns.remove(&conn);
        debug!(conn, "browser gone");
    }

    async fn on_client(&self, conn: u64, msg: ClientMsg) {
        let result = match msg {
            ClientMsg::Join { name, room } => self.join(conn, &name, &room).await,
            ClientMsg::Say { text } => self.say(conn, &text).await,
            ClientMsg::Leave => {
                self.leave(conn, true).await;
                Ok(())
            }
        };
        if let Err(message) = result {
            self.local().send(conn, ServerMsg::Error { message });
        }
    }

    async fn join(&self, conn: u64, name: &str, room: &str) -> Result<(), String> {
        let name = checked("name", name, MAX_NAME)?;
        let room = checked("room", room, MAX_NAME)?;
        self.leave(conn, true).await;
        // Listed locally first: a room node asking who is here counts it.
        self.local().enter(conn, &name, &room);
        let op = RoomOp::Join {
            conn,
            name: name.clone(),
        };
        match self.ask_room(&room, op).await {
            Ok(reply) => {
                let mut local = self.local();
                if let Some(c) = local.conns.get_mut(&conn) {
                    c.owner = Some(reply.node);
                }
                local.send(
                    conn,
                    ServerMsg::Joined {
                        room,
                        members: reply.members,
                        node: reply.node,
                    },
                );
                Ok(())
            }
            Err(e) => {
                self.local().exit(conn);
                Err(format!("cannot join {room}: {e}"))
            }
        }
    }

    async fn say(&self, conn: u64, text: &str) -> Result<(), String> {
        let text = checked("message", text, MAX_TEXT)?;
        let (room, name, id) = {
            let mut local = self.local();
            let c = local.conns.get_mut(&conn).ok_or("gone")?;
            let room = c.room.clone().ok_or("join a room first")?;
            c.said += 1;
            let id = format!("{}-{conn}-{}", self.node.id().get(), c.said);
            (room, c.name.clone(), id)
        };
        let op = RoomOp::Say {
            conn,
            name,
            text,
            id,
        };
        let reply = self
            .ask_room(&room, op)
            .await
            .map_err(|e| format!("not delivered: {e}"))?;
        let mut local = self.local();
        if let Some(c) = local.conns.get_mut(&conn) {
            if c.room.as_deref() == Some(&room) && c.owner.replace(reply.node) != Some(reply.node) {
                local.send(
                    conn,
                    ServerMsg::Moved {
                        room,
                        node: reply.node,
                    },
                );
            }
        }
        Ok(())
    }

    /// Takes `conn` out of its room and tells the room (and the browser,
    /// when `tell` and it was in one).
    async fn leave(&self, conn: u64, tell: bool) {
        let Some(room) = self.local().exit(conn) else {
            return;
        };
        if let Err(e) = self.ask_room(&room, RoomOp::Leave { conn }).await {
            // The room forgets it at its next resync at the latest.
            debug!(conn, %room, error = %e, "leave not delivered");
        }
        if tell {
            self.local().send(conn, ServerMsg::Left { room });
        }
    }

    /// A request to the room node that owns `room`. A request lost with
    /// its room node (`PeerLost`) or unanswered (`Timeout`) is sent once
    /// more: the keyed choice then falls on the next room node. It may
    /// have run before the node died, so a say can arrive twice; its id
    /// lets the page drop the copy.
    async fn ask_room(&self, room: &str, op: RoomOp) -> Result<RoomReply, String> {
        let payload = serde_json::to_vec(&RoomRequest {
            room: room.to_owned(),
            op,
        })
        .expect("a request serializes");
        let mut retried = false;
        loop {
            match keyed_request(&self.node, ROOM, room.as_bytes(), &payload, ROOM_TIMEOUT).await {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| format!("a room reply that is not understood: {e}"))
                }
                Err(e @ (BusError::PeerLost { .. } | BusError::Timeout { .. })) if !retried => {
                    info!(%room, error = %e, "room request lost: sending it again");
                    retried = true;
                }
                Err(BusError::NoProvider { .. }) => return Err("no room node is up".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The JSON of `/status`.
    fn status(&self) -> serde_json::Value {
        let table = self.node.peers();
        let ids =
            |ch: Channel| -> Vec<u16> { table.providers(ch).iter().map(|i| i.get()).collect() };
        serde_json::json!({
            "node": self.node.id().get(),
            "room_nodes": ids(ROOM),
            "gateways": ids(GATEWAY),
            "connections": self.local().conns.len(),
        })
    }
}

async fn ws(State(gw): State<Arc<Gateway>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| gw.session(socket))
}

async fn status(State(gw): State<Arc<Gateway>>) -> Response {
    let body = gw.status().to_string();
    ([("content-type", "application/json")], body).into_response()
}

/// `LocalBus::request_keyed` from any executor: the request runs as a task
/// on the shard that sends `key`'s messages (so one key's messages leave in
/// order) and its answer comes back through a oneshot channel.
pub async fn keyed_request(
    node: &domi::Node,
    channel: Channel,
    key: &[u8],
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, BusError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (key, payload) = (key.to_vec(), payload.to_vec());
    let shard = (domi::rendezvous::key_hash(&key) % node.shards() as u64) as usize;
    node.spawn_on(shard, move |bus| async move {
        let _ = tx.send(bus.request_keyed(channel, &key, &payload, timeout).await);
    })?;
    rx.await.unwrap_or(Err(BusError::ShuttingDown))
}

/// Binds the browsers' address; a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the web address {addr}: {e}"))
}

/// Logs once that the gateway serves browsers.
pub fn announce(gw: &Gateway, web: SocketAddr) {
    let table = gw.node.peers();
    if table.providers(ROOM).is_empty() {
        warn!("no room node yet: joins fail until one starts");
    }
    info!(id = %gw.node.id(), %web, "gateway serving browsers at http://{web}/");
}
