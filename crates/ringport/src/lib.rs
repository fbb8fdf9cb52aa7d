//! ringport gateway library: configuration, client auth, the data plane on the engine, the
//! admin HTTP API and metrics.
//!
//! - [`gateway`]: the push gateway on `ringport-io` (per-shard handlers, rooms, fan-out) and
//!   its [`http::Gateway`] implementation; [`echo`]: the bare echo application.
//! - [`offsets`]: the [`offsets::StreamSink`] seam that numbers every stream message.
//! - [`serve`]: starts one of them ([`serve::start_data_plane`]) plus the admin API, and runs
//!   until a signal. The HTTP API only ever sees [`http::Gateway`], so it is tested with a
//!   mock as well as over the real engine.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
mod cluster;
pub mod config;
mod dense_map;
pub mod echo;
pub mod gateway;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod offsets;
pub mod serve;
pub mod streams;
