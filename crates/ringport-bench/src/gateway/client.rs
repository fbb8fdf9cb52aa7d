//! One simulated gateway client, sans-IO: bytes and `now` in, bytes and events out.
//!
//! HELLO(token[, resume]) → WELCOME → JOIN each room → ROOM_RESULT → ready. Server PINGs are
//! answered with PONG, a PING goes out whenever nothing was sent for the negotiated heartbeat
//! interval, user-inbox PUSHes are ACKed, and every PUSH is recorded in a per-stream
//! [`StreamLedger`] (which survives reconnects, for the resume check).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringport_proto::{
    Ack, Decoder, Frame, Hello, Resume, ResumeOutcome, ResumePoint, RoomRequest, Status, StreamName,
};

use super::ledger::{Arrival, StreamLedger};
use super::payload;

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP not yet open, or HELLO sent and no WELCOME yet.
    Handshake,
    /// WELCOME received; JOINs outstanding.
    Joining,
    /// Every room joined.
    Ready,
    /// CLOSE received or protocol error: the transport should close.
    Done,
}

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
    /// Undecodable input.
    ProtocolError,
}

/// One stream epoch's ledger.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub stream: StreamName,
    pub epoch: u32,
    pub ledger: StreamLedger,
}

#[derive(Debug)]
pub struct ClientConn {
    pub phase: Phase,
    /// Rooms to JOIN after WELCOME.
    rooms: Vec<String>,
    joins_left: usize,
    joins_failed: usize,
    /// From WELCOME; 0 before.
    pub session_id: u64,
    heartbeat: Duration,
    last_sent: Instant,
    /// When the current transport's HELLO went out (handshake latency).
    pub hello_at: Instant,
    buf: BytesMut,
    decoder: Decoder,
    /// Per stream epoch received; kept across reconnects.
    pub streams: Vec<Tracked>,
    /// Streams named in our resume HELLO that have no RESUME_RESULT yet.
    resume_pending: Vec<StreamName>,
    /// Reused frame encoding buffer.
    scratch: BytesMut,
}

impl ClientConn {
    pub fn new(rooms: Vec<String>, now: Instant) -> ClientConn {
        ClientConn {
            phase: Phase::Handshake,
            joins_left: rooms.len(),
            rooms,
            joins_failed: 0,
            session_id: 0,
            heartbeat: Duration::from_secs(30),
            last_sent: now,
            hello_at: now,
            buf: BytesMut::new(),
            decoder: Decoder::new(16 << 20),
            streams: Vec::new(),
            resume_pending: Vec::new(),
            scratch: BytesMut::new(),
        }
    }

    fn put(&mut self, frame: &Frame, out: &mut Vec<u8>, now: Instant) {
        self.scratch.clear();
        frame
            .encode(&mut self.scratch)
            .expect("bench frames encode");
        out.extend_from_slice(&self.scratch);
        self.last_sent = now;
    }

    /// The rooms this client joins.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// The resume data for a reconnect: the session and the highest offset per stream epoch.
    pub fn resume_data(&self) -> Option<Resume> {
        if self.session_id == 0 {
            return None;
        }
        let mut streams: Vec<ResumePoint> = Vec::new();
        for t in &self.streams {
            let Some(last) = t.ledger.received.max() else {
                continue;
            };
            // Only the newest epoch of a stream is resumable.
            streams.retain(|p| p.stream != t.stream);
            streams.push(ResumePoint {
                stream: t.stream.clone(),
                epoch: t.epoch,
                last_offset: last,
            });
        }
        Some(Resume {
            session_id: self.session_id,
            streams,
        })
    }

    /// A fresh transport is open: reset per-transport state and send HELLO (resuming when
    /// `resume` and a previous session exist).
    pub fn start(&mut self, token: &[u8], resume: bool, out: &mut Vec<u8>, now: Instant) {
        let resume = if resume { self.resume_data() } else { None };
        self.resume_pending = resume
            .as_ref()
            .map(|r| r.streams.iter().map(|p| p.stream.clone()).collect())
            .unwrap_or_default();
        self.phase = Phase::Handshake;
        self.joins_left = self.rooms.len();
        self.joins_failed = 0;
        self.buf.clear();
        self.hello_at = now;
        let hello = Frame::Hello(Hello {
            token: Bytes::copy_from_slice(token),
            client_info: "ringport-bench/1".into(),
            resume,
        });
        self.put(&hello, out, now);
    }

    /// When the next PING is due (after WELCOME).
    pub fn next_ping(&self) -> Option<Instant> {
        matches!(self.phase, Phase::Joining | Phase::Ready).then(|| self.last_sent + self.heartbeat)
    }

    /// Sends a PING if nothing was sent for a heartbeat interval; returns whether it did.
    pub fn on_timer(&mut self, out: &mut Vec<u8>, now: Instant) -> bool {
        match self.next_ping() {
            Some(due) if now >= due => {
                let nonce = payload::now_ns();
                self.put(&Frame::Ping { nonce }, out, now);
                true
            }
            _ => false,
        }
    }

    fn ledger(&mut self, stream: &StreamName, epoch: u32) -> &mut StreamLedger {
        let i = match self
            .streams
            .iter()
            .position(|t| t.epoch == epoch && &t.stream == stream)
        {
            Some(i) => i,
            None => {
                self.streams.push(Tracked {
                    stream: stream.clone(),
                    epoch,
                    ledger: StreamLedger::default(),
                });
                self.streams.len() - 1
            }
        };
        &mut self.streams[i].ledger
    }

    fn resume_unanswered(&mut self, events: &mut Vec<Event>) {
        for _ in self.resume_pending.drain(..) {
            events.push(Event::ResumeUnanswered);
        }
    }

    /// Feeds received bytes; replies go to `out`, observations to `events`.
    pub fn on_bytes(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
        now: Instant,
    ) {
        self.buf.extend_from_slice(data);
        while self.phase != Phase::Done {
            let frame = match self.decoder.decode(&mut self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    self.phase = Phase::Done;
                    events.push(Event::ProtocolError);
                    break;
                }
            };
            self.on_frame(frame, out, events, now);
        }
    }

    fn on_frame(&mut self, frame: Frame, out: &mut Vec<u8>, events: &mut Vec<Event>, now: Instant) {
        match frame {
            Frame::Welcome(w) if self.phase == Phase::Handshake => {
                self.session_id = w.session_id;
                self.heartbeat = Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(1)));
                events.push(Event::Welcomed);
                self.phase = Phase::Joining;
                let rooms = std::mem::take(&mut self.rooms);
                for (i, room) in rooms.iter().enumerate() {
                    let join = Frame::Join(RoomRequest {
                        req_id: i as u32,
                        room: room.clone(),
                    });
                    self.put(&join, out, now);
                }
                self.rooms = rooms;
                if self.rooms.is_empty() {
                    self.phase = Phase::Ready;
                    events.push(Event::Ready { failed: 0 });
                }
            }
            Frame::ResumeResult(r) => {
                self.resume_pending.retain(|s| s != &r.stream);
                match r.outcome {
                    ResumeOutcome::Resumed => {}
                    ResumeOutcome::Gap => self
                        .ledger(&r.stream, r.old_epoch)
                        .reported_lost
                        .insert_range(r.missing_from, r.missing_to),
                    // Refused: the server will send this stream no more (explicitly, so
                    // what follows counts as reported, not silently lost).
                    ResumeOutcome::EpochChanged | ResumeOutcome::Refused(_) => {
                        // Everything after what we had in the old epoch is gone.
                        let old = self.ledger(&r.stream, r.old_epoch);
                        let from = old.received.max().map_or(0, |m| m + 1);
                        old.reported_lost.insert_range(from, u64::MAX);
                    }
                }
                events.push(Event::ResumeAnswered(r.outcome));
            }
            Frame::RoomResult(r) if self.phase == Phase::Joining => {
                // The server answers resume entries right after WELCOME, before any JOIN.
                self.resume_unanswered(events);
                if r.status != Status::OK {
                    self.joins_failed += 1;
                }
                self.joins_left = self.joins_left.saturating_sub(1);
                if self.joins_left == 0 {
                    self.phase = Phase::Ready;
                    events.push(Event::Ready {
                        failed: self.joins_failed,
                    });
                }
            }
            Frame::Push(p) => {
                if self.resume_pending.contains(&p.stream) {
                    self.resume_pending.retain(|s| s != &p.stream);
                    events.push(Event::ResumeUnanswered);
                }
                let latency = payload::decode(&p.payload)
                    .map(|(ts, _)| Duration::from_nanos(payload::now_ns().saturating_sub(ts)));
                let arrival = self.ledger(&p.stream, p.epoch).record(p.offset);
                if p.stream.is_user() {
                    let ack = Frame::Ack(Ack {
                        stream: p.stream,
                        offset: p.offset,
                    });
                    self.put(&ack, out, now);
                }
                events.push(Event::Push { arrival, latency });
            }
            Frame::Ping { nonce } => {
                self.put(&Frame::Pong { nonce }, out, now);
                events.push(Event::ServerPing);
            }
            Frame::Pong { nonce } => events.push(Event::Pong {
                rtt: Duration::from_nanos(payload::now_ns().saturating_sub(nonce)),
            }),
            Frame::Close { reason, .. } => {
                self.phase = Phase::Done;
                events.push(Event::ServerClose(reason.0));
            }
            // PUBLISH_ACK, ERROR, SLEEP_ACK, WAKE_ACK: not used by the scenarios.
            Frame::PublishAck(_) | Frame::Error { .. } | Frame::SleepAck { .. } => {}
            Frame::WakeAck(_) => {}
            _ => {
                self.phase = Phase::Done;
                events.push(Event::ProtocolError);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringport_proto::{Push, ResumeResult, RoomResult, Welcome};

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
        c.on_bytes(&server_bytes(&[welcome(7)]), &mut out, &mut ev, t0);
        assert_eq!(decode_all(&out).len(), 2, "two JOINs");
        let rr = |id| {
            Frame::RoomResult(RoomResult {
                req_id: id,
                status: Status::OK,
                epoch: 1,
                tail: 0,
            })
        };
        let bytes = server_bytes(&[rr(0), rr(1), Frame::Ping { nonce: 5 }, push("a", 1)]);
        out.clear();
        // Byte by byte: partial frames are fine.
        for b in &bytes {
            c.on_bytes(std::slice::from_ref(b), &mut out, &mut ev, t0);
        }
        assert_eq!(c.phase, Phase::Ready);
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
        let rr = Frame::RoomResult(RoomResult {
            req_id: 0,
            status: Status::OK,
            epoch: 1,
            tail: 0,
        });
        let b = server_bytes(&[welcome(7), rr.clone(), push("a", 1), push("a", 2)]);
        c.on_bytes(&b, &mut out, &mut ev, t0);
        out.clear();
        c.start(b"", true, &mut out, t0);
        match &decode_all(&out)[..] {
            [Frame::Hello(h)] => {
                let r = h.resume.as_ref().unwrap();
                assert_eq!(r.session_id, 7);
                assert_eq!(r.streams[0].last_offset, 2);
                assert_eq!(r.streams[0].epoch, 9);
            }
            other => panic!("{other:?}"),
        }
        // A server that ignores resume: WELCOME then ROOM_RESULT, no RESUME_RESULT.
        ev.clear();
        c.on_bytes(
            &server_bytes(&[welcome(8), rr.clone()]),
            &mut out,
            &mut ev,
            t0,
        );
        assert!(ev.contains(&Event::ResumeUnanswered));
        // A server that answers GAP: the gap is recorded as reported lost.
        out.clear();
        c.start(b"", true, &mut out, t0);
        ev.clear();
        let gap = Frame::ResumeResult(ResumeResult {
            stream: StreamName::Room("a".into()),
            outcome: ResumeOutcome::Gap,
            old_epoch: 9,
            new_epoch: 9,
            missing_from: 3,
            missing_to: 5,
        });
        c.on_bytes(
            &server_bytes(&[welcome(8), gap, rr, push("a", 5)]),
            &mut out,
            &mut ev,
            t0,
        );
        assert!(ev.contains(&Event::ResumeAnswered(ResumeOutcome::Gap)));
        assert!(!ev.contains(&Event::ResumeUnanswered));
        let v = c.streams[0].ledger.verify(1, 6);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.reported_missing, 2);
    }
}
