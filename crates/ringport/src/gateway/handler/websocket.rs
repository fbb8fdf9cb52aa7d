//! The shard's side of WebSocket connections (`gateway/transport.rs` has the state): the
//! upgrade, the frames, the closing handshake.
//!
//! Binary message payloads are appended to the connection's protocol receive buffer as they
//! arrive and decoded by the same loop as native bytes ([`GatewayHandler::feed_native`]),
//! so one message may carry one or more whole protocol frames, and a frame may not straddle
//! two messages. Every session frame leaves as one binary message.

use bytes::Buf;
use ringport_io::{CloseReason as EngineReason, Ctx};
use ringport_proto::{CloseReason, Frame, State};
use ringport_ws::handshake::{self, ServerConfig};
use ringport_ws::{close_payload, encode_frame, CloseCode, Error as WsError, Incoming, OpCode};

use super::{emit_copy, GatewayHandler};
use crate::gateway::conn::{Conn, Flags};
use crate::gateway::transport::{self, WsConn};
use crate::metrics::websocket as ws_metrics;

impl GatewayHandler {
    /// Handles the bytes waiting in a WebSocket connection's raw buffer.
    pub(super) fn ws_input(&mut self, ctx: &mut Ctx<'_, Self>, c: &mut Conn, now: u64) {
        let Some(settings) = self.shared.websocket.as_ref() else {
            return;
        };
        let Some(ws) = c.transport.ws_mut() else {
            return;
        };
        if !ws.upgraded {
            let cfg = ServerConfig {
                path: &settings.path,
                protocol: ringport_ws::SUBPROTOCOL,
                max_request: settings.max_request,
            };
            match handshake::accept(&ws.raw, &cfg) {
                Ok(None) => return,
                Ok(Some(a)) => {
                    ws.raw.advance(a.consumed);
                    ws.upgraded = true;
                    ws.responded = true;
                    let _ = emit_copy(ctx, c, &a.response);
                    ws_metrics::upgraded();
                }
                Err(e) => {
                    ws_metrics::handshake_failed(&e);
                    if matches!(e, handshake::HandshakeError::TooLarge { .. }) {
                        crate::metrics::limits::hit(
                            crate::metrics::Limit::WebSocketRequest,
                            1,
                            &format_args!("WebSocket upgrade request: {e}; answered 431"),
                        );
                    }
                    ws.responded = true;
                    ws.raw.clear();
                    let _ = emit_copy(ctx, c, &e.response());
                    c.session
                        .close(CloseReason::PROTOCOL_ERROR, &e.to_string(), now);
                    return;
                }
            }
        }
        loop {
            let next = match c.transport.ws_mut() {
                Some(ws) => ws.decoder.next(&mut ws.raw),
                None => return,
            };
            match next {
                Ok(None) => return,
                Ok(Some(Incoming::Data { payload, end })) => {
                    c.rx_mut().extend_from_slice(&payload);
                    self.feed_native(ctx, c, now);
                    let open = !matches!(c.session.state(), State::Draining | State::Closed);
                    if end && open && c.rx_len() > 0 {
                        let text = format!(
                            "a binary message ended inside a protocol frame ({} bytes of it); \
                             a message carries whole frames",
                            c.rx_len()
                        );
                        self.ws_refuse(
                            ctx,
                            c,
                            "partial_frame",
                            CloseCode::PROTOCOL_ERROR,
                            text,
                            now,
                        );
                        return;
                    }
                }
                Ok(Some(Incoming::Ping(payload))) => {
                    if !self.take_control(c, now) {
                        return;
                    }
                    self.ws_control(ctx, c, OpCode::Pong, &payload);
                }
                Ok(Some(Incoming::Pong(_))) => {
                    if !self.take_control(c, now) {
                        return;
                    }
                }
                Ok(Some(Incoming::Close(frame))) => {
                    if let Some(ws) = c.transport.ws_mut() {
                        ws.close_received = true;
                    }
                    // Echo the peer's code (§5.5.1), unless our own Close went first.
                    let body = frame
                        .as_ref()
                        .map(|f| close_payload(f.code, ""))
                        .unwrap_or_default();
                    self.ws_control(ctx, c, OpCode::Close, &body);
                    let text = frame.map(|f| f.reason).unwrap_or_default();
                    // The session ends as if a native CLOSE NORMAL arrived (or, if it was
                    // draining after ours, completes its close).
                    c.session.handle_frame(
                        Frame::Close {
                            reason: CloseReason::NORMAL,
                            text,
                        },
                        now,
                    );
                    return;
                }
                Err(e) => {
                    let (code, label) = (e.close_code(), e.label());
                    self.ws_refuse(ctx, c, label, code, e.to_string(), now);
                    if matches!(e, WsError::MessageTooBig { .. }) {
                        crate::metrics::limits::hit(
                            crate::metrics::Limit::WebSocketMessage,
                            1,
                            &format_args!("{e}; closed with 1009"),
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Closes for a WebSocket-level violation: the session closes (its CLOSE goes out as a
    /// last binary message), and our Close carries `code` rather than the session's reason.
    fn ws_refuse(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        c: &mut Conn,
        label: &'static str,
        code: CloseCode,
        text: String,
        now: u64,
    ) {
        ws_metrics::protocol_error(label);
        self.charge_abuse(c, "a WebSocket protocol error", now);
        let Some(ws) = c.transport.ws_mut() else {
            return;
        };
        ws.raw.clear();
        ws.error = Some((code, text.clone()));
        if ws.close_sent {
            // Waiting for the peer's Close after ours, and it broke the protocol instead.
            if c.mark(Flags::CLOSING) {
                Self::close_conn(ctx, c, EngineReason::App(CloseReason::PROTOCOL_ERROR.0));
            }
            return;
        }
        let reason = if code == CloseCode::MESSAGE_TOO_BIG {
            CloseReason::FRAME_TOO_LARGE
        } else {
            CloseReason::PROTOCOL_ERROR
        };
        c.session.close(reason, &text, now);
    }

    /// Queues a control frame (Pong, or our Close) unless our Close already went out.
    fn ws_control(&mut self, ctx: &mut Ctx<'_, Self>, c: &mut Conn, op: OpCode, payload: &[u8]) {
        let Some(ws) = c.transport.ws_mut() else {
            return;
        };
        if ws.close_sent {
            return;
        }
        ws.close_sent = op == OpCode::Close;
        let mut frame = bytes::BytesMut::with_capacity(payload.len() + 2);
        encode_frame(op, true, payload, None, &mut frame);
        let _ = emit_copy(ctx, c, &frame);
    }

    /// The session closed (`Event::Closed`), its frames already handed over: completes the
    /// WebSocket side. Returns whether the transport is closed now; `false`: our Close was
    /// sent and the peer's is awaited (RFC 6455 §7.1.2) until the session's drain deadline.
    pub(super) fn ws_closed(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        c: &mut Conn,
        reason: CloseReason,
        by_peer: bool,
    ) -> bool {
        let Some(ws) = c.transport.ws_mut() else {
            return true;
        };
        if !ws.upgraded {
            if !ws.responded {
                ws.responded = true;
                let _ = emit_copy(ctx, c, &transport::http_refusal(reason));
            }
            return true;
        }
        let WsConn {
            error,
            close_received,
            ..
        } = ws;
        // After a violation the connection is failed (RFC 6455 §7.1.7): our Close, then the
        // transport, without waiting for the peer's answer (its decoder is done).
        let waits = !by_peer && !*close_received && error.is_none();
        let (code, text) = error.take().unwrap_or_else(|| {
            let name = reason.name().unwrap_or("closed");
            (transport::close_code(reason), name.to_owned())
        });
        self.ws_control(ctx, c, OpCode::Close, &close_payload(code, &text));
        !waits
    }
}
