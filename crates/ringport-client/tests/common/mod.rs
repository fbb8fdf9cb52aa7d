//! An in-process fake gateway: the protocol is the server `Session` of
//! `ringport_proto` (the gateway's own state machine); around it, rooms with a
//! bounded history, resume, publish dedupe by (session, seq), inbox acks, and
//! knobs for faults. Small on purpose: it is the reference behaviour the SDK
//! is tested against, not the real gateway.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringport_proto::{
    CloseReason, Event, Frame, Push, PushClass, ResumeOutcome, ResumeResult, Session,
    SessionConfig, State as SessionState, Status, StreamName, WelcomeParams,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Default)]
pub struct Log {
    /// (offset, frame), oldest first; bounded by `history`.
    frames: Vec<(u64, Bytes)>,
    tail: u64,
}

impl State {
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }
}

pub struct State {
    pub epoch: u32,
    pub history: usize,
    pub logs: HashMap<StreamName, Log>,
    /// conn id → (session, outgoing frames, joined streams, last delivered).
    conns: HashMap<u64, ConnState>,
    next_conn: u64,
    next_session: u64,
    pub seen: HashSet<(u64, u64)>,
    /// Accepted TCP connections, with time.
    pub accepts: Vec<Instant>,
    /// Publishes actually published (after dedupe).
    pub published: u64,
    /// PUBLISH frames received (including resends).
    pub publish_frames: u64,
    pub pings: u64,
    pub highest_ack: u64,
    /// Connections after the first are closed before WELCOME while false.
    pub accepting: bool,
    /// Drop PUBLISH_ACKs (the publish still happens) while true.
    pub lose_acks: bool,
    /// Replay this many extra already-delivered frames on resume (dupes).
    pub replay_extra: u64,
    /// Resume entries of these streams are refused (ERROR FORBIDDEN).
    pub refuse: HashSet<StreamName>,
    /// Every HELLO is answered with this CLOSE while set (a limit, a shutdown...).
    pub refuse_hello: Option<(CloseReason, String)>,
}

/// What other connections (and the test) hand a connection's task.
enum ToConn {
    /// An encoded PUSH of `stream` at an offset, offered to the session.
    Push(StreamName, u64, Bytes),
    /// Drop the connection without CLOSE.
    Kick,
}

struct ConnState {
    session: u64,
    tx: mpsc::UnboundedSender<ToConn>,
    members: HashSet<StreamName>,
    delivered: HashMap<StreamName, u64>,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    accept: tokio::task::AbortHandle,
}

impl Fake {
    pub async fn start(epoch: u32, history: usize) -> Fake {
        Fake::start_on("127.0.0.1:0".parse().unwrap(), epoch, history).await
    }

    pub async fn start_on(addr: SocketAddr, epoch: u32, history: usize) -> Fake {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            epoch,
            history,
            logs: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            next_session: 100,
            seen: HashSet::new(),
            accepts: Vec::new(),
            published: 0,
            publish_frames: 0,
            pings: 0,
            highest_ack: 0,
            accepting: true,
            lose_acks: false,
            replay_extra: 0,
            refuse: HashSet::new(),
            refuse_hello: None,
        }));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(serve(st, sock));
            }
        })
        .abort_handle();
        Fake {
            addr,
            state,
            accept,
        }
    }

    /// Stops listening and drops every connection (a crashed server).
    pub async fn stop(&self) {
        self.accept.abort();
        self.kick_all();
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Appends to `stream` and sends to every member.
    pub fn push(&self, stream: &StreamName, payload: &str) -> u64 {
        let mut st = self.state.lock().unwrap();
        append(&mut st, stream, Bytes::copy_from_slice(payload.as_bytes()))
    }

    /// Closes every connection abruptly (FIN, no CLOSE).
    pub fn kick_all(&self) {
        let mut st = self.state.lock().unwrap();
        for c in st.conns.values() {
            let _ = c.tx.send(ToConn::Kick);
        }
        st.conns.clear();
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn append(st: &mut State, stream: &StreamName, payload: Bytes) -> u64 {
    let epoch = st.epoch;
    let history = st.history;
    let log = st.logs.entry(stream.clone()).or_default();
    log.tail += 1;
    let offset = log.tail;
    let frame = Frame::Push(Push {
        stream: stream.clone(),
        epoch,
        offset,
        urgent: false,
        payload,
    })
    .to_bytes()
    .unwrap();
    log.frames.push((offset, frame.clone()));
    if log.frames.len() > history {
        let n = log.frames.len() - history;
        log.frames.drain(..n);
    }
    for c in st.conns.values_mut() {
        if c.members.contains(stream) {
            let d = c.delivered.entry(stream.clone()).or_insert(0);
            if offset > *d {
                *d = offset;
                let _ =
                    c.tx.send(ToConn::Push(stream.clone(), offset, frame.clone()));
            }
        }
    }
    offset
}

fn class(stream: &StreamName) -> PushClass {
    if stream.is_user() {
        PushClass::Direct
    } else {
        PushClass::Room
    }
}

/// The fake's clock for the session (its heartbeat timer is never run).
fn now_ms() -> u64 {
    0
}

async fn serve(st: Arc<Mutex<State>>, mut sock: TcpStream) {
    // As a real gateway does; with Nagle every PUBLISH_ACK written right
    // behind a PUSH waits for the client's delayed ACK (~40 ms).
    let _ = sock.set_nodelay(true);
    let (tx, mut rx) = mpsc::unbounded_channel::<ToConn>();
    let id;
    {
        let mut s = st.lock().unwrap();
        let first = s.accepts.is_empty();
        s.accepts.push(Instant::now());
        if !first && !s.accepting {
            return;
        }
        id = s.next_conn;
        s.next_conn += 1;
    }
    let mut session = Session::new(Arc::new(SessionConfig::default()), now_ms());
    let mut buf = BytesMut::new();
    let mut session_id = 0;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(ToConn::Push(stream, offset, frame)) => {
                    session.offer_push(class(&stream), &stream, offset, frame);
                }
                _ => break,
            },
            r = sock.read_buf(&mut buf) => {
                match r { Ok(0) | Err(_) => break, Ok(_) => {} }
                while session.state() != SessionState::Closed {
                    match session.next_frame(&mut buf) {
                        Ok(Some(f)) => {
                            if matches!(f, Frame::Ping { .. }) {
                                st.lock().unwrap().pings += 1;
                            }
                            session.handle_frame(f, now_ms());
                            let mut s = st.lock().unwrap();
                            while let Some(ev) = session.poll_event() {
                                decide(&mut s, id, &mut session_id, &tx, &mut session, ev);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            session.refuse_input(&mut buf, &e, now_ms());
                            break;
                        }
                    }
                }
            }
        }
        while let Some(b) = session.poll_transmit() {
            if sock.write_all(&b).await.is_err() {
                break;
            }
        }
        if matches!(
            session.state(),
            SessionState::Draining | SessionState::Closed
        ) {
            let _ = sock.shutdown().await;
            break;
        }
    }
    st.lock().unwrap().conns.remove(&id);
}

/// Acts on one session event as a gateway would.
fn decide(
    s: &mut State,
    id: u64,
    session_id: &mut u64,
    tx: &mpsc::UnboundedSender<ToConn>,
    session: &mut Session,
    ev: Event,
) {
    match ev {
        Event::Hello { token, resume, .. } => {
            if &token[..] == b"bad" {
                let _ = session.reject(CloseReason::AUTH_FAILED, "bad token", now_ms());
                return;
            }
            if let Some((reason, text)) = &s.refuse_hello {
                let _ = session.reject(*reason, text, now_ms());
                return;
            }
            *session_id = match &resume {
                Some(r) => r.session_id,
                None => {
                    s.next_session += 1;
                    s.next_session
                }
            };
            let user = std::str::from_utf8(&token)
                .ok()
                .and_then(|t| t.strip_prefix("user:"))
                .map(str::to_owned);
            let inbox_tail = user
                .as_ref()
                .and_then(|u| s.logs.get(&StreamName::User(u.clone())))
                .map_or(0, |l| l.tail);
            let broadcast = StreamName::Room("*".into());
            let broadcast_tail = s.logs.get(&broadcast).map_or(0, |l| l.tail);
            let params = WelcomeParams {
                session_id: *session_id,
                epoch: s.epoch,
                inbox_tail,
                broadcast_epoch: s.epoch,
                broadcast_tail,
                user: user.clone().unwrap_or_default(),
                server_time_ms: 0,
            };
            session.accept(params, now_ms()).unwrap();
            let mut conn = ConnState {
                session: *session_id,
                tx: tx.clone(),
                members: HashSet::new(),
                delivered: HashMap::new(),
            };
            for p in resume.map(|r| r.streams).unwrap_or_default() {
                if s.refuse.contains(&p.stream) {
                    session
                        .send_resume_result(ResumeResult {
                            stream: p.stream.clone(),
                            outcome: ResumeOutcome::Refused(Status::FORBIDDEN),
                            old_epoch: p.epoch,
                            new_epoch: p.epoch,
                            missing_from: 0,
                            missing_to: 0,
                        })
                        .unwrap();
                    continue;
                }
                let epoch = s.epoch;
                let mut extra = s.replay_extra;
                if p.stream.is_user() {
                    extra = extra.max(p.last_offset.saturating_sub(s.highest_ack));
                }
                let log = s.logs.entry(p.stream.clone()).or_default();
                let first = log.frames.first().map_or(log.tail + 1, |f| f.0);
                let (outcome, from, missing) = if p.epoch != epoch {
                    (ResumeOutcome::EpochChanged, first, (1, first))
                } else if p.last_offset + 1 >= first {
                    (
                        ResumeOutcome::Resumed,
                        (p.last_offset + 1).saturating_sub(extra).max(first),
                        (0, 0),
                    )
                } else {
                    (ResumeOutcome::Gap, first, (p.last_offset + 1, first))
                };
                session
                    .send_resume_result(ResumeResult {
                        stream: p.stream.clone(),
                        outcome,
                        old_epoch: p.epoch,
                        new_epoch: epoch,
                        missing_from: missing.0,
                        missing_to: missing.1,
                    })
                    .unwrap();
                for (off, fr) in &log.frames {
                    if *off >= from {
                        session.offer_push(class(&p.stream), &p.stream, *off, fr.clone());
                    }
                }
                conn.delivered.insert(p.stream.clone(), log.tail);
                conn.members.insert(p.stream);
            }
            if let Some(user) = user {
                let inbox = StreamName::User(user);
                if !conn.members.contains(&inbox) {
                    conn.delivered.insert(inbox.clone(), inbox_tail);
                    conn.members.insert(inbox);
                }
            }
            // Every connection receives the broadcast stream.
            if !conn.members.contains(&broadcast) {
                conn.delivered.insert(broadcast.clone(), broadcast_tail);
                conn.members.insert(broadcast);
            }
            s.conns.insert(id, conn);
        }
        Event::Join { req_id, room } => {
            let stream = StreamName::Room(room);
            let tail = s.logs.get(&stream).map_or(0, |l| l.tail);
            if let Some(c) = s.conns.get_mut(&id) {
                c.delivered.insert(stream.clone(), tail);
                c.members.insert(stream);
            }
            let _ = session.reply_room(req_id, Status::OK, Some((s.epoch, tail)));
        }
        Event::Leave { req_id, room } => {
            if let Some(c) = s.conns.get_mut(&id) {
                c.members.remove(&StreamName::Room(room));
            }
            let _ = session.reply_room(req_id, Status::OK, None);
        }
        Event::Publish { room, seq, payload } => {
            s.publish_frames += 1;
            if s.seen.insert((*session_id, seq)) {
                s.published += 1;
                append(s, &StreamName::Room(room), payload);
            }
            if !s.lose_acks {
                let _ = session.reply_publish(seq, Status::OK);
            }
        }
        Event::Ack { offset, .. } => s.highest_ack = s.highest_ack.max(offset),
        Event::Sleep { .. } | Event::Wake | Event::Closed { .. } => {}
    }
}
