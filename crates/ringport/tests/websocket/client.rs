//! A blocking WebSocket test client over std `TcpStream`, built on the client side of
//! `ringport_ws` (the independent client is the Python interop test).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::{Bytes, BytesMut};
use ringport_proto::{Frame, Hello};
use ringport_ws::{encode_frame, handshake, CloseFrame, Decoder, Incoming, OpCode, Role};

use crate::common::gateway::WAIT;

pub const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// One whole server message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    Binary(Vec<u8>),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseFrame>),
}

pub struct WsClient {
    pub stream: TcpStream,
    buf: BytesMut,
    dec: Decoder,
    message: Vec<u8>,
}

/// The upgrade request for `path` offering `protocol`, with extra header lines.
pub fn request(path: &str, protocol: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n{extra}\r\n"
    )
}

/// Sends `bytes` on a fresh connection and returns everything until the server closes.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

impl WsClient {
    /// Connects and completes the upgrade.
    pub fn connect(addr: SocketAddr) -> WsClient {
        WsClient::over(TcpStream::connect(addr).expect("connect"), addr)
    }

    /// Connects from source address `ip` (a distinct peer) and completes the upgrade.
    pub fn connect_from(addr: SocketAddr, ip: std::net::IpAddr) -> WsClient {
        WsClient::over(
            crate::common::gateway::Client::connect_from(addr, ip).stream,
            addr,
        )
    }

    fn over(stream: TcpStream, addr: SocketAddr) -> WsClient {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = WsClient {
            stream,
            buf: BytesMut::new(),
            dec: Decoder::new(Role::Client, 16 << 20),
            message: Vec::new(),
        };
        let key = handshake::client_key([9; 16]);
        let req = handshake::client_request(
            &addr.to_string(),
            ringport_ws::DEFAULT_PATH,
            ringport_ws::SUBPROTOCOL,
            &key,
        );
        c.stream.write_all(&req).unwrap();
        loop {
            match handshake::check_response(&c.buf, &key, ringport_ws::SUBPROTOCOL, 8192)
                .expect("101")
            {
                Some(n) => {
                    let _ = c.buf.split_to(n);
                    return c;
                }
                None => assert!(c.fill(), "closed during the handshake"),
            }
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read: {e}"),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// One masked frame.
    pub fn send_ws(&mut self, op: OpCode, fin: bool, payload: &[u8]) {
        let mut b = BytesMut::new();
        encode_frame(op, fin, payload, Some(MASK), &mut b);
        self.send_raw(&b);
    }

    /// Protocol frames, all in one binary message.
    pub fn send(&mut self, frames: &[Frame]) {
        let mut payload = BytesMut::new();
        for f in frames {
            f.encode(&mut payload).unwrap();
        }
        self.send_ws(OpCode::Binary, true, &payload);
    }

    pub fn hello(&mut self, token: &str) {
        self.send(&[Frame::Hello(Hello {
            token: Bytes::copy_from_slice(token.as_bytes()),
            client_info: "ws-test/1".into(),
            resume: None,
        })]);
    }

    /// The next whole message or control frame; `None` at end of stream.
    pub fn next(&mut self) -> Option<Msg> {
        loop {
            match self.dec.next(&mut self.buf).expect("valid server frames") {
                Some(Incoming::Data { payload, end }) => {
                    self.message.extend_from_slice(&payload);
                    if end {
                        return Some(Msg::Binary(std::mem::take(&mut self.message)));
                    }
                }
                Some(Incoming::Ping(p)) => return Some(Msg::Ping(p)),
                Some(Incoming::Pong(p)) => return Some(Msg::Pong(p)),
                Some(Incoming::Close(c)) => return Some(Msg::Close(c)),
                None => {
                    if self.dec.is_done() || !self.fill() {
                        return None;
                    }
                }
            }
        }
    }

    /// The next protocol frame (answering protocol PINGs); each binary message must hold
    /// exactly one frame.
    pub fn recv(&mut self) -> Frame {
        loop {
            match self.next().expect("connection open") {
                Msg::Binary(b) => {
                    let mut buf = BytesMut::from(&b[..]);
                    let f = ringport_proto::Decoder::new(16 << 20)
                        .decode(&mut buf)
                        .expect("a protocol frame")
                        .expect("a whole frame");
                    assert!(buf.is_empty(), "one frame per message");
                    if let Frame::Ping { nonce } = f {
                        self.send(&[Frame::Pong { nonce }]);
                        continue;
                    }
                    return f;
                }
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    /// Reads until the server's Close (collecting the protocol frames before it), answers
    /// it, and waits for the end of the stream: `(code, reason, frames)`.
    pub fn expect_close(&mut self) -> (u16, String, Vec<Frame>) {
        let mut frames = Vec::new();
        loop {
            match self.next().expect("a Close before the end of stream") {
                Msg::Close(c) => {
                    let (code, reason) = c.map_or((1005, String::new()), |c| (c.code.0, c.reason));
                    let mut b = BytesMut::new();
                    encode_frame(
                        OpCode::Close,
                        true,
                        &1000u16.to_be_bytes(),
                        Some(MASK),
                        &mut b,
                    );
                    let _ = self.stream.write_all(&b);
                    let mut rest = Vec::new();
                    let _ = self.stream.read_to_end(&mut rest);
                    return (code, reason, frames);
                }
                Msg::Binary(b) => {
                    let mut buf = BytesMut::from(&b[..]);
                    if let Ok(Some(f)) = ringport_proto::Decoder::new(16 << 20).decode(&mut buf) {
                        frames.push(f);
                    }
                }
                _ => {}
            }
        }
    }
}
