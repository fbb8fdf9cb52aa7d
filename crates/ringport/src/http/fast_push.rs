//! The push routes' fast path: a plain `POST /v1/push/room/{room}`, `/v1/push/user/{user}`
//! or `/v1/broadcast` served without going through axum's router.
//!
//! Written by hand because pushing at line rate is what a push gateway is bought for
//! (issue 12): a backend's HTTP push is the admin API's busiest request, and axum's generic
//! machinery around the handler (request extensions, matched path, URL parameters, boxed
//! route services, a copied header map) cost about a third of its instructions, most of them
//! allocations (measured with callgrind, docs/benchmarks.md).
//!
//! The path recognises only the plain, well-formed push: no query string, a name that needs
//! no percent-decoding and passes the name rule, a `Content-Length` within
//! `admin.max_body_size`, the right API key when one is required, a valid or absent
//! `Idempotency-Key`, and a body that parses. It publishes it with the functions the routes
//! use ([`routes::publish_one`], [`routes::push_answer`]). Everything else, every error case
//! included, goes to the router with the request unchanged (a body already read is put back),
//! so every answer but a successful or failed publish is the router's own; a test sends the
//! same requests through both paths and compares the answers byte for byte.

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::gateway::PushTarget;
use super::routes::{self, ApiError, AppState};

/// The admin API: the router, with the push fast path in front of it.
#[derive(Clone)]
pub struct App {
    router: Router,
    /// `None` serves everything through the router.
    fast: Option<AppState>,
}

impl App {
    pub(super) fn new(router: Router, fast: Option<AppState>) -> App {
        App { router, fast }
    }

    /// Serves one request.
    pub async fn call(mut self, req: Request<Body>) -> Response {
        let req = match &self.fast {
            Some(state) => match fast_push(state, req).await {
                Ok(resp) => return with_length(resp),
                Err(req) => req,
            },
            None => req,
        };
        match tower_service::Service::call(&mut self.router, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// `resp` with the `Content-Length` the router adds to every answer of known length.
fn with_length(mut resp: Response) -> Response {
    let exact = HttpBody::size_hint(resp.body()).exact();
    if let (Some(n), false) = (exact, resp.headers().contains_key(header::CONTENT_LENGTH)) {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    resp
}

/// Publishes `req` if it is a plain push; otherwise hands it back for the router.
async fn fast_push(state: &AppState, req: Request<Body>) -> Result<Response, Request<Body>> {
    let Some(target) = plain_push(state, &req) else {
        return Err(req);
    };
    let key = match routes::idempotency_key(req.headers()) {
        Ok(key) => key.map(str::to_owned),
        Err(_) => return Err(req),
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body).await {
        Ok(bytes) => bytes,
        // The declared length was within the limit, so only a connection that broke
        // mid-body gets here (the router would answer 400 too; nobody reads it).
        Err(e) => {
            return Ok(
                ApiError::bad_request(format!("reading the request body: {e}")).into_response(),
            )
        }
    };
    let push = match routes::parse_push(Ok(bytes.clone())) {
        Ok(push) => push,
        Err(_) => return Err(Request::from_parts(parts, Body::from(bytes))),
    };
    Ok(
        match routes::publish_one(state, target, push, key.as_deref()).await {
            Ok((outcome, replayed)) => routes::push_answer(outcome, replayed),
            Err(e) => e.into_response(),
        },
    )
}

/// The push `req` asks for, if this path may serve it (see the module docs).
fn plain_push(state: &AppState, req: &Request<Body>) -> Option<PushTarget> {
    if req.method() != Method::POST || req.uri().query().is_some() {
        return None;
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if length.is_none_or(|n| n > state.max_body) {
        return None;
    }
    if let Some(expected) = &state.api_key {
        let presented = routes::presented_key(req.headers());
        if !presented.is_some_and(|k| routes::same_key(k.as_bytes(), expected.as_bytes())) {
            return None;
        }
    }
    let path = req.uri().path();
    if path == BROADCAST {
        return Some(PushTarget::Broadcast);
    }
    let (what, name) = if let Some(name) = path.strip_prefix(ROOM) {
        ("room", name)
    } else if let Some(name) = path.strip_prefix(USER) {
        ("user", name)
    } else {
        return None;
    };
    if name.contains(['/', '%']) || routes::check_name(what, name).is_err() {
        return None;
    }
    Some(match what {
        "room" => PushTarget::Room(name.to_owned()),
        _ => PushTarget::User(name.to_owned()),
    })
}

const BROADCAST: &str = "/v1/broadcast";
const ROOM: &str = "/v1/push/room/";
const USER: &str = "/v1/push/user/";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminConfig;
    use crate::http::testing::PushEcho;
    use std::sync::Arc;

    fn app(config: &AdminConfig, fast: bool) -> App {
        let (router, state) =
            routes::app_state(Arc::new(PushEcho), config, routes::default_pages(config));
        App::new(router, fast.then_some(state))
    }

    struct Case {
        method: &'static str,
        uri: String,
        headers: Vec<(&'static str, String)>,
        body: String,
        /// Whether the fast path serves it (the rest go to the router).
        fast: bool,
    }

    fn case(method: &'static str, uri: &str, body: &str, fast: bool) -> Case {
        Case {
            method,
            uri: uri.to_owned(),
            headers: vec![],
            body: body.to_owned(),
            fast,
        }
    }

    fn with(mut c: Case, name: &'static str, value: &str) -> Case {
        c.headers.push((name, value.to_owned()));
        c
    }

    fn request(c: &Case, content_length: bool) -> Request<Body> {
        let mut b = Request::builder().method(c.method).uri(&c.uri);
        if content_length {
            b = b.header(header::CONTENT_LENGTH, c.body.len());
        }
        for (name, value) in &c.headers {
            b = b.header(*name, value);
        }
        b.body(Body::from(c.body.clone())).unwrap()
    }

    async fn answer(app: &App, req: Request<Body>) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let resp = app.clone().call(req).await;
        let status = resp.status().as_u16();
        let mut headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        headers.sort();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    fn cases(max_body: usize) -> Vec<Case> {
        let ok = r#"{"payload":"hi"}"#;
        let long = "a".repeat(routes::MAX_NAME_LEN + 1);
        let big = format!(r#"{{"payload":"{}"}}"#, "x".repeat(max_body));
        vec![
            case("POST", "/v1/push/room/lobby", ok, true),
            case(
                "POST",
                "/v1/push/room/lobby",
                r#"{"payload":"hi","urgent":true}"#,
                true,
            ),
            case(
                "POST",
                "/v1/push/user/u1",
                r#"{"payload_base64":"aGk="}"#,
                true,
            ),
            case("POST", "/v1/broadcast", ok, true),
            case("POST", "/v1/push/room/gone", ok, true),
            case("POST", "/v1/push/room/lobby?wait=delivered", ok, false),
            case("POST", "/v1/push/room/lobby?wait=soon", ok, false),
            case("POST", "/v1/push/room/lobby", "{not json", false),
            case(
                "POST",
                "/v1/push/room/lobby",
                r#"{"payload":"a","extra":1}"#,
                false,
            ),
            case(
                "POST",
                "/v1/push/room/lobby",
                r#"{"payload":"a","payload_base64":"YQ=="}"#,
                false,
            ),
            case(
                "POST",
                "/v1/push/room/lobby",
                r#"{"payload_base64":"!!"}"#,
                false,
            ),
            case("POST", "/v1/push/room/lobby", "{}", false),
            case("POST", "/v1/push/room/caf%C3%A9", ok, false),
            case("POST", "/v1/push/room/a%20b", ok, false),
            case("POST", &format!("/v1/push/room/{long}"), ok, false),
            case("POST", "/v1/push/room/", ok, false),
            case("POST", "/v1/push/room/a/b", ok, false),
            case("POST", "/v1/push/rooms/a", ok, false),
            case("GET", "/v1/push/room/lobby", "", false),
            case("PUT", "/v1/broadcast", ok, false),
            case("POST", "/v1/push/room/lobby", &big, false),
            with(
                case("POST", "/v1/push/room/k", ok, true),
                "idempotency-key",
                "k-1",
            ),
            with(
                case("POST", "/v1/push/room/k", ok, true),
                "idempotency-key",
                "k-1",
            ),
            with(
                case("POST", "/v1/push/room/k", r#"{"payload":"other"}"#, true),
                "idempotency-key",
                "k-1",
            ),
            with(
                case("POST", "/v1/push/room/k", ok, false),
                "idempotency-key",
                "",
            ),
            with(
                case("POST", "/v1/push/room/k", ok, false),
                "idempotency-key",
                &"k".repeat(300),
            ),
        ]
    }

    async fn compare(config: &AdminConfig, cases: &[Case]) {
        let (fast, slow) = (app(config, true), app(config, false));
        let (_, state) =
            routes::app_state(Arc::new(PushEcho), config, routes::default_pages(config));
        for c in cases {
            let served_fast = plain_push(&state, &request(c, true)).is_some();
            assert!(
                !c.fast || served_fast,
                "{} {} should take the fast path",
                c.method,
                c.uri
            );
            for content_length in [true, false] {
                let a = answer(&fast, request(c, content_length)).await;
                let b = answer(&slow, request(c, content_length)).await;
                assert_eq!(
                    a, b,
                    "{} {} (content-length: {content_length}): the fast path's answer (left) \
                     differs from the router's",
                    c.method, c.uri
                );
            }
        }
    }

    #[tokio::test]
    async fn the_fast_path_answers_exactly_as_the_router_does() {
        let config = AdminConfig {
            max_body_size: 4096,
            ..AdminConfig::default()
        };
        compare(&config, &cases(4096)).await;
    }

    #[tokio::test]
    async fn with_an_api_key_the_fast_path_answers_exactly_as_the_router_does() {
        let config = AdminConfig {
            api_key: Some("sekrit".into()),
            max_body_size: 4096,
            ..AdminConfig::default()
        };
        let ok = r#"{"payload":"hi"}"#;
        let cases = vec![
            case("POST", "/v1/push/room/lobby", ok, false),
            with(
                case("POST", "/v1/push/room/lobby", ok, false),
                "x-api-key",
                "wrong",
            ),
            with(
                case("POST", "/v1/push/room/lobby", ok, true),
                "x-api-key",
                "sekrit",
            ),
            with(
                case("POST", "/v1/broadcast", ok, true),
                "authorization",
                "Bearer sekrit",
            ),
            with(
                case("POST", "/v1/push/room/a%20b", ok, false),
                "x-api-key",
                "sekrit",
            ),
        ];
        compare(&config, &cases).await;
    }

    #[test]
    fn the_fast_path_serves_only_listed_routes() {
        for path in ["/v1/push/room/{room}", "/v1/push/user/{user}", BROADCAST] {
            assert!(
                routes::ROUTES.contains(&("POST", path)),
                "{path} is not a route any more"
            );
        }
        assert!(format!("{ROOM}{{room}}") == "/v1/push/room/{room}");
        assert!(format!("{USER}{{user}}") == "/v1/push/user/{user}");
    }
}
