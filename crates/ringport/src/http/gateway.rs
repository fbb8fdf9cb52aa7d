//! The [`Gateway`] trait: everything the HTTP API asks of the data plane, and the types that
//! cross that boundary.
//!
//! The HTTP API runs on the control-plane thread (tokio); the gateway's state lives on the
//! shard threads. An implementation posts closures to shards (`EngineHandle::run`) and
//! awaits their replies over oneshot channels, so calls that need shard data are async.
//! `render_metrics` is synchronous: metrics are read from per-shard cells without asking
//! the shards (see [`crate::metrics`]).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The future a [`Gateway`] call returns.
pub type Reply<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// The data plane as the HTTP API sees it.
pub trait Gateway: Send + Sync + 'static {
    /// Re-reads the TLS certificate files (SIGHUP): new handshakes use the new certificate,
    /// open connections keep theirs. Without TLS there is nothing to do.
    fn reload_tls(&self) -> Result<(), String> {
        Ok(())
    }
    /// Graceful shutdown begins: in a cluster, hand this node's streams to the other nodes
    /// before its clients are told GOING_AWAY (they resume there). Nothing to do otherwise.
    fn leave_cluster(&self) {}
    /// Send to every connection in `room`.
    fn push_room(&self, room: String, push: Push) -> Reply<'_, PushOutcome>;
    /// Send to every connection authenticated as `user`.
    fn push_user(&self, user: String, push: Push) -> Reply<'_, PushOutcome>;
    /// Send to every connection.
    fn broadcast(&self, push: Push) -> Reply<'_, PushOutcome>;
    /// Send to `target` (one of the three above).
    fn publish(&self, target: PushTarget, push: Push) -> Reply<'_, PushOutcome> {
        match target {
            PushTarget::Room(room) => self.push_room(room, push),
            PushTarget::User(user) => self.push_user(user, push),
            PushTarget::Broadcast => self.broadcast(push),
        }
    }
    /// Membership of `room` with at most `sample` members listed (an unknown room is empty).
    fn room_info(&self, room: String, sample: usize) -> Reply<'_, RoomInfo>;
    /// The `limit` rooms with the most connections, most first (`GET /v1/rooms`). A gateway
    /// that keeps no rooms answers `Unavailable`.
    fn top_rooms(&self, limit: usize) -> Reply<'_, RoomList> {
        let _ = limit;
        Box::pin(async {
            Err(GatewayError::Unavailable(
                "this gateway keeps no rooms".into(),
            ))
        })
    }
    /// Gateway-wide counts.
    fn stats(&self) -> Reply<'_, GatewayStats>;
    /// One connection by id (`ConnId::as_u64`); `None` if it is not open.
    fn connection(&self, id: u64) -> Reply<'_, Option<ConnectionInfo>>;
    /// Close one connection; `false` if it was not open.
    fn kick(&self, id: u64, reason: Option<String>) -> Reply<'_, bool>;
    /// Delivery receipts of `user`'s inbox (`GET /v1/users/{user}/receipts`). A gateway
    /// that keeps no inbox streams answers `Unavailable`.
    fn receipts(&self, user: String) -> Reply<'_, Receipts> {
        let _ = user;
        Box::pin(async {
            Err(GatewayError::Unavailable(
                "this gateway keeps no user inboxes".into(),
            ))
        })
    }
    /// Up to `limit` retained messages of `target`'s stream with offsets above `since`
    /// (`GET /v1/rooms/{room}/history`, `GET /v1/users/{user}/history`). A gateway that
    /// keeps no history answers `Unavailable`.
    fn history(&self, target: PushTarget, since: u64, limit: usize) -> Reply<'_, History> {
        let _ = (target, since, limit);
        Box::pin(async {
            Err(GatewayError::Unavailable(
                "this gateway keeps no history".into(),
            ))
        })
    }
    /// Who is in `room`: users after `after` in id order, at most `limit` of them
    /// (`GET /v1/rooms/{room}/presence`).
    fn presence(&self, room: String, after: Option<String>, limit: usize) -> Reply<'_, Presence> {
        let _ = (room, after, limit);
        Box::pin(async {
            Err(GatewayError::Unavailable(
                "this gateway lists no presence".into(),
            ))
        })
    }
    /// Append the Prometheus text of every metric family.
    fn render_metrics(&self, out: &mut String);
}

/// In a cluster (`--cluster`): which nodes an answer summed (`GET /v1/rooms/{room}`,
/// `/v1/rooms/{room}/presence`, `/v1/stats`). Every live node is asked over the bus and
/// waited for at most `cluster.query_timeout_ms`; a node that did not answer in time is
/// listed in `missing` and the answer is `partial` (its counts are not in the sums).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterScope {
    /// The node that answered the HTTP request.
    pub node: String,
    /// Live nodes asked, this one included (nodes this one heard a heartbeat from within
    /// the last 3 s, and any other node that answered).
    pub nodes_expected: u64,
    /// Nodes whose counts are in the answer, this one included.
    pub nodes_answered: u64,
    /// Some live node did not answer in time (or the broker is unreachable): the sums
    /// lack its counts.
    pub partial: bool,
    /// The live nodes that did not answer.
    pub missing: Vec<String>,
    /// Each answering node's count: connections in the room, or open connections.
    pub nodes: Vec<NodeCount>,
}

/// One node's share of a cluster-wide count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeCount {
    pub node: String,
    /// Connections in the room (room and presence), or open connections (stats).
    pub online: u64,
}

/// Who a push is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PushTarget {
    Room(String),
    User(String),
    Broadcast,
}

/// A message to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Encoded once and shared by every recipient.
    pub payload: Bytes,
    /// Deliver even to sleeping clients instead of holding it back.
    pub urgent: bool,
    /// Answer only after every shard handed the message to its recipients, with their count
    /// (`?wait=delivered`); otherwise the answer comes once the message is sequenced and
    /// appended.
    pub wait_delivered: bool,
}

impl Push {
    /// A push answered as soon as it is sequenced.
    pub fn new(payload: Bytes, urgent: bool) -> Push {
        Push {
            payload,
            urgent,
            wait_delivered: false,
        }
    }
}

/// Where a push went: the stream it was numbered on, and its epoch and offset there (what a
/// client reports on resume, and what `GET .../history?since=` takes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PushOutcome {
    /// `room:<name>`, `user:<id>` or `room:*` (broadcast).
    pub stream: String,
    pub epoch: u32,
    pub offset: u64,
    /// Connections the message was queued for (or held back for, if asleep); only with
    /// `?wait=delivered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<u64>,
    /// In a cluster: set when the message could not be handed to the other nodes (it
    /// reached this node's connections only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One page of a stream's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct History {
    /// `room:<room>`, `user:<user>` or `room:*`.
    pub stream: String,
    /// Epoch the offsets belong to (a client holding offsets of another epoch must start
    /// over: they mean nothing here).
    pub epoch: u32,
    /// Highest offset written.
    pub tail: u64,
    /// Oldest offset still retained (`tail + 1` when none is): offsets above `since` and
    /// below it were trimmed and cannot be fetched.
    pub first: u64,
    /// Oldest first, offsets above `since`.
    pub messages: Vec<HistoryMessage>,
    /// Retained messages follow the last one listed: ask again with `since` = its offset.
    pub more: bool,
}

/// One message of a history page: exactly one of `payload` (UTF-8) and `payload_base64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HistoryMessage {
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    pub urgent: bool,
}

/// `GET /v1/rooms/{room}/presence`: users in a room with their connection counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Presence {
    pub room: String,
    /// Connections in the room now.
    pub online: u64,
    /// Distinct authenticated users in the room (in a cluster: each node's, summed).
    pub users: u64,
    /// Connections in the room without a user (anonymous).
    pub anonymous: u64,
    /// Users after the requested `after`, in id order.
    pub members: Vec<PresenceUser>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
    /// In a cluster: the nodes summed, and whether every live node answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterScope>,
}

/// One user in a presence listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUser {
    pub user: String,
    /// Connections of this user in the room.
    pub connections: u64,
}

/// `GET /v1/rooms/{room}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RoomInfo {
    pub room: String,
    /// Connections in the room now.
    pub online: u64,
    /// Up to the requested number of members.
    pub members: Vec<RoomMember>,
    /// In a cluster: the nodes summed, and whether every live node answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterScope>,
}

/// `GET /v1/rooms`: the busiest rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RoomList {
    /// Up to `limit` rooms, most connections first (ties by name).
    pub rooms: Vec<RoomCount>,
    /// Rooms with at least one member, listed or not.
    pub total: u64,
}

/// One room of a [`RoomList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCount {
    pub room: String,
    /// Connections in the room now.
    pub online: u64,
}

impl RoomList {
    /// The `limit` busiest of `(room, online)` counts, summed per room (one entry per shard).
    pub fn top(counts: impl IntoIterator<Item = (String, u64)>, limit: usize) -> RoomList {
        let mut by_room: std::collections::HashMap<String, u64> = Default::default();
        for (room, n) in counts {
            *by_room.entry(room).or_default() += n;
        }
        let total = by_room.len() as u64;
        let mut rooms: Vec<RoomCount> = by_room
            .into_iter()
            .map(|(room, online)| RoomCount { room, online })
            .collect();
        rooms.sort_unstable_by(|a, b| b.online.cmp(&a.online).then_with(|| a.room.cmp(&b.room)));
        rooms.truncate(limit);
        RoomList { rooms, total }
    }
}

/// One member in a room listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    /// Connection id as a decimal string (ids exceed JavaScript's safe integers).
    pub connection: String,
    /// Authenticated user, if any.
    pub user: Option<String>,
}

/// Session state of a connection as shown by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    Handshaking,
    Active,
    Sleeping,
    Closing,
}

/// Open connections by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConnectionCounts {
    pub handshaking: u64,
    pub active: u64,
    pub sleeping: u64,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GatewayStats {
    /// Shard threads.
    pub shards: usize,
    pub connections: ConnectionCounts,
    /// Rooms with at least one member (in a cluster: each node's count, summed).
    pub rooms: u64,
    /// Distinct authenticated users online (in a cluster: each node's count, summed).
    pub users: u64,
    pub uptime_seconds: u64,
    /// The engine's I/O backend: `uring` or `epoll`.
    pub io_backend: String,
    /// Why that backend runs (`configured`, or what `auto`'s probe found).
    pub io_backend_reason: String,
    /// In a cluster: the nodes summed, and whether every live node answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterScope>,
}

/// `GET /v1/connections/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Decimal `ConnId::as_u64`.
    pub id: String,
    pub remote_addr: Option<String>,
    pub user: Option<String>,
    pub rooms: Vec<String>,
    pub state: ConnectionState,
    /// Milliseconds since the Unix epoch.
    pub connected_since_ms: u64,
    /// Milliseconds since the Unix epoch of the last byte received.
    pub last_activity_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Bytes waiting in the connection's send queue.
    pub queued_bytes: u64,
}

/// `GET /v1/users/{user}/receipts`: how far the user's inbox stream `user:<user>` was
/// written and acknowledged. A user never sent anything has tail 0 and nothing acked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipts {
    pub user: String,
    /// Epoch the offsets belong to.
    pub epoch: u32,
    /// Highest offset written to the inbox.
    pub tail: u64,
    /// Cumulative acknowledged offset: every message up to it was processed by the client.
    pub acked_offset: u64,
    /// Messages acknowledged so far (delivery receipts).
    pub acked_count: u64,
}

/// Why a gateway call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The data plane cannot answer (shutting down, or a shard did not reply). HTTP 503.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The request is well-formed HTTP but the gateway refuses it. HTTP 400.
    #[error("{0}")]
    Rejected(String),
    /// The message was published (it has an offset and reaches its recipients) but the
    /// shards did not confirm delivery in time (`?wait=delivered`). HTTP 503 with the
    /// outcome; a retry with the same `Idempotency-Key` answers it without publishing again.
    #[error("published at offset {} of {} but delivery was not confirmed: {reason}", outcome.offset, outcome.stream)]
    NotConfirmed {
        outcome: PushOutcome,
        reason: String,
    },
}
