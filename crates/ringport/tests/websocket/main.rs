//! WebSocket on the client port, against the real gateway: the upgrade and its refusals,
//! protocol frames in binary messages, every close code, the closing handshake, the
//! handshake deadline, bystanders unaffected, and interop with Python's `websockets`.

mod client;
#[path = "../common/mod.rs"]
mod common;
mod interop;
mod sdk;

use bytes::BytesMut;
use client::{exchange, request, Msg, WsClient, MASK};
use common::gateway::{metric, test_config, token, TestServer, SECRET};
use ringport_proto::{CloseReason, Frame, Publish, RoomRequest, Status};
use ringport_ws::{encode_frame, encode_header, OpCode};

fn room_req(req_id: u32, room: &str) -> Frame {
    Frame::Join(RoomRequest {
        req_id,
        room: room.into(),
    })
}

fn metrics(server: &TestServer) -> String {
    server.http("GET", "/metrics", "").body
}

#[test]
fn protocol_frames_travel_in_binary_messages() {
    let server = TestServer::start(test_config());
    let before = metric(&metrics(&server), "ringport_websocket_upgrades_total");
    let mut ws = WsClient::connect(server.addr);
    ws.hello("");
    assert!(matches!(ws.recv(), Frame::Welcome(_)));
    // Two frames in one message; each answer is a message of its own.
    ws.send(&[room_req(1, "r"), Frame::Ping { nonce: 7 }]);
    assert!(matches!(ws.recv(), Frame::RoomResult(r) if r.status == Status::OK));
    assert_eq!(ws.recv(), Frame::Pong { nonce: 7 });

    let mut native = server.welcomed("");
    assert_eq!(native.join(1, "r"), Status::OK);
    native.publish("r", 1, b"from native");
    assert_eq!(&ws.recv_push_payload()[..], b"from native");

    // A PUBLISH fragmented over three frames with a ping and a pong between them.
    let mut publish = BytesMut::new();
    Frame::Publish(Publish {
        room: "r".into(),
        seq: 1,
        payload: "from websocket".into(),
    })
    .encode(&mut publish)
    .unwrap();
    let (a, rest) = publish.split_at(5);
    let (b, c) = rest.split_at(9);
    ws.send_ws(OpCode::Binary, false, a);
    ws.send_ws(OpCode::Ping, true, b"mid-message");
    ws.send_ws(OpCode::Continuation, false, b);
    ws.send_ws(OpCode::Pong, true, b"unsolicited");
    ws.send_ws(OpCode::Continuation, true, c);
    assert_eq!(ws.next(), Some(Msg::Pong("mid-message".into())));
    // The ack, and the message itself (a publisher is a member of its room too).
    let (mut acked, mut echoed) = (false, false);
    while !(acked && echoed) {
        match ws.recv() {
            Frame::PublishAck(a) if a.status == Status::OK => acked = true,
            Frame::Push(p) if &p.payload[..] == b"from websocket" => echoed = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The native publisher also receives its own message, before this one.
    let from_ws = loop {
        match native.recv() {
            Frame::Push(p) if &p.payload[..] == b"from websocket" => break p,
            Frame::Push(_) | Frame::PublishAck(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(from_ws.stream.name(), "r");

    // Pushes from the HTTP API arrive as one message each, like every frame.
    let r = server.http("POST", "/v1/push/room/r", r#"{"payload":"from api"}"#);
    assert!(r.status < 300, "{}", r.body);
    assert_eq!(&ws.recv_push_payload()[..], b"from api");

    let body = metrics(&server);
    assert!(metric(&body, "ringport_websocket_upgrades_total") > before);
    assert!(metric(&body, "ringport_websocket_connections_open") >= 1);
}

#[test]
fn frames_sent_right_behind_the_request_are_kept() {
    let server = TestServer::start(test_config());
    let mut bytes = request("/ringport", "ringport.v1", "").into_bytes();
    let mut hello = BytesMut::new();
    Frame::Hello(ringport_proto::Hello {
        token: bytes::Bytes::new(),
        client_info: "eager".into(),
        resume: None,
    })
    .encode(&mut hello)
    .unwrap();
    let mut frame = BytesMut::new();
    encode_frame(OpCode::Binary, true, &hello, Some(MASK), &mut frame);
    bytes.extend_from_slice(&frame);
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(common::gateway::WAIT)).unwrap();
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    // The answer: 101, then one binary message holding WELCOME (type 0x02).
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") || got.len() < 200 {
        let n = std::io::Read::read(&mut s, &mut chunk).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
        let head = got.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(h) = head {
            let msg = &got[h + 4..];
            if msg.len() >= 4 + 8 {
                let off = if msg[1] == 126 { 4 } else { 2 };
                assert_eq!(msg[0], 0x82, "a final binary frame");
                assert_eq!(msg[off + 1], 0x02, "WELCOME");
                break;
            }
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
}

#[test]
fn upgrade_refusals_are_http_errors_with_a_reason() {
    let mut config = test_config();
    config.websocket.max_request_bytes = 1024;
    let server = TestServer::start(config);
    let ok = request("/ringport", "ringport.v1", "");
    let cases = [
        (ok.replacen("/ringport", "/chat", 1), 404, "not_found"),
        (ok.replacen("ringport.v1", "chat", 1), 400, "subprotocol"),
        (ok.replacen("Version: 13", "Version: 8", 1), 426, "version"),
        (
            ok.replacen("Upgrade: websocket\r\n", "", 1),
            426,
            "not_upgrade",
        ),
        (
            ok.replacen("Host: localhost\r\n", "", 1),
            400,
            "missing_host",
        ),
        (
            ok.replacen("dGhlIHNhbXBsZSBub25jZQ==", "short", 1),
            400,
            "bad_key",
        ),
        (
            ok.replacen(
                "\r\n\r\n",
                &format!("\r\nX-Pad: {}\r\n\r\n", "p".repeat(2000)),
                1,
            ),
            431,
            "too_large",
        ),
    ];
    for (req, status, reason) in cases {
        let sample = format!("ringport_websocket_handshake_failures_total{{reason=\"{reason}\"}}");
        let before = metric(&metrics(&server), &sample);
        let answer = exchange(server.addr, req.as_bytes());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{reason}: {answer}"
        );
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
        assert!(metric(&metrics(&server), &sample) > before, "{sample}");
    }
    let body = metrics(&server);
    assert!(
        metric(
            &body,
            "ringport_limit_hits_total{limit=\"websocket_request\"}"
        ) >= 1
    );
    // A native client is unaffected by the WebSocket endpoint.
    let mut native = server.welcomed("");
    assert!(native.until_pong(1).is_empty());
}

/// Sends `bytes` after the upgrade (and a HELLO); expects the Close code, and returns the
/// protocol frames that came before it.
fn violation(server: &TestServer, bytes: &[u8], code: u16, reason: &str) -> Vec<Frame> {
    let sample = format!("ringport_websocket_protocol_errors_total{{reason=\"{reason}\"}}");
    let before = metric(&metrics(server), &sample);
    let mut ws = WsClient::connect(server.addr);
    ws.hello("");
    assert!(matches!(ws.recv(), Frame::Welcome(_)));
    ws.send_raw(bytes);
    let (got, text, frames) = ws.expect_close();
    assert_eq!(got, code, "{reason}: {text}");
    assert!(metric(&metrics(server), &sample) > before, "{sample}");
    frames
}

fn masked(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(op, fin, payload, Some(MASK), &mut b);
    b.to_vec()
}

#[test]
fn every_violation_closes_with_its_code() {
    let server = TestServer::start(test_config());
    let mut bystander = server.welcomed("");

    violation(
        &server,
        &masked(OpCode::Text, true, b"{}"),
        1003,
        "text_message",
    );
    let mut unmasked = BytesMut::new();
    encode_frame(OpCode::Binary, true, b"x", None, &mut unmasked);
    violation(&server, &unmasked, 1002, "unmasked");
    let mut rsv = masked(OpCode::Binary, true, b"x");
    rsv[0] |= 0x40;
    violation(&server, &rsv, 1002, "reserved_bits");
    let mut op = masked(OpCode::Binary, true, b"x");
    op[0] = 0x83;
    violation(&server, &op, 1002, "unknown_opcode");
    violation(
        &server,
        &masked(OpCode::Ping, false, b""),
        1002,
        "fragmented_control",
    );
    violation(
        &server,
        &masked(OpCode::Ping, true, &[0; 126]),
        1002,
        "control_too_long",
    );
    violation(
        &server,
        &masked(OpCode::Continuation, true, b"x"),
        1002,
        "unexpected_continuation",
    );
    let mut two = masked(OpCode::Binary, false, b"x");
    two.extend_from_slice(&masked(OpCode::Binary, true, b"y"));
    violation(&server, &two, 1002, "expected_continuation");
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(&[0xff, 0xfe]);
    violation(
        &server,
        &masked(OpCode::Close, true, &bad_reason),
        1007,
        "bad_utf8",
    );
    violation(
        &server,
        &masked(OpCode::Close, true, &1005u16.to_be_bytes()),
        1002,
        "invalid_close_code",
    );

    // Oversized: refused from the header alone (only the header is sent), with the native
    // CLOSE FRAME_TOO_LARGE before the Close 1009.
    let max = u64::from(test_config().protocol.max_payload) + 8;
    let header = encode_header(OpCode::Binary, true, max as usize + 1, Some(MASK));
    let frames = violation(&server, header.as_slice(), 1009, "message_too_big");
    assert!(matches!(
        frames.last(),
        Some(Frame::Close { reason, .. }) if *reason == CloseReason::FRAME_TOO_LARGE
    ));
    assert!(
        metric(
            &metrics(&server),
            "ringport_limit_hits_total{limit=\"websocket_message\"}"
        ) >= 1
    );

    // Half a protocol frame in a message.
    let mut ping = BytesMut::new();
    Frame::Ping { nonce: 1 }.encode(&mut ping).unwrap();
    let frames = violation(
        &server,
        &masked(OpCode::Binary, true, &ping[..5]),
        1002,
        "partial_frame",
    );
    assert!(matches!(
        frames.last(),
        Some(Frame::Close { reason, .. }) if *reason == CloseReason::PROTOCOL_ERROR
    ));

    // A native protocol error inside a well-formed message: the protocol's CLOSE, then
    // 4000 + its reason.
    let mut ws = WsClient::connect(server.addr);
    ws.send(&[]);
    let mut bad = ping.to_vec();
    bad[0] = 9; // version 9
    ws.send_ws(OpCode::Binary, true, &bad);
    let (code, _, frames) = ws.expect_close();
    assert_eq!(code, 4000 + CloseReason::UNSUPPORTED_VERSION.0);
    assert!(matches!(
        frames.last(),
        Some(Frame::Close { reason, .. }) if *reason == CloseReason::UNSUPPORTED_VERSION
    ));

    assert!(
        bystander.until_pong(99).is_empty(),
        "the bystander is served"
    );
}

/// A WebSocket protocol violation costs its address `limits.handshakes_per_abusive_close`
/// new-connection tokens, as broken native bytes do (tests/abuse/admission.rs).
#[test]
fn a_violation_costs_the_address_its_reconnects() {
    let mut config = test_config();
    config.auth.allow_anonymous = Some(true);
    common::gateway::abuse_costs_a_burst(&mut config.limits);
    let server = TestServer::start(config);
    let flooder: std::net::IpAddr = [127, 0, 11, 1].into();
    let mut ws = WsClient::connect_from(server.addr, flooder);
    let mut unmasked = BytesMut::new();
    encode_frame(OpCode::Binary, true, b"x", None, &mut unmasked);
    ws.send_raw(&unmasked);
    assert_eq!(ws.expect_close().0, 1002);
    let mut again = common::gateway::Client::connect_from(server.addr, flooder);
    match again.hello("") {
        Frame::Close { reason, text } => {
            assert_eq!(reason, CloseReason::POLICY, "{text}");
            assert!(text.contains("new connections"), "{text}");
        }
        other => panic!("expected CLOSE POLICY, got {other:?}"),
    }
    // Another address is not affected.
    let mut other = WsClient::connect_from(server.addr, [127, 0, 11, 2].into());
    other.hello("");
    assert!(matches!(other.recv(), Frame::Welcome(_)));
}

#[test]
fn closing_handshake_both_ways() {
    let mut config = test_config();
    config.auth.secret = Some(SECRET.into());
    config.engine.close_linger_ms = 500;
    let server = TestServer::start(config);

    // Client first: the server echoes the code and closes the connection.
    let mut ws = WsClient::connect(server.addr);
    ws.hello(&token("u1", &[]));
    assert!(matches!(ws.recv(), Frame::Welcome(_)));
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    ws.send_ws(OpCode::Close, true, &body);
    match ws.next() {
        Some(Msg::Close(Some(c))) => assert_eq!(c.code.0, 1000),
        other => panic!("expected the Close echo, got {other:?}"),
    }
    assert_eq!(ws.next(), None, "then the server closes the connection");

    // Server first (a bad token): the protocol's CLOSE, then Close 4005; the server waits
    // for our Close, then closes.
    let mut ws = WsClient::connect(server.addr);
    ws.hello("not a token");
    let (code, text, frames) = ws.expect_close();
    assert_eq!(code, 4000 + CloseReason::AUTH_FAILED.0, "{text}");
    assert_eq!(text, "AUTH_FAILED");
    assert!(matches!(
        frames.last(),
        Some(Frame::Close { reason, .. }) if *reason == CloseReason::AUTH_FAILED
    ));

    // A peer that never answers our Close is closed at the drain deadline.
    let mut ws = WsClient::connect(server.addr);
    ws.hello("not a token");
    let mut saw_close = false;
    while let Some(m) = ws.next() {
        saw_close |= matches!(m, Msg::Close(Some(ref c)) if c.code.0 == 4005);
    }
    assert!(saw_close);
}

#[test]
fn handshake_deadline_bounds_the_upgrade_and_the_hello() {
    let mut config = test_config();
    config.protocol.handshake_timeout_ms = 300;
    let server = TestServer::start(config);
    // An upgrade request that never completes: 408.
    let answer = exchange(server.addr, b"GET /ringport HTTP/1.1\r\nHost: x\r\n");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    // Upgraded, but no HELLO: CLOSE HANDSHAKE_TIMEOUT, then Close 4004.
    let mut ws = WsClient::connect(server.addr);
    let (code, _, frames) = ws.expect_close();
    assert_eq!(code, 4000 + CloseReason::HANDSHAKE_TIMEOUT.0);
    assert!(matches!(
        frames.last(),
        Some(Frame::Close { reason, .. }) if *reason == CloseReason::HANDSHAKE_TIMEOUT
    ));
}

#[test]
fn websocket_ping_is_answered_and_disabled_endpoint_speaks_native() {
    let server = TestServer::start(test_config());
    let mut ws = WsClient::connect(server.addr);
    ws.send_ws(OpCode::Ping, true, b"are you there");
    assert_eq!(ws.next(), Some(Msg::Pong("are you there".into())));
    drop(ws);

    let mut config = test_config();
    config.websocket.enabled = false;
    let server = TestServer::start(config);
    // Without WebSocket, "GET " is a native frame with version 0x47: refused as such.
    let answer = exchange(
        server.addr,
        request("/ringport", "ringport.v1", "").as_bytes(),
    );
    assert!(!answer.starts_with("HTTP/"), "{answer}");
}

impl WsClient {
    fn recv_push_payload(&mut self) -> bytes::Bytes {
        match self.recv() {
            Frame::Push(p) => p.payload,
            other => panic!("expected PUSH, got {other:?}"),
        }
    }
}
