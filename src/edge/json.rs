//! JSON as Neon's serverless driver reads it: query results (`fields`, `rows`, `command`,
//! `rowCount`, `rowAsArray`) and errors carrying every field of a Postgres ErrorResponse.
//! With `Neon-Raw-Text-Output: true` (what the driver sends) every value is Postgres's text
//! form and the driver parses it by `dataTypeID`; without it, booleans, small integers,
//! floats and JSON become JSON values and everything else stays text.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::error::{ClientError, ErrorKind};
use crate::protocol::messages::Severity;

use super::query::{Field, QueryResult};
use super::HttpResponse;

/// Well-known type OIDs.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const JSON: u32 = 114;
    pub const JSONB: u32 = 3802;
}

/// An error as the driver shows it: a message and the ErrorResponse's fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgError {
    /// Field name (`code`, `detail`, ...) and value, in the order Postgres sent them.
    pub fields: Vec<(&'static str, String)>,
    /// The primary message.
    pub message: String,
}

impl PgError {
    /// An error made by pgfunnel itself, with `kind`'s SQLSTATE.
    pub fn of(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        ClientError::error(kind, message).into()
    }

    /// An error a server sent: its SQLSTATE and message.
    pub fn from_server(code: &str, message: impl Into<String>) -> Self {
        PgError {
            fields: vec![("severity", "ERROR".into()), ("code", code.into())],
            message: message.into(),
        }
    }

    /// The SQLSTATE.
    pub fn code(&self) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| *k == "code")
            .map_or("", |(_, v)| v)
    }

    /// Parses an ErrorResponse body into the driver's field names.
    pub fn from_error_body(body: &[u8]) -> Self {
        let mut out = PgError::default();
        for part in body.split(|&b| b == 0) {
            let Some((&kind, value)) = part.split_first() else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            let name = match kind {
                b'M' => {
                    out.message = value;
                    continue;
                }
                b'S' => "severity",
                b'C' => "code",
                b'D' => "detail",
                b'H' => "hint",
                b'P' => "position",
                b'p' => "internalPosition",
                b'q' => "internalQuery",
                b'W' => "where",
                b's' => "schema",
                b't' => "table",
                b'c' => "column",
                b'd' => "dataType",
                b'n' => "constraint",
                b'F' => "file",
                b'L' => "line",
                b'R' => "routine",
                _ => continue,
            };
            out.fields.push((name, value));
        }
        out
    }

    /// `{message, code, detail, ...}`.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("message".into(), Value::String(self.message.clone()));
        for (k, v) in &self.fields {
            map.insert((*k).into(), Value::String(v.clone()));
        }
        Value::Object(map)
    }
}

impl From<ClientError> for PgError {
    fn from(e: ClientError) -> Self {
        let severity = match e.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        PgError {
            fields: vec![("severity", severity.into()), ("code", e.code.into_owned())],
            message: e.message.into_owned(),
        }
    }
}

/// Adds the CORS headers every `/sql` answer carries.
pub fn with_cors(mut resp: HttpResponse) -> HttpResponse {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
    resp
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_cors(resp)
}

/// An error answer: `status` with the error's JSON.
pub fn error_response(status: StatusCode, err: &PgError) -> HttpResponse {
    json_response(status, &err.to_json())
}

/// How rows are written.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowFormat {
    /// Rows as arrays (`Neon-Array-Mode: true`) instead of objects keyed by column name.
    pub array_mode: bool,
    /// Every value as Postgres's text (`Neon-Raw-Text-Output: true`).
    pub raw_text: bool,
}

/// One result as the driver reads it.
pub fn result_json(result: &QueryResult, format: RowFormat) -> Value {
    let fields: Vec<Value> = result.fields.iter().map(field_json).collect();
    let rows: Vec<Value> = result
        .rows
        .iter()
        .map(|row| {
            let values = row
                .iter()
                .zip(&result.fields)
                .map(|(v, f)| value_json(f.type_oid, v.as_deref(), format.raw_text));
            if format.array_mode {
                Value::Array(values.collect())
            } else {
                let names = result.fields.iter().map(|f| f.name.clone());
                Value::Object(names.zip(values).collect())
            }
        })
        .collect();
    json!({
        "fields": fields,
        "command": result.command,
        "rowCount": result.row_count,
        "rows": rows,
        "rowAsArray": format.array_mode,
    })
}

fn field_json(f: &Field) -> Value {
    json!({
        "name": f.name,
        "dataTypeID": f.type_oid,
        "tableID": f.table_oid,
        "columnID": f.column,
        "dataTypeSize": f.type_size,
        "dataTypeModifier": f.type_mod,
        "format": "text",
    })
}

/// One value: `null`, its text, or (outside raw-text mode) a typed JSON value.
pub fn value_json(type_oid: u32, text: Option<&str>, raw_text: bool) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    if raw_text {
        return Value::String(text.to_owned());
    }
    let typed = match type_oid {
        oid::BOOL => match text {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        oid::INT2 | oid::INT4 | oid::OID => text.parse::<i64>().ok().map(Value::from),
        oid::FLOAT4 | oid::FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        oid::JSON | oid::JSONB => serde_json::from_str(text).ok(),
        _ => None,
    };
    typed.unwrap_or_else(|| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_mode_keeps_every_value_as_postgres_text() {
        for (oid, text) in [
            (16, "t"),
            (23, "42"),
            (701, "1.5"),
            (114, "{\"a\":1}"),
            (17, "\\x00ff"),
        ] {
            assert_eq!(
                value_json(oid, Some(text), true),
                Value::String(text.into())
            );
        }
        assert_eq!(value_json(23, None, true), Value::Null);
    }

    #[test]
    fn typed_mode_encodes_each_basic_type() {
        let v = |oid, text| value_json(oid, Some(text), false);
        assert_eq!(v(16, "t"), json!(true));
        assert_eq!(v(16, "f"), json!(false));
        assert_eq!(v(21, "-7"), json!(-7));
        assert_eq!(v(23, "2147483647"), json!(2147483647));
        assert_eq!(v(26, "4294967295"), json!(4294967295u64));
        // int8 and numeric may not fit a JSON number exactly: text, as Neon sends them.
        assert_eq!(v(20, "9223372036854775807"), json!("9223372036854775807"));
        assert_eq!(v(1700, "1.10"), json!("1.10"));
        assert_eq!(v(701, "1.5"), json!(1.5));
        assert_eq!(v(700, "NaN"), json!("NaN"));
        assert_eq!(v(701, "Infinity"), json!("Infinity"));
        assert_eq!(v(114, "{\"a\": [1, null]}"), json!({"a": [1, null]}));
        assert_eq!(v(3802, "\"s\""), json!("s"));
        assert_eq!(v(25, "text"), json!("text"));
        assert_eq!(v(17, "\\xdead"), json!("\\xdead"));
        assert_eq!(
            v(1184, "2024-01-02 03:04:05+00"),
            json!("2024-01-02 03:04:05+00")
        );
        assert_eq!(v(1007, "{1,2,NULL}"), json!("{1,2,NULL}"));
        assert_eq!(value_json(16, None, false), Value::Null);
    }

    #[test]
    fn error_responses_keep_every_field_under_the_drivers_names() {
        let body = b"SERROR\0VERROR\0C23505\0Mduplicate key\0Dkey (id)=(1) exists\0Hfix it\0P7\0Wsomewhere\0spublic\0tt\0cid\0dint4\0nt_pkey\0Ffile.c\0L12\0Rfn\0\0";
        let e = PgError::from_error_body(body);
        assert_eq!(e.code(), "23505");
        let j = e.to_json();
        assert_eq!(j["message"], "duplicate key");
        assert_eq!(j["detail"], "key (id)=(1) exists");
        assert_eq!(j["hint"], "fix it");
        assert_eq!(j["position"], "7");
        assert_eq!(j["where"], "somewhere");
        assert_eq!(j["schema"], "public");
        assert_eq!(j["table"], "t");
        assert_eq!(j["column"], "id");
        assert_eq!(j["dataType"], "int4");
        assert_eq!(j["constraint"], "t_pkey");
        assert_eq!(j["severity"], "ERROR");
        assert_eq!(j["routine"], "fn");
    }

    #[test]
    fn pgfunnel_errors_carry_their_kinds_sqlstate_and_server_errors_their_own() {
        let e = PgError::of(ErrorKind::TooLarge, "too big");
        assert_eq!(e.code(), ErrorKind::TooLarge.sqlstate());
        let j = e.to_json();
        assert_eq!(j["severity"], "ERROR");
        assert_eq!(j["message"], "too big");
        let fatal: PgError = ClientError::fatal(ErrorKind::Protocol, "bad").into();
        assert_eq!(fatal.to_json()["severity"], "FATAL");
        let from_server = PgError::from_server("40001", "could not serialize");
        assert_eq!(from_server.code(), "40001");
        assert_eq!(from_server.to_json()["severity"], "ERROR");
    }
}
