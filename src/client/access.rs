//! Who may log in and how: `auth_type` (or the matching `auth_hba_file` rule) picks the
//! method; the secret comes from the auth_file or, for users not in it, from `auth_query`
//! run as `auth_user` (any row: the user exists; a NULL secret matches no password);
//! certificate and peer checks happen here, password exchanges in `login`. Unknown users
//! and wrong passwords are refused alike; a lookup that cannot run is a config error.

use tokio::sync::Semaphore;
use tracing::{error, warn};

use super::context::AuthContext;
use super::login::{self, Exchange, LoginError, LoginOutcome};
use crate::auth::{self, ClientAuthMethod, HbaMatch, HbaMethod, HbaRequest, ScramServer, Secret};
use crate::config::AuthType;
use crate::error::ErrorKind;
use crate::net::tls_verify::subject_common_name;
use crate::net::Stream;
use crate::server::auth_query;

/// A client that may go on, with the secret it was checked against.
#[derive(Debug)]
pub struct Admitted {
    /// The user's stored secret (`None` for trust without one, cert, peer).
    pub secret: Option<Secret>,
    /// What the password exchange produced (the SCRAM ClientKey for pass-through).
    pub outcome: LoginOutcome,
}

/// Why a client was refused; each maps to Postgres's message and SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// Wrong password or unknown user (28P01).
    #[error("password authentication failed for user \"{0}\"")]
    Password(String),
    /// No certificate, or its CN is not the user name (28000).
    #[error("certificate authentication failed for user \"{0}\"")]
    Certificate(String),
    /// Peer credentials do not match the user name (28000).
    #[error("Peer authentication failed for user \"{0}\"")]
    Peer(String),
    /// The HBA file rejects this connection (28000).
    #[error("no pg_hba.conf entry for user \"{user}\", database \"{database}\"")]
    Rejected {
        /// User name asked for.
        user: String,
        /// Database asked for.
        database: String,
    },
    /// The client broke the authentication exchange (08P01).
    #[error("invalid authentication exchange")]
    Protocol(#[source] LoginError),
    /// The user lookup is misconfigured or failed (08P01, PgBouncer's code for the errors
    /// it raises itself); the details are in the log.
    #[error("{0}")]
    Config(String),
    /// A cleartext password on an unencrypted WebSocket from another host (28000).
    #[error("cleartext passwords are refused on an unencrypted WebSocket from another host: use wss:// (client_tls_*) or set edge_allow_plaintext = 1")]
    Plaintext,
}

impl Denied {
    /// The kind of error the client is told about (its SQLSTATE).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Denied::Password(_) => ErrorKind::Auth,
            Denied::Protocol(_) | Denied::Config(_) => ErrorKind::Protocol,
            _ => ErrorKind::NotAuthorized,
        }
    }
}

/// Authenticates `user` for `database` on `stream`; sends AuthenticationOk on success.
pub async fn admit(
    app: &dyn AuthContext,
    stream: &mut Stream,
    user: &str,
    database: &str,
) -> Result<Admitted, Denied> {
    admit_for(app, stream, user, database, None).await
}

/// As [`admit`] for a client that may ask for replication: a physical replication client
/// matches HBA lines whose database is `replication` (a logical one matches its database
/// name), as in Postgres.
pub async fn admit_for(
    app: &dyn AuthContext,
    stream: &mut Stream,
    user: &str,
    database: &str,
    replication: Option<super::replication::ReplicationKind>,
) -> Result<Admitted, Denied> {
    let auth_type = app.config().settings.auth_type;
    let physical = replication == Some(super::replication::ReplicationKind::Physical);
    let matched =
        (auth_type == AuthType::Hba).then(|| hba_rule(app, stream, user, database, physical));
    let map = matched.as_ref().and_then(|m| m.map.as_deref());
    let allowed = |system: &str| match (app.hba(), map) {
        (Some(hba), _) => hba.name_allowed(map, system, user),
        (None, None) => system == user,
        (None, Some(_)) => false,
    };
    let rule = matched.as_ref().map(|m| m.method);
    let admitted = |known: Known| Admitted {
        secret: known.secret,
        outcome: LoginOutcome::default(),
    };
    let method = match (auth_type, rule) {
        (_, Some(HbaMethod::Reject)) => {
            return Err(Denied::Rejected {
                user: user.to_owned(),
                database: database.to_owned(),
            })
        }
        (_, Some(HbaMethod::Cert)) | (AuthType::Cert, None) => {
            check_certificate(stream, user, allowed)?;
            let known = find_secret(app, database, user).await?;
            login::send_ok(stream).await.map_err(Denied::Protocol)?;
            return Ok(admitted(known));
        }
        (_, Some(HbaMethod::Peer)) => {
            check_peer(stream, user, allowed)?;
            let known = find_secret(app, database, user).await?;
            login::send_ok(stream).await.map_err(Denied::Protocol)?;
            return Ok(admitted(known));
        }
        (_, Some(HbaMethod::Trust)) | (AuthType::Trust | AuthType::Any, None) => None,
        (_, Some(HbaMethod::Md5)) => Some("md5"),
        (_, Some(HbaMethod::Password)) => Some("plain"),
        (_, Some(HbaMethod::ScramSha256)) => Some("scram-sha-256"),
        (other, None) => Some(other.as_str()),
    };
    let method = crate::edge::pipelined::method_for(app, stream, method).await?;
    let known = find_secret(app, database, user).await?;
    match password_exchange(app, stream, user, method, &known).await {
        Ok(outcome) => Ok(Admitted {
            secret: known.secret,
            outcome,
        }),
        Err(LoginError::Failed(_)) => Err(Denied::Password(user.to_owned())),
        Err(e) => Err(Denied::Protocol(e)),
    }
}

/// Runs the password exchange that `auth_type_name` (`None` = trust) calls for with what is
/// `known` of this user: the challenge kind is chosen so that unknown users do not stand
/// out ([`auth::choose_method_masked`]), SCRAM verifiers are prepared by `scram_server`.
/// Under trust an unknown user still fails when a user list (auth_file, auth_query) was
/// consulted, as in PgBouncer. Sends AuthenticationOk on success.
pub async fn password_exchange(
    app: &dyn AuthContext,
    stream: &mut Stream,
    user: &str,
    auth_type_name: Option<&str>,
    known: &Known,
) -> Result<LoginOutcome, LoginError> {
    let secret = known.secret.as_ref();
    let mix = app.users().mix();
    let method = match auth_type_name {
        Some(name) => auth::choose_method_masked(name, secret, user, app.scram_mock_key(), mix),
        None => ClientAuthMethod::Trust,
    };
    if method == ClientAuthMethod::Trust && secret.is_none() && known.listed {
        return Err(LoginError::Failed(user.to_owned()));
    }
    let scram = match method {
        ClientAuthMethod::ScramSha256 => Some(scram_server(app, stream, user, secret).await),
        _ => None,
    };
    let exchange = Exchange {
        user,
        method,
        secret,
        scram,
        mock_key: app.scram_mock_key(),
    };
    login::authenticate(stream, exchange).await
}

/// Concurrent SCRAM derivations from plaintext secrets (each 4096 HMAC rounds on a
/// blocking thread); more logins needing one wait here instead of piling up threads.
static DERIVATIONS: Semaphore = Semaphore::const_new(2);

/// The SCRAM verifier for this login, offering channel binding over TLS. A SCRAM secret is
/// used as is; a plaintext one through its cached verifier (derived once per user and
/// password with a stable salt, off the async workers); an md5 secret or an unknown user
/// get the mock exchange, whose salt is just as stable. No path costs a derivation per
/// attempt, so the work before the first challenge is the same for all of them.
async fn scram_server(
    app: &dyn AuthContext,
    stream: &Stream,
    user: &str,
    secret: Option<&Secret>,
) -> ScramServer {
    let server = match secret {
        Some(Secret::Scram(s)) => ScramServer::new(s.clone()),
        Some(Secret::Plain(p)) if !p.is_empty() => {
            ScramServer::new(plain_verifier(app, user, p).await)
        }
        // An md5 hash cannot drive SCRAM, and an empty password never matches (as in
        // Postgres): behave exactly as for an unknown user.
        Some(_) | None => ScramServer::for_unknown_user(user, app.scram_mock_key()),
    };
    // A WebSocket client cannot see the TLS channel it runs in: no channel binding.
    let binding = match stream.is_tls() && !stream.is_edge() {
        true => app.client_tls().end_point.clone(),
        false => None,
    };
    server.with_channel_binding(binding)
}

/// The cached SCRAM verifier of a plaintext secret, derived on a blocking thread the first
/// time (one of at most two at once).
async fn plain_verifier(app: &dyn AuthContext, user: &str, password: &str) -> auth::ScramSecret {
    let users = app.users();
    if let Some(found) = users.plain_scram().get(user, password.as_bytes()) {
        return found;
    }
    let key = *app.scram_mock_key();
    let (name, pw) = (user.to_owned(), password.to_owned());
    let derive = move || auth::derive_plain_scram(&name, pw.as_bytes(), &key);
    let derived = match DERIVATIONS.acquire().await {
        Ok(_permit) => match tokio::task::spawn_blocking(derive.clone()).await {
            Ok(secret) => secret,
            // The blocking pool is gone (runtime shutting down): derive here.
            Err(_) => derive(),
        },
        Err(_) => derive(),
    };
    users
        .plain_scram()
        .insert(user, password.as_bytes(), derived.clone());
    derived
}

/// The method of the first `auth_hba_file` rule matching this connection; reject when none
/// does or the file could not be loaded.
fn hba_rule(
    app: &dyn AuthContext,
    stream: &Stream,
    user: &str,
    database: &str,
    replication: bool,
) -> HbaMatch {
    let Some(hba) = app.hba() else {
        return HbaMatch {
            method: HbaMethod::Reject,
            map: None,
        };
    };
    hba.lookup_match(&HbaRequest {
        database,
        user,
        addr: stream.peer_ip(),
        tls: stream.is_tls(),
        replication,
    })
}

/// What is known about a user before the password exchange.
#[derive(Debug, Default)]
pub struct Known {
    /// The stored secret; `None` for a user no list knows.
    pub secret: Option<Secret>,
    /// Whether a user list was consulted (auth_file, or `auth_query` for this database):
    /// then a user it does not know is refused even under trust, as in PgBouncer.
    pub listed: bool,
}

/// Where `auth_query` runs for one database: as `auth_user` on `auth_dbname`, the
/// database's own settings first, then the global ones.
struct AuthLookup {
    auth_user: String,
    query: String,
    auth_db: String,
}

impl AuthLookup {
    /// `None` when no `auth_user` applies (or the database is unknown and not the console).
    /// The console has no settings of its own: it uses the global ones, and with no global
    /// `auth_dbname` it would run against itself, which [`AuthLookup::run`] refuses.
    fn for_database(app: &dyn AuthContext, database: &str) -> Option<AuthLookup> {
        let config = app.config();
        let s = &config.settings;
        let (db_user, db_query, db_name) = if crate::control::is_console(database) {
            (None, None, None)
        } else {
            let entry = config.database_cow(database)?;
            (
                entry.auth_user.clone(),
                entry.auth_query.clone(),
                entry.auth_dbname.clone(),
            )
        };
        Some(AuthLookup {
            auth_user: db_user.or_else(|| s.auth_user.clone())?,
            query: db_query.unwrap_or_else(|| s.auth_query.clone()),
            auth_db: db_name
                .or_else(|| s.auth_dbname.clone())
                .unwrap_or_else(|| database.to_owned()),
        })
    }

    /// Runs the query for `user`. A lookup that cannot run (auth_dbname disabled, the
    /// console, not configured, no server connection) or that errors is a configuration
    /// error, logged and told to the client as such, never a wrong password.
    async fn run(&self, app: &dyn AuthContext, user: &str) -> Result<Option<Secret>, Denied> {
        let db = &self.auth_db;
        if crate::control::is_console(db) {
            error!(auth_dbname = %db, "cannot use the reserved console database as an auth_dbname");
            return Err(Denied::Config("bouncer config error".into()));
        }
        if app.database_disabled(db) {
            let msg = format!("authentication database \"{db}\" is disabled");
            warn!(auth_dbname = %db, "auth_query: authentication database is disabled");
            return Err(Denied::Config(msg));
        }
        let Some(pool) = app.pool_as(db, &self.auth_user) else {
            error!(auth_dbname = %db, "auth_query: authentication database is not configured");
            return Err(Denied::Config("bouncer config error".into()));
        };
        let mut server = match pool.checkout().await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, auth_user = %self.auth_user, "auth_query: no server connection");
                return Err(Denied::Config("auth_query: no server connection".into()));
            }
        };
        match auth_query::lookup_secret(&mut server.conn, &self.query, user).await {
            Ok(secret) => {
                pool.checkin(server);
                app.remember_looked_up(user, secret.clone());
                Ok(secret)
            }
            Err(e) => {
                error!(error = %e, auth_user = %self.auth_user, "auth_query failed");
                match e {
                    crate::server::ServerError::Rejected(_) => pool.checkin(server),
                    _ => pool.discard(server),
                }
                Err(Denied::Config("auth_query failed".into()))
            }
        }
    }
}

/// What is known about `user` logging in to `database` (the console included): the
/// auth_file (or URL) first, then `auth_query` as `auth_user` when one applies.
pub async fn find_secret(
    app: &dyn AuthContext,
    database: &str,
    user: &str,
) -> Result<Known, Denied> {
    let from_file = app.has_auth_file();
    if let Some(secret) = app.stored_secret(user) {
        return Ok(Known {
            secret: Some(secret),
            listed: true,
        });
    }
    let Some(lookup) = AuthLookup::for_database(app, database) else {
        return Ok(Known {
            secret: None,
            listed: from_file,
        });
    };
    Ok(Known {
        secret: lookup.run(app, user).await?,
        listed: true,
    })
}

#[path = "access_identity.rs"]
mod identity;
use identity::{check_certificate, check_peer};

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
