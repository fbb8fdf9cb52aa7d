//! TLS under a bench subscriber (`--tls`): rustls' sans-IO `ClientConnection` between the
//! engine's bytes and the protocol client, so every gateway scenario (idle, fanout, churn,
//! resume; native or `--protocol ringport-ws`) runs over TLS on the same engine client and a
//! run measures what TLS costs the server on the same load.
//!
//! The protocol client writes plaintext as before; [`TlsLayer::seal`] turns it into records
//! (rustls holds it until the handshake completes) and [`TlsLayer::open`] turns received
//! records into plaintext for the client. The server's certificate is checked against the CA
//! file given (`--tls-ca`) and the name given (`--tls-server-name`).

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// What every TLS subscriber of a run shares: the trusted roots and the name to verify.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl TlsTarget {
    /// Trusts the PEM certificates in `ca_file` (a CA, or the server's self-signed
    /// certificate) and expects a certificate for `server_name`.
    pub fn from_ca_file(ca_file: &Path, server_name: &str) -> anyhow::Result<TlsTarget> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("--tls-ca {}", ca_file.display()))?
        {
            let cert = cert.with_context(|| format!("--tls-ca {}", ca_file.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("--tls-ca {}: not a usable CA", ca_file.display()))?;
        }
        if roots.is_empty() {
            anyhow::bail!("--tls-ca {}: no PEM certificate in it", ca_file.display());
        }
        TlsTarget::new(roots, server_name)
    }

    pub fn new(roots: RootCertStore, server_name: &str) -> anyhow::Result<TlsTarget> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("--tls-server-name {server_name:?}"))?;
        Ok(TlsTarget {
            config: Arc::new(config),
            server_name,
        })
    }

    /// A fresh client connection (one per transport).
    pub fn connect(&self) -> Result<TlsLayer, rustls::Error> {
        Ok(TlsLayer {
            conn: ClientConnection::new(self.config.clone(), self.server_name.clone())?,
        })
    }
}

/// One transport's TLS client state.
#[derive(Debug)]
pub struct TlsLayer {
    conn: ClientConnection,
}

/// Why a TLS transport cannot go on.
#[derive(Debug)]
pub enum TlsFailure {
    /// A handshake or record error (bad certificate, wrong name, undecryptable record).
    Tls(rustls::Error),
    /// The server sent close_notify.
    Closed,
}

impl TlsLayer {
    /// Encrypts `plain` (emptied) and appends the records due to `wire` (the ClientHello and
    /// handshake records too; plaintext written before the handshake is held by rustls).
    pub fn seal(&mut self, plain: &mut Vec<u8>, wire: &mut Vec<u8>) {
        if !plain.is_empty() {
            // rustls buffers plaintext without limit by default; a write cannot fail.
            let _ = self.conn.writer().write_all(plain);
            plain.clear();
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(wire) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Takes received ciphertext; appends the plaintext it held to `plain`.
    pub fn open(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<(), TlsFailure> {
        while !data.is_empty() {
            if let Err(e) = self.conn.read_tls(&mut data) {
                // Only "the plaintext buffer is full", which reading it below prevents.
                return Err(TlsFailure::Tls(rustls::Error::General(e.to_string())));
            }
            self.conn.process_new_packets().map_err(TlsFailure::Tls)?;
            match self.conn.reader().read_to_end(plain) {
                Ok(_) => return Err(TlsFailure::Closed),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(TlsFailure::Tls(rustls::Error::General(e.to_string()))),
            }
        }
        Ok(())
    }

    /// The handshake completed.
    pub fn is_established(&self) -> bool {
        !self.conn.is_handshaking()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};

    fn pair(name: &str) -> (TlsTarget, Arc<ServerConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        (TlsTarget::new(roots, name).unwrap(), Arc::new(server))
    }

    /// Moves everything `server` has to send into `wire`.
    fn drain(server: &mut ServerConnection) -> Vec<u8> {
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn plaintext_written_before_the_handshake_arrives_after_it_both_ways() {
        let (target, server_cfg) = pair("localhost");
        let mut client = target.connect().unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        let (mut plain, mut wire) = (b"HELLO".to_vec(), Vec::new());
        client.seal(&mut plain, &mut wire);
        assert!(plain.is_empty() && !wire.is_empty());
        let mut got = Vec::new();
        for _ in 0..4 {
            let mut w = &wire[..];
            while !w.is_empty() {
                server.read_tls(&mut w).unwrap();
            }
            server.process_new_packets().unwrap();
            let _ = server.reader().read_to_end(&mut got);
            wire.clear();
            let back = drain(&mut server);
            // Byte by byte: partial records are held.
            for b in back.chunks(1) {
                client.open(b, &mut plain).unwrap();
            }
            client.seal(&mut Vec::new(), &mut wire);
        }
        assert!(client.is_established());
        assert_eq!(got, b"HELLO");
        server.writer().write_all(b"WELCOME").unwrap();
        client.open(&drain(&mut server), &mut plain).unwrap();
        assert_eq!(plain, b"WELCOME");
        server.send_close_notify();
        assert!(matches!(
            client.open(&drain(&mut server), &mut plain),
            Err(TlsFailure::Closed)
        ));
    }

    #[test]
    fn a_certificate_for_another_name_is_refused() {
        let (target, server_cfg) = pair("ringport.example");
        let mut client = target.connect().unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        let mut wire = Vec::new();
        client.seal(&mut Vec::new(), &mut wire);
        let mut w = &wire[..];
        server.read_tls(&mut w).unwrap();
        server.process_new_packets().unwrap();
        let r = client.open(&drain(&mut server), &mut Vec::new());
        assert!(
            matches!(
                r,
                Err(TlsFailure::Tls(rustls::Error::InvalidCertificate(_)))
            ),
            "{r:?}"
        );
    }
}
