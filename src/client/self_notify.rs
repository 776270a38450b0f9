//! Transaction mode: a client that LISTENs (through the pool's shared listener) and then
//! sends a lone `NOTIFY` on one of its own channels gets that notification before the
//! NOTIFY's ReadyForQuery, as Postgres delivers a session's own notifications. The
//! statement runs on the shared listening connection itself (see
//! `Subscription::notify`), and the notification shows the pid this client was given.
//! Anything else (a NOTIFY inside a transaction, `pg_notify()`, a channel the client does
//! not listen on) goes to a pooled server as before; while a listening client holds that
//! server, its notifications show the client's pid too (`pool::listen::OwnServers`).

use bytes::BytesMut;

use super::Session;
use crate::client::relay::Relay;
use crate::client::words::{identifier, keyword, skip_space, Ident};
use crate::error::{ClientError, ErrorKind};
use crate::pool::listen::Subscription;
use crate::pool::{Pool, PooledServer};
use crate::protocol::messages;

/// The channel of `NOTIFY channel [, 'payload'] [;]`, one statement whose payload is a
/// plain literal (no backslash, so its end does not depend on standard_conforming_strings).
pub(crate) fn recognise_notify(text: &[u8]) -> Option<String> {
    let rest = keyword(skip_space(text), b"notify")?;
    let (ident, mut rest) = identifier(rest)?;
    let channel = match ident {
        Ident::Bare(w) | Ident::Quoted(w) => String::from_utf8(w).ok()?,
    };
    rest = skip_space(rest);
    if let Some(after_comma) = rest.strip_prefix(b",") {
        let literal = skip_space(after_comma).strip_prefix(b"'")?;
        let mut i = 0;
        loop {
            match literal.get(i)? {
                b'\\' => return None,
                b'\'' if literal.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => break,
                _ => i += 1,
            }
        }
        rest = skip_space(&literal[i + 1..]);
    }
    if let Some(after) = rest.strip_prefix(b";") {
        rest = skip_space(after);
    }
    rest.is_empty().then_some(channel)
}

impl Session {
    /// Answers a lone NOTIFY on a channel this client listens on through the shared
    /// listener: the notifications queued for the client (its own included) are written
    /// before the NOTIFY's replies. Returns false when the request is something else.
    pub(in crate::client) async fn serve_notify(
        &mut self,
        pool: &Pool,
        relay: &mut Relay,
        listener: &mut Option<Subscription>,
        pid: i32,
    ) -> bool {
        let Some(sub) = listener.as_mut() else {
            return false;
        };
        let Some(query) = relay.lone_query() else {
            return false;
        };
        let text = query.strip_suffix(&[0]).unwrap_or(query);
        let Some(channel) = recognise_notify(text) else {
            return false;
        };
        let Ok(sql) = std::str::from_utf8(text) else {
            return false;
        };
        if !sub.listens_on(&channel) {
            return false;
        }
        let sql = sql.to_owned();
        relay.consume_lone_query();
        let reply = sub.notify(sql, pid, pool.settings.connect_timeout).await;
        let mut buf = BytesMut::new();
        while let Ok(note) = sub.rx.try_recv() {
            buf.extend_from_slice(&note);
        }
        match reply {
            Some(r) => buf.extend_from_slice(&r),
            None => {
                let msg = "could not NOTIFY: the shared listener connection was lost; \
                           the notification may or may not have been sent";
                self.ctx.client_error(ErrorKind::ServerGone);
                ClientError::error(ErrorKind::ServerGone, msg).put(&mut buf);
            }
        }
        messages::put_ready(&mut buf, b'I');
        let _ = self.stream.send(&buf).await;
        true
    }
}

impl Session {
    /// Before a link: notifications the server sends of its own show `pid`, the pid the
    /// client was given (a NOTIFY in a transaction, `pg_notify()`): through the relay for a
    /// pinned listener, through the shared listener for a client that listens there (then
    /// the server's pid is returned, to pass to `release_notify_pid` after the link).
    pub(in crate::client) fn claim_notify_pid(
        listener: &Option<Subscription>,
        relay: &mut Relay,
        server: &PooledServer,
        pid: i32,
    ) -> Option<i32> {
        let server_pid = server.conn.key.pid;
        if let Some(rw) = relay.rewriter.as_mut() {
            rw.set_notify_pids(server_pid, pid);
        }
        let sub = listener.as_ref().filter(|s| s.is_listening())?;
        sub.own_servers().claim(server_pid, pid);
        Some(server_pid)
    }

    /// After a link whose server was claimed (`lent`), before the server goes back: one
    /// round trip on the shared listening connection, so every notification the server
    /// committed meanwhile has been received (and shown with `pid`), then the server's own
    /// pid again for whoever uses it next. Nothing to do when `lent` is None.
    pub(in crate::client) async fn release_notify_pid(
        pool: &Pool,
        listener: &Option<Subscription>,
        lent: Option<i32>,
        pid: i32,
    ) {
        let (Some(server_pid), Some(sub)) = (lent, listener.as_ref()) else {
            return;
        };
        let wait = pool.settings.connect_timeout;
        // An empty query: no effect, only its ReadyForQuery, after pending notifications.
        let _ = sub.notify(String::new(), pid, wait).await;
        sub.own_servers().release(server_pid, pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_lone_notify_with_a_plain_payload() {
        let ch = |s: &str| recognise_notify(s.as_bytes());
        assert_eq!(ch("NOTIFY jobs").as_deref(), Some("jobs"));
        assert_eq!(ch(" notify Jobs , 'it''s' ; ").as_deref(), Some("jobs"));
        assert_eq!(ch("NOTIFY \"Mixed\",'x'").as_deref(), Some("Mixed"));
        for other in [
            "NOTIFY jobs, 'x'; DROP TABLE t",
            "NOTIFY jobs; BEGIN",
            "NOTIFY jobs, E'x'",
            "NOTIFY jobs, 'a\\'",
            "NOTIFY jobs, 'open",
            "NOTIFY jobs x",
            "SELECT pg_notify('jobs', 'x')",
        ] {
            assert_eq!(ch(other), None, "{other}");
        }
    }
}
