//! ringport gateway library: configuration, client auth, the admin HTTP API and metrics.
//!
//! The data plane (`ringport-io`) is reached only through [`http::Gateway`] and
//! [`serve::run`], so everything here compiles and is tested without the engine.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod echo;
pub mod gateway;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod offsets;
pub mod serve;
