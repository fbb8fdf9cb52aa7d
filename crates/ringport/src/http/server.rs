//! The admin HTTP server: a tokio runtime on its own thread serving [`super::router`].
//!
//! The socket is bound on the caller's thread, so a bad address or a port in use is reported
//! by [`AdminServer::start`] itself, and the real address (port 0 resolved) is known at once.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::gateway::Gateway;
use super::routes::router;
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
    pub fn start(
        config: &AdminConfig,
        gateway: Arc<dyn Gateway>,
    ) -> Result<AdminServer, HttpError> {
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
        let app = router(
            gateway,
            config.api_key.clone(),
            config.max_body_size as usize,
        );
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
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
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await
                        .map_err(HttpError::Runtime)
                })
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
