//! Cryptographic primitives shared by the SCRAM, md5 and secret code: SHA-256, HMAC-SHA-256,
//! Hi() (PBKDF2-HMAC-SHA-256), SASLprep as Postgres applies it, base64 and randomness.
//! Owns no protocol logic and no state.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of every SHA-256 based SCRAM key, signature and proof.
pub(crate) const KEY_LEN: usize = 32;

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key` (any key length is valid).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// RFC 5802 Hi(): PBKDF2-HMAC-SHA-256 with one output block. `iterations` must be at least 1
/// (a value of 0 is treated as 1); the caller bounds it, since cost grows linearly.
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let keyed = HmacSha256::new_from_slice(password).expect("HMAC accepts keys of any length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut prev: [u8; KEY_LEN] = mac.finalize().into_bytes().into();
    let mut result = prev;
    for _ in 1..iterations {
        // Cloning the keyed state skips re-hashing the padded key on every round.
        let mut mac = keyed.clone();
        mac.update(&prev);
        prev = mac.finalize().into_bytes().into();
        for (r, p) in result.iter_mut().zip(prev.iter()) {
            *r ^= p;
        }
    }
    result
}

/// SASLprep (RFC 4013) of a password the way Postgres does it (`pg_saslprep` in
/// src/common/saslprep.c): when the bytes are not UTF-8 or the profile rejects them, the raw
/// bytes are used unchanged, so every byte string remains a usable password.
pub(crate) fn saslprep_password(password: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(password) {
        Ok(text) => match stringprep::saslprep(text) {
            Ok(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
            Ok(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
            Err(_) => Cow::Borrowed(password),
        },
        Err(_) => Cow::Borrowed(password),
    }
}

/// XOR of two keys.
pub(crate) fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Standard (padded) base64 encoding, as SCRAM and Postgres's secret format use.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Standard (padded) base64 decoding; `None` on any malformed input.
pub(crate) fn b64_decode(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes base64 that must hold exactly one 32-byte key; `None` otherwise.
pub(crate) fn b64_decode_key(text: &[u8]) -> Option<[u8; KEY_LEN]> {
    // A 32-byte key is 44 base64 characters; refuse longer input before decoding.
    if text.len() != 44 {
        return None;
    }
    b64_decode(text)?.try_into().ok()
}

/// `N` bytes from the thread-local CSPRNG (ChaCha seeded from the OS).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::thread_rng().fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_matches_rfc7677_salted_password_for_pencil() {
        // RFC 7677 example: derive ServerKey, and compare the resulting server signature
        // indirectly through the known StoredKey/ServerKey of the example in scram tests.
        let salt = b64_decode(b"W22ZaJ0SNY7soEsUEjb6gQ==").expect("valid base64");
        let salted = hi(b"pencil", &salt, 4096);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        let stored_key = sha256(&client_key);
        assert_eq!(
            b64_encode(&stored_key),
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        );
    }

    #[test]
    fn hi_with_one_iteration_is_a_single_hmac() {
        let mut salt_block = b"salt".to_vec();
        salt_block.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(hi(b"pw", b"salt", 1), hmac_sha256(b"pw", &[&salt_block]));
    }

    #[test]
    fn saslprep_maps_non_ascii_space_and_keeps_invalid_input_raw() {
        assert_eq!(&*saslprep_password("a\u{00A0}b".as_bytes()), b"a b");
        assert_eq!(&*saslprep_password(&[0xff, 0xfe]), &[0xff, 0xfe]);
        // U+0007 (BEL) is prohibited by the profile: the raw bytes are kept.
        assert_eq!(&*saslprep_password(b"a\x07b"), b"a\x07b");
    }

    #[test]
    fn b64_decode_key_rejects_wrong_lengths() {
        assert!(b64_decode_key(b64_encode(&[1u8; 32]).as_bytes()).is_some());
        assert!(b64_decode_key(b64_encode(&[1u8; 31]).as_bytes()).is_none());
        assert!(b64_decode_key(b"not base64 at all, not base64 at all,,,,,,,").is_none());
    }
}
