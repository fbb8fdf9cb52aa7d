//! `ClientSession::handle_input_with` (frames decoded in place, PUSHes borrowed) against
//! `handle_input` + `poll_event` (owned frames): on any server byte stream, cut into any
//! receives, both give the same events in the same order, the same bytes to send and the
//! same state and stream positions.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ringport_proto::*;

fn config(observe: bool) -> ClientConfig {
    ClientConfig {
        token: Bytes::from_static(b"t"),
        client_info: "props/1".into(),
        observe,
        ..ClientConfig::default()
    }
}

/// A few streams, so pushes hit known positions, resume entries and the inbox.
fn stream() -> impl Strategy<Value = StreamName> {
    prop_oneof![
        Just(StreamName::Room("a".into())),
        Just(StreamName::Room("b".into())),
        Just(StreamName::Room("*".into())),
        Just(StreamName::User("u".into())),
        Just(StreamName::User("v".into())),
    ]
}

fn welcome(session_id: u64, user: bool) -> Frame {
    Frame::Welcome(Welcome {
        session_id,
        epoch: 1,
        inbox_tail: 0,
        broadcast_epoch: 1,
        broadcast_tail: 0,
        heartbeat_interval_ms: 1_000,
        max_sleep_interval_ms: 10_000,
        max_payload: 1_024,
        max_rooms: 8,
        server_time_ms: 0,
        user: if user { "u".into() } else { String::new() },
    })
}

/// Server frames, mostly PUSHes, plus everything else a server sends (and a JOIN, which it
/// must not).
fn server_frame() -> impl Strategy<Value = Frame> {
    let push = (stream(), 1u32..3, 0u64..10, any::<bool>(), "[a-z]{0,8}").prop_map(
        |(stream, epoch, offset, urgent, body)| {
            Frame::Push(Push {
                stream,
                epoch,
                offset,
                urgent,
                payload: Bytes::from(body),
            })
        },
    );
    let outcome = prop_oneof![
        Just(ResumeOutcome::Resumed),
        Just(ResumeOutcome::Gap),
        Just(ResumeOutcome::EpochChanged),
        Just(ResumeOutcome::Refused(Status::NOT_FOUND)),
    ];
    prop_oneof![
        6 => push,
        1 => (1u64..3, any::<bool>()).prop_map(|(id, user)| welcome(id, user)),
        1 => (1u32..4, prop_oneof![Just(Status::OK), Just(Status::NOT_FOUND)], 1u32..3, 0u64..5)
            .prop_map(|(req_id, status, epoch, tail)| Frame::RoomResult(RoomResult {
                req_id,
                status,
                epoch,
                tail,
            })),
        1 => (stream(), outcome, 1u32..3, 1u32..3, 0u64..6, 0u64..8).prop_map(
            |(stream, outcome, old_epoch, new_epoch, from, to)| {
                Frame::ResumeResult(ResumeResult {
                    stream,
                    outcome,
                    old_epoch,
                    new_epoch,
                    missing_from: from,
                    missing_to: to,
                })
            }
        ),
        1 => any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        1 => any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        1 => (1u32..5000).prop_map(|interval_ms| Frame::SleepAck { interval_ms }),
        1 => proptest::collection::vec((stream(), 0u64..10, 0u32..4), 0..3).prop_map(|v| {
            Frame::WakeAck(WakeAck {
                skipped: v
                    .into_iter()
                    .map(|(stream, resume_from, count)| Skipped {
                        stream,
                        resume_from,
                        count,
                    })
                    .collect(),
            })
        }),
        1 => (1u64..5).prop_map(|seq| Frame::PublishAck(PublishAck {
            seq,
            status: Status::OK
        })),
        1 => Just(Frame::Error {
            code: Status::NOT_FOUND,
            text: "no".into()
        }),
        1 => Just(Frame::Close {
            reason: CloseReason::GOING_AWAY,
            text: "bye".into()
        }),
        1 => Just(Frame::Join(RoomRequest {
            req_id: 1,
            room: "a".into()
        })),
    ]
}

/// The encoded frames, maybe with one byte changed (a corrupt stream).
fn wire() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(server_frame(), 0..24),
        proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(frames, corrupt)| {
            let mut w = Vec::new();
            for f in &frames {
                f.encode(&mut w).unwrap();
            }
            if let Some((at, b)) = corrupt {
                if !w.is_empty() {
                    let i = at.index(w.len());
                    w[i] = b;
                }
            }
            w
        })
}

fn transmit(s: &mut ClientSession) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(b) = s.poll_transmit() {
        v.extend_from_slice(&b);
    }
    v
}

/// Two sessions in the same state: JOINs of `a` and `b` queued, and with `resume` a previous
/// connection that got WELCOME and a few pushes, so this one's HELLO carries resume entries.
fn twins(observe: bool, resume: bool) -> (ClientSession, ClientSession) {
    let make = || {
        let mut s = ClientSession::new(config(observe));
        s.join("a", 0).unwrap();
        s.join("b", 0).unwrap();
        s.connect(0);
        if resume {
            let mut first = BytesMut::new();
            for f in [
                welcome(7, true),
                Frame::RoomResult(RoomResult {
                    req_id: 1,
                    status: Status::OK,
                    epoch: 1,
                    tail: 2,
                }),
                Frame::Push(Push {
                    stream: StreamName::Room("a".into()),
                    epoch: 1,
                    offset: 3,
                    urgent: false,
                    payload: Bytes::from_static(b"x"),
                }),
            ] {
                f.encode(&mut first).unwrap();
            }
            s.handle_input(&mut first, 1);
            while s.poll_event().is_some() {}
            s.transport_closed("test");
            while s.poll_event().is_some() {}
            s.connect(2);
        }
        transmit(&mut s);
        s
    };
    (make(), make())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn borrowed_input_behaves_like_owned_input(
        wire in wire(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        observe in any::<bool>(),
        resume in any::<bool>(),
    ) {
        let (mut owned, mut borrowed) = twins(observe, resume);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let (mut buf, mut rest) = (BytesMut::new(), Vec::new());
        let mut last = 0;
        for (n, p) in points.into_iter().enumerate() {
            let chunk = &wire[last..p];
            last = p;
            let now = 10 + n as u64;

            buf.extend_from_slice(chunk);
            owned.handle_input(&mut buf, now);
            let want: Vec<ClientEvent> = std::iter::from_fn(|| owned.poll_event()).collect();

            rest.extend_from_slice(chunk);
            let mut got = Vec::new();
            let used = borrowed.handle_input_with(&rest, now, |e| got.push(e.into_owned()));
            rest.drain(..used);

            prop_assert_eq!(&got, &want);
            prop_assert_eq!(transmit(&mut borrowed), transmit(&mut owned));
            prop_assert_eq!(borrowed.state(), owned.state());
            prop_assert_eq!(borrowed.positions().resume_points(), owned.positions().resume_points());
            prop_assert_eq!(borrowed.poll_timeout(), owned.poll_timeout());
            if owned.state() != ClientState::Disconnected {
                // Unused bytes: the incomplete frame at the end, in both.
                prop_assert_eq!(&rest[..], &buf[..]);
            }
        }
    }
}

/// The borrowed path allocates nothing per PUSH: its events borrow the caller's buffer.
#[test]
fn pushes_borrow_the_input() {
    let (_, mut s) = twins(false, false);
    let mut w = Vec::new();
    welcome(1, false).encode(&mut w).unwrap();
    for offset in 1..=3 {
        Frame::Push(Push {
            stream: StreamName::Room("*".into()),
            epoch: 1,
            offset,
            urgent: false,
            payload: Bytes::from_static(b"payload"),
        })
        .encode(&mut w)
        .unwrap();
    }
    // Half a frame at the end stays unused.
    w.extend_from_slice(&[1, 0x0A, 0, 0]);
    let range = w.as_ptr_range();
    let mut offsets = Vec::new();
    let used = s.handle_input_with(&w, 1, |e| {
        if let ClientEventRef::Message(p) = e {
            assert!(range.contains(&p.payload.as_ptr()));
            assert_eq!(p.stream, StreamRef::Room("*"));
            offsets.push(p.offset);
        }
    });
    assert_eq!(offsets, [1, 2, 3]);
    assert_eq!(used, w.len() - 4);
}
