//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sluice: pipeline automation for a single server.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files offline and print each valid file's node order.
    Validate(ValidateArgs),
    /// Cron helpers.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Print the JSON Schema of pipeline files.
    Schema,
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
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
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
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
