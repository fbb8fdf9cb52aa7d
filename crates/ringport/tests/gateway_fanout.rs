//! Rooms, users and broadcast over real sockets: every message reaches every recipient once,
//! in offset order, and nobody else.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::gateway::{metric, test_config, token, Client, TestServer, SECRET};
use ringport_proto::{Frame, Status, StreamName};

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `n` welcomed clients, each joined to `room`.
fn joined_clients(server: &TestServer, n: usize, room: &str) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..n).map(|_| server.welcomed("")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.join(i as u32, room), Status::OK);
    }
    clients
}

/// POSTs payloads `m0`..`m{n-1}` to `path` in order; the answers' bodies.
fn push_numbered(server: &TestServer, path: &str, n: u64) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            let r = server.http("POST", path, &format!(r#"{{"payload":"m{i}"}}"#));
            assert_eq!(r.status, 200, "{}", r.body);
            json(&r.body)
        })
        .collect()
}

#[test]
fn thousand_room_pushes_reach_two_hundred_clients_once_in_order() {
    const CLIENTS: usize = 200;
    const PUSHES: u64 = 1_000;
    let server = TestServer::start(test_config());
    let mut clients = joined_clients(&server, CLIENTS, "big");

    // Connections landed on both shards (the shard is the top byte of the id).
    let info = json(&server.http("GET", "/v1/rooms/big?sample=1000", "").body);
    assert_eq!(info["online"], CLIENTS as u64);
    let shards: BTreeSet<u64> = info["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["connection"].as_str().unwrap().parse::<u64>().unwrap() >> 56)
        .collect();
    assert_eq!(shards, BTreeSet::from([0, 1]), "both shards serve members");

    for answer in push_numbered(&server, "/v1/push/room/big?wait=delivered", PUSHES) {
        assert_eq!(answer["recipients"], CLIENTS as u64);
    }
    let mut epoch = None;
    for c in &mut clients {
        for i in 0..PUSHES {
            let p = c.push();
            assert_eq!(p.stream, StreamName::Room("big".into()));
            assert_eq!(p.offset, i + 1, "offsets arrive in order, once each");
            assert_eq!(p.payload, format!("m{i}").as_bytes());
            assert_eq!(*epoch.get_or_insert(p.epoch), p.epoch);
        }
    }
    // Nothing more: a final marker push is the very next frame everywhere.
    server.http("POST", "/v1/push/room/big", r#"{"payload":"end"}"#);
    for c in &mut clients {
        assert_eq!(&c.push().payload[..], b"end");
    }
    let body = server.wait_metric(&format!(
        "ringport_deliveries_total{{kind=\"room\"}} {}",
        CLIENTS as u64 * (PUSHES + 1)
    ));
    assert_eq!(
        metric(&body, "ringport_connections_open{state=\"active\"}"),
        CLIENTS as u64
    );
    assert!(metric(&body, "ringport_push_to_send_seconds_count") > 0);
}

#[test]
fn a_fan_out_past_the_send_budget_leaves_over_several_turns_whole_and_in_order() {
    const CLIENTS: usize = 60;
    const PUSHES: u64 = 50;
    let mut config = test_config();
    // 8 sends per turn: every push to 60 members (about 30 per shard) spans turns.
    config.engine.max_sends_per_turn = 8;
    let server = TestServer::start(config);
    let mut clients = joined_clients(&server, CLIENTS, "wide");
    push_numbered(&server, "/v1/push/room/wide", PUSHES);
    for c in &mut clients {
        for i in 0..PUSHES {
            let p = c.push();
            assert_eq!(p.offset, i + 1, "offsets arrive in order, once each");
            assert_eq!(p.payload, format!("m{i}").as_bytes());
        }
        // Nothing else was queued: the PONG is the very next frame.
        assert!(c.until_pong(7).is_empty());
    }
    let body = server.wait_metric(&format!(
        "ringport_deliveries_total{{kind=\"room\"}} {}",
        CLIENTS as u64 * PUSHES
    ));
    assert!(
        metric(&body, "ringport_sends_deferred_total") > 0,
        "the budget bit: {body}"
    );
}

#[test]
fn user_push_reaches_every_device_of_the_user_and_broadcast_reaches_all() {
    let mut config = test_config();
    config.auth.secret = Some(SECRET.into());
    let server = TestServer::start(config);
    let alice_token = token("alice", &[]);
    let mut alice: Vec<Client> = (0..3).map(|_| server.welcomed(&alice_token)).collect();
    let mut bob = server.welcomed(&token("bob", &[]));

    let r = server.http(
        "POST",
        "/v1/push/user/alice?wait=delivered",
        r#"{"payload":"for alice"}"#,
    );
    assert_eq!(json(&r.body)["recipients"], 3);
    for c in &mut alice {
        let p = c.push();
        assert_eq!(p.stream, StreamName::User("alice".into()));
        assert_eq!(&p.payload[..], b"for alice");
        assert_eq!(p.offset, 1);
    }

    let r = server.http(
        "POST",
        "/v1/broadcast?wait=delivered",
        r#"{"payload":"everyone","urgent":true}"#,
    );
    assert_eq!(json(&r.body)["recipients"], 4);
    // Bob's first frame is the broadcast: the user push never reached him.
    let p = bob.push();
    assert_eq!(&p.payload[..], b"everyone");
    assert_eq!(p.stream, StreamName::Room("*".into()));
    assert!(p.urgent);
    for c in &mut alice {
        assert_eq!(&c.push().payload[..], b"everyone");
    }

    let stats = json(&server.http("GET", "/v1/stats", "").body);
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["connections"]["active"], 4);
    assert_eq!(stats["shards"], 2);

    let r = server.http(
        "POST",
        "/v1/push/user/nobody?wait=delivered",
        r#"{"payload":"x"}"#,
    );
    assert_eq!(json(&r.body)["recipients"], 0);
    let r = server.http("POST", "/v1/push/room/*", r#"{"payload":"x"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn client_publish_is_limited_by_size_rate_and_membership() {
    let mut config = test_config();
    config.rooms.publish_rate_per_sec = 1;
    config.rooms.publish_burst = 2;
    config.rooms.max_publish_size = 100;
    config.rooms.max_rooms_per_connection = 2;
    let server = TestServer::start(config);
    let mut a = server.welcomed("");
    let mut b = server.welcomed("");
    assert_eq!(a.join(1, "r"), Status::OK);
    assert_eq!(b.join(1, "r"), Status::OK);
    assert_eq!(a.join(2, "s"), Status::OK);
    assert_eq!(a.join(3, "t"), Status::LIMIT_EXCEEDED, "room limit");
    // Counted before the answer left (process-wide, so at least this one).
    let body = server.http("GET", "/metrics", "").body;
    assert!(
        metric(
            &body,
            "ringport_limit_hits_total{limit=\"rooms_per_connection\"}"
        ) >= 1,
        "the refused JOIN is counted"
    );

    a.publish("nowhere", 1, b"x");
    a.publish("r", 2, &[b'x'; 101]);
    for seq in 3..=7 {
        a.publish("r", seq, format!("p{seq}").as_bytes());
    }
    let mut statuses = Vec::new();
    while statuses.len() < 7 {
        match a.recv() {
            Frame::PublishAck(ack) => statuses.push((ack.seq, ack.status)),
            Frame::Push(_) => {} // a's own accepted publishes come back to it too
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(statuses[0], (1, Status::NOT_JOINED));
    assert_eq!(statuses[1], (2, Status::LIMIT_EXCEEDED));
    assert_eq!(statuses[2], (3, Status::OK));
    assert_eq!(statuses[3], (4, Status::OK));
    let limited = statuses[4..]
        .iter()
        .filter(|(_, s)| *s == Status::RATE_LIMITED)
        .count();
    assert!(limited >= 2, "burst of 2 at 1/s: {statuses:?}");
    // The other member got the accepted messages, in order.
    let accepted: Vec<u64> = statuses
        .iter()
        .filter(|(_, s)| *s == Status::OK)
        .map(|(seq, _)| *seq)
        .collect();
    for (i, seq) in accepted.iter().enumerate() {
        let p = b.push();
        assert_eq!(p.offset, i as u64 + 1);
        assert_eq!(&p.payload[..], format!("p{seq}").as_bytes());
    }
    let accepted = accepted.len();
    let body = server.wait_metric(&format!(
        "ringport_deliveries_total{{kind=\"publish\"}} {}",
        2 * accepted
    ));
    assert!(metric(&body, "ringport_drops_total{reason=\"rate_limited\"}") >= 2);
    assert_eq!(
        metric(&body, "ringport_drops_total{reason=\"too_large\"}"),
        1
    );
}

#[test]
fn batch_window_delays_room_messages_but_keeps_order() {
    let mut config = test_config();
    config.rooms.batch_window_ms = 50;
    let server = TestServer::start(config);
    let mut clients: Vec<Client> = (0..4).map(|_| server.welcomed("")).collect();
    for c in &mut clients {
        assert_eq!(c.join(1, "b"), Status::OK);
    }
    for i in 0..20 {
        let r = server.http(
            "POST",
            "/v1/push/room/b?wait=delivered",
            &format!(r#"{{"payload":"{i}"}}"#),
        );
        assert_eq!(json(&r.body)["recipients"], 4);
    }
    for c in &mut clients {
        let mut room = Vec::new();
        while room.len() < 20 {
            let p = c.push();
            room.push(p.offset);
        }
        assert_eq!(room, (1..=20).collect::<Vec<u64>>());
    }
}

/// A server with `rooms.batch_window_ms` of `window` and one member of `rooms`.
fn windowed_member(window: Duration, rooms: &[&str]) -> (TestServer, Client) {
    let mut config = test_config();
    config.rooms.batch_window_ms = window.as_millis() as u64;
    let server = TestServer::start(config);
    let mut member = server.welcomed("");
    for (i, room) in rooms.iter().enumerate() {
        assert_eq!(member.join(i as u32 + 1, room), Status::OK);
    }
    (server, member)
}

/// `rooms.batch_window_ms` holds room messages only after a send of their room: the first
/// message of a quiet room leaves at once and alone, the ones right behind it wait for the
/// window and leave together, and a message a whole window later leaves at once again.
/// Counted by the send-batch histogram (sends and the messages they carried), so no timing is
/// assumed beyond "held at least a window".
#[test]
fn a_batch_window_sends_a_lone_message_at_once_and_holds_the_ones_behind_it() {
    let window = Duration::from_millis(1_000);
    let (server, mut member) = windowed_member(window, &["lead"]);
    let sends = |server: &TestServer| {
        let body = server.http("GET", "/metrics", "").body;
        (
            metric(&body, "ringport_send_batch_messages_count"),
            metric(&body, "ringport_send_batch_messages_sum"),
        )
    };
    let (count0, sum0) = sends(&server);
    let t0 = Instant::now();
    for i in 1..=3 {
        let r = server.http(
            "POST",
            "/v1/push/room/lead",
            &format!(r#"{{"payload":"{i}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(member.push().offset, 1);
    let offsets = [member.push().offset, member.push().offset];
    assert_eq!(offsets, [2, 3]);
    // 2 and 3 waited for the window that 1 opened (it opened at or after t0).
    assert!(t0.elapsed() >= window, "held only {:?}", t0.elapsed());
    let (count1, sum1) = sends(&server);
    assert_eq!(
        (count1 - count0, sum1 - sum0),
        (2, 3),
        "message 1 alone, then 2 and 3 in one send"
    );

    // A whole window after the last room send, the next message leaves at once, alone.
    std::thread::sleep(window + Duration::from_millis(100));
    let t1 = Instant::now();
    let r = server.http("POST", "/v1/push/room/lead", r#"{"payload":"4"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(member.push().offset, 4);
    let (count2, sum2) = sends(&server);
    assert_eq!((count2 - count1, sum2 - sum1), (1, 1));
    eprintln!("message 4 arrived {:?} after its push", t1.elapsed());
}

/// The window is kept per room: a busy room whose messages are being held does not hold a
/// quiet room's lone message on the same shard. One member of both rooms sees the wire order:
/// busy 1 (at once), quiet 1 (at once: its room sent nothing for a window), then busy 2 (held
/// for the window busy 1 opened). With one window per shard, quiet 1 waited behind busy 2.
#[test]
fn a_batch_window_holds_a_busy_room_without_holding_a_quiet_one() {
    let window = Duration::from_millis(1_000);
    let (server, mut member) = windowed_member(window, &["busy", "quiet"]);
    let t0 = Instant::now();
    for (room, payload) in [("busy", "b1"), ("busy", "b2"), ("quiet", "q1")] {
        let r = server.http(
            "POST",
            &format!("/v1/push/room/{room}"),
            &format!(r#"{{"payload":"{payload}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let order: Vec<String> = (0..3)
        .map(|_| String::from_utf8_lossy(&member.push().payload).into_owned())
        .collect();
    assert_eq!(
        order,
        ["b1", "q1", "b2"],
        "the quiet room's message waited for the busy room's window"
    );
    // b2 still waited for the window that b1 opened (at or after t0).
    assert!(t0.elapsed() >= window, "b2 held only {:?}", t0.elapsed());
}

#[test]
fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let mut config = test_config();
    config.protocol.max_payload = 2 << 20;
    config.engine.send_high_water = 2 << 20;
    config.admin.max_body_size = 4 << 20;
    let server = TestServer::start(config);
    let mut slow = server.welcomed("");
    assert_eq!(slow.join(1, "firehose"), Status::OK);
    let body = format!(r#"{{"payload":"{}"}}"#, "x".repeat(1_500_000));
    let mut pushes = 0;
    loop {
        let r = server.http("POST", "/v1/push/room/firehose?wait=delivered", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        if json(&r.body)["recipients"] == 0 {
            break; // closed and gone from the room
        }
        pushes += 1;
        assert!(pushes < 200, "kernel buffers cannot absorb 300 MB");
    }
    let body = server.wait_metric("ringport_connections_closed_total{reason=\"slow_consumer\"} 1");
    assert!(metric(&body, "ringport_drops_total{reason=\"slow_consumer\"}") >= 1);
    drop(slow);
}

/// docs/operations.md: drop `slow_consumer` counts every frame a full send queue refused,
/// not one per connection. On WAKE the server queues WAKE_ACK and every held frame in one
/// turn; the queue passes its high-water mark part-way, and all the rest are lost.
#[test]
fn every_frame_a_slow_consumer_loses_counts_as_a_drop() {
    const HELD: u64 = 40;
    const PAYLOAD: usize = 60_000;
    let mut config = test_config();
    config.engine.send_high_water = 1 << 20;
    let server = TestServer::start(config);
    let mut c = server.welcomed("");
    assert_eq!(c.join(1, "held"), Status::OK);
    c.send(&Frame::Sleep {
        interval_ms: 60_000,
    });
    assert!(matches!(c.recv(), Frame::SleepAck { .. }));
    let body = format!(r#"{{"payload":"{}"}}"#, "x".repeat(PAYLOAD));
    for _ in 0..HELD {
        let r = server.http("POST", "/v1/push/room/held?wait=delivered", &body);
        assert_eq!(json(&r.body)["recipients"], 1, "{}", r.body);
    }
    // Wake up, then read nothing: about 17 frames of 60 kB fit under 1 MiB.
    c.send(&Frame::Wake);
    let metrics =
        server.wait_metric("ringport_connections_closed_total{reason=\"slow_consumer\"} 1");
    let fit = (1u64 << 20) / PAYLOAD as u64;
    let dropped = metric(&metrics, "ringport_drops_total{reason=\"slow_consumer\"}");
    assert!(
        (HELD - fit - 1..=HELD - fit + 1).contains(&dropped),
        "{HELD} held frames, about {fit} fit the queue, {dropped} counted as dropped"
    );
    drop(c);
}
