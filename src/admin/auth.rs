//! Who may use the console: `admin_users` (everything), `stats_users` (read-only SHOW), and
//! the OS user running pgfunnel logging in as `pgbouncer` over the Unix socket without a
//! password (peer credentials, as PgBouncer's getpeereid check). Secrets come from the
//! auth_file or the global `auth_query`.

use tracing::warn;

use crate::app::App;
use crate::client::access::{find_secret, password_exchange, Denied};
use crate::client::login::LoginError;
use crate::config::AuthType;
use crate::error::ErrorKind;
use crate::net::Stream;
use crate::protocol::messages::{self, auth_code};

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every command.
    Admin,
    /// SHOW only.
    Stats,
}

/// Why a console login was refused (the client gets the message).
#[derive(Debug, thiserror::Error)]
pub enum ConsoleLoginError {
    /// Password check failed.
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    /// Authenticated, but neither in admin_users nor in stats_users.
    #[error("not allowed")]
    NotAllowed,
    /// The client broke the authentication exchange or left.
    #[error("invalid authentication exchange")]
    Protocol,
    /// The user lookup (`auth_query`) is misconfigured or failed.
    #[error("{0}")]
    Config(String),
}

impl ConsoleLoginError {
    /// The kind the client is told about (its SQLSTATE).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConsoleLoginError::Failed(_) => ErrorKind::Auth,
            ConsoleLoginError::NotAllowed => ErrorKind::NotAuthorized,
            ConsoleLoginError::Protocol | ConsoleLoginError::Config(_) => ErrorKind::Protocol,
        }
    }
}

/// Whether the peer of a Unix socket runs as the same OS user as pgfunnel.
fn same_os_user(stream: &Stream) -> bool {
    let Stream::Unix(s) = stream else {
        return false;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    s.peer_cred().is_ok_and(|c| c.uid() == me)
}

/// Authenticates a console client and decides its access. Sends AuthenticationOk on
/// success; the caller sends the error otherwise.
pub async fn login(
    app: &App,
    stream: &mut Stream,
    user: &str,
) -> Result<Access, ConsoleLoginError> {
    if user == "pgbouncer" && same_os_user(stream) {
        let mut buf = bytes::BytesMut::new();
        messages::put_auth(&mut buf, auth_code::OK, &[]);
        stream
            .send(&buf)
            .await
            .map_err(|_| ConsoleLoginError::Protocol)?;
        return Ok(Access::Admin);
    }
    let config = app.config();
    // Users not in the auth_file are looked up with the global auth_user, auth_query and
    // auth_dbname, as PgBouncer does for its admin database.
    let known = match find_secret(app, "pgbouncer", user).await {
        Ok(known) => known,
        Err(Denied::Config(msg)) => return Err(ConsoleLoginError::Config(msg)),
        Err(_) => return Err(ConsoleLoginError::Protocol),
    };
    let method = match config.settings.auth_type {
        AuthType::Trust | AuthType::Any => None,
        other => Some(other.as_str()),
    };
    match password_exchange(app, stream, user, method, &known).await {
        Ok(_) => {}
        Err(LoginError::Failed(_)) => {
            warn!(user, "console authentication failed");
            return Err(ConsoleLoginError::Failed(user.to_owned()));
        }
        Err(_) => return Err(ConsoleLoginError::Protocol),
    }
    let s = &config.settings;
    if s.admin_users.iter().any(|u| u == user) {
        Ok(Access::Admin)
    } else if s.stats_users.iter().any(|u| u == user) {
        Ok(Access::Stats)
    } else {
        warn!(
            user,
            "console login by a user in neither admin_users nor stats_users"
        );
        Err(ConsoleLoginError::NotAllowed)
    }
}
