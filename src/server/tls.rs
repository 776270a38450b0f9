//! Starting TLS on a fresh TCP connection to a server: SSLRequest and its one-byte answer,
//! or direct TLS (libpq's `sslnegotiation=direct`), then the rustls handshake with SNI and
//! the verification the sslmode asks for. Which attempts to make (allow, prefer fallback)
//! is decided by `connect`.

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::conn::ServerError;
use crate::net::Stream;

/// SSLRequest: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Whether and how to start TLS on one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAttempt {
    /// Plain TCP, no SSLRequest.
    Off,
    /// SSLRequest; plaintext when the server answers `N`.
    IfOffered,
    /// SSLRequest; an `N` is an error.
    Required,
    /// TLS handshake at once with ALPN `postgresql` (PostgreSQL 17+).
    Direct,
}

/// Starts TLS on `tcp` toward `host` as `attempt` says. `host` names the server for SNI
/// (sent only for DNS names) and, in verify-full, for the certificate check.
pub async fn start(
    mut tcp: TcpStream,
    host: &str,
    connector: Option<&TlsConnector>,
    attempt: TlsAttempt,
) -> Result<Stream, ServerError> {
    let connector = match (attempt, connector) {
        (TlsAttempt::Off, _) | (_, None) => return Ok(Stream::Tcp(tcp)),
        (_, Some(c)) => c,
    };
    if attempt != TlsAttempt::Direct {
        tcp.write_all(&SSL_REQUEST).await?;
        // Exactly one byte: anything the server sent after it must go through TLS, never
        // be taken as plaintext (CVE-2021-23222).
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if attempt == TlsAttempt::IfOffered => return Ok(Stream::Tcp(tcp)),
            b'N' => return Err(ServerError::TlsRefused),
            _ => {
                return Err(ServerError::Protocol(
                    "unexpected answer to SSLRequest (expected S or N)",
                ))
            }
        }
    }
    let name = server_name(host)?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(ServerError::Tls)?;
    Ok(Stream::ServerTls(Box::new(tls)))
}

/// What the client is told when the TLS handshake with the server failed: certificate
/// problems in OpenSSL's words (`certificate verify failed: ...`, as PgBouncer and libpq
/// report them), anything else as a TLS failure; never an address.
pub fn failure_message(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let reason = match rustls_error {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "server certificate does not match host name"
            }
            C::UnknownIssuer => "unable to get local issuer certificate",
            C::Expired | C::ExpiredContext { .. } => "certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate is not yet valid",
            C::BadSignature => "certificate signature failure",
            C::BadEncoding => "certificate could not be parsed",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "unsupported certificate purpose"
            }
            _ => "certificate rejected",
        },
        Some(rustls::Error::NoCertificatesPresented) => "no certificate presented",
        _ => {
            return "server login failed: SSL error: TLS handshake with the database server failed"
                .to_owned()
        }
    };
    format!("server login failed: SSL error: certificate verify failed: {reason}")
}

/// The TLS name of `host`: an IP address (no SNI, checked against IP SANs) or a DNS name
/// (sent as SNI, which Neon and other routers need in every mode).
fn server_name(host: &str) -> Result<ServerName<'static>, ServerError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|_| {
        ServerError::Tls(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "host is not a valid TLS server name",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_are_reported_in_openssl_words() {
        let wrap = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let m = failure_message(&wrap(rustls::CertificateError::UnknownIssuer.into()));
        assert_eq!(
            m,
            "server login failed: SSL error: certificate verify failed: unable to get local issuer certificate"
        );
        let m = failure_message(&wrap(rustls::CertificateError::NotValidForName.into()));
        assert!(m.ends_with("does not match host name"), "{m}");
        let m = failure_message(&std::io::ErrorKind::UnexpectedEof.into());
        assert!(!m.contains("certificate verify failed"), "{m}");
    }

    #[test]
    fn ip_hosts_are_addresses_and_names_are_dns() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("ep-cool-1.eu-central-1.aws.neon.tech"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad host").is_err());
    }

    #[tokio::test]
    async fn direct_tls_starts_with_a_client_hello_not_an_ssl_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.read_u8().await.expect("first byte")
            // Dropping the socket ends the handshake with an error.
        });
        let settings = crate::config::Settings {
            server_tls_sslmode: crate::config::SslMode::Require,
            ..Default::default()
        };
        let tls = crate::net::tls::server_side(&settings).expect("config");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let r = start(tcp, "localhost", tls.connector.as_ref(), TlsAttempt::Direct).await;
        assert!(matches!(r, Err(ServerError::Tls(_))), "{r:?}");
        assert_eq!(
            server.await.expect("server task"),
            0x16,
            "TLS handshake record"
        );
    }

    #[tokio::test]
    async fn server_answering_n_is_refused_when_tls_is_required() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = [0u8; 8];
            s.read_exact(&mut req).await.expect("read SSLRequest");
            s.write_all(b"N").await.expect("answer");
            req
        });
        let settings = crate::config::Settings {
            server_tls_sslmode: crate::config::SslMode::Require,
            ..Default::default()
        };
        let tls = crate::net::tls::server_side(&settings).expect("config");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let r = start(
            tcp,
            "localhost",
            tls.connector.as_ref(),
            TlsAttempt::Required,
        )
        .await;
        assert!(matches!(r, Err(ServerError::TlsRefused)), "{r:?}");
        assert_eq!(server.await.expect("server task"), SSL_REQUEST);
    }
}
