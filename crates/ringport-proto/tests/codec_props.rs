//! Property tests of the frame codec.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ringport_proto::fuzzing::decode_all;
use ringport_proto::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_]{1,16}",
        // Multi-byte UTF-8 up to the 255-byte limit.
        proptest::collection::vec(any::<char>(), 1..60)
            .prop_map(|v| v.into_iter().collect::<String>())
            .prop_filter("fits u8 length", |s| s.len() <= MAX_NAME_LEN),
    ]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn stream() -> impl Strategy<Value = StreamName> {
    prop_oneof![
        name().prop_map(StreamName::Room),
        name().prop_map(StreamName::User)
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    let resume = (
        1..u64::MAX,
        proptest::collection::vec(
            (stream(), any::<u32>(), any::<u64>()).prop_map(|(stream, epoch, last_offset)| {
                ResumePoint {
                    stream,
                    epoch,
                    last_offset,
                }
            }),
            0..4,
        ),
    )
        .prop_map(|(session_id, streams)| Resume {
            session_id,
            streams,
        });
    let outcome = prop_oneof![
        Just(ResumeOutcome::Resumed),
        Just(ResumeOutcome::Gap),
        Just(ResumeOutcome::EpochChanged),
        (1..=u16::MAX).prop_map(|s| ResumeOutcome::Refused(Status(s)))
    ];
    prop_oneof![
        (blob(), text(), proptest::option::of(resume)).prop_map(|(token, client_info, resume)| {
            Frame::Hello(Hello {
                token,
                client_info,
                resume,
            })
        }),
        (
            any::<(u64, u32, u64, u32, u32, u32, u16, u64)>(),
            any::<(u32, u64)>(),
            prop_oneof![Just(String::new()), name()]
        )
            .prop_map(|(t, b, user)| Frame::Welcome(Welcome {
                session_id: t.0,
                epoch: t.1,
                inbox_tail: t.2,
                broadcast_epoch: b.0,
                broadcast_tail: b.1,
                heartbeat_interval_ms: t.3,
                max_sleep_interval_ms: t.4,
                max_payload: t.5,
                max_rooms: t.6,
                server_time_ms: t.7,
                user,
            })),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        (any::<u32>(), name()).prop_map(|(req_id, room)| Frame::Join(RoomRequest { req_id, room })),
        (any::<u32>(), name())
            .prop_map(|(req_id, room)| Frame::Leave(RoomRequest { req_id, room })),
        (any::<u32>(), any::<u16>(), any::<u32>(), any::<u64>()).prop_map(
            |(req_id, s, epoch, tail)| Frame::RoomResult(RoomResult {
                req_id,
                status: Status(s),
                epoch,
                tail,
            })
        ),
        (name(), any::<u64>(), blob()).prop_map(|(room, seq, payload)| Frame::Publish(Publish {
            room,
            seq,
            payload
        })),
        (any::<u64>(), any::<u16>()).prop_map(|(seq, s)| Frame::PublishAck(PublishAck {
            seq,
            status: Status(s)
        })),
        (stream(), any::<u32>(), any::<u64>(), any::<bool>(), blob()).prop_map(
            |(stream, epoch, offset, urgent, payload)| Frame::Push(Push {
                stream,
                epoch,
                offset,
                urgent,
                payload
            })
        ),
        (stream(), any::<u64>()).prop_map(|(stream, offset)| Frame::Ack(Ack { stream, offset })),
        (stream(), outcome, any::<(u32, u32, u64, u64)>()).prop_map(|(stream, outcome, t)| {
            Frame::ResumeResult(ResumeResult {
                stream,
                outcome,
                old_epoch: t.0,
                new_epoch: t.1,
                missing_from: t.2,
                missing_to: t.3,
            })
        }),
        any::<u32>().prop_map(|interval_ms| Frame::Sleep { interval_ms }),
        any::<u32>().prop_map(|interval_ms| Frame::SleepAck { interval_ms }),
        Just(Frame::Wake),
        proptest::collection::vec(
            (stream(), any::<u64>(), any::<u32>()).prop_map(|(stream, resume_from, count)| {
                Skipped {
                    stream,
                    resume_from,
                    count,
                }
            }),
            0..4
        )
        .prop_map(|skipped| Frame::WakeAck(WakeAck { skipped })),
        (any::<u16>(), text()).prop_map(|(c, text)| Frame::Error {
            code: Status(c),
            text
        }),
        (any::<u16>(), text()).prop_map(|(r, text)| Frame::Close {
            reason: CloseReason(r),
            text
        }),
    ]
}

proptest! {
    /// RESUME_RESULT's status is OK exactly for RESUMED/GAP/EPOCH_CHANGED and
    /// a non-OK reason for REFUSED; every other pairing is a protocol error.
    #[test]
    fn resume_result_outcome_and_status_must_agree(code in any::<u8>(), status in any::<u16>()) {
        let f = Frame::ResumeResult(ResumeResult {
            stream: StreamName::Room("a".into()),
            outcome: ResumeOutcome::Resumed,
            old_epoch: 1,
            new_epoch: 1,
            missing_from: 0,
            missing_to: 0,
        });
        let mut buf = BytesMut::new();
        f.encode(&mut buf).unwrap();
        // Header (8), stream kind, length and "a" (3): outcome, then status.
        buf[11] = code;
        buf[12..14].copy_from_slice(&status.to_be_bytes());
        let valid = (code <= 2 && status == 0) || (code == 3 && status != 0);
        let decoded = Decoder::new(u32::MAX).decode(&mut buf);
        prop_assert_eq!(decoded.is_ok(), valid, "{:?}", decoded);
        if let Ok(Some(Frame::ResumeResult(r))) = decoded {
            prop_assert_eq!(r.outcome.code(), code);
            prop_assert_eq!(r.outcome.status(), Status(status));
        }
    }

    #[test]
    fn every_frame_round_trips(f in frame()) {
        let mut buf = BytesMut::new();
        f.encode(&mut buf).unwrap();
        prop_assert_eq!(buf.len(), f.encoded_len().unwrap());
        // Vec<u8> output is byte-identical to BytesMut output.
        let mut v = Vec::new();
        f.encode(&mut v).unwrap();
        prop_assert_eq!(&v[..], &buf[..]);
        prop_assert_eq!(&f.to_bytes().unwrap()[..], &buf[..]);
        let decoded = Decoder::new(u32::MAX).decode(&mut buf).unwrap();
        prop_assert_eq!(decoded, Some(f));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frame_sequences_split_anywhere_decode_the_same(
        frames in proptest::collection::vec(frame(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&wire[last..p]);
            last = p;
        }
        chunks.push(&wire[last..]);
        let d = Decoder::new(u32::MAX);
        let (got, err) = decode_all(d, &chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_split_anywhere_decode_like_one_shot(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
    ) {
        let d = Decoder::new(256);
        let p = cut.index(data.len() + 1);
        prop_assert_eq!(decode_all(d, &[&data]), decode_all(d, &[&data[..p], &data[p..]]));
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        op in 1u8..=0x12,
        flags in prop_oneof![Just(0u16), Just(1u16), any::<u16>()],
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        // Random bodies rarely get past a random header; force a valid one.
        let mut wire = vec![1, op];
        wire.extend_from_slice(&flags.to_be_bytes());
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(&body);
        let _ = Decoder::default().decode_slice(&wire);
        ringport_proto::fuzzing::decode_frames(&wire);
    }
}

/// What [`Decoder::view`] and [`FrameView::push`] / [`FrameView::to_frame`] make of `data`,
/// frame by frame, in the owning decoder's terms: the frames (a PUSH through its borrowed
/// form and back) and the error that stopped it.
fn view_all(d: Decoder, data: &[u8]) -> (Vec<Frame>, Option<Error>) {
    let (mut frames, mut at) = (Vec::new(), 0);
    loop {
        let view = match d.view(&data[at..]) {
            Ok(Some(v)) => v,
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        };
        at += view.len();
        let frame = match view.push() {
            Some(p) => p.map(|p| Frame::Push(p.to_owned())),
            None => view.to_frame(),
        };
        // The owning decode of the same view agrees, for every op.
        assert_eq!(frame, view.to_frame());
        match frame {
            Ok(f) => frames.push(f),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// Bytes that are mostly valid PUSH frames, some with a corrupted byte or cut short.
fn push_heavy_wire() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(
            (stream(), any::<u32>(), any::<u64>(), any::<bool>(), blob()),
            0..6,
        ),
        proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(pushes, corrupt, cut)| {
            let mut wire = Vec::new();
            for (stream, epoch, offset, urgent, payload) in pushes {
                Frame::Push(Push {
                    stream,
                    epoch,
                    offset,
                    urgent,
                    payload,
                })
                .encode(&mut wire)
                .unwrap();
            }
            if let Some((at, b)) = corrupt {
                if !wire.is_empty() {
                    let i = at.index(wire.len());
                    wire[i] = b;
                }
            }
            let keep = wire.len() - cut.index(wire.len() / 8 + 1);
            wire.truncate(keep);
            wire
        })
}

proptest! {
    /// The borrowed decode (view, PUSH in place) and the owning decoder agree on every input:
    /// the same frames, the same error, the same point where more bytes are needed.
    #[test]
    fn view_decodes_like_the_owning_decoder(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            push_heavy_wire(),
            proptest::collection::vec(frame(), 0..6).prop_map(|fs| {
                let mut w = Vec::new();
                fs.iter().for_each(|f| f.encode(&mut w).unwrap());
                w
            }),
        ],
        max in prop_oneof![Just(64u32), Just(u32::MAX)],
    ) {
        let d = Decoder::new(max);
        prop_assert_eq!(view_all(d, &data), decode_all(d, &[&data]));
    }

    /// A PUSH's borrowed form round-trips through the owning one.
    #[test]
    fn push_ref_and_push_convert_both_ways(
        (stream, epoch, offset, urgent, payload)
            in (stream(), any::<u32>(), any::<u64>(), any::<bool>(), blob()),
    ) {
        let p = Push { stream, epoch, offset, urgent, payload };
        prop_assert_eq!(p.as_ref().to_owned(), p.clone());
        prop_assert_eq!(p.as_ref().stream, p.stream.as_ref());
        prop_assert!(p.stream == p.as_ref().stream);
        prop_assert_eq!(p.as_ref().stream.to_string(), p.stream.to_string());
    }
}

#[test]
fn view_waits_for_the_whole_frame_and_borrows_it() {
    let push = Frame::Push(Push {
        stream: StreamName::User("u1".into()),
        epoch: 3,
        offset: 42,
        urgent: true,
        payload: Bytes::from_static(b"hello"),
    });
    let wire = push.to_bytes().unwrap();
    let d = Decoder::default();
    for cut in 0..wire.len() {
        assert_eq!(d.view(&wire[..cut]), Ok(None), "{cut} bytes");
    }
    let v = d.view(&wire).unwrap().unwrap();
    assert_eq!(v.len(), wire.len());
    let p = v.push().unwrap().unwrap();
    assert_eq!(p.stream, StreamRef::User("u1"));
    assert_eq!((p.epoch, p.offset, p.urgent), (3, 42, true));
    // Name and payload are slices of the input, not copies.
    assert!(wire.as_ptr_range().contains(&p.payload.as_ptr()));
    assert!(wire.as_ptr_range().contains(&p.stream.name().as_ptr()));
    assert_eq!(Frame::Push(p.to_owned()), push);
    assert!(Decoder::default()
        .view(&Frame::Ping { nonce: 1 }.to_bytes().unwrap())
        .unwrap()
        .unwrap()
        .push()
        .is_none());
}

#[test]
fn oversized_length_is_rejected_from_the_header_alone() {
    let d = Decoder::new(1_000);
    // Only the header has arrived; the body never will.
    let mut buf = BytesMut::from(&[1u8, 0x0A, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(Error::FrameTooLarge {
            declared: u32::MAX,
            max: 1_000
        })
    );
    assert_eq!(buf.capacity(), 8, "no allocation from the declared length");
    // Exactly the maximum is allowed (and incomplete until the body arrives).
    let mut buf = BytesMut::from(&[1u8, 0x0A, 0, 0, 0, 0, 0x03, 0xE8][..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
}

#[test]
fn header_errors_name_their_cause() {
    let d = Decoder::default();
    let cases: [(&[u8], Error); 5] = [
        (&[9, 1, 0, 0, 0, 0, 0, 0], Error::BadVersion { found: 9 }),
        (&[1, 0, 0, 0, 0, 0, 0, 0], Error::UnknownOp { op: 0 }),
        (&[1, 0x13, 0, 0, 0, 0, 0, 0], Error::UnknownOp { op: 0x13 }),
        (
            &[1, 3, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0],
            Error::ReservedFlags {
                op: Op::Ping,
                flags: 1,
            },
        ),
        (
            &[1, 3, 0, 0, 0, 0, 0, 2, 0, 0],
            Error::Truncated {
                op: Op::Ping,
                field: "nonce",
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(d.decode_slice(bytes).map(|_| ()), Err(want));
    }
    assert_eq!(
        d.decode_slice(&[1, 0x0F, 0, 0, 0, 0, 0, 1, 0]).map(|_| ()),
        Err(Error::TrailingBytes {
            op: Op::Wake,
            extra: 1
        })
    );
    // JOIN with a 1-byte invalid UTF-8 name.
    assert_eq!(
        d.decode_slice(&[1, 5, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1, 1, 0xFF])
            .map(|_| ()),
        Err(Error::InvalidUtf8 { field: "room" })
    );
    // JOIN with an empty name.
    assert_eq!(
        d.decode_slice(&[1, 5, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0])
            .map(|_| ()),
        Err(Error::EmptyName { field: "room" })
    );
}

#[test]
fn unencodable_fields_are_errors_not_truncation() {
    let f = Frame::Join(RoomRequest {
        req_id: 1,
        room: "x".repeat(256),
    });
    let mut v = Vec::new();
    assert_eq!(
        f.encode(&mut v),
        Err(Error::FieldTooLong {
            field: "room",
            len: 256,
            max: 255
        })
    );
    assert!(v.is_empty(), "nothing written on error");
}

#[test]
fn resume_count_is_not_trusted_for_allocation() {
    // HELLO claiming 65535 resume entries but carrying none.
    let body = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF];
    let mut wire = vec![1, 1, 0, 0, 0, 0, 0, body.len() as u8];
    wire.extend_from_slice(&body);
    assert_eq!(
        Decoder::default().decode_slice(&wire).map(|_| ()),
        Err(Error::Truncated {
            op: Op::Hello,
            field: "stream kind"
        })
    );
}

#[test]
fn refused_with_ok_status_is_not_encodable() {
    let f = Frame::ResumeResult(ResumeResult {
        stream: StreamName::Room("a".into()),
        outcome: ResumeOutcome::Refused(Status::OK),
        old_epoch: 1,
        new_epoch: 1,
        missing_from: 0,
        missing_to: 0,
    });
    assert!(f.encoded_len().is_err());
    assert!(f.encode(&mut BytesMut::new()).is_err());
}
