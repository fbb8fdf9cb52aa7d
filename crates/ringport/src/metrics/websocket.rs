//! WebSocket counters: upgrades, open WebSocket connections, refused upgrade requests and
//! RFC 6455 violations, each by reason.
//!
//! Process-wide atomics like [`super::limits`]: they change once per WebSocket connection
//! (upgrade, close) or per refused peer, never per message, so a shared cache line costs
//! nothing measurable and the shards' single-writer cells stay as they are.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use ringport_ws::handshake::HandshakeError;

use super::text::{MetricType, TextWriter};

const HANDSHAKE_REASONS: usize = HandshakeError::SERVER_LABELS.len();
/// The reasons of `ringport_websocket_protocol_errors_total`: every RFC 6455 violation of
/// [`ringport_ws::Error`], and a binary message that ends inside a protocol frame.
const PROTOCOL_LABELS: [&str; 16] = {
    let mut all = [""; 16];
    let mut i = 0;
    while i < ringport_ws::Error::LABELS.len() {
        all[i] = ringport_ws::Error::LABELS[i];
        i += 1;
    }
    all[15] = "partial_frame";
    all
};
const PROTOCOL_REASONS: usize = PROTOCOL_LABELS.len();

static UPGRADES: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicI64 = AtomicI64::new(0);
static HANDSHAKE_FAILURES: [AtomicU64; HANDSHAKE_REASONS] =
    [const { AtomicU64::new(0) }; HANDSHAKE_REASONS];
static PROTOCOL_ERRORS: [AtomicU64; PROTOCOL_REASONS] =
    [const { AtomicU64::new(0) }; PROTOCOL_REASONS];

/// A connection upgraded to WebSocket (and is now open as one).
pub fn upgraded() {
    UPGRADES.fetch_add(1, Ordering::Relaxed);
    OPEN.fetch_add(1, Ordering::Relaxed);
}

/// An upgraded connection closed.
pub fn closed() {
    OPEN.fetch_sub(1, Ordering::Relaxed);
}

/// An upgrade request was refused.
pub fn handshake_failed(e: &HandshakeError) {
    if let Some(i) = HandshakeError::SERVER_LABELS
        .iter()
        .position(|l| *l == e.label())
    {
        HANDSHAKE_FAILURES[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A peer broke RFC 6455 (or sent a text message, or split a frame over messages);
/// `label`: [`ringport_ws::Error::label`] or `partial_frame`.
pub fn protocol_error(label: &str) {
    if let Some(i) = PROTOCOL_LABELS.iter().position(|l| *l == label) {
        PROTOCOL_ERRORS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Upgrades so far, WebSocket connections open now.
pub fn connections() -> (u64, u64) {
    (
        UPGRADES.load(Ordering::Relaxed),
        OPEN.load(Ordering::Relaxed).max(0) as u64,
    )
}

pub(super) fn render(w: &mut TextWriter<'_>) {
    let (upgrades, open) = connections();
    w.family(
        "ringport_websocket_upgrades_total",
        "Client connections upgraded to WebSocket (also counted in ringport_connections_accepted_total).",
        MetricType::Counter,
    );
    w.sample("ringport_websocket_upgrades_total", &[], upgrades);
    w.family(
        "ringport_websocket_connections_open",
        "Open connections that speak WebSocket (also counted in ringport_connections_open).",
        MetricType::Gauge,
    );
    w.sample("ringport_websocket_connections_open", &[], open);
    w.family(
        "ringport_websocket_handshake_failures_total",
        "WebSocket upgrade requests refused with an HTTP error, by reason.",
        MetricType::Counter,
    );
    for (i, label) in HandshakeError::SERVER_LABELS.iter().enumerate() {
        w.sample(
            "ringport_websocket_handshake_failures_total",
            &[("reason", label)],
            HANDSHAKE_FAILURES[i].load(Ordering::Relaxed),
        );
    }
    w.family(
        "ringport_websocket_protocol_errors_total",
        "WebSocket connections closed for breaking RFC 6455 (or sending text), by reason.",
        MetricType::Counter,
    );
    for (i, label) in PROTOCOL_LABELS.iter().enumerate() {
        w.sample(
            "ringport_websocket_protocol_errors_total",
            &[("reason", label)],
            PROTOCOL_ERRORS[i].load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_a_distinct_label() {
        let mut l = PROTOCOL_LABELS.to_vec();
        l.sort_unstable();
        l.dedup();
        assert_eq!(l.len(), PROTOCOL_REASONS);
        assert!(!l.contains(&""));
    }
}
