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
    /// Collect GPU evidence through NVML and print the NRAS payload: run it on the target
    /// machine to check the NVIDIA path before deploying with `attestation.gpu: nvml`.
    GpuEvidence(GpuEvidenceArgs),
}

/// `signet gpu-evidence`.
#[derive(Debug, Args)]
pub struct GpuEvidenceArgs {
    /// Nonce to take the evidence with (64 hex chars); random if omitted.
    #[arg(long)]
    pub nonce: Option<String>,
    /// Try the evidence calls even when NVML says confidential computing is off.
    #[arg(long)]
    pub skip_cc_check: bool,
}

/// `signet serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Pingora's flags: -c FILE (required), -d daemonize, -u upgrade from a running
    /// signet, -t check the configuration and exit.
    #[command(flatten)]
    pub pingora: Opt,
}
