//! docs/protocol.md against a running gateway: every hex example of the document is sent
//! (client-to-server frames) or compared with what the gateway sends (server-to-client
//! frames), and the rules around them are checked, so a behaviour that drifts from the
//! document fails here. The document's defaults are `spec_defaults.rs`'s, its ordering and
//! naming rules `spec_rules.rs`'s, urgent ordering `urgent_order.rs`'s; this file covers the
//! examples, the state rules of sections 3 and 6, the closes of sections 1, 5 and 10, and
//! the CLOSE example of section 4.14 (the heartbeat timeout of section 7).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use bytes::BytesMut;
use common::gateway::{test_config, Client, TestServer};
use ringport_proto::{
    CloseReason, Decoder, Frame, Op, ResumeOutcome, Status, StreamName, HANDSHAKE_MAX_PAYLOAD,
};

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md exists")
}

/// Every hex example of the document, by op, in document order.
fn examples() -> HashMap<Op, Vec<Vec<u8>>> {
    let mut by_op: HashMap<Op, Vec<Vec<u8>>> = HashMap::new();
    for bytes in ringport_proto::spec::hex_examples(&protocol_md()) {
        let frame = decode(&bytes);
        by_op.entry(frame.op()).or_default().push(bytes);
    }
    by_op
}

fn decode(bytes: &[u8]) -> Frame {
    Decoder::new(u32::MAX)
        .decode(&mut BytesMut::from(bytes))
        .expect("a valid frame")
        .expect("a whole frame")
}

/// The document's (first) example of `op`.
fn example(all: &HashMap<Op, Vec<Vec<u8>>>, op: Op) -> Vec<u8> {
    all.get(&op)
        .and_then(|v| v.first())
        .unwrap_or_else(|| panic!("protocol.md has no {op:?} example"))
        .clone()
}

fn send_raw(c: &mut Client, bytes: &[u8]) {
    c.stream.write_all(bytes).unwrap();
}

/// The next frame, re-encoded: the gateway's bytes (encoding is canonical).
fn next_bytes(c: &mut Client) -> Vec<u8> {
    c.recv().to_bytes().unwrap().to_vec()
}

/// Client examples in the order a session uses them; each answer is the document's.
#[test]
fn every_client_example_gets_the_documented_answer() {
    let ex = examples();
    let server = TestServer::start(test_config());
    let mut c = server.client();

    // 4.1 HELLO: token `tok`, resume session 7 with `user:u42` at epoch 1, offset 41. The
    // session is unknown (section 6, rule 4): WELCOME with a new id; the entry names an inbox
    // that is not this (anonymous) connection's: REFUSED FORBIDDEN (4.10).
    let hello = example(&ex, Op::Hello);
    let Frame::Hello(h) = decode(&hello) else {
        unreachable!()
    };
    let asked = h.resume.expect("the example resumes");
    send_raw(&mut c, &hello);
    let Frame::Welcome(w) = c.recv() else {
        panic!("HELLO example not answered with WELCOME")
    };
    assert_ne!(w.session_id, 0);
    assert_ne!(
        w.session_id, asked.session_id,
        "an unknown session gets a new id"
    );
    assert_eq!(w.user, "", "anonymous");
    match c.recv() {
        Frame::ResumeResult(r) => {
            assert_eq!(r.stream, asked.streams[0].stream);
            assert_eq!(r.outcome, ResumeOutcome::Refused(Status::FORBIDDEN));
            assert_eq!((r.old_epoch, r.new_epoch), (1, 1), "equal when REFUSED");
            assert_eq!((r.missing_from, r.missing_to), (0, 0));
        }
        other => panic!("expected RESUME_RESULT, got {other:?}"),
    }

    // 4.3 PING → the PONG example, byte for byte.
    send_raw(&mut c, &example(&ex, Op::Ping));
    assert_eq!(next_bytes(&mut c), example(&ex, Op::Pong));

    // 4.4 JOIN `lobby` (req 1) → ROOM_RESULT req 1 OK with the example's layout; the room is
    // new, so its tail is 0 in the broadcast stream's epoch (one epoch per server process).
    send_raw(&mut c, &example(&ex, Op::Join));
    let Frame::RoomResult(want) = decode(&example(&ex, Op::RoomResult)) else {
        unreachable!()
    };
    match c.recv() {
        Frame::RoomResult(r) => {
            assert_eq!((r.req_id, r.status), (want.req_id, want.status));
            assert_eq!((r.epoch, r.tail), (w.broadcast_epoch, 0));
        }
        other => panic!("expected ROOM_RESULT, got {other:?}"),
    }

    // 4.6 PUBLISH `hi` to `lobby`, seq 5 → the PUBLISH_ACK example byte for byte, and the
    // publisher's own PUSH (either order).
    let publish = example(&ex, Op::Publish);
    send_raw(&mut c, &publish);
    let mut got = [c.recv(), c.recv()];
    got.sort_by_key(|f| f.op() as u8);
    let [Frame::PublishAck(_), Frame::Push(p)] = &got else {
        panic!("expected PUBLISH_ACK and PUSH, got {got:?}")
    };
    assert_eq!(got[0].to_bytes().unwrap(), example(&ex, Op::PublishAck));
    assert_eq!(
        (&p.stream, p.offset, &p.payload[..], p.urgent),
        (&StreamName::Room("lobby".into()), 1, &b"hi"[..], false)
    );
    // The same seq again: acknowledged OK the same way, not published again.
    send_raw(&mut c, &publish);
    assert_eq!(
        c.until_pong(77)
            .iter()
            .map(|f| f.to_bytes().unwrap().to_vec())
            .collect::<Vec<_>>(),
        [example(&ex, Op::PublishAck)]
    );

    // 4.11 SLEEP 120 000 → the SLEEP_ACK example (granted as asked: within the bounds).
    send_raw(&mut c, &example(&ex, Op::Sleep));
    assert_eq!(next_bytes(&mut c), example(&ex, Op::SleepAck));
    // 4.12 WAKE → WAKE_ACK; nothing was skipped.
    send_raw(&mut c, &example(&ex, Op::Wake));
    match c.recv() {
        Frame::WakeAck(a) => assert!(a.skipped.is_empty(), "{a:?}"),
        other => panic!("expected WAKE_ACK, got {other:?}"),
    }

    // 4.4 LEAVE `lobby` (req 2) → ROOM_RESULT 2 OK, epoch and tail 0 (4.5: not a JOIN).
    send_raw(&mut c, &example(&ex, Op::Leave));
    match c.recv() {
        Frame::RoomResult(r) => {
            assert_eq!((r.req_id, r.status, r.epoch, r.tail), (2, Status::OK, 0, 0))
        }
        other => panic!("expected ROOM_RESULT, got {other:?}"),
    }

    // 4.9 ACK of `user:u42` offset 42 on an anonymous connection: CLOSE PROTOCOL_ERROR whose
    // text names the stream.
    send_raw(&mut c, &example(&ex, Op::Ack));
    let (reason, text) = c.expect_close();
    assert_eq!(reason, CloseReason::PROTOCOL_ERROR);
    assert!(text.contains("user:u42"), "{text}");
}

/// 4.14: a receiver of CLOSE does not answer it; the server closes TCP.
#[test]
fn a_client_close_is_not_answered() {
    let ex = examples();
    let server = TestServer::start(test_config());
    let mut c = server.client();
    c.welcome("");
    send_raw(&mut c, &example(&ex, Op::Close));
    assert_eq!(c.next(), None, "no frame after the client's CLOSE");
}

/// Section 3: a server-to-client op from a client is a protocol error; section 6: nothing but
/// HELLO before WELCOME, and no second HELLO.
#[test]
fn frames_out_of_place_are_protocol_errors() {
    let ex = examples();
    let server = TestServer::start(test_config());
    let server_ops = [
        Op::Welcome,
        Op::RoomResult,
        Op::PublishAck,
        Op::Push,
        Op::ResumeResult,
        Op::SleepAck,
        Op::WakeAck,
        Op::Error,
    ];
    let mut cases: Vec<(bool, Vec<u8>)> = server_ops
        .iter()
        .map(|&op| (true, example(&ex, op)))
        .collect();
    cases.push((true, example(&ex, Op::Hello)));
    for op in [Op::Ping, Op::Join, Op::Publish, Op::Sleep, Op::Ack] {
        cases.push((false, example(&ex, op)));
    }
    for (welcomed, bytes) in cases {
        let mut c = server.client();
        if welcomed {
            c.welcome("");
        }
        send_raw(&mut c, &bytes);
        let (reason, text) = c.expect_close();
        assert_eq!(
            reason,
            CloseReason::PROTOCOL_ERROR,
            "{:?} (welcomed: {welcomed}): {text}",
            decode(&bytes).op()
        );
    }
}

/// Sections 1, 5.1 and 10: a bad version closes with UNSUPPORTED_VERSION and the text the
/// document shows; a payload over the handshake limit before WELCOME with FRAME_TOO_LARGE.
#[test]
fn version_and_size_closes_are_the_documented_ones() {
    let doc = protocol_md();
    let ex = examples();
    let server = TestServer::start(test_config());

    // 5.1: "text lists supported versions, e.g. `supported versions: 1`".
    let row = doc
        .lines()
        .find(|l| l.starts_with("| 7 | UNSUPPORTED_VERSION"))
        .expect("5.1 row of UNSUPPORTED_VERSION");
    let documented = row.split('`').nth(1).expect("example text in backticks");
    let mut ping = example(&ex, Op::Ping);
    ping[0] = 2;
    let mut c = server.client();
    send_raw(&mut c, &ping);
    assert_eq!(
        c.expect_close(),
        (CloseReason::UNSUPPORTED_VERSION, documented.to_owned())
    );

    // Section 1: "before WELCOME a client MUST keep payloads ≤ 65 536".
    let limit: String = doc
        .split("before WELCOME a client MUST keep payloads ≤ ")
        .nth(1)
        .expect("section 1 states the handshake limit")
        .chars()
        .take_while(|ch| ch.is_ascii_digit() || *ch == ' ')
        .filter(char::is_ascii_digit)
        .collect();
    let limit: u32 = limit.parse().unwrap();
    assert_eq!(limit, HANDSHAKE_MAX_PAYLOAD);
    for (len, closes) in [(limit, false), (limit + 1, true)] {
        let mut c = server.client();
        let mut header = example(&ex, Op::Hello)[..8].to_vec();
        header[4..8].copy_from_slice(&len.to_be_bytes());
        send_raw(&mut c, &header);
        if closes {
            assert_eq!(c.expect_close().0, CloseReason::FRAME_TOO_LARGE);
        } else {
            // At the limit the server waits for the body: nothing arrives, no CLOSE.
            c.stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut probe = [0u8; 1];
            let r = std::io::Read::read(&mut c.stream, &mut probe);
            assert!(
                matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
                "a {len}-byte declaration was answered: {r:?}"
            );
        }
    }
}

/// 4.14's example is the CLOSE a silent client gets at the end of section 7's schedule.
#[test]
fn heartbeat_timeout_close_is_the_close_example() {
    let ex = examples();
    let mut config = test_config();
    // The shortest schedule the config allows: probes from 200 ms, CLOSE at 300 ms.
    config.protocol.heartbeat_interval_ms = 100;
    config.protocol.heartbeat_tolerated = 1;
    config.protocol.heartbeat_probe_interval_ms = 50;
    config.protocol.heartbeat_close_after = 1;
    let server = TestServer::start(config);
    let mut c = server.client();
    c.welcome("");
    // Read without answering the probes.
    loop {
        match c.next().expect("CLOSE before end of stream") {
            Frame::Ping { .. } => {}
            f => {
                assert_eq!(f.to_bytes().unwrap(), example(&ex, Op::Close));
                break;
            }
        }
    }
    assert_eq!(c.next(), None);
}
