//! Sessions on a small context of their own: no listener, console or metrics.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::Session;
use crate::auth::{Hba, Secret};
use crate::cancel::CancelRegistry;
use crate::client::backend_key::SessionKeys;
use crate::client::context::{AuthContext, ClientGuard, SessionContext};
use crate::client::timeouts::LinkTimeouts;
use crate::config::{Config, PoolMode};
use crate::error::ErrorKind;
use crate::net::tls::{ClientSideTls, TlsConfigs};
use crate::net::Stream;
use crate::pool::Pool;
use crate::users::Users;

/// Trust authentication, no databases, no client limits: what a session needs, nothing
/// more.
struct Bare {
    config: Arc<Config>,
    /// The kinds of the errors reported to clients, in order.
    errors: std::sync::Mutex<Vec<ErrorKind>>,
    tls: TlsConfigs,
    cancel: Arc<CancelRegistry>,
    session_keys: Arc<SessionKeys>,
    shutdown: CancellationToken,
}

impl Bare {
    fn new() -> Arc<Bare> {
        let config = Config::parse_str(
            "[databases]\n[pgbouncer]\nauth_type = trust\n",
            std::path::Path::new("/tmp/x.ini"),
        )
        .expect("config");
        let tls = TlsConfigs::load(&config.settings).expect("tls");
        Arc::new(Bare {
            config: Arc::new(config),
            errors: Default::default(),
            tls,
            cancel: Arc::default(),
            session_keys: Arc::default(),
            shutdown: CancellationToken::new(),
        })
    }
}

impl AuthContext for Bare {
    fn config(&self) -> Arc<Config> {
        self.config.clone()
    }
    fn users(&self) -> Arc<Users> {
        Arc::default()
    }
    fn scram_mock_key(&self) -> &[u8; 32] {
        &[7; 32]
    }
    fn client_tls(&self) -> Arc<ClientSideTls> {
        self.tls.client()
    }
    fn hba(&self) -> Option<Arc<Hba>> {
        None
    }
    fn stored_secret(&self, _user: &str) -> Option<Secret> {
        None
    }
    fn has_auth_file(&self) -> bool {
        false
    }
    fn pool_as(&self, _database: &str, _server_user: &str) -> Option<Arc<Pool>> {
        None
    }
    fn remember_looked_up(&self, _user: &str, _secret: Option<Secret>) {}
    fn database_disabled(&self, _database: &str) -> bool {
        false
    }
}

impl SessionContext for Bare {
    fn pool_for(&self, _database: &str, _user: &str) -> Option<Arc<Pool>> {
        None
    }
    fn pool_mode_for(&self, _database: &str, _user: &str) -> PoolMode {
        PoolMode::Transaction
    }
    fn admit_client(&self, _database: &str, _user: &str) -> Result<ClientGuard, &'static str> {
        Ok(Box::new(()))
    }
    fn link_timeouts(&self, _user: &str) -> LinkTimeouts {
        LinkTimeouts::default()
    }
    fn cancel(&self) -> &Arc<CancelRegistry> {
        &self.cancel
    }
    fn session_keys(&self) -> &Arc<SessionKeys> {
        &self.session_keys
    }
    fn lends_no_servers(&self) -> bool {
        false
    }
    fn shutdown_signal(&self) -> &CancellationToken {
        &self.shutdown
    }
    fn client_error(&self, kind: ErrorKind) {
        self.errors.lock().expect("lock").push(kind);
    }
}

/// Runs a session for `startup` on `ctx` and returns everything it wrote to the client.
async fn session_output(ctx: Arc<Bare>, startup: &[(&str, &str)]) -> Vec<u8> {
    let (mut client, server) = tokio::net::UnixStream::pair().expect("pair");
    let startup = startup
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let session =
        Session::new(1, ctx, Stream::Unix(server), startup).unwrap_or_else(|_| panic!("session"));
    let run = tokio::spawn(session.run());
    let mut out = Vec::new();
    let read = client.read_to_end(&mut out);
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the session ends")
        .expect("read");
    run.await.expect("no panic");
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_session_on_a_bare_context_refuses_an_unknown_database_after_login() {
    runtime().block_on(async {
        let ctx = Bare::new();
        let out = session_output(ctx.clone(), &[("user", "u"), ("database", "nowhere")]).await;
        // AuthenticationOk (trust), then the FATAL error for the missing pool.
        assert!(out.starts_with(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]), "{out:?}");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("3D000"), "{text}");
        assert!(text.contains("no such database: nowhere"), "{text}");
        // Counted once, under its kind.
        let errors = ctx.errors.lock().expect("lock").clone();
        assert_eq!(errors, vec![ErrorKind::UnknownDatabase]);
    });
}

#[test]
fn a_missing_user_name_is_refused_before_any_exchange() {
    let (_a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
    b.set_nonblocking(true).expect("nonblocking");
    runtime().block_on(async {
        let stream = Stream::Unix(tokio::net::UnixStream::from_std(b).expect("tokio"));
        let refused = Session::new(1, Bare::new(), stream, vec![]);
        assert!(matches!(refused, Err((_, msg)) if msg.contains("no PostgreSQL user name")));
    });
}
