//! Running `auth_query` on a server connection: one extended-protocol round trip with the
//! user name as `$1` (never spliced into SQL), answering the stored secret of that user.
//! Which connection to use and what to do with the secret is the caller's business.

use bytes::{BufMut, BytesMut};

use super::conn::{ServerConnection, ServerError};
use crate::auth::Secret;
use crate::protocol::messages::{self, tag};

/// Runs `sql` with `$1 = user` and returns the second column of the first row. As in
/// PgBouncer, any row means the user exists: a NULL secret (no password, or an expired
/// VALID UNTIL in PgBouncer's default query) becomes an empty plaintext secret, which no
/// password ever matches while trust, peer and cert still admit the user. `None` only when
/// there is no row (an unknown user). The connection is back at ReadyForQuery on success
/// and on `Rejected`; any other error leaves it unusable.
pub async fn lookup_secret(
    conn: &mut ServerConnection,
    sql: &str,
    user: &str,
) -> Result<Option<Secret>, ServerError> {
    let mut out = BytesMut::new();
    put_extended_query(&mut out, sql, user);
    conn.stream.send(&out).await?;
    let mut secret = None;
    let mut rows = 0usize;
    let mut error = None;
    loop {
        let (t, body) = conn.read_message().await?;
        match t {
            b'D' => {
                if rows == 0 {
                    secret = second_column(&body)?;
                }
                rows += 1;
            }
            tag::ERROR_RESPONSE => error = Some(messages::parse_error_fields(&body)),
            tag::READY_FOR_QUERY => break,
            tag::PARAMETER_STATUS => conn.record_parameter(&body),
            // ParseComplete, BindComplete, CommandComplete, NoData, notices.
            _ => {}
        }
    }
    if let Some(e) = error {
        return Err(ServerError::Rejected(e));
    }
    if rows > 1 {
        return Err(ServerError::Protocol(
            "auth_query returned more than one row",
        ));
    }
    if rows == 0 {
        return Ok(None);
    }
    Ok(Some(secret.map_or_else(
        || Secret::Plain(String::new()),
        |s| Secret::parse(&s),
    )))
}

/// Parse + Bind (one text parameter) + Execute + Sync, all unnamed.
fn put_extended_query(out: &mut BytesMut, sql: &str, param: &str) {
    messages::put_message(out, b'P', |b| {
        messages::put_cstr(b, "");
        messages::put_cstr(b, sql);
        b.put_i16(0);
    });
    messages::put_message(out, b'B', |b| {
        messages::put_cstr(b, "");
        messages::put_cstr(b, "");
        b.put_i16(0);
        b.put_i16(1);
        b.put_i32(param.len() as i32);
        b.put_slice(param.as_bytes());
        b.put_i16(0);
    });
    messages::put_message(out, b'E', |b| {
        messages::put_cstr(b, "");
        b.put_i32(0);
    });
    messages::put_message(out, b'S', |_| {});
}

/// The second column of a DataRow as text; `None` for NULL.
fn second_column(body: &[u8]) -> Result<Option<String>, ServerError> {
    let bad = ServerError::Protocol("auth_query must return two columns (name, secret)");
    let mut rest = body
        .get(2..)
        .ok_or(ServerError::Protocol("short DataRow"))?;
    let columns = u16::from_be_bytes([body[0], body[1]]);
    if columns < 2 {
        return Err(bad);
    }
    let mut value = None;
    for _ in 0..2 {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(ServerError::Protocol("short DataRow"))?;
        let len = i32::from_be_bytes(len_bytes);
        rest = &rest[4..];
        value = if len < 0 {
            None
        } else {
            let v = rest
                .get(..len as usize)
                .ok_or(ServerError::Protocol("short DataRow"))?;
            rest = &rest[len as usize..];
            Some(String::from_utf8_lossy(v).into_owned())
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[Option<&str>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(cols.len() as u16).to_be_bytes());
        for c in cols {
            match c {
                Some(s) => {
                    b.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    #[test]
    fn second_column_reads_text_and_null() {
        assert_eq!(
            second_column(&row(&[Some("u"), Some("md5abc")])).expect("ok"),
            Some("md5abc".into())
        );
        assert_eq!(second_column(&row(&[Some("u"), None])).expect("ok"), None);
        assert!(second_column(&row(&[Some("u")])).is_err());
        assert!(second_column(&row(&[Some("u"), Some("x")])[..8]).is_err());
    }

    #[test]
    fn extended_query_carries_the_user_as_a_parameter() {
        let mut out = BytesMut::new();
        put_extended_query(&mut out, "SELECT $1", "o'neil");
        let tags: Vec<u8> = {
            let mut t = Vec::new();
            let mut rest = &out[..];
            while rest.len() >= 5 {
                let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                t.push(rest[0]);
                rest = &rest[1 + len..];
            }
            t
        };
        assert_eq!(tags, b"PBES");
        assert!(out.windows(6).any(|w| w == b"o'neil"));
    }
}
