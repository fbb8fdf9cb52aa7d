//! The shard's side of the memory budget (`gateway/overload.rs`): publishing this shard's
//! connection memory and shedding its share of any excess, largest send queues first.

use super::GatewayHandler;
use crate::gateway::overload::CHECK_EVERY_MS;
use crate::metrics::{limits::hit, Limit};
use ringport_io::{CloseReason as EngineReason, ConnId, Ctx};
use ringport_proto::CloseReason;

impl GatewayHandler {
    /// Every loop turn: publishes this shard's connection memory; once per
    /// [`CHECK_EVERY_MS`] sheds this shard's share of any excess.
    pub(super) fn check_memory(&mut self, ctx: &mut Ctx<'_, Self>) {
        let memory = &self.shared.memory;
        let mine = ctx.stats().queued_bytes.get() + self.rec.receive_buffer_bytes();
        if mine != self.memory_published {
            self.memory_published = mine;
            memory.publish(self.shard, mine);
        }
        let now = self.shared.clock.ms(ctx.now());
        if mine == 0 || now < self.memory_checked_ms + CHECK_EVERY_MS {
            return;
        }
        self.memory_checked_ms = now;
        let excess = memory.excess(self.shared.sink.history_bytes());
        let conns = memory.connections();
        if excess == 0 {
            return;
        }
        // This shard's share of the excess, by its share of the connection memory.
        let share = (u128::from(excess) * u128::from(mine) / u128::from(conns.max(1))) as u64;
        let mut queues: Vec<(usize, ConnId)> = self
            .conns
            .values()
            .filter(|c| !c.closing)
            .map(|c| (ctx.queued_bytes(c.id) + c.rx_capacity(), c.id))
            .filter(|(n, _)| *n > 0)
            .collect();
        queues.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0u64;
        for (bytes, id) in queues {
            if freed >= share.max(1) {
                break;
            }
            freed += bytes as u64;
            hit(
                Limit::MemoryBudget,
                1,
                &format_args!(
                    "server.memory_budget_bytes exceeded by {excess} bytes: closing the largest send queues first ({bytes} bytes)"
                ),
            );
            if let Some(mut c) = self.take(id) {
                c.closing = true;
                c.close_code = Some(CloseReason::POLICY.0);
                // Dropped, not drained: the point is to free the memory now.
                ctx.abort(id, EngineReason::App(CloseReason::POLICY.0));
                self.put(c);
            }
        }
    }

    /// A new connection while overloaded: refused with POLICY (`true`).
    pub(super) fn refuse_overloaded(&self, c: &mut crate::gateway::conn::Conn, now: u64) -> bool {
        if self.shared.memory.excess(self.shared.sink.history_bytes()) == 0 {
            return false;
        }
        hit(
            Limit::MemoryBudget,
            1,
            &"server.memory_budget_bytes exceeded: refusing new connections",
        );
        c.session
            .close(CloseReason::POLICY, "server overloaded; retry later", now);
        true
    }
}
