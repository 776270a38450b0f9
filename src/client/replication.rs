//! Replication clients (`replication=true|on|yes|1` physical, `replication=database`
//! logical), as PgBouncer 1.23+ serves them: after the usual authentication the client
//! gets a server connection of its own, opened with the same `replication` value and the
//! client's startup parameters (`options`, `application_name`, ...). It is never pooled:
//! the bytes pass through untouched in both directions (COPY-both streams, replication
//! commands, no rewriting, no transaction tracking) and the server is closed when the
//! client leaves. It counts against `pool_size` and the shared limits, and SHOW
//! CLIENTS/SERVERS show its kind in the `replication` column.

use std::sync::Arc;

use bytes::BytesMut;
use tracing::{info, warn};

use super::registry::{ClientEntry, ClientState};
use super::session::send_client_error;
use crate::cancel::CancelHandle;
use crate::error::{ClientError, ErrorKind};
use crate::net::Stream;
use crate::pool::{Pool, PoolError};
use crate::protocol::messages;
use crate::server::ServerError;

/// The kind of replication connection a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationKind {
    /// `replication=true` (or on/yes/1): a physical walsender (pg_receivewal,
    /// pg_basebackup, streaming standbys).
    Physical,
    /// `replication=database`: a logical walsender bound to the database
    /// (pg_recvlogical, subscriptions).
    Logical,
}

impl ReplicationKind {
    /// PgBouncer's word in the SHOW CLIENTS/SERVERS `replication` column.
    pub fn label(self) -> &'static str {
        match self {
            ReplicationKind::Physical => "physical",
            ReplicationKind::Logical => "logical",
        }
    }

    /// The `replication` startup parameter sent to the server.
    fn startup_value(self) -> &'static str {
        match self {
            ReplicationKind::Physical => "true",
            ReplicationKind::Logical => "database",
        }
    }
}

/// Postgres's message for a `replication` value it does not know.
const INVALID_VALUE: &str = "invalid value for parameter \"replication\": \
                             valid values are false, 0, true, 1 and database";

/// Takes the `replication` parameter out of the startup parameters: `None` for a normal
/// client (absent, or a false value), an error message for a value Postgres would refuse.
pub fn take_kind(
    startup: &mut Vec<(String, String)>,
) -> Result<Option<ReplicationKind>, &'static str> {
    let Some(i) = startup.iter().position(|(k, _)| k == "replication") else {
        return Ok(None);
    };
    let value = startup.remove(i).1.to_ascii_lowercase();
    match value.as_str() {
        "database" => Ok(Some(ReplicationKind::Logical)),
        "true" | "on" | "yes" | "1" | "t" | "y" => Ok(Some(ReplicationKind::Physical)),
        "false" | "off" | "no" | "0" | "f" | "n" => Ok(None),
        _ => Err(INVALID_VALUE),
    }
}

/// What a replication client needs besides its stream.
pub struct ReplicationClient<'a> {
    /// Physical or logical.
    pub kind: ReplicationKind,
    /// The client's startup parameters (user and database removed, ignored ones dropped).
    pub startup: &'a [(String, String)],
    /// The client's cancel key (its BackendKeyData), pointed at the dedicated server.
    pub cancel: &'a CancelHandle,
    /// The registry entry (SHOW CLIENTS).
    pub entry: Option<&'a Arc<ClientEntry>>,
    /// The client's span.
    pub span: &'a tracing::Span,
}

/// Serves an authenticated replication client until it or its server leaves: opens the
/// dedicated server, sends the login replies, then passes bytes through.
pub async fn serve(stream: &mut Stream, pool: &Arc<Pool>, client: ReplicationClient<'_>) {
    let kind = client.kind;
    if let Some(e) = client.entry {
        e.set_replication(kind.label());
        e.set_state(ClientState::Waiting);
    }
    let mut extra = client.startup.to_vec();
    extra.push(("replication".to_owned(), kind.startup_value().to_owned()));
    let mut server = match Box::pin(pool.open_dedicated(&extra)).await {
        Ok(s) => s,
        Err(e) => return refuse(stream, &e, client.span).await,
    };
    if let Some(e) = client.entry {
        e.set_state(ClientState::Active);
    }
    info!(parent: client.span, kind = kind.label(), server = server.conn.id, "replication connection");
    let mut buf = BytesMut::new();
    let mut names: Vec<_> = server.conn.params.iter().collect();
    names.sort();
    for (k, v) in names {
        messages::put_parameter_status(&mut buf, k, v);
    }
    let cancel = client.cancel;
    messages::put_backend_key(&mut buf, cancel.pid, cancel.secret_i32());
    messages::put_ready(&mut buf, b'I');
    // Anything the server sent after its ReadyForQuery belongs to the client too.
    buf.extend_from_slice(&server.conn.buf.split());
    if stream.send(&buf).await.is_err() {
        return pool.discard(server);
    }
    cancel.entry.link_server(&server.conn).await;
    let relayed = tokio::io::copy_bidirectional(stream, &mut server.conn.stream).await;
    cancel.entry.unlink().await;
    match relayed {
        Ok((up, down)) => {
            info!(parent: client.span, sent = up, received = down, "replication connection closed")
        }
        Err(e) => info!(parent: client.span, error = %e, "replication connection ended"),
    }
    server.conn.close_reason =
        Some(crate::logging::close_reason::CloseReason::ReplicationClientClosed);
    pool.discard(server);
}

/// Tells the client why its replication connection could not be opened: the server's
/// own refusal (a walsender limit, pg_hba) as a login failure, or pgfunnel's reason.
async fn refuse(stream: &mut Stream, e: &PoolError, span: &tracing::Span) {
    let error = match e {
        PoolError::Connect(ServerError::Rejected(f)) => {
            ClientError::fatal(ErrorKind::ServerUnavailable, f.message.clone())
                .with_code(f.code.clone())
        }
        PoolError::Timeout => ClientError::fatal(
            ErrorKind::PoolTimeout,
            "query_wait_timeout: no server connection became free in time",
        ),
        PoolError::Closed => ClientError::fatal(ErrorKind::Shutdown, "server shutting down"),
        PoolError::Connect(other) => {
            warn!(parent: span, error = %other, "replication server login failed");
            ClientError::fatal(
                ErrorKind::ServerUnavailable,
                format!("server login failed: {other}"),
            )
        }
    };
    warn!(parent: span, code = %error.code, "replication connection refused: {:?}", error.message);
    send_client_error(stream, &error).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(value: &str) -> Result<Option<ReplicationKind>, &'static str> {
        let mut startup = vec![
            ("application_name".to_owned(), "x".to_owned()),
            ("replication".to_owned(), value.to_owned()),
        ];
        let k = take_kind(&mut startup);
        assert_eq!(startup.len(), 1, "the parameter is taken out");
        k
    }

    #[test]
    fn replication_values_map_to_kinds_as_postgres_reads_them() {
        for v in ["true", "on", "yes", "1", "TRUE"] {
            assert_eq!(kind(v), Ok(Some(ReplicationKind::Physical)), "{v}");
        }
        assert_eq!(kind("database"), Ok(Some(ReplicationKind::Logical)));
        for v in ["false", "off", "no", "0"] {
            assert_eq!(kind(v), Ok(None), "{v}");
        }
        assert_eq!(kind("maybe"), Err(INVALID_VALUE));
        assert_eq!(take_kind(&mut Vec::new()), Ok(None));
    }
}
