//! `shoal-controller` entry point: `run` (the default) starts the controller;
//! other subcommands are offline tools.

use clap::{Parser, Subcommand};

/// Shoal: OpenFlow 1.3 controller for Open vSwitch data centers.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-controller",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default subcommand).
    Run,
}

fn main() {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            eprintln!("shoal-controller: run is not built yet (issue 2)");
            std::process::exit(2);
        }
    }
}
