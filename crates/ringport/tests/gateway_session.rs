//! The gateway over real loopback sockets: handshake, auth, heartbeat, sleep/wake, bad input.

mod common;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::gateway::{test_config, token, TestServer, SECRET};
use ringport_proto::{CloseReason, Frame, Status};

fn secured() -> ringport::config::Config {
    let mut c = test_config();
    c.auth.secret = Some(SECRET.into());
    c
}

#[test]
fn authenticated_client_joins_heartbeats_sleeps_and_wakes() {
    let mut config = secured();
    config.protocol.max_sleep_interval_ms = 60_000;
    let server = TestServer::start(config);
    let mut c = server.client();
    let w = c.welcome(&token("alice", &["lobby", "chat.*"]));
    assert_ne!(w.session_id, 0);
    assert_eq!(w.heartbeat_interval_ms, 30_000);
    assert_eq!(c.join(1, "lobby"), Status::OK);
    assert_eq!(c.join(2, "chat.x"), Status::OK);
    assert_eq!(c.join(3, "lobby"), Status::OK, "joining twice is harmless");

    c.send(&Frame::Ping { nonce: 42 });
    assert_eq!(c.recv(), Frame::Pong { nonce: 42 });

    c.send(&Frame::Sleep {
        interval_ms: 45_000,
    });
    assert_eq!(
        c.recv(),
        Frame::SleepAck {
            interval_ms: 45_000
        }
    );
    // Room traffic is held while asleep; a direct push is not.
    let r = server.http(
        "POST",
        "/v1/push/room/lobby?wait=delivered",
        r#"{"payload":"held"}"#,
    );
    assert!(r.body.ends_with(r#""recipients":1}"#), "{}", r.body);
    let r = server.http(
        "POST",
        "/v1/push/user/alice?wait=delivered",
        r#"{"payload":"direct"}"#,
    );
    assert!(r.body.ends_with(r#""recipients":1}"#), "{}", r.body);
    let p = c.push();
    assert_eq!(&p.payload[..], b"direct");
    assert_eq!(p.stream.to_string(), "user:alice");

    c.send(&Frame::Wake);
    match c.recv() {
        Frame::WakeAck(w) => assert!(w.skipped.is_empty()),
        other => panic!("expected WAKE_ACK, got {other:?}"),
    }
    let p = c.push();
    assert_eq!(&p.payload[..], b"held");
    assert_eq!(p.offset, 1);

    c.send(&Frame::Close {
        reason: CloseReason::NORMAL,
        text: String::new(),
    });
    assert!(c.next().is_none(), "server closes after the client's CLOSE");
}

#[test]
fn silent_clients_are_closed_on_schedule() {
    let mut config = test_config();
    config.protocol.heartbeat_interval_ms = 200;
    config.protocol.heartbeat_tolerated = 1;
    config.protocol.heartbeat_probe_interval_ms = 100;
    config.protocol.heartbeat_close_after = 1;
    config.protocol.max_sleep_interval_ms = 200;
    config.protocol.handshake_timeout_ms = 300;
    let server = TestServer::start(config);

    // Established and silent: probes from 2 intervals (400 ms), close at 3 (600 ms).
    let mut c = server.welcomed("");
    let start = Instant::now();
    let mut pings = 0;
    let close = loop {
        match c.next().expect("CLOSE before EOF") {
            Frame::Ping { .. } => pings += 1, // deliberately unanswered
            Frame::Close { reason, .. } => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    let took = start.elapsed();
    assert_eq!(close, CloseReason::HEARTBEAT_TIMEOUT);
    assert!(pings >= 1, "probed before closing");
    assert!(took >= Duration::from_millis(550), "closed early: {took:?}");
    assert!(c.next().is_none());

    // Never says HELLO: closed at the handshake deadline.
    let mut c = server.client();
    let start = Instant::now();
    assert_eq!(c.expect_close().0, CloseReason::HANDSHAKE_TIMEOUT);
    assert!(start.elapsed() >= Duration::from_millis(250));

    server.wait_metric("ringport_connections_closed_total{reason=\"heartbeat_timeout\"} 1");
    server.wait_metric("ringport_connections_closed_total{reason=\"handshake_timeout\"} 1");
    let body = server.http("GET", "/metrics", "").body;
    assert!(common::gateway::metric(&body, "ringport_heartbeats_sent_total") >= 1);
}

#[test]
fn garbage_gets_a_protocol_error_and_others_keep_working() {
    let server = TestServer::start(test_config());
    let mut good = server.welcomed("");
    assert_eq!(good.join(1, "r"), Status::OK);

    let mut bad = server.client();
    // Version 1, unknown op 0xEE.
    bad.stream
        .write_all(&[1, 0xEE, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4])
        .unwrap();
    assert_eq!(bad.expect_close().0, CloseReason::PROTOCOL_ERROR);

    // A frame not allowed before WELCOME is a protocol error too.
    let mut early = server.client();
    early.send(&Frame::Wake);
    assert_eq!(early.expect_close().0, CloseReason::PROTOCOL_ERROR);

    // Wrong version byte (`GET ` would be a WebSocket upgrade, protocol.md section 13).
    let mut old = server.client();
    old.stream.write_all(b"POST / HTTP/1.1\r\n\r\n").unwrap();
    let (reason, text) = old.expect_close();
    assert_eq!(reason, CloseReason::UNSUPPORTED_VERSION);
    assert_eq!(text, "supported versions: 1");

    let r = server.http("POST", "/v1/push/room/r", r#"{"payload":"still here"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(&good.push().payload[..], b"still here");
    server.wait_metric("ringport_connections_closed_total{reason=\"protocol_error\"} 3");
}

fn alg_none_token() -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"sub":"mallory","exp":{exp},"rooms":["*"]}}"#))
    )
}

#[test]
fn bad_tokens_and_forbidden_rooms_are_rejected() {
    let server = TestServer::start(secured());
    let expired = ringport::auth::mint(
        "u",
        &["*".to_owned()],
        Duration::from_secs(60),
        SECRET.as_bytes(),
        SystemTime::now() - Duration::from_secs(3600),
    )
    .unwrap();
    let other_secret = ringport::auth::mint(
        "u",
        &["*".to_owned()],
        Duration::from_secs(3600),
        b"ffffffffffffffffffffffffffffffff",
        SystemTime::now(),
    )
    .unwrap();
    for (name, tok, needle) in [
        ("expired", expired.as_str(), "expired"),
        ("bad signature", other_secret.as_str(), "signature"),
        ("alg none", alg_none_token().as_str(), "\"none\""),
        ("missing", "", "token is required"),
        ("garbage", "not-a-jwt", "malformed"),
    ] {
        let mut c = server.client();
        match c.hello(tok) {
            Frame::Close { reason, text } => {
                assert_eq!(reason, CloseReason::AUTH_FAILED, "{name}");
                assert!(text.contains(needle), "{name}: {text}");
            }
            other => panic!("{name}: expected CLOSE, got {other:?}"),
        }
        assert!(c.next().is_none(), "{name}: socket closed after CLOSE");
    }

    let mut c = server.welcomed(&token("bob", &["lobby", "team.*"]));
    assert_eq!(c.join(1, "secret"), Status::FORBIDDEN);
    assert_eq!(c.join(2, "team"), Status::FORBIDDEN);
    assert_eq!(c.join(3, "team.a"), Status::OK);
    assert_eq!(
        c.join(4, "*"),
        Status::INVALID,
        "the broadcast stream is not a room"
    );
    server.wait_metric("ringport_connections_closed_total{reason=\"auth_failed\"} 5");
}
