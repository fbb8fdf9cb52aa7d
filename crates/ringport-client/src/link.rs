//! The byte stream under the session: TCP, TLS over TCP (`tls://host:port`), WebSocket
//! (`ws://host:port/path`) or WebSocket over TLS (`wss://host:port/path`).
//!
//! The session ([`ringport_proto::ClientSession`]) reads and writes protocol bytes; a
//! [`Link`] carries them. Over WebSocket (docs/protocol.md, section 13) everything the session
//! queued at once leaves as one masked binary message of whole frames, and the payloads of
//! the server's binary messages are handed to the session as they arrive. The framing and
//! the upgrade are `ringport_ws`, the same sans-IO code the gateway runs. TLS is rustls
//! (`tokio-rustls`) between the TCP stream and the framing, with the server's name verified
//! against the roots in [`crate::Options::tls`].
//!
//! Cancel safety: [`Link::read`] is used in `select!`, so its only await is the socket read;
//! WebSocket Pongs it owes are queued and written by the next [`Link::write`], never from
//! inside `read` (a cancelled half-written frame would corrupt the stream).

use std::io::{Error as IoError, ErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use ringport_ws::{
    close_payload, encode_frame, handshake, CloseCode, Decoder, Incoming, OpCode, Role,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Largest server message accepted over WebSocket: a frame of the largest payload the
/// protocol allows (16 MiB, the gateway's upper bound of `protocol.max_payload`) and its header.
const MAX_MESSAGE: u64 = (16 << 20) + 8;
/// Largest `101` answer read.
const MAX_RESPONSE: usize = 16 * 1024;

/// Where to connect, parsed from the address given to `Client::connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` to connect to.
    pub addr: String,
    /// TLS: the name the server's certificate must carry (the URL's host).
    pub tls: Option<String>,
    /// WebSocket: the `Host` header and the request path.
    pub ws: Option<(String, String)>,
}

impl Target {
    pub fn parse(addr: &str) -> Result<Target, IoError> {
        let (scheme, rest) = match addr.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("", addr),
        };
        let (tls, ws, default_port) = match scheme {
            "" => (false, false, None),
            "tls" => (true, false, None),
            "ws" => (false, true, Some(80)),
            "wss" => (true, true, Some(443)),
            _ => {
                return Err(IoError::new(
                    ErrorKind::Unsupported,
                    "addresses are host:port, tls://host:port, ws://host[:port][/path] or \
                     wss://host[:port][/path]",
                ))
            }
        };
        let (host, path) = match (ws, rest.find('/')) {
            (true, Some(i)) => (&rest[..i], &rest[i..]),
            (true, None) => (rest, ringport_ws::DEFAULT_PATH),
            (false, _) => (rest, ""),
        };
        if host.is_empty() {
            return Err(IoError::new(
                ErrorKind::InvalidInput,
                "address without a host",
            ));
        }
        let port = host
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok());
        let addr = match (port, default_port) {
            (Some(_), _) | (None, None) => host.to_owned(),
            (None, Some(p)) => format!("{host}:{p}"),
        };
        let name = port.map_or(host, |(h, _)| h);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        Ok(Target {
            addr,
            tls: tls.then(|| name.to_owned()),
            ws: ws.then(|| (host.to_owned(), path.to_owned())),
        })
    }
}

/// TCP, or TLS over TCP.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A rustls client configuration that trusts `roots` (for [`crate::Options::tls`]).
pub fn tls_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// WebSocket state of a link.
#[derive(Debug)]
struct Ws {
    decoder: Decoder,
    /// Bytes read and not yet decoded.
    raw: BytesMut,
    /// Control frames owed to the server (Pongs), written before the next message.
    owed: BytesMut,
}

/// One open connection's transport.
#[derive(Debug)]
pub(crate) struct Link {
    pub stream: Stream,
    ws: Option<Ws>,
}

fn invalid(e: impl std::fmt::Display) -> IoError {
    IoError::new(ErrorKind::InvalidData, e.to_string())
}

impl Link {
    /// Connects (and completes the TLS handshake, and upgrades, as the target says); `tls`:
    /// the client configuration for `tls://` and `wss://` targets.
    pub async fn open(
        target: &Target,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Link, IoError> {
        let tcp = TcpStream::connect(&target.addr).await?;
        let _ = tcp.set_nodelay(true);
        let stream = match &target.tls {
            None => Stream::Plain(tcp),
            Some(name) => {
                let config = tls.ok_or_else(|| {
                    IoError::new(
                        ErrorKind::InvalidInput,
                        "a tls:// or wss:// address needs Options::tls (the trusted roots)",
                    )
                })?;
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| IoError::new(ErrorKind::InvalidInput, e))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                Stream::Tls(Box::new(connector.connect(name, tcp).await?))
            }
        };
        let mut link = Link { stream, ws: None };
        if let Some((host, path)) = &target.ws {
            let key = handshake::client_key(rand::random());
            let req = handshake::client_request(host, path, ringport_ws::SUBPROTOCOL, &key);
            link.stream.write_all(&req).await?;
            let mut raw = BytesMut::with_capacity(1024);
            loop {
                match handshake::check_response(&raw, &key, ringport_ws::SUBPROTOCOL, MAX_RESPONSE)
                    .map_err(invalid)?
                {
                    Some(n) => {
                        let _ = raw.split_to(n);
                        break;
                    }
                    None => {
                        if link.stream.read_buf(&mut raw).await? == 0 {
                            return Err(ErrorKind::UnexpectedEof.into());
                        }
                    }
                }
            }
            link.ws = Some(Ws {
                decoder: Decoder::new(Role::Client, MAX_MESSAGE),
                raw,
                owed: BytesMut::new(),
            });
        }
        Ok(link)
    }

    /// Reads protocol bytes into `rx`: `Ok(0)` at the end of the stream (or the server's
    /// WebSocket Close). Over WebSocket may return `Ok(n)` with nothing appended, after a
    /// control frame (a Pong is then owed: call [`Link::write`]).
    pub async fn read(&mut self, rx: &mut BytesMut) -> Result<usize, IoError> {
        let Some(ws) = self.ws.as_mut() else {
            return self.stream.read_buf(rx).await;
        };
        loop {
            let before = rx.len();
            let mut progress = false;
            while let Some(item) = ws.decoder.next(&mut ws.raw).map_err(|e| {
                // Fail the connection with the code the error calls for (best effort).
                let mut close = BytesMut::new();
                let body = close_payload(e.close_code(), "");
                encode_frame(OpCode::Close, true, &body, Some(rand::random()), &mut close);
                ws.owed.extend_from_slice(&close);
                invalid(e)
            })? {
                progress = true;
                match item {
                    Incoming::Data { payload, .. } => rx.extend_from_slice(&payload),
                    Incoming::Ping(p) => {
                        encode_frame(OpCode::Pong, true, &p, Some(rand::random()), &mut ws.owed)
                    }
                    Incoming::Pong(_) => {}
                    Incoming::Close(frame) => {
                        // Answer with the same code (RFC 6455 §5.5.1); the session has
                        // already seen the protocol CLOSE before it.
                        let code = frame.map_or(CloseCode::NORMAL, |f| f.code);
                        let mut close = BytesMut::new();
                        let body = close_payload(code, "");
                        encode_frame(OpCode::Close, true, &body, Some(rand::random()), &mut close);
                        let _ = self.stream.write_all(&close).await;
                        return Ok(0);
                    }
                }
            }
            if progress {
                return Ok((rx.len() - before).max(1));
            }
            if self.stream.read_buf(&mut ws.raw).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Writes `out` (whole protocol frames): as it is, or as one binary message behind any
    /// owed control frames.
    pub async fn write(&mut self, out: &[u8]) -> Result<(), IoError> {
        let Some(ws) = self.ws.as_mut() else {
            return self.stream.write_all(out).await;
        };
        let mut buf = std::mem::take(&mut ws.owed);
        if !out.is_empty() {
            encode_frame(OpCode::Binary, true, out, Some(rand::random()), &mut buf);
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&buf).await
    }

    /// Whether control frames are owed (a [`Link::write`] with nothing else is worth it).
    pub fn owes(&self) -> bool {
        self.ws.as_ref().is_some_and(|w| !w.owed.is_empty())
    }

    /// Ends the connection politely: a WebSocket Close 1000, then FIN.
    pub async fn shutdown(&mut self) {
        if let Some(ws) = self.ws.as_mut() {
            encode_frame(
                OpCode::Close,
                true,
                &close_payload(CloseCode::NORMAL, ""),
                Some(rand::random()),
                &mut ws.owed,
            );
            let _ = self.write(&[]).await;
        }
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(addr: &str, tls: Option<&str>, ws: Option<(&str, &str)>) -> Target {
        Target {
            addr: addr.into(),
            tls: tls.map(Into::into),
            ws: ws.map(|(h, p)| (h.into(), p.into())),
        }
    }

    #[test]
    fn addresses() {
        let parse = |a| Target::parse(a).unwrap();
        assert_eq!(parse("127.0.0.1:4666"), t("127.0.0.1:4666", None, None));
        assert_eq!(
            parse("ws://127.0.0.1:4666"),
            t(
                "127.0.0.1:4666",
                None,
                Some(("127.0.0.1:4666", "/ringport"))
            )
        );
        assert_eq!(
            parse("ws://example.com/chat/ws"),
            t("example.com:80", None, Some(("example.com", "/chat/ws")))
        );
        assert_eq!(
            parse("tls://gw.example:4666"),
            t("gw.example:4666", Some("gw.example"), None)
        );
        assert_eq!(
            parse("wss://gw.example"),
            t(
                "gw.example:443",
                Some("gw.example"),
                Some(("gw.example", "/ringport"))
            )
        );
        assert_eq!(
            parse("wss://localhost:4666/rp"),
            t(
                "localhost:4666",
                Some("localhost"),
                Some(("localhost:4666", "/rp"))
            )
        );
        assert_eq!(
            Target::parse("http://example.com").unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert!(Target::parse("ws:///x").is_err());
    }
}
