//! The control plane's view of the data plane: [`EngineGateway`] implements
//! [`Gateway`] by posting closures to the shards (`EngineHandle::run`) and awaiting their
//! answers with the fan-out helpers; `/metrics` is read from per-shard cells and engine
//! counters without asking the shards anything.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::sync::Arc;
use std::time::Instant;

use ringport_io::{ConnId, EngineHandle, StatsSnapshot};
use ringport_proto::{Decoder, Frame, StreamName};

use super::handler::GatewayHandler;
use super::handoff::Tally;
use super::publish::{Message, PublishError, Published, Target};
use super::Shared;
use crate::cluster::query::{self, Query};
use crate::cluster::OwnerAnswer;
use crate::http::{
    ask_all, ask_one, ConnectionCounts, ConnectionInfo, Gateway, GatewayError, GatewayStats,
    History, HistoryMessage, Presence, PresenceUser, Push, PushOutcome, PushTarget, Receipts,
    Reply, RoomInfo, RoomList, SHARD_REPLY_TIMEOUT,
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
pub(super) struct ShardCounts {
    pub(super) by_state: [u64; ConnState::COUNT],
    pub(super) rooms: Vec<String>,
    pub(super) users: Vec<String>,
}

impl EngineGateway {
    pub(crate) fn new(handle: EngineHandle<GatewayHandler>, shared: Arc<Shared>) -> Self {
        EngineGateway { handle, shared }
    }

    /// The engine handle (for tests and embedders).
    pub fn engine(&self) -> &EngineHandle<GatewayHandler> {
        &self.handle
    }

    /// Publishes `push`: answered once it is sequenced and appended, or with
    /// `wait_delivered` once every shard handed it to its recipients.
    async fn push(
        &self,
        target: Target,
        kind: DeliveryKind,
        push: Push,
    ) -> Result<PushOutcome, GatewayError> {
        let (tally, delivered) = if push.wait_delivered {
            let (t, rx) = Tally::new(self.handle.shards());
            (Some(t), Some(rx))
        } else {
            (None, None)
        };
        let message = Message {
            target,
            kind,
            payload: push.payload,
            urgent: push.urgent,
            at: Instant::now(),
            tally,
        };
        let p = self.number(message).await.map_err(|e| match e {
            PublishError::Rejected(m) => GatewayError::Rejected(m),
            PublishError::Busy(m) => GatewayError::Unavailable(m),
        })?;
        let mut outcome = PushOutcome {
            stream: p.stream.to_string(),
            epoch: p.epoch,
            offset: p.offset,
            recipients: None,
            warning: p.not_forwarded.map(|r| {
                format!(
                    "the message could not reach the other nodes of the cluster ({}): \
                     it was delivered on this node only",
                    r.as_str()
                )
            }),
        };
        let Some(delivered) = delivered else {
            return Ok(outcome);
        };
        let reason = match tokio::time::timeout(SHARD_REPLY_TIMEOUT, delivered).await {
            Ok(Ok(n)) => {
                outcome.recipients = Some(n);
                return Ok(outcome);
            }
            Ok(Err(_)) => "a shard stopped before delivering".to_owned(),
            Err(_) => format!(
                "the shards did not deliver within {} ms",
                SHARD_REPLY_TIMEOUT.as_millis()
            ),
        };
        Err(GatewayError::NotConfirmed { outcome, reason })
    }

    /// Publishes `m`: numbered here, or (cluster) by the live node that owns its stream,
    /// whose answer is awaited (at most `cluster.publish_timeout_ms`; then numbered here and
    /// reported as not forwarded). A publisher waiting for `recipients` is counted on the
    /// node that numbers the message only, so it is numbered here.
    async fn number(&self, m: Message) -> Result<Published, PublishError> {
        let Some(bus) = &self.shared.cluster else {
            return self.shared.publish_local(&self.handle, m);
        };
        let stream = m.target.stream();
        let owner = match bus.remote_owner(&stream) {
            Some(owner) if m.tally.is_none() => owner,
            _ => return self.shared.publish_owned(&self.handle, m),
        };
        let publish = m.kind == DeliveryKind::Publish;
        match bus
            .request_owner(owner, &m.target, &m.payload, m.urgent, publish)
            .await
        {
            Ok(OwnerAnswer::Numbered {
                epoch,
                offset,
                not_forwarded,
            }) => Ok(Published {
                stream,
                epoch,
                offset,
                not_forwarded,
            }),
            Ok(OwnerAnswer::Refused(e)) => Err(e),
            Err(reason) => {
                let mut p = self.shared.publish_owned(&self.handle, m)?;
                p.not_forwarded = Some(reason);
                Ok(p)
            }
        }
    }

    fn connection_shard(&self, id: u64) -> Option<(ConnId, usize)> {
        let conn = ConnId::from_u64(id);
        (conn.shard() < self.handle.shards()).then_some((conn, conn.shard()))
    }

    /// `GET /v1/rooms/{room}` on this node (its shards).
    pub(crate) async fn local_room_info(
        &self,
        room: String,
        sample: usize,
    ) -> Result<RoomInfo, GatewayError> {
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
    }

    /// `GET /v1/stats` on this node (its shards).
    pub(crate) async fn local_stats(&self) -> Result<GatewayStats, GatewayError> {
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
            io_backend: self.handle.backend().name().to_owned(),
            io_backend_reason: self.handle.backend().reason.clone(),
            cluster: None,
        })
    }

    /// `GET /v1/rooms/{room}/presence` on this node (its shards).
    pub(crate) async fn local_presence(
        &self,
        room: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Presence, GatewayError> {
        let answers = ask_all(self.handle.shards(), SHARD_REPLY_TIMEOUT, |shard, reply| {
            let room = room.clone();
            self.handle.run(shard, move |h: &mut GatewayHandler, _ctx| {
                reply.send(h.room_presence(&room))
            });
        })
        .await?;
        let mut users: BTreeMap<String, u64> = BTreeMap::new();
        let mut presence = Presence {
            room,
            ..Presence::default()
        };
        for (by_user, anonymous) in answers {
            presence.anonymous += anonymous;
            presence.online += anonymous;
            for (user, n) in by_user {
                presence.online += n;
                *users.entry(user).or_default() += n;
            }
        }
        presence.users = users.len() as u64;
        let start = match &after {
            Some(a) => Bound::Excluded(a.clone()),
            None => Bound::Unbounded,
        };
        let mut page = users.range((start, Bound::Unbounded));
        for (user, connections) in page.by_ref().take(limit) {
            presence.members.push(PresenceUser {
                user: user.clone(),
                connections: *connections,
            });
        }
        if page.next().is_some() {
            presence.next = presence.members.last().map(|m| m.user.clone());
        }
        Ok(presence)
    }

    /// Everything `/metrics` shows, summed over shards now.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        let mut s = self.shared.registry.snapshot();
        let engine = self.handle.stats_all();
        fill_engine_numbers(&mut s, &engine);
        s.history_bytes = self.shared.sink.history_bytes();
        s.history_streams = self.shared.sink.history_streams();
        s.inbox_acked = self.shared.sink.acked_total();
        s.io_backend = self.handle.backend().name();
        s.io_backend_reason = self.handle.backend().reason.clone();
        s
    }
}

/// Engine-owned numbers: socket bytes, buffer-ring exhaustion, send batches, loop busy time.
fn fill_engine_numbers(s: &mut MetricsSnapshot, engine: &[StatsSnapshot]) {
    let total = StatsSnapshot::sum(engine);
    s.bytes = [total.bytes_in, total.bytes_out];
    s.bufring_exhausted = total.bufring_exhausted;
    s.sends_deferred = total.sends_deferred;
    s.closes_cut_short = total.close_discard_cut;
    s.refused_over_cap = total.refused_over_cap;
    // The engine counts messages per send in power-of-two ranges (1, 2-3, 4-7, ... 1024+):
    // each range lands in the histogram bucket of its upper bound (1, 4, 8, ... 1024, +Inf),
    // and the sum is exact.
    for s_counts in s.send_batch.counts.iter_mut() {
        *s_counts = 0;
    }
    let last = s.send_batch.counts.len() - 1;
    for (i, n) in total.send_batch.iter().enumerate() {
        let into = if i == 0 { 0 } else { i + 1 };
        s.send_batch.counts[into.min(last)] += n;
    }
    s.send_batch.sum = total.send_batch_msgs;
    for (shard, e) in s.shards.iter_mut().zip(engine) {
        shard.busy_ns = e.busy_ns;
        shard.iterations = e.loops;
        shard.descriptor_tables = e.descriptor_tables;
        shard.kernel_enters = e.kernel_enters;
        shard.recv_arms = e.recv_arms;
        shard.recv_pauses = e.recv_pauses;
        shard.yields = e.yields;
        shard.cq_overflows = e.cq_overflows;
        shard.recv_buffer_trimmed_bytes = e.recv_buffer_trimmed_bytes;
    }
}

impl Gateway for EngineGateway {
    fn leave_cluster(&self) {
        if let Some(bus) = &self.shared.cluster {
            bus.leave(
                || self.shared.sequencer.barrier(),
                std::time::Duration::from_secs(2),
            );
        }
    }

    fn reload_tls(&self) -> Result<(), String> {
        match &self.shared.tls {
            Some(tls) => tls.reload().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

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

    fn top_rooms(&self, limit: usize) -> Reply<'_, RoomList> {
        Box::pin(async move {
            let answers = ask_all(self.handle.shards(), SHARD_REPLY_TIMEOUT, |shard, reply| {
                self.handle.run(shard, move |h: &mut GatewayHandler, _ctx| {
                    reply.send(h.room_counts())
                });
            })
            .await?;
            Ok(RoomList::top(answers.into_iter().flatten(), limit))
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

    fn history(&self, target: PushTarget, since: u64, limit: usize) -> Reply<'_, History> {
        Box::pin(async move {
            let stream = match target {
                PushTarget::Room(room) => StreamName::Room(room),
                PushTarget::User(user) => StreamName::User(user),
                PushTarget::Broadcast => StreamName::Room(super::BROADCAST_ROOM.to_owned()),
            };
            let now = self.shared.clock.unix_ms(Instant::now());
            // One more than asked says whether another page follows.
            let page = self
                .shared
                .sink
                .history(&stream, since, limit.saturating_add(1), now)
                .ok_or_else(|| GatewayError::Unavailable("this gateway keeps no history".into()))?;
            let more = page.frames.len() > limit;
            let decoder = Decoder::new(u32::MAX);
            let mut messages = Vec::with_capacity(page.frames.len().min(limit));
            for (offset, frame) in page.frames.into_iter().take(limit) {
                let Ok(Some((Frame::Push(p), _))) = decoder.decode_slice(&frame) else {
                    return Err(GatewayError::Unavailable(format!(
                        "history of {stream} holds an undecodable frame at offset {offset}"
                    )));
                };
                let (payload, payload_base64) = match std::str::from_utf8(&p.payload) {
                    Ok(text) => (Some(text.to_owned()), None),
                    Err(_) => (None, Some(BASE64.encode(&p.payload))),
                };
                messages.push(HistoryMessage {
                    offset,
                    payload,
                    payload_base64,
                    urgent: p.urgent,
                });
            }
            Ok(History {
                stream: stream.to_string(),
                epoch: page.epoch,
                tail: page.tail,
                first: page.first,
                messages,
                more,
            })
        })
    }

    fn room_info(&self, room: String, sample: usize) -> Reply<'_, RoomInfo> {
        Box::pin(async move {
            let local = self.local_room_info(room.clone(), sample).await?;
            let Some(bus) = &self.shared.cluster else {
                return Ok(local);
            };
            let g = bus.gather(&Query::Room { room, sample }).await;
            Ok(query::merge_room(bus.node_id(), local, g, sample))
        })
    }

    fn stats(&self) -> Reply<'_, GatewayStats> {
        Box::pin(async move {
            let local = self.local_stats().await?;
            let Some(bus) = &self.shared.cluster else {
                return Ok(local);
            };
            let g = bus.gather(&Query::Stats).await;
            Ok(query::merge_stats(bus.node_id(), local, g))
        })
    }

    fn presence(&self, room: String, after: Option<String>, limit: usize) -> Reply<'_, Presence> {
        Box::pin(async move {
            let local = self
                .local_presence(room.clone(), after.clone(), limit)
                .await?;
            let Some(bus) = &self.shared.cluster else {
                return Ok(local);
            };
            let g = bus.gather(&Query::Presence { room, after, limit }).await;
            Ok(query::merge_presence(bus.node_id(), local, g, limit))
        })
    }

    fn render_metrics(&self, out: &mut String) {
        self.metrics_snapshot().render(out);
        if let Some(bus) = &self.shared.cluster {
            bus.render(out);
        }
    }
}
