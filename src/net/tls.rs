//! TLS settings turned into rustls configs for both sides: toward clients (pgfunnel is the
//! TLS server: `client_tls_*`) and toward Postgres (pgfunnel is the TLS client:
//! `server_tls_*`). Owns file loading (`tls_files.rs`), protocol lists and the reloadable
//! holder; the handshakes themselves live in `client::handshake` and `server::tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, InconsistentKeys, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use thiserror::Error;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{tls_chain, tls_verify};
use crate::config::{Settings, SslMode};

/// The ALPN protocol name of PostgreSQL (required for direct TLS, PostgreSQL 17+).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why a TLS configuration could not be built. Every variant names the setting or file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read.
    #[error("cannot read {setting} {}: {source}", path.display())]
    Read {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file held no usable PEM item of the expected kind.
    #[error("{setting} {}: no {what} found in PEM", path.display())]
    Pem {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for ("certificate", "private key").
        what: &'static str,
    },
    /// A setting needed by the chosen mode is missing.
    #[error("{mode} needs {needed}")]
    Missing {
        /// The mode setting and value, e.g. `client_tls_sslmode = verify-ca`.
        mode: String,
        /// The missing setting.
        needed: &'static str,
    },
    /// A protocol list that names no version rustls supports, or an unknown name.
    #[error("{setting} = {value:?}: {problem}")]
    Protocols {
        /// `client_tls_protocols` or `server_tls_protocols`.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No trusted root certificate could be loaded from the system store.
    #[error("no system root certificates found; set server_tls_ca_file")]
    NoSystemRoots,
    /// rustls refused the certificate, key or verifier setup.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// The private key does not belong to the certificate.
    #[error("{setting} does not match the certificate's public key")]
    KeyMismatch {
        /// The key setting.
        setting: &'static str,
    },
    /// The client verifier could not be built from the CA file.
    #[error("client_tls_ca_file: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// TLS toward clients, as currently configured.
#[derive(Clone)]
pub struct ClientSideTls {
    /// `client_tls_sslmode`.
    pub mode: SslMode,
    /// `None` when the mode is `disable`.
    pub acceptor: Option<TlsAcceptor>,
    /// SCRAM `tls-server-end-point` channel binding data of pgfunnel's certificate; `None`
    /// when TLS is off or the certificate's signature has no usable hash.
    pub end_point: Option<Vec<u8>>,
}

/// TLS toward servers, as currently configured.
#[derive(Clone)]
pub struct ServerSideTls {
    /// `server_tls_sslmode` (after URL mode's libpq adjustments).
    pub mode: SslMode,
    /// `None` when the mode is `disable`.
    pub connector: Option<TlsConnector>,
}

impl std::fmt::Debug for ClientSideTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientSideTls({})", self.mode)
    }
}

impl std::fmt::Debug for ServerSideTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerSideTls({})", self.mode)
    }
}

/// Both sides' TLS configs behind atomic swaps: a reload stores new ones, connections
/// already open keep the config they were made with.
#[derive(Debug)]
pub struct TlsConfigs {
    client: ArcSwap<ClientSideTls>,
    server: ArcSwap<ServerSideTls>,
}

impl TlsConfigs {
    /// Builds both sides from `settings`, reading every certificate and key file.
    pub fn load(settings: &Settings) -> Result<TlsConfigs, TlsError> {
        Ok(TlsConfigs {
            client: ArcSwap::from_pointee(client_side(settings)?),
            server: ArcSwap::from_pointee(server_side(settings)?),
        })
    }

    /// Re-reads the files named by `settings`; on any error the old configs stay in force.
    pub fn reload(&self, settings: &Settings) -> Result<(), TlsError> {
        let client = client_side(settings)?;
        let server = server_side(settings)?;
        self.client.store(Arc::new(client));
        self.server.store(Arc::new(server));
        Ok(())
    }

    /// The current config toward clients.
    pub fn client(&self) -> Arc<ClientSideTls> {
        self.client.load_full()
    }

    /// The current config toward servers.
    pub fn server(&self) -> Arc<ServerSideTls> {
        self.server.load_full()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the config toward clients: pgfunnel's certificate, TLS versions from
/// `client_tls_protocols`, ALPN `postgresql`, and client certificates required and
/// checked against `client_tls_ca_file` in verify-ca/verify-full (optional but checked
/// when a CA file is set in weaker modes, so `auth_type = cert` can use them).
pub fn client_side(s: &Settings) -> Result<ClientSideTls, TlsError> {
    let mode = s.client_tls_sslmode;
    if mode == SslMode::Disable {
        return Ok(ClientSideTls {
            mode,
            acceptor: None,
            end_point: None,
        });
    }
    let missing = |needed| TlsError::Missing {
        mode: format!("client_tls_sslmode = {mode}"),
        needed,
    };
    let cert_file = s
        .client_tls_cert_file
        .as_deref()
        .ok_or_else(|| missing("client_tls_cert_file"))?;
    let key_file = s
        .client_tls_key_file
        .as_deref()
        .ok_or_else(|| missing("client_tls_key_file"))?;
    let certs = load_certs(cert_file, "client_tls_cert_file")?;
    let end_point = certs
        .first()
        .and_then(|leaf| crate::auth::tls_server_end_point(leaf));
    let key = load_key(key_file, "client_tls_key_file")?;
    let provider = provider();
    let versions = protocol_versions(&s.client_tls_protocols, "client_tls_protocols")?;
    let verifier: Arc<dyn ClientCertVerifier> = match &s.client_tls_ca_file {
        Some(ca) => {
            let (roots, cas) = load_roots(ca, "client_tls_ca_file")?;
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if mode >= SslMode::VerifyCa {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            Arc::new(tls_verify::ClientVerifier::new(
                builder.build()?,
                cas,
                &provider,
            ))
        }
        None if mode >= SslMode::VerifyCa => return Err(missing("client_tls_ca_file")),
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let own = certified_key(certs, key, &provider, "client_tls_key_file")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(own)));
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(ClientSideTls {
        mode,
        acceptor: Some(TlsAcceptor::from(Arc::new(config))),
        end_point,
    })
}

/// Builds the config toward servers: no certificate check below verify-ca, the chain only
/// in verify-ca, chain and host name in verify-full; roots from `server_tls_ca_file` or the
/// system store; pgfunnel's client certificate when `server_tls_cert_file` is set. SNI is
/// sent for every DNS host name (rustls never sends it for IP addresses).
pub fn server_side(s: &Settings) -> Result<ServerSideTls, TlsError> {
    let mode = s.server_tls_sslmode;
    if mode == SslMode::Disable {
        return Ok(ServerSideTls {
            mode,
            connector: None,
        });
    }
    let provider = provider();
    let versions = protocol_versions(&s.server_tls_protocols, "server_tls_protocols")?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if mode >= SslMode::VerifyCa
    {
        let (roots, cas) = match &s.server_tls_ca_file {
            Some(ca) => load_roots(ca, "server_tls_ca_file")?,
            None => (system_roots()?, Vec::new()),
        };
        tls_verify::verifier(roots, cas, provider.clone(), mode == SslMode::VerifyFull)?
    } else {
        Arc::new(tls_verify::NoCertificateCheck::new(provider.clone()))
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&s.server_tls_cert_file, &s.server_tls_key_file) {
        (Some(cert), Some(key)) => {
            let own = certified_key(
                load_certs(cert, "server_tls_cert_file")?,
                load_key(key, "server_tls_key_file")?,
                &provider,
                "server_tls_key_file",
            )?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(own)))
        }
        _ => builder.with_no_client_auth(),
    };
    // libpq 17 sends ALPN on every TLS connection; PostgreSQL requires it for direct TLS.
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(ServerSideTls {
        mode,
        connector: Some(TlsConnector::from(Arc::new(config))),
    })
}

#[path = "tls_files.rs"]
mod files;
use files::{certified_key, load_certs, load_key, load_roots, system_roots};

/// Parses a PgBouncer (libtls) protocol list: `secure`/`default` (TLS 1.2 and 1.3),
/// `all`/`legacy` (every version), or names `tlsv1.0` .. `tlsv1.3` separated by commas,
/// colons or spaces, each optionally negated with `!` or `-`. rustls speaks only 1.2 and
/// 1.3, so older versions are accepted and ignored; a list left with neither is an error.
pub fn protocol_versions(
    value: &str,
    setting: &'static str,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let fail = |problem| TlsError::Protocols {
        setting,
        value: value.to_owned(),
        problem,
    };
    // Bits: 1.0, 1.1, 1.2, 1.3.
    let mut set = 0u8;
    for token in value.split([',', ':', ' ', '\t']).filter(|t| !t.is_empty()) {
        let (negate, name) = match token.strip_prefix(['!', '-']) {
            Some(rest) => (true, rest),
            None => (false, token),
        };
        let bits = match name.to_ascii_lowercase().as_str() {
            "secure" | "default" => 0b1100,
            "all" | "legacy" => 0b1111,
            "tlsv1.0" => 0b0001,
            "tlsv1.1" => 0b0010,
            "tlsv1.2" => 0b0100,
            "tlsv1.3" => 0b1000,
            _ => return Err(fail("unknown protocol name")),
        };
        if negate {
            set &= !bits;
        } else {
            set |= bits;
        }
    }
    let mut versions = Vec::new();
    if set & 0b1000 != 0 {
        versions.push(&rustls::version::TLS13);
    }
    if set & 0b0100 != 0 {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        return Err(fail(
            "no supported version left (pgfunnel speaks TLS 1.2 and 1.3)",
        ));
    }
    Ok(versions)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
