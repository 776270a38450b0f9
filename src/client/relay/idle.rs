//! The relay of an idle client: waiting for its next request without holding buffer
//! memory, and the lone query pgfunnel may answer itself.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::AsyncRead;
use tokio_util::io::poll_read_buf;

use super::Relay;
use crate::client::buffers;
use crate::client::validate::ClientViolation;
use crate::net::PollReadReady;

/// Buffer for an idle client's next request when its stream cannot report readiness
/// (WebSocket); grown when a bigger request arrives.
const IDLE_READ: usize = 1024;

/// What the idle wait for a client produced.
#[derive(Debug)]
pub enum IdleEnd {
    /// The client sent bytes that need a server (they sit in `c2s`).
    Request,
    /// The client left.
    ClientGone,
    /// The client's socket failed.
    ClientIo(io::Error),
    /// The client broke the protocol (nothing of the offending message is kept).
    ClientProtocol(ClientViolation),
}

impl Relay {
    /// Hands buffer memory back while the client holds no server (idle clients stay
    /// small; the next busy client reuses it).
    pub(super) fn release_idle_memory(&mut self) {
        for buf in [&mut self.c2s, &mut self.s2c, &mut self.cin, &mut self.sin] {
            buffers::give_back(buf);
        }
        self.client_scan.release_idle_memory();
        self.server_scan.release_idle_memory();
    }

    /// The body of the client's pending request when it is exactly one complete simple
    /// Query (nothing else buffered), for statements pgfunnel answers itself.
    pub fn lone_query(&self) -> Option<&[u8]> {
        let buf = if self.rewriter.is_some() {
            &self.cin
        } else {
            &self.c2s
        };
        if buf.len() < 5 || buf[0] != b'Q' || !self.client_scan.at_boundary() {
            return None;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        (buf.len() == len + 1).then(|| &buf[5..])
    }

    /// True once the client sent Terminate (a client that left without it vanished:
    /// `client unexpected eof` in the log).
    pub fn client_sent_terminate(&self) -> bool {
        self.client_terminated
    }

    /// Drops the lone query returned by `lone_query` (pgfunnel answered it).
    pub fn consume_lone_query(&mut self) {
        self.cin.clear();
        self.c2s.clear();
        self.tracker.forget_last_request();
        self.clock.busy_since = None;
    }

    /// Waits until the client sends something that needs a server.
    /// Cancel safe: bytes read are kept in `c2s` and already accounted.
    pub async fn wait_for_request<C: AsyncRead + PollReadReady + Unpin>(
        &mut self,
        client: &mut C,
    ) -> IdleEnd {
        loop {
            if !self.c2s.is_empty() || !self.cin.is_empty() {
                return IdleEnd::Request;
            }
            if self.client_terminated {
                return IdleEnd::ClientGone;
            }
            let buf = self.client_in();
            let before = buf.len();
            buffers::lend(buf);
            if buf.capacity() - buf.len() < 64 {
                buf.reserve(IDLE_READ);
            }
            // A busy client's next request is often already there; otherwise it is idle:
            // give the relay buffers back and wait for bytes without holding any (the read
            // just returned Pending, as `poll_read_ready` of a TLS stream requires).
            let first =
                poll_fn(|cx| Poll::Ready(poll_read_buf(Pin::new(&mut *client), cx, &mut *buf)))
                    .await;
            let read = match first {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    self.release_idle_memory();
                    let ready = poll_fn(|cx| match client.poll_read_ready(cx) {
                        None => Poll::Ready(None),
                        Some(p) => p.map(Some),
                    })
                    .await;
                    match ready {
                        Some(Ok(())) => continue,
                        Some(Err(e)) => return IdleEnd::ClientIo(e),
                        None => {
                            let buf = self.client_in();
                            buf.reserve(IDLE_READ);
                            poll_fn(|cx| poll_read_buf(Pin::new(&mut *client), cx, &mut *buf)).await
                        }
                    }
                }
            };
            let n = match read {
                Ok(0) => return IdleEnd::ClientGone,
                Ok(n) => n,
                Err(e) => return IdleEnd::ClientIo(e),
            };
            if let Err(e) = self.scan_client(before, n) {
                return IdleEnd::ClientProtocol(e);
            }
        }
    }
}

#[cfg(test)]
#[path = "idle_tests.rs"]
mod tests;
