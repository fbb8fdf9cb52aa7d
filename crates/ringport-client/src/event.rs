//! What the application receives from a [`Client`](crate::Client).

use std::ops::Range;

use bytes::Bytes;
use ringport_proto::{CloseReason, Status, StreamName};

pub use crate::positions::LossReason;

/// One message, delivered to the application exactly once per
/// (stream, epoch, offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stream it belongs to (`room:<name>` or this user's `user:<id>`).
    pub stream: StreamName,
    /// The stream's epoch.
    pub epoch: u32,
    /// Position in the stream.
    pub offset: u64,
    /// Sent ahead of held traffic (PUSH URGENT flag).
    pub urgent: bool,
    /// Body.
    pub payload: Bytes,
}

/// Everything the client reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message.
    Message(Message),
    /// Messages of `stream` in `missing` will never be delivered: trimmed
    /// from history (`Gap`), lost with a server restart (`EpochChanged`:
    /// everything after the old position in the old epoch, and `missing`,
    /// the new epoch's offsets before the first one delivered), or
    /// skipped while asleep. Reported before any later message of the stream.
    NotRecovered {
        /// Stream affected.
        stream: StreamName,
        /// Why.
        reason: LossReason,
        /// Lost offsets, half-open; delivery continues at `missing.end`.
        missing: Range<u64>,
        /// Epoch delivery continues in.
        epoch: u32,
    },
    /// The server refused to resume `stream` after a reconnect (its
    /// RESUME_RESULT has outcome REFUSED with this status, see
    /// docs/protocol.md 4.10): the client is no longer in that room (or
    /// inbox) and none of its later messages will arrive. Its position is
    /// forgotten; a room may be joined again.
    ResumeRefused {
        /// Stream not resumed.
        stream: StreamName,
        /// The server's reason (`FORBIDDEN`, `LIMIT_EXCEEDED`, or another
        /// status a newer server may send).
        status: Status,
    },
    /// A connection was established (after WELCOME).
    Connected {
        /// Session id (presented on the next reconnect).
        session_id: u64,
        /// Whether the server continued the previous session.
        resumed: bool,
    },
    /// The connection dropped; the client reconnects with backoff.
    Disconnected {
        /// The server's close reason, or `CONNECTION_LOST` /
        /// `HEARTBEAT_TIMEOUT` detected locally.
        reason: CloseReason,
        /// Detail.
        text: String,
    },
    /// The client stopped for good (closed, auth failed, replaced, or gave
    /// up reconnecting). No event follows.
    Closed {
        /// Why, for logs.
        text: String,
    },
}

impl From<crate::positions::Loss> for Event {
    fn from(l: crate::positions::Loss) -> Self {
        Event::NotRecovered {
            stream: l.stream,
            reason: l.reason,
            missing: l.missing,
            epoch: l.epoch,
        }
    }
}
