//! Running a `/sql` request on a server from the pool TCP clients use: one query, or a batch
//! inside `START TRANSACTION` with the requested isolation, committed at the end and rolled
//! back at the first error. The server goes back to the pool only at ReadyForQuery outside
//! a transaction and with no session state changed; a request dropped mid-query (the
//! client went away) cancels the query and closes the server.

use std::sync::Arc;

use super::json::PgError;
use super::query::{self, QueryError, QueryResult};
use crate::cancel::{send_cancel, CancelTarget};
use crate::client::params::ClientParams;
use crate::error::ErrorKind;
use crate::pool::{Pool, PoolError, PooledServer};
use crate::server::ServerError;

/// One query of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// SQL text (one statement).
    pub sql: String,
    /// Parameters `$1...` as text (`None` = NULL).
    pub params: Vec<Option<String>>,
}

/// The transaction a batch runs in (`Neon-Batch-*` headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxOptions {
    /// `ISOLATION LEVEL ...` text, when asked for.
    pub isolation: Option<&'static str>,
    /// READ ONLY / READ WRITE.
    pub read_only: Option<bool>,
    /// [NOT] DEFERRABLE.
    pub deferrable: Option<bool>,
}

impl TxOptions {
    /// Maps the driver's isolation names (`ReadCommitted`, ...) to SQL.
    pub fn isolation_from(name: &str) -> Option<&'static str> {
        Some(match name {
            "Serializable" => "SERIALIZABLE",
            "RepeatableRead" => "REPEATABLE READ",
            "ReadCommitted" => "READ COMMITTED",
            "ReadUncommitted" => "READ UNCOMMITTED",
            _ => return None,
        })
    }

    /// The START TRANSACTION statement.
    pub fn start_sql(&self) -> String {
        let mut sql = String::from("START TRANSACTION");
        if let Some(level) = self.isolation {
            sql.push_str(" ISOLATION LEVEL ");
            sql.push_str(level);
        }
        match self.read_only {
            Some(true) => sql.push_str(" READ ONLY"),
            Some(false) => sql.push_str(" READ WRITE"),
            None => {}
        }
        match self.deferrable {
            Some(true) => sql.push_str(" DEFERRABLE"),
            Some(false) => sql.push_str(" NOT DEFERRABLE"),
            None => {}
        }
        sql
    }
}

/// Why a request produced no results.
#[derive(Debug)]
pub enum ExecError {
    /// Postgres or pgfunnel refused it (400 with the error).
    Refused(PgError),
    /// The results are over `edge_max_response_size` (507).
    TooLarge,
}

/// Commands after which a server's session state is no longer what the pool knows.
const SESSION_CHANGING: &[&str] = &[
    "SET",
    "RESET",
    "DISCARD",
    "LISTEN",
    "UNLISTEN",
    "PREPARE",
    "DEALLOCATE",
    "DECLARE",
    "LOAD",
];

/// A server on loan for one request. Dropped while `busy` (the request future was dropped
/// mid-query), it cancels the query and closes the server.
struct Loan {
    pool: Arc<Pool>,
    server: Option<PooledServer>,
    busy: bool,
}

impl Drop for Loan {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        if self.busy {
            let target = CancelTarget {
                addr: server.conn.cancel_addr.clone(),
                key: server.conn.key.clone(),
            };
            tokio::spawn(send_cancel(target));
        }
        self.pool.discard(server);
    }
}

/// Runs `queries` (in a transaction when `tx` is set) on a server of `pool` with the
/// session parameters `params`, within `budget` bytes of results.
pub async fn execute(
    pool: &Arc<Pool>,
    params: &[(String, String)],
    queries: &[Query],
    tx: Option<&TxOptions>,
    budget: usize,
) -> Result<Vec<QueryResult>, ExecError> {
    let server = pool.checkout().await.map_err(pool_error)?;
    let mut loan = Loan {
        pool: pool.clone(),
        server: Some(server),
        busy: true,
    };
    let welcome = pool.welcome().unwrap_or_default();
    let mut wanted = ClientParams::from_startup(&welcome, params);
    let Some(server) = loan.server.as_mut() else {
        return Err(ExecError::Refused(server_lost()));
    };
    sync_parameters(&mut wanted, server).await?;
    let mut results = Vec::with_capacity(queries.len());
    let mut status = b'I';
    let mut budget = budget;
    let mut keep = true;
    if let Some(tx) = tx {
        server
            .conn
            .run_internal(&tx.start_sql())
            .await
            .map_err(server_error)?;
    }
    let mut failure = run_queries(
        server,
        queries,
        &mut results,
        &mut budget,
        &mut status,
        &mut keep,
    )
    .await?;
    if tx.is_some() {
        end_transaction(server, &mut failure, &mut status).await?;
    }
    loan.busy = false;
    if status == b'I' && keep {
        if let Some(server) = loan.server.take() {
            pool.checkin(server);
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(results),
    }
}

/// Runs `queries` in order on `server`, pushing each result to `results`; the first
/// Postgres error or oversized result stops the batch and is returned as its failure.
async fn run_queries(
    server: &mut PooledServer,
    queries: &[Query],
    results: &mut Vec<QueryResult>,
    budget: &mut usize,
    status: &mut u8,
    keep: &mut bool,
) -> Result<Option<ExecError>, ExecError> {
    let mut failure = None;
    for q in queries {
        match query::run(&mut server.conn, &q.sql, &q.params, budget, status).await {
            Ok(r) => {
                *keep &= !SESSION_CHANGING.contains(&r.command.as_str());
                results.push(r);
            }
            Err(QueryError::Postgres(e)) => {
                failure = Some(ExecError::Refused(e));
                break;
            }
            Err(QueryError::TooLarge) => {
                failure = Some(ExecError::TooLarge);
                break;
            }
            Err(QueryError::Server(e)) => return Err(ExecError::Refused(server_failed(&e))),
        }
    }
    Ok(failure)
}

/// Ends the batch's transaction: `ROLLBACK` after a `failure`, else `COMMIT` (a refused
/// commit becomes the failure).
async fn end_transaction(
    server: &mut PooledServer,
    failure: &mut Option<ExecError>,
    status: &mut u8,
) -> Result<(), ExecError> {
    let end = if failure.is_some() {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    match server.conn.run_internal(end).await {
        Ok(s) => *status = s,
        Err(ServerError::Rejected(f)) if failure.is_none() => {
            *failure = Some(ExecError::Refused(PgError::from_server(&f.code, f.message)));
            *status = b'?';
        }
        Err(e) => return Err(ExecError::Refused(server_failed(&e))),
    }
    Ok(())
}

/// Brings the server's session parameters in line with the request's (the pool's defaults
/// plus the connection string's `application_name` and `options`).
async fn sync_parameters(
    wanted: &mut ClientParams,
    server: &mut PooledServer,
) -> Result<(), ExecError> {
    let fp = wanted.fingerprint();
    if server.conn.synced_fp == Some(fp) {
        return Ok(());
    }
    if let Some(sql) = wanted.sync_sql(&server.conn) {
        server.conn.run_internal(&sql).await.map_err(server_error)?;
        wanted.mark_applied(&mut server.conn);
        wanted.invalidate();
    }
    server.conn.synced_fp = Some(wanted.fingerprint());
    Ok(())
}

fn server_error(e: ServerError) -> ExecError {
    match e {
        ServerError::Rejected(f) => ExecError::Refused(PgError::from_server(&f.code, f.message)),
        other => ExecError::Refused(server_failed(&other)),
    }
}

fn server_failed(e: &ServerError) -> PgError {
    tracing::warn!(error = %e, "edge request: server connection failed");
    server_lost()
}

fn server_lost() -> PgError {
    PgError::of(
        ErrorKind::ServerUnavailable,
        "server connection failed during the request",
    )
}

fn pool_error(e: PoolError) -> ExecError {
    let err = match e {
        PoolError::Timeout => PgError::of(
            ErrorKind::PoolTimeout,
            "query_wait_timeout: no server connection became free in time",
        ),
        PoolError::Connect(ServerError::Rejected(f)) => PgError::from_server(&f.code, f.message),
        PoolError::Connect(other) => {
            tracing::warn!(error = %other, "edge request: server login failed");
            PgError::of(
                ErrorKind::ServerUnavailable,
                "server login failed: could not reach the database server",
            )
        }
        PoolError::Closed => PgError::of(ErrorKind::Shutdown, "pgfunnel is shutting down"),
    };
    ExecError::Refused(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_options_become_one_start_transaction() {
        let tx = TxOptions {
            isolation: TxOptions::isolation_from("RepeatableRead"),
            read_only: Some(true),
            deferrable: Some(false),
        };
        assert_eq!(
            tx.start_sql(),
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY NOT DEFERRABLE"
        );
        assert_eq!(TxOptions::default().start_sql(), "START TRANSACTION");
        assert_eq!(TxOptions::isolation_from("Chaos"), None);
        for name in ["Serializable", "ReadCommitted", "ReadUncommitted"] {
            assert!(TxOptions::isolation_from(name).is_some(), "{name}");
        }
    }
}
