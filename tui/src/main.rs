//! `sluice`: the operations console and command-line client for sluiced.

mod cli;
mod cmd;
mod exit;
mod output;
mod table;

use clap::{CommandFactory, Parser};

use cli::Command;
use exit::{Exit, Failure};
use sluice_tui::console::{self, ConsoleOptions};

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Parses the command line. Under `--json` a usage error is a JSON error
/// object on stdout too (exit 2), so scripts parse every outcome; help and
/// version print as usual.
fn parse() -> Result<cli::Cli, std::process::ExitCode> {
    match cli::Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            let shown = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if !shown && std::env::args_os().any(|a| a == "--json") {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                let message = first.trim_start_matches("error: ").to_owned();
                report(&Failure::usage(message), true);
            }
            let _ = e.print();
            Err(std::process::ExitCode::from(
                u8::try_from(e.exit_code()).unwrap_or(2),
            ))
        }
    }
}

/// Reports a failure: `sluice: error: …` on stderr, and under `--json` the
/// error object on stdout.
fn report(f: &Failure, json: bool) {
    if json {
        let _ = output::emit(&format!("{}\n", f.to_json()));
    }
    output::error(&f.message);
}

fn main() -> std::process::ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let json = cli.json;
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(sluice_shared::paths::default_socket);
    let console_opts = |socket, c: &cli::ConsoleArgs| ConsoleOptions {
        socket,
        readonly: c.readonly,
        color: c.color,
        ascii: c.ascii,
        keys: c.keys.clone(),
    };
    let Some(command) = cli.command else {
        // No subcommand: the console. It starts even when the daemon is down.
        let result = runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(console::run(console_opts(socket, &cli.console))));
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
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cli::Cli::command(), "sluice", &mut text);
            output::emit(&String::from_utf8_lossy(&text))
                .map(|()| Exit::Success)
                .map_err(Into::into)
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(cli::Cli::command())
                .render(&mut text)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(output::emit(&String::from_utf8_lossy(&text))?))
                .map(|()| Exit::Success)
        }
        Command::Demo {
            no_console,
            console,
        } => match runtime() {
            Ok(rt) => rt.block_on(cmd::demo::run(
                no_console,
                console_opts(std::path::PathBuf::new(), &console),
            )),
            Err(e) => Err(e.into()),
        },
        remote => {
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    report(
                        &Failure::new(Exit::Failure, format!("cannot start: {e}")),
                        json,
                    );
                    return Exit::Failure.into();
                }
            };
            match runtime.block_on(cmd::remote::run(remote, socket, json)) {
                Ok(code) => Ok(code),
                Err(f) => {
                    report(&f, json);
                    return f.exit.into();
                }
            }
        }
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            // A command's own failure keeps its exit code; anything else is a failure.
            let f = match err.downcast::<Failure>() {
                Ok(f) => f,
                Err(err) => Failure::new(Exit::Failure, format!("{err:#}")),
            };
            report(&f, json);
            f.exit.into()
        }
    }
}
