//! Delivery on the shard: the second half of the fan-out (`gateway/publish.rs` numbers and
//! encodes a message once and queues it for every shard through `gateway/handoff.rs`).
//! [`GatewayHandler::drain_deliveries`] takes the shard's whole queue in one loop turn and
//! [`GatewayHandler::deliver`] hands each shared frame to each local recipient's session
//! (sent, held while asleep, or skipped past the holdback), or batches room messages for
//! `rooms.batch_window_ms`; an urgent message first sends its stream's batched ones.

use std::sync::Arc;
use std::time::Duration;

use ringport_io::{ConnId, Ctx};
use ringport_proto::{PushClass, PushOutcome, StreamName};

use super::{transmit, GatewayHandler};
use crate::gateway::publish::Delivery;
use crate::gateway::replay::{record_offer, Pending};
use crate::gateway::BROADCAST_ROOM;
use crate::metrics::ConnState as Gauge;

impl GatewayHandler {
    /// Delivers everything queued for this shard, in queue order (one loop turn).
    pub(crate) fn drain_deliveries(&mut self, ctx: &mut Ctx<'_, Self>) {
        let mut batch = std::mem::take(&mut self.drained);
        self.shared.handoff.take(self.shard, &mut batch);
        for d in batch.drain(..) {
            let n = self.deliver(ctx, &d);
            if let Some(t) = &d.tally {
                t.report(n);
            }
        }
        self.drained = batch;
    }
}

impl GatewayHandler {
    /// Delivers `d` to its recipients on this shard (or batches it); returns how many
    /// connections it was queued or held for.
    pub(crate) fn deliver(&mut self, ctx: &mut Ctx<'_, Self>, d: &Arc<Delivery>) -> u64 {
        let window = self.shared.rooms.batch_window_ms;
        if window > 0 && d.class == PushClass::Room {
            if let Some(room) = d.room() {
                let n = self.rooms.members(room).len() as u64;
                self.batch_since.get_or_insert(ctx.now());
                self.batch.push(Arc::clone(d));
                return n;
            }
        }
        if d.class == PushClass::Urgent && !self.batch.is_empty() {
            // A stream is delivered in offset order: its batched messages go first.
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.batch)
                .into_iter()
                .partition(|b| b.stream == d.stream);
            self.batch = rest;
            if self.batch.is_empty() {
                self.batch_since = None;
            }
            for b in &mine {
                self.deliver_now(ctx, b);
            }
        }
        self.deliver_now(ctx, d)
    }

    fn deliver_now(&mut self, ctx: &mut Ctx<'_, Self>, d: &Arc<Delivery>) -> u64 {
        let recipients: Vec<ConnId> = match &d.stream {
            StreamName::User(user) => self.users.connections(user).to_vec(),
            StreamName::Room(room) if room != BROADCAST_ROOM => self.rooms.members(room).to_vec(),
            StreamName::Room(_) => self
                .conns
                .values()
                .filter(|c| matches!(c.gauge, Some(Gauge::Active | Gauge::Sleeping)))
                .map(|c| c.id)
                .collect(),
        };
        let mut n = 0;
        for id in recipients {
            n += u64::from(self.offer(ctx, id, d));
        }
        if n > 0 {
            self.rec.push_to_send(d.at.elapsed());
        }
        n
    }

    /// Offers `d` to one connection; true if it was queued or held for it.
    fn offer(&mut self, ctx: &mut Ctx<'_, Self>, id: ConnId, d: &Arc<Delivery>) -> bool {
        let Some(c) = self.conns.get_mut(id) else {
            return false;
        };
        if c.id != id {
            return false;
        }
        let last = match &d.stream {
            StreamName::User(_) => &mut c.user_last,
            StreamName::Room(room) if room != BROADCAST_ROOM => match c.joined(room) {
                Some(i) => &mut c.rooms[i].last,
                None => return false,
            },
            StreamName::Room(_) => &mut c.broadcast_last,
        };
        if d.offset <= *last {
            return false; // already delivered (replay overlapping live traffic)
        }
        *last = d.offset;
        if !c.replay.is_empty() {
            // Behind the replay still going out (gateway/replay.rs): keeps the wire order.
            c.replay.push_back(Pending::Live(Arc::clone(d)));
            return true;
        }
        let outcome = c
            .session
            .offer_push(d.class, &d.stream, d.offset, d.frame.clone());
        let queued = record_offer(&mut self.rec, d.kind, outcome);
        if outcome == PushOutcome::Sent {
            transmit(ctx, &mut self.rec, c);
        }
        queued
    }

    /// Sends batched room messages once the window has passed (or now, with `force`).
    pub(super) fn flush_batch(&mut self, ctx: &mut Ctx<'_, Self>, force: bool) {
        let Some(since) = self.batch_since else {
            return;
        };
        let window = Duration::from_millis(self.shared.rooms.batch_window_ms);
        if !force && ctx.now().saturating_duration_since(since) < window {
            return;
        }
        self.batch_since = None;
        for d in std::mem::take(&mut self.batch) {
            self.deliver_now(ctx, &d);
        }
    }
}
