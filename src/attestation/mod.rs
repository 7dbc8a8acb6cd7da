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
//! This module does not know about HTTP beyond producing a [`LocalResponse`].

pub mod configfs;
mod dev;
pub mod dev_gpu;
pub mod dstack;
pub mod nvidia;
pub mod nvml;

pub use dev::DevQuoteProvider;
pub use nvidia::{GpuEvidence, NoGpuEvidence, nras_payload, spdm_request_nonce};

use crate::config::{AttestationMode, AttestationSettings, GpuEvidenceMode, QuoteEncoding};
use crate::error::ApiError;
use crate::ids::Nonce;
use crate::routes::{LocalResponse, check_signing_algo, query_param};
use crate::signing::Address;
use async_trait::async_trait;
use base64::Engine;
use log::error;
use serde::Serialize;
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
}

/// A quote as a provider hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedQuote {
    /// The TDX quote.
    pub bytes: Vec<u8>,
    /// The event log behind the quote's RTMRs, where the provider has one (dstack).
    pub event_log: Option<String>,
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
        Ok(ProvidedQuote {
            bytes,
            event_log: None,
        })
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

/// report_data = 20-byte address ‖ 12 zero bytes ‖ 32-byte nonce, the layout existing
/// verifiers read at quote bytes 568..632.
pub fn report_data(address: &Address, nonce: &Nonce) -> [u8; 64] {
    let mut data = [0u8; 64];
    data[..20].copy_from_slice(&address.0);
    data[32..].copy_from_slice(&nonce.0);
    data
}

/// report_data bound to the TLS certificate too (`?tls_binding=true`):
/// sha256(20-byte address ‖ sha256(DER SubjectPublicKeyInfo of the serving certificate)) ‖
/// 32-byte nonce. A man in the middle with another certificate cannot relay such a report.
pub fn tls_bound_report_data(address: &Address, spki_sha256: &[u8; 32], nonce: &Nonce) -> [u8; 64] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(address.0);
    hasher.update(spki_sha256);
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(&hasher.finalize());
    data[32..].copy_from_slice(&nonce.0);
    data
}

/// sha256 of the DER SubjectPublicKeyInfo of the first certificate in a PEM chain.
pub fn spki_sha256_of_pem_chain(pem: &[u8]) -> Option<[u8; 32]> {
    let first = rustls_pemfile::certs(&mut std::io::BufReader::new(pem))
        .next()?
        .ok()?;
    crate::verify::http::spki_sha256_of_cert(first.as_ref())
}

/// Byte offset of report_data in a v4 TDX quote (48-byte header + 520 bytes of body).
pub const REPORT_DATA_OFFSET: usize = 568;

/// The smallest well-formed v4 quote: header, body, signature section length, ECDSA
/// signature, attestation key, certification data type and length.
pub const MIN_QUOTE_LEN: usize = 48 + 584 + 4 + 64 + 64 + 2 + 4;

/// Parses a quote and checks its report_data; signet never serves a quote that fails this.
pub fn check_quote_binding(quote: &[u8], expected: &[u8; 64]) -> Result<(), AttestationError> {
    // The parser slices the signed region before checking the length: guard it here.
    if quote.len() < MIN_QUOTE_LEN {
        return Err(AttestationError::Unparseable(format!(
            "{} bytes is shorter than any TDX quote",
            quote.len()
        )));
    }
    let parsed = tdx_quote::Quote::from_bytes(quote)
        .map_err(|e| AttestationError::Unparseable(format!("{e:?}")))?;
    if parsed.report_input_data() != *expected {
        return Err(AttestationError::BindingMismatch);
    }
    Ok(())
}

/// The body of `GET /v1/attestation/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationReport {
    /// EIP-55 address of the signing key.
    pub signing_address: String,
    /// Always `ecdsa`.
    pub signing_algo: &'static str,
    /// Uncompressed public key without `04`, 128 hex chars.
    pub signing_public_key: String,
    /// The nonce bound into the quote and the GPU evidence, 64 hex chars.
    pub request_nonce: String,
    /// The TDX quote, base64 or hex.
    pub intel_quote: String,
    /// The body to POST to NVIDIA NRAS `/v3/attest/gpu`, as a JSON string.
    pub nvidia_payload: String,
    /// `tdx`, `dstack` or `dev`.
    pub mode: &'static str,
    /// `nvml`, `dev` or `none`.
    pub gpu_evidence: &'static str,
    /// The event log behind the quote's RTMRs, when the provider gives one (dstack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_log: Option<String>,
    /// With `?tls_binding=true`: hex sha256 of the serving certificate's DER
    /// SubjectPublicKeyInfo, bound into report_data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_fingerprint: Option<String>,
}

/// The public half of the signing identity, as reports show it.
#[derive(Debug, Clone)]
pub struct SignerIdentity {
    /// The signing address.
    pub address: Address,
    /// 64-byte uncompressed public key without the `04` prefix.
    pub public_key: [u8; 64],
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
    cache: Mutex<Option<CachedReport>>,
    tls_spki_sha256: Option<[u8; 32]>,
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
            cache: Mutex::new(None),
            tls_spki_sha256: None,
        }
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
        if let Some(report) = self.cached() {
            return Ok(report);
        }
        self.refresh().await
    }

    fn cached(&self) -> Option<AttestationReport> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|c| c.made.elapsed() < self.cache_ttl)
            .map(|c| c.report.clone())
    }

    /// Makes a report for a random nonce and caches it (the background refresher calls this
    /// so nonce-less requests rarely wait for a provider).
    pub async fn refresh(&self) -> Result<AttestationReport, AttestationError> {
        let report = self.report(Nonce::random()).await?;
        if !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            *cache = Some(CachedReport {
                made: Instant::now(),
                report: report.clone(),
            });
        }
        Ok(report)
    }

    /// How long a cached report stays usable (zero: no caching).
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// A fresh report for `nonce`.
    pub async fn report(&self, nonce: Nonce) -> Result<AttestationReport, AttestationError> {
        self.report_bound(nonce, None).await
    }

    async fn report_bound(
        &self,
        nonce: Nonce,
        tls_spki_sha256: Option<[u8; 32]>,
    ) -> Result<AttestationReport, AttestationError> {
        let expected = match &tls_spki_sha256 {
            None => report_data(&self.identity.address, &nonce),
            Some(spki) => tls_bound_report_data(&self.identity.address, spki, &nonce),
        };
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
            signing_algo: "ecdsa",
            signing_public_key: hex::encode(self.identity.public_key),
            request_nonce: nonce.to_hex(),
            intel_quote,
            nvidia_payload: nras_payload(&nonce, &evidence),
            mode: self.quotes.mode().as_str(),
            gpu_evidence: self.gpu.mode().as_str(),
            event_log: quote.event_log,
            tls_cert_fingerprint: tls_spki_sha256.map(hex::encode),
        })
    }

    /// Answers `GET /v1/attestation/report?nonce=…&signing_algo=…&tls_binding=true`.
    pub async fn answer(&self, query: Option<&str>) -> LocalResponse {
        let (nonce, bind_tls) = match parse_nonce_query(query)
            .and_then(|nonce| Ok((nonce, wants_tls_binding(query)?)))
        {
            Ok(parsed) => parsed,
            Err(refusal) => return refusal.into(),
        };
        let report = match (nonce, bind_tls) {
            (_, true) => match self.tls_spki_sha256 {
                Some(spki) => {
                    self.report_bound(nonce.unwrap_or_else(Nonce::random), Some(spki))
                        .await
                }
                None => {
                    return ApiError::bad_request(
                        "tls_binding_unavailable",
                        "tls_binding needs signet to terminate TLS (signet.tls)",
                    )
                    .with_param("tls_binding")
                    .into();
                }
            },
            (Some(nonce), false) => self.report(nonce).await,
            (None, false) => self.report_without_nonce().await,
        };
        match report {
            Ok(report) => LocalResponse::ok_json(&report),
            Err(e) => {
                error!("attestation failed: {e}");
                ApiError::unavailable("attestation_unavailable", "attestation is unavailable")
                    .into()
            }
        }
    }
}

/// Whether the query asks for a report bound to the TLS certificate: `tls_binding=true` (or
/// `1`), or `version=2` as Phala's deployments call it.
pub fn wants_tls_binding(query: Option<&str>) -> Result<bool, ApiError> {
    let binding = match query_param(query, "tls_binding")? {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_tls_binding",
                "tls_binding must be true or false",
            )
            .with_param("tls_binding"));
        }
    };
    let version = match query_param(query, "version")? {
        None | Some("1") => false,
        Some("2") => true,
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_version", "version must be 1 or 2")
                    .with_param("version"),
            );
        }
    };
    Ok(binding || version)
}

/// Reads `nonce` (optional, 64 hex chars) and checks `signing_algo`.
pub fn parse_nonce_query(query: Option<&str>) -> Result<Option<Nonce>, ApiError> {
    check_signing_algo(query)?;
    query_param(query, "nonce")?
        .map(|text| {
            Nonce::parse(text).map_err(|e| {
                ApiError::bad_request("invalid_nonce", e.to_string()).with_param("nonce")
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::Signer;

    fn attestor(settings_encoding: QuoteEncoding) -> (Attestor, Signer) {
        let signer = Signer::generate();
        let identity = SignerIdentity {
            address: *signer.address(),
            public_key: *signer.public_key(),
        };
        let settings = AttestationSettings {
            mode: AttestationMode::Dev,
            gpu: GpuEvidenceMode::None,
            quote_encoding: settings_encoding,
            timeout: Duration::from_secs(5),
            configfs_path: "/nonexistent".into(),
            dstack_socket: "/nonexistent".into(),
            cache_ttl: Duration::from_secs(60),
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
            Ok(ProvidedQuote {
                bytes: self.inner.mock_quote(&data),
                event_log: None,
            })
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
        };
        let identity = SignerIdentity {
            address: *signer.address(),
            public_key: *signer.public_key(),
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
    async fn a_hanging_provider_is_cut_off_with_a_503() {
        let (attestor, _) = scripted(true, false, Duration::ZERO);
        assert_eq!(
            attestor.report(Nonce::random()).await,
            Err(AttestationError::Timeout(Duration::from_secs(2)))
        );
        assert_eq!(attestor.answer(None).await.status, 503);
    }

    #[tokio::test]
    async fn a_quote_with_the_wrong_binding_is_never_served() {
        let (attestor, _) = scripted(false, true, Duration::ZERO);
        assert_eq!(
            attestor.report(Nonce::random()).await,
            Err(AttestationError::BindingMismatch)
        );
        let answer = attestor.answer(None).await;
        assert_eq!(answer.status, 503);
        assert!(!String::from_utf8_lossy(&answer.body).contains("intel_quote"));
    }

    #[tokio::test]
    async fn nonce_less_requests_reuse_a_cached_report_and_nonces_are_always_fresh() {
        let (attestor, provider) = scripted(false, false, Duration::from_secs(600));
        let first = attestor.answer(None).await;
        let second = attestor.answer(None).await;
        assert_eq!(first, second);
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let nonce = format!("nonce={}", "cd".repeat(32));
        attestor.answer(Some(&nonce)).await;
        attestor.answer(Some(&nonce)).await;
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (uncached, provider) = scripted(false, false, Duration::ZERO);
        uncached.answer(None).await;
        uncached.answer(None).await;
        assert_eq!(provider.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn tls_bound_reports_bind_the_certificate_key() {
        let (plain, _) = attestor(QuoteEncoding::Hex);
        let refused = plain.answer(Some("tls_binding=true")).await;
        assert_eq!(refused.status, 400, "no TLS, no binding");
        let (attestor, signer) = attestor(QuoteEncoding::Hex);
        let attestor = attestor.with_tls_certificate([0x33; 32]);
        let nonce = "44".repeat(32);
        for query in [
            format!("nonce={nonce}&tls_binding=true"),
            format!("nonce={nonce}&version=2"),
        ] {
            let answer = attestor.answer(Some(&query)).await;
            assert_eq!(answer.status, 200);
            let report: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(report["tls_cert_fingerprint"], "33".repeat(32));
            let quote = hex::decode(report["intel_quote"].as_str().unwrap()).unwrap();
            let bound = &quote[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64];
            let expected = tls_bound_report_data(signer.address(), &[0x33; 32], &Nonce([0x44; 32]));
            assert_eq!(bound, expected);
        }
        let unbound = attestor.answer(Some(&format!("nonce={nonce}"))).await;
        let report: serde_json::Value = serde_json::from_slice(&unbound.body).unwrap();
        assert!(report.get("tls_cert_fingerprint").is_none());
        assert_eq!(attestor.answer(Some("tls_binding=maybe")).await.status, 400);
        assert_eq!(attestor.answer(Some("version=3")).await.status, 400);
    }

    #[test]
    fn nonce_queries_are_checked() {
        assert_eq!(parse_nonce_query(None), Ok(None));
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_nonce_query(Some(&format!("nonce={hex}"))),
            Ok(Some(Nonce([0xab; 32])))
        );
        for bad in ["nonce=", "nonce=abc", "nonce=../../", "nonce=a&nonce=b"] {
            assert_eq!(
                parse_nonce_query(Some(bad)).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }
}
