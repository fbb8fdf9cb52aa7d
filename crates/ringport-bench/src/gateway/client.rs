//! One simulated gateway client: [`ringport_proto::ClientSession`] (the protocol's client
//! rules: HELLO with resume entries, JOIN, heartbeat duty, PONG, inbox ACKs, dedupe) with
//! `observe` on, plus the bench's own bookkeeping — bytes and `now` in, bytes and events out.
//!
//! The session drops duplicates and reports losses for an application; the bench instead
//! records every PUSH (delivered or dropped as a duplicate) in a per-stream
//! [`StreamLedger`] (which survives reconnects, for the resume check) and classifies it
//! there as in order, late or duplicate. Its PINGs carry a nanosecond timestamp as nonce
//! ([`ClientSession::ping`]), so a PONG gives the round trip. Inbox ACKs are the session's
//! cumulative ones; no measurement depends on one ACK per push.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringport_proto::{
    ClientConfig, ClientEvent, ClientEventRef, ClientSession, ClientState, ResumeOutcome,
    ResumeResult, StreamName, StreamRef,
};

use super::ledger::{Arrival, StreamLedger};
use super::payload;

/// Things the driver counts or reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Welcomed,
    /// All rooms joined (`failed` JOINs were refused).
    Ready {
        failed: usize,
    },
    Push {
        arrival: Arrival,
        /// Publish → receive latency when the payload carries a bench timestamp.
        latency: Option<Duration>,
    },
    /// Our PING came back.
    Pong {
        rtt: Duration,
    },
    /// The server probed us; a PONG was queued.
    ServerPing,
    /// The server answered a resume entry.
    ResumeAnswered(ResumeOutcome),
    /// A resume entry was not answered before the server moved on.
    ResumeUnanswered,
    /// The server sent CLOSE (reason code); the connection is done.
    ServerClose(u16),
    /// Undecodable input, or a frame a server must not send.
    ProtocolError,
}

/// One stream epoch's ledger.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub stream: StreamName,
    pub epoch: u32,
    pub ledger: StreamLedger,
}

thread_local! {
    /// [`ClientConn::on_bytes`]'s buffer for the session's other events (kept between calls
    /// on a client shard).
    static SCRATCH: std::cell::RefCell<Vec<ClientEvent>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug)]
pub struct ClientConn {
    session: ClientSession,
    /// Rooms to JOIN.
    rooms: Vec<String>,
    /// The session's clock is milliseconds since this instant.
    base: Instant,
    /// JOINs of this transport not yet answered (`None`: no WELCOME yet, or ready).
    joins_left: Option<usize>,
    joins_failed: usize,
    /// CLOSE received or sent: the transport should close.
    done: bool,
    /// When the current transport's HELLO went out (handshake latency).
    pub hello_at: Instant,
    /// An incomplete frame carried to the next receive (empty almost always: whole frames
    /// are decoded straight from the receive buffer).
    buf: Vec<u8>,
    /// Per stream epoch received; kept across reconnects.
    pub streams: Vec<Tracked>,
    /// Index in `streams` of the ledger found last.
    last_ledger: usize,
}

/// The ledger of (`stream`, `epoch`), made on first use. Pushes come in runs of one stream:
/// the one found last (`last`) is tried first, and a hit compares one name's bytes.
fn ledger<'a>(
    streams: &'a mut Vec<Tracked>,
    last: &mut usize,
    stream: StreamRef<'_>,
    epoch: u32,
) -> &'a mut StreamLedger {
    let is = |t: &Tracked| t.epoch == epoch && t.stream == stream;
    let i = match streams.get(*last) {
        Some(t) if is(t) => *last,
        _ => match streams.iter().position(is) {
            Some(i) => i,
            None => {
                streams.push(Tracked {
                    stream: stream.to_owned(),
                    epoch,
                    ledger: StreamLedger::default(),
                });
                streams.len() - 1
            }
        },
    };
    *last = i;
    &mut streams[i].ledger
}

fn new_session(token: &[u8]) -> ClientSession {
    ClientSession::new(ClientConfig {
        token: Bytes::copy_from_slice(token),
        client_info: "ringport-bench/1".into(),
        // The bench closes nothing on its own: it reports what the server does.
        handshake_timeout_ms: u64::MAX,
        heartbeat_cap_ms: None,
        dead_after_intervals: u32::MAX,
        observe: true,
    })
}

impl ClientConn {
    pub fn new(rooms: Vec<String>, now: Instant) -> ClientConn {
        ClientConn {
            session: new_session(b""),
            rooms,
            base: now,
            joins_left: None,
            joins_failed: 0,
            done: false,
            hello_at: now,
            buf: Vec::new(),
            streams: Vec::new(),
            last_ledger: 0,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        while let Some(b) = self.session.poll_transmit() {
            out.extend_from_slice(&b);
        }
    }

    /// The rooms this client joins.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// From WELCOME; 0 before.
    pub fn session_id(&self) -> u64 {
        self.session.session_id()
    }

    /// The transport should close.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A fresh transport is open: send HELLO, resuming the session (every stream's position)
    /// when `resume` and a previous session exist, else as a new session that JOINs every room.
    pub fn start(&mut self, token: &[u8], resume: bool, out: &mut Vec<u8>, now: Instant) {
        if !resume || self.session.session_id() == 0 {
            self.session = new_session(token);
            let ms = self.ms(now);
            for room in &self.rooms {
                // Room names come from the bench's own generator.
                let _ = self.session.join(room, ms);
            }
        }
        self.joins_left = None;
        self.joins_failed = 0;
        self.done = false;
        self.buf.clear();
        self.hello_at = now;
        self.session.connect(self.ms(now));
        self.flush(out);
    }

    /// When the next PING is due (after WELCOME).
    pub fn next_ping(&self) -> Option<Instant> {
        if !matches!(
            self.session.state(),
            ClientState::Active | ClientState::Sleeping
        ) {
            return None;
        }
        let at = self.session.poll_timeout()?;
        self.base.checked_add(Duration::from_millis(at))
    }

    /// Sends a PING if nothing was sent for a heartbeat interval; returns whether it did.
    pub fn on_timer(&mut self, out: &mut Vec<u8>, now: Instant) -> bool {
        match self.next_ping() {
            Some(due) if now >= due => {
                let sent = self.session.ping(payload::now_ns(), self.ms(now));
                self.flush(out);
                sent
            }
            _ => false,
        }
    }

    /// Feeds received bytes, read at `now_ns` (`payload::now_ns`, the receive's one clock
    /// read); replies go to `out`, observations to `events`.
    ///
    /// Whole frames are decoded in place from `data` ([`ClientSession::handle_input_with`]):
    /// a PUSH costs no allocation and no copy, and is recorded on its ledger as it is
    /// decoded. The session's other events (handshake, room results, resume answers, pings,
    /// close) follow the receive's pushes in `events`.
    pub fn on_bytes(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
        now: Instant,
        now_ns: u64,
    ) {
        if self.done {
            return;
        }
        let ms = self.ms(now);
        // One scratch vector per thread, not one allocation per receive.
        let mut evs = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let ClientConn {
            session,
            buf,
            streams,
            last_ledger,
            ..
        } = self;
        let mut on_event = |e: ClientEventRef<'_>| match e {
            ClientEventRef::Message(p) | ClientEventRef::Duplicate(p) => {
                let latency = payload::decode_ts(p.payload)
                    .map(|ts| Duration::from_nanos(now_ns.saturating_sub(ts)));
                let arrival = ledger(streams, last_ledger, p.stream, p.epoch).record(p.offset);
                events.push(Event::Push { arrival, latency });
            }
            ClientEventRef::Event(e) => evs.push(e),
        };
        if buf.is_empty() {
            let used = session.handle_input_with(data, ms, &mut on_event);
            buf.extend_from_slice(&data[used..]);
        } else {
            buf.extend_from_slice(data);
            let used = session.handle_input_with(buf, ms, &mut on_event);
            buf.drain(..used);
        }
        self.flush(out);
        for (i, ev) in evs.iter().enumerate() {
            if let ClientEvent::Welcome { .. } = ev {
                // Answers to this transport's JOINs in this batch, plus those still pending.
                let answered = evs[i..]
                    .iter()
                    .filter(|e| matches!(e, ClientEvent::RoomResult { .. }))
                    .count();
                self.joins_left = Some(answered + self.session.room_requests_pending());
            }
        }
        for ev in evs.drain(..) {
            self.on_event(ev, events);
        }
        SCRATCH.with(|s| *s.borrow_mut() = evs);
    }

    fn ready_if_joined(&mut self, events: &mut Vec<Event>) {
        if self.joins_left == Some(0) {
            self.joins_left = None;
            events.push(Event::Ready {
                failed: self.joins_failed,
            });
        }
    }

    fn ledger(&mut self, stream: &StreamName, epoch: u32) -> &mut StreamLedger {
        ledger(
            &mut self.streams,
            &mut self.last_ledger,
            stream.as_ref(),
            epoch,
        )
    }

    fn on_resume(&mut self, r: ResumeResult, events: &mut Vec<Event>) {
        match r.outcome {
            ResumeOutcome::Resumed => {}
            ResumeOutcome::Gap => self
                .ledger(&r.stream, r.old_epoch)
                .reported_lost
                .insert_range(r.missing_from, r.missing_to),
            // Refused: the server will send this stream no more (explicitly, so what
            // follows counts as reported, not silently lost).
            ResumeOutcome::EpochChanged | ResumeOutcome::Refused(_) => {
                // Everything after what we had in the old epoch is gone.
                let old = self.ledger(&r.stream, r.old_epoch);
                let from = old.received.max().map_or(0, |m| m + 1);
                old.reported_lost.insert_range(from, u64::MAX);
            }
        }
        events.push(Event::ResumeAnswered(r.outcome));
    }

    fn on_event(&mut self, ev: ClientEvent, events: &mut Vec<Event>) {
        match ev {
            ClientEvent::Welcome { .. } => {
                events.push(Event::Welcomed);
                self.ready_if_joined(events);
            }
            ClientEvent::RoomResult { status, .. } => {
                if status != ringport_proto::Status::OK {
                    self.joins_failed += 1;
                }
                if let Some(n) = &mut self.joins_left {
                    *n = n.saturating_sub(1);
                }
                self.ready_if_joined(events);
            }
            // Handled as they are decoded (`on_bytes`).
            ClientEvent::Message(_) | ClientEvent::Duplicate(_) => {}
            ClientEvent::Ping { .. } => events.push(Event::ServerPing),
            ClientEvent::Pong { nonce } => events.push(Event::Pong {
                rtt: Duration::from_nanos(payload::now_ns().saturating_sub(nonce)),
            }),
            ClientEvent::ResumeAnswered(r) => self.on_resume(r, events),
            ClientEvent::ResumeUnanswered { .. } => events.push(Event::ResumeUnanswered),
            ClientEvent::Closed {
                reason, by_peer, ..
            } => {
                self.done = true;
                events.push(if by_peer {
                    Event::ServerClose(reason.0)
                } else {
                    Event::ProtocolError
                });
            }
            // The ledger counts losses itself (holes, and the resume answers above);
            // PUBLISH, SLEEP, WAKE and ERROR are not used by the scenarios.
            ClientEvent::Lost(_)
            | ClientEvent::ResumeRefused { .. }
            | ClientEvent::PublishAck { .. }
            | ClientEvent::SleepAck { .. }
            | ClientEvent::WakeAck { .. }
            | ClientEvent::ServerError { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use ringport_proto::{Decoder, Frame, Push, RoomResult, Status, Welcome};

    fn server_bytes(frames: &[Frame]) -> Vec<u8> {
        let mut v = BytesMut::new();
        for f in frames {
            f.encode(&mut v).unwrap();
        }
        v.to_vec()
    }

    fn welcome(session_id: u64) -> Frame {
        Frame::Welcome(Welcome {
            session_id,
            epoch: 1,
            inbox_tail: 0,
            broadcast_epoch: 1,
            broadcast_tail: 0,
            heartbeat_interval_ms: 1000,
            max_sleep_interval_ms: 1000,
            max_payload: 65536,
            max_rooms: 64,
            server_time_ms: 0,
            user: String::new(),
        })
    }

    fn push(room: &str, offset: u64) -> Frame {
        Frame::Push(Push {
            stream: StreamName::Room(room.into()),
            epoch: 9,
            offset,
            urgent: false,
            payload: Bytes::from(payload::encode(offset, 40)),
        })
    }

    /// The answer to the first JOIN: OK, in `epoch`, at tail 0.
    fn joined(epoch: u32) -> Frame {
        Frame::RoomResult(RoomResult {
            req_id: 1,
            status: Status::OK,
            epoch,
            tail: 0,
        })
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut b = BytesMut::from(bytes);
        let d = Decoder::default();
        std::iter::from_fn(|| d.decode(&mut b).unwrap()).collect()
    }

    #[test]
    fn handshake_join_ping_and_push_tracking() {
        let t0 = Instant::now();
        let mut c = ClientConn::new(vec!["a".into(), "b".into()], t0);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        c.start(b"tok", true, &mut out, t0);
        assert!(matches!(decode_all(&out)[..], [Frame::Hello(ref h)] if h.resume.is_none()));
        out.clear();
        c.on_bytes(&server_bytes(&[welcome(7)]), &mut out, &mut ev, t0, 0);
        assert_eq!(decode_all(&out).len(), 2, "two JOINs");
        let rr = |id| {
            Frame::RoomResult(RoomResult {
                req_id: id,
                status: Status::OK,
                epoch: 1,
                tail: 0,
            })
        };
        // The session numbers its requests from 1.
        let bytes = server_bytes(&[rr(1), rr(2), Frame::Ping { nonce: 5 }, push("a", 1)]);
        out.clear();
        // Byte by byte: partial frames are fine.
        for b in &bytes {
            c.on_bytes(std::slice::from_ref(b), &mut out, &mut ev, t0, 0);
        }
        assert_eq!(decode_all(&out), vec![Frame::Pong { nonce: 5 }]);
        assert!(ev.contains(&Event::Ready { failed: 0 }));
        assert!(ev.contains(&Event::ServerPing));
        // Heartbeat: nothing due right away, a PING once the interval passed.
        out.clear();
        assert!(!c.on_timer(&mut out, t0));
        assert!(c.on_timer(&mut out, t0 + Duration::from_millis(1001)));
        assert!(matches!(decode_all(&out)[..], [Frame::Ping { .. }]));
    }

    #[test]
    fn resume_hello_carries_offsets_and_detects_silence() {
        let t0 = Instant::now();
        let mut c = ClientConn::new(vec!["a".into()], t0);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        c.start(b"", true, &mut out, t0);
        let rr = joined(1);
        let b = server_bytes(&[welcome(7), rr.clone(), push("a", 1), push("a", 2)]);
        c.on_bytes(&b, &mut out, &mut ev, t0, 0);
        out.clear();
        c.start(b"", true, &mut out, t0);
        let a = StreamName::Room("a".into());
        match &decode_all(&out)[..] {
            [Frame::Hello(h)] => {
                let r = h.resume.as_ref().unwrap();
                assert_eq!(r.session_id, 7);
                let p = r.streams.iter().find(|p| p.stream == a).unwrap();
                assert_eq!(p.last_offset, 2);
                assert_eq!(p.epoch, 9);
            }
            other => panic!("{other:?}"),
        }
        // A server that ignores resume: WELCOME then live traffic, no RESUME_RESULT.
        ev.clear();
        c.on_bytes(
            &server_bytes(&[welcome(8), push("b", 1)]),
            &mut out,
            &mut ev,
            t0,
            0,
        );
        assert!(ev.contains(&Event::ResumeUnanswered));
        // A server that answers every entry, `a`'s with GAP: the gap is recorded as
        // reported lost.
        out.clear();
        c.start(b"", true, &mut out, t0);
        let entries = match &decode_all(&out)[..] {
            [Frame::Hello(h)] => h.resume.clone().unwrap().streams,
            other => panic!("{other:?}"),
        };
        ev.clear();
        let mut frames = vec![welcome(8)];
        for e in entries {
            let gap = e.stream == a;
            frames.push(Frame::ResumeResult(ResumeResult {
                stream: e.stream,
                outcome: if gap {
                    ResumeOutcome::Gap
                } else {
                    ResumeOutcome::Resumed
                },
                old_epoch: e.epoch,
                new_epoch: e.epoch,
                missing_from: if gap { 3 } else { 0 },
                missing_to: if gap { 5 } else { 0 },
            }));
        }
        frames.extend([rr, push("a", 5)]);
        c.on_bytes(&server_bytes(&frames), &mut out, &mut ev, t0, 0);
        assert!(ev.contains(&Event::ResumeAnswered(ResumeOutcome::Gap)));
        assert!(!ev.contains(&Event::ResumeUnanswered));
        let t = c.streams.iter().find(|t| t.stream == a).unwrap();
        let v = t.ledger.verify(1, 6);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.reported_missing, 2);
    }

    /// The bench's own user-space cost of one PUSH (issue 12: the fan-out measurement is
    /// limited by the bench's core): a joined client fed 200,000 PUSHes of one room (64-byte
    /// payloads, as the fan-out load) in receives of `RINGPORT_BENCH_COST_RECV` bytes (default
    /// 65,536; the engine's receive buffers are 4,096, so most of its receives end inside a
    /// frame), every one checked as in order.
    /// For instructions per PUSH run it under callgrind and divide `ClientConn::on_bytes`'s
    /// inclusive count by the PUSHes:
    /// `valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/deps/ringport_bench-HASH
    /// push_receive_cost --ignored` then `callgrind_annotate --inclusive=yes cg.out`.
    #[test]
    #[ignore = "a cost measurement; run under callgrind"]
    fn push_receive_cost() {
        const PUSHES: u64 = 200_000;
        let t0 = Instant::now();
        let mut c = ClientConn::new(vec!["lobby".into()], t0);
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        c.start(b"", false, &mut out, t0);
        c.on_bytes(
            &server_bytes(&[welcome(7), joined(9)]),
            &mut out,
            &mut ev,
            t0,
            0,
        );
        assert!(ev.contains(&Event::Ready { failed: 0 }));
        let mut wire = BytesMut::new();
        for offset in 1..=PUSHES {
            Frame::Push(Push {
                stream: StreamName::Room("lobby".into()),
                epoch: 9,
                offset,
                urgent: false,
                payload: Bytes::from(payload::encode(offset, 64)),
            })
            .encode(&mut wire)
            .unwrap();
        }
        let started = Instant::now();
        let mut in_order = 0u64;
        let recv = std::env::var("RINGPORT_BENCH_COST_RECV")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64 * 1024);
        for chunk in wire.chunks(recv) {
            ev.clear();
            c.on_bytes(chunk, &mut out, &mut ev, t0, 0);
            in_order += ev
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::Push {
                            arrival: Arrival::InOrder,
                            ..
                        }
                    )
                })
                .count() as u64;
        }
        let took = started.elapsed();
        assert_eq!(in_order, PUSHES, "every PUSH recorded in order");
        let t = &c.streams[0];
        assert_eq!(t.ledger.received.len(), PUSHES);
        assert_eq!((t.ledger.duplicates, t.ledger.holes()), (0, 0));
        println!(
            "{PUSHES} PUSHes: {:.1} ns each (wall clock, this process)",
            took.as_nanos() as f64 / PUSHES as f64
        );
    }
}
