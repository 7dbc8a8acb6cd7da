//! Attestation: `GET /v1/attestation/report` (docs/API.md §5).
//!
//! A report binds the signing key to the TEE: the TDX quote's report_data is
//! `signing address (20 bytes) ‖ 12 zero bytes ‖ nonce (32 bytes)`, and the NVIDIA GPU
//! evidence is taken for the same nonce. Quotes come from a [`QuoteProvider`] (configfs-tsm,
//! the dstack agent, or the explicit `dev` mock) and GPU evidence from a
//! [`GpuEvidenceSource`] (NVML, a recorded `dev` fixture, or none). Both are gathered
//! concurrently under one timeout, and every quote is parsed and its report_data checked
//! against what was asked for before it is served.
//!
//! This crate does not know about HTTP: [`Attestor::answer`] takes the query string and
//! returns the report or the envelope, which the server writes.

pub mod configfs;
mod dev;
pub mod dev_gpu;
pub mod dstack;
mod gate;
pub mod nvidia;
pub mod nvml;
pub mod quote;
pub mod settings;

pub use dev::DevQuoteProvider;
pub use nvidia::{GpuEvidence, NoGpuEvidence, nras_payload, nras_payload_for, spdm_request_nonce};

use crate::settings::{
    AttestationMode, AttestationSettings, GpuEvidenceMode, NrasClaimsVersion, QuoteEncoding,
};
use async_trait::async_trait;
use base64::Engine;
use signet_core::error::ApiError;
use signet_core::ids::Nonce;
use signet_core::query::{
    SigningAlgo, check_model_param, parse_nonce_query, query_param, signing_address_param,
    signing_algo_param, tls_binding_param,
};
pub use signet_core::report::{
    AttestationReport, REPORT_DATA_OFFSET, SignerIdentity, ed25519_report_data,
    ed25519_tls_bound_report_data, report_data, tls_bound_report_data,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a report could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// The configured provider is not present on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// The provider failed for this request.
    #[error("quote provider failed: {0}")]
    Provider(String),
    /// GPU evidence could not be collected.
    #[error("GPU evidence failed: {0}")]
    Gpu(String),
    /// The provider took longer than the configured timeout.
    #[error("attestation timed out after {0:?}")]
    Timeout(Duration),
    /// The quote is not a TDX quote signet can parse.
    #[error("the quote does not parse: {0}")]
    Unparseable(String),
    /// The quote's report_data is not what was asked for.
    #[error("the quote's report_data does not bind the signing address and nonce")]
    BindingMismatch,
    /// Every place for a fresh report is taken and the waiting line is full.
    #[error("too many fresh reports requested at once")]
    Busy,
}

/// A quote as a provider hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedQuote {
    /// The TDX quote.
    pub bytes: Vec<u8>,
    /// The event log behind the quote's RTMRs, where the provider has one (dstack).
    pub event_log: Option<String>,
    /// The VM configuration the provider reports with the quote (dstack).
    pub vm_config: Option<String>,
    /// What the provider says about the application it runs (dstack's `Info`).
    pub info: Option<serde_json::Value>,
}

impl ProvidedQuote {
    /// A quote with nothing alongside it (configfs-tsm, dev).
    pub fn bare(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            event_log: None,
            vm_config: None,
            info: None,
        }
    }
}

/// Obtains TDX quotes for given report data.
#[async_trait]
pub trait QuoteProvider: Send + Sync {
    /// Which mode this provider implements.
    fn mode(&self) -> AttestationMode;
    /// A quote whose report_data is `report_data`.
    async fn quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError>;
}

/// configfs-tsm as a [`QuoteProvider`]: the blocking file operations run off the async
/// threads.
struct ConfigfsProvider(Arc<configfs::ConfigfsTsm>);

#[async_trait]
impl QuoteProvider for ConfigfsProvider {
    fn mode(&self) -> AttestationMode {
        AttestationMode::Tdx
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
        let tsm = self.0.clone();
        let data = *report_data;
        let bytes = tokio::task::spawn_blocking(move || tsm.quote_blocking(&data))
            .await
            .map_err(|e| {
                AttestationError::Provider(format!("configfs-tsm worker failed: {e}"))
            })??;
        Ok(ProvidedQuote::bare(bytes))
    }
}

/// Collects GPU attestation evidence for a nonce.
#[async_trait]
pub trait GpuEvidenceSource: Send + Sync {
    /// Which mode this source implements.
    fn mode(&self) -> GpuEvidenceMode;
    /// One evidence item per GPU, each taken with `nonce`.
    async fn collect(&self, nonce: &Nonce) -> Result<Vec<GpuEvidence>, AttestationError>;
}

/// Parses a quote and checks its report_data; signet never serves a quote that fails this.
///
/// The quote must be a v4 or v5 TDX quote ([`quote::TdxQuote`]: header, body descriptor,
/// TD report, signature data) whose attestation key signs its header and body, and whose
/// signature data parses the way verifiers read it (dcap-qvl: QE report, QE authentication
/// data, certification data). An [`AttestationError::Unparseable`] says what is wrong; a
/// well-formed quote over other report data is a [`AttestationError::BindingMismatch`].
pub fn check_quote_binding(quote: &[u8], expected: &[u8; 64]) -> Result<(), AttestationError> {
    let parsed =
        quote::TdxQuote::parse(quote).map_err(|e| AttestationError::Unparseable(e.to_string()))?;
    parsed
        .verify_signature()
        .map_err(|e| AttestationError::Unparseable(e.to_string()))?;
    dcap_qvl::quote::Quote::parse(quote).map_err(|e| {
        AttestationError::Unparseable(format!(
            "v{} quote: its signature data does not parse as verifiers read it: {e:#}",
            parsed.version
        ))
    })?;
    if parsed.report_data != *expected {
        return Err(AttestationError::BindingMismatch);
    }
    Ok(())
}

/// The evidence behind a report for arbitrary report_data (ACI's statement digest): the
/// quote, checked to bind exactly that report_data, and the GPU evidence for a nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The TDX quote's bytes.
    pub quote: Vec<u8>,
    /// The NRAS payload (a JSON string), taken for the nonce given.
    pub nvidia_payload: String,
    /// The provider's event log (dstack).
    pub event_log: Option<String>,
    /// The provider's VM configuration (dstack).
    pub vm_config: Option<String>,
    /// The provider's `Info` answer (dstack).
    pub info: Option<serde_json::Value>,
    /// `tdx`, `dstack` or `dev`.
    pub mode: &'static str,
    /// `nvml`, `dev` or `none`.
    pub gpu_evidence: &'static str,
}

/// A report made for a nonce signet drew itself, reusable by nonce-less requests.
struct CachedReport {
    made: Instant,
    report: AttestationReport,
}

/// Produces attestation reports.
pub struct Attestor {
    quotes: Arc<dyn QuoteProvider>,
    gpu: Arc<dyn GpuEvidenceSource>,
    identity: SignerIdentity,
    encoding: QuoteEncoding,
    timeout: Duration,
    cache_ttl: Duration,
    /// Reports made for nonces signet drew itself: plain (0) and TLS-bound (1) for the
    /// ECDSA key, the same (2, 3) for the Ed25519 key.
    cache: Mutex<[Option<CachedReport>; 4]>,
    tls_spki_sha256: Option<[u8; 32]>,
    key_custody: Option<serde_json::Value>,
    nras_claims_version: NrasClaimsVersion,
    gate: gate::ReportGate,
    flood: gate::FloodLog,
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestor")
            .field("mode", &self.quotes.mode())
            .field("gpu", &self.gpu.mode())
            .finish_non_exhaustive()
    }
}

impl Attestor {
    /// Assembles an attestor from providers.
    pub fn new(
        quotes: Arc<dyn QuoteProvider>,
        gpu: Arc<dyn GpuEvidenceSource>,
        identity: SignerIdentity,
        settings: &AttestationSettings,
    ) -> Self {
        Self {
            quotes,
            gpu,
            identity,
            encoding: settings.quote_encoding,
            timeout: settings.timeout,
            cache_ttl: settings.cache_ttl,
            cache: Mutex::new([None, None, None, None]),
            tls_spki_sha256: None,
            key_custody: None,
            nras_claims_version: settings.nras_claims_version,
            gate: gate::ReportGate::new(settings.max_concurrent, settings.max_waiting),
            flood: gate::FloodLog::default(),
        }
    }

    /// Makes every report say where the keys come from (`key_custody`).
    pub fn with_key_custody(mut self, custody: serde_json::Value) -> Self {
        self.key_custody = Some(custody);
        self
    }

    /// Makes `?tls_binding=true` reports bind this certificate key (sha256 of its DER SPKI).
    pub fn with_tls_certificate(mut self, spki_sha256: [u8; 32]) -> Self {
        self.tls_spki_sha256 = Some(spki_sha256);
        self
    }

    /// Builds the providers the settings name. A provider that is not present here is an
    /// error: signet never falls back to `dev` on its own.
    pub fn from_settings(
        settings: &AttestationSettings,
        identity: SignerIdentity,
    ) -> Result<Self, AttestationError> {
        let quotes: Arc<dyn QuoteProvider> = match settings.mode {
            AttestationMode::Dev => Arc::new(DevQuoteProvider::generate()),
            AttestationMode::Tdx => Arc::new(ConfigfsProvider(Arc::new(
                configfs::ConfigfsTsm::open(&settings.configfs_path, Arc::new(configfs::KernelFs))?,
            ))),
            AttestationMode::Dstack => {
                Arc::new(dstack::DstackAgent::open(&settings.dstack_socket)?)
            }
        };
        let gpu: Arc<dyn GpuEvidenceSource> = match settings.gpu {
            GpuEvidenceMode::None => Arc::new(NoGpuEvidence),
            GpuEvidenceMode::Dev => Arc::new(dev_gpu::DevGpuEvidence),
            GpuEvidenceMode::Nvml => {
                let driver = Arc::new(nvml::NvmlDriver::load()?);
                Arc::new(nvml::NvmlEvidence::new(nvml::DriverEvidence::open(
                    driver, true,
                )?))
            }
        };
        Ok(Self::new(quotes, gpu, identity, settings))
    }

    /// The quote provider's mode.
    pub fn mode(&self) -> AttestationMode {
        self.quotes.mode()
    }

    /// The GPU evidence source's mode.
    pub fn gpu_mode(&self) -> GpuEvidenceMode {
        self.gpu.mode()
    }

    /// A report for a caller who gave no nonce: the cached one while it is younger than
    /// `cache_ttl`, else a fresh one for a random nonce (which is then cached).
    pub async fn report_without_nonce(&self) -> Result<AttestationReport, AttestationError> {
        self.unnonced(None, SigningAlgo::Ecdsa).await
    }

    /// The same for a TLS-bound or plain report (`tls_spki_sha256`) of either key: all are
    /// cached, so a flood of nonce-less requests costs one quote per `cache_ttl` either way.
    async fn unnonced(
        &self,
        tls_spki_sha256: Option<[u8; 32]>,
        algo: SigningAlgo,
    ) -> Result<AttestationReport, AttestationError> {
        let slot =
            usize::from(tls_spki_sha256.is_some()) + 2 * usize::from(algo == SigningAlgo::Ed25519);
        if let Some(report) = self.cached(slot) {
            return Ok(report);
        }
        let report = self
            .report_bound(Nonce::random(), tls_spki_sha256, algo)
            .await?;
        if !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache[slot] = Some(CachedReport {
                made: Instant::now(),
                report: report.clone(),
            });
        }
        Ok(report)
    }

    fn cached(&self, slot: usize) -> Option<AttestationReport> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache[slot]
            .as_ref()
            .filter(|c| c.made.elapsed() < self.cache_ttl)
            .map(|c| c.report.clone())
    }

    /// Makes a report for a random nonce and caches it (the background refresher calls this
    /// so nonce-less requests rarely wait for a provider).
    pub async fn refresh(&self) -> Result<AttestationReport, AttestationError> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache[0] = None;
        }
        self.unnonced(None, SigningAlgo::Ecdsa).await
    }

    /// How long a cached report stays usable (zero: no caching).
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// A fresh report for `nonce`.
    pub async fn report(&self, nonce: Nonce) -> Result<AttestationReport, AttestationError> {
        self.report_bound(nonce, None, SigningAlgo::Ecdsa).await
    }

    /// A report for `nonce`: requests for the same report_data share one making of it, and
    /// at most `max_concurrent` are made at once, with a bounded line waiting.
    async fn report_bound(
        &self,
        nonce: Nonce,
        tls_spki_sha256: Option<[u8; 32]>,
        algo: SigningAlgo,
    ) -> Result<AttestationReport, AttestationError> {
        let ed25519 = match (algo, self.identity.ed25519_public_key) {
            (SigningAlgo::Ecdsa, _) => None,
            (SigningAlgo::Ed25519, Some(key)) => Some(key),
            (SigningAlgo::Ed25519, None) => {
                return Err(AttestationError::Unavailable(
                    "no Ed25519 signing key".to_owned(),
                ));
            }
        };
        let expected = match (&tls_spki_sha256, &ed25519) {
            (None, None) => report_data(&self.identity.address, &nonce),
            (Some(spki), None) => tls_bound_report_data(&self.identity.address, spki, &nonce),
            (None, Some(key)) => ed25519_report_data(key, &nonce),
            (Some(spki), Some(key)) => ed25519_tls_bound_report_data(key, spki, &nonce),
        };
        let mut report = self
            .gate
            .coalesce(expected, async {
                let _permit = self.gate.enter().await?;
                self.make_report(nonce, tls_spki_sha256, expected).await
            })
            .await?;
        if let Some(key) = ed25519 {
            // Phala's and NEAR's form: the public key is the address, hex without `0x`.
            report.signing_address = hex::encode(key);
            report.signing_algo = SigningAlgo::Ed25519.as_str().to_owned();
            report.signing_public_key = hex::encode(key);
        }
        Ok(report)
    }

    /// The evidence for arbitrary 64-byte `report_data` (ACI binds its statement digest
    /// there), through the same providers, the same limit on reports made at once and the
    /// same sharing of one making among requests for the same report_data as every report;
    /// the GPU evidence is taken for `gpu_nonce`. The quote is checked to bind exactly
    /// `report_data` before it is handed over.
    pub async fn evidence(
        &self,
        report_data: [u8; 64],
        gpu_nonce: Nonce,
    ) -> Result<Evidence, AttestationError> {
        let report = self
            .gate
            .coalesce(report_data, async {
                let _permit = self.gate.enter().await?;
                self.make_report(gpu_nonce, None, report_data).await
            })
            .await?;
        // The report carries the quote in the configured encoding; it was made here.
        let quote = match self.encoding {
            QuoteEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&report.intel_quote)
                .map_err(|e| e.to_string()),
            QuoteEncoding::Hex => hex::decode(&report.intel_quote).map_err(|e| e.to_string()),
        }
        .map_err(AttestationError::Unparseable)?;
        Ok(Evidence {
            quote,
            nvidia_payload: report.nvidia_payload,
            event_log: report.event_log,
            vm_config: report.vm_config,
            info: report.info,
            mode: self.quotes.mode().as_str(),
            gpu_evidence: self.gpu.mode().as_str(),
        })
    }

    /// The envelope for a failure to attest (a flood of them logs one line per interval).
    pub fn refusal(&self, error: AttestationError) -> ApiError {
        self.flood.note(&error);
        match error {
            AttestationError::Busy => ApiError::unavailable(
                "attestation_busy",
                "too many fresh attestation reports are being made; retry shortly",
            ),
            _ => ApiError::unavailable("attestation_unavailable", "attestation is unavailable"),
        }
    }

    async fn make_report(
        &self,
        nonce: Nonce,
        tls_spki_sha256: Option<[u8; 32]>,
        expected: [u8; 64],
    ) -> Result<AttestationReport, AttestationError> {
        let gather = async { tokio::join!(self.quotes.quote(&expected), self.gpu.collect(&nonce)) };
        let (quote, evidence) = tokio::time::timeout(self.timeout, gather)
            .await
            .map_err(|_| AttestationError::Timeout(self.timeout))?;
        let quote = quote?;
        let evidence = evidence?;
        check_quote_binding(&quote.bytes, &expected)?;
        let intel_quote = match self.encoding {
            QuoteEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(&quote.bytes),
            QuoteEncoding::Hex => hex::encode(&quote.bytes),
        };
        Ok(AttestationReport {
            signing_address: self.identity.address.to_checksum(),
            signing_algo: "ecdsa".to_owned(),
            signing_public_key: hex::encode(self.identity.public_key),
            request_nonce: nonce.to_hex(),
            intel_quote,
            nvidia_payload: nras_payload_for(&nonce, &evidence, self.nras_claims_version),
            mode: self.quotes.mode().as_str().to_owned(),
            gpu_evidence: self.gpu.mode().as_str().to_owned(),
            event_log: quote.event_log,
            vm_config: quote.vm_config,
            info: quote.info,
            tls_cert_fingerprint: tls_spki_sha256.map(hex::encode),
            key_custody: self.key_custody.clone(),
        })
    }

    /// Answers `GET /v1/attestation/report`. The parameters (docs/API.md §5):
    /// - `nonce`: 64 hex chars, bound into the quote and the GPU evidence (else one is drawn);
    /// - `signing_algo`: `ecdsa` (default) or `ed25519`: the report of that key (report_data
    ///   `public key ‖ nonce` for Ed25519, as Phala's and NEAR's proxies lay it out);
    /// - `tls_binding=true`, `include_tls_fingerprint=true` or `version=2`: bind the TLS
    ///   certificate key too (400 when signet does not terminate TLS);
    /// - `signing_address`: the signer the client looks for; another address is a 404, so a
    ///   client can find the replica that signed;
    /// - `model`: accepted and ignored (one signet attests one TEE, whatever the model).
    pub async fn answer(&self, query: Option<&str>) -> Result<AttestationReport, ApiError> {
        let nonce = parse_nonce_query(query)?;
        let algo = signing_algo_param(query)?;
        let bind_tls = tls_binding_param(query)?;
        check_model_param(query)?;
        if algo == SigningAlgo::Ed25519 {
            let Some(key) = self.identity.ed25519_public_key else {
                return Err(ApiError::bad_request(
                    "unsupported_signing_algo",
                    "this gateway has no Ed25519 signing key",
                )
                .with_param("signing_algo"));
            };
            let ours = hex::encode(key);
            if let Some(asked) = query_param(query, "signing_address")? {
                let asked = asked.strip_prefix("0x").unwrap_or(asked);
                if !asked.eq_ignore_ascii_case(&ours) {
                    return Err(ApiError::not_found(
                        "signing_address_not_found",
                        format!("this gateway's Ed25519 signing key is {ours}"),
                    )
                    .with_param("signing_address"));
                }
            }
        } else if let Some(asked) = signing_address_param(query)? {
            if asked != self.identity.address {
                return Err(ApiError::not_found(
                    "signing_address_not_found",
                    format!(
                        "{} is not this gateway's signing address (it signs as {})",
                        asked.to_checksum(),
                        self.identity.address.to_checksum()
                    ),
                )
                .with_param("signing_address"));
            }
        }
        let report = match (nonce, bind_tls) {
            (_, Some(param)) => match self.tls_spki_sha256 {
                Some(spki) => match nonce {
                    Some(nonce) => self.report_bound(nonce, Some(spki), algo).await,
                    None => self.unnonced(Some(spki), algo).await,
                },
                None => {
                    return Err(ApiError::bad_request(
                        "tls_binding_unavailable",
                        format!("{param} needs signet to terminate TLS (signet.tls)"),
                    )
                    .with_param(param));
                }
            },
            (Some(nonce), None) => self.report_bound(nonce, None, algo).await,
            (None, None) => self.unnonced(None, algo).await,
        };
        report.map_err(|e| self.refusal(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_core::signing::{Address, Signer};

    /// The HTTP status an answer would be written with.
    fn status_of(answer: &Result<AttestationReport, ApiError>) -> u16 {
        answer.as_ref().map_or_else(|e| e.status, |_| 200)
    }

    fn attestor(settings_encoding: QuoteEncoding) -> (Attestor, Signer) {
        attestor_with(settings_encoding, NrasClaimsVersion::default())
    }

    fn attestor_with(
        settings_encoding: QuoteEncoding,
        nras_claims_version: NrasClaimsVersion,
    ) -> (Attestor, Signer) {
        let signer = Signer::generate();
        let identity = SignerIdentity {
            address: *signer.address(),
            public_key: *signer.public_key(),
            ed25519_public_key: Some([0xed; 32]),
        };
        let settings = AttestationSettings {
            mode: AttestationMode::Dev,
            gpu: GpuEvidenceMode::None,
            quote_encoding: settings_encoding,
            timeout: Duration::from_secs(5),
            configfs_path: "/nonexistent".into(),
            dstack_socket: "/nonexistent".into(),
            cache_ttl: Duration::from_secs(60),
            nras_claims_version,
            max_concurrent: 4,
            max_waiting: 16,
        };
        (
            Attestor::from_settings(&settings, identity).unwrap(),
            signer,
        )
    }

    #[test]
    fn report_data_layout_is_address_zeros_nonce() {
        let address = Address([0xaa; 20]);
        let nonce = Nonce([0x55; 32]);
        let data = report_data(&address, &nonce);
        assert_eq!(&data[..20], &[0xaa; 20]);
        assert_eq!(&data[20..32], &[0; 12]);
        assert_eq!(&data[32..], &[0x55; 32]);
    }

    #[tokio::test]
    async fn a_dev_report_binds_the_address_and_nonce() {
        let (attestor, signer) = attestor(QuoteEncoding::Hex);
        let nonce = Nonce([7; 32]);
        let report = attestor.report(nonce).await.unwrap();
        assert_eq!(report.mode, "dev");
        assert_eq!(report.request_nonce, "07".repeat(32));
        assert_eq!(report.signing_address, signer.address().to_checksum());
        let quote = hex::decode(&report.intel_quote).unwrap();
        let bound = &quote[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64];
        assert_eq!(bound, report_data(signer.address(), &nonce));
        let payload: serde_json::Value = serde_json::from_str(&report.nvidia_payload).unwrap();
        assert_eq!(payload["nonce"], "07".repeat(32));
    }

    #[tokio::test]
    async fn base64_is_the_default_encoding() {
        let (attestor, _signer) = attestor(QuoteEncoding::Base64);
        let report = attestor.report(Nonce::random()).await.unwrap();
        let quote = base64::engine::general_purpose::STANDARD
            .decode(&report.intel_quote)
            .unwrap();
        assert!(tdx_quote::Quote::from_bytes(&quote).is_ok());
    }

    #[test]
    fn a_quote_for_other_report_data_is_refused() {
        let provider = DevQuoteProvider::generate();
        let quote = provider.mock_quote(&[1; 64]);
        assert_eq!(
            check_quote_binding(&quote, &[2; 64]),
            Err(AttestationError::BindingMismatch)
        );
        assert!(matches!(
            check_quote_binding(&quote[..100], &[1; 64]),
            Err(AttestationError::Unparseable(_))
        ));
    }

    /// Counts its quotes; can hang or answer for the wrong report data.
    struct ScriptedProvider {
        inner: DevQuoteProvider,
        calls: std::sync::atomic::AtomicUsize,
        hang: bool,
        wrong_binding: bool,
    }

    #[async_trait]
    impl QuoteProvider for ScriptedProvider {
        fn mode(&self) -> AttestationMode {
            AttestationMode::Dev
        }
        async fn quote(&self, report_data: &[u8; 64]) -> Result<ProvidedQuote, AttestationError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            let mut data = *report_data;
            if self.wrong_binding {
                data[63] ^= 1;
            }
            Ok(ProvidedQuote::bare(self.inner.mock_quote(&data)))
        }
    }

    fn scripted(
        hang: bool,
        wrong_binding: bool,
        cache_ttl: Duration,
    ) -> (Attestor, Arc<ScriptedProvider>) {
        let provider = Arc::new(ScriptedProvider {
            inner: DevQuoteProvider::generate(),
            calls: std::sync::atomic::AtomicUsize::new(0),
            hang,
            wrong_binding,
        });
        let signer = Signer::generate();
        let settings = AttestationSettings {
            mode: AttestationMode::Dev,
            gpu: GpuEvidenceMode::None,
            quote_encoding: QuoteEncoding::Base64,
            timeout: Duration::from_secs(2),
            configfs_path: "/nonexistent".into(),
            dstack_socket: "/nonexistent".into(),
            cache_ttl,
            nras_claims_version: NrasClaimsVersion::default(),
            max_concurrent: 1,
            max_waiting: 1,
        };
        let identity = SignerIdentity {
            address: *signer.address(),
            public_key: *signer.public_key(),
            ed25519_public_key: Some([0xed; 32]),
        };
        let attestor = Attestor::new(
            provider.clone(),
            Arc::new(NoGpuEvidence),
            identity,
            &settings,
        );
        (attestor, provider)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_for_one_nonce_share_one_quote_and_a_full_line_is_turned_away() {
        // One place, one in line (scripted): a hanging provider holds the place.
        let (attestor, provider) = scripted(true, false, Duration::ZERO);
        let nonce = Nonce([0x5a; 32]);
        let same = futures_join_all((0..5).map(|_| attestor.report(nonce)).collect::<Vec<_>>());
        tokio::pin!(same);
        let other = attestor.report(Nonce([0x6b; 32]));
        tokio::pin!(other);
        tokio::select! {
            biased;
            _ = &mut same => panic!("the provider hangs"),
            _ = &mut other => panic!("the provider hangs"),
            () = tokio::task::yield_now() => {}
        }
        assert_eq!(
            provider.calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "five requests for one nonce make one quote"
        );
        assert_eq!(attestor.gate.in_flight(), 2);
        // The place is taken and the line is full: a third nonce is turned away at once.
        assert_eq!(
            attestor.report(Nonce([0x7c; 32])).await,
            Err(AttestationError::Busy)
        );
        assert_eq!(
            status_of(
                &attestor
                    .answer(Some(&format!("nonce={}", "7c".repeat(32))))
                    .await
            ),
            503
        );
        // Everyone waiting gets the provider's timeout, and nothing stays in flight.
        for result in same.await {
            assert_eq!(
                result,
                Err(AttestationError::Timeout(Duration::from_secs(2)))
            );
        }
        assert!(other.await.is_err());
        assert_eq!(attestor.gate.in_flight(), 0);
    }

    /// Awaits every future (no extra dependency for a test).
    async fn futures_join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (future, slot) in pinned.iter_mut().zip(done.iter_mut()) {
                if slot.is_none() {
                    match future.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *slot = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.extend(done.into_iter().flatten());
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_provider_is_cut_off_with_a_503() {
        let (attestor, _) = scripted(true, false, Duration::ZERO);
        assert_eq!(
            attestor.report(Nonce::random()).await,
            Err(AttestationError::Timeout(Duration::from_secs(2)))
        );
        assert_eq!(status_of(&attestor.answer(None).await), 503);
    }

    #[tokio::test]
    async fn a_quote_with_the_wrong_binding_is_never_served() {
        let (attestor, _) = scripted(false, true, Duration::ZERO);
        assert_eq!(
            attestor.report(Nonce::random()).await,
            Err(AttestationError::BindingMismatch)
        );
        let answer = attestor.answer(None).await;
        assert_eq!(status_of(&answer), 503);
    }

    #[tokio::test]
    async fn nonce_less_requests_reuse_a_cached_report_and_nonces_are_always_fresh() {
        let (attestor, provider) = scripted(false, false, Duration::from_secs(600));
        let first = attestor.answer(None).await;
        let second = attestor.answer(None).await;
        assert_eq!(first, second);
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let nonce = format!("nonce={}", "cd".repeat(32));
        attestor.answer(Some(&nonce)).await.unwrap();
        attestor.answer(Some(&nonce)).await.unwrap();
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (uncached, provider) = scripted(false, false, Duration::ZERO);
        uncached.answer(None).await.unwrap();
        uncached.answer(None).await.unwrap();
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn tls_bound_reports_bind_the_certificate_key() {
        let (plain, _) = attestor(QuoteEncoding::Hex);
        let refused = plain.answer(Some("tls_binding=true")).await;
        assert_eq!(status_of(&refused), 400, "no TLS, no binding");
        let (attestor, signer) = attestor(QuoteEncoding::Hex);
        let attestor = attestor.with_tls_certificate([0x33; 32]);
        let nonce = "44".repeat(32);
        for query in [
            format!("nonce={nonce}&tls_binding=true"),
            format!("nonce={nonce}&version=2"),
        ] {
            let answer = attestor.answer(Some(&query)).await;
            assert_eq!(status_of(&answer), 200);
            let report = serde_json::to_value(answer.unwrap()).unwrap();
            assert_eq!(report["tls_cert_fingerprint"], "33".repeat(32));
            let quote = hex::decode(report["intel_quote"].as_str().unwrap()).unwrap();
            let bound = &quote[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64];
            let expected = tls_bound_report_data(signer.address(), &[0x33; 32], &Nonce([0x44; 32]));
            assert_eq!(bound, expected);
        }
        let unbound = attestor.answer(Some(&format!("nonce={nonce}"))).await;
        let report = serde_json::to_value(unbound.unwrap()).unwrap();
        assert!(report.get("tls_cert_fingerprint").is_none());
        assert_eq!(
            status_of(&attestor.answer(Some("tls_binding=maybe")).await),
            400
        );
        assert_eq!(status_of(&attestor.answer(Some("version=3")).await), 400);
    }

    #[tokio::test]
    async fn the_nras_payload_carries_the_configured_claims_version() {
        for (version, expected) in [
            (NrasClaimsVersion::V2, serde_json::json!("2.0")),
            (NrasClaimsVersion::V3, serde_json::json!("3.0")),
            (NrasClaimsVersion::Omit, serde_json::Value::Null),
        ] {
            let (attestor, _) = attestor_with(QuoteEncoding::Hex, version);
            let report = attestor.report(Nonce::random()).await.unwrap();
            let payload: serde_json::Value = serde_json::from_str(&report.nvidia_payload).unwrap();
            assert_eq!(payload["claims_version"], expected, "{version:?}");
        }
    }

    /// Real quotes from real TDX machines (tests/fixtures/tdx/real): v4, v5, and a v5 whose
    /// TCB level matches no collateral (which the gateway cannot know and does not judge).
    const REAL_QUOTES: [(&str, &[u8]); 3] = [
        (
            "v4",
            include_bytes!("../../../tests/fixtures/tdx/real/v4_quote.bin"),
        ),
        (
            "v5",
            include_bytes!("../../../tests/fixtures/tdx/real/v5_quote.bin"),
        ),
        (
            "v5_no_tcb_level",
            include_bytes!("../../../tests/fixtures/tdx/real/v5_no_tcb_level.bin"),
        ),
    ];

    #[test]
    fn real_v4_and_v5_quotes_are_refused_for_their_binding_never_their_shape() {
        for (name, quote) in REAL_QUOTES {
            assert_eq!(
                check_quote_binding(quote, &[0; 64]),
                Err(AttestationError::BindingMismatch),
                "{name}"
            );
            let offset = if quote[0] == 4 {
                REPORT_DATA_OFFSET
            } else {
                signet_core::report::REPORT_DATA_OFFSET_V5
            };
            let bound: [u8; 64] = quote[offset..offset + 64].try_into().unwrap();
            assert_eq!(check_quote_binding(quote, &bound), Ok(()), "{name}");
        }
    }

    #[test]
    fn an_unparseable_quote_says_what_is_wrong_with_it() {
        let (_, v5) = REAL_QUOTES[1];
        let unparseable = |bytes: &[u8]| match check_quote_binding(bytes, &[0; 64]) {
            Err(AttestationError::Unparseable(why)) => why,
            other => panic!("{other:?}"),
        };
        let mut body_type = v5.to_vec();
        body_type[48] = 9;
        assert!(
            unparseable(&body_type).starts_with("v5 quote: body type 9 unknown"),
            "{}",
            unparseable(&body_type)
        );
        assert_eq!(
            unparseable(&v5[..1234]),
            "v5 quote: 1,234 bytes is shorter than the 5,006 bytes of the signature data its length claims"
        );
        let mut damaged = v5.to_vec();
        damaged[100] ^= 0x40;
        assert_eq!(
            unparseable(&damaged),
            "v5 quote: the attestation key's signature over the 702 signed bytes does not verify"
        );
        let error = AttestationError::Unparseable(unparseable(&v5[..10]));
        assert_eq!(
            error.to_string(),
            "the quote does not parse: 10 bytes is shorter than the 48-byte quote header"
        );
    }

    #[tokio::test]
    async fn real_quotes_from_configfs_tsm_are_refused_for_their_binding() {
        for (name, quote) in REAL_QUOTES {
            let dir = tempfile::tempdir().unwrap();
            let kernel = Arc::new(configfs::fake::FakeKernel::serving(quote));
            let tsm = configfs::ConfigfsTsm::open(dir.path(), kernel).unwrap();
            let signer = Signer::generate();
            let identity = SignerIdentity {
                address: *signer.address(),
                public_key: *signer.public_key(),
                ed25519_public_key: None,
            };
            let settings = AttestationSettings {
                mode: AttestationMode::Tdx,
                gpu: GpuEvidenceMode::None,
                quote_encoding: QuoteEncoding::Base64,
                timeout: Duration::from_secs(5),
                configfs_path: dir.path().to_owned(),
                dstack_socket: "/nonexistent".into(),
                cache_ttl: Duration::ZERO,
                nras_claims_version: NrasClaimsVersion::default(),
                max_concurrent: 4,
                max_waiting: 16,
            };
            let attestor = Attestor::new(
                Arc::new(ConfigfsProvider(Arc::new(tsm))),
                Arc::new(NoGpuEvidence),
                identity,
                &settings,
            );
            assert_eq!(
                attestor.report(Nonce::random()).await,
                Err(AttestationError::BindingMismatch),
                "{name}"
            );
            assert_eq!(status_of(&attestor.answer(None).await), 503, "{name}");
        }
    }

    #[tokio::test]
    async fn signing_address_finds_this_replica_or_answers_404() {
        let (attestor, signer) = attestor(QuoteEncoding::Hex);
        let ours = signer.address().to_checksum();
        for asked in [
            ours.clone(),
            ours.to_lowercase(),
            ours.to_uppercase().replacen("0X", "0x", 1),
        ] {
            let answer = attestor
                .answer(Some(&format!(
                    "signing_address={asked}&nonce={}",
                    "12".repeat(32)
                )))
                .await;
            assert_eq!(status_of(&answer), 200, "{asked}");
        }
        let other = format!("0x{}", "ab".repeat(20));
        let refused = attestor
            .answer(Some(&format!("signing_address={other}")))
            .await
            .unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (404, "signing_address_not_found")
        );
        assert_eq!(refused.param, Some("signing_address"));
        assert!(refused.message.contains(&ours), "{}", refused.message);
        let malformed = attestor.answer(Some("signing_address=0x1234")).await;
        assert_eq!(status_of(&malformed), 400);
    }

    #[tokio::test]
    async fn model_is_accepted_and_ed25519_reports_bind_the_ed25519_key() {
        let (attestor, _) = attestor(QuoteEncoding::Hex);
        let nonce = "34".repeat(32);
        let with_model = attestor
            .answer(Some(&format!(
                "model=deepseek-ai/DeepSeek-V3.1&nonce={nonce}"
            )))
            .await
            .unwrap();
        assert_eq!(with_model.request_nonce, nonce);
        let ed = attestor
            .answer(Some(&format!("model=m&nonce={nonce}&signing_algo=ed25519")))
            .await
            .unwrap();
        assert_eq!(ed.signing_algo, "ed25519");
        assert_eq!(ed.signing_address, "ed".repeat(32));
        assert_eq!(ed.signing_public_key, "ed".repeat(32));
        let quote = hex::decode(&ed.intel_quote).unwrap();
        assert_eq!(
            &quote[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64],
            &ed25519_report_data(&[0xed; 32], &Nonce([0x34; 32]))[..]
        );
        // The Ed25519 key is found by its own address; the ECDSA one is another key.
        let found = attestor
            .answer(Some(&format!(
                "signing_algo=ed25519&signing_address=0x{}",
                "ED".repeat(32)
            )))
            .await;
        assert_eq!(status_of(&found), 200);
        let other = attestor
            .answer(Some(&format!(
                "signing_algo=ed25519&signing_address={}",
                "ab".repeat(32)
            )))
            .await
            .unwrap_err();
        assert_eq!(
            (other.status, other.code),
            (404, "signing_address_not_found")
        );
        let rsa = attestor.answer(Some("signing_algo=rsa")).await.unwrap_err();
        assert_eq!((rsa.status, rsa.code), (400, "unsupported_signing_algo"));
        // A TLS-bound Ed25519 report hashes the key with the certificate's.
        let bound = attestor
            .with_tls_certificate([0x77; 32])
            .answer(Some(&format!(
                "signing_algo=ed25519&nonce={nonce}&include_tls_fingerprint=true"
            )))
            .await
            .unwrap();
        let quote = hex::decode(&bound.intel_quote).unwrap();
        assert_eq!(
            &quote[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64],
            &ed25519_tls_bound_report_data(&[0xed; 32], &[0x77; 32], &Nonce([0x34; 32]))[..]
        );
    }

    #[tokio::test]
    async fn include_tls_fingerprint_is_the_tls_bound_report() {
        let (plain, _) = attestor(QuoteEncoding::Hex);
        let refused = plain
            .answer(Some("include_tls_fingerprint=true"))
            .await
            .unwrap_err();
        assert_eq!(
            (refused.status, refused.param),
            (400, Some("include_tls_fingerprint"))
        );
        assert!(
            refused.message.starts_with("include_tls_fingerprint needs"),
            "{}",
            refused.message
        );
        let unbound = plain
            .answer(Some("include_tls_fingerprint=false"))
            .await
            .unwrap();
        assert_eq!(unbound.tls_cert_fingerprint, None);

        let (attestor, signer) = attestor(QuoteEncoding::Hex);
        let attestor = attestor.with_tls_certificate([0x55; 32]);
        let nonce = "66".repeat(32);
        let report = attestor
            .answer(Some(&format!(
                "model=x&nonce={nonce}&signing_algo=ecdsa&include_tls_fingerprint=true"
            )))
            .await
            .unwrap();
        assert_eq!(report.tls_cert_fingerprint, Some("55".repeat(32)));
        let quote = hex::decode(&report.intel_quote).unwrap();
        let expected = tls_bound_report_data(signer.address(), &[0x55; 32], &Nonce([0x66; 32]));
        assert_eq!(
            &quote[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64],
            &expected[..]
        );
    }

    #[tokio::test]
    async fn evidence_binds_arbitrary_report_data() {
        let (attestor, _) = scripted(false, false, Duration::ZERO);
        let mut slot = [0u8; 64];
        slot[..32].copy_from_slice(&[0x5c; 32]);
        let nonce = Nonce([0x21; 32]);
        let evidence = attestor.evidence(slot, nonce).await.unwrap();
        assert_eq!(check_quote_binding(&evidence.quote, &slot), Ok(()));
        let payload: serde_json::Value = serde_json::from_str(&evidence.nvidia_payload).unwrap();
        assert_eq!(payload["nonce"], "21".repeat(32));
        assert_eq!((evidence.mode, evidence.gpu_evidence), ("dev", "none"));
        let (wrong, _) = scripted(false, true, Duration::ZERO);
        assert_eq!(
            wrong.evidence(slot, nonce).await,
            Err(AttestationError::BindingMismatch)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn evidence_shares_the_gate_with_every_report() {
        // One place, one in line: evidence for one report_data holds the place, requests for
        // the same report_data share it, a legacy report waits, and a third is turned away.
        let (attestor, provider) = scripted(true, false, Duration::ZERO);
        let slot = [0x5c; 64];
        let held = attestor.evidence(slot, Nonce([1; 32]));
        tokio::pin!(held);
        let shared = attestor.evidence(slot, Nonce([1; 32]));
        tokio::pin!(shared);
        let waiting = attestor.report(Nonce([2; 32]));
        tokio::pin!(waiting);
        tokio::select! {
            biased;
            _ = &mut held => panic!("the provider hangs"),
            _ = &mut shared => panic!("the provider hangs"),
            _ = &mut waiting => panic!("the provider hangs"),
            () = tokio::task::yield_now() => {}
        }
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            attestor.evidence([0x6d; 64], Nonce([3; 32])).await,
            Err(AttestationError::Busy)
        );
        assert_eq!(
            held.await,
            Err(AttestationError::Timeout(Duration::from_secs(2)))
        );
    }
}
