//! The pgfunnel binary: parse the command line, set up logging, dispatch.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pgfunnel::cli::{Cli, Command, MigrateArgs, ProcessFlags, ServeArgs};
use pgfunnel::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Serve(args)) => serve(args, &cli.process),
        Some(Command::Migrate(args)) => return migrate(&args, &cli.process),
        None => match cli.config {
            Some(config) => serve(
                ServeArgs {
                    config: Some(config),
                    ..Default::default()
                },
                &cli.process,
            ),
            None => Err(anyhow::anyhow!(
                "no config file given: run `pgfunnel CONFIG`, `pgfunnel serve --upstream URL` or see --help"
            )),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgfunnel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(url)) => {
            let mut c = Config::from_url(url)?;
            // URL mode listens on TCP only (127.0.0.1:6432 unless overridden).
            c.settings.unix_socket_dir.clear();
            c
        }
        (None, None) => anyhow::bail!("give a config file or --upstream URL"),
    };
    if let Some(addr) = &args.listen {
        config.settings.listen_addr = vec![addr.clone()];
    }
    if let Some(port) = args.port {
        config.settings.listen_port = port;
    }
    Ok(config)
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    pgfunnel::app::Users::load(&config)?;
    // Certificate, key and CA files must load, as at startup.
    pgfunnel::net::TlsConfigs::load(&config.settings).context("TLS setup")?;
    // write! instead of println!: `pgfunnel check | head` must not panic on a closed pipe.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "# {}: valid", path.display());
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
    Ok(())
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
    for w in &config.warnings {
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
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    if let Some(p) = &running.unix_path {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("exit");
    Ok(())
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
