//! Session mode: the client gets its server during login, before the login replies, so
//! the replies are that server's own (its parameter values after the client's startup
//! parameters, its pid in BackendKeyData) as they would be from Postgres directly.

use super::Session;
use crate::cancel::CancelHandle;
use crate::client::backend_key::SessionKey;
use crate::client::params::ClientParams;
use crate::pool::{Pool, PooledServer};
use crate::server::ServerError;

impl Session {
    /// Applies the client's startup parameters to its own server `held` and takes the
    /// values the server reports (`eucjp` -> `EUC_JP`, as Postgres shows them), then hands
    /// out a key with the server's pid. None when the server refused a parameter: the
    /// client got the server's error (as from Postgres at login) and the server went back.
    pub(super) async fn adopt_server(
        &mut self,
        pool: &Pool,
        params: &mut ClientParams,
        held: &mut Option<PooledServer>,
        cancel: &CancelHandle,
    ) -> Option<SessionKey> {
        let server = held.as_mut()?;
        if let Err(e) = apply_startup(params, server).await {
            if let Some(server) = held.take() {
                match e {
                    ServerError::Rejected(_) => pool.checkin(server),
                    _ => pool.discard(server),
                }
            }
            self.tell_server_error(&e).await;
            return None;
        }
        // With peering the key keeps PgBouncer's layout (the peer id in the pid bytes), so
        // the pid stays pgfunnel's.
        let pid = if self.ctx.cancel().peer_id() > 0 {
            cancel.pid
        } else {
            server.conn.key.pid
        };
        Some(self.ctx.session_keys().register(pid, cancel))
    }
}

/// Brings `server` in line with the client's parameters and records the server's values
/// as the ones the client is shown.
async fn apply_startup(
    params: &mut ClientParams,
    server: &mut PooledServer,
) -> Result<(), ServerError> {
    if let Some(sql) = params.sync_sql(&server.conn) {
        server.conn.run_internal(&sql).await?;
        params.mark_applied(&mut server.conn);
    }
    let names: Vec<String> = params.expected.keys().cloned().collect();
    for name in names {
        if let Some(value) = server.conn.params.get(&name) {
            params.expected.insert(name, value.clone());
        }
    }
    params.invalidate();
    server.conn.synced_fp = Some(params.fingerprint());
    Ok(())
}
