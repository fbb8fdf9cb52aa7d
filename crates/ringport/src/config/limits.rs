//! `[limits]`: admission and per-connection rate limits against abuse (issue 10, item 4).
//!
//! Every default is far above what a well-behaved client does (the reasoning is in
//! docs/operations.md, "Limits and abuse"); 0 turns a limit off.

use serde::{Deserialize, Serialize};

use super::{in_range, ConfigError};

/// `[limits]`: per-IP, per-user and per-connection limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections open at once from one IP address; 0 = no limit.
    pub max_connections_per_ip: u32,
    /// Sustained new connections per second from one IP address; 0 = no limit.
    pub handshakes_per_ip_per_sec: u32,
    /// New connections one IP address may open in a burst.
    pub handshake_burst_per_ip: u32,
    /// New-connection tokens (of `handshakes_per_ip_per_sec`) that a connection closed for
    /// abuse (control frames or JOIN/LEAVE over their rates, or bytes that break the protocol,
    /// native, WebSocket or TLS, other than a later version's HELLO) costs its address, at most one
    /// `handshake_burst_per_ip` owed; 0 = none.
    pub handshakes_per_abusive_close: u32,
    /// Refusals per second (and in a burst) that one IP address is told the reason of (CLOSE
    /// POLICY, then a graceful close); its other refused connections in that time are closed
    /// at once, unanswered, so a reconnect flood costs an accept and a close each rather than
    /// a CLOSE frame, a FIN handshake and the linger; 0 = answer every refusal.
    pub refusals_answered_per_ip_per_sec: u32,
    /// Sustained failed handshakes (AUTH_FAILED) per second from one IP address, once its
    /// burst is spent; beyond it the address's new connections are refused; 0 = no limit.
    pub auth_failures_per_ip_per_sec: u32,
    /// Failed handshakes one IP address may have in a burst.
    pub auth_failure_burst_per_ip: u32,
    /// Connections open at once for one user (token `sub`), whatever their addresses;
    /// 0 = no limit.
    pub max_connections_per_user: u32,
    /// Sustained JOIN and LEAVE requests per second on one connection; 0 = no limit.
    pub room_ops_per_sec: u32,
    /// JOIN and LEAVE requests one connection may send in a burst.
    pub room_ops_burst: u32,
    /// Sustained control frames (PING, PONG, SLEEP, WAKE, ACK) per second on one
    /// connection; 0 = no limit.
    pub control_frames_per_sec: u32,
    /// Control frames one connection may send in a burst.
    pub control_frames_burst: u32,
    /// Sustained bytes of client PUBLISH payloads per second from one IP address, over all
    /// its connections (each publish counts its payload rounded up to 64 bytes, at least
    /// 64); beyond it a publish is answered RATE_LIMITED. A fresh connection's own publish
    /// burst (`rooms.publish_burst`) does not refill it. 0 = no limit; at most 64,000,000.
    pub publish_bytes_per_ip_per_sec: u32,
    /// Bytes of PUBLISH payloads one IP address may send in a burst; at least
    /// 65,536 (one publish of the largest payload).
    pub publish_burst_bytes_per_ip: u32,
    /// IP addresses whose counts and rates are remembered at once (bounds the per-IP state).
    pub max_tracked_ips: u32,
    /// Loopback peers (127.0.0.0/8, ::1) are exempt from the per-IP limits: behind a local
    /// proxy every client looks like loopback.
    pub exempt_loopback: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_ip: 1024,
            handshakes_per_ip_per_sec: 100,
            handshake_burst_per_ip: 1000,
            handshakes_per_abusive_close: 100,
            refusals_answered_per_ip_per_sec: 10,
            auth_failures_per_ip_per_sec: 1,
            auth_failure_burst_per_ip: 20,
            max_connections_per_user: 100,
            room_ops_per_sec: 50,
            room_ops_burst: 200,
            control_frames_per_sec: 1000,
            control_frames_burst: 2000,
            publish_bytes_per_ip_per_sec: 1 << 20,
            publish_burst_bytes_per_ip: 4 << 20,
            max_tracked_ips: 65_536,
            exempt_loopback: true,
        }
    }
}

impl LimitsConfig {
    /// Every limit off (tests and benchmarks that open everything from one address).
    pub fn off() -> LimitsConfig {
        LimitsConfig {
            max_connections_per_ip: 0,
            handshakes_per_ip_per_sec: 0,
            auth_failures_per_ip_per_sec: 0,
            max_connections_per_user: 0,
            room_ops_per_sec: 0,
            control_frames_per_sec: 0,
            publish_bytes_per_ip_per_sec: 0,
            ..LimitsConfig::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        const MAX: u64 = 1_000_000_000;
        for (key, v, lo) in [
            (
                "limits.max_connections_per_ip",
                self.max_connections_per_ip,
                0,
            ),
            (
                "limits.handshakes_per_ip_per_sec",
                self.handshakes_per_ip_per_sec,
                0,
            ),
            (
                "limits.handshake_burst_per_ip",
                self.handshake_burst_per_ip,
                1,
            ),
            (
                "limits.handshakes_per_abusive_close",
                self.handshakes_per_abusive_close,
                0,
            ),
            (
                "limits.refusals_answered_per_ip_per_sec",
                self.refusals_answered_per_ip_per_sec,
                0,
            ),
            (
                "limits.auth_failures_per_ip_per_sec",
                self.auth_failures_per_ip_per_sec,
                0,
            ),
            (
                "limits.auth_failure_burst_per_ip",
                self.auth_failure_burst_per_ip,
                1,
            ),
            (
                "limits.max_connections_per_user",
                self.max_connections_per_user,
                0,
            ),
            ("limits.room_ops_per_sec", self.room_ops_per_sec, 0),
            ("limits.room_ops_burst", self.room_ops_burst, 1),
            (
                "limits.control_frames_per_sec",
                self.control_frames_per_sec,
                0,
            ),
            ("limits.control_frames_burst", self.control_frames_burst, 1),
            ("limits.max_tracked_ips", self.max_tracked_ips, 64),
        ] {
            in_range(key, v.into(), lo, MAX)?;
        }
        in_range(
            "limits.publish_bytes_per_ip_per_sec",
            self.publish_bytes_per_ip_per_sec.into(),
            0,
            64_000_000,
        )?;
        in_range(
            "limits.publish_burst_bytes_per_ip",
            self.publish_burst_bytes_per_ip.into(),
            65_536,
            u64::from(u32::MAX),
        )?;
        Ok(())
    }
}
