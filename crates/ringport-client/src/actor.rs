//! The task that owns the connection: handshake, resume, heartbeat,
//! reconnect with backoff, request/ack matching, dedupe.
//!
//! One tokio task per [`Client`](crate::Client). The handle talks to it
//! through a command channel; it talks to the application through the
//! event channel. State that must survive reconnects (session id, stream
//! positions, joined rooms, unacknowledged publishes) lives here; state of
//! one connection lives in [`Conn`].

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringport_proto::{
    Ack, CloseReason, Decoder, Frame, Hello, Publish, Resume, ResumeOutcome, RoomRequest, Skipped,
    Status, StreamName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use crate::error::Error;
use crate::event::{Event, Message};
use crate::options::Options;
use crate::outbound::Outbound;
use crate::positions::{Positions, Verdict};

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Room name of the broadcast stream `room:*` (docs/protocol.md, 4.2), which
/// every connection receives without joining.
const BROADCAST: &str = "*";

/// Connection faults a test can inject (chaos tests of resume).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close with RST (SO_LINGER 0).
    Reset,
    /// Close with FIN, without a CLOSE frame.
    Abort,
    /// Neither read nor write for this long (a frozen app or dead radio).
    Pause(Duration),
}

/// Requests from the [`Client`](crate::Client) handle.
pub(crate) enum Command {
    Join {
        room: String,
        reply: Reply<()>,
    },
    Leave {
        room: String,
        reply: Reply<()>,
    },
    Publish {
        room: String,
        payload: Bytes,
        reply: Reply<u64>,
    },
    Sleep {
        interval_ms: u32,
        reply: Reply<u32>,
    },
    Wake {
        reply: Reply<Vec<Skipped>>,
    },
    Fault(Fault),
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A JOIN or LEAVE awaiting its ROOM_RESULT.
struct RoomReq {
    req_id: u32,
    join: bool,
    room: String,
    /// `None` for the client's own re-JOINs after a reconnect.
    reply: Option<Reply<()>>,
}

/// How a connection ended.
enum End {
    /// The application closed the client (or dropped it).
    Closed,
    /// Stop for good: auth failed, replaced.
    Fatal(Error),
    /// Reconnect.
    Lost(CloseReason, String),
}

/// One live connection.
struct Conn {
    stream: TcpStream,
    /// Received bytes not yet decoded.
    rx: BytesMut,
    /// Encoded frames not yet written.
    tx: BytesMut,
    decoder: Decoder,
    last_rx: Instant,
    last_tx: Instant,
    /// Send a PING after this much silence.
    heartbeat: Duration,
    /// WELCOME's max payload, to reject oversize publishes locally.
    max_payload: u32,
}

impl Conn {
    fn queue(&mut self, frame: &Frame) -> Result<(), Error> {
        frame.encode(&mut self.tx)?;
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.tx.is_empty() {
            let out = self.tx.split();
            self.stream.write_all(&out).await?;
            self.last_tx = Instant::now();
        }
        Ok(())
    }
}

pub(crate) struct Actor {
    addr: String,
    token: Bytes,
    opts: Options,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// 0 until the first WELCOME; presented in HELLO to resume.
    session_id: u64,
    /// Per-stream (epoch, last delivered offset): dedupe and resume data.
    positions: Positions,
    /// Rooms joined (confirmed by ROOM_RESULT OK).
    rooms: BTreeSet<String>,
    /// JOIN/LEAVE awaiting ROOM_RESULT.
    room_reqs: Vec<RoomReq>,
    next_req: u32,
    /// Publishes awaiting PUBLISH_ACK (bounded), resent after reconnect.
    outbound: Outbound<Reply<u64>>,
    /// This user's inbox (named by WELCOME); acked cumulatively.
    inbox: Option<StreamName>,
    /// The inbox position WELCOME started it at: never acknowledged, since
    /// the messages up to it were not received by this client.
    inbox_start: Option<(u32, u64)>,
    /// Last (epoch, offset) ACKed on this connection.
    acked: Option<(u32, u64)>,
    sleep_reply: Option<Reply<u32>>,
    wake_reply: Option<Reply<Vec<Skipped>>>,
}

impl Actor {
    pub(crate) fn new(
        addr: String,
        token: Bytes,
        opts: Options,
        cmds: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Actor {
        let outbound = Outbound::new(opts.outbound_queue);
        Actor {
            addr,
            token,
            opts,
            cmds,
            events,
            session_id: 0,
            positions: Positions::default(),
            rooms: BTreeSet::new(),
            room_reqs: Vec::new(),
            next_req: 1,
            outbound,
            inbox: None,
            inbox_start: None,
            acked: None,
            sleep_reply: None,
            wake_reply: None,
        }
    }

    /// Runs until closed. `ready` learns the outcome of the first connect.
    pub(crate) async fn run(mut self, ready: oneshot::Sender<Result<u64, Error>>) {
        let mut ready = Some(ready);
        let mut attempt: u32 = 0;
        loop {
            match self.connect().await {
                Ok(conn) => {
                    attempt = 0;
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(self.session_id));
                    }
                    match self.drive(conn).await {
                        End::Closed => return self.stop("closed by the application"),
                        End::Fatal(e) => return self.stop(&e.to_string()),
                        End::Lost(reason, text) => {
                            tracing::debug!(?reason, %text, "connection lost; reconnecting");
                            self.emit(Event::Disconnected { reason, text }).await;
                        }
                    }
                }
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                        return self.stop("first connect failed");
                    }
                    if matches!(e, Error::AuthFailed { .. } | Error::ClosedByServer { .. }) {
                        return self.stop(&e.to_string());
                    }
                    tracing::debug!(error = %e, attempt, "reconnect failed");
                    attempt = attempt.saturating_add(1);
                    if self
                        .opts
                        .max_reconnect_attempts
                        .is_some_and(|m| attempt > m)
                    {
                        return self.stop("gave up reconnecting");
                    }
                }
            }
            let delay = self.opts.backoff.delay(attempt, rand::random::<f64>());
            if !self.wait_disconnected(delay).await {
                return self.stop("closed by the application");
            }
        }
    }

    async fn emit(&self, e: Event) {
        // An application that dropped its receiver still may publish.
        let _ = self.events.send(e).await;
    }

    /// Fails everything pending and reports `Closed`.
    fn stop(mut self, why: &str) {
        for p in self.outbound.drain() {
            let _ = p.reply.send(Err(Error::Closed));
        }
        for r in self.room_reqs.drain(..) {
            if let Some(reply) = r.reply {
                let _ = reply.send(Err(Error::Closed));
            }
        }
        let _ = self.events.try_send(Event::Closed {
            text: why.to_owned(),
        });
    }

    /// Waits `delay` while disconnected, queueing requests. False: close.
    async fn wait_disconnected(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                cmd = self.cmds.recv() => match cmd {
                    None => return false,
                    Some(Command::Close { reply }) => {
                        let _ = reply.send(());
                        return false;
                    }
                    Some(Command::Join { room, reply }) => self.room_request(None, true, room, Some(reply)),
                    Some(Command::Leave { room, reply }) => self.room_request(None, false, room, Some(reply)),
                    Some(Command::Publish { room, payload, reply }) => {
                        self.publish(None, room, payload, reply);
                    }
                    Some(Command::Sleep { reply, .. }) => {
                        let _ = reply.send(Err(Error::Disconnected));
                    }
                    Some(Command::Wake { reply }) => {
                        let _ = reply.send(Ok(Vec::new()));
                    }
                    Some(Command::Fault(_)) => {}
                },
            }
        }
    }

    /// TCP connect and HELLO → WELCOME, bounded by the handshake timeout.
    async fn connect(&mut self) -> Result<Conn, Error> {
        match timeout(self.opts.handshake_timeout, self.handshake()).await {
            Ok(r) => r,
            Err(_) => Err(Error::HandshakeTimeout),
        }
    }

    async fn handshake(&mut self) -> Result<Conn, Error> {
        let connect_err = |source| Error::Connect {
            addr: self.addr.clone(),
            source,
        };
        let stream = TcpStream::connect(&self.addr).await.map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let mut conn = Conn {
            stream,
            rx: BytesMut::with_capacity(8 * 1024),
            tx: BytesMut::new(),
            decoder: Decoder::default(),
            last_rx: now,
            last_tx: now,
            heartbeat: Duration::from_secs(30),
            max_payload: ringport_proto::DEFAULT_MAX_PAYLOAD,
        };
        let resume = (self.session_id != 0).then(|| Resume {
            session_id: self.session_id,
            streams: self.positions.resume_points(),
        });
        conn.queue(&Frame::Hello(Hello {
            token: self.token.clone(),
            client_info: self.opts.client_info.clone(),
            resume,
        }))?;
        conn.flush().await.map_err(connect_err)?;
        loop {
            match conn.decoder.decode(&mut conn.rx) {
                Ok(Some(Frame::Welcome(w))) => {
                    let resumed = self.session_id != 0 && self.session_id == w.session_id;
                    self.session_id = w.session_id;
                    let mut hb = Duration::from_millis(w.heartbeat_interval_ms.max(1).into());
                    if let Some(h) = self.opts.heartbeat_interval {
                        hb = hb.min(h);
                    }
                    conn.heartbeat = hb;
                    conn.max_payload = w.max_payload;
                    conn.last_rx = Instant::now();
                    if !w.user.is_empty() {
                        // Resume point of the inbox before its first message: a
                        // reconnect then resumes it instead of skipping the cut.
                        let inbox = StreamName::User(w.user.clone());
                        if self.positions.start(&inbox, w.epoch, w.inbox_tail) {
                            self.inbox_start = Some((w.epoch, w.inbox_tail));
                        }
                        self.inbox = Some(inbox);
                    }
                    // Likewise the broadcast stream, which every connection receives.
                    let broadcast = StreamName::Room(BROADCAST.to_owned());
                    self.positions
                        .start(&broadcast, w.broadcast_epoch, w.broadcast_tail);
                    self.emit(Event::Connected {
                        session_id: w.session_id,
                        resumed,
                    })
                    .await;
                    return Ok(conn);
                }
                Ok(Some(Frame::Close { reason, text })) => {
                    return Err(match reason {
                        CloseReason::AUTH_FAILED => Error::AuthFailed { text },
                        _ => Error::ClosedByServer { reason, text },
                    })
                }
                Ok(Some(_)) => {
                    return Err(Error::ClosedByServer {
                        reason: CloseReason::PROTOCOL_ERROR,
                        text: "frame before WELCOME".into(),
                    })
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Invalid(e)),
            }
            let n = conn
                .stream
                .read_buf(&mut conn.rx)
                .await
                .map_err(connect_err)?;
            if n == 0 {
                return Err(connect_err(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// After WELCOME: re-JOIN rooms that resume does not cover, resend
    /// pending JOIN/LEAVE and every unacknowledged publish (same seq).
    fn after_welcome(&mut self, conn: &mut Conn) {
        self.acked = None;
        let reqs: Vec<RoomReq> = self
            .room_reqs
            .drain(..)
            .filter(|r| r.reply.is_some())
            .collect();
        for room in self.rooms.clone() {
            let covered = self.positions.knows(&StreamName::Room(room.clone()))
                || reqs.iter().any(|r| r.room == room);
            if !covered {
                self.room_request(Some(conn), true, room, None);
            }
        }
        for r in reqs {
            self.room_request(Some(conn), r.join, r.room, r.reply);
        }
        for p in self.outbound.iter() {
            let _ = conn.queue(&Frame::Publish(Publish {
                room: p.room.clone(),
                seq: p.seq,
                payload: p.payload.clone(),
            }));
        }
    }

    fn room_request(
        &mut self,
        conn: Option<&mut Conn>,
        join: bool,
        room: String,
        reply: Option<Reply<()>>,
    ) {
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        if let Some(conn) = conn {
            let r = RoomRequest {
                req_id,
                room: room.clone(),
            };
            let frame = if join {
                Frame::Join(r)
            } else {
                Frame::Leave(r)
            };
            if let Err(e) = conn.queue(&frame) {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
                return;
            }
        } else if let Err(e) = (RoomRequest {
            req_id,
            room: room.clone(),
        })
        .room_check()
        {
            if let Some(reply) = reply {
                let _ = reply.send(Err(e));
            }
            return;
        }
        self.room_reqs.push(RoomReq {
            req_id,
            join,
            room,
            reply,
        });
    }

    fn publish(
        &mut self,
        conn: Option<&mut Conn>,
        room: String,
        payload: Bytes,
        reply: Reply<u64>,
    ) {
        let max = conn
            .as_ref()
            .map_or(ringport_proto::DEFAULT_MAX_PAYLOAD, |c| c.max_payload);
        let probe = Frame::Publish(Publish {
            room: room.clone(),
            seq: 0,
            payload: payload.clone(),
        });
        match probe.encoded_len() {
            Err(e) => {
                let _ = reply.send(Err(Error::Invalid(e)));
                return;
            }
            Ok(len) if len - ringport_proto::HEADER_LEN > max as usize => {
                let _ = reply.send(Err(Error::Invalid(ringport_proto::Error::FieldTooLong {
                    field: "payload",
                    len: len - ringport_proto::HEADER_LEN,
                    max: max as usize,
                })));
                return;
            }
            Ok(_) => {}
        }
        let capacity = self.outbound.capacity();
        match self.outbound.push(room.clone(), payload.clone(), reply) {
            Err(reply) => {
                let _ = reply.send(Err(Error::QueueFull { capacity }));
            }
            Ok(seq) => {
                if let Some(conn) = conn {
                    let _ = conn.queue(&Frame::Publish(Publish { room, seq, payload }));
                }
            }
        }
    }

    /// Serves one connection until it ends.
    async fn drive(&mut self, mut conn: Conn) -> End {
        self.after_welcome(&mut conn);
        // Frames that arrived right behind WELCOME (RESUME_RESULT, replay)
        // are already buffered.
        if let Some(end) = self.on_input(&mut conn).await {
            let _ = conn.flush().await;
            return end;
        }
        loop {
            if let Err(e) = conn.flush().await {
                return End::Lost(CloseReason::CONNECTION_LOST, e.to_string());
            }
            let ping_at = conn.last_tx + conn.heartbeat;
            let dead_at = conn.last_rx + conn.heartbeat * self.opts.dead_after_intervals.max(1);
            tokio::select! {
                r = conn.stream.read_buf(&mut conn.rx) => match r {
                    Ok(0) => return End::Lost(CloseReason::CONNECTION_LOST, "connection closed by peer".into()),
                    Err(e) => return End::Lost(CloseReason::CONNECTION_LOST, e.to_string()),
                    Ok(_) => {
                        conn.last_rx = Instant::now();
                        if let Some(end) = self.on_input(&mut conn).await {
                            let _ = conn.flush().await;
                            return end;
                        }
                    }
                },
                cmd = self.cmds.recv() => {
                    if let Some(end) = self.on_command(&mut conn, cmd).await {
                        return end;
                    }
                }
                _ = sleep_until(ping_at) => {
                    let nonce = u64::try_from(conn.last_tx.elapsed().as_millis()).unwrap_or(0);
                    let _ = conn.queue(&Frame::Ping { nonce });
                }
                _ = sleep_until(dead_at) => {
                    return End::Lost(CloseReason::HEARTBEAT_TIMEOUT, "no frame from server within the heartbeat deadline".into());
                }
            }
        }
    }

    async fn on_command(&mut self, conn: &mut Conn, cmd: Option<Command>) -> Option<End> {
        match cmd {
            None => {
                let _ = conn.queue(&Frame::Close {
                    reason: CloseReason::NORMAL,
                    text: String::new(),
                });
                let _ = conn.flush().await;
                return Some(End::Closed);
            }
            Some(Command::Close { reply }) => {
                let _ = conn.queue(&Frame::Close {
                    reason: CloseReason::NORMAL,
                    text: String::new(),
                });
                let _ = conn.flush().await;
                let _ = conn.stream.shutdown().await;
                let _ = reply.send(());
                return Some(End::Closed);
            }
            Some(Command::Join { room, reply }) => {
                self.room_request(Some(conn), true, room, Some(reply))
            }
            Some(Command::Leave { room, reply }) => {
                self.room_request(Some(conn), false, room, Some(reply))
            }
            Some(Command::Publish {
                room,
                payload,
                reply,
            }) => self.publish(Some(conn), room, payload, reply),
            Some(Command::Sleep { interval_ms, reply }) => {
                let _ = conn.queue(&Frame::Sleep { interval_ms });
                if let Some(old) = self.sleep_reply.replace(reply) {
                    let _ = old.send(Err(Error::Disconnected));
                }
            }
            Some(Command::Wake { reply }) => {
                let _ = conn.queue(&Frame::Wake);
                if let Some(old) = self.wake_reply.replace(reply) {
                    let _ = old.send(Ok(Vec::new()));
                }
            }
            Some(Command::Fault(f)) => match f {
                Fault::Reset => {
                    // Zero linger: close() sends RST and never blocks.
                    #[allow(deprecated)]
                    let _ = conn.stream.set_linger(Some(Duration::ZERO));
                    return Some(End::Lost(
                        CloseReason::CONNECTION_LOST,
                        "fault: reset".into(),
                    ));
                }
                Fault::Abort => {
                    return Some(End::Lost(
                        CloseReason::CONNECTION_LOST,
                        "fault: abort".into(),
                    ))
                }
                Fault::Pause(d) => tokio::time::sleep(d).await,
            },
        }
        None
    }

    /// Handles every complete frame received; then ACKs the inbox.
    async fn on_input(&mut self, conn: &mut Conn) -> Option<End> {
        loop {
            let frame = match conn.decoder.decode(&mut conn.rx) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let _ = conn.queue(&Frame::Close {
                        reason: e.close_reason(),
                        text: e.to_string(),
                    });
                    return Some(End::Lost(e.close_reason(), e.to_string()));
                }
            };
            if let Some(end) = self.on_frame(conn, frame).await {
                return Some(end);
            }
        }
        if let Some(inbox) = &self.inbox {
            let pos = self.positions.get(inbox);
            if pos.is_some() && pos != self.acked && pos != self.inbox_start {
                if let Some((_, offset)) = pos {
                    let _ = conn.queue(&Frame::Ack(Ack {
                        stream: inbox.clone(),
                        offset,
                    }));
                }
                self.acked = pos;
            }
        }
        None
    }

    async fn on_frame(&mut self, conn: &mut Conn, frame: Frame) -> Option<End> {
        match frame {
            Frame::Push(p) => {
                if p.stream.is_user() && self.inbox.is_none() {
                    self.inbox = Some(p.stream.clone());
                }
                match self.positions.on_push(&p.stream, p.epoch, p.offset) {
                    Verdict::Duplicate => {}
                    v => {
                        if let Verdict::DeliverAfterLoss(loss) = v {
                            self.emit(loss.into()).await;
                        }
                        self.emit(Event::Message(Message {
                            stream: p.stream,
                            epoch: p.epoch,
                            offset: p.offset,
                            urgent: p.urgent,
                            payload: p.payload,
                        }))
                        .await;
                    }
                }
            }
            Frame::ResumeResult(r) => {
                if let ResumeOutcome::Refused(status) = r.outcome {
                    // Not a member any more: nothing of it follows, so say so.
                    self.positions.forget(&r.stream);
                    if let StreamName::Room(room) = &r.stream {
                        self.rooms.remove(room);
                    }
                    self.emit(Event::ResumeRefused {
                        stream: r.stream,
                        status,
                    })
                    .await;
                } else if let Some(loss) = self.positions.on_resume(&r) {
                    self.emit(loss.into()).await;
                }
            }
            Frame::Ping { nonce } => {
                let _ = conn.queue(&Frame::Pong { nonce });
            }
            Frame::Pong { .. } => {}
            Frame::PublishAck(a) => {
                if let Some(p) = self.outbound.ack(a.seq) {
                    let r = if a.status == Status::OK {
                        Ok(a.seq)
                    } else {
                        Err(Error::Rejected { status: a.status })
                    };
                    let _ = p.reply.send(r);
                }
            }
            Frame::RoomResult(r) => {
                if let Some(i) = self.room_reqs.iter().position(|q| q.req_id == r.req_id) {
                    let q = self.room_reqs.remove(i);
                    if r.status == Status::OK {
                        if q.join {
                            // The room's resume point until its first message.
                            let stream = StreamName::Room(q.room.clone());
                            self.positions.start(&stream, r.epoch, r.tail);
                            self.rooms.insert(q.room);
                        } else {
                            self.positions.forget(&StreamName::Room(q.room.clone()));
                            self.rooms.remove(&q.room);
                        }
                    }
                    if let Some(reply) = q.reply {
                        let _ = reply.send(if r.status == Status::OK {
                            Ok(())
                        } else {
                            Err(Error::Rejected { status: r.status })
                        });
                    }
                }
            }
            Frame::SleepAck { interval_ms } => {
                if let Some(reply) = self.sleep_reply.take() {
                    let _ = reply.send(Ok(interval_ms));
                }
            }
            Frame::WakeAck(w) => {
                for s in &w.skipped {
                    if let Some(loss) = self.positions.on_skipped(&s.stream, s.resume_from, s.count)
                    {
                        self.emit(loss.into()).await;
                    }
                }
                if let Some(reply) = self.wake_reply.take() {
                    let _ = reply.send(Ok(w.skipped));
                }
            }
            Frame::Error { code, text } => tracing::warn!(?code, %text, "server reported an error"),
            Frame::Close { reason, text } => {
                return Some(match reason {
                    CloseReason::AUTH_FAILED => End::Fatal(Error::AuthFailed { text }),
                    CloseReason::REPLACED => End::Fatal(Error::ClosedByServer { reason, text }),
                    _ => End::Lost(reason, text),
                });
            }
            other => {
                let text = format!("unexpected {:?} from server", other.op());
                let _ = conn.queue(&Frame::Close {
                    reason: CloseReason::PROTOCOL_ERROR,
                    text: text.clone(),
                });
                return Some(End::Lost(CloseReason::PROTOCOL_ERROR, text));
            }
        }
        None
    }
}

/// Name validation without a connection (requests queued while offline).
trait RoomCheck {
    fn room_check(&self) -> Result<(), Error>;
}

impl RoomCheck for RoomRequest {
    fn room_check(&self) -> Result<(), Error> {
        Frame::Join(self.clone()).encoded_len()?;
        Ok(())
    }
}
