//! The server side of one connection as a deterministic state machine.
//!
//! quinn-proto style: the gateway feeds inputs (`handle_input`/`handle_frame`,
//! `handle_timeout`, and its decisions: `accept`, `reject`, `reply_*`,
//! `offer_push`, `close`) and drains outputs (`poll_transmit`, `poll_event`,
//! `poll_timeout`). Nothing here reads a clock or touches a socket.
//!
//! ```text
//!  Handshaking --HELLO--> Authenticating --accept--> Active <--SLEEP/wake--> Sleeping
//!       |                      |  reject                |                        |
//!       +----------------------+------------------------+------------------------+
//!         timeout / protocol error / close():  --> Draining --drain timeout--> Closed
//!         peer CLOSE or transport_closed():    ----------------------------->  Closed
//! ```
//!
//! After every input the gateway drains `poll_event` and `poll_transmit` and
//! re-arms its timer at `poll_timeout`. `Event::Closed` is emitted exactly
//! once; after it the gateway sends what `poll_transmit` still yields and
//! closes the socket (at the latest at `poll_timeout`).

mod config;
mod sleep;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

pub use config::SessionConfig;
pub use sleep::{PushClass, PushOutcome};

use crate::codec::Decoder;
use crate::codes::{CloseReason, Status};
use crate::error::Error;
use crate::heartbeat::{Beat, Heartbeat};
use crate::ops::{Frame, PublishAck, Resume, ResumeResult, RoomResult, WakeAck, Welcome};
use crate::stream::StreamName;
use sleep::Holdback;

/// Longest text the session puts in CLOSE/ERROR frames it builds.
const MAX_TEXT: usize = 1024;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for the client's HELLO (handshake deadline running).
    Handshaking,
    /// HELLO received; waiting for the gateway's `accept` or `reject`.
    Authenticating,
    /// Established, normal heartbeat.
    Active,
    /// Established, client asleep: longer heartbeat, room traffic held.
    Sleeping,
    /// CLOSE queued; inbound frames are ignored until the drain deadline.
    Draining,
    /// Terminal.
    Closed,
}

/// Something the gateway must act on, from [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client sent HELLO. Answer with `accept` or `reject`.
    Hello {
        /// Credential to verify.
        token: Bytes,
        /// Client description for logs/metrics.
        client_info: String,
        /// Streams to resume; answer each with `send_resume_result` after
        /// `accept`.
        resume: Option<Resume>,
    },
    /// The client wants to join `room`. Answer with `reply_room`.
    Join {
        /// Echo in the reply.
        req_id: u32,
        /// Room name (without `room:`).
        room: String,
    },
    /// The client wants to leave `room`. Answer with `reply_room`.
    Leave {
        /// Echo in the reply.
        req_id: u32,
        /// Room name (without `room:`).
        room: String,
    },
    /// The client published to `room`. Answer with `reply_publish`.
    Publish {
        /// Room name (without `room:`).
        room: String,
        /// Client sequence number to echo.
        seq: u64,
        /// Message body, a zero-copy slice of the receive buffer.
        payload: Bytes,
    },
    /// The client processed its inbox up to `offset` (cumulative).
    Ack {
        /// Always a `StreamName::User`.
        stream: StreamName,
        /// Highest processed offset.
        offset: u64,
    },
    /// The client fell asleep; push room traffic as usual, the session holds it.
    Sleep {
        /// Heartbeat interval granted.
        interval_ms: u32,
    },
    /// The client woke; held frames and a WAKE_ACK are queued.
    Wake,
    /// The session ended. Flush `poll_transmit`, then close the socket.
    Closed {
        /// Why.
        reason: CloseReason,
        /// True if the peer closed (CLOSE frame or transport gone).
        by_peer: bool,
    },
}

/// What the gateway supplies when it accepts a HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WelcomeParams {
    /// Id the client presents to resume later; must not be 0.
    pub session_id: u64,
    /// Epoch of the client's user inbox.
    pub epoch: u32,
    /// Tail of the user inbox read when the connection was registered as a
    /// recipient of it (offsets above it are delivered live); 0 if anonymous.
    pub inbox_tail: u64,
    /// Epoch of the broadcast stream `room:*`.
    pub broadcast_epoch: u32,
    /// Tail of the broadcast stream read when the connection became a
    /// recipient of it (offsets above it are delivered live).
    pub broadcast_tail: u64,
    /// Authenticated user id (`""` for anonymous clients).
    pub user: String,
    /// Wall-clock ms since the Unix epoch (the session has no clock).
    pub server_time_ms: u64,
}

/// One server-side connection: 112 bytes on 64-bit and no heap memory while
/// idle; see the module docs for the calling contract.
#[derive(Debug)]
pub struct Session {
    /// Shared tunables; an `Arc` so 100k sessions share one copy.
    config: Arc<SessionConfig>,
    /// Current state; decides which frames and calls are legal.
    state: State,
    /// A HELLO was taken and the gateway has not answered it yet. The session may close
    /// meanwhile (bytes behind the HELLO broke the protocol): the late answer is then
    /// dropped, while a second answer stays an error. Fits in `state`'s padding.
    hello_unanswered: bool,
    /// Liveness tracking for Active and Sleeping.
    heartbeat: Heartbeat,
    /// Handshake deadline (Handshaking/Authenticating) or drain deadline
    /// (Draining); unused otherwise.
    deadline: u64,
    /// Encoded frames and events waiting for the gateway; `None` (no heap, one word) while
    /// both are empty, which is always the case between inputs of an idle connection.
    out: Option<Box<Outbox>>,
    /// Sleep holdback; `Some` only while Sleeping.
    holdback: Option<Box<Holdback>>,
}

/// What a session holds for the gateway between an input and the gateway draining it; boxed
/// and dropped when both queues are empty, so an idle session spends one pointer on them
/// instead of two empty `VecDeque` headers (64 bytes).
#[derive(Debug, Default)]
struct Outbox {
    /// Encoded frames waiting to be sent, in order.
    transmit: VecDeque<Bytes>,
    /// Events waiting for the gateway, in order.
    events: VecDeque<Event>,
}

/// The session's outbox, allocated on first use.
fn outbox(out: &mut Option<Box<Outbox>>) -> &mut Outbox {
    out.get_or_insert_with(Box::default)
}

impl Session {
    /// A new connection accepted at `now`; the handshake deadline starts.
    pub fn new(config: Arc<SessionConfig>, now: u64) -> Session {
        let deadline = now.saturating_add(config.handshake_timeout_ms);
        let heartbeat = Heartbeat::new(now, config.heartbeat_interval_ms);
        Session {
            config,
            state: State::Handshaking,
            hello_unanswered: false,
            heartbeat,
            deadline,
            out: None,
            holdback: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration this session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Heartbeat interval in force (the granted sleep interval while asleep).
    pub fn heartbeat_interval_ms(&self) -> u32 {
        self.heartbeat.interval_ms()
    }

    /// The `now` of the last frame [`Session::handle_frame`] took before draining (or of the
    /// session's start, before any): every heartbeat deadline counts from it.
    pub fn last_rx_ms(&self) -> u64 {
        self.heartbeat.last_rx()
    }

    /// Decodes and handles every complete frame at the front of `buf`.
    ///
    /// Leaves an incomplete trailing frame in `buf` for the next call. A
    /// decode error closes the session with the matching reason and discards
    /// the rest of `buf`; while draining, frames are still decoded so a peer
    /// CLOSE is seen, but nothing else is acted on.
    ///
    /// A caller that must act between frames (count them, answer each
    /// frame's events before the next frame is interpreted) runs the same
    /// loop itself: [`next_frame`](Self::next_frame), then
    /// [`handle_frame`](Self::handle_frame) or, on `Err`,
    /// [`refuse_input`](Self::refuse_input).
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: u64) {
        while self.state != State::Closed {
            match self.next_frame(buf) {
                Ok(Some(frame)) => self.handle_frame(frame, now),
                Ok(None) => return,
                Err(e) => {
                    self.refuse_input(buf, &e, now);
                    return;
                }
            }
        }
        buf.clear();
    }

    /// Removes and decodes the next complete frame from `buf` (`Ok(None)`:
    /// incomplete, wait for more bytes). Before WELCOME the payload limit is
    /// the handshake's (docs/protocol.md section 1), whatever `max_payload` is.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let decoder = Decoder::new(self.config.max_payload);
        match self.state {
            State::Handshaking | State::Authenticating => decoder.handshake().decode(buf),
            _ => decoder.decode(buf),
        }
    }

    /// Closes the session for input that failed to decode (`e` from
    /// [`next_frame`](Self::next_frame)) with the matching CLOSE reason and
    /// text, and discards the rest of `buf`: after a corrupt frame nothing
    /// more is interpreted.
    pub fn refuse_input(&mut self, buf: &mut BytesMut, e: &Error, now: u64) {
        let text = match e {
            Error::BadVersion { .. } => "supported versions: 1".to_owned(),
            e => e.to_string(),
        };
        self.close_with(e.close_reason(), &text, now);
        buf.clear();
    }

    /// Handles one decoded client frame received at `now`.
    pub fn handle_frame(&mut self, frame: Frame, now: u64) {
        match self.state {
            State::Closed => return,
            State::Draining => {
                if let Frame::Close { .. } = frame {
                    self.state = State::Closed;
                }
                return;
            }
            _ => {}
        }
        self.heartbeat.on_rx(now);
        if let Frame::Close { reason, .. } = frame {
            self.finish(reason);
            return;
        }
        match self.state {
            State::Handshaking => match frame {
                Frame::Hello(h) => {
                    self.state = State::Authenticating;
                    self.hello_unanswered = true;
                    outbox(&mut self.out).events.push_back(Event::Hello {
                        token: h.token,
                        client_info: h.client_info,
                        resume: h.resume,
                    });
                }
                other => self.violation(&other, now),
            },
            State::Active | State::Sleeping => self.handle_established(frame, now),
            // Authenticating: the client must wait for WELCOME.
            _ => self.violation(&frame, now),
        }
    }

    fn handle_established(&mut self, frame: Frame, now: u64) {
        // Heartbeats, acks and re-sleeps keep a sleeper asleep; anything the
        // user did (WAKE, JOIN, LEAVE, PUBLISH) wakes it.
        let keeps_sleep = matches!(
            frame,
            Frame::Ping { .. } | Frame::Pong { .. } | Frame::Ack(_) | Frame::Sleep { .. }
        );
        if self.state == State::Sleeping && !keeps_sleep {
            self.wake(now);
            if frame == Frame::Wake {
                return;
            }
        }
        match frame {
            Frame::Ping { nonce } => self.queue(&Frame::Pong { nonce }),
            Frame::Pong { .. } => {}
            Frame::Join(r) => outbox(&mut self.out).events.push_back(Event::Join {
                req_id: r.req_id,
                room: r.room,
            }),
            Frame::Leave(r) => outbox(&mut self.out).events.push_back(Event::Leave {
                req_id: r.req_id,
                room: r.room,
            }),
            Frame::Publish(p) => outbox(&mut self.out).events.push_back(Event::Publish {
                room: p.room,
                seq: p.seq,
                payload: p.payload,
            }),
            Frame::Ack(a) if a.stream.is_user() => {
                outbox(&mut self.out).events.push_back(Event::Ack {
                    stream: a.stream,
                    offset: a.offset,
                })
            }
            Frame::Ack(a) => {
                let text = format!(
                    "ACK of {}: only the user inbox (user:<id>) is acknowledged",
                    a.stream
                );
                self.close_with(CloseReason::PROTOCOL_ERROR, &text, now);
            }
            Frame::Sleep { interval_ms } => self.sleep(interval_ms, now),
            // WAKE while awake: answer so the client is never left waiting.
            Frame::Wake => self.queue(&Frame::WakeAck(WakeAck::default())),
            other => self.violation(&other, now),
        }
    }

    fn sleep(&mut self, requested_ms: u32, now: u64) {
        let cfg = &self.config;
        let granted = requested_ms
            .min(cfg.max_sleep_interval_ms)
            .max(cfg.heartbeat_interval_ms);
        self.heartbeat.set_interval(granted, now);
        self.state = State::Sleeping;
        if self.holdback.is_none() {
            self.holdback = Some(Box::default());
        }
        self.queue(&Frame::SleepAck {
            interval_ms: granted,
        });
        outbox(&mut self.out).events.push_back(Event::Sleep {
            interval_ms: granted,
        });
    }

    fn wake(&mut self, now: u64) {
        self.state = State::Active;
        self.heartbeat
            .set_interval(self.config.heartbeat_interval_ms, now);
        let (held, skipped) = self
            .holdback
            .take()
            .map(|b| b.into_parts())
            .unwrap_or_default();
        self.queue(&Frame::WakeAck(WakeAck { skipped }));
        outbox(&mut self.out).transmit.extend(held);
        outbox(&mut self.out).events.push_back(Event::Wake);
    }

    fn violation(&mut self, frame: &Frame, now: u64) {
        let text = format!("{:?} not allowed in state {:?}", frame.op(), self.state);
        self.close_with(CloseReason::PROTOCOL_ERROR, &text, now);
    }

    /// Peer closed or transport gone: straight to Closed.
    fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.holdback = None;
        outbox(&mut self.out).events.push_back(Event::Closed {
            reason,
            by_peer: true,
        });
    }

    fn close_with(&mut self, reason: CloseReason, text: &str, now: u64) {
        if matches!(self.state, State::Draining | State::Closed) {
            return;
        }
        self.holdback = None;
        self.queue(&Frame::Close {
            reason,
            text: truncate(text).to_owned(),
        });
        self.state = State::Draining;
        self.deadline = now.saturating_add(self.config.drain_timeout_ms);
        outbox(&mut self.out).events.push_back(Event::Closed {
            reason,
            by_peer: false,
        });
    }

    /// Encodes a frame the session built itself; those always encode.
    fn queue(&mut self, frame: &Frame) {
        if let Ok(b) = frame.to_bytes() {
            outbox(&mut self.out).transmit.push_back(b);
        }
    }

    /// Advances timers to `now`: handshake deadline, heartbeat probes and
    /// timeout, drain deadline. Calling early or repeatedly is harmless.
    pub fn handle_timeout(&mut self, now: u64) {
        match self.state {
            State::Handshaking | State::Authenticating => {
                if now >= self.deadline {
                    self.close_with(CloseReason::HANDSHAKE_TIMEOUT, "handshake timeout", now);
                }
            }
            State::Active | State::Sleeping => match self.heartbeat.poll(now, &self.config) {
                Beat::Idle => {}
                Beat::Probe => self.queue(&Frame::Ping { nonce: now }),
                Beat::Expired => {
                    self.close_with(CloseReason::HEARTBEAT_TIMEOUT, "heartbeat timeout", now)
                }
            },
            State::Draining => {
                if now >= self.deadline {
                    self.state = State::Closed;
                }
            }
            State::Closed => {}
        }
    }

    /// The next instant `handle_timeout` has work, or `None` when closed.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Handshaking | State::Authenticating | State::Draining => Some(self.deadline),
            State::Active | State::Sleeping => Some(self.heartbeat.deadline(&self.config)),
            State::Closed => None,
        }
    }

    /// True when a push offered now would be the very next frame out: the session is active
    /// and has nothing queued. The caller may then send the shared frame itself instead of
    /// [`Session::offer_push`] followed by [`Session::poll_transmit`] — the same bytes in the
    /// same order, without passing through the queue (the delivery hot path).
    pub fn push_passes_through(&self) -> bool {
        self.state == State::Active && self.out.as_ref().is_none_or(|o| o.transmit.is_empty())
    }

    /// The next encoded frame to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let o = self.out.as_mut()?;
        let b = o.transmit.pop_front();
        if o.transmit.is_empty() && o.events.is_empty() {
            self.out = None;
        }
        b
    }

    /// The next event for the gateway.
    pub fn poll_event(&mut self) -> Option<Event> {
        let o = self.out.as_mut()?;
        let e = o.events.pop_front();
        if o.events.is_empty() && o.transmit.is_empty() {
            self.out = None;
        }
        e
    }

    /// Checks that the HELLO may be answered: `Ok(true)` answer, `Ok(false)` the session
    /// closed after the HELLO was taken (bytes behind it in the same input broke the
    /// protocol, or the transport closed): the gateway raced a close, so the answer is
    /// dropped silently, as replies are. Before any HELLO (Handshaking) or after the answer
    /// (Active, Sleeping, or Draining after `reject`) it is the caller's error.
    fn may_answer_hello(&mut self, action: &'static str) -> Result<bool, Error> {
        let answer = match self.state {
            State::Authenticating => Ok(true),
            State::Draining | State::Closed if self.hello_unanswered => Ok(false),
            state => Err(Error::InvalidState { action, state }),
        };
        self.hello_unanswered = false;
        answer
    }

    /// Accepts the HELLO: sends WELCOME and starts the heartbeat at `now`.
    ///
    /// If the HELLO carried resume data, follow with one
    /// [`send_resume_result`](Self::send_resume_result) per entry before
    /// offering pushes of those streams.
    ///
    /// If the session closed after the HELLO was taken (bytes behind the HELLO in the same
    /// input broke the protocol), nothing is sent and the answer is `Ok`: the gateway raced
    /// a close, as with replies.
    pub fn accept(&mut self, params: WelcomeParams, now: u64) -> Result<(), Error> {
        if params.session_id == 0 {
            return Err(Error::InvalidValue {
                field: "session id",
                value: 0,
            });
        }
        if !self.may_answer_hello("accept")? {
            return Ok(());
        }
        let cfg = &self.config;
        let welcome = Welcome {
            session_id: params.session_id,
            epoch: params.epoch,
            inbox_tail: params.inbox_tail,
            broadcast_epoch: params.broadcast_epoch,
            broadcast_tail: params.broadcast_tail,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            max_sleep_interval_ms: cfg.max_sleep_interval_ms,
            max_payload: cfg.max_payload,
            max_rooms: cfg.max_rooms,
            server_time_ms: params.server_time_ms,
            user: params.user,
        };
        self.heartbeat = Heartbeat::new(now, cfg.heartbeat_interval_ms);
        self.state = State::Active;
        self.queue(&Frame::Welcome(welcome));
        Ok(())
    }

    /// Rejects the HELLO: sends CLOSE with `reason` (usually `AUTH_FAILED`); nothing if the
    /// session closed meanwhile, as with [`accept`](Self::accept).
    pub fn reject(&mut self, reason: CloseReason, text: &str, now: u64) -> Result<(), Error> {
        if self.may_answer_hello("reject")? {
            self.close_with(reason, text, now);
        }
        Ok(())
    }

    /// Checks that replies may be sent: `Ok(true)` send, `Ok(false)` the
    /// session already closed (the gateway raced a close; drop silently).
    fn may_reply(&self, action: &'static str) -> Result<bool, Error> {
        match self.state {
            State::Active | State::Sleeping => Ok(true),
            State::Draining | State::Closed => Ok(false),
            state => Err(Error::InvalidState { action, state }),
        }
    }

    fn reply(&mut self, action: &'static str, frame: &Frame) -> Result<(), Error> {
        if self.may_reply(action)? {
            outbox(&mut self.out).transmit.push_back(frame.to_bytes()?);
        }
        Ok(())
    }

    /// Tells the client how resuming one stream went (after `accept`).
    pub fn send_resume_result(&mut self, result: ResumeResult) -> Result<(), Error> {
        self.reply("send_resume_result", &Frame::ResumeResult(result))
    }

    /// Answers a `Join` or `Leave` event. For a successful JOIN, `position`
    /// is the room stream's `(epoch, tail)` read when the connection became a
    /// member (offsets above `tail` reach it live); `None` sends 0, 0.
    pub fn reply_room(
        &mut self,
        req_id: u32,
        status: Status,
        position: Option<(u32, u64)>,
    ) -> Result<(), Error> {
        let (epoch, tail) = position.unwrap_or((0, 0));
        self.reply(
            "reply_room",
            &Frame::RoomResult(RoomResult {
                req_id,
                status,
                epoch,
                tail,
            }),
        )
    }

    /// Answers a `Publish` event.
    pub fn reply_publish(&mut self, seq: u64, status: Status) -> Result<(), Error> {
        self.reply(
            "reply_publish",
            &Frame::PublishAck(PublishAck { seq, status }),
        )
    }

    /// Sends a non-fatal ERROR frame.
    pub fn send_error(&mut self, code: Status, text: &str) -> Result<(), Error> {
        let text = truncate(text).to_owned();
        self.reply("send_error", &Frame::Error { code, text })
    }

    /// Offers an already-encoded PUSH frame (shared by all recipients).
    ///
    /// `stream` and `offset` must match the frame; the session uses them to
    /// report skipped ranges without re-parsing the frame. A stream is always
    /// sent in offset order: an urgent push to a sleeping client first sends
    /// that stream's held frames, and ends its skipped run if it was skipping
    /// (docs/protocol.md section 8).
    pub fn offer_push(
        &mut self,
        class: PushClass,
        stream: &StreamName,
        offset: u64,
        frame: Bytes,
    ) -> PushOutcome {
        match self.state {
            State::Active => {}
            State::Sleeping if class == PushClass::Room => {
                let bound = self.config.sleep_holdback_frames;
                return match self.holdback.as_mut() {
                    Some(h) => h.offer(stream, offset, frame, bound),
                    None => PushOutcome::Dropped,
                };
            }
            // Urgent: the stream's held frames go first, so it stays in offset order.
            State::Sleeping => {
                if let Some(h) = self.holdback.as_mut() {
                    outbox(&mut self.out).transmit.extend(h.release(stream));
                }
            }
            _ => return PushOutcome::Dropped,
        }
        outbox(&mut self.out).transmit.push_back(frame);
        PushOutcome::Sent
    }

    /// Closes from the gateway side (shutdown, policy, replaced session).
    pub fn close(&mut self, reason: CloseReason, text: &str, now: u64) {
        self.close_with(reason, text, now);
    }

    /// The socket closed or failed. Emits `Closed{CONNECTION_LOST}` unless a
    /// close was already reported.
    pub fn transport_closed(&mut self) {
        match self.state {
            State::Closed => {}
            State::Draining => self.state = State::Closed,
            _ => self.finish(CloseReason::CONNECTION_LOST),
        }
    }
}

/// `text` cut to at most `MAX_TEXT` bytes on a character boundary.
pub(crate) fn truncate(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
