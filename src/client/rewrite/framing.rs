//! Framing helpers of the rewriter: finding whole messages in place or gathering them across
//! reads, streaming the bytes of a message through, and writing the few messages it builds.
//! No bookkeeping of statements or expected replies lives here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::MAX_STREAMED_NAMES;
use crate::pool::prepared::Statement;
use crate::protocol::messages::{put_cstr, put_message};

/// Moves what has arrived of a message streamed through unchanged; true once it is done.
pub(super) fn stream_part(remaining: &mut usize, input: &mut BytesMut, out: &mut BytesMut) -> bool {
    let n = (*remaining).min(input.len());
    out.extend_from_slice(&input[..n]);
    input.advance(n);
    *remaining -= n;
    *remaining == 0
}

/// Where the next whole message is.
pub(super) enum Next {
    /// The first `n` bytes of `input` (read in place, no copy).
    InInput(usize),
    /// Gathered across reads.
    Gathered(Bytes),
    /// Not all there yet.
    Incomplete,
}

/// The next whole message: in `input` itself when it is all there, else gathered in
/// `partial` (which takes every byte of `input` that belongs to it). While incomplete,
/// `input` holds nothing of it, or only a header shorter than 5 bytes.
pub(super) fn next_whole(partial: &mut BytesMut, input: &mut BytesMut) -> Next {
    if partial.is_empty() {
        if input.len() < 5 {
            return Next::Incomplete;
        }
        let total = frame_len(input);
        if input.len() >= total {
            return Next::InInput(total);
        }
        partial.extend_from_slice(input);
        input.clear();
        return Next::Incomplete;
    }
    let total = frame_len(partial);
    let n = (total - partial.len()).min(input.len());
    partial.extend_from_slice(&input[..n]);
    input.advance(n);
    if partial.len() == total {
        Next::Gathered(partial.split().freeze())
    } else {
        Next::Incomplete
    }
}

/// The end offsets of a Bind's portal and statement names (their NUL bytes) in `input`,
/// which starts with the Bind's header; None when they are not both there (yet).
pub(super) fn bind_names(input: &[u8]) -> Option<(usize, usize)> {
    // Bounded: a large Bind is longer than this, so both names lie inside it.
    let input = &input[..input.len().min(5 + MAX_STREAMED_NAMES)];
    let body = input.get(5..)?;
    let portal_end = 5 + body.iter().position(|&b| b == 0)?;
    let name_end = portal_end + 1 + input[portal_end + 1..].iter().position(|&b| b == 0)?;
    Some((portal_end, name_end))
}

/// Length of the frame starting `buf` (type byte + length field's value).
fn frame_len(buf: &[u8]) -> usize {
    u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize + 1
}

pub(super) fn put_parse(out: &mut BytesMut, stmt: &Statement) {
    put_message(out, b'P', |b| {
        put_cstr(b, &stmt.server_name);
        b.put_slice(&stmt.rest);
    });
}

pub(super) fn put_bytes_cstr(b: &mut BytesMut, s: &[u8]) {
    b.put_slice(s);
    b.put_u8(0);
}
