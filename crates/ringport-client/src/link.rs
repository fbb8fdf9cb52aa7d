//! The byte stream under the session: TCP, or WebSocket over TCP (`ws://host:port/path`).
//!
//! The session ([`ringport_proto::ClientSession`]) reads and writes protocol bytes; a
//! [`Link`] carries them. Over WebSocket (docs/protocol.md, section 13) everything the session
//! queued at once leaves as one masked binary message of whole frames, and the payloads of
//! the server's binary messages are handed to the session as they arrive. The framing and
//! the upgrade are `ringport_ws`, the same sans-IO code the gateway runs. TLS (`wss://`) is
//! not supported yet; it would sit between the TCP stream and this framing.
//!
//! Cancel safety: [`Link::read`] is used in `select!`, so its only await is the socket read;
//! WebSocket Pongs it owes are queued and written by the next [`Link::write`], never from
//! inside `read` (a cancelled half-written frame would corrupt the stream).

use std::io::{Error as IoError, ErrorKind};

use bytes::BytesMut;
use ringport_ws::{
    close_payload, encode_frame, handshake, CloseCode, Decoder, Incoming, OpCode, Role,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest server message accepted over WebSocket: a frame of the largest payload the
/// protocol allows (16 MiB, the gateway's upper bound of `protocol.max_payload`) and its header.
const MAX_MESSAGE: u64 = (16 << 20) + 8;
/// Largest `101` answer read.
const MAX_RESPONSE: usize = 16 * 1024;

/// Where to connect, parsed from the address given to `Client::connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `host:port`: the native protocol on TCP.
    Tcp(String),
    /// `ws://host[:port][/path]`: WebSocket.
    WebSocket {
        /// `host:port` to connect to (port 80 when absent).
        addr: String,
        /// The `Host` header.
        host: String,
        /// The request path (`/ringport` when absent).
        path: String,
    },
}

impl Target {
    pub fn parse(addr: &str) -> Result<Target, IoError> {
        if let Some(rest) = addr.strip_prefix("ws://") {
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ringport_ws::DEFAULT_PATH),
            };
            if host.is_empty() {
                return Err(IoError::new(
                    ErrorKind::InvalidInput,
                    "ws:// URL without a host",
                ));
            }
            let has_port = host
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
            let addr = if has_port {
                host.to_owned()
            } else {
                format!("{host}:80")
            };
            return Ok(Target::WebSocket {
                addr,
                host: host.to_owned(),
                path: path.to_owned(),
            });
        }
        if addr.contains("://") {
            return Err(IoError::new(
                ErrorKind::Unsupported,
                "only host:port and ws:// addresses are supported (no TLS yet)",
            ));
        }
        Ok(Target::Tcp(addr.to_owned()))
    }
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
    pub stream: TcpStream,
    ws: Option<Ws>,
}

fn invalid(e: impl std::fmt::Display) -> IoError {
    IoError::new(ErrorKind::InvalidData, e.to_string())
}

impl Link {
    /// Connects (and upgrades, for WebSocket).
    pub async fn open(target: &Target) -> Result<Link, IoError> {
        let addr = match target {
            Target::Tcp(a) | Target::WebSocket { addr: a, .. } => a,
        };
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let mut link = Link { stream, ws: None };
        if let Target::WebSocket { host, path, .. } = target {
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

    #[test]
    fn addresses() {
        assert_eq!(
            Target::parse("127.0.0.1:4666").unwrap(),
            Target::Tcp("127.0.0.1:4666".into())
        );
        assert_eq!(
            Target::parse("ws://127.0.0.1:4666").unwrap(),
            Target::WebSocket {
                addr: "127.0.0.1:4666".into(),
                host: "127.0.0.1:4666".into(),
                path: "/ringport".into()
            }
        );
        assert_eq!(
            Target::parse("ws://example.com/chat/ws").unwrap(),
            Target::WebSocket {
                addr: "example.com:80".into(),
                host: "example.com".into(),
                path: "/chat/ws".into()
            }
        );
        assert_eq!(
            Target::parse("wss://example.com").unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert!(Target::parse("ws:///x").is_err());
    }
}
