//! Bounded under abuse (issue 10): each test first reproduces an attack that succeeded,
//! then asserts the limit holds. Real loopback, in-process gateway, bounded loops only.

mod common;

use bytes::Bytes;
use common::gateway::{test_config, token, Client, TestServer, SECRET};
use ringport_proto::{CloseReason, Frame, Hello, Resume, ResumePoint, StreamName};

fn secured() -> ringport::config::Config {
    let mut c = test_config();
    c.auth.secret = Some(SECRET.into());
    c
}

fn hello_resume(c: &mut Client, token: &str, session_id: u64, streams: Vec<ResumePoint>) {
    c.send(&Frame::Hello(Hello {
        token: Bytes::copy_from_slice(token.as_bytes()),
        client_info: "abuse/1".into(),
        resume: Some(Resume {
            session_id,
            streams,
        }),
    }));
}

fn room(name: &str) -> StreamName {
    StreamName::Room(name.into())
}

// --- item 3: stream state ---

/// Observed: one connection's unique JOIN+LEAVE left a stream log behind for every name
/// (+489 MB after 1,000,000) while /v1/stats showed 0 rooms.
#[test]
fn join_leave_and_resume_of_unknown_streams_create_no_logs() {
    let (server, streams) = TestServer::start_with_streams(test_config());
    let mut c = server.client();
    let w = c.welcome("").session_id;
    for i in 0..2_000u32 {
        let name = format!("churn-{i}");
        assert_eq!(c.join(2 * i, &name), ringport_proto::Status::OK);
        c.send(&Frame::Leave(ringport_proto::RoomRequest {
            req_id: 2 * i + 1,
            room: name,
        }));
        match c.recv() {
            Frame::RoomResult(r) => assert_eq!(r.status, ringport_proto::Status::OK),
            other => panic!("expected ROOM_RESULT, got {other:?}"),
        }
    }
    // Resuming streams nobody ever wrote to creates nothing either.
    let mut r = server.client();
    let points = (0..40)
        .map(|i| ResumePoint {
            stream: room(&format!("never-{i}")),
            epoch: 1,
            last_offset: 0,
        })
        .collect();
    hello_resume(&mut r, "", w, points);
    assert!(matches!(r.recv(), Frame::Welcome(_)));
    for _ in 0..40 {
        assert!(matches!(r.recv(), Frame::ResumeResult(_)));
    }
    assert_eq!(streams.stats().streams, 0, "no message was ever appended");
    // A message creates its stream's log (and only that one).
    let resp = server.http("POST", "/v1/push/room/churn-1", r#"{"payload":"x"}"#);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(streams.stats().streams, 1);
    server.wait_metric("ringport_history_streams 1");
}

// --- item 6: sessions ---

/// Observed: 300 connections resumed one session id and all stayed open; a user push went
/// to every one of them.
#[test]
fn resuming_a_live_session_closes_the_old_connection_with_replaced() {
    let server = TestServer::start(secured());
    let tok = token("alice", &[]);
    let mut a = server.client();
    let wa = a.welcome(&tok);
    let mut b = server.client();
    hello_resume(&mut b, &tok, wa.session_id, Vec::new());
    match b.recv() {
        Frame::Welcome(wb) => assert_eq!(wb.session_id, wa.session_id, "same session"),
        other => panic!("expected WELCOME, got {other:?}"),
    }
    let r = server.http("POST", "/v1/push/user/alice", r#"{"payload":"one"}"#);
    assert_eq!(
        r.body, r#"{"recipients":1}"#,
        "one live connection per session"
    );
    assert_eq!(&b.push().payload[..], b"one");
    let (reason, _) = a.expect_close();
    assert_eq!(reason, CloseReason::REPLACED);
    let body = server.wait_metric("ringport_limit_hits_total{limit=\"session_replaced\"} 1");
    assert!(body.contains("ringport_connections_open{state=\"active\"} 1"));
}

/// Observed: session ids were `epoch << 32 | n`, so the next one was guessable.
#[test]
fn session_ids_are_not_sequential() {
    let server = TestServer::start(test_config());
    let ids: Vec<u64> = (0..8)
        .map(|_| server.client().welcome("").session_id)
        .collect();
    for w in ids.windows(2) {
        let gap = w[1].wrapping_sub(w[0]);
        assert!(gap > 1_000_000, "consecutive ids {:#x} {:#x}", w[0], w[1]);
        assert_ne!(w[0] >> 32, w[1] >> 32, "high halves differ too");
    }
}
