//! The 8-byte cancel key (BackendKeyData: 4 bytes "pid", 4 bytes secret) in PgBouncer's
//! peering layout (1.21+): with a peer id, bytes 1-2 carry it (low byte first) and the low
//! two bits of byte 7 a hop budget (TTL) that every forward decrements. The sign bit of
//! byte 0 is always clear (some clients dislike a negative pid). Everything else is random:
//! 45 random bits with peering, 63 without. Same layout as PgBouncer, so mixed fleets
//! forward each other's keys.

use rand::Rng;

/// The two TTL bits of byte 7.
pub const TTL_MASK: u8 = 0x03;

/// A client's cancel key as sent in BackendKeyData and received in a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey(pub [u8; 8]);

impl CancelKey {
    /// A fresh random key; with `peer_id` > 0 it carries the id and a full TTL.
    pub fn issue(peer_id: u16, rng: &mut impl Rng) -> CancelKey {
        let mut k: [u8; 8] = rng.gen();
        k[0] &= 0x7f;
        if peer_id > 0 {
            let [lo, hi] = peer_id.to_le_bytes();
            k[1] = lo;
            k[2] = hi;
            k[7] |= TTL_MASK;
        }
        CancelKey(k)
    }

    /// The key of a CancelRequest: the pid and a secret of exactly 4 bytes (protocol 3.0);
    /// `None` for longer secrets (protocol 3.2 keys, never issued by pgfunnel).
    pub fn from_request(pid: i32, secret: &[u8]) -> Option<CancelKey> {
        let secret: [u8; 4] = secret.try_into().ok()?;
        let mut k = [0u8; 8];
        k[..4].copy_from_slice(&pid.to_be_bytes());
        k[4..].copy_from_slice(&secret);
        Some(CancelKey(k))
    }

    /// The pid half, as BackendKeyData carries it.
    pub fn pid(&self) -> i32 {
        i32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The secret half, as BackendKeyData carries it.
    pub fn secret(&self) -> i32 {
        i32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }

    /// The secret half as bytes.
    pub fn secret_bytes(&self) -> [u8; 4] {
        [self.0[4], self.0[5], self.0[6], self.0[7]]
    }

    /// The peer id bytes 1-2 name (meaningful only when the issuer had peering on).
    pub fn peer_id(&self) -> u16 {
        u16::from_le_bytes([self.0[1], self.0[2]])
    }

    /// Forwards this key may still take.
    pub fn ttl(&self) -> u8 {
        self.0[7] & TTL_MASK
    }

    /// The key with the TTL bits set to `ttl` (0-3).
    pub fn with_ttl(mut self, ttl: u8) -> CancelKey {
        self.0[7] = (self.0[7] & !TTL_MASK) | (ttl & TTL_MASK);
        self
    }

    /// The key as stored by its issuer (TTL bits full), for looking up a received key.
    pub fn as_issued(self) -> CancelKey {
        self.with_ttl(TTL_MASK)
    }

    /// The key as one number (map key).
    pub fn as_u64(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_carry_the_peer_id_full_ttl_and_a_positive_pid() {
        let mut rng = rand::thread_rng();
        for id in [1u16, 2, 255, 256, 16383] {
            for _ in 0..200 {
                let k = CancelKey::issue(id, &mut rng);
                assert_eq!(k.peer_id(), id);
                assert_eq!(k.ttl(), 3);
                assert!(k.pid() > 0 || k.0[0] == 0, "pid sign bit clear");
                assert!(k.pid() >= 0);
            }
        }
    }

    #[test]
    fn layout_matches_pgbouncer_bytes() {
        // peer 0x1234 -> byte 1 = 0x34, byte 2 = 0x12; TTL in the low bits of byte 7.
        let k = CancelKey([0x01, 0x34, 0x12, 0x99, 0xaa, 0xbb, 0xcc, 0xd3]);
        assert_eq!(k.peer_id(), 0x1234);
        assert_eq!(k.ttl(), 3);
        assert_eq!(k.with_ttl(0).0[7], 0xd0);
        assert_eq!(k.with_ttl(0).as_issued(), k);
        assert_eq!(k.pid(), 0x0134_1299);
        assert_eq!(k.secret(), 0xaabb_ccd3_u32 as i32);
    }

    #[test]
    fn request_round_trips_and_refuses_long_secrets() {
        let k = CancelKey::issue(7, &mut rand::thread_rng());
        let back = CancelKey::from_request(k.pid(), &k.secret_bytes()).expect("4 bytes");
        assert_eq!(back, k);
        assert!(CancelKey::from_request(1, &[0; 32]).is_none());
    }

    #[test]
    fn without_peering_keys_keep_all_but_the_sign_bit_random() {
        let mut rng = rand::thread_rng();
        let distinct: std::collections::HashSet<u64> = (0..1000)
            .map(|_| CancelKey::issue(0, &mut rng).as_u64())
            .collect();
        assert_eq!(distinct.len(), 1000);
        assert!(distinct.iter().all(|k| k >> 63 == 0));
    }
}
