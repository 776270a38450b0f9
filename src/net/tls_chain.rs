//! Certificate checks for what webpki refuses but OpenSSL (libpq, PgBouncer) accepts:
//! X.509 v1 certificates and a self-signed CA certificate used as its own end entity
//! (PostgreSQL's manual makes exactly that one). The verifiers in `tls_verify` try webpki
//! first and come here only when webpki refused for one of those reasons; signatures are
//! still checked with the crypto provider's algorithms, validity periods and key usages
//! as OpenSSL checks them. Host names follow libpq: subjectAltName entries of the host's
//! type, else the subject's common name.

use std::net::IpAddr;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, PeerMisbehaved};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::time::ASN1Time;

use super::tls_verify::der_next;

/// How long a chain may get before the search gives up (OpenSSL's default depth is 100;
/// real chains are 2-4 certificates).
const MAX_DEPTH: usize = 8;

/// What the end-entity certificate must be good for (its extendedKeyUsage, when present).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A server's certificate (toward Postgres).
    Server,
    /// A client's certificate (toward pgfunnel).
    Client,
}

/// True when webpki refused a certificate only for being X.509 v1 or a CA certificate
/// used as an end entity: the cases OpenSSL accepts and this module checks instead.
pub fn webpki_refused_legacy(e: &Error) -> bool {
    let Error::InvalidCertificate(CertificateError::Other(other)) = e else {
        return false;
    };
    matches!(
        other.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::UnsupportedCertVersion | webpki::Error::CaUsedAsEndEntity)
    )
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(CertificateError::BadEncoding.into()),
    }
}

/// The DER SubjectPublicKeyInfo of a certificate of any version.
pub fn spki(cert: &[u8]) -> Result<SubjectPublicKeyInfoDer<'_>, Error> {
    let raw = parse(cert)?.tbs_certificate.subject_pki.raw;
    Ok(SubjectPublicKeyInfoDer::from(raw))
}

/// Checks `end_entity` (with the peer's `intermediates`) against the certificates of the
/// CA file as OpenSSL does: a self-signed certificate listed there is trusted as it is;
/// otherwise each certificate must be signed by the next, intermediates must be CAs
/// (basicConstraints), the anchor a CA, a self-signed v1 certificate, or carry
/// keyCertSign; every certificate must be within its validity period.
pub fn verify_chain(
    end_entity: &[u8],
    intermediates: &[CertificateDer<'_>],
    cas: &[CertificateDer<'_>],
    purpose: Purpose,
    now: UnixTime,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<(), Error> {
    let now = i64::try_from(now.as_secs())
        .ok()
        .and_then(|s| ASN1Time::from_timestamp(s).ok())
        .ok_or(CertificateError::BadEncoding)?;
    let leaf = parse(end_entity)?;
    check_validity(&leaf, now)?;
    check_purpose(&leaf, purpose)?;
    if cas.iter().any(|ca| ca.as_ref() == end_entity)
        && leaf.subject().as_raw() == leaf.issuer().as_raw()
        && signed_by(end_entity, &leaf, algs)
    {
        return Ok(());
    }
    let (mut der, mut cert) = (end_entity, leaf);
    for _ in 0..MAX_DEPTH {
        let issued_by = |candidate: &X509Certificate<'_>| {
            candidate.subject().as_raw() == cert.issuer().as_raw()
                && check_validity(candidate, now).is_ok()
                && signed_by(der, candidate, algs)
        };
        for ca in cas {
            if let Ok(anchor) = parse(ca) {
                if may_anchor(&anchor) && issued_by(&anchor) {
                    return Ok(());
                }
            }
        }
        let next = intermediates.iter().find_map(|i| {
            let c = parse(i).ok()?;
            (is_ca(&c) == Some(true) && issued_by(&c)).then_some((i.as_ref(), c))
        });
        match next {
            Some((d, c)) => (der, cert) = (d, c),
            None => break,
        }
    }
    Err(CertificateError::UnknownIssuer.into())
}

fn check_validity(cert: &X509Certificate<'_>, now: ASN1Time) -> Result<(), Error> {
    let validity = cert.validity();
    if now < validity.not_before {
        Err(CertificateError::NotValidYet.into())
    } else if now > validity.not_after {
        Err(CertificateError::Expired.into())
    } else {
        Ok(())
    }
}

fn check_purpose(cert: &X509Certificate<'_>, purpose: Purpose) -> Result<(), Error> {
    let eku = cert
        .extended_key_usage()
        .map_err(|_| CertificateError::BadEncoding)?;
    let ok = match eku {
        None => true,
        Some(e) => {
            let e = e.value;
            e.any
                || match purpose {
                    Purpose::Server => e.server_auth,
                    Purpose::Client => e.client_auth,
                }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(CertificateError::InvalidPurpose.into())
    }
}

/// basicConstraints' cA flag; `None` without the extension (or when it is unreadable).
fn is_ca(cert: &X509Certificate<'_>) -> Option<bool> {
    cert.basic_constraints().ok()?.map(|bc| bc.value.ca)
}

/// OpenSSL's `check_ca` for the last certificate of a chain: a CA by basicConstraints,
/// or without them a self-signed v1 certificate or one whose keyUsage allows signing
/// certificates. A keyUsage without keyCertSign rules it out in every case.
fn may_anchor(cert: &X509Certificate<'_>) -> bool {
    let key_usage = match cert.key_usage() {
        Ok(ku) => ku.map(|k| k.value.key_cert_sign()),
        Err(_) => return false,
    };
    if key_usage == Some(false) {
        return false;
    }
    match is_ca(cert) {
        Some(ca) => ca,
        None => {
            key_usage == Some(true)
                || (cert.version().0 == 0 && cert.subject().as_raw() == cert.issuer().as_raw())
        }
    }
}

/// Whether `child` (DER) carries a valid signature by `issuer`'s key.
fn signed_by(child: &[u8], issuer: &X509Certificate<'_>, algs: &WebPkiSupportedAlgorithms) -> bool {
    let Some((tbs, sig_alg, signature)) = signed_parts(child) else {
        return false;
    };
    let spki = SubjectPublicKeyInfoDer::from(issuer.public_key().raw);
    let Ok(key) = webpki::RawPublicKeyEntity::try_from(&spki) else {
        return false;
    };
    algs.all
        .iter()
        .filter(|alg| alg.signature_alg_id().as_ref() == sig_alg)
        .any(|alg| key.verify_signature(*alg, tbs, signature).is_ok())
}

/// A certificate's signed part (whole TBSCertificate element), its signatureAlgorithm
/// (contents) and the signature bits.
fn signed_parts(cert: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (_, certificate, _) = der_next(cert)?;
    let (_, _, after_tbs) = der_next(certificate)?;
    let tbs = &certificate[..certificate.len() - after_tbs.len()];
    let (_, sig_alg, rest) = der_next(after_tbs)?;
    let (tag, bits, _) = der_next(rest)?;
    match bits.split_first() {
        Some((0, signature)) if tag == 0x03 => Some((tbs, sig_alg, signature)),
        _ => None,
    }
}

/// TLS 1.2 handshake signature by `cert`'s key: rustls's check, or for a certificate
/// webpki cannot parse (v1) the same check on its public key.
pub fn verify_tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    match rustls::crypto::verify_tls12_signature(message, cert, dss, algs) {
        Err(e) if webpki_refused_legacy(&e) => {
            let spki = spki(cert)?;
            let key = webpki::RawPublicKeyEntity::try_from(&spki)
                .map_err(|_| Error::from(CertificateError::BadEncoding))?;
            let candidates = algs
                .mapping
                .iter()
                .find(|(scheme, _)| *scheme == dss.scheme)
                .map(|(_, a)| *a)
                .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
            candidates
                .iter()
                .any(|alg| key.verify_signature(*alg, message, dss.signature()).is_ok())
                .then(HandshakeSignatureValid::assertion)
                .ok_or_else(|| CertificateError::BadSignature.into())
        }
        other => other,
    }
}

/// TLS 1.3 handshake signature by `cert`'s key (see [`verify_tls12`]).
pub fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    match rustls::crypto::verify_tls13_signature(message, cert, dss, algs) {
        Err(e) if webpki_refused_legacy(&e) => {
            rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki(cert)?, dss, algs)
        }
        other => other,
    }
}

/// libpq's host-name check: against the subjectAltName entries of the host's kind
/// (dNSName for names, iPAddress for addresses; dNSName text also for addresses), or,
/// when the certificate has none of that kind, against the subject's last common name.
/// A leading `*.` matches exactly one label; comparisons ignore ASCII case.
pub fn name_matches(cert: &[u8], host: &ServerName<'_>) -> bool {
    let Ok(cert) = parse(cert) else {
        return false;
    };
    let (host_text, host_ip) = match host {
        ServerName::DnsName(d) => (d.as_ref().to_owned(), None),
        ServerName::IpAddress(ip) => {
            let ip = IpAddr::from(*ip);
            (ip.to_string(), Some(ip))
        }
        _ => return false,
    };
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        Ok(None) => Vec::new(),
        Err(_) => return false,
    };
    let mut check_cn = true;
    for name in &names {
        match (name, host_ip) {
            (GeneralName::DNSName(pattern), _) => {
                if host_ip.is_none() {
                    check_cn = false;
                }
                if text_matches(pattern, &host_text) {
                    return true;
                }
            }
            (GeneralName::IPAddress(bytes), Some(ip)) => {
                check_cn = false;
                if ip_bytes(ip).as_slice() == *bytes {
                    return true;
                }
            }
            _ => {}
        }
    }
    check_cn
        && cert
            .subject()
            .iter_common_name()
            .last()
            .and_then(|cn| cn.as_str().ok())
            .is_some_and(|cn| text_matches(cn, &host_text))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// libpq's `wildcard_certificate_match` plus the exact, case-insensitive comparison.
fn text_matches(pattern: &str, host: &str) -> bool {
    if pattern.contains('\0') {
        return false;
    }
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    if !suffix.starts_with('.') || suffix.len() < 2 || pattern.len() > host.len() {
        return false;
    }
    let split = host.len() - suffix.len();
    host.is_char_boundary(split)
        && host[split..].eq_ignore_ascii_case(suffix)
        && !host[..split].contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label_like_libpq() {
        assert!(text_matches("*.example.com", "db.example.com"));
        assert!(text_matches("*.Example.com", "DB.example.COM"));
        assert!(!text_matches("*.example.com", "a.db.example.com"));
        assert!(!text_matches("*.example.com", "example.com"));
        assert!(!text_matches("db*.example.com", "db1.example.com"));
        assert!(text_matches("db.example.com", "DB.EXAMPLE.COM"));
        assert!(!text_matches("db.example.com\0.evil", "db.example.com"));
    }

    fn cert_with(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn dns_san(name: &str) -> Vec<rcgen::SanType> {
        vec![rcgen::SanType::DnsName(name.try_into().expect("ia5"))]
    }

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_owned()).expect("name")
    }

    #[test]
    fn common_name_counts_only_without_a_san_of_the_hosts_kind() {
        let cn_only = cert_with(vec![], "db.example");
        assert!(name_matches(&cn_only, &dns("db.example")));
        assert!(!name_matches(&cn_only, &dns("other.example")));
        let with_san = cert_with(dns_san("san.example"), "db.example");
        assert!(name_matches(&with_san, &dns("san.example")));
        assert!(!name_matches(&with_san, &dns("db.example")));
        // An IP host: the DNS-only SAN does not hide the CN.
        let ip_cn = cert_with(dns_san("san.example"), "127.0.0.1");
        assert!(name_matches(&ip_cn, &dns("127.0.0.1")));
        let ip_san = cert_with(
            vec![rcgen::SanType::IpAddress("127.0.0.2".parse().expect("ip"))],
            "127.0.0.1",
        );
        assert!(name_matches(&ip_san, &dns("127.0.0.2")));
        assert!(!name_matches(&ip_san, &dns("127.0.0.1")));
    }

    #[test]
    fn signature_parts_of_garbage_are_none() {
        assert_eq!(signed_parts(b""), None);
        assert_eq!(signed_parts(&[0x30, 0x02, 0x30, 0x00]), None);
    }
}
