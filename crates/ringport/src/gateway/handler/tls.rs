//! The shard's side of TLS connections (`gateway/tls_session.rs` has the state): the
//! first-byte decision, ciphertext in, plaintext to the transport inside, records out.
//!
//! Every byte a TLS connection sends goes through [`emit`] / [`emit_copy`]: sealed by the
//! session into records in a per-shard scratch buffer, then copied into the engine's pooled
//! send blocks (so a shared broadcast frame is encrypted per connection and never handed to
//! the engine as plaintext). A plaintext connection's bytes go to the engine as they are.

use std::cell::RefCell;

use bytes::Bytes;
use ringport_io::{CloseReason as EngineReason, ConnId, Ctx, Handler, SendError};
use ringport_proto::CloseReason;

use super::GatewayHandler;
use crate::gateway::conn::{Conn, Flags};
use crate::gateway::tls::{SealError, TlsConn};
use crate::gateway::transport::Transport;
use crate::metrics::tls as tls_metrics;

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;

/// A shard's scratch buffers keep at most this much capacity between uses.
const SCRATCH_KEPT: usize = 256 * 1024;

thread_local! {
    /// Records sealed for one send before they are copied into the engine's send blocks;
    /// one per shard thread, reused.
    static RECORDS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Queues `data` (holding `messages` protocol messages) to `c`: shared as it is, or encrypted
/// into TLS records.
pub(in crate::gateway) fn emit<H: Handler>(
    ctx: &mut Ctx<'_, H>,
    c: &mut Conn,
    data: &Bytes,
    messages: u32,
) -> Result<(), SendError> {
    let id = c.id;
    match c.transport.tls_mut() {
        None => ctx.send_shared(id, data, messages),
        Some(t) => encrypt(ctx, id, t, data),
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

/// Seals `data` and queues the records. Before the handshake completes the session holds
/// the plaintext (up to 64 KiB; beyond it the send fails: `NotConnected`) and seals it when
/// the handshake completes.
fn encrypt<H: Handler>(
    ctx: &mut Ctx<'_, H>,
    id: ConnId,
    t: &mut TlsConn,
    data: &[u8],
) -> Result<(), SendError> {
    RECORDS.with_borrow_mut(|records| {
        records.clear();
        let sealed = t.seal(data, records);
        let sent = match sealed {
            Ok(()) if records.is_empty() => Ok(()),
            Ok(()) => ctx.send_copy(id, records),
            Err(SealError::NotConnected) => Err(SendError::NotConnected),
        };
        records.clear();
        // A large run's records are not kept on the thread once sent.
        if records.capacity() > SCRATCH_KEPT {
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
        if c.is(Flags::CLOSING) {
            return false;
        }
        if data.first() == Some(&HANDSHAKE_RECORD) {
            match TlsConn::new(acceptor.config()) {
                Ok(t) => {
                    c.transport = Transport::tls_over(t);
                    c.mark(Flags::SNIFFED);
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
        c.mark(Flags::CLOSING);
        c.set_close_code(CloseReason::POLICY.0);
        Self::close_conn(ctx, c, EngineReason::App(CloseReason::POLICY.0));
        false
    }

    /// Ciphertext arrived on a TLS connection: decrypt it, queue the records the session
    /// answers with (handshake, tickets, alerts), then hand the plaintext to the transport
    /// inside.
    pub(super) fn tls_input(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        c: &mut Conn,
        data: &[u8],
        now: u64,
    ) {
        let id = c.id;
        if c.is(Flags::CLOSING) {
            // Failed (or closed by the gateway): what else arrives is not read.
            return;
        }
        let Some(t) = c.transport.tls_mut() else {
            return;
        };
        let mut plain = std::mem::take(&mut self.tls_plain);
        let mut scratch = std::mem::take(&mut self.tls_cipher);
        plain.clear();
        let got = RECORDS.with_borrow_mut(|records| {
            records.clear();
            let got = t.receive(data, &mut scratch, &mut plain, records);
            if !records.is_empty() {
                // Handshake messages, or the alert of a failure; a failure to queue them
                // (a closing connection) leaves nothing else to do.
                let _ = ctx.send_copy(id, records);
            }
            records.clear();
            got
        });
        if got.peer_closed {
            // close_notify: the TCP end follows and closes the connection.
            tracing::trace!(conn = %id, "TLS close_notify received");
        }
        if got.handshake_done && !t.handshaken {
            t.handshaken = true;
            tls_metrics::handshake_done();
        }
        if let Some(e) = got.error {
            let label = tls_metrics::error_label(&e);
            tls_metrics::error(label);
            tracing::debug!(conn = %id, error = %e, "TLS connection failed");
            // Bytes that break TLS cost the address as broken native bytes do; a client
            // with no version or suite in common, or a refused certificate, is not abuse.
            if label == "protocol" {
                self.charge_abuse(c, "bytes that break TLS", now);
            }
            if c.mark(Flags::CLOSING) {
                c.set_close_code(CloseReason::PROTOCOL_ERROR.0);
                Self::close_conn(ctx, c, EngineReason::App(CloseReason::PROTOCOL_ERROR.0));
            }
        } else if !plain.is_empty() {
            self.plain_input(ctx, c, &plain, now);
        }
        // The shard's scratch keeps a receive buffer's worth at most.
        if plain.capacity() > SCRATCH_KEPT {
            plain = Vec::new();
        }
        if scratch.capacity() > SCRATCH_KEPT {
            scratch = Vec::new();
        }
        self.tls_plain = plain;
        self.tls_cipher = scratch;
    }

    /// `c` is closing: counts a TLS connection's end (and a handshake cut by the deadline).
    pub(super) fn tls_closed(&mut self, c: &Conn) {
        let Some(t) = c.transport.tls() else {
            return;
        };
        tls_metrics::closed();
        if !t.handshaken && c.close_code() == Some(CloseReason::HANDSHAKE_TIMEOUT.0) {
            tls_metrics::handshake_timeout();
        }
    }
}
