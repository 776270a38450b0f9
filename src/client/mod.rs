//! Everything on the client side of a connection: the handshake, authentication, the
//! session state machine, parameter tracking and the relay hot loop.

pub mod access;
pub mod backend_key;
pub mod buffers;
pub mod canonical;
pub mod handshake;
pub mod lexer;
pub mod link_stats;
pub mod login;
pub mod params;
pub mod prepared;
pub mod registry;
pub mod relay;
pub mod replication;
pub mod rewrite;
pub mod server_wait;
pub mod session;
pub mod statement;
pub mod timeouts;
pub mod tracker;
pub mod validate;
pub mod words;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, info, warn, Instrument};

use crate::app::App;
use crate::error::ErrorKind;
use crate::net::Stream;
use crate::protocol::messages::Severity;
use handshake::{Handshake, HandshakeError, HandshakeFailure};
use registry::{ClientEntry, ClientIdentity, Registered};
use session::{send_error, Session};

/// Serves one accepted connection to completion. Never panics on client input; every
/// refusal is a Postgres error message followed by close. Registers the client (SHOW
/// CLIENTS) at once and returns its entry and the future to spawn as the client's task;
/// the caller attaches the spawned task to the entry ([`ClientEntry::attach`]) so that
/// KILL / KILL_CLIENT / shutdown can end it.
///
/// Memory: every idle client is one such task, so its future holds only what an idle
/// client needs. This is a plain fn (an async fn keeps its arguments for the client's
/// whole life) and the futures below are created where they are awaited (a future an
/// async block captures is stored twice); the login phase runs in a box that is freed
/// once the session starts.
pub fn handle(
    app: Arc<App>,
    stream: Stream,
    peer: String,
) -> (Arc<ClientEntry>, impl Future<Output = ()> + Send) {
    let id = app.next_client_id();
    let span = tracing::info_span!("client", id, peer = %peer);
    let local = match &stream {
        Stream::Tcp(s) => s.local_addr().ok(),
        _ => None,
    };
    let registered = app.clients.register(id, &peer, local);
    let entry = registered.entry.clone();
    let task_entry = entry.clone();
    // The span is entered only while logging in; afterwards the session names it as the
    // parent of its events, so the transaction loop does not enter and leave it at every
    // poll of the task.
    let task = async move {
        serve(app.clone(), stream, registered, &span).await;
        if task_entry.identity().is_some() && app.config().settings.log_disconnections {
            let reason = task_entry.close_reason().unwrap_or("client close request");
            info!(parent: &span, reason, "closing client");
        }
    };
    (entry, task)
}

/// Spawns an accepted connection's task on `app`'s tracker (see [`handle`]).
pub fn spawn(app: &Arc<App>, stream: Stream, peer: String) {
    let (entry, task) = handle(app.clone(), stream, peer);
    entry.attach(app.tasks.spawn(task).abort_handle());
}

/// Logs the client in and runs its session; the registry entry goes when this ends.
async fn serve(app: Arc<App>, stream: Stream, registered: Registered, span: &tracing::Span) {
    let count = app.client_count.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = ClientCountGuard(app.clone());
    // Boxed: TLS and startup state are large and needed only until the session starts.
    let logging_in = login(&app, stream, &registered, count).instrument(span.clone());
    let Some(session) = Box::pin(logging_in).await else {
        return;
    };
    session.run().await
}

/// Handshake and admission up to a [`Session`] ready to authenticate; `None` when the
/// client was refused (and told why), cancelled, or served as an admin console client.
/// `count` is the number of connected clients including this one (max_client_conn).
async fn login(
    app: &Arc<App>,
    stream: Stream,
    registered: &Registered,
    count: usize,
) -> Option<Session> {
    let login_timeout = app.config().settings.client_login_timeout;
    let hs = handshake::handshake(stream, app);
    let hs = if login_timeout.is_zero() {
        hs.await
    } else {
        match tokio::time::timeout(login_timeout, hs).await {
            Ok(r) => r,
            Err(_) => {
                warn!("client_login_timeout during startup");
                return None;
            }
        }
    };
    let (mut stream, params) = match hs {
        Ok((stream, Handshake::Startup(p))) => (stream, p),
        Ok((_, Handshake::Cancelled)) => return None,
        Err(failure) => {
            report_handshake_failure(failure).await;
            return None;
        }
    };
    let identity = identity_of(&params);
    let database = identity.database.clone();
    let user = identity.user.clone();
    registered.entry.identify(identity);
    // The console is exempt from max_client_conn, as in PgBouncer.
    if crate::control::is_console(&database) {
        let entry = registered.entry.clone();
        Box::pin(crate::admin::session::run(app.clone(), stream, user, entry)).await;
        return None;
    }
    if crate::shutdown::refuse_pooled_login(app, &mut stream).await {
        return None;
    }
    if count > app.config().settings.max_client_conn as usize {
        warn!(
            max_client_conn = app.config().settings.max_client_conn,
            "too many clients"
        );
        let code = ErrorKind::TooManyClients.sqlstate();
        let msg = crate::net::listener::TOO_MANY_CLIENTS;
        send_error(&mut stream, Severity::Fatal, code, msg, None).await;
        return None;
    }
    if app.control.is_disabled(&database) {
        let msg = format!("database does not allow connections: {database}");
        send_error(&mut stream, Severity::Fatal, "08P01", &msg, None).await;
        return None;
    }
    match Session::new(registered.entry.id, app.clone(), stream, params) {
        Ok(mut session) => {
            session.entry = Some(registered.entry.clone());
            Some(session)
        }
        Err((mut stream, msg)) => {
            send_error(&mut stream, Severity::Fatal, "28000", msg, None).await;
            None
        }
    }
}

/// Tells the client why the handshake failed, when it can still be told: protocol errors
/// as 08P01, a missing TLS as 28000 (as Postgres), nothing after a failed TLS handshake.
async fn report_handshake_failure(failure: HandshakeFailure) {
    let HandshakeFailure { stream, error } = failure;
    let code = match &error {
        HandshakeError::Startup(crate::protocol::startup::StartupError::Io(_))
        | HandshakeError::Tls(_) => {
            debug!(error = %error, "client handshake failed");
            return;
        }
        HandshakeError::SslRequired => "28000",
        _ => ErrorKind::Protocol.sqlstate(),
    };
    warn!(error = %error, "client handshake refused");
    if let Some(mut stream) = stream {
        send_error(&mut stream, Severity::Fatal, code, &error.to_string(), None).await;
    }
}

/// User, database (defaulting to the user, as Postgres) and application_name from the
/// startup parameters.
fn identity_of(params: &[(String, String)]) -> ClientIdentity {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let user = get("user");
    let database = match get("database") {
        d if d.is_empty() => user.clone(),
        d => d,
    };
    ClientIdentity {
        user,
        database,
        application_name: get("application_name"),
    }
}

struct ClientCountGuard(Arc<App>);

impl Drop for ClientCountGuard {
    fn drop(&mut self) {
        self.0.client_count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    /// Every idle client is one task holding this future: large login-phase state (TLS,
    /// SCRAM) is boxed so it is freed after login instead of being carried for the client's
    /// whole life.
    #[test]
    fn client_task_futures_stay_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let config = crate::config::Config::parse_str(
                "[databases]\n[pgbouncer]\n",
                std::path::Path::new("/tmp/x.ini"),
            )
            .expect("config");
            let tls = crate::net::TlsConfigs::load(&config.settings).expect("tls");
            let app = crate::app::App::new(config, Default::default(), tls, None);
            let (a, _a) = tokio::net::UnixStream::pair().expect("pair");
            let (b, _b) = tokio::net::UnixStream::pair().expect("pair");
            let session = super::session::Session::new(
                1,
                app.clone(),
                crate::net::Stream::Unix(b),
                vec![("user".into(), "u".into())],
            )
            .unwrap_or_else(|_| panic!("session"));
            let handle = super::handle(app, crate::net::Stream::Unix(a), "x".into());
            let run = session.run();
            let (handle, run) = (std::mem::size_of_val(&handle), std::mem::size_of_val(&run));
            assert!(run <= 4096, "run: {run}");
            // The task holds the session's future inline; login state, the peer string and
            // a second copy of any future must not add to it.
            assert!(handle <= run + 512, "handle: {handle}, run: {run}");
        });
    }
}
