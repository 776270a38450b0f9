//! Builders for the synthetic messages pgfunnel writes itself (errors, notices, auth
//! requests, login replies, startup toward servers) and parsers for the few server
//! messages it reads. Relayed traffic never goes through here.

use bytes::{BufMut, BytesMut};
use pgwire::error::ErrorInfo;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::Message;

/// Backend message type bytes pgfunnel acts on.
pub mod tag {
    /// Authentication request family.
    pub const AUTHENTICATION: u8 = b'R';
    /// ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// CopyInResponse.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
}

/// Appends one message with the given type byte; `body` writes the body.
pub fn put_message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// Severity of a synthetic error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Appends an ErrorResponse with SQLSTATE `code`, `message` and an optional hint.
pub fn put_error(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let mut info = ErrorInfo::new(
        severity.as_str().to_owned(),
        code.to_owned(),
        message.to_owned(),
    );
    info.severity_nonlocalized = Some(severity.as_str().to_owned());
    info.hint = hint.map(str::to_owned);
    // Encoding into a BytesMut cannot fail for messages below pgwire's size limit;
    // our messages are short, fixed texts.
    let _ = ErrorResponse::from(info).encode(buf);
}

/// Appends a NoticeResponse (severity NOTICE, SQLSTATE 00000).
pub fn put_notice(buf: &mut BytesMut, message: &str) {
    let mut info = ErrorInfo::new(
        "NOTICE".to_owned(),
        crate::error::sqlstate::SUCCESSFUL_COMPLETION.to_owned(),
        message.to_owned(),
    );
    info.severity_nonlocalized = Some("NOTICE".to_owned());
    let _ = NoticeResponse::from(info).encode(buf);
}

/// Appends an Authentication request with the given code and payload.
pub fn put_auth(buf: &mut BytesMut, code: i32, payload: &[u8]) {
    put_message(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(code);
        b.put_slice(payload);
    });
}

/// Authentication codes (protocol-message-formats.html).
pub mod auth_code {
    /// AuthenticationOk.
    pub const OK: i32 = 0;
    /// AuthenticationCleartextPassword.
    pub const CLEARTEXT: i32 = 3;
    /// AuthenticationMD5Password.
    pub const MD5: i32 = 5;
    /// AuthenticationSASL.
    pub const SASL: i32 = 10;
    /// AuthenticationSASLContinue.
    pub const SASL_CONTINUE: i32 = 11;
    /// AuthenticationSASLFinal.
    pub const SASL_FINAL: i32 = 12;
}

/// Appends a ParameterStatus message.
pub fn put_parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put_message(buf, tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// Appends BackendKeyData with a 4-byte secret (protocol 3.0).
pub fn put_backend_key(buf: &mut BytesMut, pid: i32, secret: i32) {
    put_message(buf, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// Appends ReadyForQuery with the transaction status byte.
pub fn put_ready(buf: &mut BytesMut, status: u8) {
    put_message(buf, tag::READY_FOR_QUERY, |b| b.put_u8(status));
}

/// Appends NegotiateProtocolVersion: the newest minor version we speak plus the
/// `_pq_.` options we did not recognise.
pub fn put_negotiate_protocol(buf: &mut BytesMut, minor: i32, unrecognised: &[String]) {
    put_message(buf, tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32((3 << 16) | minor);
        b.put_i32(unrecognised.len() as i32);
        for o in unrecognised {
            put_cstr(b, o);
        }
    });
}

/// Appends a simple Query.
pub fn put_query(buf: &mut BytesMut, sql: &str) {
    put_message(buf, b'Q', |b| put_cstr(b, sql));
}

/// Appends a StartupMessage (protocol 3.0) with the given parameters.
pub fn put_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let len_at = buf.len();
    buf.put_i32(0);
    buf.put_i32(3 << 16);
    for (k, v) in params {
        put_cstr(buf, k);
        put_cstr(buf, v);
    }
    buf.put_u8(0);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a CancelRequest for the given server key.
pub fn put_cancel_request(buf: &mut BytesMut, pid: i32, secret: &[u8]) {
    buf.put_i32(12 + secret.len() as i32);
    buf.put_i32(80877102);
    buf.put_i32(pid);
    buf.put_slice(secret);
}

/// Appends a PasswordMessage (also used for SASL responses: `p` with raw payload).
pub fn put_password(buf: &mut BytesMut, payload: &[u8]) {
    put_message(buf, b'p', |b| b.put_slice(payload));
}

/// Appends a SASLInitialResponse.
pub fn put_sasl_initial(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    put_message(buf, b'p', |b| {
        put_cstr(b, mechanism);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// Appends Terminate.
pub fn put_terminate(buf: &mut BytesMut) {
    put_message(buf, b'X', |_| {});
}

/// Splits a NUL-terminated string off the front of `body`.
pub fn take_cstr<'a>(body: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = body.iter().position(|&b| b == 0)?;
    let s = &body[..end];
    *body = &body[end + 1..];
    Some(s)
}

/// Parses a ParameterStatus body into (name, value); non-UTF-8 bytes are replaced.
pub fn parse_parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut rest = body;
    let name = take_cstr(&mut rest)?;
    let value = take_cstr(&mut rest)?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// The fields of an ErrorResponse or NoticeResponse that pgfunnel uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity (S or V).
    pub severity: String,
    /// SQLSTATE (C).
    pub code: String,
    /// Primary message (M).
    pub message: String,
}

/// Parses an ErrorResponse/NoticeResponse body.
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        rest = after;
        let Some(value) = take_cstr(&mut rest) else {
            break;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_roundtrip_keeps_code_and_message() {
        let mut buf = BytesMut::new();
        put_error(
            &mut buf,
            Severity::Fatal,
            "53300",
            "sorry, too many clients already",
            None,
        );
        assert_eq!(buf[0], b'E');
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert_eq!(len + 1, buf.len());
        let f = parse_error_fields(&buf[5..]);
        assert_eq!(f.code, "53300");
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.message, "sorry, too many clients already");
    }

    #[test]
    fn startup_message_length_counts_itself() {
        let mut buf = BytesMut::new();
        put_startup(&mut buf, &[("user", "u"), ("database", "d")]);
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert_eq!(len, buf.len());
        assert_eq!(&buf[4..8], &(3i32 << 16).to_be_bytes());
        assert_eq!(buf.last(), Some(&0));
    }

    #[test]
    fn parameter_status_parses_and_tolerates_garbage() {
        let mut buf = BytesMut::new();
        put_parameter_status(&mut buf, "TimeZone", "UTC");
        assert_eq!(
            parse_parameter_status(&buf[5..]),
            Some(("TimeZone".into(), "UTC".into()))
        );
        assert_eq!(parse_parameter_status(b"no-nul"), None);
        let f = parse_error_fields(b"Sxx");
        assert_eq!(f.severity, "");
    }
}
