//! `sluiced`: the sluice daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Map, Value};
use std::sync::Arc;

use sluice_daemon::api::ApiContext;
use sluice_daemon::api::identity::Access;
use sluice_daemon::audit::Audit;
use sluice_daemon::config::Config;
use sluice_daemon::engine::{Engine, EngineOptions, default_base_env};
use sluice_daemon::fdlimit::Budget;
use sluice_daemon::llm::LlmProviders;
use sluice_daemon::metrics::Metrics;
use sluice_daemon::notify::Notifier;
use sluice_daemon::registry::Registry;
use sluice_daemon::secrets::Secrets;
use sluice_daemon::statedir::{self, StateLock};
use sluice_daemon::store::Store;
use sluice_daemon::systemd::ServiceManager;
use sluice_shared::Pipeline;
use sluice_shared::inputs::DeclaredInput;
use sluice_shared::run::{RunState, TriggerInfo};
use sluice_shared::validate::ValidateOptions;

/// sluiced: runs sluice pipelines.
#[derive(Debug, Parser)]
#[command(name = "sluiced", version, about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct Common {
    /// Configuration file (sluiced.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory for the database and state (overrides the file).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Directory of pipeline files (overrides the file).
    #[arg(long, global = true)]
    pipelines: Option<PathBuf>,
    /// Control socket path (overrides the file and SLUICE_SOCKET).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// HTTP listen address (overrides the file).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Directory of `sluice-node-<kind>` plugins (overrides the file).
    #[arg(long, global = true)]
    plugins: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one pipeline file to the end in this process and print the result.
    RunOnce(RunArgs),
    /// Queue a run of a pipeline file for the daemon serving this state directory.
    Submit(RunArgs),
    /// Check sluiced.toml, its secrets and the pipelines directory, then exit:
    /// 0 when the daemon would start with them, 1 otherwise (for ExecStartPre= and CI).
    CheckConfig,
    /// Print a shell completion script for sluiced.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print sluiced's man page (roff), e.g. `sluiced man | man -l -`.
    #[command(alias = "manpage")]
    Man,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The pipeline file.
    file: PathBuf,
    /// An input value, `name=value`, read as the input's declared type
    /// (n=3 for an integer, v=2.0 stays text for a string, o='{"a":1}' for an object).
    #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice_daemon::procstat::mark_start();
    // Before any thread exists (the runtime, the log file writer): take the
    // service manager's variables out of the environment, so no child inherits them.
    // SAFETY: no other thread has been started yet.
    let manager = match unsafe { ServiceManager::from_env_and_unset() } {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("sluiced: warning: {e}; not notifying the service manager");
            Arc::new(ServiceManager::default())
        }
    };
    match &cli.command {
        Some(Command::Completions { shell }) => {
            // Into memory first: `generate` panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "sluiced", &mut script);
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluiced: error: writing the completions: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Some(Command::Man) => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluiced: error: writing the man page: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    // Before any thread or file exists (the log file writer makes both): the
    // daemon's files are private from the start, and node processes get back
    // the umask we were given.
    // SAFETY: umask only swaps the process's file mode mask.
    let inherited = unsafe { libc::umask(0o077) };
    sluice_daemon::nodes::process::set_child_umask(inherited);
    let s = match settings(&cli.common) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluiced: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    // Files only for the daemon itself: a one-off command logs to stderr.
    let serving = cli.command.is_none();
    let _log_guard = match sluice_daemon::logging::init(&s.config.log, serving) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("sluiced: error: {e}");
            return ExitCode::from(1);
        }
    };
    let budget = match sluice_daemon::fdlimit::raise() {
        Ok(b) => {
            if b.soft != b.before {
                tracing::debug!(
                    from = b.before,
                    to = b.soft,
                    "raised the file descriptor limit"
                );
            }
            b
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file descriptor limit; keeping it");
            Budget {
                before: 1024,
                soft: 1024,
            }
        }
    };
    let threads = s.config.engine.runtime_threads();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluiced: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::debug!(threads, "runtime started");
    match runtime.block_on(run(cli, s, budget, manager)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sluiced stopped on an error");
            eprintln!("sluiced: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

struct Settings {
    config: Config,
    paths: sluice_daemon::config::ResolvedPaths,
}

fn settings(common: &Common) -> anyhow::Result<Settings> {
    let mut config = match &common.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(d) = &common.state_dir {
        config.paths.state_dir = Some(d.clone());
    }
    if let Some(d) = &common.pipelines {
        config.paths.pipelines = Some(d.clone());
    }
    // The flag wins, then SLUICE_SOCKET, then the file.
    if let Some(s) = &common.socket {
        config.paths.socket = Some(s.clone());
    } else if let Some(env) = std::env::var_os("SLUICE_SOCKET").filter(|v| !v.is_empty()) {
        config.paths.socket = Some(PathBuf::from(env));
    }
    if let Some(p) = &common.plugins {
        config.paths.plugins = Some(p.clone());
    }
    if let Some(l) = &common.listen {
        config.http.listen = l.clone();
    }
    let paths = config.paths.resolve();
    Ok(Settings { config, paths })
}

fn engine_options(s: &Settings, poll: bool) -> EngineOptions {
    EngineOptions {
        workers: s.config.engine.workers,
        plugins_dir: s.paths.plugins.clone(),
        base_env: default_base_env(),
        shutdown_grace: s.config.engine.shutdown_grace.std(),
        poll_interval: poll.then(|| std::time::Duration::from_millis(250)),
        limits: Arc::new(sluice_daemon::limits::Limits::new(s.config.limits.clone())),
        // `llm` and `notifier` need the secrets: the callers set them.
        ..EngineOptions::default()
    }
}

/// The `[llm]` providers, API keys read from their secrets (fixed until restart,
/// like the secrets node templates see).
fn llm_providers(s: &Settings, secrets: &Secrets) -> anyhow::Result<Arc<LlmProviders>> {
    Ok(Arc::new(LlmProviders::from_config(&s.config.llm, secrets)?))
}

/// Webhook and `[smtp]` email delivery; the SMTP password is read from its
/// secret now, so a missing one stops the start with a clear error.
fn notifier(s: &Settings, secrets: &Secrets) -> anyhow::Result<Arc<Notifier>> {
    Ok(Arc::new(Notifier::new(s.config.smtp.as_ref(), secrets)?))
}

async fn open_store(s: &Settings) -> anyhow::Result<Store> {
    let db = s.paths.state_dir.join("sluice.db");
    Store::open(&db, s.config.engine.durability)
        .await
        .with_context(|| format!("opening the store at {}", db.display()))
}

fn load_secrets(s: &Settings) -> anyhow::Result<Secrets> {
    Ok(Secrets::load(
        s.paths.credentials.as_deref(),
        Some(&s.paths.secrets),
    )?)
}

async fn run(
    cli: Cli,
    s: Settings,
    budget: Budget,
    manager: Arc<ServiceManager>,
) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => serve(&s, budget, manager).await,
        Some(Command::RunOnce(args)) => run_once(&s, &args).await,
        Some(Command::Submit(args)) => submit(&s, &args).await,
        Some(Command::CheckConfig) => check_config(&s).await,
        // Handled before the runtime started.
        Some(Command::Completions { .. } | Command::Man) => Ok(ExitCode::SUCCESS),
    }
}

/// `sluiced check-config`: everything `serve` reads before it binds, checked
/// the same way, each problem printed; nothing is opened for writing.
async fn check_config(s: &Settings) -> anyhow::Result<ExitCode> {
    let mut problems = 0usize;
    let mut problem = |what: String| {
        eprintln!("error: {what}");
        problems += 1;
    };
    if let Err(e) = sluice_daemon::logging::check(&s.config.log) {
        problem(e.to_string());
    }
    if s.config.engine.threads == Some(0) {
        problem("[engine] threads must be at least 1 (leave it unset for one per CPU)".into());
    }
    if s.config.engine.workers == 0 {
        problem("[engine] workers must be at least 1".into());
    }
    if let Some(text) = &s.config.http.max_body
        && let Err(e) = sluice_daemon::triggers::webhook::parse_size(text)
    {
        problem(format!("[http] max_body: {e}"));
    }
    if let Err(e) = s.config.http.listen.parse::<std::net::SocketAddr>() {
        problem(format!(
            "[http] listen '{}': {e} (use address:port, e.g. 127.0.0.1:8677)",
            s.config.http.listen
        ));
    }
    if let Err(e) = sluice_daemon::api::SocketLimits::from_config(&s.config.socket) {
        problem(format!("{e}"));
    }
    if let Err(e) = Access::from_config(s.config.access.as_ref()) {
        problem(format!("[access] {e:#}"));
    }
    match load_secrets(s) {
        Ok(secrets) => {
            if let Err(e) = llm_providers(s, &secrets) {
                problem(format!("[llm] {e:#}"));
            }
            if let Err(e) = notifier(s, &secrets) {
                problem(format!("[smtp] {e:#}"));
            }
            if let Some(name) = &s.config.http.metrics_token
                && secrets.get(name).is_none()
            {
                problem(format!(
                    "[http] metrics_token names the secret '{name}', which is not set"
                ));
            }
        }
        Err(e) => problem(format!("secrets: {e:#}")),
    }
    let dir = &s.paths.pipelines;
    let (mut valid, mut invalid) = (0usize, 0usize);
    if dir.is_dir() {
        let opts = ValidateOptions::with_plugin_dir(&s.paths.plugins);
        let set = sluice_shared::load_paths(std::slice::from_ref(dir), &opts);
        for f in &set.files {
            for d in &f.diagnostics {
                eprintln!("{d}");
            }
            if f.is_valid() {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        if invalid > 0 {
            problem(format!(
                "{invalid} pipeline file(s) in {} rejected",
                dir.display()
            ));
        }
    } else {
        eprintln!(
            "warning: the pipelines directory {} does not exist; the daemon starts with no pipelines",
            dir.display()
        );
    }
    if problems > 0 {
        eprintln!("{problems} problem(s); sluiced would not start as configured");
        return Ok(ExitCode::from(1));
    }
    println!(
        "ok: configuration valid; {valid} pipeline file(s) in {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    s: &Settings,
    budget: Budget,
    manager: Arc<ServiceManager>,
) -> anyhow::Result<ExitCode> {
    if let Err(e) = manager.status("starting: opening the store") {
        tracing::warn!(error = %e, "cannot reach the service manager");
    }
    statedir::prepare(&s.paths.state_dir)?;
    let _lock = StateLock::acquire(&s.paths.state_dir)?;
    let store = open_store(s).await?;
    let secrets = load_secrets(s)?;
    let mut opts = engine_options(s, true);
    opts.llm = llm_providers(s, &secrets)?;
    opts.notifier = notifier(s, &secrets)?;
    let engine = Engine::start(store, &secrets, opts)?;
    let recovered = engine.recover_in_background().await?;

    // The pipeline registry, shared by the triggers and the socket API.
    let registry = Arc::new(Registry::new(engine.store().clone(), engine.events()).await?);
    registry.set_secrets(&secrets);
    let validate_opts = ValidateOptions::with_plugin_dir(&s.paths.plugins);
    let report = registry.reload(&s.paths.pipelines, &validate_opts).await?;
    tracing::info!(pipelines = registry.list().len(), rejected = report.rejected.len(), dir = %s.paths.pipelines.display(), "pipelines loaded");

    // --- triggers: pipeline directory watcher, cron scheduler, webhook listener, SIGHUP ---
    let stop_triggers = tokio_util::sync::CancellationToken::new();
    let triggers = sluice_daemon::triggers::Triggers::new(engine.clone(), Arc::clone(&registry));
    let watcher = match sluice_daemon::watcher::Watcher::start(
        Arc::clone(&registry),
        &s.paths.pipelines,
        validate_opts.clone(),
        sluice_daemon::watcher::WatchOptions::default(),
        stop_triggers.clone(),
    )
    .await
    {
        Ok((w, _)) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "pipeline files are not watched; SIGHUP still rescans");
            None
        }
    };
    let scheduler = sluice_daemon::triggers::cron::Scheduler::spawn(
        triggers.clone(),
        Arc::new(sluice_daemon::triggers::cron::SystemClock),
        stop_triggers.clone(),
    );

    // --- socket API ---
    let stop_api = tokio_util::sync::CancellationToken::new();
    let access = Access::from_config(s.config.access.as_ref())?;
    // The chain's head is also kept outside the database, so a cut tail is found.
    let audit = Arc::new(
        Audit::open_with_head(
            engine.store().clone(),
            Some(s.paths.state_dir.join("audit.head")),
        )
        .await?,
    );
    tokio::spawn(sluice_daemon::audit::watch_pipelines(
        Arc::clone(&audit),
        engine.subscribe(),
        stop_triggers.clone(),
    ));
    // Limit refusals reach the store and the audit trail in aggregate, every few seconds.
    sluice_daemon::limits::ledger::spawn(
        Arc::clone(engine.limits()),
        engine.store().clone(),
        Some(Arc::clone(&audit)),
        Some(engine.events()),
        stop_triggers.clone(),
    );
    let metrics = Arc::new(Metrics::default());
    metrics.seed(engine.store()).await?;
    let api = ApiContext::new(
        engine.clone(),
        Arc::clone(&registry),
        triggers.clone(),
        Some(scheduler.clone()),
        access,
        audit,
        metrics,
        s.paths.pipelines.clone(),
        validate_opts.clone(),
        s.paths.state_dir.clone(),
        sluice_daemon::api::SocketLimits::from_config(&s.config.socket)?,
    );
    let listener = sluice_daemon::api::bind(&s.paths.socket)?;
    // From here every way out of main removes the socket file (a failed start included).
    let _socket_file = sluice_daemon::api::SocketFile::new(&s.paths.socket);
    tokio::spawn(sluice_daemon::api::serve(listener, api, stop_api.clone()));
    // --- end socket API ---

    let mut webhook_opts = sluice_daemon::triggers::webhook::WebhookOptions {
        max_connections: budget.webhook_connections(),
        ..Default::default()
    };
    if let Some(n) = s.config.http.max_connections_per_peer {
        webhook_opts.max_per_peer = n;
    }
    tracing::info!(
        nofile = budget.soft,
        per_peer = webhook_opts.max_per_peer,
        webhook_connections = webhook_opts.max_connections,
        "file descriptor budget"
    );
    if let Some(text) = &s.config.http.max_body {
        webhook_opts.max_body =
            sluice_daemon::triggers::webhook::parse_size(text).context("[http] max_body")?;
    }
    let exporter = Arc::new(sluice_daemon::prometheus::Exporter::new(
        engine.clone(),
        triggers.clone(),
    ));
    if let Some(name) = &s.config.http.metrics_token
        && secrets.get(name).is_none()
    {
        tracing::warn!(secret = %name, "[http] metrics_token names a secret that is not set; /metrics refuses every scrape");
    }
    let webhook_state = sluice_daemon::triggers::webhook::WebhookState::new(
        triggers.clone(),
        secrets.clone(),
        webhook_opts,
        stop_triggers.clone(),
    )
    .with_metrics(exporter, s.config.http.metrics_token.clone());
    let http_listener = tokio::net::TcpListener::bind(&s.config.http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener to {}", s.config.http.listen))?;
    let http_addr = match http_listener.local_addr() {
        Ok(addr) => {
            tracing::info!(listen = %addr, "webhook listener ready");
            addr.to_string()
        }
        Err(e) => {
            tracing::warn!(error = %e, "webhook listener address unknown");
            s.config.http.listen.clone()
        }
    };
    let http_done = tokio::spawn(sluice_daemon::triggers::webhook::serve(
        http_listener,
        webhook_state.clone(),
        stop_triggers.clone(),
    ));
    webhook_state.set_ready(true);
    {
        // SIGHUP: re-read sluiced.toml (with the same flags), then rescan the pipelines directory.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let (registry, dir, validate, stop, webhook_state) = (
            Arc::clone(&registry),
            s.paths.pipelines.clone(),
            validate_opts.clone(),
            stop_triggers.clone(),
            webhook_state.clone(),
        );
        let limits = Arc::clone(engine.limits());
        let (manager, engine) = (Arc::clone(&manager), engine.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = hup.recv() => if r.is_none() { return },
                    () = stop.cancelled() => return,
                }
                tracing::info!("SIGHUP: reloading sluiced.toml and the pipelines directory");
                if let Err(e) = manager.reloading() {
                    tracing::warn!(error = %e, "cannot tell the service manager about the reload");
                }
                let mut new_validate = None;
                match Cli::try_parse()
                    .map_err(anyhow::Error::from)
                    .and_then(|cli| settings(&cli.common))
                {
                    Ok(new) => {
                        // New limits apply at once; usage counters and running runs are kept.
                        limits.reload(new.config.limits.clone());
                        match load_secrets(&new) {
                            // Node templates keep the secrets the engine started with.
                            Ok(secrets) => {
                                registry.set_secrets(&secrets);
                                webhook_state.set_secrets(secrets);
                            }
                            Err(e) => {
                                tracing::error!(error = %format!("{e:#}"), "secrets not reloaded; keeping the previous ones")
                            }
                        }
                        if new.paths.pipelines != dir {
                            tracing::warn!(dir = %new.paths.pipelines.display(), "the pipelines directory changed; restart sluiced to use it");
                        }
                        new_validate = Some(ValidateOptions::with_plugin_dir(&new.paths.plugins));
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "sluiced.toml not reloaded; keeping the previous configuration")
                    }
                }
                let rescanned = match &watcher {
                    Some(w) => w.rescan(new_validate).await.map_err(anyhow::Error::from),
                    None => registry
                        .reload(&dir, new_validate.as_ref().unwrap_or(&validate))
                        .await
                        .map_err(anyhow::Error::from),
                };
                if let Err(e) = rescanned {
                    tracing::error!(error = %format!("{e:#}"), "rescanning the pipelines directory failed");
                }
                // Ready again whether or not the new files were good: the
                // previous versions keep running (RELOADING=1 … READY=1).
                let status = sluice_daemon::watchdog::status_line(&engine, &registry).await;
                if let Err(e) = manager.ready(&status) {
                    tracing::warn!(error = %e, "cannot tell the service manager the reload is done");
                }
            }
        });
    }
    // --- end triggers ---

    let stop_retention = tokio_util::sync::CancellationToken::new();
    sluice_daemon::retention::spawn(
        engine.store().clone(),
        s.config.retention.clone(),
        stop_retention.clone(),
    );
    tracing::info!(state_dir = %s.paths.state_dir.display(), recovered, "sluiced ready");
    // The store is open, recovery has started, the pipelines are loaded and
    // both listeners are bound (and /readyz answers 200): now systemd may
    // start what orders itself after us.
    let status = sluice_daemon::watchdog::status_line(&engine, &registry).await;
    if let Err(e) = manager.ready(&status) {
        tracing::warn!(error = %e, "cannot tell the service manager we are ready");
    }
    sluice_daemon::watchdog::spawn(
        Arc::clone(&manager),
        engine.clone(),
        Arc::clone(&registry),
        stop_retention.clone(),
    );
    // Announce readiness to whoever started us (tests wait for this line).
    eprintln!(
        "sluiced: ready (state {}, socket {}, http {http_addr})",
        s.paths.state_dir.display(),
        s.paths.socket.display()
    );
    wait_for_stop().await?;
    if let Err(e) = manager.stopping() {
        tracing::warn!(error = %e, "cannot tell the service manager we are stopping");
    }
    tracing::info!("stopping: letting running nodes finish");
    // --- triggers: stop intake first (no new runs), then the rest below ---
    stop_triggers.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), http_done).await;
    stop_api.cancel();
    let _ = std::fs::remove_file(&s.paths.socket);
    stop_retention.cancel();
    engine.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// `-i name=value` read as the types the pipeline declares (shared with `sluice -i`).
fn parse_inputs(pipeline: &Pipeline, pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let declared = DeclaredInput::from_specs(&pipeline.inputs);
    sluice_shared::inputs::from_assignments(pairs, Some(&declared)).map_err(anyhow::Error::msg)
}

fn load_pipeline(s: &Settings, file: &Path) -> anyhow::Result<Option<Pipeline>> {
    let opts = ValidateOptions::with_plugin_dir(&s.paths.plugins);
    // Load the file's directory too, so a `template:` can be resolved.
    let mut paths = vec![file.to_owned()];
    if let Some(dir) = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && d.is_dir())
    {
        paths = vec![dir.to_owned()];
    }
    let set = sluice_shared::load_paths(&paths, &opts);
    let canonical = std::fs::canonicalize(file).ok();
    let entry = set
        .files
        .into_iter()
        .find(|f| std::fs::canonicalize(&f.path).ok() == canonical)
        .or_else(|| {
            let single = sluice_shared::load_paths(&[file.to_owned()], &opts);
            single.files.into_iter().next()
        });
    let Some(entry) = entry else {
        bail!("{}: not a pipeline file", file.display());
    };
    if !entry.is_valid() {
        for d in &entry.diagnostics {
            eprintln!("{d}");
        }
        return Ok(None);
    }
    if entry.kind == sluice_shared::loader::FileKind::Template {
        bail!(
            "{} is a template; run a file that instantiates it",
            file.display()
        );
    }
    Ok(entry.pipeline)
}

fn current_user() -> Option<String> {
    std::env::var("USER").ok().filter(|u| !u.is_empty())
}

async fn submit(s: &Settings, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(pipeline) = load_pipeline(s, &args.file)? else {
        return Ok(ExitCode::from(2));
    };
    let inputs = parse_inputs(&pipeline, &args.inputs)?;
    // The queued run executes as the daemon's user: the same trust checks apply.
    statedir::prepare(&s.paths.state_dir)?;
    let store = open_store(s).await?;
    let run = sluice_daemon::engine::enqueue(
        &store,
        &pipeline,
        Some(&args.file),
        &inputs,
        TriggerInfo::manual(current_user()),
    )
    .await?;
    store.flush().await?;
    if args.json {
        println!("{}", serde_json::json!({ "run": run.0, "state": "queued" }));
    } else {
        println!("{run} queued");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_once(s: &Settings, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(pipeline) = load_pipeline(s, &args.file)? else {
        return Ok(ExitCode::from(2));
    };
    let inputs = parse_inputs(&pipeline, &args.inputs)?;
    statedir::prepare(&s.paths.state_dir)?;
    let _lock = StateLock::acquire(&s.paths.state_dir)?;
    let store = open_store(s).await?;
    let secrets = load_secrets(s)?;
    let mut opts = engine_options(s, false);
    opts.llm = llm_providers(s, &secrets)?;
    opts.notifier = notifier(s, &secrets)?;
    let engine = Engine::start(store.clone(), &secrets, opts)?;
    let run = engine
        .submit(
            &pipeline,
            Some(&args.file),
            &inputs,
            TriggerInfo::manual(current_user()),
        )
        .await?;
    let record = tokio::select! {
        r = engine.wait(run) => r?,
        r = wait_for_stop() => {
            r?;
            engine.cancel(run).await?;
            engine.wait(run).await?
        }
    };
    let nodes = store.nodes(run).await?;
    if args.json {
        let doc = serde_json::json!({
            "run": run.0,
            "pipeline": record.pipeline,
            "state": record.state,
            "error": record.error,
            "nodes": nodes.iter().map(|n| serde_json::json!({
                "id": n.node_id,
                "state": n.state,
                "attempts": n.attempts,
                "output": n.output,
                "error": n.error,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{run} {} {}", record.pipeline, record.state);
        let mut widths = BTreeMap::new();
        widths.insert(
            "id",
            nodes
                .iter()
                .map(|n| n.node_id.len())
                .max()
                .unwrap_or(2)
                .max(4),
        );
        for n in &nodes {
            let output = n
                .output
                .as_ref()
                .map(|o| truncate(&o.to_string(), 60))
                .unwrap_or_default();
            println!(
                "  {:<w$}  {:<9}  {:>2}  {}",
                n.node_id,
                n.state.as_str(),
                n.attempts,
                output,
                w = widths["id"]
            );
            if let Some(e) = &n.error
                && n.state != sluice_shared::run::NodeState::Succeeded
            {
                println!("  {:<w$}  {}", "", truncate(e, 70), w = widths["id"]);
            }
        }
        if let Some(e) = &record.error {
            println!("error: {e}");
        }
    }
    engine.shutdown().await;
    Ok(if record.state == RunState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
