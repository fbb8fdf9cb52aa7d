//! An in-process fake gateway speaking the protocol with `ringport_proto`
//! frames: rooms with a bounded history, resume, publish dedupe by (session,
//! seq), inbox acks, and knobs for faults. Small on purpose: it is the
//! reference behaviour the SDK is tested against, not the real gateway.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringport_proto::{
    CloseReason, Decoder, Frame, PublishAck, Push, ResumeOutcome, ResumeResult, RoomResult, Status,
    StreamName, Welcome,
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
}

struct ConnState {
    session: u64,
    tx: mpsc::UnboundedSender<Option<Bytes>>,
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
            let _ = c.tx.send(None);
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
                let _ = c.tx.send(Some(frame.clone()));
            }
        }
    }
    offset
}

fn send(tx: &mpsc::UnboundedSender<Option<Bytes>>, f: Frame) {
    let _ = tx.send(Some(f.to_bytes().unwrap()));
}

async fn serve(st: Arc<Mutex<State>>, mut sock: TcpStream) {
    // As a real gateway does; with Nagle every PUBLISH_ACK written right
    // behind a PUSH waits for the client's delayed ACK (~40 ms).
    let _ = sock.set_nodelay(true);
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Bytes>>();
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
    let dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut session = 0;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Some(b)) => { if sock.write_all(&b).await.is_err() { break; } }
                _ => break,
            },
            r = sock.read_buf(&mut buf) => {
                match r { Ok(0) | Err(_) => break, Ok(_) => {} }
                loop {
                    let f = match dec.decode(&mut buf) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(_) => return,
                    };
                    let keep = handle(&mut st.lock().unwrap(), id, &mut session, &tx, f);
                    if !keep {
                        while let Ok(Some(b)) = rx.try_recv() {
                            let _ = sock.write_all(&b).await;
                        }
                        let _ = sock.shutdown().await;
                        st.lock().unwrap().conns.remove(&id);
                        return;
                    }
                }
            }
        }
    }
    st.lock().unwrap().conns.remove(&id);
}

fn handle(
    s: &mut State,
    id: u64,
    session: &mut u64,
    tx: &mpsc::UnboundedSender<Option<Bytes>>,
    f: Frame,
) -> bool {
    match f {
        Frame::Hello(h) => {
            if &h.token[..] == b"bad" {
                send(
                    tx,
                    Frame::Close {
                        reason: CloseReason::AUTH_FAILED,
                        text: "bad token".into(),
                    },
                );
                return false;
            }
            *session = match &h.resume {
                Some(r) => r.session_id,
                None => {
                    s.next_session += 1;
                    s.next_session
                }
            };
            let user = std::str::from_utf8(&h.token)
                .ok()
                .and_then(|t| t.strip_prefix("user:"))
                .map(str::to_owned);
            let inbox_tail = user
                .as_ref()
                .and_then(|u| s.logs.get(&StreamName::User(u.clone())))
                .map_or(0, |l| l.tail);
            let broadcast = StreamName::Room("*".into());
            let broadcast_tail = s.logs.get(&broadcast).map_or(0, |l| l.tail);
            send(
                tx,
                Frame::Welcome(Welcome {
                    session_id: *session,
                    epoch: s.epoch,
                    inbox_tail,
                    broadcast_epoch: s.epoch,
                    broadcast_tail,
                    heartbeat_interval_ms: 30_000,
                    max_sleep_interval_ms: 300_000,
                    max_payload: 65_536,
                    max_rooms: 64,
                    server_time_ms: 0,
                    user: user.clone().unwrap_or_default(),
                }),
            );
            let mut conn = ConnState {
                session: *session,
                tx: tx.clone(),
                members: HashSet::new(),
                delivered: HashMap::new(),
            };
            for p in h.resume.map(|r| r.streams).unwrap_or_default() {
                if s.refuse.contains(&p.stream) {
                    send(
                        tx,
                        Frame::ResumeResult(ResumeResult {
                            stream: p.stream.clone(),
                            outcome: ResumeOutcome::Refused(Status::FORBIDDEN),
                            old_epoch: p.epoch,
                            new_epoch: p.epoch,
                            missing_from: 0,
                            missing_to: 0,
                        }),
                    );
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
                send(
                    tx,
                    Frame::ResumeResult(ResumeResult {
                        stream: p.stream.clone(),
                        outcome,
                        old_epoch: p.epoch,
                        new_epoch: epoch,
                        missing_from: missing.0,
                        missing_to: missing.1,
                    }),
                );
                for (off, fr) in &log.frames {
                    if *off >= from {
                        let _ = tx.send(Some(fr.clone()));
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
        Frame::Ping { nonce } => {
            s.pings += 1;
            send(tx, Frame::Pong { nonce });
        }
        Frame::Join(r) => {
            let stream = StreamName::Room(r.room);
            let tail = s.logs.get(&stream).map_or(0, |l| l.tail);
            if let Some(c) = s.conns.get_mut(&id) {
                c.delivered.insert(stream.clone(), tail);
                c.members.insert(stream);
            }
            send(
                tx,
                Frame::RoomResult(RoomResult {
                    req_id: r.req_id,
                    status: Status::OK,
                    epoch: s.epoch,
                    tail,
                }),
            );
        }
        Frame::Leave(r) => {
            if let Some(c) = s.conns.get_mut(&id) {
                c.members.remove(&StreamName::Room(r.room));
            }
            send(
                tx,
                Frame::RoomResult(RoomResult {
                    req_id: r.req_id,
                    status: Status::OK,
                    epoch: 0,
                    tail: 0,
                }),
            );
        }
        Frame::Publish(p) => {
            s.publish_frames += 1;
            if s.seen.insert((*session, p.seq)) {
                s.published += 1;
                append(s, &StreamName::Room(p.room), p.payload);
            }
            if !s.lose_acks {
                send(
                    tx,
                    Frame::PublishAck(PublishAck {
                        seq: p.seq,
                        status: Status::OK,
                    }),
                );
            }
        }
        Frame::Ack(a) => s.highest_ack = s.highest_ack.max(a.offset),
        Frame::Close { .. } => return false,
        _ => {}
    }
    true
}
