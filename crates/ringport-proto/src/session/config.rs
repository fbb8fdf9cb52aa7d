//! Tunables of a server-side session. One `SessionConfig` is shared (behind an
//! `Arc`) by every session of a gateway, so it costs a session 8 bytes.

use crate::frame::DEFAULT_MAX_PAYLOAD;

/// Every number the session machine uses. `Default` gives the documented
/// defaults; see `docs/protocol.md` for what the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest inbound payload accepted (default 64 KiB); larger frames close
    /// the connection with `FRAME_TOO_LARGE`. Advertised in WELCOME.
    pub max_payload: u32,
    /// Heartbeat interval in ms the client must keep (default 30 000).
    /// Advertised in WELCOME.
    pub heartbeat_interval_ms: u32,
    /// Missed intervals tolerated silently before probing (default 2), for
    /// mobile clients whose radio drops out briefly.
    pub tolerated_misses: u32,
    /// Probe interval = current heartbeat interval / this (default 3, i.e.
    /// 10 s at 30 s); a sleeping client is probed proportionally less often.
    pub probe_divisor: u32,
    /// Missed intervals after which the connection closes with
    /// `HEARTBEAT_TIMEOUT` (default 4: three probes go unanswered). Must exceed `tolerated_misses` for
    /// any probe to be sent.
    pub close_after_misses: u32,
    /// Time in ms from accept to WELCOME/reject (default 10 000); bounds
    /// slowloris clients and slow auth backends alike.
    pub handshake_timeout_ms: u64,
    /// Longest heartbeat interval a SLEEP may be granted (default 300 000).
    pub max_sleep_interval_ms: u32,
    /// Room PUSH frames held for a sleeping client (default 64); beyond it
    /// room messages are skipped and reported on wake. Bounds sleep memory.
    pub sleep_holdback_frames: usize,
    /// Time in ms to flush a CLOSE before the session counts as closed
    /// (default 2 000, the gateway's `engine.close_linger_ms`).
    pub drain_timeout_ms: u64,
    /// Room limit advertised in WELCOME (default 64); enforced by the gateway.
    pub max_rooms: u16,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            heartbeat_interval_ms: 30_000,
            tolerated_misses: 2,
            probe_divisor: 3,
            close_after_misses: 4,
            handshake_timeout_ms: 10_000,
            max_sleep_interval_ms: 300_000,
            sleep_holdback_frames: 64,
            drain_timeout_ms: 2_000,
            max_rooms: 64,
        }
    }
}
