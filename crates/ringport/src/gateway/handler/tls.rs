//! The shard's side of TLS connections (`gateway/tls.rs` has the state): the first-byte
//! decision, ciphertext in, plaintext to the transport inside, records out.
//!
//! Every byte a TLS connection sends goes through [`emit`] / [`emit_copy`]: into the rustls
//! session's `writer()`, then drained by `write_tls` into the engine's pooled send blocks (so
//! a shared broadcast frame is encrypted per connection and never handed to the engine as
//! plaintext). A plaintext connection's bytes go to the engine as they are.

use std::cell::RefCell;
use std::io::{Read, Write};

use bytes::Bytes;
use ringport_io::{CloseReason as EngineReason, ConnId, Ctx, Handler, SendError};
use ringport_proto::CloseReason;

use super::GatewayHandler;
use crate::gateway::conn::Conn;
use crate::gateway::tls::TlsConn;
use crate::gateway::transport::Transport;
use crate::metrics::tls as tls_metrics;

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;

thread_local! {
    /// Records drained from a session before they are copied into the engine's send blocks;
    /// one per shard thread, reused.
    static RECORDS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Queues `data` (holding `messages` protocol messages) to `c`: shared as it is, or encrypted
/// into TLS records.
pub(in crate::gateway) fn emit<H: Handler>(
    ctx: &mut Ctx<'_, H>,
    c: &mut Conn,
    data: Bytes,
    messages: u32,
) -> Result<(), SendError> {
    let id = c.id;
    match c.transport.tls_mut() {
        None => ctx.send_messages(id, data, messages),
        Some(t) => encrypt(ctx, id, t, &data),
    }
}

/// [`emit`] of one message's body behind its separately queued header: over plain TCP the
/// engine keeps the two together as one record (`Ctx::send_continued`), so shedding a
/// backlog never leaves a header without its body.
pub(in crate::gateway) fn emit_continued<H: Handler>(
    ctx: &mut Ctx<'_, H>,
    c: &mut Conn,
    data: Bytes,
) -> Result<(), SendError> {
    let id = c.id;
    match c.transport.tls_mut() {
        None => ctx.send_continued(id, data),
        Some(t) => encrypt(ctx, id, t, &data),
    }
}

/// Queues a copy of `data` to `c` (as it is, or encrypted).
pub(in crate::gateway) fn emit_copy<H: Handler>(
    ctx: &mut Ctx<'_, H>,
    c: &mut Conn,
    data: &[u8],
) -> Result<(), SendError> {
    let id = c.id;
    match c.transport.tls_mut() {
        None => ctx.send_copy(id, data),
        Some(t) => encrypt(ctx, id, t, data),
    }
}

/// Writes `data` into the session and queues the records it makes. Before the handshake
/// completes rustls holds the plaintext (up to its 64 KiB buffer limit; beyond it the rest is
/// dropped: `NotConnected`) and sends it once the keys are there.
fn encrypt<H: Handler>(
    ctx: &mut Ctx<'_, H>,
    id: ConnId,
    t: &mut TlsConn,
    mut data: &[u8],
) -> Result<(), SendError> {
    while !data.is_empty() {
        let n = t.session.writer().write(data).unwrap_or(0);
        flush(ctx, id, t)?;
        if n == 0 {
            return Err(SendError::NotConnected);
        }
        data = &data[n..];
    }
    Ok(())
}

/// Queues every record the session has ready (handshake messages, alerts, data).
fn flush<H: Handler>(ctx: &mut Ctx<'_, H>, id: ConnId, t: &mut TlsConn) -> Result<(), SendError> {
    RECORDS.with_borrow_mut(|records| {
        let mut sent = Ok(());
        while t.session.wants_write() && sent.is_ok() {
            records.clear();
            match t.session.write_tls(records) {
                Ok(n) if n > 0 => sent = ctx.send_copy(id, records),
                _ => break,
            }
        }
        records.clear();
        // A large run's records are not kept on the thread once sent.
        if records.capacity() > 256 * 1024 {
            *records = Vec::new();
        }
        sent
    })
}

impl GatewayHandler {
    /// The first bytes of a connection arrived (`data`, nothing buffered yet): with TLS
    /// configured, a handshake record makes it a TLS connection; a plaintext one is closed on
    /// a TLS-only port. Returns false when the connection was closed (nothing is read).
    pub(super) fn tls_sniff(&mut self, ctx: &mut Ctx<'_, Self>, c: &mut Conn, data: &[u8]) -> bool {
        let Some(acceptor) = self.shared.tls.as_ref() else {
            return true;
        };
        if c.closing {
            return false;
        }
        if data.first() == Some(&HANDSHAKE_RECORD) {
            match TlsConn::new(acceptor.config()) {
                Ok(t) => {
                    c.transport = Transport::tls_over(t);
                    c.sniffed = true;
                    tls_metrics::opened();
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS session could not be created");
                }
            }
        } else if acceptor.allow_plaintext() {
            return true;
        } else {
            tls_metrics::plaintext_refused();
        }
        c.closing = true;
        c.close_code = Some(CloseReason::POLICY.0);
        ctx.close(c.id, EngineReason::App(CloseReason::POLICY.0));
        false
    }

    /// Ciphertext arrived on a TLS connection: decrypt it, hand the plaintext to the
    /// transport inside, queue the records the session answers with (handshake, alerts).
    pub(super) fn tls_input(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        c: &mut Conn,
        data: &[u8],
        now: u64,
    ) {
        let id = c.id;
        let closing = c.closing;
        let Some(t) = c.transport.tls_mut() else {
            return;
        };
        if closing {
            // Failed (or closed by the gateway): what else arrives is not read.
            return;
        }
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let mut failed = None;
        let mut rest = data;
        while !rest.is_empty() && failed.is_none() {
            match t.session.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    failed = Some(("protocol", e.to_string()));
                    break;
                }
            }
            match t.session.process_new_packets() {
                Ok(state) => {
                    let n = state.plaintext_bytes_to_read();
                    let at = plain.len();
                    plain.resize(at + n, 0);
                    if t.session.reader().read_exact(&mut plain[at..]).is_err() {
                        plain.truncate(at);
                    }
                }
                Err(e) => failed = Some((tls_metrics::error_label(&e), e.to_string())),
            }
        }
        if !t.handshaken && !t.session.is_handshaking() {
            t.handshaken = true;
            tls_metrics::handshake_done();
        }
        // Handshake messages, or the alert of a failure.
        let _ = flush(ctx, id, t);
        if let Some((label, text)) = failed {
            tls_metrics::error(label);
            tracing::debug!(conn = %id, error = %text, "TLS connection failed");
            if !c.closing {
                c.closing = true;
                c.close_code = Some(CloseReason::PROTOCOL_ERROR.0);
                ctx.close(id, EngineReason::App(CloseReason::PROTOCOL_ERROR.0));
            }
        } else if !plain.is_empty() {
            self.plain_input(ctx, c, &plain, now);
        }
        // The shard's scratch keeps a receive buffer's worth at most.
        if plain.capacity() > 256 * 1024 {
            plain = Vec::new();
        }
        self.tls_plain = plain;
    }

    /// `c` is closing: counts a TLS connection's end (and a handshake cut by the deadline).
    pub(super) fn tls_closed(&mut self, c: &Conn) {
        let Some(t) = c.transport.tls() else {
            return;
        };
        tls_metrics::closed();
        if !t.handshaken && c.close_code == Some(CloseReason::HANDSHAKE_TIMEOUT.0) {
            tls_metrics::handshake_timeout();
        }
    }
}
