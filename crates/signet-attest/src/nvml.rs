//! GPU evidence from NVIDIA's driver through NVML (`nvml-wrapper`, which loads
//! `libnvidia-ml.so.1` at run time): for every GPU, the confidential-computing attestation
//! report taken with the request's 32-byte nonce and the attestation certificate chain.
//!
//! NVML calls block, so they run on the blocking pool. The driver is reached through
//! [`GpuDriver`], implemented for real by [`NvmlDriver`] and by fakes in tests.

use super::{AttestationError, GpuEvidence, GpuEvidenceSource};
use crate::settings::GpuEvidenceMode;
use async_trait::async_trait;
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::DeviceArchitecture;
use signet_core::ids::Nonce;
use std::sync::Arc;

/// What signet needs from the GPU driver.
pub trait GpuDriver: Send + Sync + 'static {
    /// Number of GPUs.
    fn gpu_count(&self) -> Result<u32, String>;
    /// Whether the system's confidential-computing feature is on.
    fn cc_enabled(&self) -> Result<bool, String>;
    /// Whether the GPUs accept work in CC mode (the "ready state" an operator sets).
    fn cc_ready(&self) -> Result<bool, String>;
    /// The signed attestation report of GPU `index` over `nonce`.
    fn attestation_report(&self, index: u32, nonce: [u8; 32]) -> Result<Vec<u8>, String>;
    /// The attestation certificate chain (PEM) of GPU `index`.
    fn certificate_chain(&self, index: u32) -> Result<Vec<u8>, String>;
    /// NRAS's name for GPU `index`'s architecture (`HOPPER`, `BLACKWELL`).
    fn architecture(&self, index: u32) -> Result<String, String>;
}

/// NRAS's architecture name.
pub fn nras_arch(arch: DeviceArchitecture) -> String {
    match arch {
        DeviceArchitecture::Hopper => "HOPPER".to_owned(),
        DeviceArchitecture::Blackwell => "BLACKWELL".to_owned(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

/// The real driver.
pub struct NvmlDriver {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlDriver").finish_non_exhaustive()
    }
}

impl NvmlDriver {
    /// Loads NVML from the system's library path.
    pub fn load() -> Result<Self, AttestationError> {
        Self::from_result(Nvml::init())
    }

    /// Loads NVML from an explicit library file.
    pub fn load_from(library: &std::path::Path) -> Result<Self, AttestationError> {
        Self::from_result(Nvml::builder().lib_path(library.as_os_str()).init())
    }

    fn from_result(
        result: Result<Nvml, nvml_wrapper::error::NvmlError>,
    ) -> Result<Self, AttestationError> {
        result.map(|nvml| Self { nvml }).map_err(|e| {
            AttestationError::Unavailable(format!(
                "NVML could not be initialised ({e}): gpu evidence mode nvml needs the NVIDIA \
                 driver (libnvidia-ml.so.1) and access to /dev/nvidia*"
            ))
        })
    }

    fn device(&self, index: u32) -> Result<nvml_wrapper::Device<'_>, String> {
        self.nvml
            .device_by_index(index)
            .map_err(|e| format!("GPU {index}: {e}"))
    }
}

impl GpuDriver for NvmlDriver {
    fn gpu_count(&self) -> Result<u32, String> {
        self.nvml.device_count().map_err(|e| e.to_string())
    }
    fn cc_enabled(&self) -> Result<bool, String> {
        self.device(0)?.is_cc_enabled().map_err(|e| e.to_string())
    }
    fn cc_ready(&self) -> Result<bool, String> {
        self.device(0)?
            .get_confidential_compute_state()
            .map_err(|e| e.to_string())
    }
    fn attestation_report(&self, index: u32, nonce: [u8; 32]) -> Result<Vec<u8>, String> {
        self.device(index)?
            .confidential_compute_gpu_attestation_report(nonce)
            .map(|r| r.attestation_report)
            .map_err(|e| format!("GPU {index} attestation report: {e}"))
    }
    fn certificate_chain(&self, index: u32) -> Result<Vec<u8>, String> {
        self.device(index)?
            .confidential_compute_gpu_certificate()
            .map(|c| c.attestation_cert_chain)
            .map_err(|e| format!("GPU {index} certificate chain: {e}"))
    }
    fn architecture(&self, index: u32) -> Result<String, String> {
        self.device(index)?
            .architecture()
            .map(nras_arch)
            .map_err(|e| format!("GPU {index} architecture: {e}"))
    }
}

/// GPU evidence from a driver, for every GPU.
pub struct DriverEvidence {
    driver: Arc<dyn GpuDriver>,
    gpus: u32,
}

impl std::fmt::Debug for DriverEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverEvidence")
            .field("gpus", &self.gpus)
            .finish()
    }
}

impl DriverEvidence {
    /// Checks the driver sees GPUs in confidential-computing mode. `require_cc: false`
    /// skips the CC checks (for `signet gpu-evidence` diagnostics only).
    pub fn open(driver: Arc<dyn GpuDriver>, require_cc: bool) -> Result<Self, AttestationError> {
        let unavailable = |what: String| AttestationError::Unavailable(what);
        let gpus = driver
            .gpu_count()
            .map_err(|e| unavailable(format!("NVML cannot count GPUs: {e}")))?;
        if gpus == 0 {
            return Err(unavailable("NVML sees no NVIDIA GPU".to_owned()));
        }
        if require_cc {
            match driver.cc_enabled() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(unavailable(
                        "confidential computing is off on the GPUs (nvidia-smi conf-compute -f)"
                            .to_owned(),
                    ));
                }
                Err(e) => {
                    return Err(unavailable(format!(
                        "cannot read the GPUs' confidential-computing settings: {e}"
                    )));
                }
            }
            if driver.cc_ready() != Ok(true) {
                log::warn!(
                    "the GPUs are in CC mode but not set ready for work \
                     (nvidia-smi conf-compute -srs 1); attestation proceeds"
                );
            }
        }
        Ok(Self { driver, gpus })
    }

    /// Collects one evidence item per GPU. Blocking.
    pub fn collect_blocking(&self, nonce: &Nonce) -> Result<Vec<GpuEvidence>, AttestationError> {
        (0..self.gpus)
            .map(|index| {
                Ok(GpuEvidence {
                    report: self
                        .driver
                        .attestation_report(index, nonce.0)
                        .map_err(AttestationError::Gpu)?,
                    certificate_chain_pem: self
                        .driver
                        .certificate_chain(index)
                        .map_err(AttestationError::Gpu)?,
                    arch: self
                        .driver
                        .architecture(index)
                        .map_err(AttestationError::Gpu)?,
                })
            })
            .collect()
    }
}

/// [`DriverEvidence`] as an async evidence source.
pub struct NvmlEvidence {
    inner: Arc<DriverEvidence>,
}

impl NvmlEvidence {
    /// Wraps checked driver evidence.
    pub fn new(inner: DriverEvidence) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

#[async_trait]
impl GpuEvidenceSource for NvmlEvidence {
    fn mode(&self) -> GpuEvidenceMode {
        GpuEvidenceMode::Nvml
    }

    async fn collect(&self, nonce: &Nonce) -> Result<Vec<GpuEvidence>, AttestationError> {
        let inner = self.inner.clone();
        let nonce = *nonce;
        tokio::task::spawn_blocking(move || inner.collect_blocking(&nonce))
            .await
            .map_err(|e| AttestationError::Gpu(format!("NVML worker failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nras_payload;
    use base64::Engine;
    use std::sync::Mutex;

    /// A driver that answers with recorded evidence and remembers the nonces it was given.
    struct RecordedDriver {
        gpus: u32,
        cc: bool,
        report: Vec<u8>,
        chain: Vec<u8>,
        nonces: Mutex<Vec<[u8; 32]>>,
    }

    impl GpuDriver for RecordedDriver {
        fn gpu_count(&self) -> Result<u32, String> {
            Ok(self.gpus)
        }
        fn cc_enabled(&self) -> Result<bool, String> {
            Ok(self.cc)
        }
        fn cc_ready(&self) -> Result<bool, String> {
            Ok(true)
        }
        fn attestation_report(&self, _index: u32, nonce: [u8; 32]) -> Result<Vec<u8>, String> {
            self.nonces.lock().unwrap().push(nonce);
            Ok(self.report.clone())
        }
        fn certificate_chain(&self, _index: u32) -> Result<Vec<u8>, String> {
            Ok(self.chain.clone())
        }
        fn architecture(&self, _index: u32) -> Result<String, String> {
            Ok(nras_arch(DeviceArchitecture::Hopper))
        }
    }

    fn recorded(gpus: u32, cc: bool) -> Arc<RecordedDriver> {
        let fixture = super::super::dev_gpu::recorded_evidence();
        Arc::new(RecordedDriver {
            gpus,
            cc,
            report: fixture.report.clone(),
            chain: fixture.certificate_chain_pem.clone(),
            nonces: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn every_gpu_gives_evidence_for_the_request_nonce() {
        let driver = recorded(2, true);
        let source = NvmlEvidence::new(DriverEvidence::open(driver.clone(), true).unwrap());
        let nonce = Nonce([0x5a; 32]);
        let evidence = source.collect(&nonce).await.unwrap();
        assert_eq!(evidence.len(), 2);
        assert_eq!(*driver.nonces.lock().unwrap(), vec![[0x5a; 32], [0x5a; 32]]);
        let payload: serde_json::Value =
            serde_json::from_str(&nras_payload(&nonce, &evidence)).unwrap();
        assert_eq!(payload["nonce"], "5a".repeat(32));
        assert_eq!(payload["arch"], "HOPPER");
        let list = payload["evidence_list"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        let b64 = base64::engine::general_purpose::STANDARD;
        let chain = b64
            .decode(list[0]["certificate"].as_str().unwrap())
            .unwrap();
        assert!(chain.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            b64.decode(list[1]["evidence"].as_str().unwrap()).unwrap(),
            driver.report
        );
    }

    #[test]
    fn gpus_without_cc_are_refused() {
        let err = DriverEvidence::open(recorded(1, false), true).unwrap_err();
        assert!(
            err.to_string().contains("confidential computing is off"),
            "{err}"
        );
        let err = DriverEvidence::open(recorded(0, true), true).unwrap_err();
        assert!(err.to_string().contains("no NVIDIA GPU"), "{err}");
    }

    #[test]
    fn a_missing_driver_is_a_clear_error() {
        let err = NvmlDriver::load_from(std::path::Path::new("/nonexistent/libnvidia-ml.so.1"))
            .unwrap_err();
        assert!(matches!(err, AttestationError::Unavailable(_)));
        assert!(err.to_string().contains("NVIDIA driver"), "{err}");
    }

    #[test]
    fn architectures_use_nras_names() {
        assert_eq!(nras_arch(DeviceArchitecture::Hopper), "HOPPER");
        assert_eq!(nras_arch(DeviceArchitecture::Blackwell), "BLACKWELL");
    }
}
