//! Certificate checks rustls does not ship: the server verifiers for sslmode require and
//! below (no certificate check, signatures still checked), verify-ca (chain only) and
//! verify-full (libpq's host-name rules), the client verifier that also takes what
//! OpenSSL takes (v1 certificates), and reading the subject's common name from a client
//! certificate for `auth_type = cert`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

use super::tls::TlsError;
use super::tls_chain::{self, Purpose};

/// The handshake-signature methods shared by every verifier here: rustls's checks, and for
/// certificates webpki cannot parse (v1) the same checks on their public key
/// (`tls_chain`). Expects a `self.algs: WebPkiSupportedAlgorithms`.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            tls_chain::verify_tls12(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            tls_chain::verify_tls13(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

/// The verifier for verify-ca (`check_name = false`: chain only, as libpq) or verify-full
/// (chain and host name). `cas` are the CA file's certificates, for the chains webpki
/// refuses but OpenSSL accepts (see `tls_chain`).
pub fn verifier(
    roots: RootCertStore,
    cas: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    check_name: bool,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let algs = provider.signature_verification_algorithms;
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::Rustls(Error::General(e.to_string())))?;
    Ok(Arc::new(ServerVerifier {
        inner,
        cas,
        algs,
        check_name,
    }))
}

/// webpki first; OpenSSL's rules (`tls_chain`) for v1 and self-signed CA certificates;
/// libpq's host-name rules (common name when there is no subjectAltName) in verify-full.
#[derive(Debug)]
struct ServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    cas: Vec<CertificateDer<'static>>,
    algs: WebPkiSupportedAlgorithms,
    check_name: bool,
}

impl ServerVerifier {
    fn name_check(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
    ) -> Result<ServerCertVerified, Error> {
        if !self.check_name || tls_chain::name_matches(end_entity, server_name) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(CertificateError::NotValidForName.into())
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the chain before the name, so a name error means the chain
            // passed; webpki never looks at the common name, libpq does.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => self.name_check(end_entity, server_name),
            Err(e) if tls_chain::webpki_refused_legacy(&e) => {
                tls_chain::verify_chain(
                    end_entity,
                    intermediates,
                    &self.cas,
                    Purpose::Server,
                    now,
                    &self.algs,
                )?;
                self.name_check(end_entity, server_name)
            }
            other => other,
        }
    }

    handshake_signatures!();
}

/// Client certificates: webpki's verifier (built from `client_tls_ca_file`), with
/// OpenSSL's rules for v1 and self-signed CA certificates as PgBouncer has them.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    cas: Vec<CertificateDer<'static>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    /// Wraps `inner`, falling back to a check against `cas` where webpki is stricter
    /// than OpenSSL.
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        cas: Vec<CertificateDer<'static>>,
        provider: &CryptoProvider,
    ) -> Self {
        ClientVerifier {
            inner,
            cas,
            algs: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(e) if tls_chain::webpki_refused_legacy(&e) => {
                tls_chain::verify_chain(
                    end_entity,
                    intermediates,
                    &self.cas,
                    Purpose::Client,
                    now,
                    &self.algs,
                )?;
                Ok(ClientCertVerified::assertion())
            }
            other => other,
        }
    }

    handshake_signatures!();
}

/// sslmode allow/prefer/require: encryption without authentication of the server (libpq's
/// meaning). Handshake signatures are still checked so the session keys are sound.
#[derive(Debug)]
pub struct NoCertificateCheck {
    algs: WebPkiSupportedAlgorithms,
}

impl NoCertificateCheck {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        NoCertificateCheck {
            algs: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// One DER element: (tag, contents, rest). `None` on malformed or long-form > 4 byte lengths.
pub(crate) fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject's common name (the last CN attribute, as Postgres and PgBouncer use) of a
/// DER certificate, if it has one in a string type. The certificate must already have
/// been verified: this only reads it.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (tag, certificate, _) = der_next(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, tbs, _) = der_next(certificate)?;
    let mut fields = tbs;
    let mut next = || {
        let (tag, content, rest) = der_next(fields)?;
        fields = rest;
        Some((tag, content))
    };
    let (mut tag, _) = next()?;
    if tag == 0xa0 {
        // [0] version; the serial number follows.
        (tag, _) = next()?;
    }
    let _ = tag; // serialNumber
    let _signature = next()?;
    let _issuer = next()?;
    let _validity = next()?;
    let (tag, subject) = next()?;
    if tag != SEQUENCE {
        return None;
    }
    let mut cn = None;
    let mut rdns = subject;
    while let Some((tag, rdn, rest)) = der_next(rdns) {
        rdns = rest;
        if tag != SET {
            return None;
        }
        let mut attrs = rdn;
        while let Some((_, attr, rest)) = der_next(attrs) {
            attrs = rest;
            let (oid_tag, oid, value) = der_next(attr)?;
            if oid_tag == 0x06 && oid == OID_COMMON_NAME {
                let (_, text, _) = der_next(value)?;
                cn = String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    cn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_read_from_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["db.example".into()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Org");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("alice"));
    }

    #[test]
    fn certificate_without_common_name_has_none() {
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(subject_common_name(cert.der()), None);
    }

    #[test]
    fn garbage_and_truncated_input_give_none() {
        assert_eq!(subject_common_name(b""), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        assert_eq!(subject_common_name(&der[..der.len() / 2]), None);
    }
}
