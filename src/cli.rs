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
// Parsed once per run: the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the gateway from a configuration file.
    Serve(ServeArgs),
    /// Collect GPU evidence through NVML and print the NRAS payload: run it on the target
    /// machine to check the NVIDIA path before deploying with `attestation.gpu: nvml`.
    GpuEvidence(GpuEvidenceArgs),
    /// Check a gateway end to end: attestation, GPU evidence, and a signed completion.
    Verify(VerifyArgs),
    /// Recover the address that signed a text (EIP-191), optionally checking it.
    VerifySignature(VerifySignatureArgs),
    /// Re-check an archived ACI receipt against an archived ACI report, offline.
    VerifyReceipt(VerifyReceiptArgs),
}

/// `signet verify-receipt`.
#[derive(Debug, Args)]
pub struct VerifyReceiptArgs {
    /// The receipt, as `GET /v1/aci/receipts/{id}` served it (any JSON encoding).
    pub file: std::path::PathBuf,
    /// The attestation report, as `GET /v1/aci/attestation` served it.
    #[arg(long)]
    pub report: std::path::PathBuf,
    /// The nonce the report was fetched with (default: the report's `evidence.gpu_nonce`,
    /// or none for a report fetched without one).
    #[arg(long)]
    pub nonce: Option<String>,
    /// The request body sent, to compare with the receipt's `request.received`.
    #[arg(long)]
    pub request: Option<std::path::PathBuf>,
    /// The response body received (SSE framing included), to compare with
    /// `response.returned`.
    #[arg(long)]
    pub response: Option<std::path::PathBuf>,
    /// Accept a dev-mode report (mock quote): NOT hardware-rooted.
    #[arg(long)]
    pub allow_dev: bool,
    /// Intel collateral for the report's quote, saved as JSON: check its chain to Intel's
    /// root offline.
    #[arg(long)]
    pub collateral: Option<std::path::PathBuf>,
    /// Also accept this TCB status (e.g. OutOfDate); repeatable. Revoked is never accepted.
    #[arg(long = "accept-tcb", value_name = "STATUS")]
    pub accept_tcb: Vec<String>,
    /// Judge the collateral as of this time (Unix seconds or RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// What the report's source provenance must name.
    #[command(flatten)]
    pub provenance: ProvenanceArgs,
    /// Print the checklist as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--expect-*`: the source the ACI report must name (`source_provenance`).
#[derive(Debug, Args)]
pub struct ProvenanceArgs {
    /// The commit the report's `source_provenance.repo_commit` must be.
    #[arg(long, value_name = "COMMIT")]
    pub expect_commit: Option<String>,
    /// The image digest (`sha256:<hex>`) `source_provenance.image_digest` must be.
    #[arg(long, value_name = "DIGEST")]
    pub expect_image_digest: Option<String>,
    /// The repository URL `source_provenance.repo_url` must be.
    #[arg(long, value_name = "URL")]
    pub expect_repo: Option<String>,
}

/// `signet verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The gateway's base URL, e.g. https://gateway.example:8000
    #[arg(long)]
    pub url: String,
    /// Bearer token for completions and signature lookups.
    #[arg(long)]
    pub token: Option<String>,
    /// Model for the test completion (default: the first listed by /v1/models).
    #[arg(long)]
    pub model: Option<String>,
    /// Prompt for the test completion.
    #[arg(long, default_value = "Say hello in five words.")]
    pub prompt: String,
    /// Accept a dev-mode gateway (mock quote, recorded GPU evidence): NOT hardware-rooted.
    #[arg(long)]
    pub allow_dev: bool,
    /// Accept a report without GPU evidence (CPU-only gateways).
    #[arg(long)]
    pub allow_no_gpu: bool,
    /// Intel collateral for the quote, saved as JSON: verify offline.
    #[arg(long, conflicts_with = "pccs_url")]
    pub collateral: Option<std::path::PathBuf>,
    /// PCCS (or Intel PCS) to fetch collateral from [default: Intel's PCS].
    #[arg(long)]
    pub pccs_url: Option<String>,
    /// Also accept this TCB status (e.g. OutOfDate, SWHardeningNeeded); repeatable.
    /// Revoked is never accepted.
    #[arg(long = "accept-tcb", value_name = "STATUS")]
    pub accept_tcb: Vec<String>,
    /// Verify collateral as of this time (Unix seconds or RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    /// NVIDIA NRAS endpoint to judge the GPU evidence, e.g.
    /// https://nras.attestation.nvidia.com/v3/attest/gpu
    #[arg(long)]
    pub nras_url: Option<String>,
    /// NVIDIA's NRAS signing keys (a JWK set saved from the NRAS host's
    /// /.well-known/jwks.json) to check its tokens offline [default: fetched from the
    /// --nras-url host].
    #[arg(long, value_name = "FILE", requires = "nras_url")]
    pub nras_jwks: Option<std::path::PathBuf>,
    /// Extra CA certificate(s), PEM, to trust for https.
    #[arg(long)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Timeout of each HTTP exchange, e.g. 60s.
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// Print the checklist as JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not require the report to bind the TLS certificate this client saw (the default
    /// for https URLs is to require it).
    #[arg(long)]
    pub no_tls_binding: bool,
    /// What the ACI report's source provenance must name.
    #[command(flatten)]
    pub provenance: ProvenanceArgs,
}

/// `signet verify-signature`.
#[derive(Debug, Args)]
pub struct VerifySignatureArgs {
    /// The signed text, `<sha256(request)>:<sha256(response)>`.
    #[arg(long)]
    pub text: String,
    /// The signature, 130 hex chars, with or without 0x.
    #[arg(long)]
    pub signature: String,
    /// The expected signer; a mismatch exits non-zero.
    #[arg(long)]
    pub address: Option<String>,
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
