//! The SDK's one error type.

use ringport_proto::{CloseReason, Status};

/// Everything a [`Client`](crate::Client) call can fail with; each variant
/// names its cause.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made (first connect only; later
    /// failures are retried with backoff).
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Address dialled.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// No WELCOME (or CLOSE) arrived within `Options::handshake_timeout`.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The server rejected the token (CLOSE `AUTH_FAILED`); the client stops.
    #[error("authentication failed: {text}")]
    AuthFailed {
        /// The server's explanation.
        text: String,
    },
    /// The server closed the connection with a CLOSE during a handshake (the first
    /// connect's error), or for good (`REPLACED` by another connection resuming the
    /// session, or `UNSUPPORTED_VERSION`; the client stops). A reconnect refused for any
    /// other reason (POLICY, GOING_AWAY, INTERNAL...) is retried after the backoff.
    #[error("closed by server: {reason:?} {text}")]
    ClosedByServer {
        /// Close reason from the server's CLOSE.
        reason: CloseReason,
        /// Its text.
        text: String,
    },
    /// A JOIN, LEAVE or PUBLISH was answered with a non-OK status.
    #[error("request rejected: {status:?}")]
    Rejected {
        /// The status the server answered.
        status: Status,
    },
    /// The outbound publish queue is full (`Options::outbound_queue`).
    #[error("outbound queue full ({capacity} publishes awaiting PUBLISH_ACK)")]
    QueueFull {
        /// The configured bound.
        capacity: usize,
    },
    /// An argument cannot be encoded (empty or over-long room name, payload
    /// over the server's maximum).
    #[error("invalid argument: {0}")]
    Invalid(#[from] ringport_proto::Error),
    /// The connection dropped before the server answered (SLEEP/WAKE are
    /// not replayed after a reconnect: the new connection starts awake).
    #[error("connection lost before the answer")]
    Disconnected,
    /// The client was closed (by `close`, by giving up reconnecting, or
    /// because it was dropped) before the request completed.
    #[error("client closed")]
    Closed,
}
