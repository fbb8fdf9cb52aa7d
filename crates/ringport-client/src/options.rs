//! Client tunables.

use std::time::Duration;

/// Exponential backoff with jitter between reconnect attempts.
///
/// Attempt `n` (0-based) waits `base = min(max, initial · multiplier^n)`,
/// of which the last `jitter` fraction is random: the delay is uniform in
/// `[base·(1-jitter), base]`. Many clients cut at once therefore do not
/// reconnect in lock step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per attempt (≥ 1).
    pub multiplier: f64,
    /// Fraction of the delay that is random, 0..=1.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (0-based), with `unit` a random
    /// number in `[0, 1)` (taken as a parameter so the rule is testable).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let max = self.max.as_secs_f64();
        let grown =
            self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let base = grown.min(max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_secs_f64(base * (1.0 - jitter) + base * jitter * unit)
    }
}

/// How a [`Client`](crate::Client) behaves. `Default` suits a phone or
/// server app; tests shrink the times.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sent in HELLO for the server's logs (`sdk/<version>` by default).
    pub client_info: String,
    /// Reconnect pacing.
    pub backoff: Backoff,
    /// Give up after this many consecutive failed attempts (`None`: never).
    pub max_reconnect_attempts: Option<u32>,
    /// Bound on TCP connect plus HELLO→WELCOME.
    pub handshake_timeout: Duration,
    /// Publishes awaiting PUBLISH_ACK (in flight or queued while
    /// disconnected); one more fails with `Error::QueueFull`.
    pub outbound_queue: usize,
    /// Capacity of the event channel. When the application does not keep
    /// up, the client stops reading the socket (TCP back-pressure).
    pub event_capacity: usize,
    /// Send a PING after this much silence instead of WELCOME's interval
    /// (only if shorter).
    pub heartbeat_interval: Option<Duration>,
    /// Consider the connection dead after this many heartbeat intervals
    /// without any inbound frame (protocol: 3).
    pub dead_after_intervals: u32,
    /// TLS for `tls://` and `wss://` addresses: the trusted roots (see
    /// [`tls_config`](crate::tls_config)); the server's certificate must name the address's
    /// host. `None`: such addresses fail to connect.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_info: concat!("ringport-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            backoff: Backoff::default(),
            max_reconnect_attempts: None,
            handshake_timeout: Duration::from_secs(10),
            outbound_queue: 1024,
            event_capacity: 4096,
            heartbeat_interval: None,
            dead_after_intervals: 3,
            tls: None,
        }
    }
}
