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
    /// HELLOs with 65,535 resume entries (1.6 MB: longer room names than issue 10's 983 KB
    /// one), alternating with ones of 66 entries
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
            let huge = oversized_header();
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
        send(t, c, big_resume_hello(o, session));
        return c.r.until_end(&mut c.s, answer).key();
    }
    send(
        t,
        c,
        &encode(&resume_flood_hello(token(o, n), session, n, &o.room)),
    );
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
    for b in 0..JOIN_CHURN_BATCHES {
        join_leave_batch(n, b, &mut batch);
        if !send(t, c, &batch) {
            return Outcome::Reset.key();
        }
        if let Some(end) = c.r.poll_end(&mut c.s) {
            return end.key();
        }
    }
    "open_after_20000_pairs".into()
}

/// The 65,535-entry HELLO of a resume flood's even rounds, encoded once per process (the
/// first caller's token and session id) and sent as is by every round after: the server
/// refuses it from its header (over the 64 KiB a frame before WELCOME may have), so its
/// content never changes the answer, and encoding 1.6 MB of room names per round cost the
/// attacker most of the client core it shares with the population (`perf record -C 1`:
/// `format!` and `BytesMut::put_slice` at the top), which showed up as the population's
/// latency instead of the server's.
fn big_resume_hello(o: &AttackOptions, session: u64) -> &'static [u8] {
    static BIG: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BIG.get_or_init(|| encode(&resume_flood_hello(token(o, 0), session, 0, &o.room)))
}

/// Round `n`'s HELLO of a resume flood: even rounds resume 65,535 streams (the most a
/// HELLO's count can say); odd ones the most a HELLO may carry at the defaults (max_rooms +
/// 2 = 66), the first the population's `room` from offset 0, which asks for a replay of its
/// history.
fn resume_flood_hello(token: Vec<u8>, session: u64, n: usize, room: &str) -> Frame {
    if n % 2 == 0 {
        return wire::resume_hello(token, session, "flood-", 65_535);
    }
    let mut hello = wire::resume_hello(token, session, "flood-", 66);
    if let Frame::Hello(h) = &mut hello {
        if let Some(r) = h.resume.as_mut().and_then(|r| r.streams.first_mut()) {
            r.stream = ringport_proto::StreamName::Room(room.to_string());
        }
    }
    hello
}

/// Batches of [`join_leave_batch`] a join-churn connection sends at most.
const JOIN_CHURN_BATCHES: u32 = 200;

/// Batch `b` of attacker `n`'s join churn into `out` (cleared first): 100 JOIN+LEAVE pairs of
/// rooms named for the attacker and the pair's number, so no room name repeats.
fn join_leave_batch(n: usize, b: u32, out: &mut Vec<u8>) {
    out.clear();
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
        out.extend_from_slice(&encode(&Frame::Join(join)));
        out.extend_from_slice(&encode(&Frame::Leave(leave)));
    }
}

/// A frame header declaring the largest length a header can (4 GiB - 1), and nothing after.
fn oversized_header() -> [u8; HEADER_LEN] {
    Header {
        op: Op::Publish,
        flags: 0,
        len: u32::MAX,
    }
    .to_bytes()
}

/// 1,000 PINGs back to back (one write of a ping flood).
fn ping_batch() -> Vec<u8> {
    let ping = encode(&Frame::Ping { nonce: 7 });
    ping.iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect()
}

/// A partial-frame attacker's bytes: the header of a maximum-size PUBLISH and half its body.
fn half_of_a_max_frame() -> Vec<u8> {
    let header = Header {
        op: Op::Publish,
        flags: 0,
        len: DEFAULT_MAX_PAYLOAD,
    }
    .to_bytes();
    let mut bytes = header.to_vec();
    bytes.resize(HEADER_LEN + DEFAULT_MAX_PAYLOAD as usize / 2, b'p');
    bytes
}

/// The byte a slowloris connection trickles at `step`: the script's, in order, but never its
/// last one, so the request or frame stays incomplete however long the attack runs.
fn trickle(script: &[u8], step: usize) -> &[u8] {
    let i = step.min(script.len().saturating_sub(2));
    &script[i..i + 1]
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
    let batch = ping_batch();
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
        Kind::PartialFrame => sent(send(t, &mut c, &half_of_a_max_frame())),
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
        Kind::Slowloris | Kind::AdminSlowloris => sent(send(t, c, trickle(script, step))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use ringport_proto::{Decoder, Error, StreamName};
    use std::collections::HashSet;

    /// Every frame in `bytes`, which must hold whole frames only.
    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let decoder = Decoder::new(16 << 20);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = decoder.decode(&mut buf).expect("valid frames") {
            out.push(f);
        }
        assert!(buf.is_empty(), "{} bytes left after the frames", buf.len());
        out
    }

    #[test]
    fn every_kind_has_a_command_line_name_a_description_and_one_shape() {
        let held: Vec<Kind> = Kind::value_variants()
            .iter()
            .copied()
            .filter(|k| k.is_held())
            .collect();
        assert_eq!(
            held,
            [
                Kind::PartialFrame,
                Kind::ConnFlood,
                Kind::Slowloris,
                Kind::HalfOpen,
                Kind::SlowConsumer,
                Kind::AdminSlowloris,
                Kind::AdminIdle
            ]
        );
        let mut names = HashSet::new();
        for &k in Kind::value_variants() {
            let name = k.name();
            assert!(names.insert(name.clone()), "{name} twice");
            assert_eq!(Kind::from_str(&name, false), Ok(k), "{name} parses back");
            assert!(!k.what().is_empty(), "{name} says what it does");
            // Admin attacks hold connections; one-address floods go to the native port.
            assert!(!k.on_admin() || k.is_held(), "{name}");
            assert!(!(k.one_address() && k.on_admin()), "{name}");
        }
        assert_eq!(names.len(), 17);
        assert!(Kind::value_variants()
            .iter()
            .filter(|k| k.one_address())
            .eq(&[Kind::ConnFlood, Kind::HandshakeFlood, Kind::AuthFail]));
    }

    #[test]
    fn join_churn_batches_are_100_join_leave_pairs_of_rooms_never_named_twice() {
        let mut seen = HashSet::new();
        let mut batch = vec![1, 2, 3];
        for b in [0, 1, JOIN_CHURN_BATCHES - 1] {
            join_leave_batch(7, b, &mut batch);
            let fs = frames(&batch);
            assert_eq!(fs.len(), 200, "the batch replaces what the buffer held");
            for (k, pair) in fs.chunks(2).enumerate() {
                let i = b * 100 + k as u32;
                let (Frame::Join(join), Frame::Leave(leave)) = (&pair[0], &pair[1]) else {
                    panic!("not a JOIN+LEAVE pair: {pair:?}");
                };
                assert_eq!((join.req_id, leave.req_id), (2 * i, 2 * i + 1));
                assert_eq!(join.room, format!("churn-7-{i}"));
                assert_eq!(
                    leave.room, join.room,
                    "the LEAVE leaves the room just joined"
                );
                assert!(seen.insert(join.room.clone()), "{} twice", join.room);
            }
        }
        // Another attacker's rooms differ from the first one's.
        join_leave_batch(8, 0, &mut batch);
        let Frame::Join(j) = &frames(&batch)[0] else {
            panic!("a JOIN first")
        };
        assert!(!seen.contains(&j.room));
    }

    #[test]
    fn the_oversized_header_declares_4_gib_and_is_refused_before_any_body() {
        let h = oversized_header();
        assert_eq!(
            Header::parse(&h, u32::MAX),
            Ok(Header {
                op: Op::Publish,
                flags: 0,
                len: u32::MAX
            })
        );
        assert!(matches!(
            Decoder::default().peek_header(&h),
            Err(Error::FrameTooLarge {
                declared: u32::MAX,
                ..
            })
        ));
    }

    #[test]
    fn a_ping_batch_is_1000_pings_and_nothing_else() {
        let batch = ping_batch();
        let fs = frames(&batch);
        assert_eq!(fs.len(), 1000);
        assert!(fs.iter().all(|f| *f == Frame::Ping { nonce: 7 }));
        assert_eq!(batch.len(), 1000 * encode(&Frame::Ping { nonce: 7 }).len());
    }

    #[test]
    fn the_partial_frame_is_half_of_a_maximum_size_publish_and_never_completes() {
        let bytes = half_of_a_max_frame();
        assert_eq!(bytes.len(), HEADER_LEN + DEFAULT_MAX_PAYLOAD as usize / 2);
        let decoder = Decoder::default();
        assert_eq!(
            decoder.peek_header(&bytes).unwrap(),
            Some(Header {
                op: Op::Publish,
                flags: 0,
                len: DEFAULT_MAX_PAYLOAD
            }),
            "a valid header: the server must buffer, not refuse"
        );
        assert_eq!(decoder.decode_slice(&bytes).unwrap(), None, "incomplete");
    }

    #[test]
    fn a_trickle_sends_the_script_in_order_but_never_its_last_byte() {
        let script = encode(&wire::hello(b"token".to_vec(), None)).to_vec();
        let sent: Vec<u8> = (0..script.len() * 3)
            .flat_map(|step| trickle(&script, step).to_vec())
            .collect();
        let n = script.len() - 1;
        assert_eq!(sent[..n], script[..n], "in order");
        assert!(
            sent[n..].iter().all(|&b| b == script[n - 1]),
            "then the last-but-one byte again, never the last"
        );
        // Whatever it sent, the HELLO stays incomplete.
        assert_eq!(Decoder::default().decode_slice(&sent[..n]).unwrap(), None);
    }

    #[test]
    fn resume_flood_hellos_carry_65535_entries_or_66_with_the_populations_room_first() {
        let big = resume_flood_hello(b"t".to_vec(), 5, 0, "lobby");
        let bytes = encode(&big);
        // 1.6 MB (issue 10's, with shorter names, was 983 KB): far over the 64 KiB a frame
        // before WELCOME may have, so its header alone is refused.
        assert!(
            (1_600_000..1_650_000).contains(&bytes.len()),
            "{} bytes",
            bytes.len()
        );
        let Frame::Hello(h) = &frames(&bytes)[0] else {
            panic!("a HELLO")
        };
        let r = h.resume.as_ref().expect("a resume");
        assert_eq!((r.session_id, r.streams.len()), (5, 65_535));
        assert_eq!(
            r.streams[65_534].stream,
            StreamName::Room("flood-65534".into())
        );

        let replay = resume_flood_hello(b"t".to_vec(), 5, 1, "lobby");
        let Frame::Hello(h) = &frames(&encode(&replay))[0] else {
            panic!("a HELLO")
        };
        let r = h.resume.as_ref().expect("a resume");
        assert_eq!(r.streams.len(), 66);
        assert_eq!(r.streams[0].stream, StreamName::Room("lobby".into()));
        assert_eq!(r.streams[0].last_offset, 0, "from the start: a full replay");
        assert_eq!(r.streams[1].stream, StreamName::Room("flood-1".into()));
    }
}
