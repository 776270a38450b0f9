//! A minimal HTTP/1.1 responder on `metrics_listen`: GET /metrics, /health/live and
//! /health/ready, one request per connection. Anything that is not an HTTP request gets
//! 400, a client that does not send its request head within a few seconds is dropped, and
//! heads larger than 8 KiB are refused, so nothing here can be held open or made to buffer.

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

/// The request line's method and path, or why the head is not an HTTP request.
pub fn parse_request_line(head: &[u8]) -> Result<(&str, &str), &'static str> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| "not an HTTP request")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not an HTTP request");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return Err("not an HTTP request");
    }
    Ok((method, target.split('?').next().unwrap_or(target)))
}

async fn read_head(sock: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err("request head too large");
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("connection closed"),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        // Reject garbage early instead of waiting for a blank line that never comes.
        if head.contains(&b'\n') {
            parse_request_line(&head)?;
        }
    }
}

async fn handle(app: &App, mut sock: TcpStream) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock)).await {
        Ok(Ok(h)) => h,
        Ok(Err("connection closed")) => return,
        Ok(Err(why)) => return respond(&mut sock, 400, "text/plain", why).await,
        Err(_) => return respond(&mut sock, 408, "text/plain", "request timeout").await,
    };
    let (method, path) = match parse_request_line(&head) {
        Ok(r) => r,
        Err(why) => return respond(&mut sock, 400, "text/plain", why).await,
    };
    if method != "GET" && method != "HEAD" {
        return respond(&mut sock, 405, "text/plain", "method not allowed").await;
    }
    match path {
        "/metrics" => {
            let body = app.metrics.render(app);
            respond(
                &mut sock,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        "/health/live" => respond(&mut sock, 200, "application/json", "{\"status\":\"ok\"}").await,
        "/health/ready" => {
            let r = super::health::readiness(app).await;
            let code = if r.is_ready() { 200 } else { 503 };
            respond(&mut sock, code, "application/json", &r.to_json()).await
        }
        _ => respond(&mut sock, 404, "text/plain", "not found").await,
    }
}

async fn respond(sock: &mut TcpStream, code: u16, content_type: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = sock.write_all(head.as_bytes()).await;
        let _ = sock.write_all(body.as_bytes()).await;
        let _ = sock.shutdown().await;
    })
    .await;
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
    }
}
