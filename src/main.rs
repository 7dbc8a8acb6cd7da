//! The `signet` binary: parse the command line, set up logging, dispatch.

use clap::Parser;
use signet::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    signet::logging::init();
    match cli.command {
        Command::Serve(args) => signet::app::serve(args),
        Command::GpuEvidence(args) => signet::app::gpu_evidence(args),
        Command::Verify(args) => signet::app::verify(args),
        Command::VerifySignature(args) => signet::app::verify_signature(args),
        Command::VerifyReceipt(args) => signet::app::verify_receipt(args),
    }
}
