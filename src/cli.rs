//! The command line: `signet serve` runs the gateway (Pingora's own `-c`, `-d`, `-u`, `-t`
//! flags are kept), and further subcommands are client-side tools.

use clap::{Args, Parser, Subcommand};
use pingora_core::server::configuration::Opt;

/// signet: a Pingora gateway that signs every chat completion inside a TEE.
#[derive(Debug, Parser)]
#[command(name = "signet", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway from a configuration file.
    Serve(ServeArgs),
}

/// `signet serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Pingora's flags: -c FILE (required), -d daemonize, -u upgrade from a running
    /// signet, -t check the configuration and exit.
    #[command(flatten)]
    pub pingora: Opt,
}
