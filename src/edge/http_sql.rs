//! `POST /sql` as the serverless driver's `neon()` sends it: the login in the
//! `Neon-Connection-String` header, `{"query", "params"}` or `{"queries": [...]}` in the
//! body (JSON whatever the content type), the row format in `Neon-Array-Mode` and
//! `Neon-Raw-Text-Output`, a batch's transaction in `Neon-Batch-Isolation-Level`,
//! `Neon-Batch-Read-Only` and `Neon-Batch-Deferrable`. Errors are 400 with the Postgres
//! error's fields, 413 past `edge_max_request_size`, 507 past `edge_max_response_size`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tracing::{debug, info};

use super::batch::{self, ExecError, Query, TxOptions};
use super::json::{self, PgError, RowFormat};
use super::query::QueryResult;
use super::{connstr, http_auth, HttpResponse, Peer};
use crate::app::App;
use crate::error::ErrorKind;

/// How long a client may take to send its request body, at most (a shorter
/// `client_login_timeout` wins).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);

/// The headers a browser may send to `/sql` (CORS preflight answer).
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Neon-Connection-String, \
    Neon-Raw-Text-Output, Neon-Array-Mode, Neon-Batch-Isolation-Level, Neon-Batch-Read-Only, \
    Neon-Batch-Deferrable, Neon-Pool-Opt-In";

/// A refused request: its status and error.
struct Refusal(StatusCode, PgError);

impl Refusal {
    fn bad(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Refusal(StatusCode::BAD_REQUEST, PgError::of(kind, message))
    }
}

/// `OPTIONS /sql`: the CORS preflight answer.
pub fn preflight() -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    json::with_cors(resp)
}

/// `POST /sql`.
pub async fn handle(app: Arc<App>, peer: Peer, req: Request<Incoming>) -> HttpResponse {
    let started = Instant::now();
    let (status, resp) = match serve(&app, peer, req).await {
        Ok(body) => (StatusCode::OK, body),
        Err(Refusal(status, err)) => {
            debug!(peer = %peer.addr, status = status.as_u16(), code = err.code(), "edge /sql request refused");
            (status, json::error_response(status, &err))
        }
    };
    app.metrics.edge.request(status.as_u16(), started.elapsed());
    resp
}

async fn serve(
    app: &Arc<App>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<HttpResponse, Refusal> {
    let (max_request, max_response, log_connections) = {
        let config = app.config();
        let s = &config.settings;
        let limits = (s.edge_max_request_size, s.edge_max_response_size);
        (limits.0 as usize, limits.1 as usize, s.log_connections)
    };
    let headers = req.headers().clone();
    let conn = header_text(&headers, "neon-connection-string").ok_or_else(|| {
        Refusal::bad(ErrorKind::Protocol, "missing Neon-Connection-String header")
    })?;
    let info = connstr::parse(conn).map_err(|m| Refusal::bad(ErrorKind::Protocol, m))?;
    let format = RowFormat {
        array_mode: header_flag(&headers, "neon-array-mode")?.unwrap_or(false),
        raw_text: header_flag(&headers, "neon-raw-text-output")?.unwrap_or(false),
    };
    let body = read_body(req, max_request, super::deadline(app, BODY_TIMEOUT)).await?;
    let (queries, batched) = parse_body(&body)?;
    drop(body);
    let tx = batched.then(|| tx_options(&headers)).transpose()?;
    let admitted = http_auth::admit(app, peer, &info.user, &info.database, &info.password)
        .await
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    let pool = app.pool_for(&info.database, &info.user).ok_or_else(|| {
        let msg = format!("no such database: {}", info.database);
        Refusal::bad(ErrorKind::UnknownDatabase, msg)
    })?;
    if pool.key.user == info.user {
        // SCRAM pass-through: the pool logs in with what this request just proved.
        let credential = &pool.target().credential;
        credential.learn(admitted.secret.as_ref(), admitted.client_key);
    }
    if log_connections {
        info!(peer = %peer.addr, user = %info.user, db = %info.database, queries = queries.len(), "edge /sql request");
    }
    let results = batch::execute(&pool, &info.params, &queries, tx.as_ref(), max_response)
        .await
        .map_err(|e| match e {
            ExecError::Refused(err) => Refusal(StatusCode::BAD_REQUEST, err),
            ExecError::TooLarge => too_large(max_response),
        })?;
    render(&results, tx.as_ref(), format, max_response)
}

/// The response body: every result under `results` for a batch, else the one result,
/// refused when larger than `max_response`.
fn render(
    results: &[QueryResult],
    tx: Option<&TxOptions>,
    format: RowFormat,
    max_response: usize,
) -> Result<HttpResponse, Refusal> {
    let value = match tx {
        Some(_) => {
            let all: Vec<Value> = results
                .iter()
                .map(|r| json::result_json(r, format))
                .collect();
            serde_json::json!({ "results": all })
        }
        None => results
            .first()
            .map(|r| json::result_json(r, format))
            .unwrap_or(Value::Null),
    };
    let text = value.to_string();
    if text.len() > max_response {
        return Err(too_large(max_response));
    }
    let mut resp = json::json_response(StatusCode::OK, &Value::Null);
    *resp.body_mut() = Full::new(Bytes::from(text));
    Ok(resp)
}

fn too_large(max: usize) -> Refusal {
    Refusal(
        StatusCode::INSUFFICIENT_STORAGE,
        PgError::of(
            ErrorKind::TooLarge,
            format!("response is larger than edge_max_response_size ({max} bytes)"),
        ),
    )
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A `true`/`false` header; anything else is refused.
fn header_flag(headers: &HeaderMap, name: &str) -> Result<Option<bool>, Refusal> {
    match header_text(headers, name).map(str::trim) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(Refusal::bad(
            ErrorKind::InvalidParameter,
            format!("header {name} must be true or false"),
        )),
    }
}

fn tx_options(headers: &HeaderMap) -> Result<TxOptions, Refusal> {
    let isolation = match header_text(headers, "neon-batch-isolation-level") {
        None => None,
        Some(name) => Some(TxOptions::isolation_from(name.trim()).ok_or_else(|| {
            Refusal::bad(
                ErrorKind::InvalidParameter,
                "Neon-Batch-Isolation-Level must be Serializable, RepeatableRead, ReadCommitted or ReadUncommitted",
            )
        })?),
    };
    Ok(TxOptions {
        isolation,
        read_only: header_flag(headers, "neon-batch-read-only")?,
        deferrable: header_flag(headers, "neon-batch-deferrable")?,
    })
}

/// Reads the body within `max` bytes and `timeout`.
async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, Refusal> {
    let over = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            PgError::of(
                ErrorKind::TooLarge,
                format!("request body is larger than edge_max_request_size ({max} bytes)"),
            ),
        )
    };
    let declared = header_text(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(over());
    }
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(over()),
        Ok(Err(_)) => Err(Refusal::bad(
            ErrorKind::Protocol,
            "the request body could not be read",
        )),
        Err(_) => Err(Refusal(
            StatusCode::REQUEST_TIMEOUT,
            PgError::of(
                ErrorKind::Protocol,
                "the request body did not arrive in time",
            ),
        )),
    }
}

/// The queries of a body, and whether it was a batch.
fn parse_body(body: &[u8]) -> Result<(Vec<Query>, bool), Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Refusal::bad(
            ErrorKind::Protocol,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    if let Some(list) = value.get("queries") {
        let list = list
            .as_array()
            .ok_or_else(|| Refusal::bad(ErrorKind::Protocol, "\"queries\" must be an array"))?;
        let queries = list.iter().map(parse_query).collect::<Result<_, _>>()?;
        return Ok((queries, true));
    }
    Ok((vec![parse_query(&value)?], false))
}

fn parse_query(value: &Value) -> Result<Query, Refusal> {
    let sql = value
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::bad(ErrorKind::Protocol, "each query needs a \"query\" string"))?;
    let params = match value.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(param_text).collect(),
        Some(_) => {
            return Err(Refusal::bad(
                ErrorKind::Protocol,
                "\"params\" must be an array",
            ))
        }
    };
    Ok(Query {
        sql: sql.to_owned(),
        params,
    })
}

/// A parameter as Postgres text: strings as they are, numbers and booleans spelled out,
/// arrays and objects as JSON.
fn param_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_give_one_query_or_a_batch_with_text_parameters() {
        let (q, batched) =
            parse_body(br#"{"query":"SELECT $1, $2, $3, $4","params":["a",1,null,{"k":[true]}]}"#)
                .unwrap_or_else(|_| panic!("parses"));
        assert!(!batched);
        assert_eq!(q[0].sql, "SELECT $1, $2, $3, $4");
        assert_eq!(
            q[0].params,
            vec![
                Some("a".into()),
                Some("1".into()),
                None,
                Some("{\"k\":[true]}".into())
            ]
        );
        let (q, batched) =
            parse_body(br#"{"queries":[{"query":"SELECT 1"},{"query":"SELECT 2","params":[]}]}"#)
                .unwrap_or_else(|_| panic!("parses"));
        assert!(batched);
        assert_eq!(q.len(), 2);
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"query":1}"#,
            br#"{"queries":{}}"#,
            br#"{"query":"x","params":"y"}"#,
        ] {
            assert!(parse_body(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
