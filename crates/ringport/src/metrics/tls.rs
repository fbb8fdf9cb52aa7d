//! TLS counters: handshakes, failures by reason, handshake timeouts, open TLS connections,
//! refused plaintext connections and certificate reloads.
//!
//! Process-wide atomics like [`super::websocket`]: they change once per connection or per
//! reload, never per message.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::text::{MetricType, TextWriter};

/// The reasons of `ringport_tls_errors_total`.
pub const ERROR_LABELS: [&str; 3] = ["client_certificate", "incompatible", "protocol"];

static HANDSHAKES: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicI64 = AtomicI64::new(0);
static ERRORS: [AtomicU64; ERROR_LABELS.len()] = [const { AtomicU64::new(0) }; ERROR_LABELS.len()];
static TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static PLAINTEXT_REFUSED: AtomicU64 = AtomicU64::new(0);
static RELOADS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// A TLS connection started (its first byte was a handshake record).
pub fn opened() {
    OPEN.fetch_add(1, Ordering::Relaxed);
}

/// A TLS connection closed.
pub fn closed() {
    OPEN.fetch_sub(1, Ordering::Relaxed);
}

/// A handshake completed.
pub fn handshake_done() {
    HANDSHAKES.fetch_add(1, Ordering::Relaxed);
}

/// The label of a fatal rustls error.
pub fn error_label(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            "client_certificate"
        }
        rustls::Error::PeerIncompatible(_) => "incompatible",
        _ => "protocol",
    }
}

/// A TLS connection was closed for a fatal TLS error; `label`: one of [`ERROR_LABELS`].
pub fn error(label: &str) {
    if let Some(i) = ERROR_LABELS.iter().position(|l| *l == label) {
        ERRORS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A TLS connection was closed at the handshake deadline before its handshake completed.
pub fn handshake_timeout() {
    TIMEOUTS.fetch_add(1, Ordering::Relaxed);
}

/// A plaintext connection was closed on a TLS-only port.
pub fn plaintext_refused() {
    PLAINTEXT_REFUSED.fetch_add(1, Ordering::Relaxed);
}

/// A SIGHUP reload of the certificate files succeeded (`ok`) or failed.
pub fn reloaded(ok: bool) {
    RELOADS[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}

pub(super) fn render(w: &mut TextWriter<'_>) {
    let counter = |w: &mut TextWriter<'_>, name: &str, help: &str, v: u64| {
        w.family(name, help, MetricType::Counter);
        w.sample(name, &[], v);
    };
    counter(
        w,
        "ringport_tls_handshakes_total",
        "TLS handshakes completed on the client port.",
        HANDSHAKES.load(Ordering::Relaxed),
    );
    w.family(
        "ringport_tls_connections_open",
        "Open client connections that speak TLS (also counted in ringport_connections_open).",
        MetricType::Gauge,
    );
    w.sample(
        "ringport_tls_connections_open",
        &[],
        OPEN.load(Ordering::Relaxed).max(0) as u64,
    );
    w.family(
        "ringport_tls_errors_total",
        "TLS connections closed for a fatal TLS error (alert sent), by reason.",
        MetricType::Counter,
    );
    for (i, label) in ERROR_LABELS.iter().enumerate() {
        w.sample(
            "ringport_tls_errors_total",
            &[("reason", label)],
            ERRORS[i].load(Ordering::Relaxed),
        );
    }
    counter(
        w,
        "ringport_tls_handshake_timeouts_total",
        "TLS connections closed at protocol.handshake_timeout_ms before their TLS handshake completed.",
        TIMEOUTS.load(Ordering::Relaxed),
    );
    counter(
        w,
        "ringport_tls_plaintext_refused_total",
        "Plaintext connections closed because tls.allow_plaintext is false.",
        PLAINTEXT_REFUSED.load(Ordering::Relaxed),
    );
    w.family(
        "ringport_tls_certificate_reloads_total",
        "Reloads of the TLS certificate files (SIGHUP), by result.",
        MetricType::Counter,
    );
    for (i, result) in ["ok", "failed"].iter().enumerate() {
        w.sample(
            "ringport_tls_certificate_reloads_total",
            &[("result", result)],
            RELOADS[i].load(Ordering::Relaxed),
        );
    }
}
