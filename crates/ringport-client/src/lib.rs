//! ringport Rust client SDK.
//!
//! A [`Client`] holds one long connection to a ringport gateway and keeps it
//! alive: heartbeats, reconnect with exponential backoff and jitter, and
//! resume. Everything the application receives arrives on one channel of
//! [`Event`]s, in order:
//!
//! - each message of a stream exactly once and in offset order (the client
//!   drops duplicates by offset — a replay overlapping live traffic, or an
//!   inbox redelivery);
//! - an explicit [`Event::NotRecovered`] whenever messages will never arrive
//!   (history trimmed, server restarted, skipped while asleep) — never a
//!   silent skip;
//! - connection life-cycle events.
//!
//! Publishes carry a client seq and wait for PUBLISH_ACK; while disconnected
//! they wait in a bounded queue and are resent with the same seq after the
//! reconnect, so the gateway publishes each once. User-inbox messages are
//! acknowledged cumulatively once handed to the application.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringport_client::Error> {
//! use ringport_client::{Client, Event, Options};
//! let (client, mut events) = Client::connect("127.0.0.1:4666", "token", Options::default()).await?;
//! client.join("lobby").await?;
//! client.publish("lobby", "hello").await?;
//! while let Some(ev) = events.recv().await {
//!     if let Event::Message(m) = ev {
//!         println!("{} #{}: {:?}", m.stream, m.offset, m.payload);
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod actor;
mod error;
mod event;
mod link;
mod options;
pub mod outbound;
pub use ringport_proto::client::positions;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use actor::Fault;
pub use error::Error;
pub use event::{Event, LossReason, Message};
pub use link::tls_config;
pub use options::{Backoff, Options};
pub use ringport_proto::{CloseReason, Skipped, Status, StreamName};
/// The TLS library the SDK uses (for [`Options::tls`]: root stores, certificates).
pub use rustls;

use actor::{Actor, Command};

/// Handle to a connection kept alive by a background task. Cheap to clone;
/// the task ends when every handle is dropped or [`close`](Self::close) is
/// called.
#[derive(Debug, Clone)]
pub struct Client {
    cmds: mpsc::Sender<Command>,
    session_id: u64,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Client {
    /// Connects to `addr` — `host:port` for the native protocol on TCP,
    /// `tls://host:port` for it over TLS, `ws://host:port/path` for WebSocket
    /// (path `/ringport` when absent; docs/protocol.md section 13) or
    /// `wss://host:port/path` for WebSocket over TLS (TLS needs
    /// [`Options::tls`]; the certificate must name `host`) — authenticates with `token`, and
    /// returns the handle and the event receiver. Fails if the first
    /// connection or handshake fails; later disconnects are retried.
    pub async fn connect(
        addr: impl Into<String>,
        token: impl Into<Bytes>,
        options: Options,
    ) -> Result<(Client, mpsc::Receiver<Event>), Error> {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::channel(options.event_capacity.max(1));
        let (ready_tx, ready_rx) = oneshot::channel();
        let actor = Actor::new(addr.into(), token.into(), options, cmd_rx, ev_tx);
        tokio::spawn(actor.run(ready_tx));
        let session_id = ready_rx.await.map_err(|_| Error::Closed)??;
        Ok((
            Client {
                cmds: cmd_tx,
                session_id,
            },
            ev_rx,
        ))
    }

    /// Session id of the first connection (resumes keep it unless the
    /// server lost the session; see [`Event::Connected`]).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Joins `room` and waits for the server's ROOM_RESULT. The room is
    /// resumed (or re-joined) automatically after a reconnect.
    pub async fn join(&self, room: &str) -> Result<(), Error> {
        let room = room.to_owned();
        self.ask(|reply| Command::Join { room, reply }).await
    }

    /// Leaves `room` and waits for the ROOM_RESULT.
    pub async fn leave(&self, room: &str) -> Result<(), Error> {
        let room = room.to_owned();
        self.ask(|reply| Command::Leave { room, reply }).await
    }

    /// Publishes to `room` and waits for PUBLISH_ACK; returns the seq used.
    /// While disconnected the publish waits in the outbound queue (bounded:
    /// `Error::QueueFull`) and is sent after the reconnect.
    pub async fn publish(&self, room: &str, payload: impl Into<Bytes>) -> Result<u64, Error> {
        let room = room.to_owned();
        let payload = payload.into();
        self.ask(|reply| Command::Publish {
            room,
            payload,
            reply,
        })
        .await
    }

    /// Asks the server to let the client sleep with a longer heartbeat;
    /// returns the interval granted. Room traffic is held (and beyond a bound
    /// skipped, reported as `NotRecovered`) until [`wake`](Self::wake).
    pub async fn sleep(&self, interval: Duration) -> Result<Duration, Error> {
        let interval_ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
        let granted = self
            .ask(|reply| Command::Sleep { interval_ms, reply })
            .await?;
        Ok(Duration::from_millis(granted.into()))
    }

    /// Wakes up; returns the streams skipped while asleep (also reported as
    /// `Event::NotRecovered`).
    pub async fn wake(&self) -> Result<Vec<Skipped>, Error> {
        self.ask(|reply| Command::Wake { reply }).await
    }

    /// Sends CLOSE and stops the client; pending requests fail with
    /// `Error::Closed`.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Close { reply: tx }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Injects a connection fault (chaos tests): the client then reconnects
    /// and resumes as it would after a real one.
    #[doc(hidden)]
    pub async fn inject_fault(&self, fault: Fault) {
        let _ = self.cmds.send(Command::Fault(fault)).await;
    }
}
