//! The admin HTTP API (backends push, operators inspect) on the control-plane thread.
//!
//! - [`gateway`]: the [`Gateway`] trait the routes call, and the types crossing it.
//! - [`routes`]: the axum router, body parsing, API-key check, JSON errors; [`ROUTES`].
//! - [`pages`]: the dashboard and the live-comment demo (HTML compiled in), served without
//!   the key.
//! - `batch`: `POST /v1/publish/batch`, many pushes answered per item in order.
//! - [`idempotency`]: the bounded `Idempotency-Key` store that makes pushes safe to retry.
//! - [`shard_rpc`]: asking every shard (or one) and awaiting the replies with a deadline:
//!   the one "post to every shard" helper, [`ask_all`] (for implementors).
//! - [`server`]: [`AdminServer`], a tokio runtime on its own thread; [`conn`]: one
//!   connection under its head, body and idle deadlines.
//!
//! `docs/openapi.yaml` describes this API; `tests/openapi.rs` keeps the two in step.

mod batch;
pub mod conn;
pub mod fast_push;
pub mod gateway;
pub mod idempotency;
pub mod pages;
pub mod routes;
pub mod server;
pub mod shard_rpc;
#[cfg(test)]
pub(crate) mod testing;

pub use gateway::{
    ClusterScope, ConnectionCounts, ConnectionInfo, ConnectionState, Gateway, GatewayError,
    GatewayStats, History, HistoryMessage, NodeCount, Presence, PresenceUser, Push, PushOutcome,
    PushTarget, Receipts, Reply, RoomCount, RoomInfo, RoomList, RoomMember,
};
pub use pages::WebPages;
pub use routes::{router, router_with_pages, ROUTES};
pub use server::{AdminServer, HttpError};
pub use shard_rpc::{ask_all, ask_one, Replier, SHARD_REPLY_TIMEOUT};
