//! The admin HTTP server: a tokio runtime on its own thread serving [`super::router`].
//!
//! The socket is bound on the caller's thread, so a bad address or a port in use is reported
//! by [`AdminServer::start`] itself, and the real address (port 0 resolved) is known at once.
//!
//! Bounded under abuse (docs/operations.md, "Limits and abuse"):
//! - each connection runs under the deadlines of [`super::conn`] (head, body, idle);
//! - at most `admin.max_connections` are open; one more is answered 503 and closed at once;
//! - one descriptor (`/dev/null`) is held in reserve: when `accept` fails for lack of
//!   descriptors, the reserve is closed so the next `accept` succeeds and that connection is
//!   served for one request (so `/healthz` and `/metrics` still answer; its head must arrive
//!   within a second), and the reserve is reopened once a descriptor is free again. Without a reserve the loop backs off instead of spinning on the listener;
//! - on shutdown, requests in progress get [`SHUTDOWN_GRACE`] to finish; then every
//!   connection is dropped, so no client can hold the process up.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::conn::Deadlines;
use crate::metrics::limits::hit;
use crate::metrics::Limit;

/// How long requests in progress may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

use super::fast_push::App;
use super::gateway::Gateway;
use super::pages::WebPages;
use super::routes::{app_state, default_pages};
use crate::config::AdminConfig;

/// Why the admin server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("admin.listen {addr} is not a loopback address, so admin.api_key must be set")]
    KeyRequired { addr: SocketAddr },
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin HTTP runtime: {0}")]
    Runtime(std::io::Error),
    #[error("admin HTTP server thread panicked")]
    Panicked,
}

/// A running admin server; dropping it without [`AdminServer::shutdown`] leaves it running
/// until the process exits.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), HttpError>>>,
}

impl AdminServer {
    /// Binds `config.listen` and serves the API on a new thread named `ringport-admin`.
    /// The pages are those of a gateway with default settings but `[admin]`; `serve` uses
    /// [`AdminServer::start_with_pages`].
    pub fn start(
        config: &AdminConfig,
        gateway: Arc<dyn Gateway>,
    ) -> Result<AdminServer, HttpError> {
        Self::start_with_pages(config, gateway, default_pages(config))
    }

    /// As [`AdminServer::start`], with the pages' settings (client port, secret, WebSocket path).
    pub fn start_with_pages(
        config: &AdminConfig,
        gateway: Arc<dyn Gateway>,
        pages: WebPages,
    ) -> Result<AdminServer, HttpError> {
        let (router, state) = app_state(gateway, config, pages);
        Self::serve_router(config, App::new(router, Some(state)))
    }

    fn serve_router(config: &AdminConfig, app: App) -> Result<AdminServer, HttpError> {
        let addr = config.listen;
        if config.api_key.is_none() && !addr.ip().is_loopback() {
            return Err(HttpError::KeyRequired { addr });
        }
        let listener =
            TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| HttpError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let limits = Limits {
            deadlines: Deadlines {
                header: Duration::from_millis(config.header_timeout_ms),
                body: Duration::from_millis(config.body_timeout_ms),
                idle: Duration::from_millis(config.idle_timeout_ms),
            },
            max_connections: config.max_connections.max(1) as usize,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("ringport-admin")
            .build()
            .map_err(HttpError::Runtime)?;
        let thread = std::thread::Builder::new()
            .name("ringport-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).map_err(HttpError::Runtime)?;
                    accept_loop(listener, app, limits, stop_rx).await;
                    Ok(())
                })
                // Dropping the runtime here cancels whatever connection task is left.
            })
            .map_err(HttpError::Runtime)?;
        Ok(AdminServer {
            local_addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, finishes in-flight requests, and waits for the thread.
    pub fn shutdown(mut self) -> Result<(), HttpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| HttpError::Panicked)?,
            None => Ok(()),
        }
    }
}

/// The admin server's limits (`[admin]`).
#[derive(Debug, Clone, Copy)]
struct Limits {
    deadlines: Deadlines,
    max_connections: usize,
}

/// Answer to a connection over `admin.max_connections` (written best effort, then closed).
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 73\r\n\r\n\
{\"error\":\"busy\",\"message\":\"admin.max_connections admin connections open\"}";

/// Head deadline of a connection served on the reserved descriptor.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long accepting pauses when descriptors are exhausted and the reserve is in use.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(50);

fn reserve_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// `EMFILE` and `ENFILE` on Linux (the only platform ringport runs on; spelled out to
/// spare the crate a libc dependency for two constants).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

/// Accepts and serves until `stop`, then winds the connections down within
/// [`SHUTDOWN_GRACE`].
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: App,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut reserve = reserve_descriptor();
    // The reserve was just closed for the next accepted connection.
    let mut on_reserve = false;
    loop {
        while conns.try_join_next().is_some() {}
        if reserve.is_none() && !on_reserve {
            reserve = reserve_descriptor();
        }
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) if std::mem::take(&mut on_reserve) => {
                // One request, at most a second to send its head, then the descriptor
                // returns to the reserve.
                let mut deadlines = limits.deadlines;
                deadlines.header = deadlines.header.min(RESERVE_HEADER_TIMEOUT);
                conns.spawn(ringport_io::batched(super::conn::serve(
                    stream,
                    app.clone(),
                    deadlines,
                    false,
                    closing_rx.clone(),
                )));
            }
            Ok((stream, _)) => {
                while conns.try_join_next().is_some() {}
                if conns.len() >= limits.max_connections {
                    hit(
                        Limit::AdminConnections,
                        1,
                        &format_args!(
                            "admin.max_connections ({}) admin connections open; refusing more",
                            limits.max_connections
                        ),
                    );
                    let _ = stream.try_write(BUSY);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                conns.spawn(ringport_io::batched(super::conn::serve(
                    stream,
                    app.clone(),
                    limits.deadlines,
                    true,
                    closing_rx.clone(),
                )));
            }
            Err(e) if out_of_descriptors(&e) => {
                if reserve.take().is_some() {
                    on_reserve = true;
                    // The freed descriptor goes to the next accept.
                    hit(
                        Limit::Descriptors,
                        1,
                        &"admin: out of file descriptors; serving one connection at a time from the reserved descriptor",
                    );
                    continue;
                }
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(EXHAUSTED_BACKOFF) => {}
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
    conns.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
        let _: serde_json::Value = serde_json::from_str(body).unwrap();
    }
}
