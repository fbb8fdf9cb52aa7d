//! The readiness backend for hosts where io_uring is blocked (container seccomp profiles,
//! `kernel.io_uring_disabled`): edge-triggered epoll, non-blocking sockets in the process fd
//! table, and the I/O performed by the driver when a socket is ready, reported as the same
//! completions the io_uring backend delivers (see the contract in `sys/mod.rs`).

mod bufpool;
mod driver;

pub(crate) use driver::EpollDriver;
