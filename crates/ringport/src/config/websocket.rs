//! `[websocket]`: WebSocket (RFC 6455) on the client port (docs/protocol.md, "WebSocket").
//!
//! A connection whose first bytes are `GET ` is an HTTP upgrade request; every other
//! connection speaks the native protocol. The subprotocol is not configurable: it names the
//! protocol version (`ringport.v1`).

use serde::{Deserialize, Serialize};

use super::{in_range, invalid, ConfigError};

/// `[websocket]`: the WebSocket endpoint on `server.listen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Accept WebSocket upgrades on the client port.
    pub enabled: bool,
    /// Request path of the endpoint.
    pub path: String,
    /// Largest upgrade request (request line and headers) in bytes.
    pub max_request_bytes: u32,
    /// Largest binary message (the sum of its frames) in bytes; 0 = one frame of
    /// `protocol.max_payload` (its payload and 8-byte header).
    pub max_message_bytes: u32,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            enabled: true,
            path: ringport_ws::DEFAULT_PATH.to_owned(),
            max_request_bytes: 8 * 1024,
            // One frame of protocol.max_payload, whatever it is set to.
            max_message_bytes: 0,
        }
    }
}

impl WebSocketConfig {
    /// The message limit in force: `max_message_bytes`, or one frame of `max_payload`.
    pub fn max_message(&self, max_payload: u32) -> u64 {
        match self.max_message_bytes {
            0 => u64::from(max_payload) + 8,
            n => u64::from(n),
        }
    }

    /// `max_payload`: `protocol.max_payload`, which one message must be able to carry.
    pub(super) fn validate(&self, max_payload: u32) -> Result<(), ConfigError> {
        if !self.path.starts_with('/')
            || self
                .path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?')
        {
            return Err(invalid(
                "websocket.path",
                "must start with / and contain no whitespace, control characters or ?",
            ));
        }
        in_range(
            "websocket.max_request_bytes",
            self.max_request_bytes.into(),
            512,
            1 << 20,
        )?;
        let frame = u64::from(max_payload) + 8;
        if self.max_message_bytes != 0 && u64::from(self.max_message_bytes) < frame {
            return Err(invalid(
                "websocket.max_message_bytes",
                format!(
                    "must be at least protocol.max_payload + 8 ({frame}): one message must hold \
                     the largest frame"
                ),
            ));
        }
        Ok(())
    }
}
