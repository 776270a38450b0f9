//! SCRAM channel binding of type `tls-server-end-point` (RFC 5929 §4.1), as Postgres
//! implements it: the binding data is the hash of pgfunnel's own TLS certificate, computed
//! with the hash of the certificate's signature algorithm (SHA-256 when that is MD5 or
//! SHA-1). Sans-I/O: certificate bytes in, binding data out.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::net::tls_verify::der_next;

/// The only channel binding type pgfunnel offers (the one Postgres offers).
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

/// Hash functions RFC 5929 can call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The hash to use for a signature algorithm OID (DER content bytes); `None` for
/// algorithms without one (Ed25519, RSASSA-PSS, unknown), for which no binding is offered.
fn hash_for_signature(oid: &[u8]) -> Option<EndPointHash> {
    const RSA_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    if oid == ECDSA_SHA1 {
        return Some(EndPointHash::Sha256);
    }
    if let Some(&[last]) = oid.strip_prefix(RSA_PREFIX) {
        return match last {
            // md5WithRSAEncryption, sha1WithRSAEncryption: SHA-256 per RFC 5929.
            0x04 | 0x05 | 0x0b => Some(EndPointHash::Sha256),
            0x0c => Some(EndPointHash::Sha384),
            0x0d => Some(EndPointHash::Sha512),
            0x0e => Some(EndPointHash::Sha224),
            _ => None,
        };
    }
    if let Some(&[last]) = oid.strip_prefix(ECDSA_SHA2_PREFIX) {
        return match last {
            0x01 => Some(EndPointHash::Sha224),
            0x02 => Some(EndPointHash::Sha256),
            0x03 => Some(EndPointHash::Sha384),
            0x04 => Some(EndPointHash::Sha512),
            _ => None,
        };
    }
    None
}

/// The `tls-server-end-point` binding data for a DER certificate, or `None` when the
/// certificate cannot be parsed or its signature algorithm has no defined hash (then
/// `SCRAM-SHA-256-PLUS` is not offered).
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (tag, certificate, _) = der_next(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _tbs, rest) = der_next(certificate)?;
    let (tag, algorithm, _) = der_next(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = der_next(algorithm)?;
    if tag != OID {
        return None;
    }
    Some(match hash_for_signature(oid)? {
        EndPointHash::Sha224 => Sha224::digest(cert_der).to_vec(),
        EndPointHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn ecdsa_sha256_certificate_binds_with_its_sha256() {
        let der = certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
        let data = tls_server_end_point(&der).expect("binding data");
        assert_eq!(data, Sha256::digest(&der).to_vec());
    }

    #[test]
    fn ecdsa_sha384_certificate_binds_with_its_sha384() {
        let der = certificate(&rcgen::PKCS_ECDSA_P384_SHA384);
        let data = tls_server_end_point(&der).expect("binding data");
        assert_eq!(data, Sha384::digest(&der).to_vec());
    }

    #[test]
    fn ed25519_certificate_offers_no_binding() {
        let der = certificate(&rcgen::PKCS_ED25519);
        assert_eq!(tls_server_end_point(&der), None);
    }

    #[test]
    fn md5_sha1_and_rsa_sha2_signatures_map_per_rfc_5929() {
        let rsa = |last: u8| [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last];
        assert_eq!(hash_for_signature(&rsa(0x04)), Some(EndPointHash::Sha256));
        assert_eq!(hash_for_signature(&rsa(0x05)), Some(EndPointHash::Sha256));
        assert_eq!(hash_for_signature(&rsa(0x0c)), Some(EndPointHash::Sha384));
        assert_eq!(hash_for_signature(&rsa(0x0d)), Some(EndPointHash::Sha512));
        // RSASSA-PSS carries its hash in parameters: not offered.
        assert_eq!(hash_for_signature(&rsa(0x0a)), None);
    }

    #[test]
    fn garbage_gives_no_binding() {
        assert_eq!(tls_server_end_point(b""), None);
        assert_eq!(tls_server_end_point(&[0x30, 0x03, 0x02, 0x01]), None);
        let der = certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(tls_server_end_point(&der[..der.len() / 2]), None);
    }
}
