//! The room service: a handler on [`ROOM`] that owns the rooms whose keys
//! rendezvous hashing gives this node, and fans each room's events out to
//! the gateways holding its members.
//!
//! A room's state is a cache the gateways can always rebuild: who is in the
//! room, by gateway. It is trusted only while this node's view of the
//! cluster (its peer table's epoch) is the one it was built in, and for at
//! most [`RESYNC`]; otherwise (a room this node has just taken over, a room
//! node or gateway came or went) the next message for the room first asks
//! every gateway which of its connections are in it ([`GatewayMsg::Members`])
//! and replaces the state with the answers. So when a room node dies, the
//! one that inherits its rooms learns their members on their next message,
//! and nobody reconnects.
//!
//! Each room's messages run one at a time (a per-room async lock), and a
//! message is answered once every gateway of the room took its event, so
//! all members see a room's messages in one order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domi::{BusError, Handler, LocalBus, NodeId, OwnedRequest};
use tracing::{debug, info, warn};

use crate::protocol::{GatewayMsg, LocalMembers, RoomEvent, RoomOp, RoomReply, RoomRequest};
use crate::protocol::{GATEWAY, ROOM};

/// The longest a room's state is trusted without asking the gateways again.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long a gateway has to answer a room node (membership or an event);
/// well within the gateway's own timeout for a room request, which waits
/// for a resync and a fan-out.
const TO_GATEWAY: Duration = Duration::from_secs(1);

/// The rooms of one room node.
#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Room>>>>,
    /// The running node, to read its peer table (set after start; taken
    /// back by [`Rooms::close`] so the handler does not keep it alive).
    node: Mutex<Option<domi::Node>>,
}

/// One room as its owner knows it.
#[derive(Default)]
struct Room {
    /// `(gateway, connection)` → name.
    members: BTreeMap<(NodeId, u64), String>,
    /// The peer-table epoch the members were learned in, and when; `None`
    /// until the gateways were asked.
    synced: Option<(u64, Instant)>,
}

impl Rooms {
    /// The handler serving [`ROOM`] for these rooms.
    pub fn handler(self: &Arc<Self>) -> Handler {
        let rooms = self.clone();
        Handler::asynchronous(move |req| {
            let rooms = rooms.clone();
            async move { rooms.serve(req).await }
        })
    }

    /// Gives the handler the running node (for its peer table).
    pub fn attach(&self, node: &domi::Node) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = Some(node.clone());
    }

    /// Drops the node handle (call before stopping the node).
    pub fn close(&self) {
        self.node.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// This node's peer-table epoch and the gateways it sees now.
    fn view(&self) -> Option<(u64, Vec<NodeId>)> {
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner());
        let table = node.as_ref()?.peers();
        Some((table.epoch(), table.providers(GATEWAY).to_vec()))
    }

    fn room(&self, name: &str) -> Arc<tokio::sync::Mutex<Room>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.entry(name.to_owned()).or_default().clone()
    }

    async fn serve(&self, mut req: OwnedRequest) {
        let request: RoomRequest = match serde_json::from_slice(req.payload()) {
            Ok(r) => r,
            Err(e) => {
                let _ = req.reply_error(400, &format!("not a room request: {e}"));
                return;
            }
        };
        let gateway = req.source();
        let bus = req.bus().clone();
        let room = self.room(&request.room);
        // One message of a room at a time, in arrival order.
        let mut room = room.lock().await;
        if let Some((epoch, gateways)) = self.view() {
            let fresh = matches!(room.synced, Some((e, at)) if e == epoch && at.elapsed() < RESYNC);
            if !fresh {
                room.resync(&bus, &request.room, epoch, &gateways).await;
            }
        }
        let event = room.apply(gateway, request.op);
        let reply = RoomReply {
            node: bus.node_id().get(),
            members: room.names(),
        };
        if let Some(event) = event {
            room.fan_out(&bus, &request.room, &event, gateway).await;
        }
        drop(room);
        let bytes = serde_json::to_vec(&reply).expect("a reply serializes");
        let _ = req.reply(&bytes);
    }
}

impl Room {
    /// Asks every gateway which of its connections are in `name` and
    /// replaces the members with the answers. If a gateway did not answer,
    /// the state stays unsynced and the next message asks again (what the
    /// silent gateway had before is kept meanwhile).
    async fn resync(&mut self, bus: &LocalBus, name: &str, epoch: u64, gateways: &[NodeId]) {
        let ask = serde_json::to_vec(&GatewayMsg::Members {
            room: name.to_owned(),
        })
        .expect("a message serializes");
        let asks: Vec<_> = gateways
            .iter()
            .map(|&gw| {
                let (bus, ask) = (bus.clone(), ask.clone());
                glommio::spawn_local(async move {
                    (gw, bus.request_to(gw, GATEWAY, &ask, TO_GATEWAY).await)
                })
            })
            .collect();
        let mut all_answered = true;
        let mut members = BTreeMap::new();
        for task in asks {
            let (gw, answer) = task.await;
            match answer.map(|b| serde_json::from_slice::<LocalMembers>(&b)) {
                Ok(Ok(list)) => {
                    members.extend(list.into_iter().map(|(conn, n)| ((gw, conn), n)));
                }
                other => {
                    all_answered = false;
                    warn!(room = name, gateway = %gw, answer = ?other.map(|_| ()), "a gateway did not tell its members");
                    members.extend(
                        self.members
                            .iter()
                            .filter(|((g, _), _)| *g == gw)
                            .map(|(k, v)| (*k, v.clone())),
                    );
                }
            }
        }
        info!(
            room = name,
            members = members.len(),
            gateways = gateways.len(),
            epoch,
            "room synced from the gateways"
        );
        self.members = members;
        self.synced = all_answered.then(|| (epoch, Instant::now()));
    }

    /// Applies one operation; the event to fan out, if any.
    fn apply(&mut self, gateway: NodeId, op: RoomOp) -> Option<RoomEvent> {
        match op {
            RoomOp::Join { conn, name } => {
                self.members.insert((gateway, conn), name.clone());
                Some(RoomEvent::Joined { name })
            }
            RoomOp::Say {
                conn,
                name,
                text,
                id,
            } => {
                // A sender this node did not know is a member all the same.
                self.members.entry((gateway, conn)).or_insert(name.clone());
                Some(RoomEvent::Said {
                    id,
                    from: name,
                    text,
                })
            }
            RoomOp::Leave { conn } => self
                .members
                .remove(&(gateway, conn))
                .map(|name| RoomEvent::Left { name }),
        }
    }

    fn names(&self) -> Vec<String> {
        let unique: BTreeSet<&String> = self.members.values().collect();
        unique.into_iter().cloned().collect()
    }

    /// Sends `event` to every gateway holding members of the room (and to
    /// `origin`, whose member may just have left), all at once, and waits
    /// for their answers: the sender's request is answered only after that,
    /// so a room node that dies midway fails the request (`PeerLost`) and
    /// the gateway sends it again. A gateway that cannot take it is logged
    /// and skipped.
    async fn fan_out(&self, bus: &LocalBus, name: &str, event: &RoomEvent, origin: NodeId) {
        let mut gateways: BTreeSet<NodeId> = self.members.keys().map(|(g, _)| *g).collect();
        gateways.insert(origin);
        let msg = serde_json::to_vec(&GatewayMsg::Event {
            room: name.to_owned(),
            event: event.clone(),
        })
        .expect("an event serializes");
        let sends: Vec<_> = gateways
            .into_iter()
            .map(|gw| {
                let (bus, msg) = (bus.clone(), msg.clone());
                glommio::spawn_local(async move {
                    (gw, bus.request_to(gw, GATEWAY, &msg, TO_GATEWAY).await)
                })
            })
            .collect();
        for send in sends {
            match send.await {
                (_, Ok(_)) => {}
                // Gone since: the next view change resyncs the room.
                (gw, Err(e @ (BusError::NoProvider { .. } | BusError::PeerLost { .. }))) => {
                    debug!(room = name, gateway = %gw, error = %e, "gateway gone")
                }
                (gw, Err(e)) => {
                    warn!(room = name, gateway = %gw, error = %e, "event not delivered")
                }
            }
        }
    }
}

/// Starts a room node: serves [`ROOM`] with a fresh [`Rooms`].
pub fn start(builder: domi::NodeBuilder) -> anyhow::Result<(domi::Node, Arc<Rooms>)> {
    let rooms = Arc::new(Rooms::default());
    let node = builder.subscribe(ROOM, rooms.handler()).start()?;
    rooms.attach(&node);
    Ok((node, rooms))
}
