//! The admin HTTP API over a real loopback socket, against a mock [`Gateway`].

mod common;

use std::sync::Arc;

use common::{request, MockGateway};
use ringport::config::AdminConfig;
use ringport::http::pages::is_page;
use ringport::http::{AdminServer, HttpError, Push, ROUTES};

fn start(api_key: Option<&str>, max_body_size: u32) -> (AdminServer, Arc<MockGateway>) {
    let gateway = Arc::new(MockGateway::default());
    let config = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: api_key.map(str::to_owned),
        max_body_size,
        demo: true,
        ..AdminConfig::default()
    };
    let server = AdminServer::start(&config, gateway.clone()).unwrap();
    (server, gateway)
}

/// A `ROUTES` template with its parameters filled in.
fn example_path(template: &str) -> String {
    template
        .replace("{room}", "r")
        .replace("{user}", "u")
        .replace("{id}", "7")
        .replace("{file}", "client.js")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn push_routes_reach_the_gateway() {
    let (server, gw) = start(None, 1024);
    let addr = server.local_addr();

    let r = request(
        addr,
        "POST",
        "/v1/push/room/chat.lobby",
        &[],
        r#"{"payload":"hello"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r.body)["recipients"], 3);

    let r = request(
        addr,
        "POST",
        "/v1/push/user/u42",
        &[],
        r#"{"payload_base64":"AAEC","urgent":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let r = request(addr, "POST", "/v1/broadcast", &[], r#"{"payload":"all"}"#);
    assert_eq!(r.status, 200, "{}", r.body);

    let calls = gw.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            (
                "room:chat.lobby".to_owned(),
                Push {
                    payload: "hello".into(),
                    urgent: false,
                    wait_delivered: false,
                }
            ),
            (
                "user:u42".to_owned(),
                Push {
                    payload: vec![0u8, 1, 2].into(),
                    urgent: true,
                    wait_delivered: false,
                }
            ),
            (
                "broadcast".to_owned(),
                Push {
                    payload: "all".into(),
                    urgent: false,
                    wait_delivered: false,
                }
            ),
        ]
    );
    server.shutdown().unwrap();
}

#[test]
fn bad_bodies_get_json_400() {
    let (server, gw) = start(None, 64);
    let addr = server.local_addr();
    for body in [
        "",
        "not json",
        "{}",
        r#"{"payload":"a","payload_base64":"AA=="}"#,
        r#"{"payload_base64":"%%"}"#,
    ] {
        let r = request(addr, "POST", "/v1/broadcast", &[], body);
        assert_eq!(r.status, 400, "{body:?}: {}", r.body);
        assert_eq!(json(&r.body)["error"], "bad_request");
    }
    let big = format!(r#"{{"payload":"{}"}}"#, "x".repeat(200));
    let r = request(addr, "POST", "/v1/broadcast", &[], &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(json(&r.body)["error"], "body_too_large");
    let r = request(
        addr,
        "POST",
        "/v1/push/room/a%20b",
        &[],
        r#"{"payload":"x"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(gw.calls.lock().unwrap().is_empty());
    server.shutdown().unwrap();
}

#[test]
fn inspection_routes() {
    let (server, _gw) = start(None, 1024);
    let addr = server.local_addr();

    let r = request(addr, "GET", "/v1/rooms/lobby?sample=1", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r.body);
    assert_eq!(v["room"], "lobby");
    assert_eq!(v["online"], 3);
    assert_eq!(v["members"].as_array().unwrap().len(), 1);

    let r = request(addr, "GET", "/v1/users/u1/receipts", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r.body),
        serde_json::json!({"user": "u1", "epoch": 9, "tail": 12, "acked_offset": 10, "acked_count": 4})
    );
    let r = request(addr, "GET", "/v1/users/a%20b/receipts", &[], "");
    assert_eq!(r.status, 400, "{}", r.body);

    let r = request(addr, "GET", "/v1/stats", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(json(&r.body)["connections"]["active"], 5);

    let r = request(addr, "GET", "/v1/connections/7", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = json(&r.body);
    assert_eq!(v["id"], "7");
    assert_eq!(v["state"], "active");
    assert_eq!(v["remote_addr"], "10.0.0.1:5555");
    let r = request(addr, "GET", "/v1/connections/8", &[], "");
    assert_eq!(r.status, 404);
    assert_eq!(json(&r.body)["error"], "not_found");
    let r = request(addr, "GET", "/v1/connections/abc", &[], "");
    assert_eq!(r.status, 400);

    let r = request(addr, "DELETE", "/v1/connections/7?reason=spam", &[], "");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = request(addr, "DELETE", "/v1/connections/8", &[], "");
    assert_eq!(r.status, 404);

    let r = request(addr, "GET", "/healthz", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(json(&r.body)["status"], "ok");

    let r = request(addr, "GET", "/metrics", &[], "");
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        r.content_type
    );
    assert!(r.body.contains("# TYPE ringport_connections_open gauge"));

    let r = request(addr, "GET", "/nope", &[], "");
    assert_eq!(r.status, 404);
    assert_eq!(json(&r.body)["error"], "no_route");
    let r = request(addr, "PUT", "/v1/stats", &[], "");
    assert_eq!(r.status, 405);
    server.shutdown().unwrap();
}

#[test]
fn kick_passes_the_reason() {
    let (server, gw) = start(None, 1024);
    let r = request(
        server.local_addr(),
        "DELETE",
        "/v1/connections/7?reason=too%20chatty",
        &[],
        "",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        gw.kicked.lock().unwrap().clone(),
        vec![(7, Some("too chatty".to_owned()))]
    );
    server.shutdown().unwrap();
}

#[test]
fn api_key_is_enforced_when_configured() {
    let key = "0123456789abcdef";
    let (server, _gw) = start(Some(key), 1024);
    let addr = server.local_addr();
    for (method, path) in ROUTES {
        let path = example_path(path);
        let r = request(addr, method, &path, &[], r#"{"payload":"x"}"#);
        if is_page(&path) {
            // The browser pages hold no data; the dashboard asks for the key itself.
            assert_eq!(r.status, 200, "{method} {path} is a page");
        } else {
            assert_eq!(r.status, 401, "{method} {path} without key");
            assert_eq!(json(&r.body)["error"], "unauthorized");
        }
    }
    let r = request(
        addr,
        "GET",
        "/v1/stats",
        &[("Authorization", "Bearer wrong-key-wrong-key")],
        "",
    );
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {key}");
    let r = request(addr, "GET", "/v1/stats", &[("Authorization", &bearer)], "");
    assert_eq!(r.status, 200);
    let r = request(addr, "GET", "/metrics", &[("X-Api-Key", key)], "");
    assert_eq!(r.status, 200);
    server.shutdown().unwrap();
}

#[test]
fn every_listed_route_is_served() {
    let (server, _gw) = start(None, 1024);
    let addr = server.local_addr();
    for (method, path) in ROUTES {
        let path = example_path(path);
        let body = if path == "/v1/publish/batch" {
            r#"{"items":[{"room":"r","payload":"x"}]}"#
        } else {
            r#"{"payload":"x"}"#
        };
        let r = request(addr, method, &path, &[], body);
        assert!(
            r.status < 300,
            "{method} {path} answered {} {} (ROUTES and the router disagree)",
            r.status,
            r.body
        );
    }
    server.shutdown().unwrap();
}

#[test]
fn refuses_non_loopback_without_key() {
    let config = AdminConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        api_key: None,
        max_body_size: 1024,
        ..AdminConfig::default()
    };
    let err = AdminServer::start(&config, Arc::new(MockGateway::default())).unwrap_err();
    assert!(matches!(err, HttpError::KeyRequired { .. }), "{err}");
}

#[test]
fn gateway_errors_map_to_503() {
    let (server, gw) = start(None, 1024);
    *gw.unavailable.lock().unwrap() = true;
    let r = request(
        server.local_addr(),
        "POST",
        "/v1/broadcast",
        &[],
        r#"{"payload":"x"}"#,
    );
    assert_eq!(r.status, 503);
    assert_eq!(json(&r.body)["error"], "unavailable");
    server.shutdown().unwrap();
}
