//! One TLS connection's records, driven through rustls' *unbuffered* API
//! (`UnbufferedServerConnection`): ringport owns every buffer, so an idle connection holds
//! none (issue 14: idle memory per TLS connection).
//!
//! ```text
//!  ciphertext ─► [pending: an incomplete record only] ─► process_tls_records ─┬► plaintext
//!                 (else decrypted in place in the shard's scratch)           └► records out
//!  plaintext  ─► WriteTraffic::encrypt ─► records out ─► the engine's send queue
//! ```
//!
//! The buffered `ServerConnection` keeps a 4 KiB receive buffer (and its send and plaintext
//! queues) for the life of the connection. Here the bytes a read completes are decrypted in
//! place in a per-shard scratch buffer; only the tail of an incomplete record (or of a
//! handshake message spread over records) is copied into `pending`, which is freed as soon as
//! it is consumed. Records to send are written into a caller's buffer that the shard copies
//! into the engine's pooled send blocks. Plaintext produced before the handshake allows
//! application data (a close, an HTTP refusal) waits in `early`, bounded like rustls' own
//! buffer (64 KiB).
//!
//! Everything here is sans-IO: bytes in, bytes out; tests drive it with a rustls client in
//! memory.

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;

use super::transport::Transport;

/// Plaintext held before the handshake allows application data (rustls' default limit for
/// its buffered API); beyond it a send fails like one on a closed connection.
pub(crate) const MAX_EARLY_PLAINTEXT: usize = 64 * 1024;

/// Ciphertext that may wait for the rest of its record (or handshake message): a
/// handshake message is at most 64 KiB + its header in rustls, spread over records of at most
/// 16 KiB + 2 KiB (TLS 1.3 ciphertext expansion) + 5-byte header each. rustls refuses larger
/// ones before this is reached; the bound keeps a broken peer from growing it regardless.
const MAX_PENDING: usize = 96 * 1024;

/// Room for one record's header, inner content type and AEAD tag (TLS 1.3: 5 + 1 + 16;
/// TLS 1.2 GCM: 5 + 8 + 16), per 16 KiB fragment.
const RECORD_OVERHEAD: usize = 32;
const MAX_FRAGMENT: usize = 16 * 1024;

/// Why a send on a TLS connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealError {
    /// More plaintext than [`MAX_EARLY_PLAINTEXT`] waits for the handshake, or the session
    /// cannot send application data any more (failed or closed).
    NotConnected,
}

/// One TLS connection: its rustls session, the bytes ringport holds for it, and the
/// transport inside it.
pub(crate) struct TlsConn {
    /// The rustls state machine (handshake, keys, record sequence numbers); holds no buffers
    /// between calls beyond its own small state.
    session: UnbufferedServerConnection,
    /// Bytes held between calls; `None` (one word, no allocation) whenever the connection
    /// is idle between whole records with nothing waiting for the handshake.
    held: Option<Box<Held>>,
    /// The session failed or was closed: nothing more is read or sealed.
    dead: bool,
    /// `Native` or `WebSocket`, decided by the first plaintext bytes (never `Tls`).
    pub inner: Transport,
    /// The first plaintext bytes have decided `inner`.
    pub sniffed: bool,
    /// The handshake completed (counted once in `ringport_tls_handshakes_total`).
    pub handshaken: bool,
}

/// What a [`TlsConn`] holds between calls, boxed because an idle connection holds neither.
#[derive(Debug, Default)]
struct Held {
    /// Ciphertext of an incomplete record or handshake message, waiting for the rest.
    pending: Vec<u8>,
    /// Plaintext queued before the handshake allowed application data (nothing is sent
    /// before a HELLO, so almost always empty).
    early: Vec<u8>,
}

impl Held {
    /// `held` as it should be kept: `None` once both buffers are empty.
    fn keep(held: Option<Box<Held>>, pending: Vec<u8>, early: Vec<u8>) -> Option<Box<Held>> {
        match held {
            Some(h) if h.pending.is_empty() && h.early.is_empty() => None,
            Some(h) => Some(h),
            None if pending.is_empty() && early.is_empty() => None,
            None => Some(Box::new(Held { pending, early })),
        }
    }
}

/// What one batch of received ciphertext produced.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The handshake completed during this batch.
    pub handshake_done: bool,
    /// The peer sent close_notify (it sends no more data).
    pub peer_closed: bool,
    /// The session failed: the error (after the alert, if any, was written out).
    pub error: Option<rustls::Error>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("held", &self.held)
            .field("dead", &self.dead)
            .field("inner", &self.inner)
            .field("handshaken", &self.handshaken)
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsConn, rustls::Error> {
        Ok(TlsConn {
            session: UnbufferedServerConnection::new(config)?,
            held: None,
            dead: false,
            inner: Transport::Native,
            sniffed: false,
            handshaken: false,
        })
    }

    /// Bytes ringport holds for this connection below the transport inside (counted as
    /// receive-buffer memory).
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |h| {
            std::mem::size_of::<Held>() + h.pending.capacity() + h.early.capacity()
        })
    }

    /// Takes `data` received from the peer: decrypted plaintext is appended to `plain`, the
    /// records the session answers with (handshake messages, session tickets, alerts, and
    /// plaintext sealed while the handshake was in progress) to `out`, in order. `scratch`
    /// is the shard's reusable buffer the records are decrypted in when nothing is pending.
    pub fn receive(
        &mut self,
        data: &[u8],
        scratch: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Received {
        let mut got = Received::default();
        if self.dead {
            return got;
        }
        // Without held bytes (the idle case) two empty vectors stand in; nothing allocates
        // unless something must be kept.
        let (mut no_pending, mut no_early) = (Vec::new(), Vec::new());
        let mut held = self.held.take();
        let (pending, early) = match held.as_deref_mut() {
            Some(h) => (&mut h.pending, &mut h.early),
            None => (&mut no_pending, &mut no_early),
        };
        let from_pending = !pending.is_empty();
        let buf = if from_pending {
            pending.extend_from_slice(data);
            &mut *pending
        } else {
            scratch.clear();
            scratch.extend_from_slice(data);
            &mut *scratch
        };
        let was_handshaking = self.session.is_handshaking();
        let start = drive(&mut self.session, buf, plain, out, early, &mut got);
        if was_handshaking && !self.session.is_handshaking() {
            got.handshake_done = true;
        }
        // Keep only the incomplete tail, in a buffer of its own size; none when idle.
        let rest = buf.len() - start;
        if from_pending {
            pending.drain(..start);
            if pending.is_empty() {
                *pending = Vec::new();
            }
        } else if rest > 0 {
            *pending = scratch[start..].to_vec();
        }
        if got.error.is_none() && pending.len() > MAX_PENDING {
            got.error = Some(rustls::Error::General(format!(
                "{} bytes of an incomplete record or handshake message",
                pending.len()
            )));
        }
        if got.error.is_some() {
            self.dead = true;
            self.held = None;
            return got;
        }
        self.held = Held::keep(held, no_pending, no_early);
        got
    }

    /// Encrypts `data` into records appended to `out`; before the handshake allows
    /// application data it is held (and sealed by the [`TlsConn::receive`] that completes
    /// the handshake).
    pub fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        if self.dead {
            return Err(SealError::NotConnected);
        }
        let early = self.held.as_ref().map_or(0, |h| h.early.len());
        if self.session.is_handshaking() || early > 0 {
            if early + data.len() > MAX_EARLY_PLAINTEXT {
                return Err(SealError::NotConnected);
            }
            self.held
                .get_or_insert_with(Box::default)
                .early
                .extend_from_slice(data);
            return Ok(());
        }
        // Nothing is pending between whole records, so the session only reports states it
        // has queued itself (a key update) before letting application data through.
        loop {
            let mut none: [u8; 0] = [];
            let pending: &mut [u8] = match self.held.as_deref_mut() {
                Some(h) => &mut h.pending,
                None => &mut none,
            };
            let UnbufferedStatus { discard, state } = self.session.process_tls_records(pending);
            debug_assert_eq!(discard, 0, "sealing consumes no received bytes");
            match state {
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    return encrypt(data, out, |d, o| w.encrypt(d, o));
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode(out, |o| e.encode(o));
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => {
                    self.dead = true;
                    return Err(SealError::NotConnected);
                }
            }
        }
    }
}

/// Drives the session over `buf` until it needs more bytes; returns how many bytes of `buf`
/// it consumed (the rest is an incomplete record or handshake message).
fn drive(
    session: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
    early: &mut Vec<u8>,
    got: &mut Received,
) -> usize {
    let mut start = 0;
    loop {
        let UnbufferedStatus { mut discard, state } =
            session.process_tls_records(&mut buf[start..]);
        let more = match state {
            // After a failure only the alert it queued is still written out.
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                encode(out, |o| e.encode(o));
                true
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                // `out` goes to the engine, in order, when this batch returns.
                t.done();
                true
            }
            Ok(_) if got.error.is_some() => false,
            Err(_) if got.error.is_some() => false,
            Err(e) => {
                got.error = Some(e);
                true
            }
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(record) = r.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            got.error = Some(e);
                            break;
                        }
                    }
                }
                true
            }
            Ok(ConnectionState::ReadEarlyData(mut r)) => {
                // 0-RTT is not enabled (`max_early_data_size` 0): rustls never reports it.
                while r.next_record().is_some() {}
                got.error = Some(rustls::Error::General("unexpected 0-RTT data".into()));
                true
            }
            Ok(ConnectionState::WriteTraffic(mut w)) => {
                // Application data may flow: what was sealed during the handshake leaves now.
                if !early.is_empty() {
                    let held = std::mem::take(early);
                    if encrypt(&held, out, |d, o| w.encrypt(d, o)).is_err() {
                        got.error = Some(rustls::Error::EncryptError);
                    }
                }
                false
            }
            Ok(ConnectionState::PeerClosed) => {
                got.peer_closed = true;
                true
            }
            // BlockedHandshake (more bytes needed), Closed, and states a later rustls adds.
            Ok(_) => false,
        };
        start += discard;
        if !more {
            return start;
        }
    }
}

/// Appends one encoded handshake record (or alert) to `out`.
fn encode(out: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let at = out.len();
    let mut room = 512;
    loop {
        out.resize(at + room, 0);
        match encode(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return;
            }
            Err(EncodeError::InsufficientSize(s)) => room = s.required_size,
            Err(EncodeError::AlreadyEncoded) => {
                out.truncate(at);
                return;
            }
        }
    }
}

/// Appends `data` sealed into records to `out`.
fn encrypt(
    data: &[u8],
    out: &mut Vec<u8>,
    mut encrypt: impl FnMut(&[u8], &mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), SealError> {
    let at = out.len();
    let mut room = data.len() + RECORD_OVERHEAD * (data.len() / MAX_FRAGMENT + 1);
    loop {
        out.resize(at + room, 0);
        match encrypt(data, &mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) if s.required_size > room => {
                room = s.required_size
            }
            Err(_) => {
                out.truncate(at);
                return Err(SealError::NotConnected);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::io::{Read, Write};

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A rustls client and a [`TlsConn`], joined in memory; `chunk` bytes per delivery to
    /// the server (1 splits every record).
    struct Pair {
        client: ClientConnection,
        server: TlsConn,
        scratch: Vec<u8>,
        plain: Vec<u8>,
        chunk: usize,
    }

    impl Pair {
        fn new(chunk: usize) -> Pair {
            let (server, client) = configs();
            let name = ServerName::try_from("localhost").unwrap();
            Pair {
                client: ClientConnection::new(client, name).unwrap(),
                server: TlsConn::new(server).unwrap(),
                scratch: Vec::new(),
                plain: Vec::new(),
                chunk,
            }
        }

        /// Moves bytes both ways until neither side has anything to say.
        fn pump(&mut self) -> Received {
            let mut all = Received::default();
            for _ in 0..64 {
                let mut wire = Vec::new();
                while self.client.wants_write() {
                    self.client.write_tls(&mut wire).unwrap();
                }
                let mut out = Vec::new();
                for piece in wire.chunks(self.chunk) {
                    let got =
                        self.server
                            .receive(piece, &mut self.scratch, &mut self.plain, &mut out);
                    all.handshake_done |= got.handshake_done;
                    all.peer_closed |= got.peer_closed;
                    if got.error.is_some() {
                        all.error = got.error;
                    }
                }
                if wire.is_empty() && out.is_empty() {
                    break;
                }
                let mut rd = &out[..];
                while !rd.is_empty() {
                    self.client.read_tls(&mut rd).unwrap();
                }
                self.client.process_new_packets().unwrap();
            }
            all
        }

        fn seal_to_client(&mut self, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            self.server.seal(data, &mut out).unwrap();
            let mut rd = &out[..];
            let mut got = Vec::new();
            while !rd.is_empty() {
                // A record at a time: the client's own buffer is bounded.
                self.client.read_tls(&mut rd).unwrap();
                let n = self
                    .client
                    .process_new_packets()
                    .unwrap()
                    .plaintext_bytes_to_read();
                let at = got.len();
                got.resize(at + n, 0);
                self.client.reader().read_exact(&mut got[at..]).unwrap();
            }
            got
        }
    }

    #[test]
    fn handshake_data_both_ways_and_no_buffer_held_when_idle() {
        for chunk in [1, 7, 100, usize::MAX] {
            let mut p = Pair::new(chunk);
            p.client
                .writer()
                .write_all(b"hello from the client")
                .unwrap();
            let got = p.pump();
            assert!(got.handshake_done && got.error.is_none(), "chunk {chunk}");
            assert_eq!(p.plain, b"hello from the client", "chunk {chunk}");
            assert_eq!(p.server.held(), 0, "idle: nothing held (chunk {chunk})");
            assert_eq!(p.seal_to_client(b"welcome"), b"welcome");
            // Larger than one record: split into several, all arrive.
            let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
            assert_eq!(p.seal_to_client(&big), big);
            p.plain.clear();
            p.client.writer().write_all(&big).unwrap();
            assert!(p.pump().error.is_none());
            assert_eq!(p.plain, big, "chunk {chunk}");
            assert_eq!(p.server.held(), 0);
        }
    }

    #[test]
    fn plaintext_sealed_during_the_handshake_waits_for_it() {
        let mut p = Pair::new(usize::MAX);
        let mut out = Vec::new();
        p.server.seal(b"early", &mut out).unwrap();
        assert!(out.is_empty(), "nothing leaves before the handshake");
        assert!(p.server.held() >= 5);
        assert!(p
            .server
            .seal(&vec![0; MAX_EARLY_PLAINTEXT], &mut out)
            .is_err());
        p.pump();
        let mut got = vec![0; 5];
        p.client.reader().read_exact(&mut got).unwrap();
        assert_eq!(got, b"early");
        assert_eq!(p.server.held(), 0);
    }

    #[test]
    fn garbage_fails_the_session_with_an_alert_and_then_reads_nothing() {
        let (server, _) = configs();
        let mut t = TlsConn::new(server).unwrap();
        let (mut scratch, mut plain, mut out) = (Vec::new(), Vec::new(), Vec::new());
        let bad = [0x16, 0x03, 0x01, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff];
        let got = t.receive(&bad, &mut scratch, &mut plain, &mut out);
        assert!(got.error.is_some());
        // What is written out, if anything, is an alert record.
        assert!(out.first().is_none_or(|&t| t == 0x15), "{out:?}");
        assert_eq!(t.held(), 0);
        let got = t.receive(&bad, &mut scratch, &mut plain, &mut out);
        assert!(got.error.is_none() && plain.is_empty(), "dead: not read");
        assert_eq!(t.seal(b"x", &mut out), Err(SealError::NotConnected));
    }

    #[test]
    fn close_notify_is_reported() {
        let mut p = Pair::new(usize::MAX);
        p.pump();
        p.client.send_close_notify();
        assert!(p.pump().peer_closed);
    }
}
