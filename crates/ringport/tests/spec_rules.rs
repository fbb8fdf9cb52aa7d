//! The rules docs/protocol.md writes down for what was once left open (issue 11), checked
//! against the in-process gateway over loopback: resume ordering, inbox redelivery, publish
//! dedupe, ACK rules, names, sessions, and sleep details.

mod common;

use std::time::Duration;

use common::gateway::{test_config, token, Client, TestServer, SECRET};
use ringport_proto::{
    Ack, CloseReason, Frame, ResumeOutcome, ResumePoint, RoomRequest, Status, StreamName,
};

fn secured() -> ringport::config::Config {
    let mut c = test_config();
    c.auth.secret = Some(SECRET.into());
    c
}

fn room(name: &str) -> StreamName {
    StreamName::Room(name.into())
}

fn http_ok(server: &TestServer, path: &str, body: &str) {
    let r = server.http("POST", path, body);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
}

fn push_room(server: &TestServer, name: &str, payload: &str) {
    http_ok(
        server,
        &format!("/v1/push/room/{name}"),
        &format!(r#"{{"payload":"{payload}"}}"#),
    );
}

fn close_session(mut c: Client) {
    c.send(&Frame::Close {
        reason: CloseReason::NORMAL,
        text: String::new(),
    });
    while c.next().is_some() {}
}

/// Welcomes an anonymous session, joins `rooms`; returns the session id and the room epoch.
fn session_in_rooms(server: &TestServer, rooms: &[&str]) -> (u64, u32) {
    let mut c = server.client();
    let w = c.welcome("");
    let mut epoch = 0;
    for (i, r) in rooms.iter().enumerate() {
        c.send(&Frame::Join(RoomRequest {
            req_id: i as u32,
            room: (*r).into(),
        }));
        match c.recv() {
            Frame::RoomResult(rr) => epoch = rr.epoch,
            other => panic!("expected ROOM_RESULT, got {other:?}"),
        }
    }
    close_session(c);
    (w.session_id, epoch)
}

/// Section 6 / 4.10: each stream's backlog follows its own RESUME_RESULT, before the next
/// entry's RESUME_RESULT.
#[test]
fn each_streams_backlog_follows_its_own_resume_result() {
    let server = TestServer::start(test_config());
    let (session, epoch) = session_in_rooms(&server, &["a", "b"]);
    for i in 0..3 {
        push_room(&server, "a", &format!("a{i}"));
        push_room(&server, "b", &format!("b{i}"));
    }
    let mut c = server.client();
    let entry = |name: &str| ResumePoint {
        stream: room(name),
        epoch,
        last_offset: 0,
    };
    c.hello_resume("", session, vec![entry("a"), entry("b")]);
    assert!(matches!(c.recv(), Frame::Welcome(_)));
    let mut order = Vec::new();
    for _ in 0..8 {
        order.push(match c.recv() {
            Frame::ResumeResult(rr) => format!("RR {} {:?}", rr.stream, rr.outcome),
            Frame::Push(p) => format!("PUSH {} {}", p.stream, p.offset),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        order,
        [
            "RR room:a Resumed",
            "PUSH room:a 1",
            "PUSH room:a 2",
            "PUSH room:a 3",
            "RR room:b Resumed",
            "PUSH room:b 1",
            "PUSH room:b 2",
            "PUSH room:b 3",
        ]
    );
}

/// Section 9: the inbox entry reports the highest offset received; the server replays from
/// the lower of it and the acknowledged offset, so unacked messages at or below it come
/// again, after RESUMED, followed by everything above it.
#[test]
fn inbox_resume_redelivers_unacked_messages_at_or_below_last_offset() {
    let server = TestServer::start(secured());
    let tok = token("u1", &[]);
    let mut c = server.client();
    let w = c.welcome(&tok);
    for i in 1..=4 {
        http_ok(
            &server,
            "/v1/push/user/u1",
            &format!(r#"{{"payload":"m{i}"}}"#),
        );
        assert_eq!(c.push().offset, w.inbox_tail + i);
    }
    let inbox = StreamName::User("u1".into());
    c.send(&Frame::Ack(Ack {
        stream: inbox.clone(),
        offset: w.inbox_tail + 1,
    }));
    assert!(c.until_pong(1).is_empty());
    close_session(c);
    http_ok(&server, "/v1/push/user/u1", r#"{"payload":"m5"}"#);
    let mut c = server.client();
    c.hello_resume(
        &tok,
        w.session_id,
        vec![ResumePoint {
            stream: inbox,
            epoch: w.epoch,
            last_offset: w.inbox_tail + 3,
        }],
    );
    assert!(matches!(c.recv(), Frame::Welcome(_)));
    match c.recv() {
        Frame::ResumeResult(rr) => {
            assert_eq!(rr.outcome, ResumeOutcome::Resumed, "{rr:?}");
            assert_eq!((rr.missing_from, rr.missing_to), (0, 0));
        }
        other => panic!("expected RESUME_RESULT, got {other:?}"),
    }
    let offsets: Vec<u64> = (0..4).map(|_| c.push().offset - w.inbox_tail).collect();
    assert_eq!(offsets, [2, 3, 4, 5], "unacked 2..=3 again, then 4 and 5");
}

/// Section 4.6/4.7: dedupe is per session, across reconnects; a duplicate is acknowledged OK
/// and not published again; the publisher receives its own message like every member.
#[test]
fn publish_dedupe_is_per_session_and_the_publisher_receives_its_own_message() {
    let server = TestServer::start(test_config());
    let mut c = server.client();
    let w = c.welcome("");
    assert_eq!(c.join(1, "p"), Status::OK);
    c.publish("p", 7, b"first");
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(c.recv());
    }
    assert!(got
        .iter()
        .any(|f| matches!(f, Frame::PublishAck(a) if a.seq == 7 && a.status == Status::OK)));
    let own = got.iter().find_map(|f| match f {
        Frame::Push(p) => Some(p.clone()),
        _ => None,
    });
    let own = own.expect("the publisher receives its own message");
    assert_eq!(&own.payload[..], b"first");
    close_session(c);

    // Same session, same seq after a reconnect: OK, not published again.
    let mut c = server.client();
    c.hello_resume(
        "",
        w.session_id,
        vec![ResumePoint {
            stream: room("p"),
            epoch: own.epoch,
            last_offset: own.offset,
        }],
    );
    assert!(matches!(c.recv(), Frame::Welcome(_)));
    assert!(matches!(c.recv(), Frame::ResumeResult(rr) if rr.outcome == ResumeOutcome::Resumed));
    c.publish("p", 7, b"again");
    match c.recv() {
        Frame::PublishAck(a) => assert_eq!((a.seq, a.status), (7, Status::OK)),
        other => panic!("expected PUBLISH_ACK, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(c.until_pong(2).is_empty(), "not published twice");

    // Another session's seq 7 is its own.
    let mut other = server.client();
    other.welcome("");
    assert_eq!(other.join(1, "p"), Status::OK);
    other.publish("p", 7, b"other");
    let got: Vec<Frame> = (0..2).map(|_| other.recv()).collect();
    assert!(got
        .iter()
        .any(|f| matches!(f, Frame::Push(p) if &p.payload[..] == b"other")));
}

/// Section 4.9: ACK of another user's inbox (or, anonymous, of any inbox) is a protocol error.
#[test]
fn ack_of_another_users_inbox_is_a_protocol_error() {
    let mut config = secured();
    config.auth.allow_anonymous = Some(true);
    let server = TestServer::start(config);
    for (tok, text) in [(token("u1", &[]), "user:u2"), (String::new(), "user:u2")] {
        let mut c = server.client();
        c.welcome(&tok);
        c.send(&Frame::Ack(Ack {
            stream: StreamName::User("u2".into()),
            offset: 1,
        }));
        c.send(&Frame::Ping { nonce: 9 });
        match c.next() {
            Some(Frame::Close { reason, text: t }) => {
                assert_eq!(reason, CloseReason::PROTOCOL_ERROR);
                assert!(t.contains(text), "{t}");
            }
            other => panic!("expected CLOSE PROTOCOL_ERROR, got {other:?}"),
        }
    }
}

/// Section 2: one rule for names on the wire and in the HTTP API: 1..=255 bytes of UTF-8
/// without whitespace or control characters.
#[test]
fn names_with_whitespace_or_control_characters_are_invalid_everywhere() {
    let mut config = secured();
    config.auth.allow_anonymous = Some(true);
    let server = TestServer::start(config);
    let mut c = server.client();
    let w = c.welcome("");
    for (i, bad) in ["a b", "a\tb", "a\u{7f}b", "a\u{a0}b"].iter().enumerate() {
        assert_eq!(c.join(i as u32, bad), Status::INVALID, "{bad:?}");
        let r = server.http(
            "POST",
            &format!(
                "/v1/push/room/{}",
                bad.replace(' ', "%20").replace('\t', "%09")
            ),
            r#"{"payload":"x"}"#,
        );
        assert_ne!(r.status, 200, "{bad:?}");
    }
    assert_eq!(c.join(9, "a.b-c_d:e"), Status::OK);
    // A resume entry with such a name is refused as INVALID.
    let mut r = server.client();
    r.hello_resume(
        "",
        w.session_id,
        vec![ResumePoint {
            stream: room("a b"),
            epoch: 1,
            last_offset: 0,
        }],
    );
    assert!(matches!(r.recv(), Frame::Welcome(_)));
    match r.recv() {
        Frame::ResumeResult(rr) => {
            assert_eq!(rr.outcome, ResumeOutcome::Refused(Status::INVALID))
        }
        other => panic!("expected RESUME_RESULT, got {other:?}"),
    }
    // A token whose user id breaks the rule is refused.
    let mut u = server.client();
    match u.hello(&token("u 1", &[])) {
        Frame::Close { reason, .. } => assert_eq!(reason, CloseReason::AUTH_FAILED),
        other => panic!("expected CLOSE AUTH_FAILED, got {other:?}"),
    }
}

/// Section 6: a HELLO naming an unknown session, or another user's, gets a new session id;
/// its resume entries are still answered.
#[test]
fn unknown_or_foreign_session_ids_get_a_new_session() {
    let server = TestServer::start(secured());
    let mut a = server.client();
    let wa = a.welcome(&token("u1", &[]));
    for (tok, id) in [(token("u2", &[]), wa.session_id), (token("u1", &[]), 12345)] {
        let mut c = server.client();
        c.hello_resume(
            &tok,
            id,
            vec![ResumePoint {
                stream: room("*"),
                epoch: wa.broadcast_epoch,
                last_offset: wa.broadcast_tail,
            }],
        );
        match c.recv() {
            Frame::Welcome(w) => assert_ne!(w.session_id, id),
            other => panic!("expected WELCOME, got {other:?}"),
        }
        assert!(
            matches!(c.recv(), Frame::ResumeResult(rr) if rr.outcome == ResumeOutcome::Resumed)
        );
    }
    // The foreign HELLO did not replace u1's connection.
    assert!(a.until_pong(3).is_empty());
}

/// Section 8: `room:*` is held like a room; a stream that skipped still gets its URGENT
/// messages at once, behind its own held ones; a JOIN that wakes the client is answered WAKE_ACK, the held PUSHes,
/// then ROOM_RESULT.
#[test]
fn sleep_holds_broadcasts_lets_urgent_through_and_join_wakes_in_order() {
    let mut config = test_config();
    config.protocol.sleep_holdback = 2;
    let server = TestServer::start(config);
    let mut c = server.client();
    c.welcome("");
    assert_eq!(c.join(1, "s"), Status::OK);
    c.send(&Frame::Sleep {
        interval_ms: 60_000,
    });
    assert!(matches!(c.recv(), Frame::SleepAck { .. }));
    http_ok(&server, "/v1/broadcast", r#"{"payload":"b1"}"#);
    for i in 1..=3 {
        push_room(&server, "s", &format!("s{i}"));
    }
    std::thread::sleep(Duration::from_millis(100));
    // Held: the broadcast and s1; skipped: s2, s3. An urgent s4 arrives while asleep.
    http_ok(
        &server,
        "/v1/push/room/s",
        r#"{"payload":"s4","urgent":true}"#,
    );
    // Its stream's held s1 goes first (section 4.8: a stream arrives in offset order).
    let first = c.push();
    assert_eq!(
        (first.stream.clone(), &first.payload[..], first.urgent),
        (room("s"), &b"s1"[..], false)
    );
    let urgent = c.push();
    assert_eq!(
        (urgent.stream.clone(), &urgent.payload[..]),
        (room("s"), &b"s4"[..])
    );
    assert!(urgent.urgent);
    // JOIN wakes it.
    c.send(&Frame::Join(RoomRequest {
        req_id: 2,
        room: "t".into(),
    }));
    match c.recv() {
        Frame::WakeAck(w) => {
            assert_eq!(w.skipped.len(), 1, "{w:?}");
            assert_eq!(w.skipped[0].stream, room("s"));
            assert_eq!(w.skipped[0].count, 2);
        }
        other => panic!("expected WAKE_ACK, got {other:?}"),
    }
    let held = c.push();
    assert_eq!(
        format!("{} {}", held.stream, String::from_utf8_lossy(&held.payload)),
        "room:* b1"
    );
    assert!(matches!(c.recv(), Frame::RoomResult(r) if r.req_id == 2 && r.status == Status::OK));
}
