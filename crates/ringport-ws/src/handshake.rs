//! The opening handshake (RFC 6455 §4): the server's check of the HTTP/1.1 upgrade request
//! and its answer, and the client's request and check of the answer.
//!
//! The request is parsed with `httparse` from the front of the caller's buffer; an incomplete
//! request is `Ok(None)` until it reaches `max_request` bytes, then [`HandshakeError::TooLarge`]
//! (answered `431`). Bytes after the request (frames a client sent without waiting for the
//! `101`) stay in the buffer for the frame decoder.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 §1.3, appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Most headers accepted in a request or response (more: `431`).
pub const MAX_HEADERS: usize = 32;

/// What the server accepts.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig<'a> {
    /// The request path (a query string after it is allowed and ignored).
    pub path: &'a str,
    /// The subprotocol the client must offer.
    pub protocol: &'a str,
    /// Largest request (request line and headers) in bytes.
    pub max_request: usize,
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Bytes of the request at the front of the buffer (remove them).
    pub consumed: usize,
    /// The `101 Switching Protocols` answer to send.
    pub response: Vec<u8>,
}

/// Why a handshake failed. The server answers with [`HandshakeError::response`] and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request (or response) passed the size limit before it was complete (`431`).
    TooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// More than [`MAX_HEADERS`] headers (`431`).
    TooManyHeaders,
    /// Not HTTP, or not well-formed HTTP/1.1 (`400`).
    Malformed(String),
    /// A method other than GET (`405`).
    Method(String),
    /// Not the WebSocket path (`404`).
    NotFound(String),
    /// No `Host` header (`400`, RFC 6455 §4.1 item 4).
    MissingHost,
    /// `Upgrade: websocket` or `Connection: Upgrade` missing (`426`).
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13 (`426` with `Sec-WebSocket-Version: 13`).
    WsVersion(String),
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64 (`400`).
    BadKey,
    /// The client did not offer the required subprotocol (`400`), or the server did not
    /// select it (client side).
    Subprotocol(String),
    /// Client side: the server answered with this status instead of `101`.
    Refused(u16),
    /// Client side: `Sec-WebSocket-Accept` does not match the key sent.
    BadAccept,
}

impl HandshakeError {
    /// The HTTP status the server answers with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::TooLarge { .. } | HandshakeError::TooManyHeaders => 431,
            HandshakeError::Method(_) => 405,
            HandshakeError::NotFound(_) => 404,
            HandshakeError::NotUpgrade | HandshakeError::WsVersion(_) => 426,
            _ => 400,
        }
    }

    /// A short stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::TooLarge { .. } => "too_large",
            HandshakeError::TooManyHeaders => "too_many_headers",
            HandshakeError::Malformed(_) => "malformed",
            HandshakeError::Method(_) => "method",
            HandshakeError::NotFound(_) => "not_found",
            HandshakeError::MissingHost => "missing_host",
            HandshakeError::NotUpgrade => "not_upgrade",
            HandshakeError::WsVersion(_) => "version",
            HandshakeError::BadKey => "bad_key",
            HandshakeError::Subprotocol(_) => "subprotocol",
            HandshakeError::Refused(_) => "refused",
            HandshakeError::BadAccept => "bad_accept",
        }
    }

    /// Every label a server-side error can have (metrics pre-register them).
    pub const SERVER_LABELS: [&'static str; 10] = [
        "too_large",
        "too_many_headers",
        "malformed",
        "method",
        "not_found",
        "missing_host",
        "not_upgrade",
        "version",
        "bad_key",
        "subprotocol",
    ];

    /// The complete HTTP answer: the status, `Connection: close` and the error as text.
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let phrase = match status {
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let body = format!("{self}\n");
        let mut extra = String::new();
        if status == 426 {
            extra.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        }
        if status == 405 {
            extra.push_str("Allow: GET\r\n");
        }
        format!(
            "HTTP/1.1 {status} {phrase}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::TooLarge { max } => write!(f, "request over {max} bytes"),
            HandshakeError::TooManyHeaders => write!(f, "more than {MAX_HEADERS} headers"),
            HandshakeError::Malformed(e) => write!(f, "malformed HTTP request: {e}"),
            HandshakeError::Method(m) => write!(f, "method {m}: only GET upgrades"),
            HandshakeError::NotFound(p) => write!(f, "no WebSocket endpoint at {p}"),
            HandshakeError::MissingHost => f.write_str("Host header missing"),
            HandshakeError::NotUpgrade => {
                f.write_str("not a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)")
            }
            HandshakeError::WsVersion(v) => {
                write!(f, "Sec-WebSocket-Version {v:?}: only 13 is supported")
            }
            HandshakeError::BadKey => f.write_str("Sec-WebSocket-Key missing or not 16 bytes"),
            HandshakeError::Subprotocol(p) => {
                write!(f, "subprotocol {p} required (Sec-WebSocket-Protocol)")
            }
            HandshakeError::Refused(s) => write!(f, "server answered HTTP {s}, not 101"),
            HandshakeError::BadAccept => f.write_str("Sec-WebSocket-Accept does not match"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)) (§4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A `Sec-WebSocket-Key` from 16 random bytes (the caller supplies the randomness).
pub fn client_key(random: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(random)
}

/// The header's value, if present (names compare case-insensitively).
fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether a comma-separated header contains `token` (case-insensitively), across every
/// occurrence of the header.
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn parse_error(e: httparse::Error) -> HandshakeError {
    match e {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders,
        e => HandshakeError::Malformed(e.to_string()),
    }
}

/// Checks the upgrade request at the front of `buf` (`Ok(None)`: incomplete, read more).
pub fn accept(buf: &[u8], cfg: &ServerConfig<'_>) -> Result<Option<Accepted>, HandshakeError> {
    let too_large = HandshakeError::TooLarge {
        max: cfg.max_request,
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf).map_err(parse_error)? {
        httparse::Status::Partial if buf.len() >= cfg.max_request => return Err(too_large),
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) if n > cfg.max_request => return Err(too_large),
        httparse::Status::Complete(n) => n,
    };
    let method = req.method.unwrap_or_default();
    if method != "GET" {
        return Err(HandshakeError::Method(method.to_owned()));
    }
    if req.version != Some(1) {
        return Err(HandshakeError::Malformed(
            "HTTP/1.1 or later required".into(),
        ));
    }
    let target = req.path.unwrap_or_default();
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != cfg.path {
        return Err(HandshakeError::NotFound(path.to_owned()));
    }
    let headers = req.headers;
    if header(headers, "host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !has_token(headers, "upgrade", "websocket") || !has_token(headers, "connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    match header(headers, "sec-websocket-version") {
        Some(b"13") => {}
        v => {
            let v = v.map(String::from_utf8_lossy).unwrap_or_default();
            return Err(HandshakeError::WsVersion(v.into_owned()));
        }
    }
    let key = header(headers, "sec-websocket-key")
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::trim)
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|raw| raw.len() == 16)
        })
        .ok_or(HandshakeError::BadKey)?;
    if !has_token(headers, "sec-websocket-protocol", cfg.protocol) {
        return Err(HandshakeError::Subprotocol(cfg.protocol.to_owned()));
    }
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        accept_key(key),
        cfg.protocol
    )
    .into_bytes();
    Ok(Some(Accepted { consumed, response }))
}

/// The client's upgrade request for `path` on `host` (the `Host` header, with the port when
/// not the default) offering `protocol`, with `key` from [`client_key`].
pub fn client_request(host: &str, path: &str, protocol: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
    .into_bytes()
}

/// Client side: checks the server's answer at the front of `buf` to a request sent with
/// `key`; `Ok(Some(n))`: upgraded, the first `n` bytes were the answer.
pub fn check_response(
    buf: &[u8],
    key: &str,
    protocol: &str,
    max: usize,
) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf).map_err(parse_error)? {
        httparse::Status::Partial if buf.len() >= max => {
            return Err(HandshakeError::TooLarge { max })
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    let code = resp.code.unwrap_or_default();
    if code != 101 {
        return Err(HandshakeError::Refused(code));
    }
    let headers = resp.headers;
    if !has_token(headers, "upgrade", "websocket") || !has_token(headers, "connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if header(headers, "sec-websocket-accept") != Some(accept_key(key).as_bytes()) {
        return Err(HandshakeError::BadAccept);
    }
    if header(headers, "sec-websocket-protocol") != Some(protocol.as_bytes()) {
        return Err(HandshakeError::Subprotocol(protocol.to_owned()));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: ServerConfig<'static> = ServerConfig {
        path: "/ringport",
        protocol: "ringport.v1",
        max_request: 4096,
    };

    fn request(extra: &str) -> String {
        format!(
            "GET /ringport HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, ringport.v1\r\n{extra}\r\n"
        )
    }

    #[test]
    fn rfc_example_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_a_valid_request_and_leaves_what_follows() {
        let mut bytes = request("").into_bytes();
        let len = bytes.len();
        bytes.extend_from_slice(b"\x82\x80abcd");
        let a = accept(&bytes, &CFG).unwrap().unwrap();
        assert_eq!(a.consumed, len);
        let resp = String::from_utf8(a.response).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 "));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: ringport.v1\r\n"));
    }

    #[test]
    fn incomplete_then_too_large() {
        let r = request("");
        assert_eq!(accept(&r.as_bytes()[..r.len() - 1], &CFG), Ok(None));
        let huge = format!("GET /ringport HTTP/1.1\r\nX: {}", "a".repeat(5000));
        assert_eq!(
            accept(huge.as_bytes(), &CFG),
            Err(HandshakeError::TooLarge { max: 4096 })
        );
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            accept(request(&many).as_bytes(), &CFG),
            Err(HandshakeError::TooManyHeaders)
        );
    }

    #[test]
    fn every_refusal_has_its_status() {
        let r = request("");
        let cases: Vec<(String, u16)> = vec![
            (r.replacen("GET", "POST", 1), 405),
            (r.replacen("/ringport", "/other", 1), 404),
            (r.replacen("HTTP/1.1", "HTTP/1.0", 1), 400),
            (r.replacen("Host: localhost\r\n", "", 1), 400),
            (r.replacen("Upgrade: websocket\r\n", "", 1), 426),
            (r.replacen("keep-alive, Upgrade", "keep-alive", 1), 426),
            (r.replacen("Version: 13", "Version: 8", 1), 426),
            (r.replacen("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 1), 400),
            (r.replacen("chat, ringport.v1", "chat", 1), 400),
            ("\x16\x03\x01garbage\r\n\r\n".into(), 400),
        ];
        for (req, status) in cases {
            let e = accept(req.as_bytes(), &CFG).unwrap_err();
            assert_eq!(e.status(), status, "{req:?}: {e}");
            let resp = String::from_utf8(e.response()).unwrap();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
            assert!(resp.contains("Connection: close\r\n"));
        }
    }

    #[test]
    fn query_string_is_ignored() {
        let r = request("").replacen("/ringport", "/ringport?x=1", 1);
        assert!(accept(r.as_bytes(), &CFG).unwrap().is_some());
    }

    #[test]
    fn client_and_server_agree() {
        let key = client_key([7; 16]);
        let req = client_request("localhost:7000", "/ringport", "ringport.v1", &key);
        let a = accept(&req, &CFG).unwrap().unwrap();
        assert_eq!(a.consumed, req.len());
        let n = check_response(&a.response, &key, "ringport.v1", 4096).unwrap();
        assert_eq!(n, Some(a.response.len()));
        let other = client_key([8; 16]);
        assert_eq!(
            check_response(&a.response, &other, "ringport.v1", 4096),
            Err(HandshakeError::BadAccept)
        );
        let refused = HandshakeError::BadKey.response();
        assert_eq!(
            check_response(&refused, &key, "ringport.v1", 4096),
            Err(HandshakeError::Refused(400))
        );
    }
}
