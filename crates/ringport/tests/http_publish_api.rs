//! Batch publishing, history and presence over the admin API (issue 12 items 2, 3, 4).

mod common;

use common::gateway::{metric, test_config, token, TestServer, SECRET};
use ringport_proto::{Frame, ResumeOutcome, ResumePoint, Status, StreamName};
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn batch(server: &TestServer, items: Value) -> Value {
    let body = serde_json::json!({ "items": items }).to_string();
    let r = server.http("POST", "/v1/publish/batch", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    json(&r.body)
}

/// `(stream, offset)` of a successful item, or its error code.
fn outcome(result: &Value) -> Result<(String, u64), String> {
    match result["error"].as_str() {
        Some(code) => Err(code.to_owned()),
        None => Ok((
            result["stream"].as_str().unwrap().to_owned(),
            result["offset"].as_u64().unwrap(),
        )),
    }
}

fn secured() -> TestServer {
    let mut config = test_config();
    config.auth.secret = Some(SECRET.into());
    config.auth.allow_anonymous = Some(true);
    TestServer::start(config)
}

#[test]
fn a_batch_publishes_mixed_targets_in_order_with_per_item_errors() {
    let server = secured();
    let mut alice = server.welcomed(&token("alice", &["r"]));
    assert_eq!(alice.join(1, "r"), Status::OK);
    let answer = batch(
        &server,
        serde_json::json!([
            {"room": "r", "payload": "to the room"},
            {"user": "alice", "payload_base64": "AAEC"},
            {"broadcast": true, "payload": "to all", "urgent": true},
            {"room": "a b", "payload": "x"},
            {"room": "*", "payload": "x"},
            {"room": "r", "payload": "x", "payload_base64": "AA=="},
            {"room": "r", "user": "alice", "payload": "x"},
            {"room": "r", "payload": "x", "bogus": 1},
            {"room": "r", "payload": "second"},
        ]),
    );
    let results: Vec<_> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(outcome)
        .collect();
    let ok = |s: &str, o: u64| Ok((s.to_owned(), o));
    let err = |c: &str| Err(c.to_owned());
    assert_eq!(
        results,
        vec![
            ok("room:r", 1),
            ok("user:alice", 1),
            ok("room:*", 1),
            err("bad_request"),
            err("rejected"),
            err("bad_request"),
            err("bad_request"),
            err("bad_request"),
            ok("room:r", 2),
        ]
    );
    let got: Vec<(String, u64, Vec<u8>)> = (0..4)
        .map(|_| {
            let p = alice.push();
            (p.stream.to_string(), p.offset, p.payload.to_vec())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("room:r".into(), 1, b"to the room".to_vec()),
            ("user:alice".into(), 1, vec![0, 1, 2]),
            ("room:*".into(), 1, b"to all".to_vec()),
            ("room:r".into(), 2, b"second".to_vec()),
        ]
    );
}

#[test]
fn a_retried_batch_publishes_only_what_was_not_published() {
    let server = TestServer::start(test_config());
    let mut member = server.welcomed("");
    assert_eq!(member.join(1, "b"), Status::OK);
    let first = batch(
        &server,
        serde_json::json!([
            {"room": "b", "payload": "one", "idempotency_key": "k1"},
            {"room": "b", "payload": "two", "idempotency_key": "k2"},
        ]),
    );
    let retry = batch(
        &server,
        serde_json::json!([
            {"room": "b", "payload": "one", "idempotency_key": "k1"},
            {"room": "b", "payload": "two", "idempotency_key": "k2"},
            {"room": "b", "payload": "three", "idempotency_key": "k3"},
            {"room": "b", "payload": "not two", "idempotency_key": "k2"},
        ]),
    );
    assert_eq!(retry["results"][0], first["results"][0]);
    assert_eq!(retry["results"][1], first["results"][1]);
    assert_eq!(outcome(&retry["results"][2]), Ok(("room:b".into(), 3)));
    assert_eq!(
        outcome(&retry["results"][3]),
        Err("idempotency_key_reused".into())
    );
    for (offset, payload) in [(1, "one"), (2, "two"), (3, "three")] {
        let p = member.push();
        assert_eq!((p.offset, &p.payload[..]), (offset, payload.as_bytes()));
    }
    let r = server.http("GET", "/v1/rooms/b/history", "");
    assert_eq!(json(&r.body)["tail"], 3, "published once each: {}", r.body);
    let metrics = server.http("GET", "/metrics", "").body;
    assert!(metric(&metrics, "ringport_idempotent_replays_total") >= 2);
}

#[test]
fn a_batch_over_the_item_limit_publishes_nothing() {
    let mut config = test_config();
    config.admin.max_batch_items = 3;
    let server = TestServer::start(config);
    let items: Vec<Value> = (0..4)
        .map(|i| serde_json::json!({"room": "cap", "payload": format!("m{i}")}))
        .collect();
    let body = serde_json::json!({ "items": items }).to_string();
    let r = server.http("POST", "/v1/publish/batch", &body);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(json(&r.body)["error"], "batch_too_large");
    let r = server.http("GET", "/v1/rooms/cap/history", "");
    assert_eq!(json(&r.body)["tail"], 0, "{}", r.body);
    let metrics = server.http("GET", "/metrics", "").body;
    assert!(metric(&metrics, "ringport_limit_hits_total{limit=\"batch_items\"}") >= 1);
    let r = server.http("POST", "/v1/publish/batch", r#"{"items": 1}"#);
    assert_eq!(r.status, 400, "{}", r.body);
}

/// The offsets of a history page, and whether more follow.
fn page(server: &TestServer, path: &str) -> (Vec<u64>, bool, Value) {
    let r = server.http("GET", path, "");
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let v = json(&r.body);
    let offsets = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    (offsets, v["more"].as_bool().unwrap(), v)
}

#[test]
fn history_is_paginated_and_bounded() {
    let mut config = test_config();
    config.admin.max_page_size = 7;
    config.history.max_messages_per_stream = 20;
    let server = TestServer::start(config);
    for i in 1..=25 {
        let r = server.http(
            "POST",
            "/v1/push/room/h",
            &format!(r#"{{"payload":"m{i}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // 20 retained: 6..=25; pages of at most 7 whatever is asked.
    let (offsets, more, v) = page(&server, "/v1/rooms/h/history?limit=5000");
    assert_eq!(offsets, (6..=12).collect::<Vec<_>>());
    assert!(more);
    assert_eq!(
        (v["first"].as_u64(), v["tail"].as_u64()),
        (Some(6), Some(25))
    );
    assert_eq!(v["messages"][0]["payload"], "m6");
    let (offsets, more, _) = page(&server, "/v1/rooms/h/history?since=12&limit=3");
    assert_eq!((offsets, more), (vec![13, 14, 15], true));
    let (offsets, more, _) = page(&server, "/v1/rooms/h/history?since=20");
    assert_eq!((offsets, more), (vec![21, 22, 23, 24, 25], false));
    let (offsets, more, _) = page(&server, "/v1/rooms/h/history?since=25");
    assert_eq!((offsets, more), (vec![], false));
    let (offsets, _, v) = page(&server, "/v1/rooms/nothing-here/history");
    assert!(offsets.is_empty());
    assert_eq!(v["tail"], 0);
    for bad in ["since=-1", "limit=x", "since=1&other=2"] {
        let r = server.http("GET", &format!("/v1/rooms/h/history?{bad}"), "");
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }

    let r = server.http("POST", "/v1/push/user/u1", r#"{"payload_base64":"/w=="}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let (offsets, _, v) = page(&server, "/v1/users/u1/history");
    assert_eq!(offsets, vec![1]);
    assert_eq!(v["stream"], "user:u1");
    assert_eq!(v["messages"][0]["payload_base64"], "/w==");
}

/// protocol.md section 9: a resume answered GAP because the replay budget ran out can fetch
/// the messages it did not get from the history API — exactly those.
#[test]
fn a_client_told_gap_fetches_exactly_the_missing_range() {
    let mut config = test_config();
    config.history.max_replay_bytes = 1_000;
    let server = TestServer::start(config);
    let (session, epoch) = server.session_in_room("gap");
    for i in 1..=10 {
        let body = format!(r#"{{"payload":"{i:03}{}"}}"#, "x".repeat(200));
        server.http("POST", "/v1/push/room/gap", &body);
    }
    let mut c = server.client();
    c.hello_resume(
        "",
        session,
        vec![ResumePoint {
            stream: StreamName::Room("gap".into()),
            epoch,
            last_offset: 0,
        }],
    );
    assert!(matches!(c.recv(), Frame::Welcome(_)));
    let rr = match c.recv() {
        Frame::ResumeResult(rr) => rr,
        other => panic!("expected RESUME_RESULT, got {other:?}"),
    };
    assert_eq!(rr.outcome, ResumeOutcome::Gap, "{rr:?}");
    let (from, to) = (rr.missing_from, rr.missing_to);
    assert!(from == 1 && to > from && to <= 10, "{rr:?}");
    for offset in to..=10 {
        assert_eq!(c.push().offset, offset);
    }
    let path = format!(
        "/v1/rooms/gap/history?since={}&limit={}",
        from - 1,
        to - from
    );
    let (offsets, more, v) = page(&server, &path);
    assert_eq!(offsets, (from..to).collect::<Vec<_>>());
    assert!(more, "the replayed ones follow");
    assert_eq!(v["epoch"], epoch);
    for m in v["messages"].as_array().unwrap() {
        let text = m["payload"].as_str().unwrap();
        assert_eq!(
            text[..3].parse::<u64>().unwrap(),
            m["offset"].as_u64().unwrap()
        );
    }
}

#[test]
fn presence_lists_users_with_connection_counts_page_by_page() {
    let server = secured();
    let mut conns = Vec::new();
    for user in ["bob", "alice", "alice", "carol"] {
        let mut c = server.welcomed(&token(user, &["p"]));
        assert_eq!(c.join(1, "p"), Status::OK);
        conns.push(c);
    }
    let mut anon = server.welcomed("");
    assert_eq!(anon.join(1, "p"), Status::OK);
    let r = server.http("GET", "/v1/rooms/p/presence?limit=2", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r.body);
    assert_eq!(
        (v["online"].as_u64(), v["users"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(v["anonymous"], 1);
    assert_eq!(
        v["members"],
        serde_json::json!([{"user": "alice", "connections": 2}, {"user": "bob", "connections": 1}])
    );
    assert_eq!(v["next"], "bob");
    let v = json(
        &server
            .http("GET", "/v1/rooms/p/presence?after=bob&limit=2", "")
            .body,
    );
    assert_eq!(
        v["members"],
        serde_json::json!([{"user": "carol", "connections": 1}])
    );
    assert_eq!(v["next"], Value::Null);
    let v = json(&server.http("GET", "/v1/rooms/empty/presence", "").body);
    assert_eq!(
        (v["online"].as_u64(), v["members"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
}

#[test]
fn a_batch_waiting_for_delivery_reports_recipients_per_item_in_order() {
    let server = secured();
    let mut alice = server.welcomed(&token("alice", &["w"]));
    assert_eq!(alice.join(1, "w"), Status::OK);
    let mut bob = server.welcomed(&token("bob", &["w"]));
    assert_eq!(bob.join(1, "w"), Status::OK);
    let mut items: Vec<Value> = (1..=60)
        .map(|i| serde_json::json!({"room": "w", "payload": format!("m{i}")}))
        .collect();
    items.push(serde_json::json!({"user": "bob", "payload": "direct"}));
    items.push(serde_json::json!({"room": "", "payload": "bad name"}));
    items.push(serde_json::json!({"room": "nobody-here", "payload": "x"}));
    let body = serde_json::json!({ "items": items }).to_string();
    let r = server.http("POST", "/v1/publish/batch?wait=delivered", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let results = json(&r.body)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 63);
    for (i, res) in results[..60].iter().enumerate() {
        // Sequenced in item order, each answered with its recipient count.
        assert_eq!(outcome(res), Ok(("room:w".into(), i as u64 + 1)), "{res}");
        assert_eq!(res["recipients"], 2, "{res}");
    }
    assert_eq!(results[60]["recipients"], 1, "{}", results[60]);
    assert_eq!(outcome(&results[61]), Err("bad_request".into()));
    assert_eq!(results[62]["recipients"], 0, "{}", results[62]);
    for c in [&mut alice, &mut bob] {
        for i in 1..=60u64 {
            let p = c.push();
            assert_eq!((p.offset, &p.payload[..]), (i, format!("m{i}").as_bytes()));
        }
    }
    assert_eq!(&bob.push().payload[..], b"direct");

    // Without the query the outcomes carry no count; a bad query is 400, nothing published.
    let plain = batch(&server, serde_json::json!([{"room": "w", "payload": "p"}]));
    assert!(plain["results"][0].get("recipients").is_none(), "{plain}");
    let r = server.http(
        "POST",
        "/v1/publish/batch?wait=later",
        r#"{"items":[{"room":"w","payload":"q"}]}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = server.http("GET", "/v1/rooms/w/history", "");
    assert_eq!(json(&r.body)["tail"], 61, "{}", r.body);
}
