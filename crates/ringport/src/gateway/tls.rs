//! TLS on the client port: the certificate set shared by every shard ([`TlsAcceptor`], swapped
//! whole on SIGHUP). One connection's records are `tls_session.rs` ([`TlsConn`], rustls'
//! unbuffered sans-IO API with ringport owning the buffers); the shard's side is
//! `handler/tls.rs`. No thread blocks and no async runtime is involved. The
//! native-or-WebSocket decision is made on the plaintext, inside the TLS session.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

pub(crate) use super::tls_session::{SealError, TlsConn};
use crate::config::{ClientAuth, TlsConfig};

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds no usable item.
    #[error("tls.{key} ({path}): {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    /// rustls refused the certificate, the key or the client CA set.
    #[error("tls: {0}")]
    Rustls(String),
}

/// The TLS settings every shard starts new handshakes with.
#[derive(Debug)]
pub struct TlsAcceptor {
    /// Where the PEM files are (re-read on reload).
    settings: TlsConfig,
    /// The current certificate set; a reload replaces the `Arc`, so handshakes in progress
    /// and open connections keep the one they started with.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// `None` when `[tls]` is not configured.
    pub fn new(settings: &TlsConfig) -> Result<Option<TlsAcceptor>, TlsSetupError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let current = RwLock::new(load(settings)?);
        Ok(Some(TlsAcceptor {
            settings: settings.clone(),
            current,
        }))
    }

    /// Re-reads the certificate, key and client CA files; on error the old set stays.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let result = load(&self.settings);
        crate::metrics::tls::reloaded(result.is_ok());
        let fresh = result?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// The certificate set for a new handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether plaintext connections are accepted next to TLS ones.
    pub fn allow_plaintext(&self) -> bool {
        self.settings.plaintext_allowed()
    }
}

fn file_error(key: &'static str, path: &str, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        key,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Every certificate in the PEM file at `path`.
fn certificates(
    key: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// Builds a rustls server configuration from the files named in `s`.
fn load(s: &TlsConfig) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let (Some(cert_file), Some(key_file)) = (&s.cert_file, &s.key_file) else {
        return Err(TlsSetupError::Rustls(
            "tls.cert_file and tls.key_file are required".into(),
        ));
    };
    let chain = certificates("cert_file", cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_error("key_file", key_file, e))?;
    // Explicitly ring: the provider this build carries, whatever else enables another.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rustls_error = |e: rustls::Error| TlsSetupError::Rustls(e.to_string());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?;
    let builder = match &s.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("client_ca_file", ca_file)? {
                roots
                    .add(ca)
                    .map_err(|e| file_error("client_ca_file", ca_file, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match s.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(rustls_error)?;
    Ok(Arc::new(config))
}
