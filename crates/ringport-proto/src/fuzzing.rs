//! Fuzz target bodies, shared by `fuzz/` (cargo-fuzz, run by CI's fuzz smoke step) and by
//! a proptest in `tests/fuzz_bodies.rs`, so `cargo test` exercises them too.
//!
//! Each body panics only if an invariant breaks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::{
    CloseReason, Decoder, Event, Frame, Hello, Publish, PushClass, RoomRequest, Session,
    SessionConfig, State, Status, StreamName, WelcomeParams,
};

/// Decodes `data` as a frame stream three ways (one-shot, split at a point
/// chosen by the input, byte by byte) and checks they agree; re-encodes every
/// decoded frame and checks it decodes to itself.
pub fn decode_frames(data: &[u8]) {
    let decoder = Decoder::new(1024);
    let whole = decode_all(decoder, &[data]);
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(split);
    assert_eq!(whole, decode_all(decoder, &[a, b]), "split at {split}");
    let bytewise: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(whole, decode_all(decoder, &bytewise), "byte by byte");
    for frame in whole.0 {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf).expect("decoded frame re-encodes");
        let again = Decoder::new(u32::MAX).decode(&mut buf).expect("re-decodes");
        assert_eq!(again.as_ref(), Some(&frame));
        assert!(buf.is_empty());
    }
}

type Decoded = (Vec<Frame>, Option<crate::Error>);

/// Feeds `chunks` one at a time, decoding as much as possible after each.
pub fn decode_all(decoder: Decoder, chunks: &[&[u8]]) -> Decoded {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Interprets `data` as a script of client frames, raw bytes, clock steps
/// and gateway decisions, and checks the session's invariants: every frame it
/// emits decodes, `Closed` is reported at most once, a closed session emits
/// nothing new, and deadlines are never in the past after `handle_timeout`.
pub fn session_sequence(data: &[u8]) {
    let config = Arc::new(SessionConfig {
        heartbeat_interval_ms: 1_000,
        max_sleep_interval_ms: 5_000,
        handshake_timeout_ms: 3_000,
        sleep_holdback_frames: 3,
        drain_timeout_ms: 500,
        max_payload: 512,
        ..SessionConfig::default()
    });
    let mut now = 0u64;
    let mut s = Session::new(config, now);
    let mut input = BytesMut::new();
    let mut closed_events = 0;
    let mut next_offset = 0u64;
    let mut it = data.iter().copied();
    while let Some(cmd) = it.next() {
        let arg = it.next().unwrap_or(0);
        match cmd % 8 {
            0 => {
                let n = usize::from(arg % 32);
                let raw: Vec<u8> = it.by_ref().take(n).collect();
                input.extend_from_slice(&raw);
                s.handle_input(&mut input, now);
            }
            1 => {
                now += u64::from(arg) * 50;
                s.handle_timeout(now);
                if let Some(t) = s.poll_timeout() {
                    assert!(t > now || s.state() == State::Closed, "stale deadline");
                }
            }
            2 | 3 => s.handle_frame(scripted_frame(arg), now),
            4 => {
                let class =
                    [PushClass::Room, PushClass::Direct, PushClass::Urgent][usize::from(arg % 3)];
                next_offset += 1;
                let stream = StreamName::Room(format!("r{}", arg % 4));
                let frame = Frame::Push(crate::Push {
                    stream: stream.clone(),
                    epoch: 1,
                    offset: next_offset,
                    urgent: class == PushClass::Urgent,
                    payload: Bytes::from_static(b"x"),
                });
                let bytes = frame.to_bytes().expect("push encodes");
                let _ = s.offer_push(class, &stream, next_offset, bytes);
            }
            5 => s.close(CloseReason::GOING_AWAY, "bye", now),
            6 => s.transport_closed(),
            _ => {}
        }
        // The gateway: answer every event, drain every transmit.
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Hello { .. } if arg % 5 == 0 => {
                    s.reject(CloseReason::AUTH_FAILED, "no", now).unwrap();
                }
                Event::Hello { .. } => {
                    let p = WelcomeParams {
                        session_id: 7,
                        epoch: 1,
                        inbox_tail: 0,
                        broadcast_epoch: 1,
                        broadcast_tail: 0,
                        user: String::new(),
                        server_time_ms: 0,
                    };
                    s.accept(p, now).unwrap();
                }
                Event::Join { req_id, .. } | Event::Leave { req_id, .. } => {
                    s.reply_room(req_id, Status::OK, Some((1, u64::from(arg))))
                        .unwrap();
                }
                Event::Publish { seq, .. } => s.reply_publish(seq, Status::OK).unwrap(),
                Event::Closed { .. } => closed_events += 1,
                _ => {}
            }
        }
        while let Some(out) = s.poll_transmit() {
            let mut b = BytesMut::from(&out[..]);
            let f = Decoder::new(u32::MAX).decode(&mut b);
            assert!(matches!(f, Ok(Some(_))) && b.is_empty(), "bad output frame");
        }
        assert!(closed_events <= 1, "Closed reported twice");
        if s.state() == State::Closed {
            assert_eq!(closed_events, 1, "closed without an event");
        }
    }
}

/// A HELLO with resume entries, two ways: `data` taken as a HELLO payload behind a valid
/// header, and a HELLO built from `data` (entry count, stream kinds and names, epochs and
/// offsets, duplicates included). Either must decode through the handshake decoder without
/// panicking; one that decodes re-encodes to the same frame and reaches the gateway as one
/// `Event::Hello` carrying exactly its entries. One over 64 KiB must be refused as too large
/// before any of its payload is needed.
pub fn hello_resume(data: &[u8]) {
    use crate::{Resume, ResumePoint, HANDSHAKE_MAX_PAYLOAD, HEADER_LEN, VERSION};
    let handshake = Decoder::new(u32::MAX).handshake();
    // 1. Raw bytes as a HELLO payload.
    let mut raw = BytesMut::new();
    raw.extend_from_slice(&[VERSION, crate::Op::Hello as u8, 0, 0]);
    raw.extend_from_slice(&(data.len() as u32).to_be_bytes());
    raw.extend_from_slice(data);
    if let Ok(Some(frame)) = handshake.decode(&mut raw) {
        let again = frame.to_bytes().expect("a decoded HELLO re-encodes");
        let mut b = BytesMut::from(&again[..]);
        assert_eq!(
            handshake.decode(&mut b).ok().flatten().as_ref(),
            Some(&frame)
        );
    }
    // 2. A HELLO built from the input.
    let mut it = data.iter().copied();
    let mut next = || it.next().unwrap_or(0);
    let entries = usize::from(next()) * 8 + usize::from(next() % 8);
    let mut streams = Vec::with_capacity(entries);
    for _ in 0..entries {
        let kind = next();
        let len = 1 + usize::from(next() % 40);
        let name: String = (0..len).map(|_| char::from(b'a' + next() % 26)).collect();
        let stream = match kind % 3 {
            0 => StreamName::Room(name),
            1 => StreamName::Room("*".into()),
            _ => StreamName::User(name),
        };
        streams.push(ResumePoint {
            stream,
            epoch: u32::from(next()),
            last_offset: u64::from(next()) << (next() % 56),
        });
    }
    let hello = Frame::Hello(Hello {
        token: Bytes::from(vec![b't'; usize::from(next())]),
        client_info: String::new(),
        resume: Some(Resume {
            session_id: u64::from(next()).max(1),
            streams: streams.clone(),
        }),
    });
    let Ok(bytes) = hello.to_bytes() else {
        return;
    };
    let too_large = bytes.len() - HEADER_LEN > HANDSHAKE_MAX_PAYLOAD as usize;
    let mut header_only = BytesMut::from(&bytes[..HEADER_LEN]);
    let refused = matches!(
        handshake.decode(&mut header_only),
        Err(crate::Error::FrameTooLarge { .. })
    );
    assert_eq!(refused, too_large, "size check on the header alone");
    if too_large {
        return;
    }
    let mut s = Session::new(Arc::new(SessionConfig::default()), 0);
    let mut input = BytesMut::from(&bytes[..]);
    s.handle_input(&mut input, 0);
    match s.poll_event() {
        Some(Event::Hello {
            resume: Some(r), ..
        }) => assert_eq!(r.streams, streams, "every entry reaches the gateway"),
        other => panic!("a valid HELLO gave {other:?}"),
    }
}

fn scripted_frame(arg: u8) -> Frame {
    let room = format!("r{}", arg % 4);
    match arg % 12 {
        0 | 1 => Frame::Hello(Hello {
            token: Bytes::from_static(b"t"),
            client_info: String::new(),
            resume: None,
        }),
        2 => Frame::Ping { nonce: arg.into() },
        3 => Frame::Join(RoomRequest {
            req_id: arg.into(),
            room,
        }),
        4 => Frame::Leave(RoomRequest {
            req_id: arg.into(),
            room,
        }),
        5 => Frame::Publish(Publish {
            room,
            seq: arg.into(),
            payload: Bytes::new(),
        }),
        6 => Frame::Ack(crate::Ack {
            stream: StreamName::User("u".into()),
            offset: arg.into(),
        }),
        7 => Frame::Sleep {
            interval_ms: u32::from(arg) * 100,
        },
        8 => Frame::Wake,
        9 => Frame::Close {
            reason: CloseReason::NORMAL,
            text: String::new(),
        },
        10 => Frame::Pong { nonce: 0 },
        _ => Frame::SleepAck { interval_ms: 1 },
    }
}

/// One realistic frame per op, in op-code order. The hex examples in
/// `docs/protocol.md` are these frames (see `tests/spec_examples.rs`).
pub fn sample_frames() -> Vec<Frame> {
    use crate::{
        Ack, PublishAck, Push, Resume, ResumeOutcome, ResumePoint, ResumeResult, RoomResult,
        Skipped, WakeAck, Welcome,
    };
    let lobby = StreamName::Room("lobby".into());
    let inbox = StreamName::User("u42".into());
    vec![
        Frame::Hello(Hello {
            token: Bytes::from_static(b"tok"),
            client_info: "sdk/1".into(),
            resume: Some(Resume {
                session_id: 7,
                streams: vec![ResumePoint {
                    stream: inbox.clone(),
                    epoch: 1,
                    last_offset: 41,
                }],
            }),
        }),
        Frame::Welcome(Welcome {
            session_id: 7,
            epoch: 1,
            inbox_tail: 41,
            broadcast_epoch: 1,
            broadcast_tail: 12,
            heartbeat_interval_ms: 30_000,
            max_sleep_interval_ms: 300_000,
            max_payload: 65_536,
            max_rooms: 64,
            server_time_ms: 1_700_000_000_000,
            user: "u42".into(),
        }),
        Frame::Ping { nonce: 1 },
        Frame::Pong { nonce: 1 },
        Frame::Join(RoomRequest {
            req_id: 1,
            room: "lobby".into(),
        }),
        Frame::Leave(RoomRequest {
            req_id: 2,
            room: "lobby".into(),
        }),
        Frame::RoomResult(RoomResult {
            req_id: 1,
            status: Status::OK,
            epoch: 1,
            tail: 99,
        }),
        Frame::Publish(Publish {
            room: "lobby".into(),
            seq: 5,
            payload: Bytes::from_static(b"hi"),
        }),
        Frame::PublishAck(PublishAck {
            seq: 5,
            status: Status::OK,
        }),
        Frame::Push(Push {
            stream: lobby.clone(),
            epoch: 1,
            offset: 100,
            urgent: true,
            payload: Bytes::from_static(b"hi"),
        }),
        Frame::Ack(Ack {
            stream: inbox.clone(),
            offset: 42,
        }),
        Frame::ResumeResult(ResumeResult {
            stream: inbox,
            outcome: ResumeOutcome::Gap,
            old_epoch: 1,
            new_epoch: 1,
            missing_from: 42,
            missing_to: 50,
        }),
        Frame::Sleep {
            interval_ms: 120_000,
        },
        Frame::SleepAck {
            interval_ms: 120_000,
        },
        Frame::Wake,
        Frame::WakeAck(WakeAck {
            skipped: vec![Skipped {
                stream: lobby,
                resume_from: 164,
                count: 3,
            }],
        }),
        Frame::Error {
            code: Status::RATE_LIMITED,
            text: "slow".into(),
        },
        Frame::Close {
            reason: CloseReason::HEARTBEAT_TIMEOUT,
            text: "heartbeat timeout".into(),
        },
    ]
}
