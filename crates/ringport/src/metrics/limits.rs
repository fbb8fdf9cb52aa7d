//! Abuse limits: one process-wide counter per limit, and a log line the first time each bites.
//!
//! Every limit of docs/operations.md, "Limits and abuse", that this module names counts its
//! hits in `ringport_limit_hits_total{limit="..."}` and logs one `warn` line on its first hit
//! (later hits only count, so an attack cannot flood the log). The counters are process-wide
//! atomics rather than per-shard cells: limits are hit rarely, from shards, the stream
//! registry and the admin server alike.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::text::{MetricType, TextWriter};

/// A limit that protects the process from one client or admin peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// A frame header before WELCOME declaring more than 65,536 bytes (CLOSE FRAME_TOO_LARGE).
    HandshakePayload,
    /// A HELLO with more than `max_rooms + 2` resume entries (CLOSE PROTOCOL_ERROR).
    ResumeEntries,
    /// A HELLO naming one stream twice (CLOSE PROTOCOL_ERROR).
    ResumeDuplicate,
    /// A resume entry answered GAP because the HELLO's replay budget was spent.
    ReplayBytes,
    /// A history message evicted because `history.max_bytes` was reached (counts messages).
    HistoryBytes,
    /// A stream log removed after `history.idle_ttl_ms` without appends (counts streams).
    HistoryIdle,
    /// A connection closed with REPLACED because another resumed its session.
    SessionReplaced,
    /// An admin connection refused at `admin.max_connections`.
    AdminConnections,
    /// An admin connection closed by `admin.header_timeout_ms`, `admin.body_timeout_ms` or
    /// `admin.idle_timeout_ms`.
    AdminTimeout,
    /// An idempotency key forgotten before its TTL because `admin.idempotency_max_keys`
    /// keys were held.
    IdempotencyKeys,
    /// A batch publish refused for carrying more than `admin.max_batch_items` items.
    BatchItems,
    /// A push refused because a shard had `rooms.max_pending_deliveries` messages queued.
    DeliveryBacklog,
    /// A connection refused at `limits.max_connections_per_ip` (CLOSE POLICY).
    ConnectionsPerIp,
    /// A connection refused by `limits.handshakes_per_ip_per_sec` (CLOSE POLICY).
    HandshakeRate,
    /// A connection refused because its address spent `limits.auth_failure_burst_per_ip`
    /// (CLOSE POLICY).
    AuthFailures,
    /// A HELLO refused at `limits.max_connections_per_user` (CLOSE POLICY).
    ConnectionsPerUser,
    /// A JOIN or LEAVE answered RATE_LIMITED (`limits.room_ops_per_sec`).
    RoomOpRate,
    /// A connection closed with POLICY for control frames over `limits.control_frames_per_sec`
    /// or for a whole burst of JOIN/LEAVE sent while rate limited.
    ControlRate,
    /// A connection closed for abuse (`control_rate`, or bytes that break the protocol) that
    /// cost its address `limits.handshakes_per_abusive_close` new-connection tokens.
    AbusiveClose,
    /// A connection refused by a per-IP limit and closed at once without CLOSE POLICY, its
    /// address's answers (`limits.refusals_answered_per_ip_per_sec`) spent.
    RefusalUnanswered,
    /// An address's rates forgotten to stay within `limits.max_tracked_ips`.
    TrackedIps,
    /// A connection accepted over the process-wide connection cap (CLOSE POLICY "server
    /// full"); counted by the engine.
    ServerFull,
    /// `server.memory_budget_bytes` exceeded: a connection refused, or one with a large send
    /// queue closed.
    MemoryBudget,
    /// A WebSocket upgrade request over `websocket.max_request_bytes` (HTTP 431).
    WebSocketRequest,
    /// A WebSocket message over `websocket.max_message_bytes` (close code 1009).
    WebSocketMessage,
    /// A JOIN or a resume entry refused with LIMIT_EXCEEDED at
    /// `rooms.max_rooms_per_connection`.
    RoomsPerConnection,
    /// A client PUBLISH answered RATE_LIMITED because its address passed
    /// `limits.publish_bytes_per_ip_per_sec`.
    PublishBytes,
    /// An admin connection accepted on the reserved descriptor because the process was out
    /// of descriptors (served one request, then closed).
    Descriptors,
}

impl Limit {
    /// Every limit, in rendering order.
    pub const ALL: [Limit; 28] = [
        Limit::HandshakePayload,
        Limit::ResumeEntries,
        Limit::ResumeDuplicate,
        Limit::ReplayBytes,
        Limit::HistoryBytes,
        Limit::HistoryIdle,
        Limit::SessionReplaced,
        Limit::AdminConnections,
        Limit::AdminTimeout,
        Limit::IdempotencyKeys,
        Limit::BatchItems,
        Limit::DeliveryBacklog,
        Limit::ConnectionsPerIp,
        Limit::HandshakeRate,
        Limit::AuthFailures,
        Limit::ConnectionsPerUser,
        Limit::RoomOpRate,
        Limit::ControlRate,
        Limit::AbusiveClose,
        Limit::RefusalUnanswered,
        Limit::TrackedIps,
        Limit::ServerFull,
        Limit::MemoryBudget,
        Limit::WebSocketRequest,
        Limit::WebSocketMessage,
        Limit::RoomsPerConnection,
        Limit::PublishBytes,
        Limit::Descriptors,
    ];

    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::HandshakePayload => "handshake_payload",
            Limit::ResumeEntries => "resume_entries",
            Limit::ResumeDuplicate => "resume_duplicate",
            Limit::ReplayBytes => "replay_bytes",
            Limit::HistoryBytes => "history_bytes",
            Limit::HistoryIdle => "history_idle",
            Limit::SessionReplaced => "session_replaced",
            Limit::AdminConnections => "admin_connections",
            Limit::AdminTimeout => "admin_timeout",
            Limit::IdempotencyKeys => "idempotency_keys",
            Limit::BatchItems => "batch_items",
            Limit::DeliveryBacklog => "delivery_backlog",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::HandshakeRate => "handshake_rate",
            Limit::AuthFailures => "auth_failures",
            Limit::ConnectionsPerUser => "connections_per_user",
            Limit::RoomOpRate => "room_op_rate",
            Limit::ControlRate => "control_rate",
            Limit::AbusiveClose => "abusive_close",
            Limit::RefusalUnanswered => "refusal_unanswered",
            Limit::TrackedIps => "tracked_ips",
            Limit::ServerFull => "server_full",
            Limit::MemoryBudget => "memory_budget",
            Limit::WebSocketRequest => "websocket_request",
            Limit::WebSocketMessage => "websocket_message",
            Limit::RoomsPerConnection => "rooms_per_connection",
            Limit::PublishBytes => "publish_bytes",
            Limit::Descriptors => "descriptors",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).unwrap_or(0)
    }
}

const N: usize = Limit::ALL.len();

static HITS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static LOGGED: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];

/// Counts `n` hits of `limit`; the first hit in the process logs `detail` at `warn`.
pub fn hit(limit: Limit, n: u64, detail: &dyn std::fmt::Display) {
    if n == 0 {
        return;
    }
    let i = limit.index();
    HITS[i].fetch_add(n, Ordering::Relaxed);
    if !LOGGED[i].swap(true, Ordering::Relaxed) {
        tracing::warn!(
            limit = limit.label(),
            "limit reached (logged once; see ringport_limit_hits_total): {detail}"
        );
    }
}

/// Hits of `limit` so far in this process.
pub fn hits(limit: Limit) -> u64 {
    HITS[limit.index()].load(Ordering::Relaxed)
}

/// Why history messages were dropped by their stream's own bounds (not by
/// `history.max_bytes`, which counts as the limit `history_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryTrim {
    /// `history.max_messages_per_stream`.
    Count,
    /// `history.max_age_ms`.
    Age,
}

static HISTORY_TRIMMED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Counts `n` history messages dropped for `why`. Normal operation, not abuse: nothing is
/// logged.
pub fn history_trimmed(why: HistoryTrim, n: u64) {
    if n > 0 {
        HISTORY_TRIMMED[why as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// History messages dropped for `why` so far in this process.
pub fn history_trims(why: HistoryTrim) -> u64 {
    HISTORY_TRIMMED[why as usize].load(Ordering::Relaxed)
}

/// Renders `ringport_limit_hits_total`; `counted_elsewhere` adds hits counted outside this
/// module (the engine's refusals over the connection cap).
pub(super) fn render(w: &mut TextWriter<'_>, counted_elsewhere: &[(Limit, u64)]) {
    w.family(
        "ringport_history_trimmed_total",
        "History messages dropped by their stream's bounds, by reason (count: history.max_messages_per_stream, age: history.max_age_ms).",
        MetricType::Counter,
    );
    for (why, label) in [(HistoryTrim::Count, "count"), (HistoryTrim::Age, "age")] {
        w.sample(
            "ringport_history_trimmed_total",
            &[("reason", label)],
            history_trims(why),
        );
    }
    w.family(
        "ringport_limit_hits_total",
        "Times an abuse limit bit, by limit (docs/operations.md, Limits and abuse).",
        MetricType::Counter,
    );
    for l in Limit::ALL {
        w.sample(
            "ringport_limit_hits_total",
            &[("limit", l.label())],
            hits(l)
                + counted_elsewhere
                    .iter()
                    .filter(|(e, _)| *e == l)
                    .map(|(_, n)| n)
                    .sum::<u64>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_hits_count() {
        let mut labels: Vec<_> = Limit::ALL.iter().map(|l| l.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), N);
        let before = hits(Limit::AdminTimeout);
        hit(Limit::AdminTimeout, 2, &"test");
        hit(Limit::AdminTimeout, 0, &"nothing");
        assert!(hits(Limit::AdminTimeout) >= before + 2);
    }
}
