//! # ringport-io — a completion-port TCP engine on io_uring
//!
//! The engine runs N *shards*, one thread each. A shard owns an io_uring ring (its completion
//! port), an SO_REUSEPORT listener, a slab of connection slots, a provided-buffer ring for
//! receives, a send-buffer pool, a hashed timer wheel and an inbox. It loops: queue
//! operations, one `io_uring_enter` to submit them all and wait, then hand completions to the
//! shard's [`Handler`] as plain callbacks. No thread blocks on a socket and there is no async
//! runtime on the data path.
//!
//! Contract highlights:
//! - Accepted sockets are *direct descriptors* (io_uring's registered file tables, together
//!   sized from [`EngineConfig::max_connections_per_shard`]; one table per ring holds at most
//!   RLIMIT_NOFILE, so a shard adds rings up to [`EngineConfig::max_descriptor_tables`]): they
//!   never use the process fd table.
//! - Receives are multishot from a per-shard buffer ring: an idle connection pins no receive
//!   buffer. `on_data` borrows the kernel-filled buffer; copy what you keep.
//! - Each connection has at most one send in flight; everything queued meanwhile leaves in one
//!   gathered `sendmsg` (a plain `send` when only one chunk is queued). Shared payloads
//!   (`Bytes`) are never copied per connection. Queued bytes are bounded by
//!   [`EngineConfig::send_high_water`].
//! - A [`ConnId`] carries a generation: a stale id can never touch a reused slot.
//! - Closing is layered (drain, FIN, cancel, close, free when nothing is in flight), and
//!   `on_close` is called exactly once per connection, with a [`CloseReason`].
//! - Any thread reaches a shard through [`EngineHandle`] (send, send to many, close, run a
//!   closure), via the shard's inbox and eventfd doorbell.
//!
//! ```no_run
//! use ringport_io::{ConnId, Ctx, Engine, EngineConfig, Handler};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
//!         let _ = ctx.send_copy(conn, data);
//!     }
//! }
//!
//! let cfg = EngineConfig { listen: Some("127.0.0.1:7000".parse().unwrap()), ..Default::default() };
//! let engine = Engine::start(cfg, |_shard, _handle| Echo).expect("engine");
//! engine.join().unwrap();
//! ```
//!
//! Platform code lives under `sys/` behind one `Driver` trait with two backends: io_uring
//! (above) and, for hosts where io_uring is blocked (container seccomp profiles,
//! `kernel.io_uring_disabled`), edge-triggered epoll, where accepted sockets live in the
//! process fd table (so RLIMIT_NOFILE caps connections per process) and receives use a small
//! per-shard buffer pool. [`EngineConfig::io_backend`] chooses (`auto` by default: io_uring
//! when the host allows it; [`EngineHandle::backend`] says which runs and why). Shards and
//! handlers see the same completions on both. All `unsafe` in ringport lives in this crate,
//! each block with a `// SAFETY:` comment.

#![warn(missing_docs)]

mod config;
mod conn;
mod connmap;
mod core;
mod ctx;
mod doorbell;
mod engine;
mod error;
#[cfg(test)]
mod fake_tests;
mod handler;
mod id;
mod inbox;
mod listener;
mod peer;
pub mod seccomp;
mod sendq;
mod shard;
mod stats;
mod sys;
#[cfg(any(test, feature = "fake"))]
pub mod testing;
mod timer;

pub use config::{EngineConfig, IoBackend, SlowConsumerPolicy, OVER_CAP_HEADROOM};
pub use conn::{ConnInfo, ConnState};
pub use connmap::ConnMap;
pub use ctx::Ctx;
pub use doorbell::{batched, DoorbellBatch};
pub use engine::{Engine, EngineHandle};
pub use error::{EngineError, SendError};
pub use handler::{CloseReason, Handler, Origin};
pub use id::ConnId;
pub use stats::{AcceptError, Counter, ShardStats, StatsSnapshot, SEND_BATCH_BUCKETS};
pub use sys::BackendChoice;
