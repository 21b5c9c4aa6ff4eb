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
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Command {
    /// Run the controller (the default subcommand).
    Run,
    /// Run a policy on a scenario in the data-center simulator.
    Simulate(shoal_controller::sim::SimulateArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            eprintln!("shoal-controller: run is not built yet (issue 2)");
            std::process::exit(2);
        }
        Command::Simulate(args) => {
            if let Err(e) = shoal_controller::sim::run_cli(&args) {
                eprintln!("shoal-controller simulate: {e}");
                std::process::exit(2);
            }
        }
    }
}
