//! A ringport subscriber over WebSocket (`--protocol ringport-ws`): the same protocol client
//! ([`ClientConn`]) with RFC 6455 framing under it (docs/protocol.md §13), so a fan-out run
//! measures what WebSocket costs the server against the native protocol on the same load.
//!
//! The upgrade request goes out first; the protocol bytes (HELLO, JOINs) are held until the
//! `101` arrives and then sent as masked binary messages, one per write. Server messages
//! are decoded with `ringport_ws::Decoder` (client role: unmasked frames only) and their
//! payloads fed to the protocol client; Pings are answered with Pongs, a Close ends it.

use std::time::Instant;

use bytes::BytesMut;
use ringport_ws::{handshake, Decoder, Incoming, OpCode, Role};

use super::client::{ClientConn, Event};

/// Largest server message accepted: one frame of the largest payload (protocol.md §13).
const MAX_MESSAGE: u64 = 16 << 20;
/// Largest `101` answer accepted.
const MAX_RESPONSE: usize = 8 * 1024;

#[derive(Debug)]
pub struct WsClient {
    pub inner: ClientConn,
    /// `Sec-WebSocket-Key` of the current transport.
    key: String,
    /// The `101` was received: the bytes are frames now.
    upgraded: bool,
    /// Received bytes not yet decoded (the answer, then at most a partial frame).
    raw: BytesMut,
    decoder: Decoder,
    /// Protocol bytes written before the upgrade completed.
    held: Vec<u8>,
    /// Scratch for the protocol client's output.
    scratch: Vec<u8>,
    /// Counts transports, to vary the key (the mask needs no secrecy in a bench).
    transports: u64,
    /// The server's answer or framing was wrong: the transport should close.
    failed: bool,
}

/// Appends `data` to `out` as one masked frame (clients must mask, RFC 6455 §5.3).
fn frame_into(out: &mut Vec<u8>, op: OpCode, data: &[u8], mask: [u8; 4]) {
    let header = ringport_ws::encode_header(op, true, data.len(), Some(mask));
    out.extend_from_slice(header.as_slice());
    let start = out.len();
    out.extend_from_slice(data);
    ringport_ws::apply_mask(&mut out[start..], mask, 0);
}

impl WsClient {
    pub fn new(inner: ClientConn) -> WsClient {
        WsClient {
            inner,
            key: String::new(),
            upgraded: false,
            raw: BytesMut::new(),
            decoder: Decoder::new(Role::Client, MAX_MESSAGE),
            held: Vec::new(),
            scratch: Vec::new(),
            transports: 0,
            failed: false,
        }
    }

    fn mask(&self) -> [u8; 4] {
        (self.transports as u32 ^ 0x5a3c_96e1).to_le_bytes()
    }

    /// A fresh transport: the upgrade request now, the protocol's first bytes after `101`.
    pub fn start(&mut self, token: &[u8], resume: bool, out: &mut Vec<u8>, now: Instant) {
        self.transports += 1;
        let mut random = [0u8; 16];
        random[..8].copy_from_slice(&self.transports.to_le_bytes());
        random[8..].copy_from_slice(&self.inner.session_id().to_le_bytes());
        self.key = handshake::client_key(random);
        self.upgraded = false;
        self.failed = false;
        self.raw.clear();
        self.decoder = Decoder::new(Role::Client, MAX_MESSAGE);
        self.held.clear();
        self.inner.start(token, resume, &mut self.held, now);
        out.extend_from_slice(&handshake::client_request(
            "bench",
            ringport_ws::DEFAULT_PATH,
            ringport_ws::SUBPROTOCOL,
            &self.key,
        ));
    }

    pub fn is_done(&self) -> bool {
        self.failed || self.inner.is_done() || self.decoder.is_done()
    }

    /// Sends a heartbeat if one is due.
    pub fn on_timer(&mut self, out: &mut Vec<u8>, now: Instant) -> bool {
        self.scratch.clear();
        let sent = self.inner.on_timer(&mut self.scratch, now);
        self.send(out);
        sent
    }

    /// Feeds received bytes; replies (framed) go to `out`.
    pub fn on_bytes(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
        now: Instant,
        now_ns: u64,
    ) {
        self.raw.extend_from_slice(data);
        if !self.upgraded {
            match handshake::check_response(
                &self.raw,
                &self.key,
                ringport_ws::SUBPROTOCOL,
                MAX_RESPONSE,
            ) {
                Ok(None) => return,
                Ok(Some(n)) => {
                    let _ = self.raw.split_to(n);
                    self.upgraded = true;
                    std::mem::swap(&mut self.held, &mut self.scratch);
                    self.send(out);
                }
                Err(_) => {
                    events.push(Event::ProtocolError);
                    self.failed = true;
                    return;
                }
            }
        }
        let mask = self.mask();
        while !self.failed {
            match self.decoder.next(&mut self.raw) {
                Ok(None) => break,
                Ok(Some(Incoming::Data { payload, .. })) => {
                    self.scratch.clear();
                    self.inner
                        .on_bytes(&payload, &mut self.scratch, events, now, now_ns);
                    self.send(out);
                }
                Ok(Some(Incoming::Ping(p))) => frame_into(out, OpCode::Pong, &p, mask),
                Ok(Some(Incoming::Pong(_))) => {}
                Ok(Some(Incoming::Close(_))) => {
                    events.push(Event::ServerClose(0));
                    break;
                }
                Err(_) => {
                    events.push(Event::ProtocolError);
                    self.failed = true;
                    break;
                }
            }
        }
    }

    /// Sends the protocol bytes in `scratch` (if any) as one binary message.
    fn send(&mut self, out: &mut Vec<u8>) {
        if !self.scratch.is_empty() {
            frame_into(out, OpCode::Binary, &self.scratch, self.mask());
            self.scratch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringport_proto::Frame;

    /// The server's `101` for the key in `request`.
    fn answer(request: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(request);
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key");
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
            handshake::accept_key(key),
            ringport_ws::SUBPROTOCOL
        )
        .into_bytes()
    }

    /// Decodes the client's masked messages in `bytes` into protocol frames.
    fn client_frames(bytes: &[u8]) -> Vec<Frame> {
        let mut dec = Decoder::new(Role::Server, 1 << 20);
        let mut buf = BytesMut::from(bytes);
        let mut payload = BytesMut::new();
        while let Some(item) = dec.next(&mut buf).expect("valid client frames") {
            if let Incoming::Data { payload: p, .. } = item {
                payload.extend_from_slice(&p);
            }
        }
        let mut out = Vec::new();
        let proto = ringport_proto::Decoder::new(1 << 20);
        while let Some(f) = proto.decode(&mut payload).expect("protocol frames") {
            out.push(f);
        }
        out
    }

    #[test]
    fn hello_waits_for_the_upgrade_then_goes_out_masked() {
        let now = Instant::now();
        let mut c = WsClient::new(ClientConn::new(vec!["r".into()], now));
        let mut out = Vec::new();
        c.start(b"", false, &mut out, now);
        assert!(out.starts_with(b"GET /ringport HTTP/1.1\r\n"));
        assert!(
            out.ends_with(b"\r\n\r\n"),
            "only the request before the 101"
        );
        let (mut replies, mut events) = (Vec::new(), Vec::new());
        let resp = answer(&out);
        // The answer in two pieces: nothing goes out until it is whole.
        c.on_bytes(&resp[..10], &mut replies, &mut events, now, 0);
        assert!(replies.is_empty());
        c.on_bytes(&resp[10..], &mut replies, &mut events, now, 0);
        assert!(matches!(client_frames(&replies)[..], [Frame::Hello(_), ..]));
        assert!(events.is_empty() && !c.is_done());
    }

    #[test]
    fn pings_are_answered_and_a_bad_answer_ends_the_transport() {
        let now = Instant::now();
        let mut c = WsClient::new(ClientConn::new(vec![], now));
        let mut out = Vec::new();
        c.start(b"", false, &mut out, now);
        let mut input = answer(&out);
        let mut ping = BytesMut::new();
        ringport_ws::encode_frame(OpCode::Ping, true, b"hi", None, &mut ping);
        input.extend_from_slice(&ping);
        let (mut replies, mut events) = (Vec::new(), Vec::new());
        c.on_bytes(&input, &mut replies, &mut events, now, 0);
        let mut dec = Decoder::new(Role::Server, 1 << 20);
        let mut buf = BytesMut::from(&replies[..]);
        let mut pong = None;
        while let Some(item) = dec.next(&mut buf).unwrap() {
            if let Incoming::Pong(p) = item {
                pong = Some(p);
            }
        }
        assert_eq!(pong.as_deref(), Some(&b"hi"[..]));

        let mut refused = WsClient::new(ClientConn::new(vec![], now));
        refused.start(b"", false, &mut Vec::new(), now);
        refused.on_bytes(
            b"HTTP/1.1 404 Not Found\r\n\r\n",
            &mut replies,
            &mut events,
            now,
            0,
        );
        assert_eq!(events, vec![Event::ProtocolError]);
        assert!(refused.is_done());
    }
}
