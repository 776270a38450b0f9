//! A minimal HTTP/1.1 responder on `metrics_listen`: GET (or HEAD: headers only) /metrics,
//! /health/live and /health/ready, one request per connection. Bytes that cannot begin an
//! HTTP/1.x request line get 400 as soon as they arrive, a client that does not send its
//! request head within a few seconds gets 408, and heads larger than 8 KiB get 431, so
//! nothing here can be held open or made to buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::app::App;

/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest accepted request head.
pub const MAX_HEAD: usize = 8 * 1024;

/// Binds `addr` and serves until shutdown; returns the bound address.
pub async fn serve(app: &Arc<App>, addr: &str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on metrics_listen {addr}"))?;
    let bound = listener.local_addr()?;
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = tokio::select! {
                _ = app.stopping.finished.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        debug!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let app = app.clone();
            tokio::spawn(async move { handle(&app, sock).await });
        }
    });
    Ok(bound)
}

/// Why no request head was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadError {
    /// The client closed (or reset) before sending a whole head: nothing to answer.
    Closed,
    /// Not an HTTP/1.x request line (400).
    NotHttp,
    /// The request head is over [`MAX_HEAD`] bytes (431).
    TooLarge,
}

const NOT_HTTP: &str = "not an HTTP request";

/// Whether `b` may appear in a method (an RFC 9110 token).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks the start of a request line that may still be incomplete (no line end yet), so
/// bytes that cannot begin `METHOD /target HTTP/1.x` are refused at once instead of after
/// the head timeout.
pub fn check_line_prefix(line: &[u8]) -> Result<(), &'static str> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.len() > 32 || !method.iter().all(|&b| is_tchar(b)) {
        return Err(NOT_HTTP);
    }
    if let Some(target) = parts.next() {
        if method.is_empty()
            || target.first().is_some_and(|&b| b != b'/')
            || !target.iter().all(u8::is_ascii_graphic)
        {
            return Err(NOT_HTTP);
        }
    }
    if let Some(version) = parts.next() {
        let n = version.len().min(7);
        if version[..n] != b"HTTP/1."[..n] || version.len() > 8 {
            return Err(NOT_HTTP);
        }
    }
    match parts.next() {
        Some(_) => Err(NOT_HTTP),
        None => Ok(()),
    }
}

/// The request line's method and path, or why the head is not an HTTP request.
pub fn parse_request_line(head: &[u8]) -> Result<(&str, &str), &'static str> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    check_line_prefix(&head[..line_end])?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| NOT_HTTP)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NOT_HTTP);
    };
    if version.len() != 8 || !version.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(NOT_HTTP);
    }
    Ok((method, target.split('?').next().unwrap_or(target)))
}

/// Where the head ends (just past its blank line), if it has.
fn head_end(head: &[u8]) -> Option<usize> {
    let crlf = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = head.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn read_head(sock: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        // Refuse garbage at once instead of waiting for a blank line that never comes.
        let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n');
        match line_end {
            Some(_) => parse_request_line(&head).map(|_| ()),
            None => check_line_prefix(&head),
        }
        .map_err(|_| HeadError::NotHttp)?;
        match head_end(&head) {
            Some(end) if end <= MAX_HEAD => {
                head.truncate(end);
                return Ok(head);
            }
            Some(_) => return Err(HeadError::TooLarge),
            None if head.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
            None => {}
        }
    }
}
async fn handle(app: &App, mut sock: TcpStream) {
    let reply = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock)).await {
        Ok(Ok(head)) => route(app, &head).await,
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::NotHttp)) => Reply::text(400, NOT_HTTP),
        Ok(Err(HeadError::TooLarge)) => Reply::text(431, "request head too large"),
        Err(_) => Reply::text(408, "request timeout"),
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), reply.send(&mut sock)).await;
}

/// The answer to a complete request head.
async fn route(app: &App, head: &[u8]) -> Reply {
    let Ok((method, path)) = parse_request_line(head) else {
        return Reply::text(400, NOT_HTTP);
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return Reply::text(405, "method not allowed");
    }
    let mut reply = match path {
        "/metrics" => Reply {
            code: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: app.metrics.render(app) + &crate::fleet::views::metrics_text(&app.fleet),
            head_only: false,
        },
        "/fleet/peer" => Reply::text(200, &format!("{}\n", app.fleet.peer_id())),
        "/health/live" => Reply::json(200, "{\"status\":\"ok\"}".to_owned()),
        "/health/ready" => {
            let r = super::health::readiness(app).await;
            Reply::json(if r.is_ready() { 200 } else { 503 }, r.to_json())
        }
        _ => Reply::text(404, "not found"),
    };
    reply.head_only = head_only;
    reply
}

/// One response; the connection closes after it.
struct Reply {
    code: u16,
    content_type: &'static str,
    body: String,
    /// HEAD: the headers (with the body's Content-Length) but not the body.
    head_only: bool,
}

impl Reply {
    fn text(code: u16, body: &str) -> Reply {
        Reply {
            code,
            content_type: "text/plain",
            body: body.to_owned(),
            head_only: false,
        }
    }

    fn json(code: u16, body: String) -> Reply {
        Reply {
            code,
            content_type: "application/json",
            body,
            head_only: false,
        }
    }

    /// Writes the response, then reads off (for a little while) what the client still
    /// sends, so closing with unread bytes does not reset the connection before the client
    /// has read the answer.
    async fn send(&self, sock: &mut TcpStream) {
        let code = self.code;
        let allow = if code == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {code} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            reason(code),
            self.content_type,
            self.body.len()
        );
        let _ = sock.write_all(head.as_bytes()).await;
        if !self.head_only {
            let _ = sock.write_all(self.body.as_bytes()).await;
        }
        let _ = sock.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while drained < 64 * 1024 {
                match sock.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"GET /health/ready?x=1 HTTP/1.0\r\n"),
            Ok(("GET", "/health/ready"))
        );
        assert!(parse_request_line(b"\x16\x03\x01\x02\x00").is_err());
        assert!(parse_request_line(b"hello there\n").is_err());
        assert!(parse_request_line(b"GET metrics HTTP/1.1\r\n").is_err());
        assert!(parse_request_line(b"GET / SMTP\r\n").is_err());
        assert!(parse_request_line(b"GET / HTTP/1.x\r\n").is_err());
        assert!(parse_request_line(b"GET / HTTP/1.1 extra\r\n").is_err());
    }

    #[test]
    fn partial_request_lines_are_refused_as_soon_as_they_cannot_be_http() {
        for ok in [
            &b""[..],
            b"G",
            b"GET",
            b"GET ",
            b"GET /me",
            b"HEAD /metrics HT",
            b"GET / HTTP/1.",
        ] {
            assert_eq!(
                check_line_prefix(ok),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"\x16\x03\x01"[..],
            b"\0\0",
            b"HELO example.org",
            b"GE\xffT",
            b" /",
            b"GET metrics",
            b"GET /a\x01b",
            b"GET / SMTP",
            b"GET / HTTP/2",
            b"GET / HTTP/1.1 x",
        ] {
            assert!(
                check_line_prefix(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
