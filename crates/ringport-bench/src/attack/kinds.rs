//! The attacks, one function each: what a round of a cycle attack does, or how a held
//! connection is set up and what it does every tick.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use rand::Rng;
use ringport_proto::{Frame, Header, Op, Publish, RoomRequest, DEFAULT_MAX_PAYLOAD, HEADER_LEN};

use super::wire::{self, encode, Outcome, Read1, Reader};
use super::{AttackOptions, Tally, REOPEN_AFTER};

/// The attacks of issue 10 that a client can run from outside (a per-shard connection cap
/// or a memory budget need the server configured for them, so they are not here).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// HELLOs with 65,535 resume entries (983 KB), alternating with ones of 66 entries
    /// naming the population's room (replay).
    ResumeFlood,
    /// Unique JOIN+LEAVE as fast as the connection allows.
    JoinChurn,
    /// Short-lived publishers: JOIN 20 new rooms, PUBLISH 60 KB to each, close.
    PublishFlood,
    /// After WELCOME, half of a maximum-size frame, then silence (held).
    PartialFrame,
    /// As many authenticated connections from one address as it gets (held).
    ConnFlood,
    /// Connect, HELLO, WELCOME, close, from one address, as fast as possible.
    HandshakeFlood,
    /// HELLOs with a bad token from one address.
    AuthFail,
    /// PINGs as fast as the connection takes them, reading the PONGs.
    PingFlood,
    /// A HELLO trickled one byte a second (held).
    Slowloris,
    /// Connect and send nothing (held).
    HalfOpen,
    /// 1 KiB of random bytes.
    Garbage,
    /// A frame header declaring 4 GiB, before or after WELCOME.
    Oversized,
    /// Connect (nothing, part of a HELLO, or a whole handshake), then reset.
    RstStorm,
    /// Subscribers that never read, publishing 60 KB messages to their own room (held).
    SlowConsumer,
    /// Connections resuming one live session, one after the other.
    SessionReplace,
    /// Admin HTTP requests sent one byte a second (held).
    AdminSlowloris,
    /// Idle admin HTTP connections (held).
    AdminIdle,
}

impl Kind {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }

    pub fn what(self) -> &'static str {
        match self {
            Kind::ResumeFlood => "HELLO with 65,535 resume entries / 66 entries with replay",
            Kind::JoinChurn => "unique JOIN+LEAVE flood",
            Kind::PublishFlood => "short-lived publishers, 20 x 60 KB to new rooms",
            Kind::PartialFrame => "half of a 64 KiB frame after WELCOME, held",
            Kind::ConnFlood => "connections from one address, held",
            Kind::HandshakeFlood => "handshakes from one address",
            Kind::AuthFail => "failed HELLOs from one address",
            Kind::PingFlood => "PING flood, reading PONGs",
            Kind::Slowloris => "HELLO trickled 1 byte/s, held",
            Kind::HalfOpen => "silent connections, held",
            Kind::Garbage => "1 KiB of random bytes",
            Kind::Oversized => "frame header declaring 4 GiB",
            Kind::RstStorm => "connect then RST",
            Kind::SlowConsumer => "non-reading subscribers of 60 KB publishes",
            Kind::SessionReplace => "resumes of one live session",
            Kind::AdminSlowloris => "admin request 1 byte/s, held",
            Kind::AdminIdle => "idle admin connections, held",
        }
    }

    pub fn is_held(self) -> bool {
        matches!(
            self,
            Kind::PartialFrame
                | Kind::ConnFlood
                | Kind::Slowloris
                | Kind::HalfOpen
                | Kind::SlowConsumer
                | Kind::AdminSlowloris
                | Kind::AdminIdle
        )
    }

    /// Attacks that come from one address (what a per-address limit is for).
    fn one_address(self) -> bool {
        matches!(
            self,
            Kind::ConnFlood | Kind::HandshakeFlood | Kind::AuthFail
        )
    }

    fn on_admin(self) -> bool {
        matches!(self, Kind::AdminSlowloris | Kind::AdminIdle)
    }
}

/// How long a round waits for the server's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// One attacker connection with its reader.
struct Conn {
    s: TcpStream,
    r: Reader,
}

fn open(o: &AttackOptions, t: &Tally, n: usize) -> Option<Conn> {
    let from = if o.kind.one_address() {
        o.sources[0]
    } else {
        o.sources[n % o.sources.len()]
    };
    let to = if o.kind.on_admin() { o.admin } else { o.target };
    match wire::connect_from(from, to) {
        Ok(s) => {
            t.opened();
            Some(Conn {
                s,
                r: Reader::default(),
            })
        }
        Err(_) => {
            t.connect_failed();
            None
        }
    }
}

fn token(o: &AttackOptions, n: usize) -> Vec<u8> {
    o.tokens.for_user(o.first_user + n)
}

fn send(t: &Tally, c: &mut Conn, bytes: &[u8]) -> bool {
    t.sent(bytes.len());
    wire::send(&mut c.s, bytes)
}

/// One round of a cycle attack; records what the server answered.
pub(super) fn cycle(o: &AttackOptions, t: &Tally, deadline: Instant) {
    let n = t.next();
    let Some(mut c) = open(o, t, n) else {
        std::thread::sleep(Duration::from_millis(50));
        return;
    };
    let answer = Instant::now() + ANSWER_WITHIN;
    let outcome = match o.kind {
        Kind::ResumeFlood => resume_flood(o, t, &mut c, n, answer),
        Kind::JoinChurn => welcomed(o, t, &mut c, n, answer, |t, c| join_churn(t, c, n)),
        Kind::PublishFlood => welcomed(o, t, &mut c, n, answer, |t, c| publish_flood(t, c, n)),
        Kind::HandshakeFlood => welcomed(o, t, &mut c, n, answer, |_, _| "welcome".into()),
        Kind::AuthFail => {
            send(
                t,
                &mut c,
                &encode(&wire::hello(b"not-a-token".to_vec(), None)),
            );
            c.r.until_end(&mut c.s, answer).key()
        }
        Kind::PingFlood => welcomed(o, t, &mut c, n, deadline, ping_flood),
        Kind::Garbage => {
            let mut junk = vec![0u8; 1024];
            rand::rng().fill(&mut junk[..]);
            send(t, &mut c, &junk);
            c.r.until_end(&mut c.s, answer).key()
        }
        Kind::Oversized => {
            let huge = Header {
                op: Op::Publish,
                flags: 0,
                len: u32::MAX,
            }
            .to_bytes();
            if n % 2 == 0 {
                send(t, &mut c, &huge);
                c.r.until_end(&mut c.s, answer).key()
            } else {
                welcomed(o, t, &mut c, n, answer, |t, c| {
                    send(t, c, &huge);
                    c.r.until_end(&mut c.s, answer).key()
                })
            }
        }
        Kind::RstStorm => {
            let hello = encode(&wire::hello(token(o, n), None));
            match n % 3 {
                0 => {}
                1 => {
                    send(t, &mut c, &hello[..10]);
                }
                _ => {
                    let _ = wire::handshake(&mut c.s, &mut c.r, token(o, n), answer);
                }
            }
            wire::reset(c.s);
            "reset_sent".into()
        }
        Kind::SessionReplace => session_replace(o, t, c, n, deadline),
        _ => unreachable!("held attacks do not cycle"),
    };
    t.outcome(outcome);
}

/// Runs `then` on a connection that got WELCOME; the handshake's failure otherwise.
fn welcomed(
    o: &AttackOptions,
    t: &Tally,
    c: &mut Conn,
    n: usize,
    deadline: Instant,
    then: impl FnOnce(&Tally, &mut Conn) -> String,
) -> String {
    let hello = encode(&wire::hello(token(o, n), None));
    t.sent(hello.len());
    if !wire::send(&mut c.s, &hello) {
        return Outcome::Reset.key();
    }
    loop {
        match c.r.next(&mut c.s, deadline) {
            Read1::Frame(Frame::Welcome(_)) => return then(t, c),
            Read1::Frame(Frame::Close { reason, .. }) => {
                return format!("before_welcome:{}", wire::close_outcome(reason).key())
            }
            Read1::Frame(_) => {}
            Read1::End(e) => return format!("before_welcome:{}", e.key()),
        }
    }
}

fn resume_flood(o: &AttackOptions, t: &Tally, c: &mut Conn, n: usize, answer: Instant) -> String {
    let session = rand::rng().random::<u64>() | 1;
    if n % 2 == 0 {
        let hello = encode(&wire::resume_hello(token(o, n), session, "flood-", 65_535));
        send(t, c, &hello);
        return c.r.until_end(&mut c.s, answer).key();
    }
    // The most entries a HELLO may carry (max_rooms + 2 at the defaults), the first one the
    // population's room from offset 0: a replay of its history.
    let mut hello = wire::resume_hello(token(o, n), session, "flood-", 66);
    if let Frame::Hello(h) = &mut hello {
        if let Some(r) = h.resume.as_mut().and_then(|r| r.streams.first_mut()) {
            r.stream = ringport_proto::StreamName::Room(o.room.clone());
        }
    }
    send(t, c, &encode(&hello));
    let mut results = 0;
    loop {
        match c.r.next(&mut c.s, answer) {
            Read1::Frame(Frame::ResumeResult(_)) => {
                results += 1;
                if results == 66 {
                    return "resumed_66".into();
                }
            }
            Read1::Frame(Frame::Close { reason, .. }) => return wire::close_outcome(reason).key(),
            Read1::Frame(_) => {}
            Read1::End(e) => return e.key(),
        }
    }
}

/// Unique JOIN+LEAVE pairs in batches of 100 until the server ends it (or 20,000 pairs).
fn join_churn(t: &Tally, c: &mut Conn, n: usize) -> String {
    let mut batch = Vec::new();
    for b in 0..200u32 {
        batch.clear();
        for k in 0..100u32 {
            let i = b * 100 + k;
            let room = format!("churn-{n}-{i}");
            let join = RoomRequest {
                req_id: 2 * i,
                room: room.clone(),
            };
            let leave = RoomRequest {
                req_id: 2 * i + 1,
                room,
            };
            batch.extend_from_slice(&encode(&Frame::Join(join)));
            batch.extend_from_slice(&encode(&Frame::Leave(leave)));
        }
        if !send(t, c, &batch) {
            return Outcome::Reset.key();
        }
        if let Some(end) = c.r.poll_end(&mut c.s) {
            return end.key();
        }
    }
    "open_after_20000_pairs".into()
}

/// JOIN 20 new rooms and PUBLISH 60 KB to each, read the answers, close.
fn publish_flood(t: &Tally, c: &mut Conn, n: usize) -> String {
    let payload = Bytes::from(vec![b'h'; 60_000]);
    for k in 0..20u32 {
        let room = format!("hist-{n}-{k}");
        let join = RoomRequest {
            req_id: k,
            room: room.clone(),
        };
        let publish = Publish {
            room,
            seq: u64::from(k) + 1,
            payload: payload.clone(),
        };
        if !send(t, c, &encode(&Frame::Join(join)))
            || !send(t, c, &encode(&Frame::Publish(publish)))
        {
            return Outcome::Reset.key();
        }
    }
    let answer = Instant::now() + ANSWER_WITHIN;
    let (mut ok, mut refused) = (0, 0);
    while ok + refused < 20 {
        match c.r.next(&mut c.s, answer) {
            Read1::Frame(Frame::PublishAck(a)) if a.status == ringport_proto::Status::OK => ok += 1,
            Read1::Frame(Frame::PublishAck(_)) => refused += 1,
            Read1::Frame(Frame::Close { reason, .. }) => return wire::close_outcome(reason).key(),
            Read1::Frame(_) => {}
            Read1::End(e) => return e.key(),
        }
    }
    format!("published_{ok}_refused_{refused}")
}

/// PINGs in batches of 1,000, reading what comes back, until the server ends it (or
/// 1,000,000 PINGs, or the attack's end).
fn ping_flood(t: &Tally, c: &mut Conn) -> String {
    let ping = encode(&Frame::Ping { nonce: 7 });
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    for _ in 0..1000 {
        if !send(t, c, &batch) {
            return Outcome::Reset.key();
        }
        if let Some(end) = c.r.poll_end(&mut c.s) {
            return end.key();
        }
    }
    "open_after_1000000_pings".into()
}

/// Resumes the session of the previous connection of this thread, then checks that the
/// previous one was told REPLACED. The new one is kept for the next round to replace.
fn session_replace(o: &AttackOptions, t: &Tally, mut c: Conn, n: usize, end: Instant) -> String {
    thread_local! {
        /// This thread's live connection, its session and its user.
        static LIVE: std::cell::RefCell<Option<(Conn, u64, usize)>> = const { std::cell::RefCell::new(None) };
    }
    let answer = Instant::now() + ANSWER_WITHIN;
    let prev = LIVE.with(|l| l.borrow_mut().take());
    // The session's own user resumes it (another user's resume starts a session of its own).
    let user = prev.as_ref().map_or(n, |p| p.2);
    let hello = match &prev {
        Some((_, session, _)) => wire::resume_hello(token(o, user), *session, "x", 0),
        None => wire::hello(token(o, user), None),
    };
    send(t, &mut c, &encode(&hello));
    let session = loop {
        match c.r.next(&mut c.s, answer) {
            Read1::Frame(Frame::Welcome(w)) => break w.session_id,
            Read1::Frame(Frame::Close { reason, .. }) => {
                return format!("resume:{}", wire::close_outcome(reason).key())
            }
            Read1::Frame(_) => {}
            Read1::End(e) => return format!("resume:{}", e.key()),
        }
    };
    let outcome = match prev {
        Some((mut p, _, _)) => format!("old_connection:{}", p.r.until_end(&mut p.s, answer).key()),
        None => "first_session".into(),
    };
    if Instant::now() < end {
        LIVE.with(|l| *l.borrow_mut() = Some((c, session, user)));
    }
    outcome
}

/// A held connection: set up, then poked every tick until the server ends it.
struct Held {
    conn: Option<Conn>,
    /// When the slot may open again after the server ended its connection.
    retry_at: Instant,
    /// What a slowloris connection trickles, and how much of it went out.
    script: Vec<u8>,
    trickled: usize,
}

/// Keeps `count` connections of a held attack until `deadline`.
pub(super) fn hold(o: &AttackOptions, t: &Tally, count: usize, deadline: Instant) {
    let now = Instant::now();
    let mut slots: Vec<Held> = (0..count)
        .map(|_| Held {
            conn: None,
            retry_at: now,
            script: Vec::new(),
            trickled: 0,
        })
        .collect();
    let mut next_tick = now;
    while Instant::now() < deadline {
        let now = Instant::now();
        let tick = now >= next_tick;
        if tick {
            next_tick = now
                + Duration::from_millis(if o.kind == Kind::SlowConsumer {
                    100
                } else {
                    1000
                });
        }
        for slot in &mut slots {
            if Instant::now() >= deadline {
                break;
            }
            match &mut slot.conn {
                None if Instant::now() >= slot.retry_at => {
                    let n = t.next();
                    slot.trickled = 0;
                    let conn = open(o, t, n).and_then(|c| set_up(o, t, c, n, slot));
                    slot.conn = conn;
                    if slot.conn.is_none() {
                        slot.retry_at = Instant::now() + REOPEN_AFTER;
                    }
                }
                None => {}
                Some(c) => {
                    // A slow consumer never reads; it learns of its end when a write fails.
                    let polled = if o.kind == Kind::SlowConsumer {
                        None
                    } else {
                        c.r.poll_end(&mut c.s)
                    };
                    let ended = polled.or_else(|| {
                        if tick {
                            poke(o, t, c, &slot.script, slot.trickled).err()
                        } else {
                            None
                        }
                    });
                    if tick {
                        slot.trickled += 1;
                    }
                    if let Some(e) = ended {
                        t.outcome(e.key());
                        slot.conn = None;
                        slot.retry_at = Instant::now() + REOPEN_AFTER;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let open = slots.iter().filter(|s| s.conn.is_some()).count();
    for _ in 0..open {
        t.outcome("held_to_the_end");
    }
}

const SLOW_HEAD: &[u8] =
    b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A held connection's first steps; `None` (counted) if the server ended it already.
fn set_up(o: &AttackOptions, t: &Tally, mut c: Conn, n: usize, slot: &mut Held) -> Option<Conn> {
    let answer = Instant::now() + ANSWER_WITHIN;
    let ok = match o.kind {
        Kind::HalfOpen | Kind::AdminIdle => Ok(()),
        Kind::Slowloris => {
            slot.script = encode(&wire::hello(token(o, n), None)).to_vec();
            slot.trickled = 5;
            sent(send(t, &mut c, &slot.script[..5]))
        }
        Kind::AdminSlowloris => {
            slot.script = SLOW_HEAD.to_vec();
            slot.trickled = 5;
            sent(send(t, &mut c, &slot.script[..5]))
        }
        Kind::PartialFrame | Kind::ConnFlood | Kind::SlowConsumer => {
            if o.kind == Kind::SlowConsumer {
                let _ = socket2::SockRef::from(&c.s).set_recv_buffer_size(4096);
            }
            wire::handshake(&mut c.s, &mut c.r, token(o, n), answer).map(|_| ())
        }
        _ => unreachable!("cycle attacks are not held"),
    };
    let ok = ok.and_then(|()| match o.kind {
        Kind::PartialFrame => {
            let header = Header {
                op: Op::Publish,
                flags: 0,
                len: DEFAULT_MAX_PAYLOAD,
            }
            .to_bytes();
            let mut bytes = header.to_vec();
            bytes.resize(HEADER_LEN + DEFAULT_MAX_PAYLOAD as usize / 2, b'p');
            sent(send(t, &mut c, &bytes))
        }
        Kind::SlowConsumer => {
            let join = RoomRequest {
                req_id: 1,
                room: "sink".into(),
            };
            sent(send(t, &mut c, &encode(&Frame::Join(join))))
        }
        _ => Ok(()),
    });
    match ok {
        Ok(()) => Some(c),
        Err(e) => {
            t.outcome(format!("set_up:{}", e.key()));
            None
        }
    }
}

fn sent(ok: bool) -> Result<(), Outcome> {
    if ok {
        Ok(())
    } else {
        Err(Outcome::Reset)
    }
}

/// A held connection's periodic step: the next trickled byte (never the last one, so the
/// request stays incomplete), or a publish.
fn poke(
    o: &AttackOptions,
    t: &Tally,
    c: &mut Conn,
    script: &[u8],
    step: usize,
) -> Result<(), Outcome> {
    match o.kind {
        Kind::Slowloris | Kind::AdminSlowloris => {
            let i = step.min(script.len().saturating_sub(2));
            sent(send(t, c, &script[i..i + 1]))
        }
        Kind::SlowConsumer => {
            let publish = Publish {
                room: "sink".into(),
                seq: step as u64 + 1,
                payload: Bytes::from(vec![b's'; 60_000]),
            };
            sent(send(t, c, &encode(&Frame::Publish(publish))))
        }
        _ => Ok(()),
    }
}
