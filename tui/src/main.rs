//! `sluice`: the operations console and command-line client for sluiced.

mod cli;
mod client;
mod cmd;
mod exit;
mod output;
mod table;

use clap::Parser;

use cli::Command;
use exit::Exit;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let json = cli.json;
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args, json),
        Command::Cron(cli::CronCommand::Next(args)) => cmd::cron::next(&args, json),
        Command::Schema => output::emit(&sluice_shared::schema::pipeline_schema_json())
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Demo => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(cmd::demo::run()),
            Err(e) => Err(e.into()),
        },
        remote => {
            let socket = cli
                .socket
                .clone()
                .unwrap_or_else(sluice_shared::paths::default_socket);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sluice: error: cannot start: {e}");
                    return Exit::Failure.into();
                }
            };
            match runtime.block_on(cmd::remote::run(remote, socket, json)) {
                Ok(code) => Ok(code),
                Err(f) => {
                    eprintln!("sluice: error: {}", f.message);
                    return f.exit.into();
                }
            }
        }
    };
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("sluice: error: {err:#}");
            Exit::Failure.into()
        }
    }
}
