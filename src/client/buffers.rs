//! Relay buffers lent per link. A client that holds a server needs read/write buffers; an
//! idle client needs none. Rather than free them when a client goes idle and allocate them
//! again for its next transaction (four malloc/free pairs per transaction), idle clients
//! hand them to a small per-thread stack of spares that the next busy client takes from.

use std::cell::RefCell;

use bytes::BytesMut;

/// Bytes read per read call at most (and the capacity a spare buffer has).
pub const READ_CHUNK: usize = 16 * 1024;
/// Spares kept per worker thread; more are freed.
const MAX_SPARES: usize = 64;
/// Buffers that grew past this (a huge row, a big COPY) are freed rather than kept.
const MAX_SPARE_CAPACITY: usize = 4 * READ_CHUNK;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Gives `buf` a spare buffer when it has no memory (no-op otherwise).
#[inline]
pub fn lend(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        if let Some(spare) = SPARES.with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop())) {
            *buf = spare;
        }
    }
}

/// Takes `buf`'s memory back when it holds no bytes (it stays usable, empty).
#[inline]
pub fn give_back(buf: &mut BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let mut spare = std::mem::take(buf);
    // Bytes already consumed sit before the read position: take that room back (no
    // copy, the buffer is empty). Only unshared buffers of a usual size are kept.
    if !spare.try_reclaim(READ_CHUNK) || spare.capacity() > MAX_SPARE_CAPACITY {
        return;
    }
    SPARES.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < MAX_SPARES {
                s.push(spare);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_buffer_is_reused_by_the_next_link() {
        let mut a = BytesMut::with_capacity(READ_CHUNK);
        a.extend_from_slice(b"abc");
        give_back(&mut a);
        assert_eq!(a.capacity(), READ_CHUNK, "a buffer holding bytes is kept");
        a.clear();
        let ptr = a.as_ptr();
        give_back(&mut a);
        assert_eq!(a.capacity(), 0, "an empty buffer is handed back");
        let mut b = BytesMut::new();
        lend(&mut b);
        assert_eq!(b.as_ptr(), ptr, "the next link gets the same memory");
        assert!(b.is_empty() && b.capacity() >= READ_CHUNK);
    }

    #[test]
    fn consumed_room_is_reclaimed_before_reuse() {
        let mut a = BytesMut::with_capacity(READ_CHUNK);
        a.extend_from_slice(&[1; 100]);
        bytes::Buf::advance(&mut a, 100);
        assert!(a.capacity() < READ_CHUNK);
        give_back(&mut a);
        let mut b = BytesMut::new();
        lend(&mut b);
        assert!(b.capacity() >= READ_CHUNK, "{}", b.capacity());
    }

    #[test]
    fn oversized_and_small_buffers_are_freed() {
        let mut big = BytesMut::with_capacity(MAX_SPARE_CAPACITY * 2);
        give_back(&mut big);
        let mut small = BytesMut::with_capacity(64);
        give_back(&mut small);
        let mut next = BytesMut::new();
        lend(&mut next);
        assert!(next.capacity() == 0 || next.capacity() <= MAX_SPARE_CAPACITY);
        assert!(next.capacity() == 0 || next.capacity() >= READ_CHUNK);
    }
}
