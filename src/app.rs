//! Start-up: load the configuration, create the signing key, build the attestation
//! providers (refusing to start if one is missing), and hand the proxy and its background
//! services to Pingora.

use crate::aci::{AciService, ReceiptLimits};
use crate::cli::{
    GpuEvidenceArgs, ProvenanceArgs, ServeArgs, VerifyArgs, VerifyReceiptArgs, VerifySignatureArgs,
};
use crate::config::KeySource;
use crate::config::{self, AttestationMode, ConfigError, LoadedConfig, Settings};
use crate::gateway::Gateway;
use crate::keys::{KeyError, ProvisionedKeys};
use crate::notary::Notary;
use crate::proxy::SignetProxy;
use crate::shared_store::SharedStore;
use crate::upstreams::{HealthService, UpstreamPool};
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{BackgroundService, background_service};
use signet_attest::nras_payload;
use signet_attest::nvml::{DriverEvidence, GpuDriver, NvmlDriver};
use signet_attest::{Attestor, SignerIdentity};
use signet_core::e2ee::E2eeService;
use signet_core::e2ee::crypto::{SecretKey, Suite};
use signet_core::e2ee::near::NearKeys;
use signet_core::ids::Nonce;
use signet_core::signing::ed25519::Ed25519Signer;
use signet_core::store::{MonotonicClock, SignatureStore};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `-c FILE` is missing.
    #[error("signet serve needs a configuration file: -c FILE")]
    NoConfigFile,
    /// The configuration is wrong.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// An attestation provider is not available.
    #[error("attestation unavailable: {0}")]
    Attestation(#[from] signet_attest::AttestationError),
    /// The upstream pool could not be built.
    #[error(transparent)]
    Upstreams(#[from] crate::upstreams::PoolError),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The shared signature store is misconfigured.
    #[error("signet.signatures.redis: {0}")]
    SharedStore(crate::shared_store::SharedStoreError),
    /// The ACI keyset could not be built.
    #[error("signet.aci: {0}")]
    Aci(String),
    /// The keys could not be had from their source.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
}

/// `signet serve`: returns only on a start-up failure (Pingora exits the process itself).
pub fn serve(args: ServeArgs) -> ExitCode {
    match start(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("signet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `signet verify`: exit 0 only if every required check passed; 2 for bad arguments.
pub fn verify(args: VerifyArgs) -> ExitCode {
    let json = args.json;
    let options = match verify_options(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("signet verify: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signet verify: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checklist = runtime.block_on(signet_verify::run(&options));
    print_verdict(&checklist, json)
}

/// `--at`: Unix seconds or RFC 3339.
/// Prints a verifier's checklist (JSON or the readable form) and turns its verdict into the
/// process's exit code: `signet verify` and `verify-receipt` answer scripts the same way.
fn print_verdict(checklist: &signet_verify::Checklist, json: bool) -> ExitCode {
    if json {
        println!("{}", checklist.to_json());
    } else {
        print!("{}", checklist.render());
    }
    if checklist.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_at(text: Option<&str>) -> Result<Option<u64>, String> {
    text.map(|t| {
        t.parse::<u64>()
            .ok()
            .or_else(|| signet_verify::parse_rfc3339(t))
            .ok_or_else(|| format!("--at {t}: neither Unix seconds nor RFC 3339"))
    })
    .transpose()
}

fn provenance_expectations(args: ProvenanceArgs) -> signet_verify::aci::ProvenanceExpectations {
    signet_verify::aci::ProvenanceExpectations {
        repo_url: args.expect_repo,
        commit: args.expect_commit,
        image_digest: args.expect_image_digest,
    }
}

fn verify_options(args: VerifyArgs) -> Result<signet_verify::VerifyOptions, String> {
    use signet_verify::{CollateralSource, quote::parse_collateral};
    let collateral = match (&args.collateral, &args.pccs_url) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("--collateral {}: {e}", path.display()))?;
            Some(CollateralSource::File(Box::new(parse_collateral(&bytes)?)))
        }
        (None, Some(url)) => Some(CollateralSource::Service(url.clone())),
        (None, None) => None,
    };
    let at = parse_at(args.at.as_deref())?;
    let ca_pem = args
        .ca_cert
        .as_ref()
        .map(|p| std::fs::read(p).map_err(|e| format!("--ca-cert {}: {e}", p.display())))
        .transpose()?;
    let nras_jwks = match &args.nras_jwks {
        None => signet_verify::nras::JwksSource::FromNras,
        Some(p) => signet_verify::nras::JwksSource::Saved(
            std::fs::read(p).map_err(|e| format!("--nras-jwks {}: {e}", p.display()))?,
        ),
    };
    let timeout =
        humantime::parse_duration(&args.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let https = args
        .url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://");
    Ok(signet_verify::VerifyOptions {
        tls_binding: https && !args.no_tls_binding,
        url: args.url,
        token: args.token,
        model: args.model,
        prompt: args.prompt,
        allow_dev: args.allow_dev,
        allow_no_gpu: args.allow_no_gpu,
        collateral,
        accept_tcb: args.accept_tcb,
        at,
        nras_url: args.nras_url,
        nras_jwks,
        ca_pem,
        timeout,
        expect_provenance: provenance_expectations(args.provenance),
    })
}

/// `signet verify-signature`: prints the signer; exit 1 on a mismatch or bad input.
pub fn verify_signature(args: VerifySignatureArgs) -> ExitCode {
    match signet_verify::verify_signature(&args.text, &args.signature, args.address.as_deref()) {
        Ok(signer) => {
            println!("{signer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("signet verify-signature: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `signet verify-receipt`: exit 0 only if every required check passed, 2 for unreadable
/// files.
pub fn verify_receipt(args: VerifyReceiptArgs) -> ExitCode {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let inputs = (|| -> Result<_, String> {
        let receipt = read(&args.file)?;
        let report = read(&args.report)?;
        let request = args.request.as_deref().map(read).transpose()?;
        let response = args.response.as_deref().map(read).transpose()?;
        let collateral = args
            .collateral
            .as_deref()
            .map(|path| {
                read(path).and_then(|bytes| {
                    signet_verify::quote::parse_collateral(&bytes)
                        .map(Box::new)
                        .map_err(|e| format!("--collateral {}: {e}", path.display()))
                })
            })
            .transpose()?;
        let at = parse_at(args.at.as_deref())?;
        Ok((receipt, report, request, response, collateral, at))
    })();
    let (receipt, report, request, response, collateral, at) = match inputs {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("signet verify-receipt: {e}");
            return ExitCode::from(2);
        }
    };
    let checklist = signet_verify::aci::verify_offline(
        &receipt,
        &report,
        &signet_verify::aci::OfflineOptions {
            nonce: args.nonce,
            request,
            response,
            allow_dev: args.allow_dev,
            collateral,
            at,
            accept_tcb: args.accept_tcb,
            expect_provenance: provenance_expectations(args.provenance),
        },
    );
    print_verdict(&checklist, args.json)
}

/// `signet gpu-evidence`: the NVML path on this machine, end to end, printed.
pub fn gpu_evidence(args: GpuEvidenceArgs) -> ExitCode {
    let nonce = match args.nonce.as_deref().map(Nonce::parse).transpose() {
        Ok(nonce) => nonce.unwrap_or_else(Nonce::random),
        Err(e) => {
            eprintln!("signet: --nonce: {e}");
            return ExitCode::from(2);
        }
    };
    let collected = NvmlDriver::load().and_then(|driver| {
        let driver: Arc<dyn GpuDriver> = Arc::new(driver);
        eprintln!(
            "gpus={:?} cc_enabled={:?} cc_ready={:?}",
            driver.gpu_count(),
            driver.cc_enabled(),
            driver.cc_ready()
        );
        DriverEvidence::open(driver, !args.skip_cc_check)?.collect_blocking(&nonce)
    });
    match collected {
        Ok(evidence) => {
            println!("{}", nras_payload(&nonce, &evidence));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("signet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: ServeArgs) -> Result<ExitCode, StartError> {
    let mut opt = args.pingora;
    let path = opt.conf.take().ok_or(StartError::NoConfigFile)?;
    let LoadedConfig { server, settings } = config::load(Path::new(&path))?;
    if opt.test {
        // Checked both Pingora's keys and ours; Pingora's own -t would check only its part.
        println!("signet: configuration {path} is valid");
        return Ok(ExitCode::SUCCESS);
    }

    // Before the key exists: it must never be able to reach a core dump.
    for failure in crate::hardening::protect_key_material() {
        warn!("could not harden the process: {failure}");
    }
    info!(
        "before generating the signing key: {}",
        crate::hardening::key_material_protection()
    );
    let started = crate::config::unix_now();
    let keys = provision_keys(&settings)?;
    let custody = serde_json::to_value(keys.custody()).unwrap_or_default();
    let (notary, shared) = build_notary(&settings, &keys)?;
    let (attestor, tls_spki) = build_attestor(&settings, &notary)?;
    let attestor = Arc::new(attestor.with_key_custody(custody.clone()));
    let e2ee = build_e2ee(&keys, &notary)?;
    let aci = build_aci(
        &settings,
        keys.ed25519(crate::keys::ACI_RECEIPT)?,
        tls_spki,
        started,
        shared.as_ref(),
        e2ee.keyset_entries(),
    )?
    .with_key_custody(custody);
    // Every secret is inside its signer now; the provisioned copies are wiped here.
    drop(keys);
    if let Some(warning) = crate::hardening::ensure_descriptors(settings.limits.max_connections) {
        warn!("{warning}");
    }
    let (upstreams, health_service) = UpstreamPool::new(
        settings.upstreams.clone(),
        settings.health_check.as_ref(),
        settings.upstream_timeouts,
    )?;
    log_start(&settings, &notary, server.threads);
    let gateway =
        Arc::new(Gateway::new(settings, notary, attestor.clone(), aci, upstreams).with_e2ee(e2ee));

    write_pid_file(&opt, &server);
    let mut pingora = Server::new_with_opt_and_conf(opt, server);
    pingora.bootstrap();
    add_proxy_service(&mut pingora, &gateway)?;
    add_admin_service(&mut pingora, &gateway);
    add_background_services(
        &mut pingora,
        Background {
            shared,
            health_service,
            gateway,
            attestor,
        },
    );
    pingora.run_forever();
}

/// The attestation providers for this key (refusing to start if one is missing), bound to
/// the listener's TLS certificate when there is one; that certificate's key fingerprint too.
fn build_attestor(
    settings: &Settings,
    notary: &Notary,
) -> Result<(Attestor, Option<[u8; 32]>), StartError> {
    let identity = SignerIdentity {
        address: *notary.address(),
        public_key: *notary.signer().public_key(),
        ed25519_public_key: Some(notary.ed25519().public_key()),
    };
    let mut attestor = Attestor::from_settings(&settings.attestation, identity)?;
    let mut tls_spki = None;
    if let Some(tls) = &settings.tls {
        // The same file Pingora loads for the listener: reports can bind its key.
        let pem = std::fs::read(&tls.cert)
            .map_err(|e| StartError::Tls(format!("{}: {e}", tls.cert.display())))?;
        let spki = spki_sha256_of_pem_chain(&pem).ok_or_else(|| {
            StartError::Tls(format!("{}: no readable certificate", tls.cert.display()))
        })?;
        info!(
            "TLS certificate key fingerprint (sha256 of SPKI): {}",
            hex::encode(spki)
        );
        attestor = attestor.with_tls_certificate(spki);
        tls_spki = Some(spki);
    }
    if attestor.mode() == AttestationMode::Dev {
        warn!(
            "ATTESTATION IS IN DEV MODE: quotes are mock quotes that no Intel root accepts; \
             nothing this gateway signs is hardware-rooted. Never use dev mode in production."
        );
    }
    Ok((attestor, tls_spki))
}

/// Every key role's key from `signet.signing.key_source`: drawn here (`random`), or asked of
/// the dstack agent (`dstack`), which must answer before signet serves anything.
fn provision_keys(settings: &Settings) -> Result<ProvisionedKeys, StartError> {
    match settings.signing.key_source {
        KeySource::Random => Ok(ProvisionedKeys::random()),
        KeySource::Dstack => {
            let agent =
                signet_attest::dstack::DstackAgent::open(&settings.attestation.dstack_socket)
                    .map_err(|e| KeyError::Dstack(e.to_string()))?;
            // Before Pingora's runtimes exist: a small one for the few calls at start.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| KeyError::Dstack(format!("no runtime for the agent: {e}")))?;
            let keys = runtime.block_on(async {
                tokio::time::timeout(
                    settings.attestation.timeout,
                    ProvisionedKeys::from_dstack(&agent),
                )
                .await
                .map_err(|_| {
                    KeyError::Dstack(format!(
                        "the agent did not give the keys within {:?}",
                        settings.attestation.timeout
                    ))
                })?
            })?;
            info!(
                "keys derived from the dstack KMS: {}",
                keys.custody()
                    .keys
                    .iter()
                    .map(|k| format!("{}={}", k.role, k.path))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            Ok(keys)
        }
    }
}

/// Most E2EE v2 nonces remembered at once (each for 601 s): about 830 E2EE requests a
/// second sustained; past it new E2EE requests are refused as replays until nonces expire.
const E2EE_REPLAY_CAPACITY: usize = 500_000;

/// The E2EE v2 keys, one per suite, from `signing.key_source` like every key: roles of their
/// own (never the receipt key, never the signing key), published in the ACI keyset. NEAR's
/// format, beside it, uses the legacy report's signing keys, as that format defines
/// (docs/API.md §9.5).
fn build_e2ee(keys: &ProvisionedKeys, notary: &Notary) -> Result<Arc<E2eeService>, StartError> {
    let mut secrets = Vec::with_capacity(2);
    for (role, suite) in [
        (crate::keys::E2EE_X25519, Suite::X25519),
        (crate::keys::E2EE_SECP256K1, Suite::Secp256k1),
    ] {
        let seed = keys.seed(role)?;
        let secret =
            SecretKey::from_seed(suite, &seed).ok_or(KeyError::Invalid { role: role.name })?;
        secrets.push(secret);
    }
    let e2ee = E2eeService::with_keys(secrets, E2EE_REPLAY_CAPACITY)
        .with_near_keys(NearKeys::from_signers(notary.signer(), notary.ed25519()));
    for entry in e2ee.keyset_entries() {
        info!(
            "E2EE v2 key {} ({}): {}",
            entry.key_id, entry.algo, entry.public_key
        );
    }
    Ok(Arc::new(e2ee))
}

/// The ACI service: the workload keyset (a receipt key of its own, the TLS key), its
/// reports and the receipts, kept as long and as many as signatures, and mirrored to the
/// same shared store.
fn build_aci(
    settings: &Settings,
    receipt_key: Ed25519Signer,
    tls_spki: Option<[u8; 32]>,
    started: u64,
    shared: Option<&Arc<SharedStore>>,
    e2ee_keys: Vec<signet_core::aci::E2eeKeyEntry>,
) -> Result<AciService, StartError> {
    let aci = AciService::new(
        &settings.aci,
        receipt_key,
        tls_spki,
        started,
        ReceiptLimits {
            ttl: settings.signatures.ttl,
            max_entries: settings.signatures.max_entries,
        },
        Arc::new(MonotonicClock::default()),
        settings.attestation.cache_ttl,
        settings.auth.is_some(),
    )
    .map_err(|e| StartError::Aci(e.to_string()))?;
    let aci = match shared {
        Some(shared) => aci.with_shared_store(shared.clone()),
        None => aci,
    };
    let aci = aci
        .with_e2ee_keys(e2ee_keys)
        .map_err(|e| StartError::Aci(e.to_string()))?;
    info!(
        "ACI keyset digest {} (receipt key {}, not_after {})",
        aci.digest(),
        aci.keyset().receipt_signing_keys[0].public_key,
        aci.keyset().not_after
    );
    Ok(aci)
}

/// The notary over the in-memory signature store, mirrored to Redis when configured (the
/// mirror is returned too: its writer runs as a background service).
fn build_notary(
    settings: &Settings,
    keys: &ProvisionedKeys,
) -> Result<(Notary, Option<Arc<SharedStore>>), StartError> {
    let store = SignatureStore::new(
        settings.signatures.ttl,
        settings.signatures.max_entries,
        Arc::new(MonotonicClock::default()),
    );
    let notary = Notary::new(keys.signer(crate::keys::SIGNING)?, store)
        .with_ed25519(keys.ed25519(crate::keys::LEGACY_ED25519)?);
    match &settings.signatures.redis {
        None => Ok((notary, None)),
        Some(redis) => {
            let shared =
                Arc::new(SharedStore::new(redis.clone()).map_err(StartError::SharedStore)?);
            Ok((notary.with_shared_store(shared.clone()), Some(shared)))
        }
    }
}

/// One line that says what starts: listener, upstreams, signing address, attestation.
fn log_start(settings: &Settings, notary: &Notary, threads: usize) {
    info!(
        "signet {} starting: listen={}{} upstreams={} signing_address={} key_source={} attestation={} gpu={} threads={}",
        env!("CARGO_PKG_VERSION"),
        settings.listen,
        if settings.tls.is_some() { " (tls)" } else { "" },
        settings
            .upstreams
            .iter()
            .map(|u| u.url.as_str())
            .collect::<Vec<_>>()
            .join(","),
        notary.address(),
        settings.signing.key_source.as_str(),
        settings.attestation.mode.as_str(),
        settings.attestation.gpu.as_str(),
        threads,
    );
}

/// Pingora writes pid_file only when it daemonizes; a foreground signet writes it too, so
/// `systemctl reload` (systemd/signet.service) can always find the process to upgrade.
fn write_pid_file(opt: &Opt, server: &ServerConf) {
    if !opt.daemon && !server.daemon {
        if let Err(e) = std::fs::write(&server.pid_file, format!("{}\n", std::process::id())) {
            warn!("could not write pid_file {}: {e}", server.pid_file);
        }
    }
}

/// The proxy on the client listener (TLS when configured), behind the connection guards.
fn add_proxy_service(pingora: &mut Server, gateway: &Arc<Gateway>) -> Result<(), StartError> {
    let settings = &gateway.settings;
    let places = crate::hardening::Places::new(
        settings.limits.max_connections,
        settings.limits.max_connections_per_client,
    );
    let app = crate::hardening::GuardedApp::new(
        pingora_proxy::http_proxy(&pingora.configuration, SignetProxy::new(gateway.clone())),
        settings.client_timeouts.head,
        settings.limits.max_header_bytes,
        places.clone(),
    );
    let mut proxy = pingora_core::services::listening::Service::new("signet".to_owned(), app);
    proxy.set_handshake_timeout(settings.client_timeouts.handshake);
    // No read buffer in front of client sockets (measured in BENCHMARKS.md): Pingora's
    // default is a 64 KiB one per connection, zero-filled when allocated, which cost every
    // open stream memory for nothing: request heads and bodies are read into Pingora's own
    // HTTP buffers anyway, and rustls keeps its own. Writes keep their MSS-sized buffer.
    let listener = ListenerConfig::tcp(settings.listen.to_string())
        .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE));
    match &settings.tls {
        None => proxy.add_listener(listener),
        Some(tls) => {
            let mut tls_settings =
                TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy())
                    .map_err(|e| StartError::Tls(e.to_string()))?;
            if tls.h2 {
                tls_settings.enable_h2();
            }
            proxy.add_listener(listener.tls(tls_settings));
            // Before its handshake a TLS connection already counts against the caps.
            proxy
                .endpoints()
                .set_pre_tls_callback(Arc::new(crate::hardening::HandshakeGuard::new(places)));
        }
    }
    pingora.add_service(proxy);
    Ok(())
}

/// Prometheus metrics on the admin listener, when there is one.
fn add_admin_service(pingora: &mut Server, gateway: &Arc<Gateway>) {
    if let Some(admin) = gateway.settings.admin_listen {
        if !admin.ip().is_loopback() {
            // The metrics listener has no authentication of its own.
            warn!(
                "the admin listener {admin} is reachable beyond this machine and has no \
                 authentication: bind it to 127.0.0.1 or firewall it (signet.admin.listen)"
            );
        }
        crate::metrics::StateCollector::register(gateway.clone());
        let mut metrics = pingora_prometheus::prometheus_http_service();
        metrics.add_tcp(&admin.to_string());
        pingora.add_service(metrics);
    }
}

/// What the background services need.
struct Background {
    shared: Option<Arc<SharedStore>>,
    health_service: Option<HealthService>,
    gateway: Arc<Gateway>,
    attestor: Arc<Attestor>,
}

/// The Redis writer, the health checks, the signature sweeper and the report refresher.
fn add_background_services(pingora: &mut Server, background: Background) {
    if let Some(shared) = background.shared {
        pingora.add_service(background_service(
            "shared signature store writer",
            crate::shared_store::SharedStoreWriter(shared),
        ));
    }
    if let Some(health_service) = background.health_service {
        pingora.add_service(health_service);
    }
    pingora.add_service(background_service(
        "signature sweeper",
        Sweeper {
            store: background.gateway.notary.store_handle(),
            receipts: background.gateway.aci.receipts_handle(),
            every: background.gateway.settings.signatures.sweep_interval,
        },
    ));
    if !background.attestor.cache_ttl().is_zero() {
        pingora.add_service(background_service(
            "attestation refresher",
            ReportRefresher {
                attestor: background.attestor,
            },
        ));
    }
}

/// Keeps a report for nonce-less requests fresh, so they rarely wait for a provider.
struct ReportRefresher {
    attestor: Arc<Attestor>,
}

#[async_trait]
impl BackgroundService for ReportRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Refresh at half the cache lifetime: a cached report is always younger than its TTL.
        let mut ticks = tokio::time::interval(self.attestor.cache_ttl() / 2);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.attestor.refresh().await {
                        warn!("background attestation refresh failed: {e}");
                    }
                }
            }
        }
    }
}

/// Removes expired signatures on a fixed period.
struct Sweeper {
    store: Arc<signet_core::store::SignatureStore>,
    receipts: Arc<signet_core::aci::store::ReceiptStore>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => {
                    self.store.sweep();
                    self.receipts.sweep();
                }
            }
        }
    }
}

/// sha256 of the DER SubjectPublicKeyInfo of the first certificate in a PEM chain.
pub fn spki_sha256_of_pem_chain(pem: &[u8]) -> Option<[u8; 32]> {
    let first = rustls_pemfile::certs(&mut std::io::BufReader::new(pem))
        .next()?
        .ok()?;
    signet_core::report::spki_sha256_of_cert(first.as_ref())
}
