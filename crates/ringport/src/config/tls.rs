//! `[tls]`: TLS on the client port (docs/protocol.md, "TLS").
//!
//! TLS is on when `cert_file` is set. It shares `server.listen` with plaintext: a connection
//! whose first byte is 0x16 (a TLS handshake record) is TLS, and the native-or-WebSocket
//! decision is then made on the decrypted bytes. `allow_plaintext = false` makes the port
//! TLS-only.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Whether a client certificate is demanded when `client_ca_file` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without a certificate chaining to `client_ca_file` is refused in the handshake.
    #[default]
    Required,
    /// A client may present no certificate; one that presents a bad one is refused.
    Optional,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        }
    }
}

/// `[tls]`: certificate, key and client-certificate authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first); setting it turns TLS on.
    pub cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: Option<String>,
    /// PEM CA certificates client certificates must chain to; unset = no client certificates.
    pub client_ca_file: Option<String>,
    /// `required` or `optional` (only with `client_ca_file`).
    pub client_auth: ClientAuth,
    /// Accept plaintext connections on the TLS port too (false: TLS only).
    pub allow_plaintext: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuth::Required,
            allow_plaintext: true,
        }
    }
}

impl TlsConfig {
    /// TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Whether plaintext connections are accepted: always without TLS, by default with it.
    pub fn plaintext_allowed(&self) -> bool {
        !self.enabled() || self.allow_plaintext
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(invalid("tls.key_file", "must be set with tls.cert_file")),
            (None, Some(_)) => Err(invalid("tls.cert_file", "must be set with tls.key_file")),
            (None, None) if self.client_ca_file.is_some() => Err(invalid(
                "tls.client_ca_file",
                "needs tls.cert_file and tls.key_file",
            )),
            (None, None) if !self.allow_plaintext => Err(invalid(
                "tls.allow_plaintext",
                "false needs tls.cert_file and tls.key_file",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_in_pairs_and_options_need_tls() {
        let ok = TlsConfig::default();
        assert!(ok.validate().is_ok() && !ok.enabled() && ok.plaintext_allowed());
        let cert_only = TlsConfig {
            cert_file: Some("c.pem".into()),
            ..TlsConfig::default()
        };
        assert!(cert_only.validate().is_err());
        let both = TlsConfig {
            key_file: Some("k.pem".into()),
            ..cert_only
        };
        assert!(both.validate().is_ok() && both.enabled());
        let tls_only = TlsConfig {
            allow_plaintext: false,
            ..both.clone()
        };
        assert!(tls_only.validate().is_ok() && !tls_only.plaintext_allowed());
        for bad in [
            TlsConfig {
                allow_plaintext: false,
                ..TlsConfig::default()
            },
            TlsConfig {
                client_ca_file: Some("ca.pem".into()),
                ..TlsConfig::default()
            },
            TlsConfig {
                key_file: Some("k.pem".into()),
                ..TlsConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
