//! The client side of the protocol as a deterministic state machine: the
//! mirror of [`Session`](crate::Session), and the reference for the client
//! rules of `docs/protocol.md`.
//!
//! A `ClientSession` outlives connections: it keeps the session id, every
//! stream's position (dedupe and resume data) and the rooms joined. For each
//! TCP connection the caller calls [`connect`](ClientSession::connect) (which
//! queues HELLO with the resume entries), feeds received bytes to
//! [`handle_input`](ClientSession::handle_input), sends what
//! [`poll_transmit`](ClientSession::poll_transmit) yields, acts on
//! [`poll_event`](ClientSession::poll_event), and calls
//! [`handle_timeout`](ClientSession::handle_timeout) at
//! [`poll_timeout`](ClientSession::poll_timeout). Nothing here reads a clock
//! or touches a socket; `now` is any monotonic millisecond count.
//!
//! ```text
//!  Disconnected --connect--> Handshaking --WELCOME--> Active <--SLEEP_ACK/WAKE_ACK--> Sleeping
//!       ^                          |                     |                               |
//!       +--------------------------+---------------------+-------------------------------+
//!          CLOSE (either side), handshake or heartbeat deadline, transport_closed()
//! ```
//!
//! What it does for the caller:
//! - HELLO with the session id and, per stream, `(epoch, last offset received)`
//!   — or the resume point WELCOME / ROOM_RESULT gave before the first message;
//! - per-stream dedupe (an offset at or below the highest received, same
//!   epoch, is dropped) and loss reports (RESUME_RESULT GAP / EPOCH_CHANGED,
//!   WAKE_ACK runs, an unannounced jump), each exactly once;
//! - re-JOIN of rooms resume does not cover, resend of JOIN/LEAVE requests
//!   in flight when a connection dropped;
//! - a cumulative ACK of the user inbox after each batch of input;
//! - heartbeat duty: PING after an interval without sending, PONG to every
//!   PING, the connection counted dead after `dead_after_intervals` silent
//!   intervals;
//! - CLOSE with `PROTOCOL_ERROR` for a frame a server must not send.
//!
//! PUBLISH retry (same seq after a reconnect) is the caller's: it owns the
//! outbound queue and resends it on [`ClientEvent::Welcome`].
//!
//! **Observing clients.** An application wants exactly-once messages; a
//! measuring client (the load tool) wants to see what the server did wrong.
//! With [`ClientConfig::observe`] the session also reports, without changing
//! any rule it follows:
//! - [`ClientEvent::Duplicate`]: a PUSH at or below the stream's position,
//!   which is dropped (a true duplicate, or a late offset below one already
//!   delivered — the caller's own ledger tells them apart);
//! - [`ClientEvent::Ping`] / [`ClientEvent::Pong`]: the server probed us (the
//!   PONG is queued) / a PONG came back with our nonce. [`ClientSession::ping`]
//!   sends a PING with the caller's nonce (a finer clock than `now`, for RTT);
//!   PINGs of `handle_timeout` carry `now` as nonce;
//! - [`ClientEvent::ResumeAnswered`] for every RESUME_RESULT (after its `Lost`
//!   / `ResumeRefused`), and [`ClientEvent::ResumeUnanswered`] for a HELLO
//!   resume entry the server moved past without answering (docs/protocol.md
//!   4.10: answers come in entry order, each before any PUSH of its stream and
//!   before live traffic): at a later entry's answer, at a PUSH of its stream
//!   or of a stream no answer covered, or when the connection ends.

pub mod positions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::codec::Decoder;
use crate::codes::{CloseReason, Status};
use crate::error::Error;
use crate::ops::{
    Ack, Frame, Hello, Publish, Push, PushRef, Resume, ResumeOutcome, ResumeResult, RoomRequest,
    Skipped,
};
use crate::stream::{StreamName, StreamRef};
pub use positions::{Loss, LossReason, Positions, Verdict};

/// Room name of the broadcast stream `room:*`, which every connection
/// receives without joining (docs/protocol.md 4.2).
pub const BROADCAST_ROOM: &str = "*";

/// Tunables of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Credential sent in HELLO (empty: anonymous).
    pub token: Bytes,
    /// Free text for the server's logs (`sdk/1.2 android/14`).
    pub client_info: String,
    /// From connect to WELCOME, in ms; past it the connection is given up.
    pub handshake_timeout_ms: u64,
    /// Ping at most this often even if WELCOME allows longer (ms).
    pub heartbeat_cap_ms: Option<u32>,
    /// Intervals without any inbound frame after which the connection is
    /// counted dead (docs/protocol.md 7 suggests 3).
    pub dead_after_intervals: u32,
    /// Also report what a measuring client counts (module docs, "Observing
    /// clients"): `Duplicate`, `Ping`, `Pong`, `ResumeAnswered`,
    /// `ResumeUnanswered`.
    pub observe: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: Bytes::new(),
            client_info: String::new(),
            handshake_timeout_ms: 10_000,
            heartbeat_cap_ms: None,
            dead_after_intervals: 3,
            observe: false,
        }
    }
}

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// No connection (before the first `connect`, or after one ended).
    Disconnected,
    /// HELLO sent, waiting for WELCOME.
    Handshaking,
    /// Established.
    Active,
    /// Established, the server granted SLEEP.
    Sleeping,
}

/// What the caller must act on, from [`ClientSession::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// WELCOME arrived; resend unacknowledged publishes now.
    Welcome {
        /// The session id (presented on the next connect).
        session_id: u64,
        /// Whether the server continued the previous session.
        resumed: bool,
        /// Largest payload the server accepts.
        max_payload: u32,
    },
    /// A message to hand to the application (duplicates never appear).
    Message(Push),
    /// Messages that will never arrive; reported before any later message of
    /// the stream.
    Lost(Loss),
    /// The server refused to resume `stream`: it is no longer a member.
    ResumeRefused {
        /// The stream.
        stream: StreamName,
        /// Why.
        status: Status,
    },
    /// Answer to [`ClientSession::join`] / [`ClientSession::leave`] (also
    /// for the session's own re-JOINs, whose ids the caller never saw).
    RoomResult {
        /// The request's id.
        req_id: u32,
        /// Its outcome.
        status: Status,
    },
    /// Answer to a PUBLISH.
    PublishAck {
        /// The PUBLISH's seq.
        seq: u64,
        /// `OK` or why not.
        status: Status,
    },
    /// SLEEP granted with this heartbeat interval.
    SleepAck {
        /// Granted interval (ms).
        interval_ms: u32,
    },
    /// Awake again (solicited or not); `skipped` as the server sent it.
    WakeAck {
        /// Runs skipped while asleep (already reported as `Lost`).
        skipped: Vec<Skipped>,
    },
    /// A non-fatal ERROR from the server.
    ServerError {
        /// Status code.
        code: Status,
        /// Detail.
        text: String,
    },
    /// Observe only: a PUSH at or below the stream's position, dropped.
    Duplicate(Push),
    /// Observe only: the server sent PING (the PONG is queued).
    Ping {
        /// The server's nonce.
        nonce: u64,
    },
    /// Observe only: a PONG answered one of our PINGs.
    Pong {
        /// The PING's nonce (`now` at sending, or [`ClientSession::ping`]'s).
        nonce: u64,
    },
    /// Observe only: the server answered a resume entry.
    ResumeAnswered(ResumeResult),
    /// Observe only: the server moved past a resume entry without answering.
    ResumeUnanswered {
        /// The entry's stream.
        stream: StreamName,
    },
    /// The connection ended; `connect` again to resume.
    Closed {
        /// The server's reason, or the local one (`HEARTBEAT_TIMEOUT`,
        /// `HANDSHAKE_TIMEOUT`, `CONNECTION_LOST`, a decode error's).
        reason: CloseReason,
        /// Detail.
        text: String,
        /// True if the server sent CLOSE.
        by_peer: bool,
    },
}

/// An event of [`ClientSession::handle_input_with`]: a PUSH borrowed from the input, or any
/// other event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEventRef<'a> {
    /// [`ClientEvent::Message`], borrowed.
    Message(PushRef<'a>),
    /// [`ClientEvent::Duplicate`], borrowed (observe only).
    Duplicate(PushRef<'a>),
    /// Any other event, as [`ClientSession::poll_event`] returns it.
    Event(ClientEvent),
}

impl ClientEventRef<'_> {
    /// The [`ClientEvent`] `poll_event` would have returned (copies a PUSH).
    pub fn into_owned(self) -> ClientEvent {
        match self {
            ClientEventRef::Message(p) => ClientEvent::Message(p.to_owned()),
            ClientEventRef::Duplicate(p) => ClientEvent::Duplicate(p.to_owned()),
            ClientEventRef::Event(e) => e,
        }
    }
}

/// A JOIN or LEAVE not yet answered.
#[derive(Debug, Clone)]
struct RoomReq {
    req_id: u32,
    join: bool,
    room: String,
    /// Sent on the current connection (else queued for the next WELCOME).
    sent: bool,
}

/// The client side of the protocol; see the module docs.
#[derive(Debug)]
pub struct ClientSession {
    /// Tunables.
    config: ClientConfig,
    /// Current state.
    state: ClientState,
    /// 0 until the first WELCOME; presented in HELLO to resume.
    session_id: u64,
    /// Per-stream (epoch, highest offset received): dedupe and resume data.
    positions: Positions,
    /// Rooms joined (confirmed by ROOM_RESULT OK, or resumed).
    rooms: BTreeSet<String>,
    /// JOIN/LEAVE awaiting ROOM_RESULT.
    room_reqs: Vec<RoomReq>,
    /// Next request id (never 0).
    next_req: u32,
    /// The user inbox (named by WELCOME).
    inbox: Option<StreamName>,
    /// The inbox position WELCOME started it at: never acknowledged, since
    /// the messages up to it were not received by this client.
    inbox_start: Option<(u32, u64)>,
    /// Last (epoch, offset) ACKed on this connection.
    acked: Option<(u32, u64)>,
    /// WELCOME's max payload (the handshake limit before it).
    max_payload: u32,
    /// Heartbeat interval in force (ms): WELCOME's, capped, or the granted
    /// sleep interval.
    interval_ms: u64,
    /// The interval to return to on wake.
    awake_interval_ms: u64,
    /// When a frame was last queued for sending.
    last_tx: u64,
    /// When a frame last arrived (or the connection started).
    last_rx: u64,
    /// Handshake deadline while handshaking.
    deadline: u64,
    /// Encoded frames to send, in order.
    transmit: VecDeque<Bytes>,
    /// Events for the caller, in order.
    events: VecDeque<ClientEvent>,
    /// This connection's resume entries not yet answered, in entry order.
    resume_pending: VecDeque<StreamName>,
    /// This connection's resume entries answered.
    resume_answered: Vec<StreamName>,
}

impl ClientSession {
    /// A client with no connection yet.
    pub fn new(config: ClientConfig) -> ClientSession {
        ClientSession {
            config,
            state: ClientState::Disconnected,
            session_id: 0,
            positions: Positions::default(),
            rooms: BTreeSet::new(),
            room_reqs: Vec::new(),
            next_req: 1,
            inbox: None,
            inbox_start: None,
            acked: None,
            max_payload: crate::HANDSHAKE_MAX_PAYLOAD,
            interval_ms: 30_000,
            awake_interval_ms: 30_000,
            last_tx: 0,
            last_rx: 0,
            deadline: 0,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            resume_pending: VecDeque::new(),
            resume_answered: Vec::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The session id (0 before the first WELCOME).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Largest PUBLISH payload the server accepts (WELCOME's `max_payload`;
    /// the handshake limit before the first WELCOME).
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Every stream's position.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Rooms joined.
    pub fn rooms(&self) -> &BTreeSet<String> {
        &self.rooms
    }

    fn established(&self) -> bool {
        matches!(self.state, ClientState::Active | ClientState::Sleeping)
    }

    /// A new transport is up at `now`: queues HELLO (resuming the session and
    /// every known stream if there was a WELCOME before). Anything still
    /// queued from an earlier connection is discarded.
    pub fn connect(&mut self, now: u64) {
        self.transmit.clear();
        self.state = ClientState::Handshaking;
        self.deadline = now.saturating_add(self.config.handshake_timeout_ms);
        self.last_rx = now;
        self.acked = None;
        for r in &mut self.room_reqs {
            r.sent = false;
        }
        let resume = (self.session_id != 0).then(|| Resume {
            session_id: self.session_id,
            streams: self.positions.resume_points(),
        });
        self.resume_answered.clear();
        self.resume_pending = resume
            .iter()
            .flat_map(|r| r.streams.iter().map(|p| p.stream.clone()))
            .collect();
        self.queue(
            &Frame::Hello(Hello {
                token: self.config.token.clone(),
                client_info: self.config.client_info.clone(),
                resume,
            }),
            now,
        );
    }

    /// Decodes and handles every complete frame at the front of `buf`, then
    /// acknowledges the inbox up to what arrived. An incomplete trailing
    /// frame stays in `buf`; a decode error ends the connection.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: u64) {
        let decoder = Decoder::new(self.max_payload.max(crate::DEFAULT_MAX_PAYLOAD));
        while self.state != ClientState::Disconnected {
            match decoder.decode(buf) {
                Ok(Some(frame)) => self.handle_frame(frame, now),
                Ok(None) => break,
                Err(e) => {
                    buf.clear();
                    self.fail(e.close_reason(), &e.to_string(), now);
                    return;
                }
            }
        }
        self.ack_inbox(now);
    }

    /// [`handle_input`](Self::handle_input) and [`poll_event`](Self::poll_event) in one, over
    /// a byte slice and without allocating per PUSH: decodes every complete frame at the
    /// front of `input` in place ([`Decoder::view`]) and hands `f` every event, in the order
    /// `poll_event` would have returned them (events queued before the call come first).
    /// A PUSH on an established connection arrives as [`ClientEventRef::Message`] or
    /// [`ClientEventRef::Duplicate`] borrowing its name and payload from `input`; every
    /// other frame is decoded to an owned [`Frame`] and handled as `handle_input` does.
    ///
    /// Returns how many bytes of `input` were used: whole frames; the caller keeps the rest
    /// (an incomplete frame) and passes it again, followed by more bytes. After a decode
    /// error, which ends the connection, it is all of `input`. The state, the bytes to
    /// transmit and the events are exactly those of `handle_input` on the same bytes.
    pub fn handle_input_with(
        &mut self,
        input: &[u8],
        now: u64,
        mut f: impl FnMut(ClientEventRef<'_>),
    ) -> usize {
        let decoder = Decoder::new(self.max_payload.max(crate::DEFAULT_MAX_PAYLOAD));
        let mut used = 0;
        self.drain_events(&mut f);
        while self.state != ClientState::Disconnected {
            let view = match decoder.view(&input[used..]) {
                Ok(Some(view)) => view,
                Ok(None) => break,
                Err(e) => return self.fail_input(&e, now, &mut f, input.len()),
            };
            used += view.len();
            let push = match view.push() {
                Some(Ok(p)) if self.established() => p,
                Some(Err(e)) => return self.fail_input(&e, now, &mut f, input.len()),
                // Any other frame (and a PUSH in the wrong state, which is refused there).
                _ => {
                    match view.to_frame() {
                        Ok(frame) => self.handle_frame(frame, now),
                        Err(e) => return self.fail_input(&e, now, &mut f, input.len()),
                    }
                    self.drain_events(&mut f);
                    continue;
                }
            };
            self.last_rx = now;
            let deliver = self.admit_push(push.stream, push.epoch, push.offset);
            // A loss it reported comes first.
            self.drain_events(&mut f);
            if deliver {
                f(ClientEventRef::Message(push));
            } else if self.config.observe {
                f(ClientEventRef::Duplicate(push));
            }
        }
        self.ack_inbox(now);
        self.drain_events(&mut f);
        used
    }

    /// A decode error ended the connection: closes it, hands `f` what that queued and
    /// returns `used` (all of the input is consumed).
    fn fail_input(
        &mut self,
        e: &Error,
        now: u64,
        f: &mut impl FnMut(ClientEventRef<'_>),
        used: usize,
    ) -> usize {
        self.fail(e.close_reason(), &e.to_string(), now);
        self.drain_events(f);
        used
    }

    /// Hands every queued event to `f`.
    fn drain_events(&mut self, f: &mut impl FnMut(ClientEventRef<'_>)) {
        while let Some(ev) = self.events.pop_front() {
            f(ClientEventRef::Event(ev));
        }
    }

    /// Handles one decoded server frame received at `now`.
    pub fn handle_frame(&mut self, frame: Frame, now: u64) {
        if self.state == ClientState::Disconnected {
            return;
        }
        self.last_rx = now;
        if let Frame::Close { reason, text } = frame {
            self.end(reason, text, true);
            return;
        }
        if self.state == ClientState::Handshaking {
            match frame {
                Frame::Welcome(w) => self.welcome(w, now),
                other => {
                    let text = format!("{:?} before WELCOME", other.op());
                    self.fail(CloseReason::PROTOCOL_ERROR, &text, now);
                }
            }
            return;
        }
        match frame {
            Frame::Push(p) => {
                if self.admit_push(p.stream.as_ref(), p.epoch, p.offset) {
                    self.events.push_back(ClientEvent::Message(p));
                } else {
                    self.observed(ClientEvent::Duplicate(p));
                }
            }
            Frame::ResumeResult(r) => {
                if let Some(i) = self.resume_pending.iter().position(|s| s == &r.stream) {
                    self.resume_unanswered(i);
                    self.resume_pending.pop_front();
                    self.resume_answered.push(r.stream.clone());
                }
                let answer = self.config.observe.then(|| r.clone());
                if let ResumeOutcome::Refused(status) = r.outcome {
                    // Not a member any more: nothing of it follows.
                    self.positions.forget(&r.stream);
                    if let StreamName::Room(room) = &r.stream {
                        self.rooms.remove(room);
                    }
                    self.events.push_back(ClientEvent::ResumeRefused {
                        stream: r.stream,
                        status,
                    });
                } else if let Some(loss) = self.positions.on_resume(&r) {
                    self.events.push_back(ClientEvent::Lost(loss));
                }
                if let Some(answer) = answer {
                    self.events.push_back(ClientEvent::ResumeAnswered(answer));
                }
            }
            Frame::Ping { nonce } => {
                self.queue(&Frame::Pong { nonce }, now);
                self.observed(ClientEvent::Ping { nonce });
            }
            Frame::Pong { nonce } => self.observed(ClientEvent::Pong { nonce }),
            Frame::PublishAck(a) => self.events.push_back(ClientEvent::PublishAck {
                seq: a.seq,
                status: a.status,
            }),
            Frame::RoomResult(r) => {
                if let Some(i) = self.room_reqs.iter().position(|q| q.req_id == r.req_id) {
                    let q = self.room_reqs.remove(i);
                    let stream = StreamName::Room(q.room.clone());
                    if r.status == Status::OK && q.join {
                        // The room's resume point until its first message.
                        self.positions.start(&stream, r.epoch, r.tail);
                        self.rooms.insert(q.room);
                    } else if r.status == Status::OK {
                        self.positions.forget(&stream);
                        self.rooms.remove(&q.room);
                    }
                }
                self.events.push_back(ClientEvent::RoomResult {
                    req_id: r.req_id,
                    status: r.status,
                });
            }
            Frame::SleepAck { interval_ms } => {
                self.state = ClientState::Sleeping;
                self.interval_ms = u64::from(interval_ms.max(1));
                self.events.push_back(ClientEvent::SleepAck { interval_ms });
            }
            Frame::WakeAck(w) => {
                self.state = ClientState::Active;
                self.interval_ms = self.awake_interval_ms;
                for s in &w.skipped {
                    if let Some(loss) = self.positions.on_skipped(&s.stream, s.resume_from, s.count)
                    {
                        self.events.push_back(ClientEvent::Lost(loss));
                    }
                }
                self.events
                    .push_back(ClientEvent::WakeAck { skipped: w.skipped });
            }
            Frame::Error { code, text } => self
                .events
                .push_back(ClientEvent::ServerError { code, text }),
            other => {
                let text = format!("unexpected {:?} from server", other.op());
                self.fail(CloseReason::PROTOCOL_ERROR, &text, now);
            }
        }
    }

    fn welcome(&mut self, w: crate::ops::Welcome, now: u64) {
        let resumed = self.session_id != 0 && self.session_id == w.session_id;
        self.session_id = w.session_id;
        self.max_payload = w.max_payload;
        let mut interval = w.heartbeat_interval_ms.max(1);
        if let Some(cap) = self.config.heartbeat_cap_ms {
            interval = interval.min(cap.max(1));
        }
        self.interval_ms = u64::from(interval);
        self.awake_interval_ms = self.interval_ms;
        self.state = ClientState::Active;
        if !w.user.is_empty() {
            // The inbox's resume point before its first message: a reconnect
            // then resumes it instead of skipping what was sent meanwhile.
            let inbox = StreamName::User(w.user.clone());
            if self.positions.start(&inbox, w.epoch, w.inbox_tail) {
                self.inbox_start = Some((w.epoch, w.inbox_tail));
            }
            self.inbox = Some(inbox);
        }
        let broadcast = StreamName::Room(BROADCAST_ROOM.to_owned());
        self.positions
            .start(&broadcast, w.broadcast_epoch, w.broadcast_tail);
        self.events.push_back(ClientEvent::Welcome {
            session_id: w.session_id,
            resumed,
            max_payload: w.max_payload,
        });
        // Rooms the resume entries do not cover (joined, no position) are
        // joined again; requests in flight when the last connection dropped
        // are sent again.
        let uncovered: Vec<String> = self
            .rooms
            .iter()
            .filter(|r| {
                !self.positions.knows(&StreamName::Room((*r).clone()))
                    && !self.room_reqs.iter().any(|q| &q.room == *r)
            })
            .cloned()
            .collect();
        for room in uncovered {
            let req_id = self.take_req_id();
            self.room_reqs.push(RoomReq {
                req_id,
                join: true,
                room,
                sent: false,
            });
        }
        self.send_room_reqs(now);
    }

    /// The client rules for a PUSH of `stream` at (`epoch`, `offset`) on an established
    /// connection: resume entries it passes are declared unanswered, the inbox is learnt,
    /// the position advances and a loss is queued as `Lost`. Returns whether the message is
    /// delivered (`false`: a duplicate, dropped). Both input paths share it.
    fn admit_push(&mut self, stream: StreamRef<'_>, epoch: u32, offset: u64) -> bool {
        if !self.resume_pending.is_empty() && !self.resume_answered.iter().any(|s| *s == stream) {
            // Its own entry, or live traffic: what is pending up to it
            // will not be answered any more.
            let upto = self.resume_pending.iter().position(|s| *s == stream);
            self.resume_unanswered(upto.map_or(usize::MAX, |i| i + 1));
        }
        if stream.is_user() && self.inbox.is_none() {
            self.inbox = Some(stream.to_owned());
        }
        match self.positions.on_push(stream, epoch, offset) {
            Verdict::Duplicate => false,
            Verdict::Deliver => true,
            Verdict::DeliverAfterLoss(mut loss) => {
                // Asleep, a room stream jumps only past a run the server skipped
                // (an urgent message ended it, docs/protocol.md 8).
                if self.state == ClientState::Sleeping && loss.reason == LossReason::Gap {
                    loss.reason = LossReason::SkippedWhileAsleep;
                }
                self.events.push_back(ClientEvent::Lost(loss));
                true
            }
        }
    }

    /// Queues a cumulative ACK of the inbox if it advanced past what was
    /// acknowledged (never WELCOME's own starting point).
    fn ack_inbox(&mut self, now: u64) {
        if !self.established() {
            return;
        }
        // Runs after every receive: the name is cloned only when an ACK is due.
        let Some(inbox) = &self.inbox else {
            return;
        };
        let pos = self.positions.get(inbox);
        if pos.is_some() && pos != self.acked && pos != self.inbox_start {
            if let Some((_, offset)) = pos {
                let ack = Frame::Ack(Ack {
                    stream: inbox.clone(),
                    offset,
                });
                self.queue(&ack, now);
            }
            self.acked = pos;
        }
    }

    /// Queues an observation event (only with `observe`).
    fn observed(&mut self, ev: ClientEvent) {
        if self.config.observe {
            self.events.push_back(ev);
        }
    }

    /// Declares the first `n` pending resume entries unanswered.
    fn resume_unanswered(&mut self, n: usize) {
        let n = n.min(self.resume_pending.len());
        if n == 0 {
            return;
        }
        for stream in self.resume_pending.drain(..n).collect::<Vec<_>>() {
            self.observed(ClientEvent::ResumeUnanswered { stream });
        }
    }

    /// Sends a PING with the caller's `nonce` now (`false`: not connected);
    /// its PONG is reported as [`ClientEvent::Pong`] with observe on.
    pub fn ping(&mut self, nonce: u64, now: u64) -> bool {
        self.established() && {
            self.queue(&Frame::Ping { nonce }, now);
            true
        }
    }

    /// JOIN/LEAVE requests not yet answered (the caller's and the session's
    /// own re-JOINs).
    pub fn room_requests_pending(&self) -> usize {
        self.room_reqs.len()
    }

    /// Checks the deadlines at `now`: handshake, heartbeat duty (PING), dead
    /// connection.
    pub fn handle_timeout(&mut self, now: u64) {
        match self.state {
            ClientState::Disconnected => {}
            ClientState::Handshaking => {
                if now >= self.deadline {
                    self.end(
                        CloseReason::HANDSHAKE_TIMEOUT,
                        "no WELCOME within the handshake timeout".into(),
                        false,
                    );
                }
            }
            ClientState::Active | ClientState::Sleeping => {
                if now >= self.dead_at() {
                    self.end(
                        CloseReason::HEARTBEAT_TIMEOUT,
                        "no frame from server within the heartbeat deadline".into(),
                        false,
                    );
                } else if now >= self.last_tx.saturating_add(self.interval_ms) {
                    self.queue(&Frame::Ping { nonce: now }, now);
                }
            }
        }
    }

    fn dead_at(&self) -> u64 {
        let n = u64::from(self.config.dead_after_intervals.max(1));
        self.last_rx
            .saturating_add(self.interval_ms.saturating_mul(n))
    }

    /// When `handle_timeout` must be called next (`None`: no connection).
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            ClientState::Disconnected => None,
            ClientState::Handshaking => Some(self.deadline),
            ClientState::Active | ClientState::Sleeping => Some(
                self.dead_at()
                    .min(self.last_tx.saturating_add(self.interval_ms)),
            ),
        }
    }

    /// The next encoded frame to send.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The transport died without CLOSE: emits `Closed{CONNECTION_LOST}`
    /// (unless the connection already ended).
    pub fn transport_closed(&mut self, text: &str) {
        if self.state != ClientState::Disconnected {
            self.end(CloseReason::CONNECTION_LOST, text.to_owned(), false);
        }
    }

    /// Sends CLOSE and ends the connection (the caller flushes
    /// `poll_transmit`, then closes the socket).
    pub fn close(&mut self, reason: CloseReason, text: &str, now: u64) {
        if self.state != ClientState::Disconnected {
            self.fail(reason, text, now);
        }
    }

    /// Asks to join `room`; the answer is a `RoomResult` with the returned
    /// id. While disconnected the request waits for the next WELCOME.
    pub fn join(&mut self, room: &str, now: u64) -> Result<u32, Error> {
        self.room_request(true, room, now)
    }

    /// Asks to leave `room`, like [`join`](Self::join).
    pub fn leave(&mut self, room: &str, now: u64) -> Result<u32, Error> {
        self.room_request(false, room, now)
    }

    fn take_req_id(&mut self) -> u32 {
        let id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        id
    }

    fn room_request(&mut self, join: bool, room: &str, now: u64) -> Result<u32, Error> {
        // Validates the name as the wire would, connected or not.
        Frame::Join(RoomRequest {
            req_id: 0,
            room: room.to_owned(),
        })
        .encoded_len()?;
        let req_id = self.take_req_id();
        self.room_reqs.push(RoomReq {
            req_id,
            join,
            room: room.to_owned(),
            sent: false,
        });
        self.send_room_reqs(now);
        Ok(req_id)
    }

    fn send_room_reqs(&mut self, now: u64) {
        if !self.established() {
            return;
        }
        let mut frames = Vec::new();
        for q in self.room_reqs.iter_mut().filter(|q| !q.sent) {
            q.sent = true;
            let r = RoomRequest {
                req_id: q.req_id,
                room: q.room.clone(),
            };
            frames.push(if q.join {
                Frame::Join(r)
            } else {
                Frame::Leave(r)
            });
        }
        for f in frames {
            self.queue(&f, now);
        }
    }

    /// Checks that a PUBLISH of `payload` to `room` fits the server's limit.
    pub fn check_publish(&self, room: &str, payload: &Bytes) -> Result<(), Error> {
        let len = Frame::Publish(Publish {
            room: room.to_owned(),
            seq: 0,
            payload: payload.clone(),
        })
        .encoded_len()?
            - crate::HEADER_LEN;
        if len > self.max_payload as usize {
            return Err(Error::FieldTooLong {
                field: "payload",
                len,
                max: self.max_payload as usize,
            });
        }
        Ok(())
    }

    /// Sends a PUBLISH now if established (`Ok(false)`: not connected; resend
    /// it after the next `Welcome`). `Err`: it can never be sent (see
    /// [`check_publish`](Self::check_publish)).
    pub fn publish(
        &mut self,
        room: &str,
        seq: u64,
        payload: Bytes,
        now: u64,
    ) -> Result<bool, Error> {
        self.check_publish(room, &payload)?;
        if !self.established() {
            return Ok(false);
        }
        let frame = Frame::Publish(Publish {
            room: room.to_owned(),
            seq,
            payload,
        });
        self.queue(&frame, now);
        Ok(true)
    }

    /// Asks the server to let the client sleep (`false`: not connected).
    pub fn sleep(&mut self, interval_ms: u32, now: u64) -> bool {
        self.established() && {
            self.queue(&Frame::Sleep { interval_ms }, now);
            true
        }
    }

    /// Asks the server to wake the client (`false`: not connected).
    pub fn wake(&mut self, now: u64) -> bool {
        self.established() && {
            self.queue(&Frame::Wake, now);
            true
        }
    }

    /// Queues `frame`. Encoding fails only for oversized caller input, which
    /// `room_request`, `publish` and `close` refuse or trim before this.
    fn queue(&mut self, frame: &Frame, now: u64) {
        if let Ok(b) = frame.to_bytes() {
            self.transmit.push_back(b);
            self.last_tx = now;
        }
    }

    /// Sends CLOSE for a local reason and ends the connection.
    fn fail(&mut self, reason: CloseReason, text: &str, now: u64) {
        self.queue(
            &Frame::Close {
                reason,
                text: crate::session::truncate(text).to_owned(),
            },
            now,
        );
        self.end(reason, text.to_owned(), false);
    }

    fn end(&mut self, reason: CloseReason, text: String, by_peer: bool) {
        self.resume_unanswered(usize::MAX);
        self.state = ClientState::Disconnected;
        self.interval_ms = self.awake_interval_ms;
        self.events.push_back(ClientEvent::Closed {
            reason,
            text,
            by_peer,
        });
    }
}
