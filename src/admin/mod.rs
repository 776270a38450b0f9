//! The admin console on the virtual database `pgbouncer` (alias `pgfunnel`): login rules
//! (`auth`), the command language (`command`), SHOW views (`views`, `stats_views`) as
//! result sets (`result`), and the wire loop for the simple and extended protocol
//! (`session`). Control actions themselves live in `crate::control`.

pub mod auth;
pub mod command;
pub mod console_stats;
pub mod peer_views;
pub mod result;
pub mod session;
pub mod socket_views;
pub mod stats_views;
pub mod views;

use std::sync::Arc;

use thiserror::Error;

use crate::app::App;
use crate::control::ControlError;
use auth::Access;
use command::{Command, ParseError, View};
use result::ResultSet;

/// The text of SHOW HELP (PgBouncer's, minus the commands pgfunnel does not have).
pub const HELP_TEXT: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
\tSHOW LISTS|STATE|SOCKETS|ACTIVE_SOCKETS|MEM|PEERS|PEER_POOLS\n\
\tSHOW DNS_HOSTS|DNS_ZONES\n\
\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
\tSET key = arg\n\
\tRELOAD\n\
\tPAUSE [<db>]\n\
\tRESUME [<db>]\n\
\tDISABLE <db>\n\
\tENABLE <db>\n\
\tRECONNECT [<db>]\n\
\tKILL [<db>]\n\
\tKILL_CLIENT <client_id>\n\
\tSHUTDOWN\n\
\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
\tWAIT_CLOSE [<db>]";

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Rows, completed with tag `SHOW`.
    Rows(ResultSet),
    /// A NoticeResponse (message, detail) then the command tag.
    Notice {
        /// Primary message.
        message: &'static str,
        /// Detail text.
        detail: &'static str,
        /// CommandComplete tag.
        tag: String,
    },
    /// Just the command tag.
    Done(String),
    /// The query was empty (EmptyQueryResponse).
    Empty,
}

/// Why a console command failed; the client sees the message as an ERROR.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The query is not a console command.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A stats user tried a command that needs admin_users.
    #[error("admin access needed")]
    AdminOnly,
    /// The control action refused.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Runs a SHOW view.
pub fn show(app: &App, view: View) -> Reply {
    let rs = match view {
        View::Help => {
            return Reply::Notice {
                message: "Console usage",
                detail: HELP_TEXT,
                tag: "SHOW".into(),
            }
        }
        View::Version => views::version(),
        View::Config => views::config(app),
        View::Databases => views::databases(app),
        View::Pools => views::pools(app),
        View::Clients => socket_views::clients(app),
        View::Servers => socket_views::servers(app),
        View::Stats => stats_views::stats(app),
        View::StatsTotals => stats_views::stats_totals(app),
        View::StatsAverages => stats_views::stats_averages(app),
        View::Totals => stats_views::totals(app),
        View::Lists => views::lists(app),
        View::Users => views::users(app),
        View::State => views::state(app),
        View::DnsHosts => views::dns_hosts(),
        View::DnsZones => views::dns_zones(),
        View::Sockets => socket_views::sockets(app),
        View::ActiveSockets => socket_views::active_sockets(app),
        View::Mem => socket_views::mem(app),
        View::Peers => peer_views::peers(app),
        View::PeerPools => peer_views::peer_pools(app),
    };
    Reply::Rows(rs)
}

/// Runs one command with the caller's access.
pub async fn execute(app: &Arc<App>, cmd: Command, access: Access) -> Result<Reply, AdminError> {
    if access != Access::Admin && !cmd.is_read_only() && !is_fake_set(&cmd) {
        return Err(AdminError::AdminOnly);
    }
    let done = |tag: &str| Ok(Reply::Done(tag.to_owned()));
    match cmd {
        Command::Empty => Ok(Reply::Empty),
        Command::Show(view) => Ok(show(app, view)),
        Command::ShowParam(name, value) => {
            let mut rs = ResultSet::new("s", &[name]);
            rs.push(vec![value.into()]);
            Ok(Reply::Rows(rs))
        }
        Command::Set { key, value } => {
            if is_fake_param(&key) {
                return Ok(Reply::Notice {
                    message: "SET ignored",
                    detail: "",
                    tag: "SET".into(),
                });
            }
            app.set_setting(&key, &value)?;
            Ok(Reply::Done(format!("SET {key}={value}")))
        }
        Command::Pause(db) => {
            app.pause(db.as_deref()).await?;
            done("PAUSE")
        }
        Command::Resume(db) => {
            app.resume(db.as_deref())?;
            done("RESUME")
        }
        Command::Reconnect(db) => {
            app.reconnect(db.as_deref())?;
            done("RECONNECT")
        }
        Command::Reload => {
            app.reload()?;
            done("RELOAD")
        }
        Command::Kill(db) => {
            app.kill(db.as_deref())?;
            done("KILL")
        }
        Command::KillClient(id) => {
            app.kill_client(id)?;
            done("KILL_CLIENT")
        }
        Command::Disable(db) => {
            app.set_disabled(&db, true)?;
            done("DISABLE")
        }
        Command::Enable(db) => {
            app.set_disabled(&db, false)?;
            done("ENABLE")
        }
        Command::WaitClose(db) => {
            app.wait_close(db.as_deref()).await?;
            done("WAIT_CLOSE")
        }
        Command::Shutdown(mode) => {
            app.stopping.request(mode);
            done("SHUTDOWN")
        }
    }
}

fn is_fake_param(key: &str) -> bool {
    command::FAKE_PARAMS
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(key))
}

fn is_fake_set(cmd: &Command) -> bool {
    matches!(cmd, Command::Set { key, .. } if is_fake_param(key))
}
