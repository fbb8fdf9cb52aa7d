//! Sliced replay: a resuming connection's RESUME_RESULTs and history go out a slice per loop
//! turn, so one HELLO never holds a shard for long (docs/operations.md, "Limits and abuse").
//!
//! At HELLO the gapless rule still holds in one shard turn (docs/architecture.md, "Reliable
//! delivery"): each entry's snapshot is taken under its stream's lock and the connection
//! becomes a member with last-delivered offset `T`. What changes is only *when* the frames
//! reach the session: they wait in the connection's `replay` queue, in entry order, and every
//! live push for the connection that arrives meanwhile queues behind them, so the wire order
//! is the same as if everything had been sent at once.
//!
//! Each turn, [`GatewayHandler::drain_replays`] offers queued frames to the sessions until
//! `history.replay_slice_bytes` is spent (each frame counts [`FRAME_COST`] bytes on top of
//! its size), then, if work remains, posts itself to this shard's inbox: the engine takes a
//! snapshot of the inbox per turn, so the next slice runs in the next turn, after the I/O
//! completions that arrived meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use ringport_io::{ConnId, Ctx};
use ringport_proto::{PushClass, PushOutcome, ResumeResult, StreamName};

use super::conn::Conn;
use super::handler::GatewayHandler;
use super::publish::Delivery;
use crate::metrics::{DeliveryKind, DropReason, ShardRecorder, SkipReason};

/// Budget charged per replayed frame on top of its length (per-frame work is not free).
pub const FRAME_COST: u64 = 64;

/// Something a resuming connection still has to be handed, in order.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A RESUME_RESULT (precedes its stream's frames).
    Result(ResumeResult),
    /// Replayed history of one stream: `frames[0]` has offset `next`, the rest follow.
    Frames {
        class: PushClass,
        kind: DeliveryKind,
        stream: StreamName,
        next: u64,
        frames: VecDeque<Bytes>,
    },
    /// A live push that arrived while replay was still queued.
    Live(Arc<Delivery>),
}

/// A connection's queue of [`Pending`] items: one pointer, and no heap memory, while empty
/// (almost always: only a resuming connection has replay queued).
/// (Boxed on purpose: the extra allocation exists only while replay is queued, and saves 24
/// bytes in every connection's state the rest of the time.)
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(crate) struct ReplayQueue(Option<Box<VecDeque<Pending>>>);

impl ReplayQueue {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub fn push_back(&mut self, item: Pending) {
        self.0.get_or_insert_default().push_back(item);
    }

    pub fn push_front(&mut self, item: Pending) {
        self.0.get_or_insert_default().push_front(item);
    }

    /// The next item; the queue's memory is released once it is empty.
    pub fn pop_front(&mut self) -> Option<Pending> {
        let q = self.0.as_mut()?;
        let item = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        item
    }
}

/// Counts a session's answer to one offered push; true if it was queued or held.
pub(super) fn record_offer(rec: &mut ShardRecorder, kind: DeliveryKind, o: PushOutcome) -> bool {
    match o {
        PushOutcome::Sent | PushOutcome::Held => {
            rec.delivered(kind, 1);
            true
        }
        PushOutcome::Skipped => {
            rec.dropped(DropReason::HoldbackOverflow, 1);
            false
        }
        PushOutcome::Dropped => {
            rec.skipped(SkipReason::Closing, 1);
            false
        }
    }
}

impl GatewayHandler {
    /// Starts draining `c`'s queued replay (from the next turn on).
    pub(super) fn start_replay(&mut self, ctx: &mut Ctx<'_, Self>, c: &Conn) {
        if !c.replay.is_empty() {
            self.replaying.push(c.id);
            self.post_drain(ctx);
        }
    }

    fn post_drain(&mut self, ctx: &mut Ctx<'_, Self>) {
        if !self.drain_posted {
            self.drain_posted = true;
            ctx.handle().run(self.shard, |h: &mut GatewayHandler, ctx| {
                h.drain_replays(ctx)
            });
        }
    }

    /// One slice: offers queued replay to the resuming connections, in turn, until the
    /// per-turn budget is spent; connections not finished go first next turn.
    pub(super) fn drain_replays(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.drain_posted = false;
        let mut budget = self.shared.replay_slice_bytes;
        let now = self.shared.clock.ms(ctx.now());
        let queue = std::mem::take(&mut self.replaying);
        let mut unfinished = Vec::new();
        let mut rest = queue.into_iter();
        for id in rest.by_ref() {
            let Some(mut c) = self.take(id) else {
                continue; // closed meanwhile
            };
            budget = self.drain_one(&mut c, budget);
            self.pump(ctx, &mut c, now);
            if !c.replay.is_empty() {
                unfinished.push(id);
            }
            self.put(c);
            if budget == 0 {
                break;
            }
        }
        let mut next: Vec<ConnId> = rest.collect();
        next.append(&mut unfinished);
        next.append(&mut self.replaying); // none expected: we hold `&mut self`
        self.replaying = next;
        if !self.replaying.is_empty() {
            self.post_drain(ctx);
        }
    }

    /// Offers `c`'s queued items until `budget` is spent; returns what is left of it.
    fn drain_one(&mut self, c: &mut Conn, mut budget: u64) -> u64 {
        while budget > 0 {
            let Some(item) = c.replay.pop_front() else {
                break;
            };
            match item {
                Pending::Result(rr) => {
                    let _ = c.session.send_resume_result(rr);
                }
                Pending::Live(d) => {
                    budget = budget.saturating_sub(d.frame.len() as u64 + FRAME_COST);
                    let o = c
                        .session
                        .offer_push(d.class, &d.stream, d.offset, d.frame.clone());
                    record_offer(&mut self.rec, d.kind, o);
                }
                Pending::Frames {
                    class,
                    kind,
                    stream,
                    mut next,
                    mut frames,
                } => {
                    while budget > 0 {
                        let Some(f) = frames.pop_front() else {
                            break;
                        };
                        budget = budget.saturating_sub(f.len() as u64 + FRAME_COST);
                        let o = c.session.offer_push(class, &stream, next, f);
                        record_offer(&mut self.rec, kind, o);
                        next += 1;
                    }
                    if !frames.is_empty() {
                        c.replay.push_front(Pending::Frames {
                            class,
                            kind,
                            stream,
                            next,
                            frames,
                        });
                    }
                }
            }
        }
        budget
    }
}
