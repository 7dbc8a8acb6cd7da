//! Start-up: load the configuration, create the signing key, build the attestation
//! providers (refusing to start if one is missing), and hand the proxy and its background
//! services to Pingora.

use crate::attestation::{Attestor, SignerIdentity};
use crate::cli::ServeArgs;
use crate::config::{self, AttestationMode, ConfigError, LoadedConfig};
use crate::gateway::Gateway;
use crate::notary::Notary;
use crate::proxy::SignetProxy;
use crate::signing::Signer;
use crate::store::{MonotonicClock, SignatureStore};
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{BackgroundService, background_service};
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
    Attestation(#[from] crate::attestation::AttestationError),
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

fn start(args: ServeArgs) -> Result<ExitCode, StartError> {
    let mut opt = args.pingora;
    let path = opt.conf.take().ok_or(StartError::NoConfigFile)?;
    let LoadedConfig { server, settings } = config::load(Path::new(&path))?;
    if opt.test {
        // Checked both Pingora's keys and ours; Pingora's own -t would check only its part.
        println!("signet: configuration {path} is valid");
        return Ok(ExitCode::SUCCESS);
    }

    let signer = Signer::generate();
    let identity = SignerIdentity {
        address: *signer.address(),
        public_key: *signer.public_key(),
    };
    let attestor = Attestor::from_settings(&settings.attestation, identity)?;
    if attestor.mode() == AttestationMode::Dev {
        warn!(
            "ATTESTATION IS IN DEV MODE: quotes are mock quotes that no Intel root accepts; \
             nothing this gateway signs is hardware-rooted. Never use dev mode in production."
        );
    }
    let store = SignatureStore::new(
        settings.signatures.ttl,
        settings.signatures.max_entries,
        Arc::new(MonotonicClock::default()),
    );
    let notary = Notary::new(signer, store);
    let listen = settings.listen;
    let sweep_every = settings.signatures.sweep_interval;
    info!(
        "signet {} starting: listen={} upstream={} signing_address={} attestation={} gpu={} threads={}",
        env!("CARGO_PKG_VERSION"),
        listen,
        settings.upstream.url,
        notary.address(),
        settings.attestation.mode.as_str(),
        settings.attestation.gpu.as_str(),
        server.threads,
    );
    let gateway = Arc::new(Gateway::new(settings, notary, attestor));

    let mut pingora = Server::new_with_opt_and_conf(opt, server);
    pingora.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &pingora.configuration,
        SignetProxy::new(gateway.clone()),
        "signet",
    );
    proxy.add_tcp(&listen.to_string());
    pingora.add_service(proxy);
    pingora.add_service(background_service(
        "signature sweeper",
        Sweeper {
            gateway,
            every: sweep_every,
        },
    ));
    pingora.run_forever();
}

/// Removes expired signatures on a fixed period.
struct Sweeper {
    gateway: Arc<Gateway>,
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
                    self.gateway.notary().store().sweep();
                }
            }
        }
    }
}
