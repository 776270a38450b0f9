//! The pgfunnel binary: parse the command line, set up logging, dispatch.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pgfunnel::cli::{Cli, Command, MigrateArgs, ProcessFlags, ServeArgs};
use pgfunnel::config::{looks_like_url, Config, ConfigError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Serve(args)) => {
            let flags = args.process.clone();
            serve(args, &flags)
        }
        Some(Command::Migrate(args)) => {
            let flags = ProcessFlags {
                verbose: args.verbose,
                ..ProcessFlags::default()
            };
            return migrate(&args, &flags);
        }
        None => match cli.config {
            Some(config) => serve(
                ServeArgs {
                    config: Some(config),
                    ..Default::default()
                },
                &cli.process,
            ),
            None => Err(anyhow::anyhow!(
                "no config file given: run `pgfunnel CONFIG`, `pgfunnel postgres://USER:PASSWORD@HOST/DB` or see --help"
            )),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgfunnel: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes as one message, each cause only when its text is not already in
/// the message (thiserror messages often quote their source), and never a URL's password.
fn report(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    pgfunnel::config::redact_urls(&text)
}

/// The URL when `path` is really a `postgres://` URL given where a config file may stand.
fn as_url(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    looks_like_url(text).then(|| text.to_owned())
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let url = args
        .config
        .as_deref()
        .and_then(as_url)
        .or(args.upstream.clone());
    let mut config = match (&args.config, url) {
        (_, Some(url)) => {
            let mut c = Config::from_url(&url)?;
            // URL mode listens on TCP only (127.0.0.1:6432 unless overridden).
            c.settings.unix_socket_dir.clear();
            c
        }
        (Some(path), None) => Config::load(path)?,
        (None, None) => anyhow::bail!("give a config file or --upstream URL"),
    };
    let s = &mut config.settings;
    if let Some(addr) = &args.listen {
        s.listen_addr = vec![addr.clone()];
    }
    if let Some(port) = args.port {
        s.listen_port = port;
    }
    if let Some(users) = &args.admin_users {
        s.admin_users.clone_from(users);
    }
    if let Some(addr) = &args.metrics_listen {
        s.metrics_listen = Some(addr.clone()).filter(|a| !a.is_empty());
    }
    if let Some(addr) = &args.edge_listen {
        s.edge_listen = Some(addr.clone()).filter(|a| !a.is_empty());
    }
    if let Some(dir) = &args.unix_socket_dir {
        s.unix_socket_dir.clone_from(dir);
    }
    Ok(config)
}

/// `check`: reports every problem `serve` would refuse at startup (config, auth_file, TLS
/// files, HBA rules), the warnings, then the effective settings.
fn check(target: &Path) -> anyhow::Result<()> {
    let (config, errors) = match as_url(target) {
        Some(url) => (Config::from_url(&url)?, Vec::new()),
        None => Config::inspect(target)?,
    };
    for w in config.warnings.iter().chain(&config.advice()) {
        eprintln!("warning: {w}");
    }
    let mut problems: Vec<String> = errors
        .iter()
        .flat_map(|e| e.problems())
        .map(ToString::to_string)
        .collect();
    let auth_file_failed = errors
        .iter()
        .flat_map(|e| e.problems())
        .any(|e| matches!(e, ConfigError::AuthFile { .. }));
    if !auth_file_failed {
        if let Err(e) = pgfunnel::app::Users::load(&config) {
            problems.push(report(&e));
        }
    }
    if errors.is_empty() {
        // Certificate, key and CA files and the HBA rules must load, as at startup.
        if let Err(e) = pgfunnel::net::TlsConfigs::load(&config.settings).context("TLS setup") {
            problems.push(report(&e));
        }
        if let Err(e) = pgfunnel::app::load_hba(&config) {
            problems.push(report(&e.into()));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        let n = problems.len();
        let s = if n == 1 { "" } else { "s" };
        anyhow::bail!("{}: {n} problem{s} found", target.display());
    }
    print_effective(&config, target);
    Ok(())
}

fn print_effective(config: &Config, target: &Path) {
    // write! instead of println!: `pgfunnel check | head` must not panic on a closed pipe.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let shown = match as_url(target) {
        Some(url) => pgfunnel::config::redact_urls(&url),
        None => target.display().to_string(),
    };
    let _ = writeln!(out, "# {shown}: valid");
    let _ = writeln!(out, "[pgbouncer]");
    for (k, v) in config.effective_settings() {
        let _ = writeln!(out, "{k} = {v}");
    }
    let _ = writeln!(out, "[databases]");
    for db in &config.databases {
        let _ = writeln!(
            out,
            "{} = host={} port={} dbname={}",
            db.name,
            db.hosts.join(","),
            db.port,
            db.dbname.as_deref().unwrap_or(&db.name)
        );
    }
}

/// `migrate`: exit codes come from `MigrateError::exit_code`.
fn migrate(args: &MigrateArgs, flags: &ProcessFlags) -> ExitCode {
    pgfunnel::logging::init_migrate(flags.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgfunnel migrate: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(pgfunnel::migrate::run(args, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgfunnel migrate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve(args: ServeArgs, flags: &ProcessFlags) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    if flags.daemon {
        if config.settings.logfile.is_none() && !flags.quiet {
            anyhow::bail!("-d needs a logfile setting or -q, as PgBouncer");
        }
        daemonize()?;
    }
    if let Some(user) = &flags.user {
        switch_user(user)?;
    }
    pgfunnel::logging::init(&config, flags.verbose, flags.quiet)?;
    pgfunnel::panic::install_hook();
    for w in config.warnings.iter().chain(&config.advice()) {
        tracing::warn!("{w}");
    }
    let threads = match config.settings.worker_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(run(config));
    // Do not wait for stray tasks (a DNS lookup, a draining socket): exit means exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Serves until shutdown. Signals keep PgBouncer 1.23+ meanings: SIGHUP reload, SIGINT
/// WAIT_FOR_SERVERS, SIGTERM WAIT_FOR_CLIENTS, SIGQUIT immediate, SIGUSR1 pause, SIGUSR2
/// resume; a second SIGINT/SIGTERM during shutdown exits at once.
async fn run(config: Config) -> anyhow::Result<()> {
    use pgfunnel::shutdown::ShutdownMode;
    use tokio::signal::unix::{signal, SignalKind};
    let pidfile = config.settings.pidfile.clone();
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pidfile {}", p.display()))?;
    }
    let running = pgfunnel::app::start(config).await?;
    let app = running.app.clone();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let stop = |mode: ShutdownMode| {
        let now = app.stopping.request(mode);
        tracing::info!(?now, "shutdown signal");
        now == ShutdownMode::Immediate
    };
    loop {
        let exit_now = tokio::select! {
            _ = app.stopping.finished.cancelled() => true,
            _ = int.recv() => stop(ShutdownMode::WaitForServers),
            _ = term.recv() => stop(ShutdownMode::WaitForClients),
            _ = quit.recv() => stop(ShutdownMode::Immediate),
            _ = hup.recv() => {
                if let Err(e) = app.reload() {
                    tracing::error!(error = %e, "reload failed; keeping the running config");
                }
                false
            }
            _ = usr1.recv() => {
                let app2 = app.clone();
                tokio::spawn(async move {
                    if let Err(e) = app2.pause(None).await {
                        tracing::warn!(error = %e, "SIGUSR1 pause");
                    }
                });
                false
            }
            _ = usr2.recv() => {
                if let Err(e) = app.resume(None) {
                    tracing::warn!(error = %e, "SIGUSR2 resume");
                }
                false
            }
        };
        if exit_now {
            break;
        }
    }
    remove_run_files(&pidfile, &running.unix_path);
    tracing::info!("exit");
    Ok(())
}

/// Removes the pidfile and the Unix socket file at exit.
fn remove_run_files(pidfile: &Option<std::path::PathBuf>, unix_path: &Option<std::path::PathBuf>) {
    if let Some(p) = pidfile {
        let _ = std::fs::remove_file(p);
    }
    if let Some(p) = unix_path {
        let _ = std::fs::remove_file(p);
    }
}

fn daemonize() -> anyhow::Result<()> {
    // SAFETY: called before any thread is started (the runtime is built afterwards).
    unsafe {
        match libc::fork() {
            -1 => anyhow::bail!("fork failed: {}", std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        libc::setsid();
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if devnull >= 0 {
            libc::dup2(devnull, 0);
            libc::dup2(devnull, 1);
            libc::dup2(devnull, 2);
        }
    }
    Ok(())
}

fn switch_user(user: &str) -> anyhow::Result<()> {
    let name = std::ffi::CString::new(user).context("user name contains NUL")?;
    // SAFETY: getpwnam returns static storage or NULL; fields are read immediately.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            anyhow::bail!("-u: no such user {user:?}");
        }
        let (uid, gid) = ((*pw).pw_uid, (*pw).pw_gid);
        if libc::setgid(gid) != 0
            || libc::initgroups(name.as_ptr(), gid) != 0
            || libc::setuid(uid) != 0
        {
            anyhow::bail!(
                "-u {user}: cannot switch user: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
