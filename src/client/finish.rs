//! How a session ends after a link (the decision is `super::release`'s): the client is
//! told why, and the server is closed, or, when the client left, reset and checked in if
//! it is clean and still runs as the pool's role.

use std::sync::Arc;

use tracing::{debug, warn};

use super::relay::{Relay, RelayEnd};
use super::release::{after_client_left, AfterClientLeft, LinkEnd, ResetPolicy, ServerFate};
use super::session::Session;
use super::timeouts::Expired;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::logging::close_reason::{note_close, CloseReason};
use crate::pool::{Pool, PooledServer};

impl Session {
    /// Logs why a link ended the session (and counts a refused client message).
    pub(super) fn log_link_end(&self, end: &RelayEnd, timed_out: Option<Expired>, relay: &Relay) {
        let span = &self.span;
        if let Some(t) = timed_out {
            warn!(parent: span, reason = ?t, "closing client and server");
            let reason = match t {
                Expired::IdleTransaction => CloseReason::IdleTransactionTimeout,
                Expired::Transaction => CloseReason::TransactionTimeout,
                Expired::Query => CloseReason::QueryTimeout,
            };
            note_close(&self.entry, reason);
            return;
        }
        match end {
            RelayEnd::ClientProtocol(e) => {
                warn!(parent: span, error = %e, "client protocol violation");
                relay.stats.refused();
            }
            RelayEnd::ServerGone(e) => {
                debug!(parent: span, error = %e, "server connection lost while linked")
            }
            RelayEnd::ServerProtocol(e) => {
                warn!(parent: span, error = %e, "server protocol violation")
            }
            _ => {}
        }
    }

    /// Ends the session after a link: tells the client `error` (if any) and releases the
    /// server as `fate` says.
    pub(super) async fn close(
        &mut self,
        pool: &Arc<Pool>,
        mode: PoolMode,
        server: PooledServer,
        link: &LinkEnd<'_>,
        error: Option<ClientError>,
        fate: ServerFate,
    ) {
        match fate {
            ServerFate::Discard(reason) => {
                debug!(parent: &self.span, server = server.conn.id, reason, "server closed");
                pool.discard(server);
                if let Some(e) = error {
                    self.tell(&e).await;
                }
            }
            ServerFate::Obsolete => {
                let reason = CloseReason::DatabaseConfigChanged;
                note_close(&self.entry, reason.clone());
                pool.discard_because(server, reason);
                if let Some(e) = error {
                    self.tell(&e).await;
                }
            }
            ServerFate::ClientLeft => {
                if let Some(e) = error {
                    self.tell(&e).await;
                }
                self.release_after_client(pool, mode, server, link).await;
            }
        }
    }

    /// The client is gone: return the server only if it is idle and the reset succeeds.
    async fn release_after_client(
        &mut self,
        pool: &Arc<Pool>,
        mode: PoolMode,
        mut server: PooledServer,
        link: &LinkEnd<'_>,
    ) {
        let config = self.ctx.config();
        let policy = ResetPolicy {
            mode,
            reset_query: config.settings.server_reset_query.clone(),
            reset_always: config.settings.server_reset_query_always,
        };
        drop(config);
        let reset = match after_client_left(link, &policy) {
            AfterClientLeft::Discard(reason) => {
                debug!(
                    parent: &self.span,
                    server = server.conn.id,
                    pin = link.tracker.pin.map(|p| p.label()),
                    reason,
                    "closing server"
                );
                return pool.discard(server);
            }
            AfterClientLeft::Reuse { reset } => reset,
        };
        if let Some(q) = reset {
            match server.conn.run_internal(&q).await {
                Ok(b'I') => {
                    server.conn.applied.clear();
                    server.conn.synced_fp = None;
                    server.conn.prepared.clear();
                }
                _ => return pool.discard(server),
            }
        }
        if !identity_matches_pool(pool, &server) {
            debug!(
                parent: &self.span,
                server = server.conn.id,
                "server runs as another role than the pool's user: closing it"
            );
            return pool.discard(server);
        }
        pool.checkin(server);
    }
}

/// True when the server reports the same `session_authorization` and `is_superuser` as
/// the pool's first server did (no identity change survived).
fn identity_matches_pool(pool: &Pool, server: &PooledServer) -> bool {
    let Some(welcome) = pool.welcome() else {
        return true;
    };
    ["session_authorization", "is_superuser"]
        .iter()
        .all(|k| welcome.get(*k) == server.conn.params.get(*k))
}
