//! The task that owns the connection: TCP, reconnect with backoff, and
//! matching answers to the application's requests.
//!
//! One tokio task per [`Client`](crate::Client). The handle talks to it
//! through a command channel; it talks to the application through the
//! event channel. Every protocol rule (handshake, resume entries, dedupe,
//! loss reports, inbox ACKs, heartbeat duty, re-JOINs) is
//! [`ClientSession`]'s, the sans-IO client core in `ringport-proto`; this
//! task moves bytes between it and the socket, feeds it a millisecond clock,
//! and keeps what only the application cares about: the replies waiting
//! for answers and the outbound queue of unacknowledged publishes.

use std::collections::HashMap;
use std::time::Duration;

use crate::link::{Link, Target};
use bytes::{Bytes, BytesMut};
use ringport_proto::{
    ClientConfig, ClientEvent, ClientSession, ClientState, CloseReason, Skipped, Status,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use crate::error::Error;
use crate::event::{Event, Message};
use crate::options::Options;
use crate::outbound::Outbound;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

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

/// How a connection ended.
enum End {
    /// The application closed the client (or dropped it).
    Closed,
    /// Stop for good: auth failed, replaced.
    Fatal(Error),
    /// Reconnect.
    Lost(CloseReason, String),
}

/// One live connection: the socket and its receive buffer.
struct Conn {
    stream: Link,
    /// Received bytes not yet decoded.
    rx: BytesMut,
}

pub(crate) struct Actor {
    addr: String,
    opts: Options,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// The protocol: session id, stream positions, rooms, heartbeat.
    session: ClientSession,
    /// The session's clock starts here (ms since).
    origin: Instant,
    /// JOIN/LEAVE replies by request id.
    room_replies: HashMap<u32, Reply<()>>,
    /// Publishes awaiting PUBLISH_ACK (bounded), resent after reconnect.
    outbound: Outbound<Reply<u64>>,
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
        let session = ClientSession::new(ClientConfig {
            token,
            client_info: opts.client_info.clone(),
            handshake_timeout_ms: millis(opts.handshake_timeout),
            heartbeat_cap_ms: opts
                .heartbeat_interval
                .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            dead_after_intervals: opts.dead_after_intervals,
            observe: false,
        });
        Actor {
            addr,
            opts,
            cmds,
            events,
            session,
            origin: Instant::now(),
            room_replies: HashMap::new(),
            outbound,
            sleep_reply: None,
            wake_reply: None,
        }
    }

    /// The session clock: ms since the actor started.
    fn now(&self) -> u64 {
        millis(self.origin.elapsed())
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
                        let _ = r.send(Ok(self.session.session_id()));
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
                    if gives_up(&e) {
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
        for (_, reply) in self.room_replies.drain() {
            let _ = reply.send(Err(Error::Closed));
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
                    Some(Command::Fault(_)) => {}
                    Some(cmd) => self.request(cmd),
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
        let addr = self.addr.clone();
        let connect_err = |source| Error::Connect {
            addr: addr.clone(),
            source,
        };
        let target = Target::parse(&addr).map_err(connect_err)?;
        let stream = Link::open(&target, self.opts.tls.as_ref())
            .await
            .map_err(connect_err)?;
        let mut conn = Conn {
            stream,
            rx: BytesMut::with_capacity(8 * 1024),
        };
        self.session.connect(self.now());
        self.flush(&mut conn).await.map_err(connect_err)?;
        while self.session.state() == ClientState::Handshaking {
            let n = conn.stream.read(&mut conn.rx).await.map_err(connect_err)?;
            if n == 0 {
                self.session.transport_closed("connection closed by peer");
                return Err(connect_err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.session.handle_input(&mut conn.rx, self.now());
        }
        if self.session.state() == ClientState::Disconnected {
            let _ = self.flush(&mut conn).await;
            while let Some(ev) = self.session.poll_event() {
                if let ClientEvent::Closed { reason, text, .. } = ev {
                    return Err(match reason {
                        CloseReason::AUTH_FAILED => Error::AuthFailed { text },
                        CloseReason::HANDSHAKE_TIMEOUT => Error::HandshakeTimeout,
                        _ => Error::ClosedByServer { reason, text },
                    });
                }
            }
        }
        // WELCOME: the events are handled (Connected, resends) by `drive`.
        Ok(conn)
    }

    /// Sends what the session queued.
    async fn flush(&mut self, conn: &mut Conn) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        while let Some(b) = self.session.poll_transmit() {
            out.extend_from_slice(&b);
        }
        if !out.is_empty() || conn.stream.owes() {
            conn.stream.write(&out).await?;
        }
        Ok(())
    }

    /// An application request; the session sends it now or after the next
    /// WELCOME.
    fn request(&mut self, cmd: Command) {
        let now = self.now();
        let join = matches!(cmd, Command::Join { .. });
        match cmd {
            Command::Join { room, reply } | Command::Leave { room, reply } => {
                let sent = if join {
                    self.session.join(&room, now)
                } else {
                    self.session.leave(&room, now)
                };
                match sent {
                    Ok(req_id) => {
                        self.room_replies.insert(req_id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Invalid(e)));
                    }
                }
            }
            Command::Publish {
                room,
                payload,
                reply,
            } => {
                if let Err(e) = self.session.check_publish(&room, &payload) {
                    let _ = reply.send(Err(Error::Invalid(e)));
                    return;
                }
                let capacity = self.outbound.capacity();
                match self.outbound.push(room.clone(), payload.clone(), reply) {
                    Err(reply) => {
                        let _ = reply.send(Err(Error::QueueFull { capacity }));
                    }
                    // Checked above; sent now or resent after the next WELCOME.
                    Ok(seq) => {
                        let _ = self.session.publish(&room, seq, payload, now);
                    }
                }
            }
            Command::Sleep { interval_ms, reply } => {
                if !self.session.sleep(interval_ms, now) {
                    let _ = reply.send(Err(Error::Disconnected));
                } else if let Some(old) = self.sleep_reply.replace(reply) {
                    let _ = old.send(Err(Error::Disconnected));
                }
            }
            Command::Wake { reply } => {
                if !self.session.wake(now) {
                    let _ = reply.send(Ok(Vec::new()));
                } else if let Some(old) = self.wake_reply.replace(reply) {
                    let _ = old.send(Ok(Vec::new()));
                }
            }
            Command::Fault(_) | Command::Close { .. } => {}
        }
    }

    /// Serves one connection until it ends.
    async fn drive(&mut self, mut conn: Conn) -> End {
        loop {
            if let Some(end) = self.on_events().await {
                let _ = self.flush(&mut conn).await;
                return end;
            }
            if let Err(e) = self.flush(&mut conn).await {
                return End::Lost(CloseReason::CONNECTION_LOST, e.to_string());
            }
            let wake_at = self
                .session
                .poll_timeout()
                .map_or(self.origin + Duration::from_secs(3600), |t| {
                    self.origin + Duration::from_millis(t)
                });
            tokio::select! {
                r = conn.stream.read(&mut conn.rx) => match r {
                    Ok(0) => self.session.transport_closed("connection closed by peer"),
                    Err(e) => self.session.transport_closed(&e.to_string()),
                    Ok(_) => self.session.handle_input(&mut conn.rx, self.now()),
                },
                cmd = self.cmds.recv() => {
                    if let Some(end) = self.on_command(&mut conn, cmd).await {
                        return end;
                    }
                }
                _ = sleep_until(wake_at) => self.session.handle_timeout(self.now()),
            }
        }
    }

    async fn on_command(&mut self, conn: &mut Conn, cmd: Option<Command>) -> Option<End> {
        match cmd {
            None => {
                self.session.close(CloseReason::NORMAL, "", self.now());
                let _ = self.flush(conn).await;
                Some(End::Closed)
            }
            Some(Command::Close { reply }) => {
                self.session.close(CloseReason::NORMAL, "", self.now());
                let _ = self.flush(conn).await;
                conn.stream.shutdown().await;
                let _ = reply.send(());
                Some(End::Closed)
            }
            Some(Command::Fault(f)) => {
                let text = match f {
                    Fault::Reset => {
                        // Zero linger: close() sends RST and never blocks.
                        #[allow(deprecated)]
                        let _ = conn.stream.stream.tcp().set_linger(Some(Duration::ZERO));
                        "fault: reset"
                    }
                    Fault::Abort => "fault: abort",
                    Fault::Pause(d) => {
                        tokio::time::sleep(d).await;
                        return None;
                    }
                };
                self.session.transport_closed(text);
                let _ = self.session.poll_event();
                Some(End::Lost(CloseReason::CONNECTION_LOST, text.to_owned()))
            }
            Some(cmd) => {
                self.request(cmd);
                None
            }
        }
    }

    /// Acts on the session's events; `Some` once the connection ended.
    async fn on_events(&mut self) -> Option<End> {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Welcome {
                    session_id,
                    resumed,
                    ..
                } => {
                    // Unacknowledged publishes again, with their seqs: the server
                    // publishes each once.
                    let now = self.now();
                    for p in self.outbound.iter() {
                        let _ = self.session.publish(&p.room, p.seq, p.payload.clone(), now);
                    }
                    self.emit(Event::Connected {
                        session_id,
                        resumed,
                    })
                    .await;
                }
                ClientEvent::Message(p) => {
                    self.emit(Event::Message(Message {
                        stream: p.stream,
                        epoch: p.epoch,
                        offset: p.offset,
                        urgent: p.urgent,
                        payload: p.payload,
                    }))
                    .await
                }
                ClientEvent::Lost(loss) => self.emit(loss.into()).await,
                ClientEvent::ResumeRefused { stream, status } => {
                    self.emit(Event::ResumeRefused { stream, status }).await
                }
                ClientEvent::RoomResult { req_id, status } => {
                    if let Some(reply) = self.room_replies.remove(&req_id) {
                        let _ = reply.send(if status == Status::OK {
                            Ok(())
                        } else {
                            Err(Error::Rejected { status })
                        });
                    }
                }
                ClientEvent::PublishAck { seq, status } => {
                    if let Some(p) = self.outbound.ack(seq) {
                        let _ = p.reply.send(if status == Status::OK {
                            Ok(seq)
                        } else {
                            Err(Error::Rejected { status })
                        });
                    }
                }
                ClientEvent::SleepAck { interval_ms } => {
                    if let Some(reply) = self.sleep_reply.take() {
                        let _ = reply.send(Ok(interval_ms));
                    }
                }
                ClientEvent::WakeAck { skipped } => {
                    if let Some(reply) = self.wake_reply.take() {
                        let _ = reply.send(Ok(skipped));
                    }
                }
                ClientEvent::ServerError { code, text } => {
                    tracing::warn!(?code, %text, "server reported an error")
                }
                // Observe is off: never reported.
                ClientEvent::Duplicate(_)
                | ClientEvent::Ping { .. }
                | ClientEvent::Pong { .. }
                | ClientEvent::ResumeAnswered(_)
                | ClientEvent::ResumeUnanswered { .. } => {}
                ClientEvent::Closed {
                    reason,
                    text,
                    by_peer,
                } => {
                    return Some(match reason {
                        CloseReason::AUTH_FAILED => End::Fatal(Error::AuthFailed { text }),
                        CloseReason::REPLACED if by_peer => {
                            End::Fatal(Error::ClosedByServer { reason, text })
                        }
                        _ => End::Lost(reason, text),
                    });
                }
            }
        }
        None
    }
}

/// Whether a reconnect that failed with `e` ends the client, as docs/protocol.md §5.1 says:
/// AUTH_FAILED (a new token is needed), UNSUPPORTED_VERSION (this client speaks only
/// version 1) and REPLACED. Every other CLOSE during a reconnect — POLICY (a limit; the
/// server may not even answer, which is a failed connect), GOING_AWAY, INTERNAL,
/// PROTOCOL_ERROR — is retried after the backoff.
fn gives_up(e: &Error) -> bool {
    match e {
        Error::AuthFailed { .. } => true,
        Error::ClosedByServer { reason, .. } => matches!(
            *reason,
            CloseReason::UNSUPPORTED_VERSION | CloseReason::REPLACED
        ),
        _ => false,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
