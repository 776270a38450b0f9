//! Runs one `/sql` query on a pooled server through the extended protocol: unnamed
//! statement and portal, parameters and results in text, then Sync. Results are kept up
//! to a byte budget (`edge_max_response_size`); past it rows are read and dropped so the
//! server still ends in a known state.

use bytes::{Buf, BufMut, BytesMut};

use super::json::PgError;
use crate::protocol::messages::{self, tag};

/// Backend message types read here beyond those in [`tag`].
const ROW_DESCRIPTION: u8 = b'T';
const DATA_ROW: u8 = b'D';
const COMMAND_COMPLETE: u8 = b'C';
use crate::server::conn::ServerConnection;
use crate::server::ServerError;

/// One column of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// Table OID (0 when not a table column).
    pub table_oid: u32,
    /// Column number in its table (0 when not a table column).
    pub column: i16,
    /// Type OID.
    pub type_oid: u32,
    /// Type size (negative for variable width).
    pub type_size: i16,
    /// Type modifier.
    pub type_mod: i32,
}

/// The rows and command tag of one query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Columns (empty for commands that return no rows).
    pub fields: Vec<Field>,
    /// Rows of text values (`None` = NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// First word of the command tag (`SELECT`, `INSERT`, ...).
    pub command: String,
    /// The tag's row count, when it has one.
    pub row_count: Option<u64>,
}

/// Why a query gave no result.
#[derive(Debug)]
pub enum QueryError {
    /// Postgres refused it; the server is at ReadyForQuery again.
    Postgres(PgError),
    /// The result is over the response budget; the server is at ReadyForQuery again.
    TooLarge,
    /// The server failed or did something unexpected: its state is unknown.
    Server(ServerError),
}

impl From<ServerError> for QueryError {
    fn from(e: ServerError) -> Self {
        QueryError::Server(e)
    }
}

/// Estimated JSON cost of one value beyond its text (quotes, comma).
const VALUE_OVERHEAD: usize = 4;

/// Runs `sql` with `params` on `conn`; `budget` is the room left in the response and
/// shrinks by what this result takes. `status` gets the ReadyForQuery status byte.
pub async fn run(
    conn: &mut ServerConnection,
    sql: &str,
    params: &[Option<String>],
    budget: &mut usize,
    status: &mut u8,
) -> Result<QueryResult, QueryError> {
    let mut out = BytesMut::new();
    put_extended(&mut out, sql, params);
    conn.stream.send(&out).await.map_err(ServerError::Io)?;
    let mut result = QueryResult::default();
    let mut error = None;
    let mut over = false;
    loop {
        let (t, mut body) = conn.read_message().await?;
        match t {
            tag::READY_FOR_QUERY => {
                *status = body.first().copied().unwrap_or(0);
                break;
            }
            ROW_DESCRIPTION => {
                result.fields = parse_row_description(&body)
                    .ok_or(ServerError::Protocol("bad RowDescription"))?;
            }
            DATA_ROW if !over => {
                let cost = body.len() + result.fields.len() * VALUE_OVERHEAD;
                match budget.checked_sub(cost) {
                    Some(left) => *budget = left,
                    None => {
                        over = true;
                        result.rows = Vec::new();
                        continue;
                    }
                }
                let row = parse_data_row(&mut body).ok_or(ServerError::Protocol("bad DataRow"))?;
                result.rows.push(row);
            }
            COMMAND_COMPLETE => {
                let text = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body));
                (result.command, result.row_count) = parse_tag(&text);
            }
            tag::ERROR_RESPONSE if error.is_none() => {
                error = Some(PgError::from_error_body(&body));
            }
            tag::PARAMETER_STATUS => conn.record_parameter(&body),
            tag::COPY_IN_RESPONSE | tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                return Err(ServerError::Protocol("COPY is not available over HTTP").into());
            }
            _ => {} // ParseComplete, BindComplete, NoData, notices, notifications
        }
    }
    match (error, over) {
        (Some(e), _) => Err(QueryError::Postgres(e)),
        (None, true) => Err(QueryError::TooLarge),
        (None, false) => Ok(result),
    }
}

/// Parse, Bind (text in, text out), Describe portal, Execute, Sync.
fn put_extended(out: &mut BytesMut, sql: &str, params: &[Option<String>]) {
    messages::put_message(out, b'P', |b| {
        b.put_u8(0);
        messages::put_cstr(b, sql);
        b.put_i16(0);
    });
    messages::put_message(out, b'B', |b| {
        b.put_u8(0);
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0);
    });
    messages::put_message(out, b'D', |b| {
        b.put_u8(b'P');
        b.put_u8(0);
    });
    messages::put_message(out, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
    messages::put_message(out, b'S', |_| {});
}

fn parse_row_description(mut body: &[u8]) -> Option<Vec<Field>> {
    let n = read_i16(&mut body)?;
    let mut fields = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let name = messages::take_cstr(&mut body)?;
        if body.len() < 18 {
            return None;
        }
        fields.push(Field {
            name: String::from_utf8_lossy(name).into_owned(),
            table_oid: body.get_u32(),
            column: body.get_i16(),
            type_oid: body.get_u32(),
            type_size: body.get_i16(),
            type_mod: body.get_i32(),
        });
        body.advance(2); // format: always text here
    }
    Some(fields)
}

fn parse_data_row(body: &mut BytesMut) -> Option<Vec<Option<String>>> {
    let mut rest: &[u8] = body;
    let n = read_i16(&mut rest)?;
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if rest.len() < 4 {
            return None;
        }
        let len = rest.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let value = rest.get(..len as usize)?;
        row.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &rest[len as usize..];
    }
    Some(row)
}

fn read_i16(body: &mut &[u8]) -> Option<i16> {
    (body.len() >= 2).then(|| body.get_i16())
}

/// Splits a command tag into its command and row count (`INSERT 0 5` -> `INSERT`, 5).
pub fn parse_tag(tag: &str) -> (String, Option<u64>) {
    let mut words = tag.split(' ');
    let command = words.next().unwrap_or_default().to_owned();
    let count = tag.rsplit(' ').next().and_then(|w| w.parse().ok());
    let count = if tag.contains(' ') { count } else { None };
    (command, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_give_command_and_row_count() {
        assert_eq!(parse_tag("SELECT 3"), ("SELECT".into(), Some(3)));
        assert_eq!(parse_tag("INSERT 0 5"), ("INSERT".into(), Some(5)));
        assert_eq!(parse_tag("CREATE TABLE"), ("CREATE".into(), None));
        assert_eq!(parse_tag("BEGIN"), ("BEGIN".into(), None));
    }

    #[test]
    fn data_rows_decode_nulls_and_text() {
        let mut body = BytesMut::new();
        body.put_i16(3);
        body.put_i32(2);
        body.put_slice(b"42");
        body.put_i32(-1);
        body.put_i32(0);
        assert_eq!(
            parse_data_row(&mut body),
            Some(vec![Some("42".into()), None, Some(String::new())])
        );
        let mut short = BytesMut::from(&[0u8, 1, 0, 0, 0, 9, b'x'][..]);
        assert_eq!(parse_data_row(&mut short), None);
    }
}
