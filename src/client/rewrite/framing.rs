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
    /// The `n` bytes at the offset asked for in `input` (read in place, no copy).
    InInput(usize),
    /// Gathered across reads.
    Gathered(Bytes),
    /// Not all there yet.
    Incomplete,
}

/// The next whole message, starting at `input[at..]`: there itself when it is all there,
/// else gathered in `partial` (which takes every byte of `input` past `at` that belongs to
/// it). While incomplete, `input` holds nothing of it past `at`, or only a header shorter
/// than 5 bytes.
#[inline]
pub(super) fn next_whole(partial: &mut BytesMut, input: &mut BytesMut, at: usize) -> Next {
    if partial.is_empty() {
        let rest = &input[at..];
        if rest.len() < 5 {
            return Next::Incomplete;
        }
        let total = frame_len(rest);
        if rest.len() >= total {
            return Next::InInput(total);
        }
        partial.extend_from_slice(rest);
        input.truncate(at);
        return Next::Incomplete;
    }
    debug_assert_eq!(at, 0, "nothing is kept back while a message is gathered");
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

/// What became of a whole message its handler was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum Sent {
    /// It goes on exactly as it is, after whatever the handler wrote: the caller moves it.
    Unchanged,
    /// The handler wrote what goes on in its place (itself, a rewrite, or nothing).
    Handled,
}

/// Whole messages at the front of an input buffer that go on unchanged and have not moved
/// yet. They stay in place until the input is done or something else must be written after
/// them, then move in one piece: by swapping the two buffers when the output is empty (no
/// copy at all), else by one copy. Only what a handler changes is written anew.
#[derive(Debug, Default)]
pub(super) struct Kept {
    len: usize,
}

impl Kept {
    /// Where the next message starts in the input.
    pub(super) fn end(&self) -> usize {
        self.len
    }

    /// After the handler of `input[end()..][..total]` ran and wrote `out[at..]`: the
    /// message joins the kept bytes when it goes on unchanged and nothing was written;
    /// otherwise the kept bytes go before what was written, then the message if unchanged.
    #[inline]
    pub(super) fn after(
        &mut self,
        sent: Sent,
        total: usize,
        input: &mut BytesMut,
        out: &mut BytesMut,
        at: usize,
    ) {
        if sent == Sent::Unchanged && out.len() == at {
            self.len += total;
            return;
        }
        let kept = std::mem::take(&mut self.len);
        if kept > 0 {
            let written = out.len() - at;
            out.extend_from_slice(&input[..kept]);
            out[at..].rotate_left(written);
        }
        if sent == Sent::Unchanged {
            out.extend_from_slice(&input[kept..kept + total]);
        }
        input.advance(kept + total);
    }

    /// Moves the kept bytes to the end of `out`.
    pub(super) fn flush(&mut self, input: &mut BytesMut, out: &mut BytesMut) {
        let kept = std::mem::take(&mut self.len);
        if kept == 0 {
            return;
        }
        let rest = input.len() - kept;
        if out.is_empty() && rest <= kept {
            // Swap: `out` takes the input's memory, the input `out`'s (empty) memory and the
            // few bytes past the kept ones (at most an incomplete header, usually none).
            std::mem::swap(input, out);
            if rest > 0 {
                input.extend_from_slice(&out[kept..]);
                out.truncate(kept);
            }
        } else {
            out.extend_from_slice(&input[..kept]);
            input.advance(kept);
        }
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
