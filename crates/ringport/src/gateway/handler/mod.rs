//! The engine callbacks of one shard: bytes in → session → events and frames out.
//!
//! After every input (bytes, timer, a push, a kick) the connection is *pumped*: the session's
//! events are acted on (auth, rooms, publish), its queued frames are handed to the engine
//! (`ctx.send`, gathered into one `sendmsg` per loop turn by the engine), the open-connection
//! gauge follows its state, and the engine timer is re-armed at `session.poll_timeout()`.

mod answers;
mod deliver;
mod limits;
mod overload;
mod tls;
mod websocket;

pub(super) use tls::{emit, emit_continued, emit_copy};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use ringport_io::{CloseReason as EngineReason, ConnId, ConnMap, Ctx, Handler, Origin, SendError};
use ringport_proto::{
    CloseReason, Event, Op, PushClass, Session, State, Status, StreamName, WelcomeParams,
};

use super::conn::{Conn, Flags, Joined, Position};
use super::publish::{Delivery, Message, PublishError, Target};
use super::replay::Pending;
use super::room_batch::RoomBatch;
use super::rooms::{RoomIndex, UserIndex};
use super::transport::Transport;
use super::{Shared, BROADCAST_ROOM};
use super::{SESSION_RESUME_MS, SWEEP_EVERY_MS};
use crate::auth::Claims;
use crate::metrics::{CloseCause, DeliveryKind, Direction, DropReason, ShardRecorder};

/// Spare receive-buffer capacity tolerated beyond twice the bytes held; above it the bytes of
/// a partial frame are copied into a buffer of their own size.
const RX_SLACK: usize = 4096;

/// The longest a publisher over its rate goes unread at a time (`pause_publisher`): well
/// inside any heartbeat, so a paused client's PINGs are answered late, never missed.
const MAX_PUBLISH_PAUSE_MS: u64 = 1000;

/// What a connection closed before its WELCOME, or for abuse, may still send after our FIN,
/// read and discarded, before the close is cut short (`GatewayHandler::close_conn`): two of
/// the largest frames a client may send before WELCOME (protocol.md section 1), room for its
/// HELLO, what it pipelined behind it, and WebSocket or TLS framing. A flood of refused
/// connections that each sent a megabyte made the server read a whole
/// `engine.close_discard_max_bytes` (1 MiB) per refusal (docs/benchmarks.md, issue 10).
const SHORT_CLOSE_DISCARD_BYTES: u32 = 2 * ringport_proto::HANDSHAKE_MAX_PAYLOAD;

/// One shard's gateway: its connections and membership indexes.
pub struct GatewayHandler {
    pub(super) shard: usize,
    pub(super) shared: Arc<Shared>,
    /// This shard's connections. Boxed: a slot costs 16 bytes until its connection opens,
    /// and growing the table moves pointers, not 350-byte states.
    pub(super) conns: ConnMap<Box<Conn>>,
    pub(super) rooms: RoomIndex,
    pub(super) users: UserIndex,
    /// This shard's metric cells (the only writer).
    pub(super) rec: ShardRecorder,
    /// Room messages held for `rooms.batch_window_ms`, and each room's window
    /// (`gateway/room_batch.rs`; empty when the window is 0).
    pub(super) batch: RoomBatch,
    /// The vector swapped with this shard's hand-off queue on each drain
    /// (`gateway/handoff.rs`): no allocation per drain in steady state.
    pub(super) drained: Vec<Arc<Delivery>>,
    /// Connections with replay still queued (`gateway/replay.rs`), in service order.
    pub(super) replaying: Vec<ConnId>,
    /// A `drain_replays` is posted to this shard's inbox and not yet run.
    pub(super) drain_posted: bool,
    /// Session clock (ms) of this shard's last memory check (`gateway/overload.rs`).
    pub(super) memory_checked_ms: u64,
    /// Connection memory this shard last published to the process-wide budget.
    pub(super) memory_published: u64,
    /// Plaintext decrypted from one TLS read, before the transport inside takes it
    /// (`handler/tls.rs`); reused, so TLS input allocates nothing per read.
    pub(super) tls_plain: Vec<u8>,
    /// Ciphertext of one read, copied so that rustls decrypts it in place
    /// (`gateway/tls_session.rs`); reused, so only an incomplete record is kept per connection.
    pub(super) tls_cipher: Vec<u8>,
}

impl std::fmt::Debug for GatewayHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandler")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl GatewayHandler {
    pub(super) fn new(shard: usize, shared: Arc<Shared>) -> GatewayHandler {
        // Each recorder is handed out once; a second handler for the same shard (never
        // happens) would write to cells nobody reads rather than share a writer.
        let rec = shared
            .recorders
            .take(shard)
            .unwrap_or_else(|| crate::metrics::Registry::new(1).1.remove(0));
        let cluster = shared.cluster.clone();
        GatewayHandler {
            shard,
            shared,
            conns: ConnMap::new(),
            rooms: RoomIndex::new(cluster.clone()),
            users: UserIndex::new(cluster),
            rec,
            batch: RoomBatch::default(),
            drained: Vec::new(),
            replaying: Vec::new(),
            drain_posted: false,
            memory_checked_ms: 0,
            memory_published: 0,
            tls_plain: Vec::new(),
            tls_cipher: Vec::new(),
        }
    }

    fn now_ms(&self, ctx: &Ctx<'_, Self>) -> u64 {
        self.shared.clock.ms(ctx.now())
    }

    /// Takes a connection's state out of the table (put it back with [`Self::put`]), so the
    /// handler's indexes can be changed while it is borrowed.
    pub(super) fn take(&mut self, id: ConnId) -> Option<Box<Conn>> {
        self.conns.remove(id)
    }

    pub(super) fn put(&mut self, c: Box<Conn>) {
        self.conns.insert(c.id, c);
    }

    /// Acts on the session's events, sends its frames, syncs the gauge and the timer.
    pub(super) fn pump(&mut self, ctx: &mut Ctx<'_, Self>, c: &mut Conn, now: u64) {
        while let Some(ev) = c.session.poll_event() {
            self.on_event(ctx, c, ev, now);
        }
        transmit(ctx, &mut self.rec, c);
        let gauge = Conn::gauge_of(c.session.state());
        if gauge != c.gauge {
            self.rec.state_change(c.gauge, gauge);
            c.gauge = gauge;
        }
        if c.session.state() == State::Closed && !c.is(Flags::CLOSING) {
            // Closed without an `Event::Closed` of ours pending (drain deadline passed).
            c.mark(Flags::CLOSING);
            Self::close_conn(ctx, c, EngineReason::Local);
        }
        match c.session.poll_timeout() {
            Some(t) if t != c.timer_at => {
                c.timer_at = t;
                ctx.set_timer(c.id, self.shared.clock.instant(t));
            }
            Some(_) => {}
            None => ctx.cancel_timer(c.id),
        }
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_, Self>, c: &mut Conn, ev: Event, now: u64) {
        match ev {
            Event::Hello {
                resume: Some(r), ..
            } if self.refuse_resume(c, &r, now) => {}
            Event::Hello { token, resume, .. } => match self.authenticate(&token) {
                Ok(claims) => {
                    c.flags.set(Flags::ANONYMOUS, claims.is_none());
                    if let Some(cl) = claims {
                        // One copy of the user id, shared by the connection, the shard's
                        // user index, the per-user counts and the session registry.
                        let user = self
                            .users
                            .name(&cl.sub)
                            .unwrap_or_else(|| Arc::from(cl.sub));
                        if !self.admit_user(c, &user, now) {
                            return;
                        }
                        c.user = Some(self.users.add(&user, c.id));
                        c.grants = crate::auth::RoomGrants::from_claim(cl.rooms);
                    }
                    let wall = self.shared.clock.unix_ms(ctx.now());
                    let owner: Arc<str> = c.user.clone().unwrap_or_else(|| Arc::from(""));
                    let publishes = &self.shared.publishes;
                    // A resumed session keeps its id (and so its publish dedupe state) if
                    // this process issued it to the same user; otherwise it starts afresh.
                    // One live connection per session: resuming a session another
                    // connection still holds closes that one with REPLACED.
                    let me = c.id.as_u64();
                    let resumed = resume.as_ref().and_then(|r| {
                        Some((
                            r.session_id,
                            publishes.resume(r.session_id, &owner, wall, me)?,
                        ))
                    });
                    let session_id = match resumed {
                        Some((id, previous)) => {
                            if let Some(old) = previous {
                                self.replace(ctx, ConnId::from_u64(old));
                            }
                            id
                        }
                        None => new_session_id(|id| publishes.open(id, owner.clone(), wall, me)),
                    };
                    c.session_id = session_id;
                    // The inbox position, read under the stream's lock in the same turn that
                    // registered the connection as a recipient (`users.add` above): offsets
                    // above it reach the connection live, so the client may resume from it.
                    let (epoch, inbox_tail) = match c.user() {
                        Some(u) => {
                            let inbox = StreamName::User(u.to_owned());
                            self.shared.sink.position(&inbox, wall)
                        }
                        None => (self.shared.sink.epoch(), 0),
                    };
                    c.user_last.raise(epoch, inbox_tail);
                    // Likewise the broadcast stream: the connection receives it once it is
                    // active (this turn), so offsets above this tail reach it live.
                    let broadcast = StreamName::Room(BROADCAST_ROOM.to_owned());
                    let (broadcast_epoch, broadcast_tail) =
                        self.shared.sink.position(&broadcast, wall);
                    c.broadcast_last.raise(broadcast_epoch, broadcast_tail);
                    let params = WelcomeParams {
                        session_id,
                        epoch,
                        inbox_tail,
                        broadcast_epoch,
                        broadcast_tail,
                        user: c.user().unwrap_or("").to_owned(),
                        server_time_ms: wall,
                    };
                    let _ = c.session.accept(params, now);
                    let mut budget = self.shared.max_replay_bytes;
                    for point in resume.map(|r| r.streams).unwrap_or_default() {
                        self.resume_stream(c, point, wall, &mut budget);
                    }
                    self.start_replay(ctx, c);
                }
                Err(text) => {
                    self.auth_failed(c, now);
                    let _ = c.session.reject(CloseReason::AUTH_FAILED, &text, now);
                }
            },
            Event::Join { req_id, .. } | Event::Leave { req_id, .. }
                if !self.room_op_allowed(c, now) =>
            {
                let _ = c.session.reply_room(req_id, Status::RATE_LIMITED, None);
            }
            Event::Join { req_id, room } => {
                let wall = self.shared.clock.unix_ms(ctx.now());
                let (status, position) = match self.join(c, &room, wall) {
                    Ok(position) => (Status::OK, Some(position)),
                    Err(status) => (status, None),
                };
                let _ = c.session.reply_room(req_id, status, position);
            }
            Event::Leave { req_id, room } => {
                let status = match c.joined(&room) {
                    Some(i) => {
                        let j = c.rooms.swap_remove(i);
                        self.leave_index(&j);
                        Status::OK
                    }
                    None => Status::NOT_JOINED,
                };
                let _ = c.session.reply_room(req_id, status, None);
            }
            Event::Publish { room, seq, payload } => {
                let wall = self.shared.clock.unix_ms(ctx.now());
                // A PUBLISH resent after a reconnect (same session, same seq) was already
                // published: acknowledge it again, do not publish it twice.
                let status = if self.shared.publishes.seen(c.session_id, seq) {
                    Status::OK
                } else {
                    let (status, not_forwarded) = self.publish(ctx, c, &room, payload, now);
                    if status == Status::OK {
                        self.shared.publishes.record(c.session_id, seq, wall);
                    }
                    // Cluster: the message reached this node's members only; the publisher
                    // hears it in an ERROR just before its PUBLISH_ACK (docs/protocol.md 4.7).
                    if let Some(reason) = not_forwarded {
                        let text = not_forwarded_text(seq, &room, reason);
                        let _ = c.session.send_error(Status::INTERNAL, &text);
                    }
                    status
                };
                let _ = c.session.reply_publish(seq, status);
            }
            Event::Ack { stream, offset } => {
                // Only the connection's own inbox; any other is a protocol error.
                if c.user().is_some_and(|u| u == stream.name()) {
                    self.shared.sink.ack(&stream, offset);
                } else {
                    let text = match c.user() {
                        Some(u) => format!(
                            "ACK of {stream}: only this connection's inbox (user:{u}) is acknowledged"
                        ),
                        None => format!("ACK of {stream}: an anonymous connection has no inbox"),
                    };
                    c.session.close(CloseReason::PROTOCOL_ERROR, &text, now);
                }
            }
            Event::Sleep { .. } | Event::Wake => {}
            Event::Closed { reason, by_peer } => {
                transmit(ctx, &mut self.rec, c);
                if !self.ws_closed(ctx, c, reason, by_peer) {
                    // Our WebSocket Close is out; the peer's answer (or the session's drain
                    // deadline, in `pump`) closes the transport.
                    c.set_close_code(reason.0);
                    return;
                }
                if c.mark(Flags::CLOSING) {
                    let engine_reason = if by_peer {
                        EngineReason::PeerClosed
                    } else {
                        c.set_close_code(reason.0);
                        EngineReason::App(reason.0)
                    };
                    Self::close_conn(ctx, c, engine_reason);
                }
            }
        }
    }

    /// Hands `c`'s close to the engine: what is queued drains, then our FIN. A connection
    /// never welcomed (a refused HELLO, a handshake that broke or timed out) or closed for
    /// abuse (a flood, bytes that break the protocol) may then send at most
    /// [`SHORT_CLOSE_DISCARD_BYTES`] before the close is cut short, instead of
    /// `engine.close_discard_max_bytes`: a client waiting for our answer has sent at most
    /// its HELLO and what it pipelined behind it, and a flooder's tail is worth nothing.
    pub(super) fn close_conn(ctx: &mut Ctx<'_, Self>, c: &Conn, reason: EngineReason) {
        if c.session_id == 0 || c.is(Flags::ABUSIVE) {
            ctx.close_discarding(c.id, reason, SHORT_CLOSE_DISCARD_BYTES);
        } else {
            ctx.close(c.id, reason);
        }
    }

    /// Decodes and handles the protocol frames in `c.rx` (native bytes, or the payloads of
    /// WebSocket binary messages), acting on each frame's events before the next.
    pub(super) fn feed_native(&mut self, ctx: &mut Ctx<'_, Self>, c: &mut Conn, now: u64) {
        let mut rx = c.rx.take().map_or_else(BytesMut::new, |b| *b);
        while c.session.state() != State::Closed {
            match c.session.next_frame(&mut rx) {
                Ok(Some(frame)) => {
                    c.frames_in += 1;
                    self.rec.frame(Direction::In);
                    if matches!(c.session.state(), State::Active | State::Sleeping) {
                        let interval = u64::from(c.session.heartbeat_interval_ms()).max(1);
                        let silent = now.saturating_sub(c.session.last_rx_ms());
                        for _ in 0..(silent / interval).min(1_000) {
                            self.rec.heartbeat_missed();
                        }
                    }
                    if !self.control_allowed(c, &frame, now) {
                        break;
                    }
                    c.session.handle_frame(frame, now);
                    // Act on each frame's events before the next frame (a JOIN right
                    // behind HELLO finds the session already accepted).
                    while let Some(ev) = c.session.poll_event() {
                        self.on_event(ctx, c, ev, now);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let welcomed = !matches!(
                        c.session.state(),
                        State::Handshaking | State::Authenticating
                    );
                    if let (false, ringport_proto::Error::FrameTooLarge { declared, max }) =
                        (welcomed, &e)
                    {
                        crate::metrics::limits::hit(
                            crate::metrics::Limit::HandshakePayload,
                            1,
                            &format_args!(
                                "a frame before WELCOME declared {declared} bytes (at most {max}); closed with FRAME_TOO_LARGE"
                            ),
                        );
                    }
                    // A later version's HELLO is a negotiation (protocol.md §10): answered,
                    // not charged. Anything else that does not decode is abuse or a bug.
                    let offer = matches!(e, ringport_proto::Error::BadVersion { .. })
                        && rx
                            .first_chunk()
                            .is_some_and(ringport_proto::Header::is_version_offer);
                    c.session.refuse_input(&mut rx, &e, now);
                    if !offer {
                        self.charge_abuse(c, "bytes that break the protocol", now);
                    }
                    break;
                }
            }
        }
        if c.session.state() == State::Closed || c.session.state() == State::Draining {
            rx.clear();
        }
        // Idle connections hold no receive memory (and no buffer header either).
        if !rx.is_empty() {
            if rx.capacity() > 2 * rx.len() + RX_SLACK {
                // A partial frame left behind a decoded one keeps the whole old allocation
                // (and, when bytes next arrive, a fresh one of the old size): copy the few
                // bytes out.
                rx = BytesMut::from(&rx[..]);
            }
            c.rx = Some(Box::new(rx));
        }
    }

    /// Closes connection `old` (on whichever shard it lives) with REPLACED: another
    /// connection resumed its session. Posted through the shard's inbox, so it happens
    /// before any push posted after this connection's WELCOME.
    fn replace(&mut self, ctx: &mut Ctx<'_, Self>, old: ConnId) {
        ctx.handle()
            .run(old.shard(), move |h: &mut GatewayHandler, ctx| {
                let Some(mut c) = h.take(old) else {
                    return;
                };
                if !c.is(Flags::CLOSING) {
                    crate::metrics::limits::hit(
                        crate::metrics::Limit::SessionReplaced,
                        1,
                        &format_args!("session {:#x} resumed by another connection", c.session_id),
                    );
                    let now = h.shared.clock.ms(ctx.now());
                    c.session.close(
                        CloseReason::REPLACED,
                        "another connection resumed this session",
                        now,
                    );
                    h.pump(ctx, &mut c, now);
                    if c.mark(Flags::CLOSING) {
                        ctx.close(old, EngineReason::App(CloseReason::REPLACED.0));
                    }
                }
                h.put(c);
            });
    }

    /// `Ok(None)`: anonymous; `Err(text)`: reject with `AUTH_FAILED`.
    fn authenticate(&self, token: &[u8]) -> Result<Option<Claims>, String> {
        if token.is_empty() {
            return if self.shared.anonymous {
                Ok(None)
            } else {
                Err("a token is required".into())
            };
        }
        match &self.shared.verifier {
            Some(v) => {
                let token = std::str::from_utf8(token).map_err(|_| "token is not UTF-8")?;
                let claims = v
                    .verify(token, SystemTime::now())
                    .map_err(|e| e.to_string())?;
                if !ringport_proto::is_valid_name(&claims.sub) {
                    return Err("the token's user id (sub) must be 1 to 255 bytes without \
                                whitespace or control characters"
                        .into());
                }
                Ok(Some(claims))
            }
            // No secret: tokens cannot be checked; anonymous mode ignores them.
            None if self.shared.anonymous => Ok(None),
            None => Err("tokens cannot be verified (no secret configured)".into()),
        }
    }

    /// A live JOIN: `Ok((epoch, tail))` with the room stream's position the connection
    /// starts after (for ROOM_RESULT), or why not.
    ///
    /// Same rule as resume (docs/architecture.md, "Reliable delivery"): the tail `T` is read
    /// under the stream's lock, and in this same shard turn the connection becomes a member
    /// with last-delivered offset `T`. A live post with offset ≤ `T` still in this shard's
    /// inbox is then dropped as a duplicate; every offset > `T` is delivered.
    fn join(&mut self, c: &mut Conn, room: &str, wall: u64) -> Result<(u32, u64), Status> {
        if room == BROADCAST_ROOM || !ringport_proto::is_valid_name(room) {
            return Err(Status::INVALID);
        }
        if let Some(i) = c.joined(room) {
            // Already a member: everything after what it was handed follows, in the epoch
            // the stream is in now.
            let stream = StreamName::Room(room.to_owned());
            let (epoch, _) = self.shared.sink.position(&stream, wall);
            return Ok((epoch, c.rooms[i].last.offset()));
        }
        let allowed = c.is(Flags::ANONYMOUS) || c.grants.may_join(room);
        if !allowed {
            return Err(Status::FORBIDDEN);
        }
        if c.rooms.len() >= self.shared.rooms.max_rooms_per_connection as usize {
            rooms_limit_hit(room, self.shared.rooms.max_rooms_per_connection);
            return Err(Status::LIMIT_EXCEEDED);
        }
        let (epoch, tail) = self
            .shared
            .sink
            .position(&StreamName::Room(room.to_owned()), wall);
        let (room, pos) = self.rooms.join(room, c.id);
        // Exact (`JoinedRooms`): a connection joins a handful of rooms, and a vector grown by
        // doubling would reserve four entries at the first JOIN.
        c.rooms.push(Joined {
            room,
            pos,
            last: Position::at(epoch, tail),
        });
        Ok((epoch, tail))
    }

    /// Removes one membership from the room index and fixes the moved member's position.
    fn leave_index(&mut self, j: &Joined) {
        if let Some(moved) = self.rooms.leave(&j.room, j.pos) {
            if let Some(m) = self.conns.get_mut(moved) {
                if let Some(k) = m.joined(&j.room) {
                    m.rooms[k].pos = j.pos;
                }
            }
        }
    }

    /// A client PUBLISH: its status, and (cluster) why it reached this node's members only.
    fn publish(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        c: &mut Conn,
        room: &str,
        payload: Bytes,
        now: u64,
    ) -> (Status, Option<crate::cluster::DropReason>) {
        let r = &self.shared.rooms;
        if r.publish_rate_per_sec == 0 {
            return (Status::FORBIDDEN, None);
        }
        if payload.len() > r.max_publish_size as usize {
            self.rec.dropped(DropReason::TooLarge, 1);
            return (Status::LIMIT_EXCEEDED, None);
        }
        if c.joined(room).is_none() {
            return (Status::NOT_JOINED, None);
        }
        if !c.bucket.take(r.publish_rate_per_sec, r.publish_burst, now) {
            self.rec.dropped(DropReason::RateLimited, 1);
            let wait = c
                .bucket
                .wait_ms(1, r.publish_rate_per_sec, r.publish_burst, now);
            Self::pause_publisher(ctx, c, wait);
            return (Status::RATE_LIMITED, None);
        }
        if let Some(ip) = c.peer_ip() {
            if let Err(wait) = self.shared.peers.publish(ip, payload.len(), now) {
                self.rec.dropped(DropReason::RateLimited, 1);
                Self::pause_publisher(ctx, c, wait);
                crate::metrics::limits::hit(
                    crate::metrics::Limit::PublishBytes,
                    1,
                    &format_args!(
                        "a publish from {ip} refused: the address passed limits.publish_bytes_per_ip_per_sec ({})",
                        self.shared.limits.publish_bytes_per_ip_per_sec
                    ),
                );
                return (Status::RATE_LIMITED, None);
            }
        }
        let message = Message {
            target: Target::Room(room.to_owned()),
            kind: DeliveryKind::Publish,
            payload,
            urgent: false,
            at: Instant::now(),
            tally: None,
        };
        let posted = self.shared.publish(ctx.handle(), message);
        match posted {
            Ok(p) => (Status::OK, p.not_forwarded),
            Err(PublishError::Busy(_)) => (Status::RATE_LIMITED, None),
            Err(PublishError::Rejected(_)) => (Status::INVALID, None),
        }
    }

    /// A publish over a rate was refused: the connection is not read again for `wait_ms`
    /// (at most [`MAX_PUBLISH_PAUSE_MS`]), until the tokens it lacked are there, so a client
    /// that keeps publishing is held back by TCP's window instead of costing the shard the
    /// reading (and refusing) of everything it sends. What it already sent in the same
    /// receive is still answered, RATE_LIMITED.
    fn pause_publisher(ctx: &mut Ctx<'_, Self>, c: &Conn, wait_ms: u64) {
        let wait = Duration::from_millis(wait_ms.clamp(1, MAX_PUBLISH_PAUSE_MS));
        ctx.pause_receiving(c.id, ctx.now() + wait);
    }

    fn close_cause(c: &Conn, reason: EngineReason) -> CloseCause {
        if c.is(Flags::KICKED) {
            return CloseCause::Kicked;
        }
        if c.is(Flags::SLOW_CONSUMER) {
            return CloseCause::SlowConsumer;
        }
        let by_code = |code: u16| match CloseReason(code) {
            CloseReason::HEARTBEAT_TIMEOUT => CloseCause::HeartbeatTimeout,
            CloseReason::HANDSHAKE_TIMEOUT => CloseCause::HandshakeTimeout,
            CloseReason::AUTH_FAILED => CloseCause::AuthFailed,
            CloseReason::PROTOCOL_ERROR
            | CloseReason::FRAME_TOO_LARGE
            | CloseReason::UNSUPPORTED_VERSION => CloseCause::ProtocolError,
            CloseReason::GOING_AWAY => CloseCause::Shutdown,
            _ => CloseCause::Local,
        };
        match (reason, c.close_code()) {
            (EngineReason::SlowConsumer, _) => CloseCause::SlowConsumer,
            (_, Some(code)) => by_code(code),
            (EngineReason::App(code), None) => by_code(code),
            (EngineReason::PeerClosed, None) => CloseCause::PeerClosed,
            (EngineReason::PeerReset, None) => CloseCause::PeerReset,
            (EngineReason::IdleTimeout, None) => CloseCause::IdleTimeout,
            (EngineReason::Shutdown, None) => CloseCause::Shutdown,
            (EngineReason::Io(_) | EngineReason::ConnectFailed(_), None) => CloseCause::Io,
            _ => CloseCause::Local,
        }
    }
}

impl GatewayHandler {
    /// Resumes one stream of a HELLO, in this one shard turn (the gapless resume rule of
    /// docs/architecture.md, "Reliable delivery"): authorize it as a live JOIN would, take
    /// the replay snapshot up to tail `T` under the stream's lock, send RESUME_RESULT and the
    /// snapshot, set the connection's last-delivered offset to `T` and register membership.
    /// Live pushes with offset ≤ `T` still in this shard's inbox are then dropped as
    /// duplicates; later ones are delivered because the connection is now a member.
    ///
    /// The RESUME_RESULT and the frames are queued on the connection and handed to the
    /// session a slice per turn (`gateway/replay.rs`); at most `budget` bytes of frames are
    /// replayed (the newest ones; the rest is reported as GAP).
    fn resume_stream(
        &mut self,
        c: &mut Conn,
        point: ringport_proto::ResumePoint,
        wall: u64,
        budget: &mut u64,
    ) {
        let stream = point.stream;
        let (allowed, new_room) = match &stream {
            StreamName::Room(r) if r == BROADCAST_ROOM => (true, false),
            StreamName::Room(r) => (
                c.is(Flags::ANONYMOUS) || c.grants.may_join(r),
                c.joined(r).is_none(),
            ),
            StreamName::User(u) => (c.user() == Some(u.as_str()), false),
        };
        let refused = if !ringport_proto::is_valid_name(stream.name()) {
            Some(Status::INVALID)
        } else if !allowed {
            Some(Status::FORBIDDEN)
        } else if new_room && c.rooms.len() >= self.shared.rooms.max_rooms_per_connection as usize {
            rooms_limit_hit(stream.name(), self.shared.rooms.max_rooms_per_connection);
            Some(Status::LIMIT_EXCEEDED)
        } else {
            None
        };
        if let Some(status) = refused {
            c.replay
                .push_back(Pending::Result(ringport_proto::ResumeResult {
                    stream,
                    outcome: ringport_proto::ResumeOutcome::Refused(status),
                    old_epoch: point.epoch,
                    new_epoch: point.epoch,
                    missing_from: 0,
                    missing_to: 0,
                }));
            return;
        }
        let replay = self
            .shared
            .sink
            .replay(&stream, point.epoch, point.last_offset, wall);
        let (replay, capped) = replay.capped(point.epoch, budget);
        if capped {
            crate::metrics::limits::hit(
                crate::metrics::Limit::ReplayBytes,
                1,
                &format_args!(
                    "history.max_replay_bytes ({}) spent by one HELLO: {stream} answered GAP",
                    self.shared.max_replay_bytes
                ),
            );
        }
        c.replay
            .push_back(Pending::Result(replay.resume_result(&stream, point.epoch)));
        let (epoch, tail) = (replay.epoch(point.epoch), replay.tail());
        let frames = replay.into_frames();
        let (class, kind) = if stream.is_user() {
            (PushClass::Direct, DeliveryKind::User)
        } else {
            (PushClass::Room, DeliveryKind::Room)
        };
        if !frames.is_empty() {
            c.replay.push_back(Pending::Frames {
                class,
                kind,
                stream: stream.clone(),
                next: tail + 1 - frames.len() as u64,
                frames: frames.into(),
            });
        }
        match stream {
            StreamName::Room(r) if r == BROADCAST_ROOM => c.broadcast_last.raise(epoch, tail),
            StreamName::Room(r) => match c.joined(&r) {
                Some(i) => c.rooms[i].last.raise(epoch, tail),
                None => {
                    let (room, pos) = self.rooms.join(&r, c.id);
                    c.rooms.push(Joined {
                        room,
                        pos,
                        last: Position::at(epoch, tail),
                    });
                }
            },
            StreamName::User(_) => c.user_last.raise(epoch, tail),
        }
    }

    /// Closes `c` with PROTOCOL_ERROR if its HELLO's resume entries are over the limit
    /// (`max_rooms + 2`: the rooms, the inbox and the broadcast stream) or name a stream
    /// twice; returns whether it did.
    fn refuse_resume(&mut self, c: &mut Conn, r: &ringport_proto::Resume, now: u64) -> bool {
        let max = self.shared.rooms.max_rooms_per_connection as usize + 2;
        let (limit, text) = if r.streams.len() > max {
            (
                crate::metrics::Limit::ResumeEntries,
                format!(
                    "{} resume entries; at most {max} (max_rooms + 2)",
                    r.streams.len()
                ),
            )
        } else {
            let mut seen = std::collections::HashSet::with_capacity(r.streams.len());
            match r.streams.iter().find(|p| !seen.insert(&p.stream)) {
                Some(p) => (
                    crate::metrics::Limit::ResumeDuplicate,
                    format!("resume entry for {} appears twice", p.stream),
                ),
                None => return false,
            }
        };
        crate::metrics::limits::hit(limit, 1, &text);
        c.session.close(CloseReason::PROTOCOL_ERROR, &text, now);
        true
    }

    /// Trims history to its age bound and forgets idle sessions, once per `SWEEP_EVERY_MS`.
    fn sweep(&mut self, ctx: &mut Ctx<'_, Self>) {
        let wall = self.shared.clock.unix_ms(ctx.now());
        let last = &self.shared.last_sweep_ms;
        if wall.saturating_sub(last.load(std::sync::atomic::Ordering::Relaxed)) < SWEEP_EVERY_MS {
            return;
        }
        last.store(wall, std::sync::atomic::Ordering::Relaxed);
        self.shared.sink.sweep(wall);
        self.shared.publishes.expire(wall, SESSION_RESUME_MS);
    }
}

/// A fresh session id: a random non-zero 64-bit value (unguessable, so a session cannot be
/// taken over by counting), registered by `register` (false: taken, draw again). A
/// collision among 2^64 values is all but impossible; after 16 the id is returned
/// unregistered (that session only cannot be resumed).
fn new_session_id(mut register: impl FnMut(u64) -> bool) -> u64 {
    let mut id = 1;
    for salt in 0..16 {
        id = random_u64(salt).max(1);
        if register(id) {
            break;
        }
    }
    id
}

/// 64 random bits from the OS; should that fail, std's randomly keyed SipHash over a
/// counter (still not sequential).
fn random_u64(salt: u64) -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u64(salt);
    h.finish()
}

/// Hands the session's queued frames to the engine ([`send_frame`]).
pub(super) fn transmit(ctx: &mut Ctx<'_, GatewayHandler>, rec: &mut ShardRecorder, c: &mut Conn) {
    while let Some(frame) = c.session.poll_transmit() {
        if frame.get(1) == Some(&(Op::Ping as u8)) {
            rec.heartbeat_sent();
        }
        if !send_frame(ctx, rec, c, frame) {
            return;
        }
    }
}

/// Hands one frame (released by the session, or a push it let pass through) to the engine
/// on the connection's transport. Over WebSocket each frame is one binary message: its
/// 2–10-byte header is copied into the engine's pooled blocks and the (possibly shared) frame
/// follows it, uncopied. Before the upgrade and after our Close there is no place for it on
/// the wire: it is dropped. False when the connection is being closed as a slow consumer.
pub(super) fn send_frame(
    ctx: &mut Ctx<'_, GatewayHandler>,
    rec: &mut ShardRecorder,
    c: &mut Conn,
    frame: Bytes,
) -> bool {
    match c.transport.ws_sending() {
        None => send_frames(ctx, rec, c, &frame, 1),
        Some(true) => {
            let header =
                ringport_ws::encode_header(ringport_ws::OpCode::Binary, true, frame.len(), None);
            let sent =
                emit_copy(ctx, c, header.as_slice()).and_then(|()| emit_continued(ctx, c, frame));
            account_sent(ctx, rec, c, sent, 1)
        }
        Some(false) => true,
    }
}

/// Hands `frames` whole native frames (one frame, or a run joined into one buffer) to the
/// engine as one payload (over TLS: encrypted, never the shared plaintext itself); false when
/// the connection is being closed as a slow consumer.
pub(super) fn send_frames(
    ctx: &mut Ctx<'_, GatewayHandler>,
    rec: &mut ShardRecorder,
    c: &mut Conn,
    bytes: &Bytes,
    frames: u64,
) -> bool {
    let sent = emit(ctx, c, bytes, u32::try_from(frames).unwrap_or(u32::MAX));
    account_sent(ctx, rec, c, sent, frames)
}

/// Counts what happened to `frames` frames handed to the engine; false for a slow consumer.
fn account_sent(
    ctx: &mut Ctx<'_, GatewayHandler>,
    rec: &mut ShardRecorder,
    c: &mut Conn,
    sent: Result<(), SendError>,
    frames: u64,
) -> bool {
    match sent {
        Ok(()) => rec.frames(Direction::Out, frames),
        Err(SendError::SlowConsumer) => {
            // These frames and every one still waiting in the session are lost, and each
            // counts as a drop. The connection is shed (backlog dropped, CLOSE with the
            // reason) from the shard's inbox, where the handler may borrow it again.
            let mut lost = frames;
            while c.session.poll_transmit().is_some() {
                lost += 1;
            }
            rec.dropped(DropReason::SlowConsumer, lost);
            if c.mark(Flags::SLOW_CONSUMER) {
                let id = c.id;
                ctx.handle()
                    .run(id.shard(), move |h: &mut GatewayHandler, ctx| {
                        h.shed_slow_consumer(ctx, id);
                    });
            }
            return false;
        }
        Err(SendError::NotConnected) => rec.dropped(DropReason::NotConnected, frames),
    }
    true
}

impl GatewayHandler {
    /// Plaintext bytes of `c` (straight from the engine, or decrypted by TLS): sniffed for
    /// native or WebSocket while undecided, then decoded by that transport.
    pub(super) fn plain_input(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        c: &mut Conn,
        data: &[u8],
        now: u64,
    ) {
        // Grows by what arrived only: nothing is reserved for a frame's declared length.
        match c.transport.ws_mut() {
            Some(ws) => ws.raw.extend_from_slice(data),
            None => c.rx_mut().extend_from_slice(data),
        }
        let websocket = self.shared.websocket.as_ref();
        let sniffed = c.is(Flags::SNIFFED);
        let rx = c.rx.get_or_insert_with(Box::default);
        let decided = match c.transport.tls_mut() {
            Some(t) if !t.sniffed => Transport::sniff(rx, websocket).map(|p| {
                t.inner = p;
                t.sniffed = true;
            }),
            Some(_) => Some(()),
            None if !sniffed => Transport::sniff(rx, websocket).map(|p| {
                c.transport = p;
                c.flags.insert(Flags::SNIFFED);
            }),
            None => Some(()),
        };
        if decided.is_some() {
            match c.transport.ws() {
                Some(_) => self.ws_input(ctx, c, now),
                None => self.feed_native(ctx, c, now),
            }
        }
        // Idle connections hold no receive memory (and no buffer header either).
        if c.rx.as_ref().is_some_and(|b| b.is_empty()) {
            c.rx = None;
        }
        if let Some(ws) = c.transport.ws_mut() {
            if ws.raw.is_empty() {
                ws.raw = BytesMut::new();
            }
        }
    }
}

impl Handler for GatewayHandler {
    fn on_open(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _origin: Origin) {
        let now = self.now_ms(ctx);
        let session = Session::new(Arc::clone(&self.shared.session), now);
        let mut c = Box::new(Conn::new(conn, session, self.fresh_buckets(now)));
        self.rec.accepted();
        self.rec.state_change(None, c.gauge);
        if !self.admit_peer(ctx, &mut c, now) {
            self.pump(ctx, &mut c, now);
        }
        self.put(c);
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        let Some(mut c) = self.take(conn) else {
            return;
        };
        let now = self.now_ms(ctx);
        if !c.is(Flags::SNIFFED) && c.rx_len() == 0 && !self.tls_sniff(ctx, &mut c, data) {
            // A plaintext connection on a TLS-only port: closed, nothing read.
        } else if c.transport.tls().is_some() {
            self.tls_input(ctx, &mut c, data, now);
        } else {
            self.plain_input(ctx, &mut c, data, now);
        }
        let held = c.rx_capacity() + c.transport.held();
        let (before, now_held) = c.count_held(held);
        self.rec.receive_buffer(before, now_held);
        self.pump(ctx, &mut c, now);
        self.put(c);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        let Some(mut c) = self.take(conn) else {
            return;
        };
        let now = self.now_ms(ctx);
        c.timer_at = u64::MAX;
        c.session.handle_timeout(now);
        self.pump(ctx, &mut c, now);
        self.put(c);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: EngineReason) {
        let Some(mut c) = self.take(conn) else {
            return;
        };
        c.session.transport_closed();
        if c.transport.ws().is_some_and(|ws| ws.upgraded) {
            crate::metrics::websocket::closed();
        }
        self.tls_closed(&c);
        self.rec.receive_buffer(c.rx_counted as usize, 0);
        if c.gauge.is_some() {
            self.rec.state_change(c.gauge, None);
        }
        for j in c.rooms.take() {
            self.leave_index(&j);
        }
        if let Some(user) = &c.user {
            self.users.remove(user, conn);
        }
        self.release_admission(&mut c);
        if c.session_id != 0 {
            let wall = self.shared.clock.unix_ms(ctx.now());
            self.shared
                .publishes
                .release(c.session_id, conn.as_u64(), wall);
        }
        self.rec.closed(Self::close_cause(&c, reason));
    }

    fn on_loop(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.flush_batch(ctx, false);
        self.check_memory(ctx);
        if self.shard == 0 {
            self.sweep(ctx);
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.flush_batch(ctx, true);
        let now = self.now_ms(ctx);
        let ids: Vec<ConnId> = self.conns.ids().collect();
        for id in ids {
            if let Some(mut c) = self.take(id) {
                c.session
                    .close(CloseReason::GOING_AWAY, "server shutting down", now);
                self.pump(ctx, &mut c, now);
                self.put(c);
            }
        }
    }
}

/// The ERROR text telling a publisher that its PUBLISH `seq` to `room` reached this node's
/// members only (docs/protocol.md, section 4.7).
pub(crate) fn not_forwarded_text(
    seq: u64,
    room: &str,
    reason: crate::cluster::DropReason,
) -> String {
    format!(
        "PUBLISH seq {seq} to room {room}: delivered on this node only, it could not reach \
         the other nodes of the cluster ({})",
        reason.as_str()
    )
}

/// Counts a JOIN or resume entry refused at `rooms.max_rooms_per_connection` (logged once).
fn rooms_limit_hit(room: &str, max: u32) {
    crate::metrics::limits::hit(
        crate::metrics::Limit::RoomsPerConnection,
        1,
        &format_args!("room {room:?} refused: the connection is in rooms.max_rooms_per_connection ({max}) rooms"),
    );
}

#[cfg(test)]
mod tests {
    /// The budget stated in the key's description (and so operations.md's keys row, which
    /// `operations_doc` compares with it) and in the metric's help is the one the gateway uses.
    #[test]
    fn the_documented_short_close_budget_is_the_one_used() {
        let n = super::SHORT_CLOSE_DISCARD_BYTES.to_string();
        let key =
            crate::config::find_key("engine", "close_discard_max_bytes").expect("key documented");
        assert!(key.doc.contains(&format!("at most {n} ")), "{}", key.doc);
        let mut metrics = String::new();
        crate::metrics::MetricsSnapshot::default().render(&mut metrics);
        let help = metrics
            .lines()
            .find(|l| l.starts_with("# HELP ringport_closes_cut_short_total "))
            .expect("metric rendered");
        assert!(help.contains(&format!("({n} for")), "{help}");
    }
}
