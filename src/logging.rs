//! Logging: `env_logger` (filtered by `RUST_LOG`, default `info`) behind a guard that no
//! `RUST_LOG` setting can open. The debug and trace lines of Pingora and of the libraries
//! under it carry request and response bodies and header values (a bearer token among
//! them); so below `info` only signet's own modules log, and signet never logs bodies,
//! prompts, completions, tokens or key material at any level.

use log::{Level, Log, Metadata, Record};

/// Whether a record from `target` at `level` may be written at all.
pub fn admits(target: &str, level: Level) -> bool {
    level <= Level::Info
        || target == "signet"
        || target.starts_with("signet::")
        || target.starts_with("signet_")
}

struct Guarded(env_logger::Logger);

impl Log for Guarded {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        admits(metadata.target(), metadata.level()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if admits(record.target(), record.level()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Installs the guarded logger (once; a second call changes nothing).
pub fn init() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format_timestamp_millis()
            .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Guarded(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signets_own_modules_log_below_info() {
        for target in [
            "pingora_proxy::proxy_h1",
            "pingora_core::protocols",
            "h2",
            "rustls",
        ] {
            assert!(!admits(target, Level::Debug), "{target}");
            assert!(!admits(target, Level::Trace), "{target}");
            assert!(admits(target, Level::Info), "{target}");
            assert!(admits(target, Level::Error), "{target}");
        }
        assert!(admits("signet::access", Level::Debug));
        assert!(admits("signet_attest::dstack", Level::Trace));
        assert!(!admits("signetic", Level::Debug));
    }
}
