//! The control plane's view of the data plane: [`EngineGateway`] implements
//! [`Gateway`] by posting closures to the shards (`EngineHandle::run`) and awaiting their
//! answers with the fan-out helpers; `/metrics` is read from per-shard cells and engine
//! counters without asking the shards anything.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use ringport_io::{CloseReason as EngineReason, ConnId, Ctx, EngineHandle, StatsSnapshot};
use ringport_proto::{CloseReason, State, StreamName};

use super::fanout::Target;
use super::handler::GatewayHandler;
use super::Shared;
use crate::http::{
    ask_all, ask_one, post_all, ConnectionCounts, ConnectionInfo, ConnectionState, Gateway,
    GatewayError, GatewayStats, Push, PushOutcome, Receipts, Reply, RoomInfo, RoomMember,
    SHARD_REPLY_TIMEOUT,
};
use crate::metrics::{ConnState, DeliveryKind, MetricsSnapshot};

/// The gateway as the HTTP API sees it.
pub struct EngineGateway {
    handle: EngineHandle<GatewayHandler>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EngineGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineGateway")
            .field("shards", &self.handle.shards())
            .finish()
    }
}

/// One shard's answer to `GET /v1/stats`.
struct ShardCounts {
    by_state: [u64; ConnState::COUNT],
    rooms: Vec<String>,
    users: Vec<String>,
}

impl EngineGateway {
    pub(super) fn new(handle: EngineHandle<GatewayHandler>, shared: Arc<Shared>) -> Self {
        EngineGateway { handle, shared }
    }

    /// The engine handle (for tests and embedders).
    pub fn engine(&self) -> &EngineHandle<GatewayHandler> {
        &self.handle
    }

    async fn push(
        &self,
        target: Target,
        kind: DeliveryKind,
        push: Push,
    ) -> Result<PushOutcome, GatewayError> {
        let at = Instant::now();
        let shards = self.handle.shards();
        let asked = self
            .shared
            .publish(target, kind, push.payload, push.urgent, at, |d| {
                post_all(shards, |shard, reply| {
                    let d = Arc::clone(&d);
                    self.handle.run(shard, move |h: &mut GatewayHandler, ctx| {
                        reply.send(h.deliver(ctx, &d))
                    });
                })
            })
            .map_err(GatewayError::Rejected)?;
        let counts = asked.collect(SHARD_REPLY_TIMEOUT).await?;
        Ok(PushOutcome {
            recipients: counts.iter().sum(),
        })
    }

    fn connection_shard(&self, id: u64) -> Option<(ConnId, usize)> {
        let conn = ConnId::from_u64(id);
        (conn.shard() < self.handle.shards()).then_some((conn, conn.shard()))
    }

    /// Everything `/metrics` shows, summed over shards now.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        let mut s = self.shared.registry.snapshot();
        let engine = self.handle.stats_all();
        fill_engine_numbers(&mut s, &engine);
        s.history_bytes = self.shared.sink.history_bytes();
        s.history_streams = self.shared.sink.history_streams();
        s.inbox_acked = self.shared.sink.acked_total();
        s
    }
}

/// Engine-owned numbers: socket bytes, buffer-ring exhaustion, send batches, loop busy time.
fn fill_engine_numbers(s: &mut MetricsSnapshot, engine: &[StatsSnapshot]) {
    let total = StatsSnapshot::sum(engine);
    s.bytes = [total.bytes_in, total.bytes_out];
    s.bufring_exhausted = total.bufring_exhausted;
    s.refused_over_cap = total.refused_over_cap;
    // The engine counts chunks per sendmsg in buckets 1, 2-3, 4-7, 8-15, 16-31, 32+; each
    // lands in the smallest histogram bucket that holds its whole range, and the sum uses
    // each range's lower end (so it is a lower bound).
    let into = [0usize, 2, 3, 4, 5, s.send_batch.counts.len() - 1];
    let low = [1u64, 2, 4, 8, 16, 32];
    for s_counts in s.send_batch.counts.iter_mut() {
        *s_counts = 0;
    }
    s.send_batch.sum = 0;
    for (i, n) in total.send_batch.iter().enumerate() {
        s.send_batch.counts[into[i]] += n;
        s.send_batch.sum += n * low[i];
    }
    for (shard, e) in s.shards.iter_mut().zip(engine) {
        shard.busy_ns = e.busy_ns;
        shard.iterations = e.loops;
    }
}

impl Gateway for EngineGateway {
    fn receipts(&self, user: String) -> Reply<'_, Receipts> {
        Box::pin(async move {
            let stream = StreamName::User(user.clone());
            let r = self.shared.sink.receipts(&stream);
            Ok(Receipts {
                user,
                epoch: r.map_or(self.shared.sink.epoch(), |r| r.epoch),
                tail: r.map_or(0, |r| r.tail),
                acked_offset: r.map_or(0, |r| r.acked),
                acked_count: r.map_or(0, |r| r.receipts),
            })
        })
    }

    fn push_room(&self, room: String, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(self.push(Target::Room(room), DeliveryKind::Room, push))
    }

    fn push_user(&self, user: String, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(self.push(Target::User(user), DeliveryKind::User, push))
    }

    fn broadcast(&self, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(self.push(Target::Everyone, DeliveryKind::Broadcast, push))
    }

    fn room_info(&self, room: String, sample: usize) -> Reply<'_, RoomInfo> {
        Box::pin(async move {
            let answers = ask_all(self.handle.shards(), SHARD_REPLY_TIMEOUT, |shard, reply| {
                let room = room.clone();
                self.handle.run(shard, move |h: &mut GatewayHandler, _ctx| {
                    reply.send(h.room_summary(&room, sample))
                });
            })
            .await?;
            let mut info = RoomInfo {
                room,
                ..RoomInfo::default()
            };
            for (online, members) in answers {
                info.online += online;
                info.members.extend(members);
            }
            info.members.truncate(sample);
            Ok(info)
        })
    }

    fn stats(&self) -> Reply<'_, GatewayStats> {
        Box::pin(async move {
            let answers = ask_all(self.handle.shards(), SHARD_REPLY_TIMEOUT, |shard, reply| {
                self.handle.run(shard, move |h: &mut GatewayHandler, _ctx| {
                    reply.send(h.counts())
                });
            })
            .await?;
            let mut by_state = [0u64; ConnState::COUNT];
            let mut rooms = HashSet::new();
            let mut users = HashSet::new();
            for a in answers {
                for (t, n) in by_state.iter_mut().zip(a.by_state) {
                    *t += n;
                }
                rooms.extend(a.rooms);
                users.extend(a.users);
            }
            Ok(GatewayStats {
                shards: self.handle.shards(),
                connections: ConnectionCounts {
                    handshaking: by_state[ConnState::Handshaking.index()],
                    active: by_state[ConnState::Active.index()],
                    sleeping: by_state[ConnState::Sleeping.index()],
                },
                rooms: rooms.len() as u64,
                users: users.len() as u64,
                uptime_seconds: self.shared.clock.uptime().as_secs(),
            })
        })
    }

    fn connection(&self, id: u64) -> Reply<'_, Option<ConnectionInfo>> {
        Box::pin(async move {
            let Some((conn, shard)) = self.connection_shard(id) else {
                return Ok(None);
            };
            ask_one(shard, SHARD_REPLY_TIMEOUT, |reply| {
                self.handle.run(shard, move |h: &mut GatewayHandler, ctx| {
                    reply.send(h.describe(ctx, conn))
                })
            })
            .await
        })
    }

    fn kick(&self, id: u64, reason: Option<String>) -> Reply<'_, bool> {
        Box::pin(async move {
            let Some((conn, shard)) = self.connection_shard(id) else {
                return Ok(false);
            };
            ask_one(shard, SHARD_REPLY_TIMEOUT, |reply| {
                self.handle.run(shard, move |h: &mut GatewayHandler, ctx| {
                    reply.send(h.kick(ctx, conn, reason.as_deref()))
                })
            })
            .await
        })
    }

    fn render_metrics(&self, out: &mut String) {
        self.metrics_snapshot().render(out);
    }
}

/// Shard-side answers to control-plane questions.
impl GatewayHandler {
    fn room_summary(&self, room: &str, sample: usize) -> (u64, Vec<RoomMember>) {
        let members = self.rooms.members(room);
        let listed = members
            .iter()
            .take(sample)
            .map(|id| RoomMember {
                connection: id.as_u64().to_string(),
                user: self
                    .conns
                    .get(id.index())
                    .and_then(Option::as_ref)
                    .and_then(|c| c.user().map(str::to_owned)),
            })
            .collect();
        (members.len() as u64, listed)
    }

    fn counts(&self) -> ShardCounts {
        let mut by_state = [0u64; ConnState::COUNT];
        for c in self.conns.iter().flatten() {
            if let Some(g) = c.gauge {
                by_state[g.index()] += 1;
            }
        }
        ShardCounts {
            by_state,
            rooms: self.rooms.names().map(str::to_owned).collect(),
            users: self.users.names().map(str::to_owned).collect(),
        }
    }

    fn describe(&self, ctx: &mut Ctx<'_, Self>, id: ConnId) -> Option<ConnectionInfo> {
        let c = self.conns.get(id.index())?.as_ref()?;
        if c.id != id {
            return None;
        }
        let info = ctx.conn_info(id)?;
        let clock = &self.shared.clock;
        Some(ConnectionInfo {
            id: id.as_u64().to_string(),
            remote_addr: info.peer.map(|a| a.to_string()),
            user: c.user().map(str::to_owned),
            rooms: c.rooms.iter().map(|j| j.room.clone()).collect(),
            state: match c.session.state() {
                State::Handshaking | State::Authenticating => ConnectionState::Handshaking,
                State::Active => ConnectionState::Active,
                State::Sleeping => ConnectionState::Sleeping,
                State::Draining | State::Closed => ConnectionState::Closing,
            },
            connected_since_ms: clock.unix_ms(info.opened_at),
            last_activity_ms: clock.unix_ms(info.last_recv),
            bytes_in: info.bytes_in,
            bytes_out: info.bytes_out,
            messages_in: c.frames_in,
            messages_out: info.msgs_out,
            queued_bytes: info.queued_bytes as u64,
        })
    }

    fn kick(&mut self, ctx: &mut Ctx<'_, Self>, id: ConnId, reason: Option<&str>) -> bool {
        let Some(mut c) = self.take(id) else {
            return false;
        };
        let open = !c.closing;
        if open {
            c.kicked = true;
            let now = self.shared.clock.ms(ctx.now());
            let text = reason.unwrap_or("disconnected by the operator");
            c.session.close(CloseReason::POLICY, text, now);
            self.pump(ctx, &mut c, now);
            if !c.closing {
                c.closing = true;
                ctx.close(id, EngineReason::App(CloseReason::POLICY.0));
            }
        }
        self.put(c);
        open
    }
}
