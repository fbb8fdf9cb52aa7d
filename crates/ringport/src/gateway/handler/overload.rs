//! The shard's side of the memory budget (`gateway/overload.rs`): publishing this shard's
//! connection memory and shedding its share of any excess, largest send queues first, each
//! one told why with a CLOSE.

use super::GatewayHandler;
use crate::gateway::overload::CHECK_EVERY_MS;
use crate::metrics::{limits::hit, Limit};
use ringport_io::{CloseReason as EngineReason, ConnId, Ctx};

use crate::gateway::conn::Flags;
use ringport_proto::{CloseReason, State};

/// The most a TLS connection being shed may still have queued for its CLOSE to wait behind
/// it (the same allowance a plaintext goodbye gets past `engine.send_high_water`); above it
/// the connection is closed hard.
const TLS_GOODBYE_BACKLOG: usize = 64 * 1024;

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
        // Connections already being shed (or closed for any reason) free what they hold
        // within `engine.close_linger_ms`: counting them again would shed readers too.
        let leaving: u64 = self
            .conns
            .values()
            .filter(|c| !Self::sheddable(c))
            .map(|c| ctx.queued_bytes(c.id) as u64)
            .sum();
        // This shard's share of the excess, by its share of the connection memory.
        let share = (u128::from(excess) * u128::from(mine) / u128::from(conns.max(1))) as u64;
        let share = share.saturating_sub(leaving);
        if share == 0 {
            return;
        }
        let mut queues: Vec<(usize, ConnId)> = self
            .conns
            .values()
            .filter(|c| Self::sheddable(c))
            .map(|c| (ctx.queued_bytes(c.id) + c.rx_capacity(), c.id))
            .filter(|(n, _)| *n > 0)
            .collect();
        queues.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0u64;
        for (bytes, id) in queues {
            if freed >= share {
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
                let text = "server over its memory budget";
                self.shed(ctx, &mut c, text, now);
                self.put(c);
            }
        }
    }

    /// Not closing yet: a candidate for shedding.
    fn sheddable(c: &crate::gateway::conn::Conn) -> bool {
        !c.is(Flags::CLOSING) && !matches!(c.session.state(), State::Draining | State::Closed)
    }

    /// Closes `c` to free its memory now and still tell it why. Its backlog cannot reach it
    /// (it is not reading), so the queued pushes and any replay are dropped — at a frame
    /// boundary, behind what the kernel is already sending — and a CLOSE POLICY follows
    /// them; the connection then closes gracefully, bounded by `engine.close_linger_ms`
    /// (after which it is aborted). Over TLS the records cannot be cut (each one's sequence
    /// number is bound into the next, so nothing sealed after a cut could be read): a
    /// backlog of at most [`TLS_GOODBYE_BACKLOG`] keeps the CLOSE behind it as above; a
    /// larger one is dropped whole and the connection closed at once, without a reason
    /// (the caller has counted it).
    fn shed(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        c: &mut crate::gateway::conn::Conn,
        why: &str,
        now: u64,
    ) {
        c.replay = Default::default();
        let dropped = if c.transport.tls_mut().is_none() {
            ctx.drop_unsent(c.id)
        } else if ctx.queued_bytes(c.id) > TLS_GOODBYE_BACKLOG {
            // Nothing queued behind this backlog could be read before it; a goodbye that
            // waits for it would keep the memory until the linger ends. The session's own
            // frames still waiting go with it.
            while c.session.poll_transmit().is_some() {}
            c.mark(Flags::CLOSING);
            c.set_close_code(CloseReason::POLICY.0);
            ctx.abort(c.id, EngineReason::App(CloseReason::POLICY.0));
            return;
        } else {
            0
        };
        let text = format!(
            "{why}: this connection's send backlog was dropped ({dropped} bytes); \
             reconnect and resume"
        );
        c.session.close(CloseReason::POLICY, &text, now);
        // The session's CLOSE goes out and its `Closed` event starts the graceful close.
        self.pump(ctx, c, now);
    }

    /// A connection whose send queue passed `engine.send_high_water` (posted by the send that
    /// was refused): shed like a memory-budget victim, with its own reason. Counted as a
    /// `slow_consumer` close and drops; the engine counts the refusals.
    pub(super) fn shed_slow_consumer(&mut self, ctx: &mut Ctx<'_, Self>, id: ConnId) {
        let Some(mut c) = self.take(id) else {
            return;
        };
        if Self::sheddable(&c) {
            let now = self.shared.clock.ms(ctx.now());
            let text = "slow consumer: the send queue passed engine.send_high_water";
            self.shed(ctx, &mut c, text, now);
        }
        self.put(c);
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
