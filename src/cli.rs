//! Command line: pgfunnel's subcommands plus PgBouncer's own flags, so unit files and
//! scripts written for `pgbouncer [-q] [-v] [-d] [-u user] pgbouncer.ini` keep working.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// pgfunnel: a PostgreSQL connection pooler, drop-in for PgBouncer.
#[derive(Debug, Parser)]
#[command(name = "pgfunnel", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Config file in PgBouncer's format (pgbouncer.ini); same as `pgfunnel serve CONFIG`.
    pub config: Option<PathBuf>,
    /// PgBouncer-compatible process flags.
    #[command(flatten)]
    pub process: ProcessFlags,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags PgBouncer accepts before its config file.
#[derive(Debug, Args, Clone, Default)]
pub struct ProcessFlags {
    /// Quiet: do not log to stderr (the logfile, if set, still gets everything).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Verbose: more detailed logs; repeat for more.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Run in the background as a daemon (needs logfile or -q, as PgBouncer).
    #[arg(short, long, global = true)]
    pub daemon: bool,
    /// Switch to this OS user at startup (when started as root).
    #[arg(short, long, global = true, value_name = "USER")]
    pub user: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pooler (the default when only a config file is given).
    Serve(ServeArgs),
    /// Validate a config file and print the effective settings; exit 1 when invalid.
    Check {
        /// Config file to check.
        config: PathBuf,
    },
}

/// Arguments of `serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Config file in PgBouncer's format.
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
}
