//! Client admission: the per-database and per-user client limits ([`ClientAdmission`]), and
//! the flow of an accepted connection up to its session: handshake, console routing,
//! max_client_conn, disabled databases ([`handle`], [`spawn`]).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dashmap::DashMap;
use tracing::{warn, Instrument};

use super::App;
use crate::client::handshake::{self, Handshake};
use crate::client::registry::{ClientEntry, Registered};
use crate::client::session::{send_client_error, within, Session};
use crate::error::{ClientError, ErrorKind};
use crate::net::Stream;

impl App {
    /// Counts a client against max_db_client_connections and max_user_client_connections.
    /// Returns the name of the limit that is full, or a guard that uncounts on drop.
    pub fn admit_client(
        &self,
        database: &str,
        user: &str,
    ) -> Result<ClientAdmission, &'static str> {
        let config = self.config();
        let db_max = config
            .database_cow(database)
            .map(|e| config.effective_max_db_client_connections(&e))
            .unwrap_or(config.settings.max_db_client_connections);
        let user_max = config.effective_max_user_client_connections(config.user(user));
        let counts = &self.client_counts;
        let mut admitted = ClientAdmission {
            counts: counts.clone(),
            database: None,
            user: None,
        };
        admitted.database = Some(
            count_in(&counts.databases, database, db_max as usize)
                .ok_or("max_db_client_connections")?,
        );
        admitted.user = Some(
            count_in(&counts.users, user, user_max as usize)
                .ok_or("max_user_client_connections")?,
        );
        Ok(admitted)
    }
}

/// Connected clients per database and per user (the client limits). Names are shared
/// with the clients counted, so a client's admission holds no strings of its own.
#[derive(Debug, Default)]
pub struct ClientCounts {
    databases: DashMap<Arc<str>, usize>,
    users: DashMap<Arc<str>, usize>,
}

/// Counts one more client under `name` unless `max` (0: no limit) is reached; the shared
/// name when counted.
fn count_in(map: &DashMap<Arc<str>, usize>, name: &str, max: usize) -> Option<Arc<str>> {
    let mut count = match map.get_mut(name) {
        Some(count) => count,
        None => map.entry(Arc::from(name)).or_insert(0),
    };
    if max > 0 && *count >= max {
        return None;
    }
    *count += 1;
    Some(count.key().clone())
}

/// A client counted against per-database and per-user client limits.
#[derive(Debug)]
pub struct ClientAdmission {
    counts: Arc<ClientCounts>,
    database: Option<Arc<str>>,
    user: Option<Arc<str>>,
}

impl Drop for ClientAdmission {
    fn drop(&mut self) {
        let counted = [
            (&self.counts.databases, &self.database),
            (&self.counts.users, &self.user),
        ];
        for (map, name) in counted {
            if let Some(mut c) = name.as_deref().and_then(|n| map.get_mut(n)) {
                *c = c.saturating_sub(1);
            }
        }
    }
}

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
    // Pooled clients that reach the Unix socket (still open for the console) after a
    // shutdown request are refused; TCP ones were accepted before their listener closed.
    let late = matches!(stream, Stream::Unix(_)) && app.stopping.requested().is_some();
    let registered = app.clients.register(id, &peer, local);
    if stream.is_edge() {
        registered.entry.set_transport("websocket");
    }
    let entry = registered.entry.clone();
    let task_entry = entry.clone();
    // The span is entered only while logging in; afterwards the session names it as the
    // parent of its events, so the transaction loop does not enter and leave it at every
    // poll of the task.
    let task = async move {
        // Logs the close when the task ends, also when it is aborted (KILL, shutdown).
        let log = crate::logging::close_reason::ClientCloseLog::new(app, task_entry, span);
        serve(log.app.clone(), stream, registered, late, &log.span).await;
    };
    (entry, task)
}

/// Spawns an accepted connection's task on `app`'s tracker (see [`handle`]).
pub fn spawn(app: &Arc<App>, stream: Stream, peer: String) {
    let (entry, task) = handle(app.clone(), stream, peer);
    entry.attach(app.tasks.spawn(task).abort_handle());
}

/// Logs the client in and runs its session; the registry entry goes when this ends.
async fn serve(
    app: Arc<App>,
    stream: Stream,
    registered: Registered,
    late: bool,
    span: &tracing::Span,
) {
    let count = app.client_count.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = ClientCountGuard(app.clone());
    // Boxed: TLS and startup state are large and needed only until the session starts.
    let logging_in = login(&app, stream, &registered, (count, late)).instrument(span.clone());
    let Some(session) = Box::pin(logging_in).await else {
        return;
    };
    session.run().await
}

/// Handshake and admission up to a [`Session`] ready to authenticate; `None` when the
/// client was refused (and told why), cancelled, or served as an admin console client.
/// `count` is the number of connected clients including this one (max_client_conn); `late`
/// marks a client accepted after a shutdown request.
async fn login(
    app: &Arc<App>,
    stream: Stream,
    registered: &Registered,
    (count, late): (usize, bool),
) -> Option<Session> {
    let login_timeout = app.config().settings.client_login_timeout;
    let hs = handshake::handshake(stream, &**app);
    let Some(hs) = within(login_timeout, hs).await else {
        warn!("client_login_timeout during startup");
        return None;
    };
    let (mut stream, params) = match hs {
        Ok((stream, Handshake::Startup(p))) => (stream, p),
        Ok((_, Handshake::Cancelled)) => return None,
        Err(failure) => {
            if let Some(kind) = crate::client::report_handshake_failure(failure).await {
                app.metrics.client_error(kind);
            }
            return None;
        }
    };
    let settings = &app.config().settings;
    let params = crate::client::app_name::with_client_host(params, settings, &registered.entry);
    let identity = crate::client::identity_of(&params);
    let database = identity.database.clone();
    let user = identity.user.clone();
    registered.entry.identify(identity);
    // The console is exempt from max_client_conn, as in PgBouncer.
    if crate::control::is_console(&database) {
        let entry = registered.entry.clone();
        Box::pin(crate::admin::session::run(app.clone(), stream, user, entry)).await;
        return None;
    }
    if crate::shutdown::refuse_pooled_login(app, &mut stream, late).await {
        return None;
    }
    if let Some(error) = refusal(app, count, &database) {
        return refuse(app, &mut stream, error).await;
    }
    match Session::new(registered.entry.id, app.clone(), stream, params) {
        Ok(mut session) => {
            session.entry = Some(registered.entry.clone());
            Some(session)
        }
        Err((mut stream, msg)) => {
            let error = ClientError::fatal(ErrorKind::NotAuthorized, msg);
            refuse(app, &mut stream, error).await
        }
    }
}

/// Why a client is refused before its session, if it is: over `max_client_conn` (`count`
/// connected clients including this one), or its database is disabled.
fn refusal(app: &App, count: usize, database: &str) -> Option<ClientError> {
    if count > app.config().settings.max_client_conn as usize {
        warn!(
            max_client_conn = app.config().settings.max_client_conn,
            "too many clients"
        );
        let msg = crate::net::listener::TOO_MANY_CLIENTS;
        return Some(ClientError::fatal(ErrorKind::TooManyClients, msg));
    }
    if app.control.is_disabled(database) {
        let msg = format!("database does not allow connections: {database}");
        return Some(ClientError::fatal(ErrorKind::Disabled, msg));
    }
    None
}

/// Tells a client refused before its session why (counted by kind); always `None`.
async fn refuse(app: &App, stream: &mut Stream, error: ClientError) -> Option<Session> {
    app.metrics.client_error(error.kind);
    send_client_error(stream, &error).await;
    None
}

struct ClientCountGuard(Arc<App>);

impl Drop for ClientCountGuard {
    fn drop(&mut self) {
        self.0.client_count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    fn app(settings: &str) -> std::sync::Arc<super::App> {
        let ini = format!("[databases]\n[pgbouncer]\n{settings}");
        let config = crate::config::Config::parse_str(&ini, std::path::Path::new("/tmp/x.ini"))
            .expect("config");
        let tls = crate::net::TlsConfigs::load(&config.settings).expect("tls");
        super::App::new(config, Default::default(), tls, None)
    }

    #[test]
    fn client_limits_count_per_database_and_user_and_free_on_drop() {
        let app = app("max_db_client_connections = 2\nmax_user_client_connections = 1\n");
        let a = app.admit_client("db", "alice").expect("first client");
        let full = app.admit_client("db", "alice").map(|_| ());
        assert_eq!(full, Err("max_user_client_connections"));
        let b = app.admit_client("db", "bob").expect("another user");
        let full = app.admit_client("db", "carol").map(|_| ());
        assert_eq!(full, Err("max_db_client_connections"));
        let other = app
            .admit_client("other", "carol")
            .expect("another database");
        drop(a);
        // The refusals above counted nothing: one place each came free.
        let again = app
            .admit_client("db", "alice")
            .expect("alice's place is free again");
        drop((b, other, again));
        let c = app
            .admit_client("db", "carol")
            .expect("carol is under both limits");
        drop(c);
    }

    /// Every idle client is one task holding this future while it is parked: the login
    /// (TLS, SCRAM, startup) runs in a box freed before the first query and each link
    /// (checkout, relay run, release) in a box freed when the link ends, so the task holds
    /// the session, its relay state (the largest part) and the bare wait for the next
    /// request. The bounds are for debug builds, where futures are largest (release: see
    /// README, idle memory); before the link was boxed this future was 4.5 KiB there.
    #[test]
    fn parked_client_task_future_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let app = app("");
            let (a, _a) = tokio::net::UnixStream::pair().expect("pair");
            let (b, _b) = tokio::net::UnixStream::pair().expect("pair");
            let session = crate::client::session::Session::new(
                1,
                app.clone(),
                crate::net::Stream::Unix(b),
                vec![("user".into(), "u".into())],
            )
            .unwrap_or_else(|_| panic!("session"));
            let handle = super::handle(app, crate::net::Stream::Unix(a), "x".into());
            let run = session.run();
            let (handle, run) = (std::mem::size_of_val(&handle), std::mem::size_of_val(&run));
            let relay = std::mem::size_of::<crate::client::relay::Relay>();
            assert!(run <= 2560, "run: {run}");
            assert!(
                run <= relay + 1408,
                "run: {run}, of it relay state: {relay}"
            );
            // The task holds the session's future inline; login state, the peer string and
            // a second copy of any future must not add to it.
            assert!(handle <= run + 320, "handle: {handle}, run: {run}");
        });
    }
}
