//! Loading certificates, keys and root stores from the files the TLS settings name.

use super::*;

pub(super) fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn load_certs(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, setting)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            setting,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

pub(super) fn load_key(
    path: &Path,
    setting: &'static str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, setting)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem {
        setting,
        path: path.to_path_buf(),
        what: "private key",
    })
}

/// pgfunnel's own certificate chain and key, as rustls's `with_single_cert` makes them
/// but also for an X.509 v1 certificate (which OpenSSL serves and rustls cannot parse):
/// the key must match the certificate's public key either way.
pub(super) fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    setting: &'static str,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider.key_provider.load_private_key(key)?;
    let own = CertifiedKey::new(certs, signing);
    let mismatch = || TlsError::KeyMismatch { setting };
    match own.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(own),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(mismatch()),
        Err(e) if tls_chain::webpki_refused_legacy(&e) => {
            let cert_key = tls_chain::spki(own.end_entity_cert()?)?;
            match own.key.public_key() {
                Some(k) if k.as_ref() != cert_key.as_ref() => Err(mismatch()),
                _ => Ok(own),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The CA certificates of `path` as webpki trust anchors, and as they are for the
/// checks webpki does not make (`tls_chain`).
pub(super) fn load_roots(
    path: &Path,
    setting: &'static str,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
    let mut roots = RootCertStore::empty();
    let cas = load_certs(path, setting)?;
    let (added, _ignored) = roots.add_parsable_certificates(cas.iter().cloned());
    if added == 0 {
        return Err(TlsError::Pem {
            setting,
            path: path.to_path_buf(),
            what: "usable CA certificate",
        });
    }
    Ok((roots, cas))
}

/// The operating system's trust store; the bundled Mozilla roots when it is empty (as in
/// minimal container images).
pub(super) fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if roots.is_empty() {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots)
}
