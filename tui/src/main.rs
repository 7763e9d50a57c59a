//! `sluice`: the operations console and command-line client for sluiced.

mod cli;
mod cmd;
mod exit;
mod output;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Validate(args) => cmd::validate::run(&args),
        cli::Command::Cron(cli::CronCommand::Next(args)) => cmd::cron::next(&args),
        cli::Command::Schema => output::emit(&sluice_shared::schema::pipeline_schema_json())
            .map(|()| exit::Exit::Success)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("sluice: error: {err:#}");
            exit::Exit::Failure.into()
        }
    }
}
