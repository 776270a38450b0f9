//! Command line: pgfunnel's subcommands plus PgBouncer's own flags, so unit files and
//! scripts written for `pgbouncer [-q] [-v] [-d] [-u user] pgbouncer.ini` keep working.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pgfunnel: a PostgreSQL connection pooler, drop-in for PgBouncer.
#[derive(Debug, Parser)]
#[command(
    name = "pgfunnel",
    display_name = "PgBouncer",
    version = crate::admin::views::VERSION_TAIL,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Config file in PgBouncer's format (pgbouncer.ini), or a postgres:// URL for URL mode;
    /// same as `pgfunnel serve CONFIG`.
    #[arg(value_name = "CONFIG|URL")]
    pub config: Option<PathBuf>,
    /// PgBouncer-compatible process flags.
    #[command(flatten)]
    pub process: ProcessFlags,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags PgBouncer accepts before its config file; `serve` takes them too.
#[derive(Debug, Args, Clone, Default)]
pub struct ProcessFlags {
    /// Quiet: do not log to stderr (the logfile, if set, still gets everything).
    #[arg(short, long)]
    pub quiet: bool,
    /// Verbose: more detailed logs; repeat for more.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Run in the background as a daemon (needs logfile or -q, as PgBouncer).
    #[arg(short, long)]
    pub daemon: bool,
    /// Switch to this OS user at startup (when started as root).
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pooler (the default when only a config file is given).
    Serve(ServeArgs),
    /// Validate a config file (or a postgres:// URL), report every problem and print the
    /// effective settings; exit 1 when invalid.
    Check {
        /// Config file (or postgres:// URL) to check.
        #[arg(value_name = "CONFIG|URL")]
        config: PathBuf,
    },
    /// Apply numbered SQL migrations (NNNN_name.sql, Drizzle's layout too) safely, also
    /// through pgfunnel in transaction mode; or show their status, or verify them.
    Migrate(MigrateArgs),
}

/// Arguments of `serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Config file in PgBouncer's format, or a postgres:// URL (same as --upstream).
    #[arg(value_name = "CONFIG|URL")]
    pub config: Option<PathBuf>,
    /// URL mode: pool a single database given as postgres://user:pass@host:port/db
    /// (no config file needed; clients log in with the same user and password).
    #[arg(
        long,
        env = "PGFUNNEL_UPSTREAM",
        value_name = "URL",
        conflicts_with = "config"
    )]
    pub upstream: Option<String>,
    /// Override listen_addr (URL mode default 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Override listen_port (default 6432).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Override admin_users: these users may use the admin console (database `pgfunnel` or
    /// `pgbouncer`). In URL mode the URL's user is the one that can log in.
    #[arg(long, value_name = "USER[,USER]", value_delimiter = ',')]
    pub admin_users: Option<Vec<String>>,
    /// Override metrics_listen: serve /metrics, /health/live and /health/ready over HTTP here.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
    /// Override edge_listen: serve Postgres over WebSocket and SQL over HTTP here (Neon's
    /// serverless driver); an empty value turns it off.
    #[arg(long, value_name = "ADDR:PORT")]
    pub edge_listen: Option<String>,
    /// Override unix_socket_dir: also listen on a Unix socket in this directory (URL mode has
    /// none by default; an empty value turns it off).
    #[arg(long, value_name = "DIR")]
    pub unix_socket_dir: Option<String>,
    /// PgBouncer's process flags.
    #[command(flatten)]
    pub process: ProcessFlags,
}

/// What `migrate` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum MigrateAction {
    /// Apply pending migrations in numeric order (refuses when the history has drifted).
    #[default]
    Up,
    /// List applied, pending and drifted migrations.
    Status,
    /// Exit 3 when the history has drifted from the files, 0 otherwise.
    Verify,
}

/// Arguments of `migrate`. Exit codes: 0 done, 1 a migration or the database failed,
/// 2 bad command line, 3 drift, 4 bad migration files, 5 no-transaction file behind a
/// transaction pooler.
#[derive(Debug, Args, Clone)]
pub struct MigrateArgs {
    /// up (default), status or verify.
    #[arg(value_enum, default_value_t = MigrateAction::Up)]
    pub action: MigrateAction,
    /// Database to migrate: postgres://user:password@host:port/dbname (directly or through pgfunnel).
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Migrate this database of the pgfunnel config given with --config (its host, port,
    /// dbname, user and password are used; wins over DATABASE_URL).
    #[arg(long, value_name = "NAME", requires = "config")]
    pub database: Option<String>,
    /// pgfunnel (PgBouncer-format) config file that --database refers to.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder holding the migration files.
    #[arg(long, value_name = "DIR", default_value = "migrations")]
    pub dir: PathBuf,
    /// Schema of the history table pgfunnel_migrations (created when missing).
    #[arg(long, value_name = "SCHEMA", default_value = "public")]
    pub schema: String,
    /// Print what would run, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after version N (inclusive).
    #[arg(long, value_name = "N")]
    pub target: Option<u64>,
    /// lock_timeout inside each migration (e.g. 5s, 500ms): fail fast on a busy table.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Option<Duration>,
    /// statement_timeout inside each migration (e.g. 10min).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub statement_timeout: Option<Duration>,
    /// Admin console of a running pgfunnel (postgres://user:pass@host:port/pgbouncer): sent
    /// RECONNECT after migrations so no client hits stale cached plans; tolerated when unreachable.
    #[arg(long, value_name = "URL")]
    pub pgfunnel_admin: Option<String>,
    /// More detailed logs; repeat for more.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Parses `500ms`, `5s`, `2min`, `1h` or a bare number of milliseconds (Postgres's units).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with ms, s, min, h or d"))?;
    let ms = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (ms, s, min, h, d)"
            ))
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_postgres_units_and_rejects_others() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn migrate_defaults_to_up_in_migrations_dir() {
        let cli =
            Cli::try_parse_from(["pgfunnel", "migrate", "--database-url", "postgres://a@h/d"])
                .expect("parses");
        let Some(Command::Migrate(args)) = cli.command else {
            panic!("not migrate: {cli:?}");
        };
        assert_eq!(args.action, MigrateAction::Up);
        assert_eq!(args.dir, PathBuf::from("migrations"));
        let cli = Cli::try_parse_from(["pgfunnel", "migrate", "status", "--target", "3"])
            .expect("parses");
        let Some(Command::Migrate(args)) = cli.command else {
            panic!("not migrate: {cli:?}");
        };
        assert_eq!((args.action, args.target), (MigrateAction::Status, Some(3)));
    }

    fn help_of(args: &[&str]) -> String {
        let err = Cli::try_parse_from(args).expect_err("help exits");
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        err.to_string()
    }

    #[test]
    fn each_command_help_shows_only_its_own_options() {
        let check = help_of(&["pgfunnel", "check", "--help"]);
        for flag in ["--daemon", "--user", "--quiet", "--verbose", "--upstream"] {
            assert!(!check.contains(flag), "check --help shows {flag}:\n{check}");
        }
        let migrate = help_of(&["pgfunnel", "migrate", "--help"]);
        for flag in ["--daemon", "--user", "--quiet", "--upstream"] {
            assert!(
                !migrate.contains(flag),
                "migrate --help shows {flag}:\n{migrate}"
            );
        }
        assert!(migrate.contains("--dry-run") && migrate.contains("--verbose"));
        let serve = help_of(&["pgfunnel", "serve", "--help"]);
        for flag in [
            "--daemon",
            "--quiet",
            "--upstream",
            "--admin-users",
            "--metrics-listen",
        ] {
            assert!(serve.contains(flag), "serve --help lacks {flag}:\n{serve}");
        }
        assert!(!serve.contains("--dry-run"));
        // PgBouncer's invocation still parses
        let cli = Cli::try_parse_from(["pgfunnel", "-q", "-d", "-u", "pg", "pgbouncer.ini"])
            .expect("pgbouncer flags");
        assert!(cli.process.quiet && cli.process.daemon && cli.command.is_none());
        let cli = Cli::try_parse_from(["pgfunnel", "serve", "-v", "--admin-users", "a,b", "x.ini"])
            .expect("serve flags");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.process.verbose, 1);
        assert_eq!(args.admin_users, Some(vec!["a".to_owned(), "b".to_owned()]));
    }
}
