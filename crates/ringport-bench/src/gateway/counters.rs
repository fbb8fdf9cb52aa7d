//! Per-shard protocol counters of the gateway driver (plain atomics, each written by one
//! shard) and their totals as reported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// Gateway counters of one shard (plain atomics: each is written by one shard).
#[derive(Debug, Default)]
pub struct GwCounters {
    pub connects: AtomicU64,
    pub welcomed: AtomicU64,
    pub ready: AtomicU64,
    pub join_refused: AtomicU64,
    /// Connections that closed before the handshake completed.
    pub handshake_failed: AtomicU64,
    pub server_closes: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// `--tls`: handshake or record errors (a refused certificate, an undecryptable record)
    /// and close_notify from the server.
    pub tls_errors: AtomicU64,
    pub pings_sent: AtomicU64,
    pub pongs_received: AtomicU64,
    pub server_pings: AtomicU64,
    pub pushes: AtomicU64,
    pub duplicates: AtomicU64,
    pub late: AtomicU64,
    pub disconnects: AtomicU64,
    pub resume_answered: AtomicU64,
    pub resume_unanswered: AtomicU64,
    pub churn_cycles: AtomicU64,
    /// The connect pacer's window now (a gauge, `crate::pacer`).
    pub connect_window: AtomicU64,
    /// Times the pacer cut its window (a total, stored by the shard).
    pub window_cuts: AtomicU64,
    /// Wall clock (µs since the Unix epoch) of the latest push received, 0 before any: with
    /// one broadcast (scripts/bench-million.sh) this is the time of its last delivery.
    pub last_push_unix_us: AtomicU64,
}

pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Totals over shards, as reported.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GwTotals {
    pub connects: u64,
    pub welcomed: u64,
    pub ready: u64,
    pub join_refused: u64,
    pub handshake_failed: u64,
    pub server_closes: u64,
    pub protocol_errors: u64,
    pub tls_errors: u64,
    pub pings_sent: u64,
    pub pongs_received: u64,
    pub server_pings: u64,
    pub pushes: u64,
    pub duplicates: u64,
    pub late: u64,
    pub disconnects: u64,
    pub resume_answered: u64,
    pub resume_unanswered: u64,
    pub churn_cycles: u64,
    /// The connect pacers' windows summed over shards, at the end.
    pub connect_window: u64,
    /// Times a connect pacer cut its window (signs of an overrun accept backlog).
    pub window_cuts: u64,
    /// Wall clock (µs since the Unix epoch) of the latest push any connection received.
    pub last_push_unix_us: u64,
}

pub fn totals(c: &[Arc<GwCounters>]) -> GwTotals {
    let mut t = GwTotals::default();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for c in c {
        t.connects += l(&c.connects);
        t.welcomed += l(&c.welcomed);
        t.ready += l(&c.ready);
        t.join_refused += l(&c.join_refused);
        t.handshake_failed += l(&c.handshake_failed);
        t.server_closes += l(&c.server_closes);
        t.protocol_errors += l(&c.protocol_errors);
        t.tls_errors += l(&c.tls_errors);
        t.pings_sent += l(&c.pings_sent);
        t.pongs_received += l(&c.pongs_received);
        t.server_pings += l(&c.server_pings);
        t.pushes += l(&c.pushes);
        t.duplicates += l(&c.duplicates);
        t.late += l(&c.late);
        t.disconnects += l(&c.disconnects);
        t.resume_answered += l(&c.resume_answered);
        t.resume_unanswered += l(&c.resume_unanswered);
        t.connect_window += l(&c.connect_window);
        t.window_cuts += l(&c.window_cuts);
        t.last_push_unix_us = t.last_push_unix_us.max(l(&c.last_push_unix_us));
        t.churn_cycles += l(&c.churn_cycles);
    }
    t
}
