//! The admin HTTP API (backends push, operators inspect) on the control-plane thread.
//!
//! - [`gateway`]: the [`Gateway`] trait the routes call, and the types crossing it.
//! - [`routes`]: the axum router, body parsing, API-key check, JSON errors; [`ROUTES`].
//! - [`server`]: [`AdminServer`], a tokio runtime on its own thread.
//!
//! `docs/openapi.yaml` describes this API; `tests/openapi.rs` keeps the two in step.

pub mod gateway;
pub mod routes;
pub mod server;

pub use gateway::{
    ConnectionCounts, ConnectionInfo, ConnectionState, Gateway, GatewayError, GatewayStats, Push,
    PushOutcome, Reply, RoomInfo, RoomMember,
};
pub use routes::{router, ROUTES};
pub use server::{AdminServer, HttpError};
