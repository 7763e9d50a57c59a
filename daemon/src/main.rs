//! `sluiced`: the sluice daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

use sluice_daemon::api::identity::Access;
use sluice_daemon::engine::Engine;
use sluice_daemon::statedir::{self, StateLock};
use sluice_daemon::systemd::ServiceManager;
use sluice_daemon::{Daemon, Overrides, Settings};
use sluice_shared::Pipeline;
use sluice_shared::inputs::DeclaredInput;
use sluice_shared::run::{RunState, TriggerInfo};

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
    /// Removed: refuses with the command to use instead (`sluice trigger`). It
    /// wrote runs into the state directory behind the daemon's back, past its
    /// roles, limits, audit trail and idempotency keys.
    #[command(hide = true, disable_help_flag = true)]
    Submit {
        /// Whatever was given; only read to word the error.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        // Before anything is read or opened: the state directory is not touched.
        Some(Command::Submit { args }) => {
            eprintln!("{}", submit_removed(args));
            return ExitCode::from(2);
        }
        _ => {}
    }
    // Before any thread or file exists (the log file writer makes both): the
    // daemon's files are private from the start, and node processes get back
    // the umask we were given.
    // SAFETY: umask only swaps the process's file mode mask.
    let inherited = unsafe { libc::umask(0o077) };
    sluice_daemon::nodes::process::set_child_umask(inherited, 0o077);
    // Node processes are started without code between fork and exec, so no
    // descriptor a parent handed down may reach them.
    sluice_daemon::nodes::process::seal_inherited_descriptors();
    let s = match Settings::load(cli.common.overrides()) {
        Ok(s) => s.with_service_manager(manager),
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
    let s = match sluice_daemon::fdlimit::raise() {
        Ok(b) => {
            if b.soft != b.before {
                tracing::debug!(
                    from = b.before,
                    to = b.soft,
                    "raised the file descriptor limit"
                );
            }
            s.with_fd_budget(b)
        }
        Err(e) => {
            // The settings' default budget (1024) stands.
            tracing::warn!(error = %e, "cannot raise the file descriptor limit; keeping it");
            s
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
    match runtime.block_on(run(cli, s)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "sluiced stopped on an error");
            eprintln!("sluiced: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

impl Common {
    /// The flags that override `sluiced.toml`.
    fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            state_dir: self.state_dir.clone(),
            pipelines: self.pipelines.clone(),
            socket: self.socket.clone(),
            listen: self.listen.clone(),
            plugins: self.plugins.clone(),
        }
    }
}

async fn run(cli: Cli, s: Settings) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => serve(s).await,
        Some(Command::RunOnce(args)) => run_once(&s, &args).await,
        Some(Command::CheckConfig) => check_config(&s).await,
        // Handled before the runtime started.
        Some(Command::Completions { .. } | Command::Man | Command::Submit { .. }) => {
            Ok(ExitCode::SUCCESS)
        }
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
    match s.store_options() {
        Ok(options) => {
            if let Err(e) = options.check() {
                problem(format!("[store] {e}"));
            }
        }
        Err(e) => problem(format!("{:#}", anyhow::Error::from(e))),
    }
    match s.load_secrets() {
        Ok(secrets) => {
            if let Err(e) = s.llm_providers(&secrets) {
                problem(format!("[llm] {e:#}"));
            }
            if let Err(e) = s.notifier(&secrets) {
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
        let opts = s.validate_options();
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

/// The daemon itself, until SIGTERM or SIGINT; SIGHUP reloads.
async fn serve(s: Settings) -> anyhow::Result<ExitCode> {
    // Before the start: a signal during it waits for the start to finish
    // instead of ending the process. The listeners answer (`/readyz`) before
    // the start returns, and a SIGINT that found no handler then was lost
    // for good when the daemon was started in the background by a script
    // (its SIGINT is ignored, and that disposition is inherited).
    let mut hup = signal(SignalKind::hangup())?;
    let stop = wait_for_stop()?;
    let daemon = Daemon::start(s).await?;
    let reloader = daemon.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading sluiced.toml and the pipelines directory");
            reloader.reload().await;
        }
    });
    // Announce readiness to whoever started us (tests wait for this line).
    eprintln!(
        "sluiced: ready (state {}, socket {}, http {})",
        daemon.state_dir().display(),
        daemon.socket_path().display(),
        daemon.http_addr()
    );
    stop.await;
    daemon.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves at the first SIGTERM or SIGINT; the handlers are installed now.
fn wait_for_stop() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// `-i name=value` read as the types the pipeline declares (shared with `sluice -i`).
fn parse_inputs(pipeline: &Pipeline, pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let declared = DeclaredInput::from_specs(&pipeline.inputs);
    sluice_shared::inputs::from_assignments(pairs, Some(&declared)).map_err(anyhow::Error::msg)
}

fn load_pipeline(s: &Settings, file: &Path) -> anyhow::Result<Option<Pipeline>> {
    let opts = s.validate_options();
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

async fn run_once(s: &Settings, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(pipeline) = load_pipeline(s, &args.file)? else {
        return Ok(ExitCode::from(2));
    };
    let inputs = parse_inputs(&pipeline, &args.inputs)?;
    statedir::prepare(&s.paths.state_dir)?;
    let _lock = StateLock::acquire(&s.paths.state_dir)?;
    let store = s.open_store().await?;
    let secrets = s.load_secrets()?;
    let mut opts = s.engine_options();
    opts.llm = s.llm_providers(&secrets)?;
    opts.notifier = s.notifier(&secrets)?;
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
        () = wait_for_stop()? => {
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

/// The error `sluiced submit` answers with: what replaced it, worded for the
/// file it was given (a pipeline's name is its file's stem unless the file
/// sets `name:`).
fn submit_removed(args: &[String]) -> String {
    let mut files = Vec::new();
    let mut inputs = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-i" | "--input" => {
                inputs = true;
                it.next();
            }
            "--config" | "--state-dir" | "--pipelines" | "--socket" | "--listen" | "--plugins" => {
                it.next();
            }
            a if a.starts_with("--input=") || (a.starts_with("-i") && a.len() > 2) => {
                inputs = true;
            }
            a if a.starts_with('-') => {}
            a => files.push(a),
        }
    }
    let pipeline_file = |f: &&str| {
        Path::new(f)
            .extension()
            .is_some_and(|e| ["yaml", "yml", "toml", "json"].iter().any(|x| e == *x))
    };
    let file = files
        .iter()
        .copied()
        .find(pipeline_file)
        .or_else(|| files.first().copied());
    let name = file.and_then(|f| Path::new(f).file_stem()).map_or_else(
        || "PIPELINE".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    let example = if inputs {
        format!("sluice trigger {name} -i NAME=VALUE")
    } else {
        format!("sluice trigger {name}")
    };
    format!(
        "sluiced: error: `sluiced submit` was removed: it wrote runs into the state directory \
         behind the daemon's back, past its roles, limits, audit trail and idempotency keys.\n\
         Trigger runs through the running daemon instead: put the file in its pipelines \
         directory and run `{example}` (add --wait to wait for the result); a pipeline's \
         name is its file's stem unless the file sets `name:`.\n\
         To run a file in the foreground where no daemon serves the state directory: \
         `sluiced run-once FILE`."
    )
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
