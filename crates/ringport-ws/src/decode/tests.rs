//! One test per RFC 6455 §5 rule (section numbers in the names), then incremental input.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::encode::{encode_frame, encode_header};

const MASK: [u8; 4] = [0xa1, 0x02, 0x7c, 0xff];

fn server() -> Decoder {
    Decoder::new(Role::Server, 1 << 20)
}

/// A masked client frame.
fn frame(op: OpCode, fin: bool, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    encode_frame(op, fin, payload, Some(MASK), &mut b);
    b
}

/// Everything `d` yields from `buf`, up to the first error.
fn drain(d: &mut Decoder, buf: &mut BytesMut) -> Result<Vec<Incoming>, Error> {
    let mut out = Vec::new();
    while let Some(i) = d.next(buf)? {
        out.push(i);
    }
    Ok(out)
}

fn data(payload: &[u8], end: bool) -> Incoming {
    Incoming::Data {
        payload: BytesMut::from(payload),
        end,
    }
}

#[test]
fn s5_1_server_refuses_unmasked_client_frames() {
    let mut b = BytesMut::new();
    encode_frame(OpCode::Binary, true, b"hi", None, &mut b);
    let e = server().next(&mut b).unwrap_err();
    assert_eq!(e, Error::Unmasked);
    assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn s5_1_client_refuses_masked_server_frames() {
    let mut b = frame(OpCode::Binary, true, b"hi");
    let mut d = Decoder::new(Role::Client, 1024);
    assert_eq!(d.next(&mut b).unwrap_err(), Error::Masked);
    let mut b = BytesMut::new();
    encode_frame(OpCode::Binary, true, b"hi", None, &mut b);
    let mut d = Decoder::new(Role::Client, 1024);
    assert_eq!(d.next(&mut b).unwrap(), Some(data(b"hi", true)));
}

#[test]
fn s5_2_reserved_bits_are_refused() {
    for rsv in [0x40u8, 0x20, 0x10, 0x70] {
        let mut b = frame(OpCode::Binary, true, b"x");
        b[0] |= rsv;
        let e = server().next(&mut b).unwrap_err();
        assert_eq!(e, Error::ReservedBits(rsv >> 4));
        assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn s5_2_reserved_opcodes_are_refused() {
    for op in (0x3u8..=0x7).chain(0xB..=0xF) {
        let mut b = frame(OpCode::Binary, true, b"");
        b[0] = 0x80 | op;
        assert_eq!(server().next(&mut b).unwrap_err(), Error::UnknownOpcode(op));
    }
}

#[test]
fn s5_2_payload_lengths_7_16_and_64_bit() {
    for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
        let payload = vec![0x5a; len];
        let mut b = frame(OpCode::Binary, true, &payload);
        let items = drain(&mut server(), &mut b).unwrap();
        let got: Vec<u8> = items
            .iter()
            .flat_map(|i| match i {
                Incoming::Data { payload, .. } => payload.to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, payload, "len {len}");
        assert!(matches!(
            items.last(),
            Some(Incoming::Data { end: true, .. })
        ));
        assert!(b.is_empty());
    }
}

#[test]
fn s5_2_lengths_must_be_minimally_encoded() {
    // 16-bit form for 125 bytes.
    let mut b = BytesMut::from(&[0x82u8, 0x80 | 126, 0, 125][..]);
    b.extend_from_slice(&MASK);
    assert_eq!(server().next(&mut b).unwrap_err(), Error::NonMinimalLength);
    // 64-bit form for 65,535 bytes.
    let mut b = BytesMut::from(&[0x82u8, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff][..]);
    b.extend_from_slice(&MASK);
    assert_eq!(server().next(&mut b).unwrap_err(), Error::NonMinimalLength);
}

#[test]
fn s5_2_64_bit_length_with_top_bit_is_refused() {
    let mut b = BytesMut::from(&[0x82u8, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0][..]);
    b.extend_from_slice(&MASK);
    assert_eq!(server().next(&mut b).unwrap_err(), Error::LengthOverflow);
}

#[test]
fn s5_3_payload_is_unmasked_also_when_it_arrives_in_pieces() {
    let whole = frame(OpCode::Binary, true, b"masked payload bytes");
    let mut d = server();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in whole.iter() {
        buf.extend_from_slice(&[*byte]);
        while let Some(Incoming::Data { payload, .. }) = d.next(&mut buf).unwrap() {
            got.extend_from_slice(&payload);
        }
    }
    assert_eq!(got, b"masked payload bytes");
}

#[test]
fn s5_4_fragments_form_one_message() {
    let mut b = frame(OpCode::Binary, false, b"ab");
    b.extend_from_slice(&frame(OpCode::Continuation, false, b""));
    b.extend_from_slice(&frame(OpCode::Continuation, false, b"cd"));
    b.extend_from_slice(&frame(OpCode::Continuation, true, b"e"));
    let items = drain(&mut server(), &mut b).unwrap();
    assert_eq!(
        items,
        [data(b"ab", false), data(b"cd", false), data(b"e", true)]
    );
}

#[test]
fn s5_4_continuation_without_a_message_is_refused() {
    let mut b = frame(OpCode::Continuation, true, b"x");
    assert_eq!(
        server().next(&mut b).unwrap_err(),
        Error::UnexpectedContinuation
    );
    // Also after a complete message.
    let mut b = frame(OpCode::Binary, true, b"x");
    b.extend_from_slice(&frame(OpCode::Continuation, true, b"y"));
    let mut d = server();
    assert_eq!(d.next(&mut b).unwrap(), Some(data(b"x", true)));
    assert_eq!(d.next(&mut b).unwrap_err(), Error::UnexpectedContinuation);
}

#[test]
fn s5_4_new_message_inside_a_fragmented_one_is_refused() {
    let mut b = frame(OpCode::Binary, false, b"x");
    b.extend_from_slice(&frame(OpCode::Binary, true, b"y"));
    let mut d = server();
    assert_eq!(d.next(&mut b).unwrap(), Some(data(b"x", false)));
    assert_eq!(d.next(&mut b).unwrap_err(), Error::ExpectedContinuation);
}

#[test]
fn s5_4_control_frames_interleave_with_fragments() {
    let mut b = frame(OpCode::Binary, false, b"ab");
    b.extend_from_slice(&frame(OpCode::Ping, true, b"p1"));
    b.extend_from_slice(&frame(OpCode::Pong, true, b""));
    b.extend_from_slice(&frame(OpCode::Continuation, true, b"cd"));
    let items = drain(&mut server(), &mut b).unwrap();
    assert_eq!(
        items,
        [
            data(b"ab", false),
            Incoming::Ping(Bytes::from_static(b"p1")),
            Incoming::Pong(Bytes::new()),
            data(b"cd", true),
        ]
    );
}

#[test]
fn s5_5_control_frames_must_not_be_fragmented() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let mut b = frame(op, false, b"");
        assert_eq!(server().next(&mut b).unwrap_err(), Error::FragmentedControl);
    }
}

#[test]
fn s5_5_control_payload_at_most_125_bytes() {
    let mut b = frame(OpCode::Ping, true, &[1; 125]);
    assert!(matches!(server().next(&mut b), Ok(Some(Incoming::Ping(p))) if p.len() == 125));
    let mut b = frame(OpCode::Ping, true, &[1; 126]);
    assert_eq!(
        server().next(&mut b).unwrap_err(),
        Error::ControlTooLong(126)
    );
    // Refused from the two-byte header, before the rest arrives.
    let mut b = BytesMut::from(&[0x89u8, 0x80 | 127][..]);
    assert_eq!(
        server().next(&mut b).unwrap_err(),
        Error::ControlTooLong(127)
    );
}

#[test]
fn s5_5_1_close_bodies() {
    let mut b = frame(OpCode::Close, true, b"");
    assert_eq!(server().next(&mut b).unwrap(), Some(Incoming::Close(None)));

    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice("bye ✓".as_bytes());
    let mut b = frame(OpCode::Close, true, &body);
    assert_eq!(
        server().next(&mut b).unwrap(),
        Some(Incoming::Close(Some(CloseFrame {
            code: CloseCode::NORMAL,
            reason: "bye ✓".into()
        })))
    );

    let mut b = frame(OpCode::Close, true, &[3]);
    assert_eq!(server().next(&mut b).unwrap_err(), Error::BadClosePayload);
}

#[test]
fn s5_5_1_close_reason_must_be_utf8() {
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(&[0xce, 0xba, 0xff, 0xfe]);
    let mut b = frame(OpCode::Close, true, &body);
    let e = server().next(&mut b).unwrap_err();
    assert_eq!(e, Error::BadUtf8);
    assert_eq!(e.close_code(), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn s5_5_1_close_codes_7_4() {
    for (code, ok) in [
        (999u16, false),
        (1000, true),
        (1003, true),
        (1004, false),
        (1005, false),
        (1006, false),
        (1007, true),
        (1011, true),
        (1015, false),
        (1016, false),
        (2999, false),
        (3000, true),
        (4999, true),
        (5000, false),
    ] {
        let mut b = frame(OpCode::Close, true, &code.to_be_bytes());
        let r = server().next(&mut b);
        if ok {
            assert!(matches!(r, Ok(Some(Incoming::Close(Some(_))))), "{code}");
        } else {
            assert_eq!(r.unwrap_err(), Error::InvalidCloseCode(code));
        }
    }
}

#[test]
fn s5_5_1_nothing_is_decoded_after_close() {
    let mut b = frame(OpCode::Close, true, b"");
    b.extend_from_slice(&frame(OpCode::Binary, true, b"late"));
    let mut d = server();
    assert_eq!(d.next(&mut b).unwrap(), Some(Incoming::Close(None)));
    assert!(d.is_done());
    assert_eq!(d.next(&mut b).unwrap(), None);
}

#[test]
fn s5_5_2_and_5_5_3_ping_and_pong_carry_their_payload() {
    let mut b = frame(OpCode::Ping, true, b"app data");
    b.extend_from_slice(&frame(OpCode::Pong, true, b"unsolicited"));
    let items = drain(&mut server(), &mut b).unwrap();
    assert_eq!(
        items,
        [
            Incoming::Ping(Bytes::from_static(b"app data")),
            Incoming::Pong(Bytes::from_static(b"unsolicited")),
        ]
    );
}

#[test]
fn s5_6_text_messages_are_refused_with_1003() {
    let mut b = frame(OpCode::Text, true, b"{}");
    let e = server().next(&mut b).unwrap_err();
    assert_eq!(e, Error::TextMessage);
    assert_eq!(e.close_code(), CloseCode::UNSUPPORTED_DATA);
}

#[test]
fn oversized_message_is_refused_from_the_header_before_buffering() {
    let mut d = Decoder::new(Role::Server, 100);
    // Only the header of a 1 MiB frame has arrived.
    let h = encode_header(OpCode::Binary, true, 1 << 20, Some(MASK));
    let mut b = BytesMut::from(h.as_slice());
    let e = d.next(&mut b).unwrap_err();
    assert_eq!(
        e,
        Error::MessageTooBig {
            declared: 1 << 20,
            max: 100
        }
    );
    assert_eq!(e.close_code(), CloseCode::MESSAGE_TOO_BIG);
    // Fragments add up: 60 + 60 > 100.
    let mut d = Decoder::new(Role::Server, 100);
    let mut b = frame(OpCode::Binary, false, &[0; 60]);
    b.extend_from_slice(&frame(OpCode::Continuation, true, &[0; 60]));
    assert!(d.next(&mut b).is_ok());
    assert!(matches!(
        d.next(&mut b),
        Err(Error::MessageTooBig { declared: 120, .. })
    ));
    // A new message starts from zero.
    let mut d = Decoder::new(Role::Server, 100);
    let mut b = frame(OpCode::Binary, true, &[0; 60]);
    b.extend_from_slice(&frame(OpCode::Binary, true, &[0; 60]));
    assert_eq!(drain(&mut d, &mut b).unwrap().len(), 2);
}

#[test]
fn incomplete_input_is_not_an_error_and_is_left_in_place() {
    let whole = frame(OpCode::Ping, true, b"abc");
    for cut in 0..whole.len() {
        let mut b = BytesMut::from(&whole[..cut]);
        assert_eq!(server().next(&mut b).unwrap(), None, "cut {cut}");
        assert_eq!(b.len(), cut);
    }
}

#[test]
fn nothing_is_decoded_after_an_error() {
    let mut b = frame(OpCode::Text, true, b"x");
    b.extend_from_slice(&frame(OpCode::Binary, true, b"y"));
    let mut d = server();
    assert!(d.next(&mut b).is_err());
    assert!(d.is_done());
    assert_eq!(d.next(&mut b).unwrap(), None);
}

proptest! {
    /// Any binary message, cut into any fragments, interleaved with pings, delivered in any
    /// chunking, comes out as the same bytes with `end` exactly once, at its end.
    #[test]
    fn fragments_and_chunking_preserve_the_message(
        msg in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(0usize..3000, 0..6),
        chunk in 1usize..700,
        mask in any::<[u8; 4]>(),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(msg.len())).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut wire = BytesMut::new();
        let mut start = 0;
        let bounds: Vec<usize> = cuts.into_iter().chain([msg.len()]).collect();
        for (i, &end) in bounds.iter().enumerate() {
            let op = if i == 0 { OpCode::Binary } else { OpCode::Continuation };
            let fin = i + 1 == bounds.len();
            encode_frame(op, fin, &msg[start..end], Some(mask), &mut wire);
            if !fin {
                encode_frame(OpCode::Ping, true, b"x", Some(mask), &mut wire);
            }
            start = end;
        }
        let mut d = Decoder::new(Role::Server, 4096);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut ends = 0;
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(item) = d.next(&mut buf).unwrap() {
                if let Incoming::Data { payload, end } = item {
                    prop_assert_eq!(ends, 0);
                    got.extend_from_slice(&payload);
                    ends += usize::from(end);
                }
            }
        }
        prop_assert_eq!(got, msg);
        prop_assert_eq!(ends, 1);
        prop_assert!(buf.is_empty());
    }

    /// No input panics, and the decoder never holds more than a header or a control frame
    /// of bytes it could have passed on.
    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut d = Decoder::new(Role::Server, 1000);
        let mut buf = BytesMut::from(&input[..]);
        while let Ok(Some(_)) = d.next(&mut buf) {}
        if !d.is_done() {
            prop_assert!(buf.len() < 14 + 125);
        }
    }
}
