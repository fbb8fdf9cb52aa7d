//! The admin HTTP API: routes, request parsing and JSON errors.
//!
//! [`ROUTES`] lists every route with its method and the router is built from it alone;
//! `docs/openapi.yaml` must describe exactly these (`tests/openapi.rs` checks both directions).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;

use super::gateway::{Gateway, GatewayError, Push, PushOutcome, PushTarget};
use super::idempotency::{self, Claim, IdempotencyStore};
use super::pages::{self, WebPages};
use crate::config::AdminConfig;
use crate::metrics::CONTENT_TYPE;

/// Every route as `(method, path)`, paths in OpenAPI template syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/push/room/{room}"),
    ("POST", "/v1/push/user/{user}"),
    ("POST", "/v1/broadcast"),
    ("POST", "/v1/publish/batch"),
    ("GET", "/v1/rooms"),
    ("GET", "/v1/rooms/{room}"),
    ("GET", "/v1/rooms/{room}/history"),
    ("GET", "/v1/rooms/{room}/presence"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/connections/{id}"),
    ("DELETE", "/v1/connections/{id}"),
    ("GET", "/v1/users/{user}/receipts"),
    ("GET", "/v1/users/{user}/history"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    // Browser pages (super::pages), served without the API key.
    ("GET", "/dashboard"),
    ("GET", "/demo"),
    ("GET", "/demo/token"),
    ("GET", "/sdk/{file}"),
];

/// Longest room or user name accepted in a path (a stream name on the wire holds 255 bytes).
pub const MAX_NAME_LEN: usize = ringport_proto::MAX_NAME_LEN;
/// Default and largest member sample of `GET /v1/rooms/{room}`.
pub const DEFAULT_MEMBER_SAMPLE: usize = 20;
pub const MAX_MEMBER_SAMPLE: usize = 1000;

/// Default number of rooms `GET /v1/rooms` lists (at most `admin.max_page_size`).
pub const DEFAULT_TOP_ROOMS: usize = 10;

/// Shared state of every handler.
#[derive(Clone)]
pub(super) struct AppState {
    pub gateway: Arc<dyn Gateway>,
    /// The browser pages and what they need to know.
    pub pages: Arc<WebPages>,
    pub api_key: Option<Arc<str>>,
    /// `Idempotency-Key`s of recent pushes (`admin.idempotency_*`).
    pub idempotency: Arc<IdempotencyStore>,
    /// `admin.max_batch_items`.
    pub max_batch_items: usize,
    /// `admin.max_page_size`.
    max_page: usize,
    /// `admin.max_body_size`.
    pub max_body: usize,
}

/// Builds the router from `[admin]`, with pages for a gateway with otherwise default
/// settings (`serve` uses [`router_with_pages`]). `api_key`, when set, is required on every
/// request but the pages'.
pub fn router(gateway: Arc<dyn Gateway>, config: &AdminConfig) -> Router {
    router_with_pages(gateway, config, default_pages(config))
}

/// The pages of a gateway with otherwise default settings.
pub(super) fn default_pages(config: &AdminConfig) -> WebPages {
    WebPages::new(
        &crate::config::Config {
            admin: config.clone(),
            ..Default::default()
        },
        crate::config::ServerConfig::default().listen,
    )
}

/// Builds the router from `[admin]` and the pages' settings.
pub fn router_with_pages(
    gateway: Arc<dyn Gateway>,
    config: &AdminConfig,
    pages: WebPages,
) -> Router {
    app_state(gateway, config, pages).0
}

/// The router and the state its handlers share (the push fast path serves with the same).
pub(super) fn app_state(
    gateway: Arc<dyn Gateway>,
    config: &AdminConfig,
    pages: WebPages,
) -> (Router, AppState) {
    let state = AppState {
        gateway,
        pages: Arc::new(pages),
        api_key: config.api_key.clone().map(Arc::from),
        idempotency: IdempotencyStore::new(
            std::time::Duration::from_millis(config.idempotency_ttl_ms),
            config.idempotency_max_keys as usize,
        ),
        max_batch_items: config.max_batch_items.max(1) as usize,
        max_page: config.max_page_size.max(1) as usize,
        max_body: config.max_body_size as usize,
    };
    let max_body_size = state.max_body;
    // Built from ROUTES alone, so the served routes and the list (which the OpenAPI test
    // reads) cannot drift apart.
    let mut router = Router::new();
    for (method, path) in ROUTES {
        if let Some(handler) = handler(method, path) {
            router = router.route(path, handler);
        }
    }
    router = router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed);
    // Without a key the check would only cost every request a boxed future and a state
    // clone (measured: about 3% of an HTTP push's instructions), so it is left out.
    if state.api_key.is_some() {
        router = router.layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    }
    let router = router
        .layer(DefaultBodyLimit::max(max_body_size))
        .with_state(state.clone());
    (router, state)
}

/// The handler of one `ROUTES` entry (a unit test checks every entry has one).
fn handler(method: &str, path: &str) -> Option<MethodRouter<AppState>> {
    Some(match (method, path) {
        ("POST", "/v1/push/room/{room}") => post(push_room),
        ("POST", "/v1/push/user/{user}") => post(push_user),
        ("POST", "/v1/broadcast") => post(broadcast),
        ("POST", "/v1/publish/batch") => post(super::batch::publish_batch),
        ("GET", "/v1/rooms") => get(top_rooms),
        ("GET", "/v1/rooms/{room}") => get(room_info),
        ("GET", "/v1/rooms/{room}/history") => get(room_history),
        ("GET", "/v1/rooms/{room}/presence") => get(presence),
        ("GET", "/v1/stats") => get(stats),
        ("GET", "/v1/connections/{id}") => get(connection),
        ("DELETE", "/v1/connections/{id}") => delete(kick),
        ("GET", "/v1/users/{user}/receipts") => get(receipts),
        ("GET", "/v1/users/{user}/history") => get(user_history),
        ("GET", "/healthz") => get(healthz),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/dashboard") => get(pages::dashboard),
        ("GET", "/demo") => get(pages::demo),
        ("GET", "/demo/token") => get(pages::demo_token),
        ("GET", "/sdk/{file}") => get(pages::sdk_file),
        _ => return None,
    })
}

/// An error answered as `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> ApiError {
        match e {
            GatewayError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            GatewayError::Rejected(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "rejected", e.to_string())
            }
            GatewayError::NotConfirmed { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_confirmed",
                e.to_string(),
            ),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                r.body_text(),
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    }
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Constant-time comparison (`subtle`), so the key cannot be guessed byte by byte from timing.
/// Only the length may leak, and keys are at least `MIN_API_KEY_LEN` bytes.
pub(super) fn same_key(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

pub(super) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v);
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

async fn require_api_key(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(expected) = state
        .api_key
        .as_ref()
        .filter(|_| !pages::is_page(request.uri().path()))
    {
        let ok = presented_key(request.headers())
            .is_some_and(|k| same_key(k.as_bytes(), expected.as_bytes()));
        if !ok {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong API key (Authorization: Bearer KEY or X-Api-Key: KEY)",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    next.run(request).await
}

/// The JSON body of the push routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    payload: Option<String>,
    payload_base64: Option<String>,
    #[serde(default)]
    urgent: bool,
}

/// Parses a push body: exactly one of `payload` and `payload_base64`.
pub(super) fn parse_push(body: Result<Bytes, BytesRejection>) -> Result<Push, ApiError> {
    let body = body?;
    let parsed: PushBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let payload = decode_payload(parsed.payload, parsed.payload_base64)?;
    Ok(Push::new(payload, parsed.urgent))
}

/// Exactly one of `payload` (text) and `payload_base64`, as bytes.
pub(super) fn decode_payload(
    payload: Option<String>,
    payload_base64: Option<String>,
) -> Result<Bytes, ApiError> {
    Ok(match (payload, payload_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(Bytes::from)
            .map_err(|e| {
                ApiError::bad_request(format!("payload_base64 is not valid base64: {e}"))
            })?,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either payload or payload_base64, not both",
            ))
        }
        (None, None) => return Err(ApiError::bad_request("missing payload or payload_base64")),
    })
}

/// Room and user names: 1..=255 bytes, no whitespace or control characters.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "{what} name must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    // The gateway's one rule for names (docs/protocol.md section 2), on the wire too.
    if !ringport_proto::is_valid_name(name) {
        return Err(ApiError::bad_request(format!(
            "{what} name must not contain whitespace or control characters"
        )));
    }
    Ok(())
}

fn parse_conn_id(id: &str) -> Result<u64, ApiError> {
    id.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("connection id {id:?} is not a decimal u64")))
}

/// `?wait=delivered` on the push routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushQuery {
    wait: Option<String>,
}

pub(super) type PushQueryResult =
    Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>;

/// Whether the query asks to wait for delivery.
pub(super) fn wait_delivered(query: PushQueryResult) -> Result<bool, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match q.wait.as_deref() {
        None | Some("sequenced") => Ok(false),
        Some("delivered") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "wait must be \"delivered\" or \"sequenced\" (got {other:?})"
        ))),
    }
}

/// The `Idempotency-Key` header, if present: 1 to 255 visible ASCII characters.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().unwrap_or("");
    check_key(key)?;
    Ok(Some(key))
}

/// A push's `Idempotency-Key` header, checked. Read from the request's head in place: axum's
/// `HeaderMap` extractor would copy every header of every push.
struct IdempotencyKey(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        Ok(Self(idempotency_key(&parts.headers)?.map(str::to_owned)))
    }
}

pub(super) fn check_key(key: &str) -> Result<(), ApiError> {
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > idempotency::MAX_KEY_LEN || !visible {
        return Err(ApiError::bad_request(format!(
            "an idempotency key must be 1 to {} visible ASCII characters",
            idempotency::MAX_KEY_LEN
        )));
    }
    Ok(())
}

/// Publishes one push, answering a retried idempotency key with its first outcome.
/// Returns the outcome and whether it was replayed from the store.
pub(super) async fn publish_one(
    s: &AppState,
    target: PushTarget,
    push: Push,
    key: Option<&str>,
) -> Result<(PushOutcome, bool), ApiError> {
    let Some(key) = key else {
        return Ok((s.gateway.publish(target, push).await?, false));
    };
    let what = |h: &mut std::collections::hash_map::DefaultHasher| {
        use std::hash::Hash;
        target.hash(h);
        push.payload.hash(h);
        push.urgent.hash(h);
    };
    let ticket = match s.idempotency.claim(key, &what, std::time::Instant::now()) {
        Claim::Done(outcome) => return Ok((outcome, true)),
        Claim::InProgress => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a push with this idempotency key is still being published; retry later",
            ))
        }
        Claim::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this idempotency key was used for a different push",
            ))
        }
        Claim::New(ticket) => ticket,
    };
    match s.gateway.publish(target, push).await {
        Ok(outcome) => {
            ticket.finish(&outcome);
            Ok((outcome, false))
        }
        Err(e) => {
            if let GatewayError::NotConfirmed { outcome, .. } = &e {
                ticket.finish(outcome); // published: a retry must not publish again
            }
            Err(e.into())
        }
    }
}

/// The answer of a push route; a replayed outcome says so in `Idempotent-Replayed`.
async fn push_route(
    s: AppState,
    target: PushTarget,
    query: PushQueryResult,
    key: IdempotencyKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut push = parse_push(body)?;
    push.wait_delivered = wait_delivered(query)?;
    let (outcome, replayed) = publish_one(&s, target, push, key.0.as_deref()).await?;
    Ok(push_answer(outcome, replayed))
}

/// A push route's answer: the outcome, and `Idempotent-Replayed` if it was replayed.
pub(super) fn push_answer(outcome: PushOutcome, replayed: bool) -> Response {
    let mut resp = Json(outcome).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

async fn push_room(
    State(s): State<AppState>,
    Path(room): Path<String>,
    query: PushQueryResult,
    key: IdempotencyKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("room", &room)?;
    push_route(s, PushTarget::Room(room), query, key, body).await
}

async fn push_user(
    State(s): State<AppState>,
    Path(user): Path<String>,
    query: PushQueryResult,
    key: IdempotencyKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name("user", &user)?;
    push_route(s, PushTarget::User(user), query, key, body).await
}

async fn broadcast(
    State(s): State<AppState>,
    query: PushQueryResult,
    key: IdempotencyKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    push_route(s, PushTarget::Broadcast, query, key, body).await
}

/// `?limit=N` of `GET /v1/rooms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopRoomsQuery {
    limit: Option<usize>,
}

async fn top_rooms(
    State(s): State<AppState>,
    query: Result<Query<TopRoomsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_TOP_ROOMS).min(s.max_page);
    Ok(Json(s.gateway.top_rooms(limit).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct RoomQuery {
    sample: Option<usize>,
}

async fn room_info(
    State(s): State<AppState>,
    Path(room): Path<String>,
    query: Result<Query<RoomQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_name("room", &room)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let sample = q
        .sample
        .unwrap_or(DEFAULT_MEMBER_SAMPLE)
        .min(MAX_MEMBER_SAMPLE);
    Ok(Json(s.gateway.room_info(room, sample).await?).into_response())
}

/// `?since=OFFSET&limit=N` of the history routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

/// Default page of the history and presence routes (at most `admin.max_page_size`).
pub const DEFAULT_PAGE: usize = 100;

async fn history(
    s: AppState,
    target: PushTarget,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).min(s.max_page);
    let since = q.since.unwrap_or(0);
    Ok(Json(s.gateway.history(target, since, limit).await?).into_response())
}

async fn room_history(
    State(s): State<AppState>,
    Path(room): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_name("room", &room)?;
    // `*` is the broadcast stream `room:*`: its history is readable too.
    let target = if room == crate::gateway::BROADCAST_ROOM {
        PushTarget::Broadcast
    } else {
        PushTarget::Room(room)
    };
    history(s, target, query).await
}

async fn user_history(
    State(s): State<AppState>,
    Path(user): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_name("user", &user)?;
    history(s, PushTarget::User(user), query).await
}

/// `?after=USER&limit=N` of the presence route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn presence(
    State(s): State<AppState>,
    Path(room): Path<String>,
    query: Result<Query<PresenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check_name("room", &room)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).min(s.max_page);
    Ok(Json(s.gateway.presence(room, q.after, limit).await?).into_response())
}

async fn stats(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(s.gateway.stats().await?).into_response())
}

async fn receipts(
    State(s): State<AppState>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    check_name("user", &user)?;
    Ok(Json(s.gateway.receipts(user).await?).into_response())
}

async fn connection(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_conn_id(&id)?;
    match s.gateway.connection(id).await? {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such connection",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct KickQuery {
    reason: Option<String>,
}

async fn kick(
    State(s): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<KickQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_conn_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if q.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::bad_request("reason must be at most 1024 bytes"));
    }
    if s.gateway.kick(id, q.reason).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such connection",
        ))
    }
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    s.gateway.render_metrics(&mut out);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler() {
        for (method, path) in ROUTES {
            assert!(handler(method, path).is_some(), "{method} {path}");
        }
    }

    #[test]
    fn key_comparison() {
        assert!(same_key(b"abc", b"abc"));
        assert!(!same_key(b"abc", b"abd"));
        assert!(!same_key(b"abc", b"abcd"));
    }

    #[test]
    fn presented_key_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer k1"));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(presented_key(&h), Some("k2"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_key(&h), None);
    }

    #[test]
    fn push_bodies() {
        let ok = |s: &'static str| parse_push(Ok(Bytes::from_static(s.as_bytes())));
        let p = ok(r#"{"payload":"hi","urgent":true}"#).unwrap();
        assert_eq!(p.payload, Bytes::from_static(b"hi"));
        assert!(p.urgent);
        let p = ok(r#"{"payload_base64":"AAEC"}"#).unwrap();
        assert_eq!(&p.payload[..], &[0, 1, 2]);
        assert!(!p.urgent);
        for bad in [
            "",
            "{",
            "{}",
            r#"{"payload":"a","payload_base64":"AA=="}"#,
            r#"{"payload_base64":"!!"}"#,
            r#"{"payload":1}"#,
            r#"{"payload":"a","extra":1}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("room", "chat.lobby").is_ok());
        assert!(check_name("room", "").is_err());
        assert!(check_name("room", "a b").is_err());
        assert!(check_name("room", &"x".repeat(257)).is_err());
    }
}
