//! The admin API over the real data plane: API key, connection inspection, kick, metrics.

mod common;

use common::gateway::{metric, test_config, token, TestServer, SECRET};
use common::request;
use ringport_proto::{CloseReason, Status};

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn api_key_is_required_when_set() {
    let mut config = test_config();
    config.admin.api_key = Some("k".repeat(20));
    let server = TestServer::start(config);
    let mut c = server.welcomed("");
    assert_eq!(c.join(1, "r"), Status::OK);
    let path = "/v1/push/room/r";
    let body = r#"{"payload":"x"}"#;
    assert_eq!(
        request(server.admin_addr, "POST", path, &[], body).status,
        401
    );
    let wrong = [("Authorization", "Bearer nope-nope-nope-nope")];
    assert_eq!(
        request(server.admin_addr, "POST", path, &wrong, body).status,
        401
    );
    let key = "k".repeat(20);
    let bearer = format!("Bearer {key}");
    let r = request(
        server.admin_addr,
        "POST",
        path,
        &[("Authorization", &bearer)],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(&c.push().payload[..], b"x");
    let r = request(
        server.admin_addr,
        "GET",
        "/metrics",
        &[("X-Api-Key", &key)],
        "",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn connections_are_inspected_and_kicked() {
    let mut config = test_config();
    config.auth.secret = Some(SECRET.into());
    let server = TestServer::start(config);
    let mut c = server.welcomed(&token("carol", &["ops"]));
    assert_eq!(c.join(1, "ops"), Status::OK);
    let room = json(&server.http("GET", "/v1/rooms/ops", "").body);
    assert_eq!(room["online"], 1);
    assert_eq!(room["members"][0]["user"], "carol");
    let id = room["members"][0]["connection"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = server.http("GET", &format!("/v1/connections/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let info = json(&r.body);
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["user"], "carol");
    assert_eq!(info["rooms"], serde_json::json!(["ops"]));
    assert_eq!(info["state"], "active");
    assert_eq!(info["messages_in"], 2, "HELLO and JOIN");
    assert!(info["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(info["bytes_in"].as_u64().unwrap() > 0);

    let r = server.http("DELETE", &format!("/v1/connections/{id}?reason=bye"), "");
    assert_eq!(r.status, 204, "{}", r.body);
    let (reason, text) = c.expect_close();
    assert_eq!(reason, CloseReason::POLICY);
    assert_eq!(text, "bye");
    assert_eq!(
        server
            .http("GET", &format!("/v1/connections/{id}"), "")
            .status,
        404
    );
    assert_eq!(
        server
            .http("DELETE", &format!("/v1/connections/{id}"), "")
            .status,
        404
    );
    assert_eq!(server.http("GET", "/v1/connections/12345", "").status, 404);
    let room = json(&server.http("GET", "/v1/rooms/ops", "").body);
    assert_eq!(room["online"], 0, "a closed connection leaves its rooms");
    server.wait_metric("ringport_connections_closed_total{reason=\"kicked\"} 1");
}

#[test]
fn metrics_follow_connections_and_deliveries() {
    let server = TestServer::start(test_config());
    let mut clients: Vec<_> = (0..5).map(|_| server.welcomed("")).collect();
    for c in &mut clients {
        assert_eq!(c.join(1, "m"), Status::OK);
    }
    let body = server.wait_metric("ringport_connections_open{state=\"active\"} 5");
    assert_eq!(metric(&body, "ringport_connections_accepted_total"), 5);
    assert_eq!(metric(&body, "ringport_frames_total{direction=\"in\"}"), 10);

    server.http("POST", "/v1/push/room/m", r#"{"payload":"x"}"#);
    for c in &mut clients {
        c.push();
    }
    let body = server.wait_metric("ringport_deliveries_total{kind=\"room\"} 5");
    assert!(metric(&body, "ringport_bytes_total{direction=\"out\"}") > 0);
    assert!(metric(&body, "ringport_bytes_total{direction=\"in\"}") > 0);
    assert!(body.contains("ringport_shard_busy_seconds_total{shard=\"1\"}"));
    assert!(metric(&body, "ringport_send_batch_messages_count") > 0);

    let mut c = clients.pop().unwrap();
    c.send(&ringport_proto::Frame::Sleep {
        interval_ms: 60_000,
    });
    c.recv();
    server.wait_metric("ringport_connections_open{state=\"sleeping\"} 1");
    drop(c);
    drop(clients.pop());
    server.wait_metric("ringport_connections_open{state=\"sleeping\"} 0");
    server.wait_metric("ringport_connections_open{state=\"active\"} 3");
    server.wait_metric("ringport_connections_closed_total{reason=\"peer_closed\"} 2");
    let _half_open = server.client();
    server.wait_metric("ringport_connections_open{state=\"handshaking\"} 1");
    let stats = json(&server.http("GET", "/v1/stats", "").body);
    assert_eq!(stats["connections"]["active"], 3);
    assert_eq!(stats["connections"]["handshaking"], 1);
    assert_eq!(stats["rooms"], 1);
}
