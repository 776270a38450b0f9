//! What the client side needs from the running pgfunnel, as two narrow traits the
//! application implements (`app::context`): [`AuthContext`] for authentication (users,
//! secrets, HBA rules, TLS end point) and [`SessionContext`] for a session (pool lookup,
//! client limits, cancel registry, settings). A session built on a small implementation
//! needs no listener, console or metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Hba, Secret};
use crate::cancel::CancelRegistry;
use crate::client::backend_key::SessionKeys;
use crate::client::timeouts::LinkTimeouts;
use crate::config::{Config, PoolMode};
use crate::error::ErrorKind;
use crate::net::tls::ClientSideTls;
use crate::pool::Pool;
use crate::users::Users;

/// Held while a client counts against the per-database and per-user client limits;
/// dropping it uncounts the client.
pub type ClientGuard = Box<dyn Send + Sync>;

/// What authenticating a client needs.
pub trait AuthContext: Send + Sync {
    /// The current config (settings, databases, users).
    fn config(&self) -> Arc<Config>;
    /// The loaded users (auth_file or URL).
    fn users(&self) -> Arc<Users>;
    /// The per-process key that makes unknown users' fake SCRAM salts stable.
    fn scram_mock_key(&self) -> &[u8; 32];
    /// TLS toward clients (its certificate's end point binds SCRAM to the channel).
    fn client_tls(&self) -> Arc<ClientSideTls>;
    /// The parsed `auth_hba_file`, when one is loaded.
    fn hba(&self) -> Option<Arc<Hba>>;
    /// The secret of `user` from the auth_file (or URL), if listed there.
    fn stored_secret(&self, user: &str) -> Option<Secret>;
    /// True when users come from an auth_file (trust then still requires the user).
    fn has_auth_file(&self) -> bool;
    /// The pool of `database` logging in as `server_user` (for `auth_query`).
    fn pool_as(&self, database: &str, server_user: &str) -> Option<Arc<Pool>>;
    /// Records an `auth_query` answer (`None` forgets the user).
    fn remember_looked_up(&self, user: &str, secret: Option<Secret>);
    /// Whether `database` is disabled (DISABLE): `auth_query` does not run there.
    fn database_disabled(&self, database: &str) -> bool;
}

/// What a client's session needs beyond authentication.
pub trait SessionContext: AuthContext {
    /// The pool serving `user` on `database`; `None` when the database is unknown.
    fn pool_for(&self, database: &str, user: &str) -> Option<Arc<Pool>>;
    /// The pool mode for a client of `database` logging in as `user`.
    fn pool_mode_for(&self, database: &str, user: &str) -> PoolMode;
    /// Counts a client against the client limits; `Err` names the limit that is full.
    fn admit_client(&self, database: &str, user: &str) -> Result<ClientGuard, &'static str>;
    /// The timeouts that apply to a client logged in as `user`.
    fn link_timeouts(&self, user: &str) -> LinkTimeouts;
    /// Cancel keys of connected clients.
    fn cancel(&self) -> &Arc<CancelRegistry>;
    /// Session-mode clients' keys that carry their server's real pid.
    fn session_keys(&self) -> &Arc<SessionKeys>;
    /// Serves a CancelRequest: a key of this instance cancels here (pgfunnel's own keys,
    /// then session-mode keys with a real pid); the application may forward others.
    fn serve_cancel<'a>(
        &'a self,
        pid: i32,
        secret: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(cancel_here(self.cancel(), self.session_keys(), pid, secret))
    }
    /// Whether a shutdown under way stops lending servers (WAIT_FOR_SERVERS or immediate;
    /// WAIT_FOR_CLIENTS keeps serving connected clients).
    fn lends_no_servers(&self) -> bool;
    /// Fires when pgfunnel starts shutting down.
    fn shutdown_signal(&self) -> &CancellationToken;
    /// Counts an error reported to a client (a metric labelled by its kind).
    fn client_error(&self, _kind: ErrorKind) {}
}

/// Cancels with a key this instance issued: pgfunnel's own keys first, then session-mode
/// keys that carry their server's real pid. Unknown or idle keys do nothing.
pub async fn cancel_here(
    registry: &Arc<CancelRegistry>,
    keys: &SessionKeys,
    pid: i32,
    secret: &[u8],
) {
    if !registry.cancel(pid, secret).await && !keys.cancel(registry, pid, secret).await {
        tracing::debug!(pid, "cancel request for unknown or idle key ignored");
    }
}
