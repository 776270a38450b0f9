//! The console's wire loop after the startup packet: login, fake server parameters, then
//! simple Query and extended Parse/Bind/Describe/Execute/Sync (so drivers that always
//! prepare, like tokio-postgres, work; PgBouncer's console refuses them, #718).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncReadExt;
use tracing::debug;

use super::auth::{self, Access};
use super::command;
use super::{execute, AdminError, Reply};
use crate::app::App;
use crate::client::registry::{ClientEntry, ClientState};
use crate::error::{ClientError, ErrorKind};
use crate::net::Stream;
use crate::protocol::messages::{self, put_cstr, put_message, take_cstr, Severity};

/// Largest message the console accepts from a client.
const MAX_MESSAGE: usize = 1 << 20;

/// Parameters the console reports at login (as PgBouncer's `admin.c` fakes them).
const WELCOME: [(&str, &str); 7] = [
    ("server_version", "1.25.2/bouncer"),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "GMT"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
];

#[derive(Debug, Default)]
struct Portal {
    query: String,
    formats: Vec<i16>,
    described: Option<Reply>,
}

/// Extended-protocol state of one console connection.
#[derive(Debug, Default)]
struct Extended {
    statements: HashMap<String, String>,
    portals: HashMap<String, Portal>,
    /// After an error, messages are ignored until Sync.
    failed: bool,
}

/// Serves a console client from authentication to disconnect.
pub async fn run(app: Arc<App>, mut stream: Stream, user: String, entry: Arc<ClientEntry>) {
    let access = match auth::login(&app, &mut stream, &user).await {
        Ok(a) => a,
        Err(e) => {
            send_fatal(&mut stream, ClientError::fatal(e.kind(), e.to_string())).await;
            return;
        }
    };
    let _admission = match admit(&app, &user, access) {
        Ok(admission) => admission,
        Err(limit) => {
            tracing::warn!(user, limit, "console client limit reached");
            let msg = format!("client connections exceeded ({limit})");
            send_fatal(
                &mut stream,
                ClientError::fatal(ErrorKind::TooManyClients, msg),
            )
            .await;
            return;
        }
    };
    app.control.console.logged_in();
    entry.set_state(ClientState::Active);
    if app.config().settings.log_connections {
        tracing::info!(user, ?access, "console login");
    }
    if stream.send(&welcome()).await.is_err() {
        return;
    }
    let mut conn = Console {
        app,
        access,
        ext: Extended::default(),
    };
    conn.serve(&mut stream).await;
}

/// What follows AuthenticationOk: the faked server parameters, a zero backend key and
/// ReadyForQuery.
fn welcome() -> BytesMut {
    let mut out = BytesMut::new();
    for (k, v) in WELCOME {
        messages::put_parameter_status(&mut out, k, v);
    }
    messages::put_backend_key(&mut out, 0, 0);
    messages::put_ready(&mut out, b'I');
    out
}

/// The error for an extended-protocol message that cannot be read.
fn malformed() -> AdminError {
    AdminError::Parse(command::ParseError::BadArgument("malformed message"))
}

/// Sends a FATAL error (the connection closes after it); a failed write changes nothing.
async fn send_fatal(stream: &mut Stream, error: ClientError) {
    let _ = stream.send(&error.to_message()).await;
}

/// Counts a console client against the global `max_db_client_connections` (under the name
/// `pgbouncer`, whichever alias it used) and its user's `max_user_client_connections`, as
/// PgBouncer's admin database; admin_users are exempt (and not counted). `max_client_conn`
/// does not apply to the console. Returns the limit that is full.
fn admit(
    app: &Arc<App>,
    user: &str,
    access: Access,
) -> Result<Option<crate::app::ClientAdmission>, &'static str> {
    if access == Access::Admin {
        return Ok(None);
    }
    app.admit_client("pgbouncer", user).map(Some)
}

/// Reads one whole message; `Ok(None)` on EOF or Terminate.
async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<(u8, BytesMut)>, &'static str> {
    loop {
        if buf.len() >= 5 {
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            if !(4..=MAX_MESSAGE as i32).contains(&len) {
                return Err("invalid message length");
            }
            let total = len as usize + 1;
            if buf.len() >= total {
                let tag = buf[0];
                let mut msg = buf.split_to(total);
                msg.advance(5);
                return Ok((tag != b'X').then_some((tag, msg)));
            }
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

struct Console {
    app: Arc<App>,
    access: Access,
    ext: Extended,
}

impl Console {
    /// Reads and answers messages until the client leaves or breaks the protocol, or a
    /// write fails.
    async fn serve(&mut self, stream: &mut Stream) {
        let mut inbuf = BytesMut::with_capacity(1024);
        loop {
            let (tag, body) = match read_message(stream, &mut inbuf).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(msg) => {
                    send_fatal(stream, ClientError::fatal(ErrorKind::Protocol, msg)).await;
                    return;
                }
            };
            let mut out = BytesMut::new();
            let keep = self.handle(tag, &body, &mut out).await;
            if !out.is_empty() && stream.send(&out).await.is_err() {
                return;
            }
            if !keep {
                return;
            }
        }
    }

    /// Handles one message; false when the connection must close.
    async fn handle(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) -> bool {
        if self.ext.failed && !matches!(tag, b'S' | b'Q') {
            return true;
        }
        match tag {
            b'Q' => {
                let mut rest = body;
                let query = cstring(&mut rest).unwrap_or_default();
                debug!(query, "console query");
                match self.run(&query).await {
                    Ok(reply) => put_reply(out, &reply, &[], true),
                    Err(e) => put_admin_error(out, &e),
                }
                messages::put_ready(out, b'I');
                self.ext.failed = false;
            }
            b'S' => {
                self.ext.failed = false;
                messages::put_ready(out, b'I');
            }
            b'H' => {}
            b'P' | b'B' | b'D' | b'E' | b'C' => {
                if let Err(e) = self.extended(tag, body, out).await {
                    put_admin_error(out, &e);
                    self.ext.failed = true;
                }
            }
            other => {
                let msg = format!(
                    "unsupported packet type for admin console: {}",
                    other as char
                );
                ClientError::fatal(ErrorKind::Protocol, msg).put(out);
                return false;
            }
        }
        true
    }

    async fn run(&self, query: &str) -> Result<Reply, AdminError> {
        self.app.control.console.command();
        let cmd = command::parse(query)?;
        execute(&self.app, cmd, self.access).await
    }

    async fn extended(
        &mut self,
        tag: u8,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), AdminError> {
        let mut rest = body;
        match tag {
            b'P' => {
                let name = cstring(&mut rest).ok_or_else(malformed)?;
                let query = cstring(&mut rest).ok_or_else(malformed)?;
                command::parse(&query)?;
                self.ext.statements.insert(name, query);
                put_message(out, b'1', |_| {});
            }
            b'B' => self.bind(rest, out)?,
            b'D' => {
                let kind = rest.first().copied().ok_or_else(malformed)?;
                rest = &rest[1..];
                let name = cstring(&mut rest).ok_or_else(malformed)?;
                self.describe(kind, &name, out).await?;
            }
            b'E' => {
                let name = cstring(&mut rest).ok_or_else(malformed)?;
                let portal = self.ext.portals.get_mut(&name).ok_or_else(malformed)?;
                let formats = portal.formats.clone();
                let reply = match portal.described.take() {
                    Some(r) => r,
                    None => {
                        let q = portal.query.clone();
                        self.run(&q).await?
                    }
                };
                put_reply(out, &reply, &formats, false);
            }
            _ => {
                let kind = rest.first().copied().ok_or_else(malformed)?;
                rest = &rest[1..];
                let name = cstring(&mut rest).ok_or_else(malformed)?;
                match kind {
                    b'S' => self.ext.statements.remove(&name),
                    _ => self.ext.portals.remove(&name).map(|p| p.query),
                };
                put_message(out, b'3', |_| {});
            }
        }
        Ok(())
    }

    /// Bind: a portal for a parsed statement, with the result formats asked for.
    fn bind(&mut self, mut rest: &[u8], out: &mut BytesMut) -> Result<(), AdminError> {
        let portal = cstring(&mut rest).ok_or_else(malformed)?;
        let stmt = cstring(&mut rest).ok_or_else(malformed)?;
        let formats = parse_bind_formats(rest).ok_or_else(malformed)?;
        let query = self
            .ext
            .statements
            .get(&stmt)
            .cloned()
            .ok_or_else(malformed)?;
        self.ext.portals.insert(
            portal,
            Portal {
                query,
                formats,
                described: None,
            },
        );
        put_message(out, b'2', |_| {});
        Ok(())
    }

    /// Describe: read-only commands run now (their rows are kept for Execute of a portal);
    /// commands with effects are only described as NoData.
    async fn describe(
        &mut self,
        kind: u8,
        name: &str,
        out: &mut BytesMut,
    ) -> Result<(), AdminError> {
        let (query, formats) = if kind == b'S' {
            let q = self
                .ext
                .statements
                .get(name)
                .cloned()
                .ok_or_else(malformed)?;
            put_message(out, b't', |b| b.put_i16(0));
            (q, Vec::new())
        } else {
            let p = self.ext.portals.get(name).ok_or_else(malformed)?;
            (p.query.clone(), p.formats.clone())
        };
        let cmd = command::parse(&query)?;
        if !cmd.is_read_only() {
            put_message(out, b'n', |_| {});
            return Ok(());
        }
        let reply = execute(&self.app, cmd, self.access).await?;
        match &reply {
            Reply::Rows(rs) => rs.put_row_description(out, &formats),
            _ => put_message(out, b'n', |_| {}),
        }
        if kind != b'S' {
            if let Some(p) = self.ext.portals.get_mut(name) {
                p.described = Some(reply);
            }
        }
        Ok(())
    }
}

#[path = "session_wire.rs"]
mod wire;
use wire::{cstring, parse_bind_formats, put_admin_error, put_reply};

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
