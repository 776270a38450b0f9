//! The running pgfunnel as the narrow contexts the client side sees
//! ([`crate::client::context`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::App;
use crate::auth::{Hba, Secret};
use crate::cancel::CancelRegistry;
use crate::client::backend_key::SessionKeys;
use crate::client::context::{AuthContext, ClientGuard, SessionContext};
use crate::client::timeouts::LinkTimeouts;
use crate::config::{Config, PoolMode};
use crate::error::ErrorKind;
use crate::net::tls::ClientSideTls;
use crate::pool::Pool;
use crate::shutdown::ShutdownMode;
use crate::users::Users;

impl AuthContext for App {
    fn config(&self) -> Arc<Config> {
        App::config(self)
    }

    fn users(&self) -> Arc<Users> {
        App::users(self)
    }

    fn scram_mock_key(&self) -> &[u8; 32] {
        &self.scram_mock_key
    }

    fn client_tls(&self) -> Arc<ClientSideTls> {
        self.tls.client()
    }

    fn hba(&self) -> Option<Arc<Hba>> {
        App::hba(self)
    }

    fn stored_secret(&self, user: &str) -> Option<Secret> {
        App::stored_secret(self, user)
    }

    fn has_auth_file(&self) -> bool {
        App::has_auth_file(self)
    }

    fn pool_as(&self, database: &str, server_user: &str) -> Option<Arc<Pool>> {
        App::pool_as(self, database, server_user)
    }

    fn remember_looked_up(&self, user: &str, secret: Option<Secret>) {
        App::remember_looked_up(self, user, secret)
    }

    fn database_disabled(&self, database: &str) -> bool {
        self.control.is_disabled(database)
    }
}

impl SessionContext for App {
    fn pool_for(&self, database: &str, user: &str) -> Option<Arc<Pool>> {
        App::pool_for(self, database, user)
    }

    fn pool_mode_for(&self, database: &str, user: &str) -> PoolMode {
        App::pool_mode_for(self, database, user)
    }

    fn admit_client(&self, database: &str, user: &str) -> Result<ClientGuard, &'static str> {
        App::admit_client(self, database, user).map(|admitted| Box::new(admitted) as ClientGuard)
    }

    fn link_timeouts(&self, user: &str) -> LinkTimeouts {
        App::link_timeouts(self, user)
    }

    fn cancel(&self) -> &Arc<CancelRegistry> {
        &self.cancel
    }

    fn session_keys(&self) -> &Arc<SessionKeys> {
        &self.session_keys
    }

    fn serve_cancel<'a>(
        &'a self,
        pid: i32,
        secret: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(crate::fleet::serve_cancel(self, pid, secret))
    }

    fn lends_no_servers(&self) -> bool {
        self.stopping
            .requested()
            .is_some_and(|m| m != ShutdownMode::WaitForClients)
    }

    fn shutdown_signal(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn client_error(&self, kind: ErrorKind) {
        self.metrics.client_error(kind);
    }
}
