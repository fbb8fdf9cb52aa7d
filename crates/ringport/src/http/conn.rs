//! One admin HTTP connection under deadlines: hyper serves it, a supervisor closes it when a
//! client stalls (docs/operations.md, "Limits and abuse").
//!
//! The phases of a connection and the deadline of each:
//! - **head**: from accept, or from the first byte after the previous response, until hyper
//!   hands a complete request head to the service: `admin.header_timeout_ms`;
//! - **request**: the service reads the body and answers: `admin.body_timeout_ms`, enforced
//!   around the service call (the client gets 408 and the connection closes);
//! - **idle**: after a response, until the next byte arrives: `admin.idle_timeout_ms`.
//!
//! Bytes read are counted by a thin wrapper around the socket, so the supervisor tells idle
//! from a head in progress without parsing anything. It checks every [`TICK`], so deadlines
//! are honoured to within a tick.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fast_push::App;
use crate::metrics::limits::hit;
use crate::metrics::Limit;

/// How often a connection's deadlines are checked.
pub const TICK: Duration = Duration::from_millis(50);

/// The admin connection deadlines (`[admin]`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

/// What the supervisor learns from the socket wrapper and the service.
#[derive(Debug, Default)]
struct Activity {
    /// Bytes read from the socket so far.
    read: AtomicU64,
    /// A request is in the service (its deadline is enforced there).
    in_request: AtomicBool,
    /// Requests answered so far.
    answered: AtomicU64,
}

/// The socket, counting bytes read.
struct Counted {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the supervisor thinks the connection is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since `since`.
    Head { since: Instant },
    /// Between requests since `since`, with `read` bytes read at that point.
    Idle { since: Instant, read: u64 },
    /// A request is being served.
    Request,
}

/// Serves one connection until it ends, stalls past a deadline, or `closing` turns true
/// (then it finishes the request in progress; the caller aborts it after its grace period).
/// `keep_alive: false` serves a single request (`connection: close`), for a connection on
/// the reserved descriptor.
pub async fn serve(
    stream: TcpStream,
    app: App,
    deadlines: Deadlines,
    keep_alive: bool,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Counted {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let activity = Arc::clone(&service_activity);
        activity.in_request.store(true, Ordering::Relaxed);
        async move {
            let answer = tokio::time::timeout(deadlines.body, app.call(req.map(Body::new))).await;
            activity.answered.fetch_add(1, Ordering::Relaxed);
            activity.in_request.store(false, Ordering::Relaxed);
            Ok::<Response, Infallible>(match answer {
                Ok(response) => response,
                Err(_) => {
                    hit(
                        Limit::AdminTimeout,
                        1,
                        &format_args!(
                            "admin request not complete within admin.body_timeout_ms ({} ms)",
                            deadlines.body.as_millis()
                        ),
                    );
                    request_timeout()
                }
            })
        }
    });
    // Pipelined requests (a backend pushing at line rate) get their answers in one write per
    // batch instead of one per answer.
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(keep_alive)
        .pipeline_flush(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut phase = Phase::Head {
        since: Instant::now(),
    };
    let mut answered = 0;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = closing.changed() => {
                if changed.is_err() || *closing.borrow() {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                    return;
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                phase = next_phase(phase, &activity, &mut answered, now);
                let over = match phase {
                    Phase::Head { since } => (now - since >= deadlines.header)
                        .then_some(("admin.header_timeout_ms", deadlines.header)),
                    Phase::Idle { since, .. } => (now - since >= deadlines.idle)
                        .then_some(("admin.idle_timeout_ms", deadlines.idle)),
                    Phase::Request => None,
                };
                if let Some((key, after)) = over {
                    hit(
                        Limit::AdminTimeout,
                        1,
                        &format_args!("admin connection closed by {key} ({} ms)", after.as_millis()),
                    );
                    return; // dropping `conn` closes the socket
                }
            }
        }
    }
}

fn next_phase(phase: Phase, activity: &Activity, answered: &mut u64, now: Instant) -> Phase {
    if activity.in_request.load(Ordering::Relaxed) {
        return Phase::Request;
    }
    let read = activity.read.load(Ordering::Relaxed);
    let done = activity.answered.load(Ordering::Relaxed);
    if done != *answered || matches!(phase, Phase::Request) {
        // A response went out since the last look: idle from now on.
        *answered = done;
        return Phase::Idle { since: now, read };
    }
    match phase {
        Phase::Idle { read: at, .. } if read > at => Phase::Head { since: now },
        other => other,
    }
}

fn request_timeout() -> Response {
    let mut r = (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [("content-type", "application/json")],
        r#"{"error":"request_timeout","message":"request not complete within admin.body_timeout_ms"}"#,
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}
