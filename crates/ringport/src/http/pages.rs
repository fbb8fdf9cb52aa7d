//! Browser pages on the admin listener: the operator dashboard (`GET /dashboard`) and the
//! live-comment demo (`GET /demo`, its token endpoint and the JavaScript SDK it loads).
//!
//! The pages are static HTML with their script inline, compiled into the binary
//! (`include_str!`), so they work without a CDN or the internet. They are served without
//! the API key — they hold no data:
//! - the dashboard asks the operator for the key and sends it on every `/v1` and `/metrics`
//!   request it makes, exactly as any API client does;
//! - the demo, off unless `admin.demo = true`, connects to the client port over WebSocket;
//!   when `auth.secret` is set it fetches a short-lived token from `GET /demo/token`, which
//!   mints one for a random guest user admitted to rooms `demo.*` (the operator's consent
//!   to that is `admin.demo = true`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::routes::{ApiError, AppState};
use crate::config::Config;

/// Rooms a demo token admits (and the prefix of the demo page's room).
pub const DEMO_ROOMS: &str = "demo.*";

const DEMO_HTML: &str = include_str!("web/demo.html");
const DASHBOARD_HTML: &str = include_str!("web/dashboard.html");

/// The SDK's modules as the demo imports them: `/sdk/client.js` imports `./session.js` and
/// `./codec.js`, which resolve to the other two. `src/http/web/sdk/` holds symbolic links to
/// `sdk/js/src` (one source, no copy), which `cargo package` follows, so the packaged crate
/// carries the files; the test `served_sdk_is_the_sdk` checks every SDK module is served.
const SDK_FILES: &[(&str, &str)] = &[
    ("client.js", include_str!("web/sdk/client.js")),
    ("session.js", include_str!("web/sdk/session.js")),
    ("codec.js", include_str!("web/sdk/codec.js")),
];

/// Where the pages' `{{CONFIG}}` placeholder sits; replaced by a JSON object.
const CONFIG_PLACEHOLDER: &str = "{{CONFIG}}";

/// What the pages need to know beyond `[admin]`: the client port and the token secret.
#[derive(Clone)]
pub struct WebPages {
    /// `admin.demo`.
    demo: bool,
    /// `admin.demo_ws_url`, or `None` to derive it in the page from its own host.
    ws_url: Option<String>,
    /// Port of the client listener (the bound one, so port 0 resolves).
    ws_port: u16,
    /// `websocket.path`.
    ws_path: String,
    /// `websocket.enabled`: the demo says so instead of failing to connect forever.
    ws_enabled: bool,
    /// `auth.secret`: demo tokens are signed with it; `None` = clients are anonymous.
    secret: Option<Arc<[u8]>>,
    /// `admin.demo_token_ttl_ms`.
    token_ttl: Duration,
}

impl std::fmt::Debug for WebPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPages")
            .field("demo", &self.demo)
            .field("ws_url", &self.ws_url)
            .field("ws_port", &self.ws_port)
            .field("secret", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl WebPages {
    /// The pages of a gateway running `config` whose client listener is bound to `clients`.
    pub fn new(config: &Config, clients: SocketAddr) -> WebPages {
        WebPages {
            demo: config.admin.demo,
            ws_url: config.admin.demo_ws_url.clone(),
            ws_port: clients.port(),
            ws_path: config.websocket.path.clone(),
            ws_enabled: config.websocket.enabled,
            secret: config.auth.secret.as_ref().map(|s| Arc::from(s.as_bytes())),
            token_ttl: Duration::from_millis(config.admin.demo_token_ttl_ms),
        }
    }

    /// The JSON the demo page reads (camelCase for JavaScript).
    fn demo_config(&self) -> serde_json::Value {
        serde_json::json!({
            "wsUrl": self.ws_url,
            "wsPort": self.ws_port,
            "wsPath": self.ws_path,
            "websocket": self.ws_enabled,
            "tokenRequired": self.secret.is_some(),
            "roomPrefix": DEMO_ROOMS.trim_end_matches('*'),
        })
    }
}

/// `page` with its config placeholder replaced by `config`, `<` escaped so no value can
/// close the script element it sits in.
fn render(page: &str, config: &serde_json::Value) -> String {
    let json = config.to_string().replace('<', "\\u003c");
    page.replacen(CONFIG_PLACEHOLDER, &json, 1)
}

/// A page or script answer: never cached (a new binary serves new pages), not sniffed,
/// loadable only from this listener.
fn asset(content_type: &'static str, body: String) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

fn demo_disabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "demo_disabled",
        "the demo is off; set admin.demo = true to serve it",
    )
}

/// `GET /dashboard`.
pub(super) async fn dashboard() -> Response {
    asset(
        "text/html; charset=utf-8",
        render(DASHBOARD_HTML, &serde_json::json!({})),
    )
}

/// `GET /demo`.
pub(super) async fn demo(State(s): State<AppState>) -> Result<Response, ApiError> {
    if !s.pages.demo {
        return Err(demo_disabled());
    }
    Ok(asset(
        "text/html; charset=utf-8",
        render(DEMO_HTML, &s.pages.demo_config()),
    ))
}

/// `GET /sdk/{file}`.
pub(super) async fn sdk_file(
    State(s): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    if !s.pages.demo {
        return Err(demo_disabled());
    }
    let (_, text) = SDK_FILES
        .iter()
        .find(|(name, _)| *name == file)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such SDK file"))?;
    Ok(asset("text/javascript; charset=utf-8", (*text).to_owned()))
}

/// `GET /demo/token`: `{"token", "user", "expires_in_ms"}`; an empty token and no user when
/// no secret is set (clients are anonymous then).
pub(super) async fn demo_token(State(s): State<AppState>) -> Result<Response, ApiError> {
    let pages = &s.pages;
    if !pages.demo {
        return Err(demo_disabled());
    }
    let body = match &pages.secret {
        None => serde_json::json!({ "token": "", "user": null, "expires_in_ms": null }),
        Some(secret) => {
            let mut id = [0u8; 4];
            getrandom::fill(&mut id).map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("no randomness for a guest id: {e}"),
                )
            })?;
            let user = format!("guest-{:08x}", u32::from_be_bytes(id));
            let token = crate::auth::mint(
                &user,
                &[DEMO_ROOMS.to_owned()],
                pages.token_ttl,
                secret,
                SystemTime::now(),
            )
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            })?;
            tracing::debug!(%user, "demo token minted");
            serde_json::json!({
                "token": token,
                "user": user,
                "expires_in_ms": pages.token_ttl.as_millis() as u64,
            })
        }
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Whether `path` is one of the pages above (served without the API key).
pub fn is_page(path: &str) -> bool {
    match path {
        "/demo" | "/demo/token" | "/dashboard" => true,
        _ => path
            .strip_prefix("/sdk/")
            .is_some_and(|file| !file.is_empty() && !file.contains('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is served equals `sdk/js/src` byte for byte and covers every module (in the
    /// workspace; a packaged crate has no `sdk/js` beside it). A new SDK module needs a link in
    /// `crates/ringport/src/http/web/sdk/` and an entry in `SDK_FILES`.
    #[test]
    fn served_sdk_is_the_sdk() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let sdk = root.join("sdk/js/src");
        if !root.join("Cargo.toml").exists() || !sdk.exists() {
            return;
        }
        let mut names: Vec<String> = std::fs::read_dir(&sdk)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".js"))
            .collect();
        names.sort();
        let mut served: Vec<&str> = SDK_FILES.iter().map(|(n, _)| *n).collect();
        served.sort();
        assert_eq!(names, served, "every module of sdk/js/src is served");
        for (name, text) in SDK_FILES {
            let original = std::fs::read_to_string(sdk.join(name)).unwrap();
            assert!(
                original == *text,
                "crates/ringport/src/http/web/sdk/{name} differs from sdk/js/src/{name}: \
                 it should be a symbolic link to it"
            );
        }
    }

    #[test]
    fn pages_carry_their_placeholder_once() {
        for page in [DEMO_HTML, DASHBOARD_HTML] {
            assert_eq!(page.matches(CONFIG_PLACEHOLDER).count(), 1);
        }
    }

    #[test]
    fn config_cannot_close_the_script() {
        let out = render(
            "<script>{{CONFIG}}</script>",
            &serde_json::json!({ "wsUrl": "</script><b>" }),
        );
        assert_eq!(out.matches("</script>").count(), 1, "{out}");
    }

    #[test]
    fn public_paths() {
        for p in ["/demo", "/demo/token", "/dashboard", "/sdk/client.js"] {
            assert!(is_page(p), "{p}");
        }
        for p in [
            "/v1/stats",
            "/metrics",
            "/sdk/",
            "/sdk/a/b",
            "/demo/x",
            "/dashboard/x",
        ] {
            assert!(!is_page(p), "{p}");
        }
    }
}
