//! How a client connection's bytes are framed: the native protocol straight on the stream,
//! or WebSocket (RFC 6455) carrying the same frames, told apart by the first bytes.
//!
//! ```text
//!  engine bytes ─► [Tls: rustls unbuffered]   ─► Native | WebSocket ─► Session
//!                    first byte 0x16                 ├ Native:    bytes are protocol frames
//!                                                    └ WebSocket: upgrade request, then
//!                                                      ringport_ws::Decoder; binary message
//!                                                      payloads are protocol frames
//!  Session frames ─► Native: as they are │ WebSocket: one binary message each ─► [Tls] ─► engine
//! ```
//!
//! A native connection's first byte is the protocol version (1); an upgrade request starts
//! with `GET `; a TLS connection's first byte is 0x16 (a handshake record). So the first
//! byte decides TLS (when `[tls]` is configured) and the first four bytes of the plaintext
//! decide native or WebSocket; nothing is sent before they do. TLS (`gateway/tls.rs`) sits
//! *under* the other two: it turns ciphertext from the engine into the plaintext they read
//! and encrypts what they produce, so neither the sniffing nor the WebSocket framing knows
//! about it.

use bytes::BytesMut;
use ringport_proto::CloseReason;
use ringport_ws::{CloseCode, Decoder, Role};

/// The `[websocket]` settings the shards use (`None` in [`super::Shared`] when disabled).
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    /// `websocket.path`.
    pub path: String,
    /// `websocket.max_request_bytes`.
    pub max_request: usize,
    /// `websocket.max_message_bytes`.
    pub max_message: u64,
}

impl WsSettings {
    pub fn from_config(c: &crate::config::Config) -> Option<WsSettings> {
        let ws = &c.websocket;
        ws.enabled.then(|| WsSettings {
            path: ws.path.clone(),
            max_request: ws.max_request_bytes as usize,
            max_message: ws.max_message(c.protocol.max_payload),
        })
    }
}

/// How a connection's bytes are framed, decided by its first bytes (until then a connection
/// is `Native` with `Conn::sniffed` false). Two variants around a box: the enum is one
/// pointer (8 bytes per connection), and native connections (the many) pay nothing more.
#[derive(Debug)]
pub(crate) enum Transport {
    /// ringport frames directly on the stream.
    Native,
    /// WebSocket or TLS, in one box (two boxed variants would need a tag: 16 bytes).
    Layered(Box<Layer>),
}

/// The state of a connection that is not plain native.
#[derive(Debug)]
pub(crate) enum Layer {
    /// WebSocket: the upgrade request, then frames.
    WebSocket(WsConn),
    /// TLS, with `Native` or `WebSocket` inside (`gateway/tls.rs`); boxed again so that a
    /// WebSocket connection's box is not the size of a rustls session.
    Tls(Box<super::tls::TlsConn>),
}

impl Transport {
    /// Decides from the first bytes in `head` (which move to the WebSocket state if it is
    /// one); `None` while fewer than four bytes, all a prefix of `GET `, have arrived (they
    /// wait in `Conn::rx`).
    pub fn sniff(head: &mut BytesMut, ws: Option<&WsSettings>) -> Option<Transport> {
        const GET: &[u8] = b"GET ";
        let Some(ws) = ws else {
            return Some(Transport::Native);
        };
        if head.len() < GET.len() {
            return (!GET.starts_with(head)).then_some(Transport::Native);
        }
        if !head.starts_with(GET) {
            return Some(Transport::Native);
        }
        Some(Transport::Layered(Box::new(Layer::WebSocket(WsConn {
            upgraded: false,
            responded: false,
            raw: std::mem::take(head),
            decoder: Decoder::new(Role::Server, ws.max_message),
            error: None,
            close_sent: false,
            close_received: false,
        }))))
    }

    /// Capacity of the bytes held below the session (the WebSocket raw buffer, TLS records
    /// waiting for their rest).
    pub fn held(&self) -> usize {
        self.ws().map_or(0, |ws| ws.raw.capacity()) + self.tls().map_or(0, |t| t.held())
    }

    /// The WebSocket state, also inside TLS.
    pub fn ws(&self) -> Option<&WsConn> {
        match self {
            Transport::Layered(l) => match &**l {
                Layer::WebSocket(ws) => Some(ws),
                Layer::Tls(t) => t.inner.ws(),
            },
            Transport::Native => None,
        }
    }

    /// The WebSocket state, also inside TLS.
    pub fn ws_mut(&mut self) -> Option<&mut WsConn> {
        match self {
            Transport::Layered(l) => match &mut **l {
                Layer::WebSocket(ws) => Some(ws),
                Layer::Tls(t) => t.inner.ws_mut(),
            },
            Transport::Native => None,
        }
    }

    /// A TLS connection's state.
    pub fn tls(&self) -> Option<&super::tls::TlsConn> {
        match self {
            Transport::Layered(l) => match &**l {
                Layer::Tls(t) => Some(t),
                Layer::WebSocket(_) => None,
            },
            Transport::Native => None,
        }
    }

    /// A TLS connection's state.
    pub fn tls_mut(&mut self) -> Option<&mut super::tls::TlsConn> {
        match self {
            Transport::Layered(l) => match &mut **l {
                Layer::Tls(t) => Some(t),
                Layer::WebSocket(_) => None,
            },
            Transport::Native => None,
        }
    }

    /// A TLS connection around `t`.
    pub fn tls_over(t: super::tls::TlsConn) -> Transport {
        Transport::Layered(Box::new(Layer::Tls(Box::new(t))))
    }

    /// Whether session frames go out as WebSocket binary messages: `None` native (or not
    /// yet decided), `Some(true)` upgraded and no Close sent yet, `Some(false)` not now (HTTP
    /// phase, or after our Close: RFC 6455 §5.5.1 forbids data after it).
    pub fn ws_sending(&self) -> Option<bool> {
        self.ws().map(|ws| ws.upgraded && !ws.close_sent)
    }
}

/// The WebSocket state of one connection.
#[derive(Debug)]
pub(crate) struct WsConn {
    /// The `101` was sent: the bytes are frames now.
    pub upgraded: bool,
    /// An HTTP answer (`101` or an error) was sent.
    pub responded: bool,
    /// Bytes not yet decoded: the request, then at most an incomplete frame header or
    /// control frame (data payloads are passed on as they arrive).
    pub raw: BytesMut,
    /// The frame decoder (RFC 6455 §5 rules, message size limit).
    pub decoder: Decoder,
    /// A WebSocket-level error to close with, instead of the code mapped from the session's
    /// close reason: `(code, reason text)`.
    pub error: Option<(CloseCode, String)>,
    /// Our Close frame was queued.
    pub close_sent: bool,
    /// The peer's Close frame arrived.
    pub close_received: bool,
}

/// The WebSocket close code for a ringport close reason (docs/protocol.md, "WebSocket"):
/// NORMAL → 1000, GOING_AWAY → 1001, every other reason → 4000 + its code.
pub(crate) fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::NORMAL => CloseCode::NORMAL,
        CloseReason::GOING_AWAY => CloseCode::GOING_AWAY,
        r => CloseCode(CloseCode::RINGPORT_BASE.saturating_add(r.0.min(999))),
    }
}

/// The HTTP answer to a connection that sent (part of) an upgrade request and is closed by
/// the session before the upgrade (handshake deadline, admission refusal).
pub(crate) fn http_refusal(reason: CloseReason) -> Vec<u8> {
    let (status, phrase, body) = match reason {
        CloseReason::HANDSHAKE_TIMEOUT => (408, "Request Timeout", "handshake timeout\n"),
        CloseReason::GOING_AWAY => (503, "Service Unavailable", "server shutting down\n"),
        CloseReason::POLICY => (503, "Service Unavailable", "refused by policy\n"),
        _ => (400, "Bad Request", "closed\n"),
    };
    format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WsSettings {
        WsSettings {
            path: "/ringport".into(),
            max_request: 4096,
            max_message: 1024,
        }
    }

    #[test]
    fn first_bytes_decide() {
        let s = settings();
        let mut b = BytesMut::from(&b"GE"[..]);
        assert!(Transport::sniff(&mut b, Some(&s)).is_none(), "undecided");
        let mut b = BytesMut::from(&b"GET /ringport"[..]);
        assert!(Transport::sniff(&mut b, Some(&s)).is_some_and(|t| t.ws().is_some()));
        assert!(b.is_empty(), "the request moved to the WebSocket state");
        let mut b = BytesMut::from(&[1u8, 1, 0, 0][..]);
        assert!(matches!(
            Transport::sniff(&mut b, Some(&s)),
            Some(Transport::Native)
        ));
        let mut b = BytesMut::from(&b"G"[..]);
        assert!(matches!(
            Transport::sniff(&mut b, None),
            Some(Transport::Native)
        ));
        let mut b = BytesMut::from(&b"GEX"[..]);
        assert!(matches!(
            Transport::sniff(&mut b, Some(&s)),
            Some(Transport::Native)
        ));
        assert_eq!(
            std::mem::size_of::<Transport>(),
            8,
            "one pointer per connection"
        );
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(CloseReason::NORMAL), CloseCode::NORMAL);
        assert_eq!(close_code(CloseReason::GOING_AWAY), CloseCode::GOING_AWAY);
        assert_eq!(close_code(CloseReason::AUTH_FAILED), CloseCode(4005));
        assert_eq!(close_code(CloseReason::CONNECTION_LOST), CloseCode(4999));
        for r in 0..=10 {
            assert!(ringport_ws::is_valid_close_code(
                close_code(CloseReason(r)).0
            ));
        }
    }
}
