//! Platform code. Everything specific to io_uring lives under `uring/`; the shard talks to it
//! only through [`uring::Driver`]'s small operation set (arm accept, arm receive, send a
//! gathered message, shutdown, cancel, close, connect, read the doorbell, wait, drain
//! completions, borrow/recycle a receive buffer). A readiness-based backend (epoll) for hosts
//! that block io_uring implements the same set — it performs the recv/send itself when a
//! socket is ready and reports the results as the same completions — so shards and handlers
//! do not change.

pub(crate) mod uring;
