//! Session machine tests on a virtual clock: no sockets, no sleeps.

use super::*;
use crate::ops::{Ack, Hello, Publish, Push, RoomRequest, Skipped};

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig::default())
}

fn hello() -> Frame {
    Frame::Hello(Hello {
        token: Bytes::from_static(b"tok"),
        client_info: "test".into(),
        resume: None,
    })
}

fn params() -> WelcomeParams {
    WelcomeParams {
        session_id: 42,
        epoch: 3,
        inbox_tail: 17,
        broadcast_epoch: 3,
        broadcast_tail: 5,
        user: "u1".into(),
        server_time_ms: 1_700_000_000_000,
    }
}

/// Everything the session wants to send, decoded.
fn sent(s: &mut Session) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(b) = s.poll_transmit() {
        let mut buf = BytesMut::from(&b[..]);
        out.push(Decoder::new(u32::MAX).decode(&mut buf).unwrap().unwrap());
        assert!(buf.is_empty());
    }
    out
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn close_reason(frames: &[Frame]) -> Option<CloseReason> {
    frames.iter().find_map(|f| match f {
        Frame::Close { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn established(cfg: Arc<SessionConfig>, now: u64) -> Session {
    let mut s = Session::new(cfg, now);
    s.handle_frame(hello(), now);
    assert!(matches!(events(&mut s)[..], [Event::Hello { .. }]));
    s.accept(params(), now).unwrap();
    let frames = sent(&mut s);
    assert!(matches!(frames[..], [Frame::Welcome(_)]));
    s
}

fn push_frame(stream: &StreamName, offset: u64) -> Bytes {
    Frame::Push(Push {
        stream: stream.clone(),
        epoch: 1,
        offset,
        urgent: false,
        payload: Bytes::from_static(b"m"),
    })
    .to_bytes()
    .unwrap()
}

#[test]
fn handshake_accept_sends_welcome_from_config_and_params() {
    let mut s = Session::new(config(), 5);
    s.handle_frame(hello(), 7);
    assert_eq!(s.state(), State::Authenticating);
    assert_eq!(
        events(&mut s),
        [Event::Hello {
            token: Bytes::from_static(b"tok"),
            client_info: "test".into(),
            resume: None
        }]
    );
    s.accept(params(), 8).unwrap();
    assert_eq!(s.state(), State::Active);
    assert_eq!(
        sent(&mut s),
        [Frame::Welcome(Welcome {
            session_id: 42,
            epoch: 3,
            inbox_tail: 17,
            broadcast_epoch: 3,
            broadcast_tail: 5,
            heartbeat_interval_ms: 30_000,
            max_sleep_interval_ms: 300_000,
            max_payload: 65_536,
            max_rooms: 64,
            server_time_ms: 1_700_000_000_000,
            user: "u1".into(),
        })]
    );
    assert_eq!(
        s.accept(params(), 9),
        Err(Error::InvalidState {
            action: "accept",
            state: State::Active
        })
    );
}

#[test]
fn handshake_deadline_closes_silent_and_slow_clients() {
    for hello_first in [false, true] {
        let mut s = Session::new(config(), 1_000);
        if hello_first {
            s.handle_frame(hello(), 2_000);
            events(&mut s);
        }
        assert_eq!(s.poll_timeout(), Some(11_000));
        s.handle_timeout(10_999);
        assert!(sent(&mut s).is_empty());
        s.handle_timeout(11_000);
        assert_eq!(
            close_reason(&sent(&mut s)),
            Some(CloseReason::HANDSHAKE_TIMEOUT)
        );
        assert_eq!(s.state(), State::Draining);
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::HANDSHAKE_TIMEOUT,
                by_peer: false
            }]
        );
        // The drain timeout (default 2 000 ms) after the CLOSE.
        assert_eq!(s.poll_timeout(), Some(13_000));
        s.handle_timeout(13_000);
        assert_eq!(s.state(), State::Closed);
        assert_eq!(s.poll_timeout(), None);
        assert!(events(&mut s).is_empty());
    }
}

#[test]
fn reject_closes_with_given_reason_and_ignores_later_frames() {
    let mut s = Session::new(config(), 0);
    assert!(s.reject(CloseReason::AUTH_FAILED, "x", 0).is_err());
    s.handle_frame(hello(), 0);
    events(&mut s);
    s.reject(CloseReason::AUTH_FAILED, "bad token", 10).unwrap();
    assert_eq!(
        sent(&mut s),
        [Frame::Close {
            reason: CloseReason::AUTH_FAILED,
            text: "bad token".into()
        }]
    );
    assert_eq!(s.state(), State::Draining);
    s.handle_frame(Frame::Ping { nonce: 1 }, 20);
    assert!(sent(&mut s).is_empty());
    assert!(s.accept(params(), 30).is_err());
    // Replies racing the close are dropped, not errors.
    assert_eq!(s.reply_room(1, Status::OK, Some((3, 9))), Ok(()));
    assert!(sent(&mut s).is_empty());
    assert_eq!(events(&mut s).len(), 1);
    s.handle_frame(
        Frame::Close {
            reason: CloseReason::NORMAL,
            text: String::new(),
        },
        40,
    );
    assert_eq!(s.state(), State::Closed);
    assert!(events(&mut s).is_empty());
}

#[test]
fn heartbeat_tolerates_then_probes_then_closes_at_exact_times() {
    let mut s = established(config(), 0);
    let mut pings = Vec::new();
    // Step through every second, as a timer wheel would fire at poll_timeout.
    let mut now = 0;
    while s.state() == State::Active {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        for f in sent(&mut s) {
            match f {
                Frame::Ping { .. } => pings.push(now),
                Frame::Close { reason, text } => {
                    assert_eq!(reason, CloseReason::HEARTBEAT_TIMEOUT);
                    assert_eq!(text, "heartbeat timeout");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(pings, [90_000, 100_000, 110_000]);
    assert_eq!(now, 120_000);
    assert_eq!(s.state(), State::Draining);
}

#[test]
fn heartbeat_numbers_are_configurable_and_any_frame_is_liveness() {
    let cfg = Arc::new(SessionConfig {
        heartbeat_interval_ms: 1_000,
        tolerated_misses: 0,
        probe_divisor: 4,
        close_after_misses: 2,
        ..SessionConfig::default()
    });
    let mut s = established(cfg, 0);
    assert_eq!(s.poll_timeout(), Some(1_000));
    s.handle_timeout(999);
    assert!(sent(&mut s).is_empty());
    s.handle_timeout(1_000);
    assert!(matches!(sent(&mut s)[..], [Frame::Ping { nonce: 1_000 }]));
    assert_eq!(s.poll_timeout(), Some(1_250));
    // A PONG (or anything) resets the schedule.
    s.handle_frame(Frame::Pong { nonce: 1_000 }, 1_100);
    assert_eq!(s.poll_timeout(), Some(2_100));
    s.handle_timeout(2_100);
    s.handle_timeout(2_350);
    s.handle_timeout(2_600);
    s.handle_timeout(2_850);
    assert_eq!(sent(&mut s).len(), 4);
    assert_eq!(s.poll_timeout(), Some(3_100));
    s.handle_timeout(3_099);
    assert_eq!(s.state(), State::Active);
    s.handle_timeout(3_100);
    assert_eq!(
        close_reason(&sent(&mut s)),
        Some(CloseReason::HEARTBEAT_TIMEOUT)
    );
}

#[test]
fn last_rx_ms_is_the_time_of_the_last_frame_taken() {
    // The gateway counts missed heartbeats from it (`ringport_heartbeats_missed_total`).
    let mut s = Session::new(config(), 7);
    assert_eq!(s.last_rx_ms(), 7, "the start, before any frame");
    s.handle_frame(hello(), 50);
    assert_eq!(s.last_rx_ms(), 50);
    s.accept(params(), 60).unwrap();
    s.handle_frame(Frame::Ping { nonce: 1 }, 95_000);
    assert_eq!(s.last_rx_ms(), 95_000);
    s.handle_frame(
        Frame::Sleep {
            interval_ms: 120_000,
        },
        96_000,
    );
    assert_eq!(s.last_rx_ms(), 96_000);
    s.handle_frame(Frame::Wake, 400_000);
    assert_eq!(s.last_rx_ms(), 400_000);
}

#[test]
fn ping_is_answered_with_pong() {
    let mut s = established(config(), 0);
    s.handle_frame(Frame::Ping { nonce: 99 }, 5);
    assert_eq!(sent(&mut s), [Frame::Pong { nonce: 99 }]);
}

#[test]
fn sleep_interval_is_clamped_and_stretches_the_heartbeat() {
    for (asked, granted) in [(120_000, 120_000), (9_999_999, 300_000), (1, 30_000)] {
        let mut s = established(config(), 0);
        s.handle_frame(Frame::Sleep { interval_ms: asked }, 1_000);
        assert_eq!(s.state(), State::Sleeping);
        assert_eq!(
            sent(&mut s),
            [Frame::SleepAck {
                interval_ms: granted
            }]
        );
        assert_eq!(
            events(&mut s),
            [Event::Sleep {
                interval_ms: granted
            }]
        );
        assert_eq!(s.heartbeat_interval_ms(), granted);
        assert_eq!(s.poll_timeout(), Some(1_000 + 3 * u64::from(granted)));
        // Heartbeat PINGs keep it asleep.
        s.handle_frame(Frame::Ping { nonce: 1 }, 2_000);
        assert_eq!(s.state(), State::Sleeping);
    }
}

/// An established session asleep at 0 with a holdback of `frames`, its output drained.
fn asleep(frames: usize) -> Session {
    let cfg = Arc::new(SessionConfig {
        sleep_holdback_frames: frames,
        ..SessionConfig::default()
    });
    let mut s = established(cfg, 0);
    s.handle_frame(
        Frame::Sleep {
            interval_ms: 60_000,
        },
        0,
    );
    sent(&mut s);
    events(&mut s);
    s
}

#[test]
fn sleeping_holds_room_traffic_skips_beyond_bound_and_reports_on_wake() {
    let mut s = asleep(3);
    let a = StreamName::Room("a".into());
    let b = StreamName::Room("b".into());
    let me = StreamName::User("me".into());
    let offers = [
        (PushClass::Room, &a, 1, PushOutcome::Held),
        (PushClass::Room, &b, 1, PushOutcome::Held),
        (PushClass::Direct, &me, 7, PushOutcome::Sent),
        (PushClass::Room, &a, 2, PushOutcome::Held),
        (PushClass::Room, &a, 3, PushOutcome::Skipped),
        // Urgent: b's held frame goes out first, freeing a place.
        (PushClass::Urgent, &b, 2, PushOutcome::Sent),
        (PushClass::Room, &b, 3, PushOutcome::Held),
        (PushClass::Room, &a, 4, PushOutcome::Skipped),
    ];
    let mut frames = std::collections::HashMap::new();
    for (class, stream, offset, want) in offers {
        let frame = push_frame(stream, offset);
        frames.insert((stream.to_string(), offset), frame.clone());
        assert_eq!(
            s.offer_push(class, stream, offset, frame.clone()),
            want,
            "{stream} {offset}"
        );
    }
    // Direct and urgent went out at once (urgent behind its stream's held frame), sharing
    // the caller's buffers.
    let out: Vec<Bytes> = std::iter::from_fn(|| s.poll_transmit()).collect();
    let want = [("user:me", 7), ("room:b", 1), ("room:b", 2)];
    assert_eq!(out.len(), want.len());
    for (f, (stream, offset)) in out.iter().zip(want) {
        assert_eq!(f.as_ptr(), frames[&(stream.to_owned(), offset)].as_ptr());
    }

    s.handle_frame(Frame::Wake, 5_000);
    assert_eq!(s.state(), State::Active);
    assert_eq!(events(&mut s), [Event::Wake]);
    let frames = sent(&mut s);
    assert_eq!(
        frames[0],
        Frame::WakeAck(WakeAck {
            skipped: vec![Skipped {
                stream: a.clone(),
                resume_from: 3,
                count: 2
            },]
        })
    );
    let held: Vec<(String, u64)> = frames[1..]
        .iter()
        .map(|f| match f {
            Frame::Push(p) => (p.stream.to_string(), p.offset),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        held,
        [
            ("room:a".into(), 1),
            ("room:a".into(), 2),
            ("room:b".into(), 3)
        ]
    );
    assert!(s.holdback.is_none());
    assert_eq!(s.heartbeat_interval_ms(), 30_000);
    assert_eq!(
        s.offer_push(PushClass::Room, &a, 5, push_frame(&a, 5)),
        PushOutcome::Sent
    );
}

/// An urgent message of a skipping stream ends its run: the stream holds again (if there is
/// room) and a later overflow starts a second run, so WAKE_ACK lists the stream twice and
/// never claims the urgent offset as skipped.
#[test]
fn urgent_ends_a_skipped_run_and_wake_ack_lists_each_run() {
    let mut s = asleep(2);
    let a = StreamName::Room("a".into());
    let offers = [
        (PushClass::Room, 1, PushOutcome::Held),
        (PushClass::Room, 2, PushOutcome::Held),
        (PushClass::Room, 3, PushOutcome::Skipped),
        (PushClass::Room, 4, PushOutcome::Skipped),
        (PushClass::Urgent, 5, PushOutcome::Sent),
        (PushClass::Room, 6, PushOutcome::Held),
        (PushClass::Room, 7, PushOutcome::Held),
        (PushClass::Room, 8, PushOutcome::Skipped),
    ];
    for (class, offset, want) in offers {
        let got = s.offer_push(class, &a, offset, push_frame(&a, offset));
        assert_eq!(got, want, "offset {offset}");
    }
    let offsets = |frames: &[Frame]| -> Vec<u64> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Push(p) => Some(p.offset),
                _ => None,
            })
            .collect()
    };
    assert_eq!(offsets(&sent(&mut s)), [1, 2, 5]);
    s.handle_frame(Frame::Wake, 1_000);
    let frames = sent(&mut s);
    let run = |resume_from, count| Skipped {
        stream: a.clone(),
        resume_from,
        count,
    };
    assert_eq!(
        frames[0],
        Frame::WakeAck(WakeAck {
            skipped: vec![run(3, 2), run(8, 1)]
        })
    );
    assert_eq!(offsets(&frames), [6, 7]);
}

#[test]
fn any_user_action_wakes_and_is_then_handled() {
    let mut s = established(config(), 0);
    s.handle_frame(
        Frame::Sleep {
            interval_ms: 60_000,
        },
        0,
    );
    sent(&mut s);
    events(&mut s);
    let publish = Frame::Publish(Publish {
        room: "r".into(),
        seq: 9,
        payload: Bytes::from_static(b"hi"),
    });
    s.handle_frame(publish, 10);
    assert_eq!(s.state(), State::Active);
    assert_eq!(
        events(&mut s),
        [
            Event::Wake,
            Event::Publish {
                room: "r".into(),
                seq: 9,
                payload: Bytes::from_static(b"hi")
            }
        ]
    );
    assert_eq!(sent(&mut s), [Frame::WakeAck(WakeAck::default())]);
    // WAKE while awake is answered, not an error.
    s.handle_frame(Frame::Wake, 20);
    assert_eq!(sent(&mut s), [Frame::WakeAck(WakeAck::default())]);
    assert_eq!(s.state(), State::Active);
}

#[test]
fn requests_become_events_and_replies_become_frames() {
    let mut s = established(config(), 0);
    s.handle_frame(
        Frame::Join(RoomRequest {
            req_id: 1,
            room: "lobby".into(),
        }),
        1,
    );
    s.handle_frame(
        Frame::Ack(Ack {
            stream: StreamName::User("u1".into()),
            offset: 17,
        }),
        2,
    );
    assert_eq!(
        events(&mut s),
        [
            Event::Join {
                req_id: 1,
                room: "lobby".into()
            },
            Event::Ack {
                stream: StreamName::User("u1".into()),
                offset: 17
            }
        ]
    );
    s.reply_room(1, Status::FORBIDDEN, None).unwrap();
    s.reply_room(2, Status::OK, Some((3, 12))).unwrap();
    s.reply_publish(4, Status::OK).unwrap();
    s.send_error(Status::RATE_LIMITED, "slow down").unwrap();
    assert_eq!(
        sent(&mut s),
        [
            Frame::RoomResult(RoomResult {
                req_id: 1,
                status: Status::FORBIDDEN,
                epoch: 0,
                tail: 0,
            }),
            Frame::RoomResult(RoomResult {
                req_id: 2,
                status: Status::OK,
                epoch: 3,
                tail: 12,
            }),
            Frame::PublishAck(PublishAck {
                seq: 4,
                status: Status::OK
            }),
            Frame::Error {
                code: Status::RATE_LIMITED,
                text: "slow down".into()
            }
        ]
    );
}

#[test]
fn ack_of_a_room_stream_is_a_protocol_error() {
    let mut s = established(config(), 0);
    s.handle_frame(
        Frame::Ack(Ack {
            stream: StreamName::Room("r".into()),
            offset: 1,
        }),
        1,
    );
    let frames = sent(&mut s);
    assert_eq!(close_reason(&frames), Some(CloseReason::PROTOCOL_ERROR));
    // The text names the rule, not the state (ACK is allowed while active).
    let text = frames.iter().find_map(|f| match f {
        Frame::Close { text, .. } => Some(text.clone()),
        _ => None,
    });
    assert_eq!(
        text.as_deref(),
        Some("ACK of room:r: only the user inbox (user:<id>) is acknowledged")
    );
}

/// One representative of every op, as a client might (wrongly) send it.
fn every_op() -> Vec<Frame> {
    let frames = crate::fuzzing::sample_frames();
    let ops: Vec<Op> = frames.iter().map(Frame::op).collect();
    assert_eq!(ops, crate::Op::ALL, "one sample per op, in code order");
    frames
}

use crate::frame::Op;

fn in_state(state: State) -> Session {
    let mut s = Session::new(config(), 0);
    match state {
        State::Handshaking => {}
        State::Authenticating => s.handle_frame(hello(), 0),
        State::Active => s = established(config(), 0),
        State::Sleeping => {
            s = established(config(), 0);
            s.handle_frame(
                Frame::Sleep {
                    interval_ms: 60_000,
                },
                0,
            );
        }
        State::Draining => s.close(CloseReason::GOING_AWAY, "", 0),
        State::Closed => s.transport_closed(),
    }
    assert_eq!(s.state(), state);
    sent(&mut s);
    events(&mut s);
    s
}

/// The whole transition table: every state × every inbound op.
#[test]
fn transition_table_is_exhaustive() {
    use State::*;
    const ALL: [State; 6] = [
        Handshaking,
        Authenticating,
        Active,
        Sleeping,
        Draining,
        Closed,
    ];
    const V: State = Draining; // protocol violation: CLOSE sent, draining
    for state in ALL {
        for frame in every_op() {
            let op = frame.op();
            let want = match (state, op) {
                (Closed, _) => Closed,
                (Draining, Op::Close) => Closed,
                (Draining, _) => Draining,
                (_, Op::Close) => Closed,
                (Handshaking, Op::Hello) => Authenticating,
                (Handshaking | Authenticating, _) => V,
                (Active | Sleeping, Op::Hello) => V,
                (Active | Sleeping, Op::Ping | Op::Pong | Op::Ack) => state,
                (Active | Sleeping, Op::Sleep) => Sleeping,
                (Active | Sleeping, Op::Join | Op::Leave | Op::Publish | Op::Wake) => Active,
                (Active | Sleeping, _) => V, // server-to-client ops
            };
            let mut s = in_state(state);
            s.handle_frame(frame, 1);
            assert_eq!(s.state(), want, "{state:?} + {op:?}");
            let out = sent(&mut s);
            let violation = want == V && state != Draining;
            assert_eq!(
                close_reason(&out) == Some(CloseReason::PROTOCOL_ERROR),
                violation,
                "{state:?} + {op:?} -> {out:?}"
            );
        }
    }
}

#[test]
fn decode_errors_close_with_matching_reason() {
    let cases: [(&[u8], CloseReason); 3] = [
        (
            &[1, 3, 0, 0, 0x00, 0x01, 0x00, 0x01],
            CloseReason::FRAME_TOO_LARGE,
        ),
        (&[2, 1, 0, 0, 0, 0, 0, 0], CloseReason::UNSUPPORTED_VERSION),
        (&[1, 0x7F, 0, 0, 0, 0, 0, 0], CloseReason::PROTOCOL_ERROR),
    ];
    for (bytes, reason) in cases {
        let mut s = Session::new(config(), 0);
        let mut buf = BytesMut::from(bytes);
        s.handle_input(&mut buf, 0);
        assert_eq!(close_reason(&sent(&mut s)), Some(reason), "{bytes:?}");
        assert!(buf.is_empty());
    }
}

/// A HELLO and bytes that break the protocol in one input: the HELLO is an event, the
/// session is already closing when the gateway answers it, and the answer is dropped like a
/// late reply (found by the `session_sequence` fuzz target: `accept` returned
/// `InvalidState { state: Draining }`).
#[test]
fn a_hello_answered_after_bytes_behind_it_closed_the_session_is_dropped() {
    for accept in [true, false] {
        let mut s = Session::new(config(), 0);
        let mut buf = BytesMut::from(&hello().to_bytes().unwrap()[..]);
        buf.extend_from_slice(&[1, 0x7F, 0, 0, 0, 0, 0, 0]);
        s.handle_input(&mut buf, 0);
        let evs = events(&mut s);
        assert!(
            matches!(
                evs[..],
                [
                    Event::Hello { .. },
                    Event::Closed {
                        reason: CloseReason::PROTOCOL_ERROR,
                        by_peer: false
                    }
                ]
            ),
            "{evs:?}"
        );
        assert_eq!(s.state(), State::Draining);
        if accept {
            assert_eq!(s.accept(params(), 0), Ok(()));
        } else {
            assert_eq!(s.reject(CloseReason::AUTH_FAILED, "no", 0), Ok(()));
        }
        assert_eq!(s.state(), State::Draining);
        let frames = sent(&mut s);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(close_reason(&frames), Some(CloseReason::PROTOCOL_ERROR));
    }
    // A refused answer (session id 0) leaves the HELLO unanswered: a late answer after a
    // close is still dropped, not an error.
    let mut s = Session::new(config(), 0);
    s.handle_frame(hello(), 0);
    events(&mut s);
    let zero = WelcomeParams {
        session_id: 0,
        ..params()
    };
    assert!(matches!(s.accept(zero, 0), Err(Error::InvalidValue { .. })));
    s.transport_closed();
    assert_eq!(s.accept(params(), 0), Ok(()));
    assert!(sent(&mut s).is_empty());
    // Answering before any HELLO is still the caller's error.
    let mut s = Session::new(config(), 0);
    assert_eq!(
        s.accept(params(), 0),
        Err(Error::InvalidState {
            action: "accept",
            state: State::Handshaking
        })
    );
}

#[test]
fn partial_input_waits_for_more_bytes() {
    let mut s = Session::new(config(), 0);
    let wire = hello().to_bytes().unwrap();
    let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
    s.handle_input(&mut buf, 0);
    assert_eq!(s.state(), State::Handshaking);
    assert_eq!(buf.len(), wire.len() - 1);
    buf.extend_from_slice(&wire[wire.len() - 1..]);
    s.handle_input(&mut buf, 0);
    assert_eq!(s.state(), State::Authenticating);
}

#[test]
fn closed_is_reported_exactly_once() {
    let mut s = established(config(), 0);
    s.close(CloseReason::GOING_AWAY, "restart", 0);
    s.close(CloseReason::INTERNAL, "again", 0);
    s.handle_timeout(200_000);
    s.transport_closed();
    assert_eq!(
        events(&mut s),
        [Event::Closed {
            reason: CloseReason::GOING_AWAY,
            by_peer: false
        }]
    );
    let mut s = established(config(), 0);
    s.transport_closed();
    s.transport_closed();
    assert_eq!(
        events(&mut s),
        [Event::Closed {
            reason: CloseReason::CONNECTION_LOST,
            by_peer: true
        }]
    );
}

#[test]
fn idle_session_is_small_and_holds_no_heap_memory() {
    assert!(
        core::mem::size_of::<Session>() <= 56,
        "Session grew to {} bytes",
        core::mem::size_of::<Session>()
    );
    let mut s = established(config(), 0);
    s.handle_frame(Frame::Ping { nonce: 1 }, 1);
    s.handle_frame(
        Frame::Sleep {
            interval_ms: 60_000,
        },
        2,
    );
    s.handle_frame(Frame::Wake, 3);
    sent(&mut s);
    events(&mut s);
    assert!(s.out.is_none(), "the drained outbox is released");
    assert!(s.holdback.is_none());
}

#[test]
fn draining_session_still_sees_a_peer_close_in_raw_input() {
    let mut s = established(config(), 0);
    s.close(CloseReason::GOING_AWAY, "", 0);
    sent(&mut s);
    let mut buf = BytesMut::new();
    Frame::Ping { nonce: 1 }.encode(&mut buf).unwrap();
    Frame::Close {
        reason: CloseReason::NORMAL,
        text: String::new(),
    }
    .encode(&mut buf)
    .unwrap();
    s.handle_input(&mut buf, 1);
    assert_eq!(s.state(), State::Closed);
    assert!(sent(&mut s).is_empty(), "no PONG after our CLOSE");
}

#[test]
fn before_welcome_the_handshake_payload_limit_applies() {
    let cfg = Arc::new(SessionConfig {
        max_payload: 200_000,
        ..SessionConfig::default()
    });
    // 70,000 bytes declared: over the handshake limit, under max_payload.
    let header = [1, 1, 0, 0, 0x00, 0x01, 0x11, 0x70];
    let mut s = Session::new(cfg.clone(), 0);
    let mut buf = BytesMut::from(&header[..]);
    s.handle_input(&mut buf, 0);
    assert_eq!(
        close_reason(&sent(&mut s)),
        Some(CloseReason::FRAME_TOO_LARGE)
    );
    // After WELCOME the same declaration is fine (the body is still incomplete).
    let s = established(cfg, 0);
    let mut buf = BytesMut::from(&[1, 0x0B, 0, 0, 0x00, 0x01, 0x11, 0x70][..]);
    assert_eq!(s.next_frame(&mut buf), Ok(None));
    assert_eq!(buf.len(), 8);
}
