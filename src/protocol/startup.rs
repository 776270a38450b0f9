//! The first packet a client sends: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage. Owns the length checks that run before authentication; owns no socket
//! policy (what to answer is the handshake's business).

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Postgres's own limit for a startup packet (pqcomm.h MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST_CODE: i32 = 80_877_103;
const GSSENC_REQUEST_CODE: i32 = 80_877_104;
const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// A decoded first packet.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// A cancel for the session identified by this key (3.2 keys are up to 256 bytes).
    Cancel {
        /// Process id part of the key.
        pid: i32,
        /// Secret part of the key.
        secret: Vec<u8>,
    },
    /// A StartupMessage.
    Startup {
        /// Requested minor protocol version (3.x).
        minor: u16,
        /// Parameters other than `_pq_.` protocol options.
        params: Vec<(String, String)>,
        /// `_pq_.` protocol options, which pgfunnel does not support.
        protocol_options: Vec<String>,
    },
}

/// Why a first packet was refused.
#[derive(Debug, Error)]
pub enum StartupError {
    /// The length field is outside 8..=10000.
    #[error("invalid startup packet length {0}")]
    BadLength(i32),
    /// Major protocol version other than 3, or an unknown request code.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol {
        /// Major version requested.
        major: u16,
        /// Minor version requested.
        minor: u16,
    },
    /// The packet body could not be parsed.
    #[error("invalid startup packet layout")]
    Malformed,
    /// The socket failed or closed before a whole packet arrived.
    #[error("connection closed during startup: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads and decodes one first packet. Reads exactly the packet's bytes, nothing more,
/// so the stream can be handed to TLS right after an SSLRequest.
pub async fn read_startup<R: AsyncRead + Unpin>(r: &mut R) -> Result<StartupPacket, StartupError> {
    let len = r.read_i32().await?;
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    let mut body = vec![0u8; len as usize - 4];
    r.read_exact(&mut body).await?;
    decode_startup(&body)
}

/// Decodes the packet body that follows the length field. Any byte sequence is an `Ok` or
/// an `Err`, never a panic (fuzzed: fuzz/fuzz_targets/startup_packet.rs).
pub fn decode_startup(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let Some(&[a, b, c, d]) = body.first_chunk::<4>() else {
        return Err(StartupError::Malformed);
    };
    let code = i32::from_be_bytes([a, b, c, d]);
    match code {
        SSL_REQUEST_CODE if body.len() == 4 => return Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if body.len() == 4 => return Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE if (12..=4 + 4 + 256).contains(&body.len()) => {
            let pid = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            return Ok(StartupPacket::Cancel {
                pid,
                secret: body[8..].to_vec(),
            });
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            return Err(StartupError::Malformed)
        }
        _ => {}
    }
    let major = (code >> 16) as u16;
    let minor = (code & 0xffff) as u16;
    if major != 3 {
        return Err(StartupError::UnsupportedProtocol { major, minor });
    }
    if !terminated_parameter_list(&body[4..]) {
        return Err(StartupError::Malformed);
    }
    let mut params = parameter_pairs(&body[4..]);
    let mut protocol_options = Vec::new();
    params.retain_mut(|(k, _)| {
        let option = k.starts_with("_pq_.");
        if option {
            protocol_options.push(std::mem::take(k));
        }
        !option
    });
    Ok(StartupPacket::Startup {
        minor,
        params,
        protocol_options,
    })
}

/// The `name\0value\0` pairs of a list that passed [`terminated_parameter_list`], sorted
/// by name with the last of a repeated name kept, names and values read as UTF-8 with
/// invalid bytes replaced (what pgwire's `Startup` decoder gave, without its copies).
fn parameter_pairs(mut rest: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let take = |rest: &mut &[u8]| {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        *rest = rest.get(end + 1..).unwrap_or_default();
        s
    };
    while rest.first().is_some_and(|&b| b != 0) {
        let name = take(&mut rest);
        let value = take(&mut rest);
        pairs.push((name, value));
    }
    // Stable: a repeated name's later value comes after; keep that one.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    pairs
}

/// Postgres's layout rule: `name\0value\0` pairs, then one `\0` that is the packet's last
/// byte. A list that ends after a value, or has bytes after the terminator, is refused.
fn terminated_parameter_list(mut rest: &[u8]) -> bool {
    loop {
        let Some(name_end) = rest.iter().position(|&b| b == 0) else {
            return false;
        };
        if name_end == 0 {
            return rest.len() == 1;
        }
        rest = &rest[name_end + 1..];
        let Some(value_end) = rest.iter().position(|&b| b == 0) else {
            return false;
        };
        rest = &rest[value_end + 1..];
    }
}

/// Drops the startup parameters named in `ignore_startup_parameters` (case-insensitive),
/// both as parameters of their own and as `-c name=value` / `--name=value` items inside
/// `options`, as PgBouncer does since 1.20. The items kept in `options` are written back
/// in `-c name=value` form (spaces and backslashes escaped); an `options` left empty goes.
pub fn drop_ignored(startup: &mut Vec<(String, String)>, ignored: &[String]) {
    let is_ignored = |k: &str| ignored.iter().any(|i| i.eq_ignore_ascii_case(k));
    startup.retain(|(k, _)| !is_ignored(k));
    let Some(pos) = startup.iter().position(|(k, _)| k == "options") else {
        return;
    };
    let items = crate::client::params::parse_options(&startup[pos].1);
    if !items.iter().any(|(k, _)| is_ignored(k)) {
        return;
    }
    let kept: Vec<String> = items
        .iter()
        .filter(|(k, _)| !is_ignored(k))
        .map(|(k, v)| format!("-c {}={}", escape_option(k), escape_option(v)))
        .collect();
    if kept.is_empty() {
        startup.remove(pos);
    } else {
        startup[pos].1 = kept.join(" ");
    }
}

/// Escapes whitespace and backslashes the way libpq's `options` parser reads them.
fn escape_option(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ignored_names_go_from_options_too() {
        let ignored = vec!["extra_float_digits".to_string(), "Search_Path".to_string()];
        let mut p = params(&[
            ("user", "u"),
            ("extra_float_digits", "3"),
            (
                "options",
                "-c extra_float_digits=2 -csearch_path=a\\ b --work-mem=64kB",
            ),
        ]);
        drop_ignored(&mut p, &ignored);
        assert_eq!(p, params(&[("user", "u"), ("options", "-c work_mem=64kB")]));
        let mut only = params(&[("options", "--extra-float-digits=3")]);
        drop_ignored(&mut only, &ignored);
        assert!(only.is_empty());
        let mut kept = params(&[("options", "-c application_name=a\\ b")]);
        drop_ignored(&mut kept, &ignored);
        assert_eq!(kept, params(&[("options", "-c application_name=a\\ b")]));
        let parsed = crate::client::params::parse_options("-c a=x\\ y\\\\z");
        assert_eq!(
            escape_option(&parsed[0].1),
            "x\\ y\\\\z",
            "escaping is the inverse of parsing"
        );
    }

    fn packet(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    async fn read(bytes: &[u8]) -> Result<StartupPacket, StartupError> {
        let mut r = bytes;
        read_startup(&mut r).await
    }

    /// The parameters as pgwire's `Startup` decoder read them (what `decode_startup` used
    /// before it parsed the list itself).
    fn pgwire_params(list: &[u8]) -> Vec<(String, String)> {
        use pgwire::messages::{startup::Startup, DecodeContext, Message, ProtocolVersion};
        let mut body = bytes::BytesMut::from(&0x0003_0000i32.to_be_bytes()[..]);
        body.extend_from_slice(list);
        let ctx = DecodeContext::new(ProtocolVersion::default());
        let len = body.len() + 4;
        let decoded = Startup::decode_body(&mut body, len, &ctx).expect("pgwire decodes it");
        decoded.parameters.into_iter().collect()
    }

    #[test]
    fn parameters_read_as_pgwire_read_them_sorted_last_repeat_wins() {
        let lists: [&[u8]; 6] = [
            b"\0",
            b"user\0u\0database\0d\0\0",
            b"b\0first\0a\0x\0b\0second\0\0",
            b"user\0\0application_name\0\0\0",
            b"user\0caf\xc3\xa9\0bad\xff\0v\xfe\0\0",
            b"_pq_.x\0y\0user\0u\0_pq_.a\0\0\0",
        ];
        for list in lists {
            assert!(terminated_parameter_list(list), "{list:?}");
            assert_eq!(parameter_pairs(list), pgwire_params(list), "{list:?}");
        }
        let Ok(StartupPacket::Startup {
            params,
            protocol_options,
            ..
        }) = decode_startup(&[&0x0003_0000i32.to_be_bytes()[..], lists[5]].concat())
        else {
            panic!("a valid StartupMessage");
        };
        assert_eq!(params, vec![("user".to_string(), "u".to_string())]);
        assert_eq!(protocol_options, vec!["_pq_.a", "_pq_.x"]);
    }

    #[test]
    fn body_shorter_than_a_code_is_malformed_not_a_panic() {
        for body in [&b""[..], b"\x00", b"\x00\x03\x00"] {
            assert!(matches!(decode_startup(body), Err(StartupError::Malformed)));
        }
    }

    #[tokio::test]
    async fn decodes_each_request_kind() {
        assert_eq!(
            read(&packet(SSL_REQUEST_CODE, b"")).await.unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            read(&packet(GSSENC_REQUEST_CODE, b"")).await.unwrap(),
            StartupPacket::GssEncRequest
        );
        let mut key = 7i32.to_be_bytes().to_vec();
        key.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            read(&packet(CANCEL_REQUEST_CODE, &key)).await.unwrap(),
            StartupPacket::Cancel {
                pid: 7,
                secret: vec![1, 2, 3, 4]
            }
        );
        let p = packet(3 << 16, b"user\0alice\0database\0db\0_pq_.x\0y\0\0");
        match read(&p).await.unwrap() {
            StartupPacket::Startup {
                minor,
                params,
                protocol_options,
            } => {
                assert_eq!(minor, 0);
                assert!(params.contains(&("user".into(), "alice".into())));
                assert!(params.contains(&("database".into(), "db".into())));
                assert_eq!(protocol_options, vec!["_pq_.x".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn rejects_bad_lengths_and_protocols() {
        for len in [0i32, 3, 7, 10_001, i32::MAX, -5] {
            let bytes = len.to_be_bytes();
            assert!(matches!(read(&bytes).await, Err(StartupError::BadLength(l)) if l == len));
        }
        assert!(matches!(
            read(&packet(2 << 16, b"user\0a\0\0")).await,
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        assert!(matches!(
            read(&packet(3 << 16, b"user\0a")).await,
            Err(StartupError::Malformed)
        ));
        // Ends after a value: the list terminator is missing.
        assert!(matches!(
            read(&packet(3 << 16, b"user\0a\0")).await,
            Err(StartupError::Malformed)
        ));
        // Bytes after the terminator, or a name without a value.
        for body in [&b"user\0a\0\0x\0"[..], b"user\0\0", b"user\0a\0db\0"] {
            assert!(matches!(
                read(&packet(3 << 16, body)).await,
                Err(StartupError::Malformed)
            ));
        }
        assert!(read(&packet(3 << 16, b"\0")).await.is_ok());
        assert!(matches!(
            read(&packet(SSL_REQUEST_CODE, b"xx")).await,
            Err(StartupError::Malformed)
        ));
    }

    #[tokio::test]
    async fn half_a_packet_is_an_io_error() {
        let p = packet(3 << 16, b"user\0alice\0\0");
        assert!(matches!(
            read(&p[..p.len() - 3]).await,
            Err(StartupError::Io(_))
        ));
    }
}
