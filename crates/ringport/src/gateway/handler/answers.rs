//! Shard-side answers to control-plane questions (`gateway/control.rs` asks every shard
//! with `http::ask_all` and merges the answers).

use super::GatewayHandler;
use crate::gateway::conn::Flags;
use crate::gateway::control::ShardCounts;
use crate::http::{ConnectionInfo, ConnectionState, RoomMember};
use crate::metrics::ConnState;
use ringport_io::{CloseReason as EngineReason, ConnId, Ctx};
use ringport_proto::{CloseReason, State};
use std::collections::HashMap;

/// Shard-side answers to control-plane questions.
impl GatewayHandler {
    pub(in crate::gateway) fn room_summary(
        &self,
        room: &str,
        sample: usize,
    ) -> (u64, Vec<RoomMember>) {
        let members = self.rooms.members(room);
        let listed = members
            .iter()
            .take(sample)
            .map(|id| RoomMember {
                connection: id.as_u64().to_string(),
                user: self
                    .conns
                    .get(*id)
                    .and_then(|c| c.user().map(str::to_owned)),
            })
            .collect();
        (members.len() as u64, listed)
    }

    /// This shard's members of `room`: connections per user, and anonymous connections.
    pub(in crate::gateway) fn room_presence(&self, room: &str) -> (HashMap<String, u64>, u64) {
        let mut by_user: HashMap<String, u64> = HashMap::new();
        let mut anonymous = 0;
        for id in self.rooms.members(room) {
            let user = self.conns.get(*id).and_then(|c| c.user());
            match user {
                Some(u) => *by_user.entry(u.to_owned()).or_default() += 1,
                None => anonymous += 1,
            }
        }
        (by_user, anonymous)
    }

    /// Every room with members on this shard and how many.
    pub(in crate::gateway) fn room_counts(&self) -> Vec<(String, u64)> {
        self.rooms
            .names()
            .map(|r| (r.to_owned(), self.rooms.members(r).len() as u64))
            .collect()
    }

    pub(in crate::gateway) fn counts(&self) -> ShardCounts {
        let mut by_state = [0u64; ConnState::COUNT];
        for c in self.conns.values() {
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

    pub(in crate::gateway) fn describe(
        &self,
        ctx: &mut Ctx<'_, Self>,
        id: ConnId,
    ) -> Option<ConnectionInfo> {
        let c = self.conns.get(id)?;
        if c.id != id {
            return None;
        }
        let info = ctx.conn_info(id)?;
        let clock = &self.shared.clock;
        Some(ConnectionInfo {
            id: id.as_u64().to_string(),
            remote_addr: info.peer.map(|a| a.to_string()),
            user: c.user().map(str::to_owned),
            rooms: c.rooms.iter().map(|j| j.room.to_string()).collect(),
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

    pub(in crate::gateway) fn kick(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        id: ConnId,
        reason: Option<&str>,
    ) -> bool {
        let Some(mut c) = self.take(id) else {
            return false;
        };
        let open = !c.is(Flags::CLOSING);
        if open {
            c.mark(Flags::KICKED);
            let now = self.shared.clock.ms(ctx.now());
            let text = reason.unwrap_or("disconnected by the operator");
            c.session.close(CloseReason::POLICY, text, now);
            self.pump(ctx, &mut c, now);
            if c.mark(Flags::CLOSING) {
                Self::close_conn(ctx, &c, EngineReason::App(CloseReason::POLICY.0));
            }
        }
        self.put(c);
        open
    }
}
