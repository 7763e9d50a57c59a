//! `sluice`: the operations console and command-line client for sluiced.

mod cli;
mod cmd;
mod exit;
mod output;
mod table;

// The socket client lives in the library (the console uses it too).
use sluice_tui::client;

use clap::Parser;

use cli::Command;
use exit::Exit;
use sluice_tui::console::{self, ConsoleOptions};

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let json = cli.json;
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(sluice_shared::paths::default_socket);
    let console_opts = |socket| ConsoleOptions {
        socket,
        readonly: cli.readonly,
        color: cli.color,
        ascii: cli.ascii,
        keys: cli.keys.clone(),
    };
    let Some(command) = cli.command else {
        // No subcommand: the console. It starts even when the daemon is down.
        let result = runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(console::run(console_opts(socket))));
        return match result {
            Ok(()) => Exit::Success.into(),
            Err(err) => {
                eprintln!("sluice: error: {err:#}");
                Exit::Failure.into()
            }
        };
    };
    let result = match command {
        Command::Validate(args) => cmd::validate::run(&args, json),
        Command::Cron(cli::CronCommand::Next(args)) => cmd::cron::next(&args, json),
        Command::Schema => output::emit(&sluice_shared::schema::pipeline_schema_json())
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Completions { shell } => {
            // Into memory first: `generate` panics on a write error (a closed pipe).
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "sluice", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map(|()| Exit::Success)
                .map_err(Into::into)
        }
        Command::Manpage => clap_mangen::Man::new(<cli::Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Demo { no_console } => match runtime() {
            Ok(rt) => rt.block_on(cmd::demo::run(
                no_console,
                console_opts(std::path::PathBuf::new()),
            )),
            Err(e) => Err(e.into()),
        },
        remote => {
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sluice: error: cannot start: {e}");
                    return Exit::Failure.into();
                }
            };
            match runtime.block_on(cmd::remote::run(remote, socket, json)) {
                Ok(code) => Ok(code),
                Err(f) => {
                    output::error(&f.message);
                    return f.exit.into();
                }
            }
        }
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            output::error(&format!("{err:#}"));
            Exit::Failure.into()
        }
    }
}
