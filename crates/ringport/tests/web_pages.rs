//! The browser pages on the admin listener (`GET /dashboard`, `GET /demo` and its token
//! endpoint and SDK files) and `GET /v1/rooms`, the dashboard's top rooms, over the real data
//! plane. The pages in a browser: tests/browser (headless Chromium, run by .ci/run).

mod common;

use common::gateway::{test_config, TestServer, SECRET};
use common::request;
use ringport_proto::Status;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

const KEY: &str = "web-pages-api-key-0123";

/// The JSON the page carries in its `{{CONFIG}}` script element.
fn page_config(html: &str) -> serde_json::Value {
    let start = html
        .find(r#"<script type="application/json" id="config">"#)
        .expect("config element")
        + r#"<script type="application/json" id="config">"#.len();
    let end = start + html[start..].find("</script>").expect("end of config");
    json(&html[start..end])
}

#[test]
fn dashboard_is_served_and_its_data_needs_the_key() {
    let mut config = test_config();
    config.admin.api_key = Some(KEY.into());
    let server = TestServer::start(config);
    let admin = server.admin_addr;
    // The page itself holds no data: served without the key (it asks for one).
    let page = request(admin, "GET", "/dashboard", &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("ringport dashboard"));
    assert!(!page.body.contains("{{CONFIG}}"));
    // Everything it reads needs the key, sent as the API takes it.
    let bearer = format!("Bearer {KEY}");
    for path in [
        "/v1/stats",
        "/metrics",
        "/v1/rooms",
        "/v1/rooms/r",
        "/v1/connections/1",
    ] {
        assert_eq!(request(admin, "GET", path, &[], "").status, 401, "{path}");
        let wrong = [("Authorization", "Bearer wrong-wrong-wrong-wrong")];
        assert_eq!(
            request(admin, "GET", path, &wrong, "").status,
            401,
            "{path}"
        );
    }
    for path in ["/v1/stats", "/metrics", "/v1/rooms"] {
        let r = request(admin, "GET", path, &[("Authorization", &bearer)], "");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let r = request(admin, "GET", path, &[("X-Api-Key", KEY)], "");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // Only the page paths are exempt.
    for path in ["/dashboard/x", "/demo/x", "/sdk/", "/sdk/a/b.js", "/nope"] {
        assert_eq!(request(admin, "GET", path, &[], "").status, 401, "{path}");
    }
}

#[test]
fn demo_is_off_by_default() {
    let server = TestServer::start(test_config());
    for path in ["/demo", "/demo/token", "/sdk/client.js"] {
        let r = request(server.admin_addr, "GET", path, &[], "");
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(json(&r.body)["error"], "demo_disabled", "{path}");
    }
    assert_eq!(
        request(server.admin_addr, "GET", "/dashboard", &[], "").status,
        200
    );
}

#[test]
fn demo_page_knows_the_client_port_and_serves_the_sdk() {
    let mut config = test_config();
    config.admin.demo = true;
    let server = TestServer::start(config);
    let admin = server.admin_addr;
    let page = request(admin, "GET", "/demo", &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.content_type.starts_with("text/html"));
    let cfg = page_config(&page.body);
    assert_eq!(cfg["wsPort"], server.addr.port());
    assert_eq!(cfg["wsPath"], "/ringport");
    assert_eq!(cfg["wsUrl"], serde_json::Value::Null);
    assert_eq!(cfg["websocket"], true);
    assert_eq!(cfg["tokenRequired"], false);
    // The SDK's modules, byte for byte, as JavaScript.
    for file in ["client.js", "session.js", "codec.js"] {
        let r = request(admin, "GET", &format!("/sdk/{file}"), &[], "");
        assert_eq!(r.status, 200, "{file}");
        assert!(r.content_type.starts_with("text/javascript"), "{file}");
        let on_disk = std::fs::read_to_string(format!(
            "{}/../../sdk/js/src/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(r.body, on_disk, "{file}");
    }
    assert_eq!(
        request(admin, "GET", "/sdk/index.d.ts", &[], "").status,
        404
    );
    // No secret: clients are anonymous, the token is empty.
    let t = json(&request(admin, "GET", "/demo/token", &[], "").body);
    assert_eq!(t["token"], "");
    assert_eq!(t["user"], serde_json::Value::Null);
}

#[test]
fn demo_ws_url_is_configurable() {
    let mut config = test_config();
    config.admin.demo = true;
    config.admin.demo_ws_url = Some("wss://push.example.com/ringport".into());
    let server = TestServer::start(config);
    let page = request(server.admin_addr, "GET", "/demo", &[], "");
    assert_eq!(
        page_config(&page.body)["wsUrl"],
        "wss://push.example.com/ringport"
    );
    let mut bad = test_config();
    bad.admin.demo_ws_url = Some("http://x/".into());
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.starts_with("admin.demo_ws_url"), "{err}");
}

#[test]
fn demo_tokens_admit_demo_rooms_only() {
    let mut config = test_config();
    config.admin.demo = true;
    config.admin.api_key = Some(KEY.into());
    config.auth.secret = Some(SECRET.into());
    config.admin.demo_token_ttl_ms = 60_000;
    let server = TestServer::start(config);
    let admin = server.admin_addr;
    let page = request(admin, "GET", "/demo", &[], "");
    assert_eq!(page.status, 200, "the demo needs no API key");
    assert_eq!(page_config(&page.body)["tokenRequired"], true);
    let r = request(admin, "GET", "/demo/token", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let t = json(&r.body);
    let token = t["token"].as_str().unwrap();
    assert_eq!(t["expires_in_ms"], 60_000);
    let claims =
        ringport::auth::verify(token, SECRET.as_bytes(), std::time::SystemTime::now()).unwrap();
    assert_eq!(t["user"], claims.sub.as_str());
    assert!(claims.sub.starts_with("guest-"), "{}", claims.sub);
    assert_eq!(claims.rooms, vec!["demo.*".to_owned()]);
    // Two tokens are two guests.
    let other = json(&request(admin, "GET", "/demo/token", &[], "").body);
    assert_ne!(other["user"], t["user"]);
    // The gateway takes it: demo rooms only.
    let mut c = server.welcomed(token);
    assert_eq!(c.join(1, "demo.lobby"), Status::OK);
    assert_ne!(c.join(2, "private"), Status::OK);
}

#[test]
fn top_rooms_lists_the_busiest_rooms_first() {
    let server = TestServer::start(test_config());
    let mut clients = Vec::new();
    for (room, n) in [("a", 3), ("b", 1), ("c", 2)] {
        for _ in 0..n {
            let mut c = server.welcomed("");
            assert_eq!(c.join(1, room), Status::OK);
            clients.push(c);
        }
    }
    let r = server.http("GET", "/v1/rooms", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json(&r.body),
        serde_json::json!({
            "rooms": [{"room": "a", "online": 3}, {"room": "c", "online": 2}, {"room": "b", "online": 1}],
            "total": 3
        })
    );
    let r = json(&server.http("GET", "/v1/rooms?limit=1", "").body);
    assert_eq!(r["rooms"], serde_json::json!([{"room": "a", "online": 3}]));
    assert_eq!(r["total"], 3);
    assert_eq!(server.http("GET", "/v1/rooms?limit=x", "").status, 400);
    assert_eq!(server.http("GET", "/v1/rooms?bogus=1", "").status, 400);
}
