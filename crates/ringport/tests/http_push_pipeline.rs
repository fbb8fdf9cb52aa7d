//! The HTTP publish pipeline (issue 12 item 1, issue 11 item 6): a push is answered once it
//! is sequenced and appended, pushes arriving together leave together, and a retried
//! idempotent push publishes once.

mod common;
#[allow(dead_code)]
#[path = "websocket/client.rs"]
mod ws_client;

use std::io::Write;
use std::sync::mpsc;
use std::thread;

use common::gateway::{metric, test_config, TestServer, WAIT};
use common::Pipelined;
use ringport::gateway::GatewayHandler;

/// A `u64` field of a JSON answer.
fn field(body: &str, name: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// Holds every shard inside a posted closure until the returned guard is dropped, so what
/// is posted meanwhile reaches the shards in one loop turn.
struct Paused(Vec<mpsc::Sender<()>>);

impl Drop for Paused {
    fn drop(&mut self) {
        for tx in &self.0 {
            let _ = tx.send(());
        }
    }
}

fn pause_shards(server: &TestServer) -> Paused {
    let engine = server.engine();
    let (entered_tx, entered) = mpsc::channel();
    let mut release = Vec::new();
    for shard in 0..engine.shards() {
        let (tx, rx) = mpsc::channel::<()>();
        let entered_tx = entered_tx.clone();
        engine.run(shard, move |_h: &mut GatewayHandler, _ctx| {
            entered_tx.send(()).unwrap();
            let _ = rx.recv_timeout(WAIT);
        });
        release.push(tx);
    }
    for _ in 0..engine.shards() {
        entered.recv_timeout(WAIT).expect("shard paused");
    }
    Paused(release)
}

#[test]
fn ten_thousand_pipelined_pushes_reach_every_member_in_order() {
    const MEMBERS: usize = 200;
    const PUSHES: u64 = 10_000;
    let mut config = test_config();
    config.engine.send_high_water = 64 << 20;
    let server = TestServer::start(config);
    let readers: Vec<_> = (0..MEMBERS)
        .map(|i| {
            let mut c = server.welcomed("");
            assert_eq!(c.join(1, "pipe"), ringport_proto::Status::OK, "member {i}");
            thread::spawn(move || {
                for offset in 1..=PUSHES {
                    let p = c.push();
                    assert_eq!(p.offset, offset, "member {i}");
                    assert_eq!(
                        &p.payload[..],
                        format!("m{offset}").as_bytes(),
                        "member {i}"
                    );
                }
            })
        })
        .collect();

    let mut http = Pipelined::connect(server.admin_addr);
    let mut writer = http.writer();
    let feeder = thread::spawn(move || {
        let mut chunk = String::new();
        for i in 1..=PUSHES {
            let body = format!(r#"{{"payload":"m{i}"}}"#);
            chunk.push_str(&Pipelined::encode("POST", "/v1/push/room/pipe", &[], &body));
            if i % 100 == 0 {
                writer.write_all(chunk.as_bytes()).unwrap();
                chunk.clear();
            }
        }
    });
    for i in 1..=PUSHES {
        let a = http.answer();
        assert_eq!(a.status, 200, "push {i}: {}", a.body);
        assert_eq!(field(&a.body, "offset"), i, "{}", a.body);
    }
    feeder.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn pushes_arriving_together_leave_in_one_gathered_send() {
    let server = TestServer::start(test_config());
    let mut member = server.welcomed("");
    assert_eq!(member.join(1, "co"), ringport_proto::Status::OK);
    let before = server.http("GET", "/metrics", "").body;
    let sends = |body: &str| {
        (
            metric(body, "ringport_send_batch_messages_count"),
            metric(body, "ringport_send_batch_messages_sum"),
        )
    };
    let (count0, sum0) = sends(&before);

    // While the shards are held, 50 pushes are answered (sequenced and appended) and wait
    // in the shards' delivery queues; released, they go out in one loop turn.
    let paused = pause_shards(&server);
    let mut http = Pipelined::connect(server.admin_addr);
    for i in 1..=50u64 {
        let a = http.call("POST", "/v1/push/room/co", &[], r#"{"payload":"x"}"#);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(field(&a.body, "offset"), i);
    }
    drop(paused);
    for i in 1..=50u64 {
        assert_eq!(member.push().offset, i);
    }
    let after = server.http("GET", "/metrics", "").body;
    let (count1, sum1) = sends(&after);
    // The sum counts each send's messages exactly: more messages than sends means at least
    // one send carried several.
    assert!(count1 > count0, "no send counted");
    assert!(
        sum1 - sum0 > count1 - count0,
        "no coalescing: {} sends carried {} messages",
        count1 - count0,
        sum1 - sum0
    );
}

#[test]
fn an_idempotent_push_retried_after_a_forced_503_publishes_once() {
    let server = TestServer::start(test_config());
    let mut member = server.welcomed("");
    assert_eq!(member.join(1, "idem"), ringport_proto::Status::OK);
    let mut http = Pipelined::connect(server.admin_addr);
    let key = [("Idempotency-Key", "order-17")];
    let path = "/v1/push/room/idem?wait=delivered";
    let body = r#"{"payload":"once"}"#;

    // The shards are held past the delivery deadline: the push is appended (it has an
    // offset) but its delivery is not confirmed, so the backend sees a 503.
    let paused = pause_shards(&server);
    let first = http.call("POST", path, &key, body);
    assert_eq!(first.status, 503, "{}", first.body);
    assert!(first.body.contains("not_confirmed"), "{}", first.body);
    drop(paused);

    let retry = http.call("POST", path, &key, body);
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(field(&retry.body, "offset"), 1);
    // The same key for another push is refused rather than answered with this outcome.
    let other = http.call("POST", path, &key, r#"{"payload":"different"}"#);
    assert_eq!(other.status, 422, "{}", other.body);
    let after = http.call("POST", "/v1/push/room/idem", &[], r#"{"payload":"after"}"#);
    assert_eq!(field(&after.body, "offset"), 2, "{}", after.body);

    let p = member.push();
    assert_eq!((p.offset, &p.payload[..]), (1, &b"once"[..]));
    let p = member.push();
    assert_eq!((p.offset, &p.payload[..]), (2, &b"after"[..]));
    let metrics = server.http("GET", "/metrics", "").body;
    assert!(metric(&metrics, "ringport_idempotent_replays_total") >= 1);
}

/// Answering before delivery must not let a fast publisher queue without bound: while a
/// shard has `rooms.max_pending_deliveries` messages waiting, a push is refused (503,
/// nothing published) and succeeds again once the shard caught up.
#[test]
fn pushes_beyond_the_pending_bound_are_refused_unpublished() {
    let mut config = test_config();
    config.rooms.max_pending_deliveries = 10;
    let server = TestServer::start(config);
    let mut member = server.welcomed("");
    assert_eq!(member.join(1, "bound"), ringport_proto::Status::OK);
    let mut http = Pipelined::connect(server.admin_addr);
    let paused = pause_shards(&server);
    for i in 1..=10u64 {
        let a = http.call("POST", "/v1/push/room/bound", &[], r#"{"payload":"x"}"#);
        assert_eq!(field(&a.body, "offset"), i, "{}", a.body);
    }
    let refused = http.call("POST", "/v1/push/room/bound", &[], r#"{"payload":"y"}"#);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("unavailable"), "{}", refused.body);
    drop(paused);
    for i in 1..=10u64 {
        assert_eq!(member.push().offset, i);
    }
    // Every shard drained its queue (the member's shard did; a task posted to each shard
    // now runs after its drain task, so this is a barrier for the others): pushes are
    // accepted again, numbered after the ten.
    drop(pause_shards(&server));
    let a = http.call("POST", "/v1/push/room/bound", &[], r#"{"payload":"z"}"#);
    assert_eq!(
        (a.status, field(&a.body, "offset")),
        (200, 11),
        "{}",
        a.body
    );
    assert_eq!(&member.push().payload[..], b"z");
    let metrics = server.http("GET", "/metrics", "").body;
    assert!(
        metric(
            &metrics,
            "ringport_limit_hits_total{limit=\"delivery_backlog\"}"
        ) >= 1
    );
}

/// Pushes that reach a shard in one turn are delivered as a run (joined once, one send per
/// connection) to members that take everything at once, and message by message to a member
/// that cannot: here a sleeping member, which gets only the urgent push and the held room
/// pushes before it (its stream stays in offset order, protocol.md §8), and the rest on WAKE.
#[test]
fn a_run_of_pushes_reaches_active_and_sleeping_members_each_by_its_own_rules() {
    let server = TestServer::start(test_config());
    let mut active = server.welcomed("");
    assert_eq!(active.join(1, "run"), ringport_proto::Status::OK);
    let mut sleeper = server.welcomed("");
    assert_eq!(sleeper.join(1, "run"), ringport_proto::Status::OK);
    sleeper.send(&ringport_proto::Frame::Sleep {
        interval_ms: 60_000,
    });
    assert!(matches!(
        sleeper.recv(),
        ringport_proto::Frame::SleepAck { .. }
    ));

    let paused = pause_shards(&server);
    let mut http = Pipelined::connect(server.admin_addr);
    for i in 1..=30u64 {
        let urgent = i == 21;
        let body = format!(r#"{{"payload":"m{i}","urgent":{urgent}}}"#);
        let a = http.call("POST", "/v1/push/room/run", &[], &body);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(field(&a.body, "offset"), i);
    }
    drop(paused);

    for i in 1..=30u64 {
        let p = active.push();
        assert_eq!((p.offset, &p.payload[..]), (i, format!("m{i}").as_bytes()));
    }
    // Asleep: the held room pushes 1..20 go out ahead of the urgent 21, the rest is held.
    for i in 1..=21u64 {
        assert_eq!(sleeper.push().offset, i);
    }
    sleeper.send(&ringport_proto::Frame::Wake);
    let mut after_wake = Vec::new();
    while after_wake.len() < 9 {
        match sleeper.recv() {
            ringport_proto::Frame::Push(p) => after_wake.push(p.offset),
            ringport_proto::Frame::WakeAck(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(after_wake, (22..=30).collect::<Vec<_>>());
    // Nothing twice: the active member's next frame is the answer to a PING.
    active.send(&ringport_proto::Frame::Ping { nonce: 5 });
    assert_eq!(active.recv(), ringport_proto::Frame::Pong { nonce: 5 });
}

/// Runs reach WebSocket members too: each message is still one binary message holding one
/// frame (protocol.md §13), in offset order, alongside native members of the same room —
/// whether the member takes the run straight through or message by message.
#[test]
fn a_run_of_pushes_reaches_websocket_members_one_frame_per_message() {
    const PUSHES: u64 = 40;
    let server = TestServer::start(test_config());
    let mut native = server.welcomed("");
    assert_eq!(native.join(1, "wsrun"), ringport_proto::Status::OK);
    let mut members: Vec<ws_client::WsClient> = (0..3)
        .map(|_| {
            let mut ws = ws_client::WsClient::connect(server.addr);
            ws.hello("");
            assert!(matches!(ws.recv(), ringport_proto::Frame::Welcome(_)));
            ws.send(&[ringport_proto::Frame::Join(ringport_proto::RoomRequest {
                req_id: 1,
                room: "wsrun".into(),
            })]);
            assert!(matches!(
                ws.recv(),
                ringport_proto::Frame::RoomResult(r) if r.status == ringport_proto::Status::OK
            ));
            ws
        })
        .collect();
    // One WebSocket member falls asleep: it is offered the run message by message.
    members[2].send(&[ringport_proto::Frame::Sleep {
        interval_ms: 60_000,
    }]);
    assert!(matches!(
        members[2].recv(),
        ringport_proto::Frame::SleepAck { .. }
    ));

    let paused = pause_shards(&server);
    let mut http = Pipelined::connect(server.admin_addr);
    for i in 1..=PUSHES {
        // The last one is urgent, so the sleeper is sent everything held before it.
        let urgent = i == PUSHES;
        let body = format!(r#"{{"payload":"w{i}","urgent":{urgent}}}"#);
        let a = http.call("POST", "/v1/push/room/wsrun", &[], &body);
        assert_eq!(a.status, 200, "{}", a.body);
    }
    drop(paused);

    for i in 1..=PUSHES {
        let p = native.push();
        assert_eq!((p.offset, &p.payload[..]), (i, format!("w{i}").as_bytes()));
    }
    for (n, ws) in members.iter_mut().enumerate() {
        for i in 1..=PUSHES {
            // `recv` asserts that every binary message holds exactly one frame.
            match ws.recv() {
                ringport_proto::Frame::Push(p) => assert_eq!(
                    (p.offset, &p.payload[..]),
                    (i, format!("w{i}").as_bytes()),
                    "member {n}"
                ),
                other => panic!("member {n}: unexpected {other:?}"),
            }
        }
    }
    // Nothing twice: each member's next frame answers its PING.
    for ws in &mut members {
        ws.send(&[ringport_proto::Frame::Ping { nonce: 9 }]);
        assert_eq!(ws.recv(), ringport_proto::Frame::Pong { nonce: 9 });
    }
}
