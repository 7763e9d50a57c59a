//! `sluiced`: the sluice daemon. Only a placeholder until the engine lands.

use clap::Parser;

/// sluiced: runs sluice pipelines.
#[derive(Debug, Parser)]
#[command(name = "sluiced", version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
    println!(
        "sluiced {} (the engine is not built yet)",
        env!("CARGO_PKG_VERSION")
    );
}
