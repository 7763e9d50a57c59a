//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use sluice_tui::console::ColorChoice;

/// sluice: pipeline automation for a single server.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// The daemon's socket (default: SLUICE_SOCKET, then the standard locations).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Console options (only where a console opens: here and `sluice demo`).
    #[command(flatten)]
    pub console: ConsoleArgs,
    /// What to do; without a subcommand the console opens.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags of the console. Not global: they mean nothing to the other
/// subcommands, so their `--help` does not list them.
#[derive(Clone, Debug, Args)]
pub struct ConsoleArgs {
    /// Console: colours (auto honours NO_COLOR).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Console: ASCII symbols for terminals without Unicode.
    #[arg(long)]
    pub ascii: bool,
    /// Console: disable every state-changing key.
    #[arg(long)]
    pub readonly: bool,
    /// Console: keys file (default ~/.config/sluice/console.toml).
    #[arg(long, value_name = "PATH")]
    pub keys: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a private daemon with demo pipelines, start some runs and open the console.
    Demo {
        /// Print a live event feed instead of opening the console.
        #[arg(long)]
        no_console: bool,
        /// The console's options.
        #[command(flatten)]
        console: ConsoleArgs,
    },
    /// Daemon status: version, uptime, runs by state.
    Status,
    /// Pipelines with their triggers, next fire time and last result.
    Pipelines,
    /// Runs, newest first.
    Runs(RunsArgs),
    /// One run: its nodes, attempts, outputs and errors.
    Run {
        /// Run id (`12` or `#12`).
        id: String,
    },
    /// A run's log lines; `-f` follows until the run ends.
    Logs {
        /// Run id.
        id: String,
        /// Only this node.
        node: Option<String>,
        /// Keep printing new lines until the run finishes.
        #[arg(short, long)]
        follow: bool,
    },
    /// Start a run of a pipeline.
    Trigger {
        /// Pipeline name.
        name: String,
        /// Input value `name=value`, read as the type the pipeline declares: text for
        /// string inputs, n=3, flag=true, list='[1,2]'; a value that does not fit is refused.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Wait for the run to finish; exit 1 if it did not succeed.
        #[arg(long)]
        wait: bool,
        /// Start at most one run per key (1 to 128 characters): repeating the
        /// command with the same key, e.g. after a timeout, gets the first
        /// run back instead of a second (keys are kept for 15 minutes).
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Cancel a run.
    Cancel {
        /// Run id.
        id: String,
    },
    /// Retry a finished run (reusing what succeeded, or `--all`).
    Retry {
        /// Run id.
        id: String,
        /// Run every node again.
        #[arg(long)]
        all: bool,
    },
    /// Approvals waiting for a decision.
    Approvals {
        /// Include decided ones.
        #[arg(long)]
        all: bool,
    },
    /// Approve a pending approval.
    Approve {
        /// Approval id.
        id: i64,
        /// Why (kept with the decision).
        #[arg(short = 'm', long = "reason", visible_alias = "message")]
        reason: Option<String>,
    },
    /// Reject a pending approval (a reason is required).
    Reject {
        /// Approval id.
        id: i64,
        /// Why (required; kept with the decision).
        #[arg(
            short = 'm',
            long = "reason",
            visible_alias = "message",
            required = true
        )]
        reason: String,
    },
    /// Let triggers start a pipeline again.
    Enable {
        /// Pipeline name.
        name: String,
    },
    /// Stop triggers from starting a pipeline.
    Disable {
        /// Pipeline name.
        name: String,
    },
    /// The audit trail; `audit verify` checks its hash chain and head,
    /// `audit ack` (admin) acknowledges a detected cut so the trail continues.
    Audit {
        /// `verify` checks the chain; `ack` acknowledges a broken trail.
        #[arg(value_parser = ["verify", "ack"])]
        action: Option<String>,
        /// Rows to show.
        #[arg(short = 'n', default_value_t = 20)]
        limit: u32,
        /// With `ack`: what was found or done, kept in the acknowledging row.
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve a node left in needs_decision by a crash.
    Resolve {
        /// Run id.
        id: String,
        /// Node id.
        node: String,
        /// What to do.
        action: ResolveAction,
        /// With `succeed`: the node's output as JSON.
        #[arg(long)]
        output: Option<String>,
        /// With `fail`: why.
        #[arg(short = 'm', long = "reason", visible_alias = "message")]
        reason: Option<String>,
    },
    /// Pipeline files the daemon rejected, with why (as `sluice validate` prints it).
    Errors,
    /// Make the daemon re-read its pipelines directory now.
    Reload,
    /// Cron schedules with their next fire time.
    Schedules,
    /// Pause a pipeline's cron schedules (all, or one by id) without editing its file.
    Pause {
        /// Pipeline name.
        pipeline: String,
        /// Schedule id (see `sluice schedules`).
        id: Option<String>,
    },
    /// Resume paused cron schedules.
    Resume {
        /// Pipeline name.
        pipeline: String,
        /// Schedule id.
        id: Option<String>,
    },
    /// Cron fires that were due and did not run as scheduled (the misfire ledger).
    Misfires {
        /// Only this pipeline.
        pipeline: Option<String>,
    },
    /// Each user's usage against the limits; `limits explain RUN` says why a queued run waits.
    Limits {
        /// `usage` (the default) or `explain`.
        #[command(subcommand)]
        action: Option<LimitsCommand>,
    },
    /// Users' webhook tokens (admin): create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check pipeline files offline and print each valid file's node order.
    Validate(ValidateArgs),
    /// Cron helpers.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Print the JSON Schema of pipeline files.
    Schema,
    /// Print a shell completion script (see the README for where to put it).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `sluice man | man -l -`.
    #[command(alias = "manpage")]
    Man,
}

/// `sluice limits ...`.
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Each user's usage against each limit.
    Usage {
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Why a queued run has not started: which cap, how many runs ahead of it.
    Explain {
        /// Run id.
        run: String,
    },
}

/// `sluice token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a webhook token for a user; it is printed once, only its hash is kept.
    Create {
        /// The user the token's triggers belong to.
        #[arg(long)]
        user: String,
        /// The only pipeline it may trigger.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Tokens (never the tokens themselves).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: i64,
    },
}

/// How to resolve a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResolveAction {
    /// Attempt it again.
    Retry,
    /// Mark it succeeded.
    Succeed,
    /// Fail it.
    Fail,
}

/// `sluice runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this pipeline.
    #[arg(long, short)]
    pub pipeline: Option<String>,
    /// Only this state (repeatable).
    #[arg(long, short)]
    pub state: Vec<String>,
    /// Only this trigger kind (manual, cron, webhook, retry).
    #[arg(long)]
    pub trigger: Option<String>,
    /// Only runs of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Runs older than this id (paging).
    #[arg(long)]
    pub before: Option<String>,
    /// How many.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u32,
}

/// `sluice validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files or directories of them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Plugins directory holding sluice-node-<kind> executables.
    #[arg(long = "plugins", env = "SLUICE_PLUGINS")]
    pub plugins: Option<PathBuf>,
}

/// `sluice cron ...`.
#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Print the next fire times of a cron expression.
    Next(CronNextArgs),
}

/// `sluice cron next`.
#[derive(Debug, Args)]
pub struct CronNextArgs {
    /// The expression, e.g. "0 7 * * MON-FRI" or "@daily".
    pub expr: String,
    /// IANA time zone (default: the system's).
    #[arg(long)]
    pub tz: Option<String>,
    /// Start after this RFC 3339 time (default: now).
    #[arg(long)]
    pub after: Option<String>,
    /// How many fire times to print.
    #[arg(short = 'n', default_value_t = 5)]
    pub count: usize,
    /// Accept a sixth, leading seconds field.
    #[arg(long)]
    pub seconds: bool,
}
