//! `ClientSession` against the server `Session`, both on one virtual clock (no sockets).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::session::{Event, PushClass, Session, SessionConfig, WelcomeParams};
use crate::{ResumePoint, ResumeResult};

/// The server side of the test: a `Session` and the decisions a gateway makes.
struct Server {
    session: Session,
    /// Resume data of the last HELLO.
    resume: Option<Resume>,
    /// Offered pushes' next offset per room.
    epoch: u32,
}

impl Server {
    fn new(now: u64) -> Server {
        Server {
            session: Session::new(Arc::new(SessionConfig::default()), now),
            resume: None,
            epoch: 7,
        }
    }

    /// Acts on the session's events the way the gateway does (accept, JOIN OK at tail 0).
    fn decide(&mut self, now: u64) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::Hello { resume, .. } => {
                    self.resume = resume.clone();
                    let params = WelcomeParams {
                        session_id: resume.as_ref().map_or(42, |r| r.session_id),
                        epoch: self.epoch,
                        inbox_tail: 0,
                        broadcast_epoch: self.epoch,
                        broadcast_tail: 0,
                        user: "u1".into(),
                        server_time_ms: 0,
                    };
                    self.session.accept(params, now).unwrap();
                }
                Event::Join { req_id, .. } => {
                    self.session
                        .reply_room(req_id, Status::OK, Some((self.epoch, 0)))
                        .unwrap();
                }
                _ => {}
            }
        }
    }

    fn push(&mut self, class: PushClass, room: &str, offset: u64) {
        let frame = push_frame(self.epoch, class == PushClass::Urgent, room, offset);
        let stream = StreamName::Room(room.into());
        self.session
            .offer_push(class, &stream, offset, frame.to_bytes().unwrap());
    }
}

/// A PUSH of `room` at (`epoch`, `offset`); the payload is the offset in decimal.
fn push_frame(epoch: u32, urgent: bool, room: &str, offset: u64) -> Frame {
    Frame::Push(Push {
        stream: StreamName::Room(room.into()),
        epoch,
        offset,
        urgent,
        payload: Bytes::from(format!("{offset}")),
    })
}

/// Moves bytes both ways until both sides are quiet; returns the client's events.
fn pump(c: &mut ClientSession, s: &mut Server, now: u64) -> Vec<ClientEvent> {
    let mut events = Vec::new();
    loop {
        let mut up = BytesMut::new();
        while let Some(b) = c.poll_transmit() {
            up.extend_from_slice(&b);
        }
        s.session.handle_input(&mut up, now);
        s.decide(now);
        let mut down = BytesMut::new();
        while let Some(b) = s.session.poll_transmit() {
            down.extend_from_slice(&b);
        }
        if down.is_empty() && up.is_empty() {
            return events;
        }
        c.handle_input(&mut down, now);
        events.extend(std::iter::from_fn(|| c.poll_event()));
    }
}

fn connected(now: u64) -> (ClientSession, Server) {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = Server::new(now);
    c.connect(now);
    let ev = pump(&mut c, &mut s, now);
    assert_eq!(
        ev,
        [ClientEvent::Welcome {
            session_id: 42,
            resumed: false,
            max_payload: crate::DEFAULT_MAX_PAYLOAD,
        }]
    );
    assert_eq!(c.state(), ClientState::Active);
    (c, s)
}

fn offsets(events: &[ClientEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(p) => Some(p.offset),
            _ => None,
        })
        .collect()
}

#[test]
fn join_then_pushes_arrive_once_in_order() {
    let (mut c, mut s) = connected(0);
    let id = c.join("r", 1).unwrap();
    let ev = pump(&mut c, &mut s, 1);
    assert_eq!(
        ev,
        [ClientEvent::RoomResult {
            req_id: id,
            status: Status::OK
        }]
    );
    assert!(c.rooms().contains("r"));
    for o in [1, 2, 2, 1, 3] {
        s.push(PushClass::Room, "r", o);
    }
    assert_eq!(offsets(&pump(&mut c, &mut s, 2)), [1, 2, 3]);
}

#[test]
fn a_reconnect_resumes_every_stream_from_the_highest_offset_received() {
    let (mut c, mut s) = connected(0);
    c.join("r", 0).unwrap();
    pump(&mut c, &mut s, 0);
    s.push(PushClass::Room, "r", 5);
    pump(&mut c, &mut s, 1);
    c.transport_closed("gone");
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Closed {
            reason: CloseReason::CONNECTION_LOST,
            by_peer: false,
            ..
        })
    ));
    let mut s2 = Server::new(10);
    c.connect(10);
    let ev = pump(&mut c, &mut s2, 10);
    assert!(matches!(
        ev[0],
        ClientEvent::Welcome {
            session_id: 42,
            resumed: true,
            ..
        }
    ));
    let resume = s2.resume.expect("HELLO resumed");
    assert_eq!(resume.session_id, 42);
    let point = |stream: StreamName, last_offset| ResumePoint {
        stream,
        epoch: 7,
        last_offset,
    };
    assert_eq!(
        resume.streams,
        [
            point(StreamName::Room("*".into()), 0),
            point(StreamName::Room("r".into()), 5),
            point(StreamName::User("u1".into()), 0),
        ]
    );
}

#[test]
fn a_gap_is_reported_once_and_delivery_continues_after_it() {
    let (mut c, mut s) = connected(0);
    c.join("r", 0).unwrap();
    pump(&mut c, &mut s, 0);
    s.push(PushClass::Room, "r", 1);
    pump(&mut c, &mut s, 0);
    let room = StreamName::Room("r".into());
    s.session
        .send_resume_result(ResumeResult {
            stream: room.clone(),
            outcome: ResumeOutcome::Gap,
            old_epoch: 7,
            new_epoch: 7,
            missing_from: 2,
            missing_to: 5,
        })
        .unwrap();
    s.push(PushClass::Room, "r", 5);
    let ev = pump(&mut c, &mut s, 1);
    assert!(
        matches!(&ev[0], ClientEvent::Lost(l) if l.missing == (2..5) && l.reason == LossReason::Gap)
    );
    assert_eq!(offsets(&ev), [5]);
    assert_eq!(ev.len(), 2);
}

#[test]
fn urgent_while_asleep_arrives_after_its_streams_held_messages() {
    let (mut c, mut s) = connected(0);
    c.join("r", 0).unwrap();
    c.join("q", 0).unwrap();
    pump(&mut c, &mut s, 0);
    assert!(c.sleep(120_000, 1));
    let ev = pump(&mut c, &mut s, 1);
    assert_eq!(
        ev,
        [ClientEvent::SleepAck {
            interval_ms: 120_000
        }]
    );
    assert_eq!(c.state(), ClientState::Sleeping);
    s.push(PushClass::Room, "r", 1);
    s.push(PushClass::Room, "q", 1);
    s.push(PushClass::Room, "r", 2);
    s.push(PushClass::Urgent, "r", 3);
    let ev = pump(&mut c, &mut s, 2);
    assert_eq!(offsets(&ev), [1, 2, 3], "{ev:?}");
    assert!(!ev.iter().any(|e| matches!(e, ClientEvent::Lost(_))));
    assert!(c.wake(3));
    let ev = pump(&mut c, &mut s, 3);
    assert!(matches!(ev[0], ClientEvent::WakeAck { .. }));
    assert_eq!(offsets(&ev), [1], "q's held message");
    assert_eq!(c.state(), ClientState::Active);
}

#[test]
fn heartbeat_duty_pings_after_an_interval_without_sending_and_gives_up_when_silent() {
    let (mut c, _s) = connected(0);
    assert_eq!(c.poll_timeout(), Some(30_000));
    c.handle_timeout(29_999);
    assert!(c.poll_transmit().is_none());
    c.handle_timeout(30_000);
    let ping = c.poll_transmit().expect("PING");
    assert_eq!(
        crate::Decoder::default().decode(&mut BytesMut::from(&ping[..])),
        Ok(Some(Frame::Ping { nonce: 30_000 }))
    );
    // The server answers nothing (its PONG is lost): dead after 3 intervals of silence.
    assert_eq!(c.poll_timeout(), Some(60_000));
    c.handle_timeout(60_000);
    c.poll_transmit();
    c.handle_timeout(90_000);
    assert_eq!(c.state(), ClientState::Disconnected);
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Closed {
            reason: CloseReason::HEARTBEAT_TIMEOUT,
            ..
        })
    ));
    // A server PING is answered with a PONG on the next connection too.
    c.connect(100_000);
    let mut s = Server::new(100_000);
    pump(&mut c, &mut s, 100_000);
    s.session.handle_timeout(190_000);
    let ev = pump(&mut c, &mut s, 190_000);
    assert!(ev.is_empty());
    assert_eq!(s.session.state(), crate::State::Active);
}

#[test]
fn inbox_is_acked_up_to_what_arrived_never_welcomes_start() {
    let (mut c, mut s) = connected(0);
    assert!(c.poll_transmit().is_none(), "nothing received: no ACK");
    let inbox = StreamName::User("u1".into());
    for o in [1, 2] {
        let f = Frame::Push(Push {
            stream: inbox.clone(),
            epoch: 7,
            offset: o,
            urgent: false,
            payload: Bytes::new(),
        });
        s.session
            .offer_push(PushClass::Direct, &inbox, o, f.to_bytes().unwrap());
    }
    let mut down = BytesMut::new();
    while let Some(b) = s.session.poll_transmit() {
        down.extend_from_slice(&b);
    }
    c.handle_input(&mut down, 1);
    let ack = c.poll_transmit().expect("ACK");
    assert_eq!(
        crate::Decoder::default().decode(&mut BytesMut::from(&ack[..])),
        Ok(Some(Frame::Ack(Ack {
            stream: inbox,
            offset: 2
        })))
    );
    assert!(c.poll_transmit().is_none(), "one cumulative ACK");
}

#[test]
fn a_client_bound_frame_from_the_server_or_garbage_closes_with_protocol_error() {
    for bad in [
        Frame::Join(RoomRequest {
            req_id: 1,
            room: "r".into(),
        })
        .to_bytes()
        .unwrap(),
        Bytes::from_static(&[1, 0x7F, 0, 0, 0, 0, 0, 0]),
    ] {
        let (mut c, _s) = connected(0);
        c.handle_input(&mut BytesMut::from(&bad[..]), 1);
        let close = c.poll_transmit().expect("CLOSE");
        assert!(matches!(
            crate::Decoder::default().decode(&mut BytesMut::from(&close[..])),
            Ok(Some(Frame::Close {
                reason: CloseReason::PROTOCOL_ERROR,
                ..
            }))
        ));
        assert_eq!(c.state(), ClientState::Disconnected);
    }
}

#[test]
fn handshake_times_out_and_requests_wait_for_welcome() {
    let mut c = ClientSession::new(ClientConfig {
        handshake_timeout_ms: 5_000,
        ..ClientConfig::default()
    });
    let id = c.join("r", 0).unwrap();
    c.connect(0);
    assert_eq!(c.poll_timeout(), Some(5_000));
    c.handle_timeout(5_000);
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Closed {
            reason: CloseReason::HANDSHAKE_TIMEOUT,
            ..
        })
    ));
    // The JOIN queued before any connection goes out after the next WELCOME.
    let mut s = Server::new(6_000);
    c.connect(6_000);
    let ev = pump(&mut c, &mut s, 6_000);
    assert!(ev.contains(&ClientEvent::RoomResult {
        req_id: id,
        status: Status::OK
    }));
    assert!(c.join("", 7).is_err(), "empty room name refused locally");
}

#[test]
fn a_skipped_run_seen_before_wake_is_reported_once_as_skipped() {
    let (mut c, mut s) = connected(0);
    c.join("r", 0).unwrap();
    pump(&mut c, &mut s, 0);
    // Holdback 64: fill it from another room so `r` skips at once.
    c.join("q", 0).unwrap();
    pump(&mut c, &mut s, 0);
    assert!(c.sleep(60_000, 0));
    pump(&mut c, &mut s, 0);
    for o in 1..=64 {
        s.push(PushClass::Room, "q", o);
    }
    s.push(PushClass::Room, "r", 1);
    s.push(PushClass::Room, "r", 2);
    s.push(PushClass::Urgent, "r", 3);
    let ev = pump(&mut c, &mut s, 1);
    let lost: Vec<&Loss> = ev
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Lost(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 1, "{ev:?}");
    assert_eq!(
        (lost[0].reason, lost[0].missing.clone()),
        (LossReason::SkippedWhileAsleep, 1..3)
    );
    assert_eq!(offsets(&ev), [3]);
    c.wake(2);
    let ev = pump(&mut c, &mut s, 2);
    assert!(
        !ev.iter().any(|e| matches!(e, ClientEvent::Lost(_))),
        "WAKE_ACK's run was already reported: {ev:?}"
    );
    assert_eq!(offsets(&ev), (1..=64).collect::<Vec<_>>());
}

/// Feeds server frames to `c` at `now`; returns its events.
fn feed(c: &mut ClientSession, frames: &[Frame], now: u64) -> Vec<ClientEvent> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b).unwrap();
    }
    c.handle_input(&mut b, now);
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// The WELCOME the server `Session` sends to a new session, with `session_id`.
fn welcome_frame(session_id: u64) -> Frame {
    let mut s = Server::new(0);
    let mut up = BytesMut::new();
    Frame::Hello(Hello {
        token: Bytes::new(),
        client_info: String::new(),
        resume: None,
    })
    .encode(&mut up)
    .unwrap();
    s.session.handle_input(&mut up, 0);
    s.decide(0);
    let mut down = BytesMut::from(&s.session.poll_transmit().unwrap()[..]);
    match Decoder::default().decode(&mut down) {
        Ok(Some(Frame::Welcome(w))) => Frame::Welcome(crate::ops::Welcome { session_id, ..w }),
        other => panic!("{other:?}"),
    }
}

fn room_push(room: &str, offset: u64) -> Frame {
    push_frame(9, false, room, offset)
}

#[test]
fn observe_reports_duplicates_pings_pongs_and_resume_answers_and_silence() {
    let mut c = ClientSession::new(ClientConfig {
        observe: true,
        ..ClientConfig::default()
    });
    c.connect(0);
    let ev = feed(&mut c, &[welcome_frame(7), room_push("a", 2)], 0);
    assert!(matches!(
        ev[..],
        [ClientEvent::Welcome { .. }, ClientEvent::Message(_)]
    ));
    // A duplicate and a late offset are dropped for the application but observed.
    let ev = feed(&mut c, &[room_push("a", 2), room_push("a", 1)], 1);
    assert_eq!(
        ev,
        [
            ClientEvent::Duplicate(match room_push("a", 2) {
                Frame::Push(p) => p,
                _ => unreachable!(),
            }),
            ClientEvent::Duplicate(match room_push("a", 1) {
                Frame::Push(p) => p,
                _ => unreachable!(),
            }),
        ]
    );
    // The caller's PING nonce comes back in Pong; a server PING is answered and observed.
    while c.poll_transmit().is_some() {}
    assert!(c.ping(123_456, 2));
    assert_eq!(
        c.poll_transmit(),
        Some(Frame::Ping { nonce: 123_456 }.to_bytes().unwrap())
    );
    let ev = feed(
        &mut c,
        &[Frame::Pong { nonce: 123_456 }, Frame::Ping { nonce: 5 }],
        3,
    );
    assert_eq!(
        ev,
        [
            ClientEvent::Pong { nonce: 123_456 },
            ClientEvent::Ping { nonce: 5 }
        ]
    );
    assert_eq!(
        c.poll_transmit(),
        Some(Frame::Pong { nonce: 5 }.to_bytes().unwrap())
    );
    // Reconnect: the entries are room:* then room a (positions' order); the server answers
    // a's entry and skips room:*'s.
    c.transport_closed("cut");
    let _ = std::iter::from_fn(|| c.poll_event()).count();
    c.connect(10);
    let entries: Vec<StreamName> = c.resume_pending.iter().cloned().collect();
    assert_eq!(entries.len(), 3, "room:*, room a, the inbox: {entries:?}");
    let answer = ResumeResult {
        stream: StreamName::Room("a".into()),
        outcome: ResumeOutcome::Gap,
        old_epoch: 9,
        new_epoch: 9,
        missing_from: 3,
        missing_to: 5,
    };
    let ev = feed(
        &mut c,
        &[
            welcome_frame(7),
            Frame::ResumeResult(answer.clone()),
            room_push("a", 5),
        ],
        10,
    );
    let unanswered: Vec<&StreamName> = ev
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ResumeUnanswered { stream } => Some(stream),
            _ => None,
        })
        .collect();
    let a = StreamName::Room("a".into());
    let skipped: Vec<&StreamName> = entries.iter().take_while(|s| **s != a).collect();
    assert_eq!(
        unanswered, skipped,
        "entries before a's answer were skipped: {ev:?}"
    );
    assert!(ev.contains(&ClientEvent::ResumeAnswered(answer)), "{ev:?}");
    assert!(
        ev.iter().any(|e| matches!(e, ClientEvent::Lost(_))),
        "{ev:?}"
    );
    assert!(ev
        .iter()
        .any(|e| matches!(e, ClientEvent::Message(p) if p.offset == 5)));
    // A server that ignores resume: live traffic with entries unanswered reports each once.
    c.transport_closed("cut");
    let _ = std::iter::from_fn(|| c.poll_event()).count();
    c.connect(20);
    let n = c.resume_pending.len();
    let ev = feed(
        &mut c,
        &[welcome_frame(8), room_push("b", 1), room_push("a", 6)],
        20,
    );
    let silent = ev
        .iter()
        .filter(|e| matches!(e, ClientEvent::ResumeUnanswered { .. }))
        .count();
    assert_eq!(silent, n, "{ev:?}");
    // Without observe none of these appear.
    let mut quiet = ClientSession::new(ClientConfig::default());
    quiet.connect(0);
    let ev = feed(
        &mut quiet,
        &[
            welcome_frame(7),
            room_push("a", 2),
            room_push("a", 2),
            Frame::Ping { nonce: 1 },
        ],
        0,
    );
    assert_eq!(ev.len(), 2, "{ev:?}");
}
