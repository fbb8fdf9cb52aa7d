//! Delivery on the shard: the second half of the fan-out (`gateway/publish.rs` numbers and
//! encodes a message once and queues it for every shard through `gateway/handoff.rs`).
//! [`GatewayHandler::drain_deliveries`] takes the shard's whole queue in one loop turn and
//! [`GatewayHandler::deliver`] hands each shared frame to each local recipient's session
//! (sent, held while asleep, or skipped past the holdback), or holds room messages for
//! `rooms.batch_window_ms`, per room (`gateway/room_batch.rs` says which wait and when they
//! are due); an urgent message first sends its stream's held ones.
//!
//! Consecutive messages of one stream drained (or flushed from the batch) together form a
//! *run*: their frames are joined once into one shared buffer, and every recipient whose
//! session lets pushes pass straight through (active, nothing queued, no replay pending, none
//! of the run's offsets seen) gets the whole run as one reference to that buffer — one queue
//! entry and one send per connection per turn, however many messages arrived, and the kernel
//! copies every connection's bytes from the same buffer, which stays in the cache. Any other
//! recipient is offered the run's messages one by one, exactly as a lone message. At 2,000
//! members and 1,000 messages/s, per-message-per-connection queue entries made the shard
//! write (and later re-read) tens of megabytes per second of cold memory; a run costs one
//! entry per connection per turn.
//!
//! WebSocket connections are served the same way: a run's (or a lone message's) frames are
//! wrapped once per shard into binary messages (one frame each, protocol.md §13) the first
//! time a WebSocket recipient takes them, and every other WebSocket recipient gets a
//! reference to that buffer — the frame header is encoded once per message, not once per
//! connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringport_io::{ConnId, Ctx};
use ringport_proto::{PushClass, PushOutcome, StreamName};

use super::{send_frames, transmit, GatewayHandler};
use crate::gateway::conn::{Conn, Position};
use crate::gateway::publish::Delivery;
use crate::gateway::replay::{record_offer, Pending};
use crate::gateway::BROADCAST_ROOM;
use crate::metrics::ConnState as Gauge;

/// Frame bytes at most in one run's joined buffer.
const MAX_RUN_BYTES: usize = 64 * 1024;

/// How many messages from the start of `ds` form one run (at least 1): consecutive
/// messages of the first one's stream and epoch, up to [`MAX_RUN_BYTES`] of frames.
fn run_len(ds: &[Arc<Delivery>]) -> usize {
    let Some(first) = ds.first() else {
        return 0;
    };
    let mut bytes = 0;
    ds.iter()
        .take_while(|d| {
            bytes += d.frame.len();
            d.stream == first.stream && d.epoch == first.epoch && bytes <= MAX_RUN_BYTES
        })
        .count()
        .max(1)
}

/// `frames` wrapped as WebSocket binary messages, one frame each (protocol.md §13).
fn ws_messages<'a>(frames: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let len: usize = frames
        .clone()
        .map(|f| f.len() + ringport_ws::MAX_HEADER)
        .sum();
    let mut out = BytesMut::with_capacity(len);
    for f in frames {
        let header = ringport_ws::encode_header(ringport_ws::OpCode::Binary, true, f.len(), None);
        out.extend_from_slice(header.as_slice());
        out.extend_from_slice(f);
    }
    out.freeze()
}

/// A message's or run's bytes for pass-through recipients, built once per transport kind
/// on first use.
struct RunBytes<'a> {
    frames: &'a [Arc<Delivery>],
    native: Option<Bytes>,
    ws: Option<Bytes>,
}

impl<'a> RunBytes<'a> {
    fn new(frames: &'a [Arc<Delivery>]) -> RunBytes<'a> {
        RunBytes {
            frames,
            native: None,
            ws: None,
        }
    }

    /// The bytes for a connection whose `ws_sending()` is `ws`.
    fn bytes(&mut self, ws: bool) -> &Bytes {
        let frames = self.frames;
        if ws {
            self.ws
                .get_or_insert_with(|| ws_messages(frames.iter().map(|d| &d.frame)))
        } else {
            self.native.get_or_insert_with(|| match frames {
                [d] => d.frame.clone(),
                _ => {
                    let len = frames.iter().map(|d| d.frame.len()).sum();
                    let mut joined = BytesMut::with_capacity(len);
                    for d in frames {
                        joined.extend_from_slice(&d.frame);
                    }
                    joined.freeze()
                }
            })
        }
    }
}

/// What one recipient took of a run.
enum RunOffer {
    /// The whole run, as one reference to the joined buffer.
    Whole,
    /// Nothing at once: offer it the messages one by one.
    Each,
    /// Nothing: not a recipient (gone, or not joined).
    None,
}

/// Where `c` stands in `stream` (its last offset handed over, [`Position`]), or `None` if
/// `c` does not receive it (not joined).
fn last_offset<'a>(c: &'a mut Conn, stream: &StreamName) -> Option<&'a mut Position> {
    match stream {
        StreamName::User(_) => Some(&mut c.user_last),
        StreamName::Room(room) if room != BROADCAST_ROOM => {
            let i = c.joined(room)?;
            Some(&mut c.rooms[i].last)
        }
        StreamName::Room(_) => Some(&mut c.broadcast_last),
    }
}

impl GatewayHandler {
    /// Delivers everything queued for this shard, in queue order (one loop turn).
    pub(crate) fn drain_deliveries(&mut self, ctx: &mut Ctx<'_, Self>) {
        let mut batch = std::mem::take(&mut self.drained);
        self.shared.handoff.take(self.shard, &mut batch);
        if self.shared.rooms.batch_window_ms == 0 {
            self.deliver_runs(ctx, &batch, true);
        } else {
            for d in &batch {
                let n = self.deliver(ctx, d);
                if let Some(t) = &d.tally {
                    t.report(n);
                }
            }
        }
        batch.clear();
        self.drained = batch;
    }

    /// Delivers `ds` now, in order, run by run (module docs); with `report`, reports every
    /// tally (batched messages reported theirs when they were batched).
    fn deliver_runs(&mut self, ctx: &mut Ctx<'_, Self>, ds: &[Arc<Delivery>], report: bool) {
        let mut i = 0;
        while i < ds.len() {
            let n = run_len(&ds[i..]);
            if n == 1 {
                let d = &ds[i];
                let reached = self.deliver_now(ctx, d);
                if let (Some(t), true) = (&d.tally, report) {
                    t.report(reached);
                }
            } else {
                self.deliver_run(ctx, &ds[i..i + n], report);
            }
            i += n;
        }
    }

    /// The connections on this shard that receive `stream`.
    fn recipients(&self, stream: &StreamName) -> Vec<ConnId> {
        match stream {
            StreamName::User(user) => self.users.connections(user).to_vec(),
            StreamName::Room(room) if room != BROADCAST_ROOM => self.rooms.members(room).to_vec(),
            StreamName::Room(_) => self
                .conns
                .values()
                .filter(|c| matches!(c.gauge, Some(Gauge::Active | Gauge::Sleeping)))
                .map(|c| c.id)
                .collect(),
        }
    }

    /// Delivers a run (2 or more consecutive messages of one stream, in offset order).
    fn deliver_run(&mut self, ctx: &mut Ctx<'_, Self>, run: &[Arc<Delivery>], report: bool) {
        let mut joined = RunBytes::new(run);
        // Per message, its own bytes and the connections that took it alone: built at the
        // first connection that cannot take the whole run (usually none does).
        let mut singles: Vec<RunBytes<'_>> = Vec::new();
        let mut each: Vec<u64> = Vec::new();
        // Connections that took the whole run.
        let mut whole = 0u64;
        for id in self.recipients(&run[0].stream) {
            match self.offer_run(ctx, id, run, &mut joined) {
                RunOffer::Whole => whole += 1,
                RunOffer::Each => {
                    if singles.is_empty() {
                        singles = run.chunks(1).map(RunBytes::new).collect();
                        each = vec![0; run.len()];
                    }
                    for ((n, d), single) in each.iter_mut().zip(run).zip(&mut singles) {
                        *n += u64::from(self.offer(ctx, id, d, single));
                    }
                }
                RunOffer::None => {}
            }
        }
        for (i, d) in run.iter().enumerate() {
            let n = each.get(i).copied().unwrap_or(0);
            if whole > 0 {
                self.rec.delivered(d.kind, whole);
            }
            let reached = whole + n;
            if reached > 0 {
                self.rec.push_to_send(d.at.elapsed());
            }
            if let (Some(t), true) = (&d.tally, report) {
                t.report(reached);
            }
        }
    }

    /// Sends the whole run to `id` at once if its session lets it pass straight through.
    fn offer_run(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        id: ConnId,
        run: &[Arc<Delivery>],
        joined: &mut RunBytes<'_>,
    ) -> RunOffer {
        let Some(c) = self.conns.get_mut(id) else {
            return RunOffer::None;
        };
        // Over TLS the bytes are encrypted for this connection (`send_frames` → `emit`): the
        // shared plaintext never reaches the engine.
        let ws = c.transport.ws_sending();
        let passes = c.replay.is_empty() && c.session.push_passes_through() && ws != Some(false);
        let Some(last) = last_offset(c, &run[0].stream) else {
            return RunOffer::None;
        };
        if !passes || !last.admits(run[0].epoch, run[0].offset) {
            return RunOffer::Each;
        }
        let end = &run[run.len() - 1];
        *last = Position::at(end.epoch, end.offset);
        let bytes = joined.bytes(ws == Some(true));
        send_frames(ctx, &mut self.rec, c, bytes, run.len() as u64);
        RunOffer::Whole
    }
}

impl GatewayHandler {
    /// Delivers `d` to its recipients on this shard (or batches it); returns how many
    /// connections it was queued or held for.
    pub(crate) fn deliver(&mut self, ctx: &mut Ctx<'_, Self>, d: &Arc<Delivery>) -> u64 {
        let window = Duration::from_millis(self.shared.rooms.batch_window_ms);
        if !window.is_zero() && d.class == PushClass::Room {
            if let Some(room) = d.room() {
                let rooms = &self.rooms;
                if self.batch.hold(d, |r| rooms.name(r), ctx.now(), window) {
                    return self.rooms.members(room).len() as u64;
                }
                return self.deliver_now(ctx, d);
            }
        }
        if d.class == PushClass::Urgent {
            // A stream is delivered in offset order: its held messages go first.
            for b in &self.batch.take_stream(d, ctx.now()) {
                self.deliver_now(ctx, b);
            }
        }
        self.deliver_now(ctx, d)
    }

    fn deliver_now(&mut self, ctx: &mut Ctx<'_, Self>, d: &Arc<Delivery>) -> u64 {
        let mut n = 0;
        let mut shared = RunBytes::new(std::slice::from_ref(d));
        for id in self.recipients(&d.stream) {
            n += u64::from(self.offer(ctx, id, d, &mut shared));
        }
        if n > 0 {
            self.rec.push_to_send(d.at.elapsed());
        }
        n
    }

    /// Offers `d` to one connection (`shared`: `d`'s bytes for pass-through); true if it was
    /// queued or held for it.
    fn offer(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        id: ConnId,
        d: &Arc<Delivery>,
        shared: &mut RunBytes<'_>,
    ) -> bool {
        let Some(c) = self.conns.get_mut(id) else {
            return false;
        };
        let Some(last) = last_offset(c, &d.stream) else {
            return false;
        };
        if !last.admits(d.epoch, d.offset) {
            return false; // already delivered (replay overlapping live traffic)
        }
        *last = Position::at(d.epoch, d.offset);
        if !c.replay.is_empty() {
            // Behind the replay still going out (gateway/replay.rs): keeps the wire order.
            c.replay.push_back(Pending::Live(Arc::clone(d)));
            return true;
        }
        if c.session.push_passes_through() {
            // Nothing queued ahead of it: straight to the engine.
            let queued = record_offer(&mut self.rec, d.kind, PushOutcome::Sent);
            match c.transport.ws_sending() {
                // After our WebSocket Close nothing more is sent (RFC 6455 §5.5.1).
                Some(false) => {}
                ws => {
                    let bytes = shared.bytes(ws == Some(true));
                    send_frames(ctx, &mut self.rec, c, bytes, 1);
                }
            }
            return queued;
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

    /// Sends the held messages of every room whose window has passed (all of them, with
    /// `force`), in arrival order.
    pub(super) fn flush_batch(&mut self, ctx: &mut Ctx<'_, Self>, force: bool) {
        let window = Duration::from_millis(self.shared.rooms.batch_window_ms);
        if window.is_zero() {
            return;
        }
        let mut ready = Vec::new();
        self.batch.take_due(ctx.now(), window, force, &mut ready);
        if !ready.is_empty() {
            self.deliver_runs(ctx, &ready, false);
        }
    }
}
