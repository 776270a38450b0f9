//! Streaming frame scanner for the relay: finds message boundaries in a byte stream
//! without copying, and captures the bodies of the few message types the proxy acts on.
//! It owns no socket and no buffer of forwarded bytes: the caller forwards what it read.

use thiserror::Error;

/// Length of a regular message header: one type byte plus a big-endian i32 length.
pub const HEADER_LEN: usize = 5;

/// A framing violation found in a peer's byte stream.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below 4 (it counts itself).
    #[error("invalid message length {len} for message type {tag:?}")]
    InvalidLength {
        /// Message type byte.
        tag: char,
        /// The length field as sent.
        len: i32,
    },
    /// The message is larger than `max_packet_size`.
    #[error("message of {len} bytes exceeds max_packet_size ({max})")]
    TooLarge {
        /// The length field as sent.
        len: u32,
        /// The configured limit.
        max: u32,
    },
}

/// What the scanner's caller wants done with a message whose header was just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Skip the body; only the header matters.
    Skip,
    /// Buffer the whole body and report it through [`ScanEvent::Message`].
    Body,
}

/// An event produced while scanning.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEvent<'a> {
    /// A header was completed (`len` excludes the type byte, as on the wire).
    Header {
        /// Message type byte.
        tag: u8,
        /// Length field (includes its own 4 bytes).
        len: u32,
    },
    /// A captured message is complete.
    Message {
        /// Message type byte.
        tag: u8,
        /// Message body (without type byte and length).
        body: &'a [u8],
    },
}

/// Incremental scanner over one direction of a Postgres connection.
///
/// Cancel safe by construction: it holds all partial state itself, so bytes can arrive
/// split at any position (inside a header, inside a captured body).
#[derive(Debug)]
pub struct Scanner {
    header: [u8; HEADER_LEN],
    header_len: usize,
    body_remaining: usize,
    capturing: bool,
    tag: u8,
    capture: Vec<u8>,
    max_len: u32,
    error_at: usize,
}

impl Scanner {
    /// Creates a scanner that rejects messages longer than `max_len` bytes.
    pub fn new(max_len: u32) -> Self {
        Scanner {
            header: [0; HEADER_LEN],
            header_len: 0,
            body_remaining: 0,
            capturing: false,
            tag: 0,
            capture: Vec::new(),
            max_len,
            error_at: 0,
        }
    }

    /// Frees the capture buffer when between messages (idle connections stay small).
    pub fn release_idle_memory(&mut self) {
        if self.at_boundary() {
            self.capture = Vec::new();
        }
    }

    /// True when the scanner sits exactly between two messages.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.body_remaining == 0
    }

    /// After `feed` failed: how many bytes of its `data` it consumed, up to and including
    /// the offending header.
    pub fn consumed_before_error(&self) -> usize {
        self.error_at
    }

    /// How many bytes of an incomplete header the last `feed` ended with (0-4). Those bytes
    /// are not validated yet: a caller that checks headers holds them back.
    pub fn partial_header_len(&self) -> usize {
        if self.body_remaining == 0 {
            self.header_len
        } else {
            0
        }
    }

    /// Feeds newly read bytes. `decide` is asked for every completed header whether the
    /// body must be captured; `event` receives headers and captured messages in order.
    /// Returns the number of bytes consumed (always all of `data` unless an error occurs,
    /// or `event` returns `false`: for a header, the scan stops right after that header;
    /// for a captured message, right after that message).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut decide: impl FnMut(u8, u32) -> Capture,
        mut event: impl FnMut(ScanEvent<'_>) -> bool,
    ) -> Result<usize, FrameError> {
        let total = data.len();
        while !data.is_empty() {
            let go_on = if self.body_remaining == 0 && self.header_len < HEADER_LEN {
                self.feed_header(&mut data, total, &mut decide, &mut event)?
            } else {
                self.feed_body(&mut data, &mut event)
            };
            if !go_on {
                return Ok(total - data.len());
            }
        }
        Ok(total)
    }

    /// Gathers header bytes from `data`; once the header is whole, checks it, asks
    /// `decide` and reports it (and an empty captured body). False: stop the scan here.
    #[inline]
    fn feed_header(
        &mut self,
        data: &mut &[u8],
        total: usize,
        decide: &mut impl FnMut(u8, u32) -> Capture,
        event: &mut impl FnMut(ScanEvent<'_>) -> bool,
    ) -> Result<bool, FrameError> {
        let bytes = *data;
        let take = (HEADER_LEN - self.header_len).min(bytes.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
        self.header_len += take;
        *data = &bytes[take..];
        if self.header_len < HEADER_LEN {
            return Ok(true); // `data` is used up: the rest of the header comes later
        }
        self.error_at = total - data.len();
        let (tag, len) = self.start_message()?;
        self.capturing = decide(tag, len) == Capture::Body;
        self.capture.clear();
        let keep_going = event(ScanEvent::Header { tag, len });
        if self.body_remaining > 0 {
            // A stop right after the header: the caller refuses this message (or ends
            // the stream) and must know where it starts.
            return Ok(keep_going);
        }
        self.header_len = 0;
        if self.capturing && !event(ScanEvent::Message { tag, body: &[] }) {
            return Ok(false);
        }
        Ok(keep_going)
    }

    /// Consumes body bytes from `data`, capturing them when asked; a body that arrived
    /// whole in this read is handed over in place. False: stop the scan here.
    #[inline]
    fn feed_body(
        &mut self,
        data: &mut &[u8],
        event: &mut impl FnMut(ScanEvent<'_>) -> bool,
    ) -> bool {
        let take = self.body_remaining.min(data.len());
        let (body, rest) = (*data).split_at(take);
        *data = rest;
        if self.capturing && self.capture.is_empty() && take == self.body_remaining {
            self.body_remaining = 0;
            self.header_len = 0;
            self.capturing = false;
            return event(ScanEvent::Message {
                tag: self.tag,
                body,
            });
        }
        if self.capturing {
            self.capture.extend_from_slice(body);
        }
        self.body_remaining -= take;
        if self.body_remaining > 0 {
            return true;
        }
        self.header_len = 0;
        !self.capturing || self.deliver_captured(event)
    }

    /// Checks the complete header just gathered and starts its body: `(tag, length)`.
    #[inline]
    fn start_message(&mut self) -> Result<(u8, u32), FrameError> {
        let tag = self.header[0];
        let len = i32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ]);
        if len < 4 {
            return Err(FrameError::InvalidLength {
                tag: tag as char,
                len,
            });
        }
        let len = len as u32;
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        self.tag = tag;
        self.body_remaining = len as usize - 4;
        Ok((tag, len))
    }

    /// Hands over a body gathered across reads (dropping a large capture buffer after);
    /// false when the caller wants no more messages.
    #[inline]
    fn deliver_captured(&mut self, event: &mut impl FnMut(ScanEvent<'_>) -> bool) -> bool {
        self.capturing = false;
        let more = event(ScanEvent::Message {
            tag: self.tag,
            body: &self.capture,
        });
        if self.capture.capacity() > 64 * 1024 {
            self.capture = Vec::new();
        }
        more
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn scan_all(chunks: &[&[u8]], capture: &[u8]) -> Vec<(u8, Option<Vec<u8>>)> {
        let mut s = Scanner::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            let n = s
                .feed(
                    c,
                    |t, _| {
                        if capture.contains(&t) {
                            Capture::Body
                        } else {
                            Capture::Skip
                        }
                    },
                    |ev| {
                        match ev {
                            ScanEvent::Header { tag, .. } => out.push((tag, None)),
                            ScanEvent::Message { body, .. } => {
                                out.last_mut().expect("header first").1 = Some(body.to_vec())
                            }
                        }
                        true
                    },
                )
                .expect("valid");
            assert_eq!(n, c.len());
        }
        out
    }

    #[test]
    fn finds_messages_split_at_every_byte_position() {
        let mut stream = msg(b'D', b"row-data");
        stream.extend(msg(b'C', b"SELECT 1\0"));
        stream.extend(msg(b'Z', b"I"));
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            let got = scan_all(&[a, b], b"Z");
            assert_eq!(
                got,
                vec![(b'D', None), (b'C', None), (b'Z', Some(b"I".to_vec()))],
                "split at {split}"
            );
        }
    }

    #[test]
    fn captures_empty_bodies() {
        let got = scan_all(&[&msg(b'S', b"")], b"S");
        assert_eq!(got, vec![(b'S', Some(vec![]))]);
    }

    #[test]
    fn rejects_length_below_four() {
        let mut s = Scanner::new(1000);
        let err = s
            .feed(&[b'Q', 0, 0, 0, 3], |_, _| Capture::Skip, |_| true)
            .unwrap_err();
        assert_eq!(err, FrameError::InvalidLength { tag: 'Q', len: 3 });
        let mut s = Scanner::new(1000);
        let err = s
            .feed(
                &[b'Q', 0xff, 0xff, 0xff, 0xff],
                |_, _| Capture::Skip,
                |_| true,
            )
            .unwrap_err();
        assert!(matches!(err, FrameError::InvalidLength { len: -1, .. }));
    }

    #[test]
    fn rejects_oversized_messages() {
        let mut s = Scanner::new(100);
        let err = s
            .feed(&msg(b'Q', &[b'x'; 200]), |_, _| Capture::Skip, |_| true)
            .unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 204, max: 100 });
    }

    #[test]
    fn large_bodies_stream_without_capture() {
        let big = vec![7u8; 300_000];
        let stream = msg(b'd', &big);
        let chunks: Vec<&[u8]> = stream.chunks(4096).collect();
        let got = scan_all(&chunks, b"Z");
        assert_eq!(got, vec![(b'd', None)]);
    }

    #[test]
    fn stop_request_returns_consumed_count() {
        let mut stream = msg(b'Z', b"I");
        stream.extend(msg(b'N', b"later"));
        let mut s = Scanner::new(1000);
        let n = s
            .feed(
                &stream,
                |t, _| {
                    if t == b'Z' {
                        Capture::Body
                    } else {
                        Capture::Skip
                    }
                },
                |ev| !matches!(ev, ScanEvent::Message { tag: b'Z', .. }),
            )
            .expect("valid");
        assert_eq!(n, 6);
        assert!(s.at_boundary());
    }
}
