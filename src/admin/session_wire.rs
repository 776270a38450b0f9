//! Wire encoding for the console: Bind parsing, row and description replies, command tags
//! and errors.

use super::*;

/// Reads a NUL-terminated string (lossy UTF-8).
pub(super) fn cstring(rest: &mut &[u8]) -> Option<String> {
    take_cstr(rest).map(|s| String::from_utf8_lossy(s).into_owned())
}

/// The result format codes at the end of a Bind body (after portal and statement names).
pub(super) fn parse_bind_formats(mut b: &[u8]) -> Option<Vec<i16>> {
    let take_i16 = |b: &mut &[u8]| -> Option<i16> {
        let v = i16::from_be_bytes(b.get(..2)?.try_into().ok()?);
        *b = &b[2..];
        Some(v)
    };
    let n_param_formats = take_i16(&mut b)?.max(0) as usize;
    b = b.get(n_param_formats * 2..)?;
    let n_params = take_i16(&mut b)?.max(0);
    for _ in 0..n_params {
        let len = i32::from_be_bytes(b.get(..4)?.try_into().ok()?);
        b = &b[4..];
        if len > 0 {
            b = b.get(len as usize..)?;
        }
    }
    let n = take_i16(&mut b)?.max(0);
    (0..n).map(|_| take_i16(&mut b)).collect()
}

/// Writes a reply; `with_description` for the simple protocol (Execute never sends one).
pub(super) fn put_reply(
    out: &mut BytesMut,
    reply: &Reply,
    formats: &[i16],
    with_description: bool,
) {
    match reply {
        Reply::Rows(rs) => {
            if with_description {
                rs.put_row_description(out, formats);
            }
            rs.put_data_rows(out, formats);
            put_command_complete(out, "SHOW");
        }
        Reply::Notice {
            message,
            detail,
            tag,
        } => {
            put_message(out, b'N', |b| {
                for (f, v) in [
                    (b'S', "NOTICE"),
                    (b'V', "NOTICE"),
                    (b'C', crate::error::sqlstate::SUCCESSFUL_COMPLETION),
                    (b'M', message),
                    (b'D', detail),
                ] {
                    if !v.is_empty() {
                        b.put_u8(f);
                        put_cstr(b, v);
                    }
                }
                b.put_u8(0);
            });
            put_command_complete(out, tag);
        }
        Reply::Done(tag) => put_command_complete(out, tag),
        Reply::Empty => put_message(out, b'I', |_| {}),
    }
}

pub(super) fn put_command_complete(out: &mut BytesMut, tag: &str) {
    put_message(out, b'C', |b| put_cstr(b, tag));
}

pub(super) fn put_admin_error(out: &mut BytesMut, e: &AdminError) {
    debug!(error = %e, "console command failed");
    // PgBouncer reports console errors with SQLSTATE 08P01 (send_pooler_error).
    messages::put_error(
        out,
        Severity::Error,
        ErrorKind::Protocol.sqlstate(),
        &e.to_string(),
        None,
    );
}
