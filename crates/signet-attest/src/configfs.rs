//! TDX quotes through the kernel's configfs-tsm interface (Linux ≥ 6.7,
//! Documentation/ABI/testing/configfs-tsm): create a report entry under
//! `/sys/kernel/config/tsm/report`, check its `provider` is `tdx_guest`, write the 64
//! report_data bytes to `inblob`, read the quote from `outblob`, and compare `generation`
//! before and after to detect another writer on the same entry; remove the entry after.
//!
//! Every request gets its own entry, so concurrent requests never share one; the generation
//! check and the caller's report_data self-check catch anything else. The file operations go
//! through [`TsmFs`] so tests can stand in for the kernel with a temp directory.

use super::AttestationError;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The file operations configfs-tsm needs. The real one is [`KernelFs`].
pub trait TsmFs: Send + Sync + 'static {
    /// `mkdir`: in configfs this makes the kernel create the entry's attribute files.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// `rmdir`.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Reads a whole attribute.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Writes a whole attribute.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
}

/// The kernel's configfs, through `std::fs`.
#[derive(Debug, Default)]
pub struct KernelFs;

impl TsmFs for KernelFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

/// How many times a quote is retried when another writer changed the entry.
const MAX_ATTEMPTS: usize = 3;

/// The provider name a TDX guest's configfs-tsm reports.
pub const TDX_PROVIDER: &str = "tdx_guest";

/// configfs-tsm quote source.
pub struct ConfigfsTsm {
    root: PathBuf,
    fs: Arc<dyn TsmFs>,
    next_entry: AtomicU64,
}

impl std::fmt::Debug for ConfigfsTsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigfsTsm")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// A report entry, removed when dropped.
struct Entry<'a> {
    fs: &'a dyn TsmFs,
    dir: PathBuf,
}

impl Entry<'_> {
    fn attribute(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, AttestationError> {
        self.fs.read(&self.attribute(name)).map_err(|e| {
            AttestationError::Provider(format!("reading {}: {e}", self.attribute(name).display()))
        })
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), AttestationError> {
        self.fs.write(&self.attribute(name), data).map_err(|e| {
            AttestationError::Provider(format!("writing {}: {e}", self.attribute(name).display()))
        })
    }

    fn generation(&self) -> Result<u64, AttestationError> {
        let raw = self.read("generation")?;
        String::from_utf8_lossy(&raw).trim().parse().map_err(|_| {
            AttestationError::Provider("configfs-tsm generation is not a number".to_owned())
        })
    }

    fn check_provider(&self) -> Result<(), AttestationError> {
        let raw = self.read("provider")?;
        let provider = String::from_utf8_lossy(&raw).trim().to_owned();
        if provider != TDX_PROVIDER {
            return Err(AttestationError::Unavailable(format!(
                "configfs-tsm provider is {provider:?}, not {TDX_PROVIDER:?}: this is not a TDX guest"
            )));
        }
        Ok(())
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.fs.remove_dir(&self.dir) {
            log::warn!(
                "could not remove configfs-tsm entry {}: {e}",
                self.dir.display()
            );
        }
    }
}

impl ConfigfsTsm {
    /// Opens the report directory and checks, with a throwaway entry, that it is a TDX
    /// guest's. Anything missing is an error that says what.
    pub fn open(root: &Path, fs: Arc<dyn TsmFs>) -> Result<Self, AttestationError> {
        if !fs.is_dir(root) {
            return Err(AttestationError::Unavailable(format!(
                "configfs-tsm report directory {} does not exist: attestation mode tdx needs a \
                 TDX guest with Linux >= 6.7 and configfs mounted at /sys/kernel/config",
                root.display()
            )));
        }
        let tsm = Self {
            root: root.to_owned(),
            fs,
            next_entry: AtomicU64::new(0),
        };
        let entry = tsm.create_entry()?;
        entry.check_provider()?;
        drop(entry);
        Ok(tsm)
    }

    fn create_entry(&self) -> Result<Entry<'_>, AttestationError> {
        let n = self.next_entry.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("signet-{}-{n}", std::process::id()));
        self.fs.create_dir(&dir).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (signet needs write access to the configfs-tsm directory)"
            } else {
                ""
            };
            AttestationError::Unavailable(format!(
                "cannot create configfs-tsm entry {}: {e}{hint}",
                dir.display()
            ))
        })?;
        Ok(Entry {
            fs: self.fs.as_ref(),
            dir,
        })
    }

    /// Obtains a quote for `report_data`. Blocking: run it off the async threads.
    pub fn quote_blocking(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestationError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let entry = self.create_entry()?;
            entry.check_provider()?;
            entry.write("inblob", report_data)?;
            let before = entry.generation()?;
            let quote = entry.read("outblob")?;
            let after = entry.generation()?;
            if before != after {
                log::warn!(
                    "configfs-tsm entry changed while reading its quote (attempt {attempt}); retrying"
                );
                continue;
            }
            if quote.is_empty() {
                return Err(AttestationError::Provider(
                    "configfs-tsm returned an empty quote".to_owned(),
                ));
            }
            return Ok(quote);
        }
        Err(AttestationError::Provider(format!(
            "configfs-tsm entry was changed by another writer {MAX_ATTEMPTS} times in a row"
        )))
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A stand-in for the kernel: a temp directory laid out like configfs-tsm, whose
    //! `inblob` writes are answered with a mock quote over exactly those bytes (or, when
    //! given one, always with the same recorded quote).

    use super::*;
    use crate::DevQuoteProvider;
    use std::sync::Mutex;

    pub struct FakeKernel {
        pub provider: String,
        quotes: DevQuoteProvider,
        /// Simulates another process writing the same entry this many times.
        pub intruder_writes: Mutex<usize>,
        pub removed: AtomicU64,
        /// A quote served whatever the report data (a real one, recorded elsewhere).
        pub recorded: Option<Vec<u8>>,
    }

    impl FakeKernel {
        pub fn new(provider: &str) -> Self {
            Self {
                provider: provider.to_owned(),
                quotes: DevQuoteProvider::generate(),
                intruder_writes: Mutex::new(0),
                removed: AtomicU64::new(0),
                recorded: None,
            }
        }

        /// A TDX guest whose quoting service always answers with `quote`.
        pub fn serving(quote: &[u8]) -> Self {
            Self {
                recorded: Some(quote.to_vec()),
                ..Self::new(TDX_PROVIDER)
            }
        }

        fn bump_generation(&self, dir: &Path) -> io::Result<()> {
            let path = dir.join("generation");
            let current: u64 = std::fs::read_to_string(&path)?.trim().parse().unwrap_or(0);
            std::fs::write(&path, format!("{}\n", current + 1))
        }
    }

    impl TsmFs for FakeKernel {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            std::fs::create_dir(path)?;
            // What the kernel does on mkdir: the entry's attributes appear.
            std::fs::write(path.join("provider"), format!("{}\n", self.provider))?;
            std::fs::write(path.join("generation"), "0\n")?;
            std::fs::write(path.join("inblob"), b"")?;
            std::fs::write(path.join("outblob"), b"")
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.removed.fetch_add(1, Ordering::SeqCst);
            std::fs::remove_dir_all(path)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            if path.file_name().is_some_and(|n| n == "outblob") {
                let mut intruder = self.intruder_writes.lock().unwrap();
                if *intruder > 0 {
                    *intruder -= 1;
                    if let Some(dir) = path.parent() {
                        self.bump_generation(dir)?;
                    }
                }
            }
            std::fs::read(path)
        }
        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            std::fs::write(path, data)?;
            if path.file_name().is_some_and(|n| n == "inblob") {
                let dir = path.parent().unwrap_or(path);
                let report_data: [u8; 64] = data.try_into().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "inblob must be 64 bytes")
                })?;
                let quote = match &self.recorded {
                    Some(quote) => quote.clone(),
                    None => self.quotes.mock_quote(&report_data),
                };
                std::fs::write(dir.join("outblob"), quote)?;
                self.bump_generation(dir)?;
            }
            Ok(())
        }
        fn is_dir(&self, path: &Path) -> bool {
            path.is_dir()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeKernel;
    use super::*;
    use crate::check_quote_binding;

    fn open(kernel: Arc<FakeKernel>) -> (tempfile::TempDir, Result<ConfigfsTsm, AttestationError>) {
        let dir = tempfile::tempdir().unwrap();
        let tsm = ConfigfsTsm::open(dir.path(), kernel);
        (dir, tsm)
    }

    #[test]
    fn a_quote_binds_exactly_the_bytes_written_and_the_entry_is_removed() {
        let kernel = Arc::new(FakeKernel::new("tdx_guest"));
        let (dir, tsm) = open(kernel.clone());
        let tsm = tsm.unwrap();
        let quote = tsm.quote_blocking(&[9; 64]).unwrap();
        check_quote_binding(&quote, &[9; 64]).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "entries cleaned up"
        );
        assert_eq!(
            kernel.removed.load(Ordering::SeqCst),
            2,
            "probe entry and request entry"
        );
    }

    #[test]
    fn another_provider_is_refused_at_open() {
        let (_dir, tsm) = open(Arc::new(FakeKernel::new("sev_guest")));
        let err = tsm.unwrap_err();
        assert!(err.to_string().contains("sev_guest"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_refused_at_open() {
        let err = ConfigfsTsm::open(Path::new("/nonexistent/tsm/report"), Arc::new(KernelFs))
            .unwrap_err();
        assert!(matches!(err, AttestationError::Unavailable(_)));
        assert!(err.to_string().contains("/nonexistent/tsm/report"), "{err}");
    }

    #[test]
    fn a_plain_directory_is_not_mistaken_for_configfs() {
        // mkdir in an ordinary directory creates no attributes: no provider, refused.
        let dir = tempfile::tempdir().unwrap();
        let err = ConfigfsTsm::open(dir.path(), Arc::new(KernelFs)).unwrap_err();
        assert!(err.to_string().contains("provider"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe entry removed"
        );
    }

    #[test]
    fn a_racing_writer_is_detected_and_retried() {
        let kernel = Arc::new(FakeKernel::new("tdx_guest"));
        let (_dir, tsm) = open(kernel.clone());
        let tsm = tsm.unwrap();
        *kernel.intruder_writes.lock().unwrap() = 2;
        let quote = tsm.quote_blocking(&[3; 64]).unwrap();
        check_quote_binding(&quote, &[3; 64]).unwrap();
        *kernel.intruder_writes.lock().unwrap() = MAX_ATTEMPTS;
        let err = tsm.quote_blocking(&[3; 64]).unwrap_err();
        assert!(err.to_string().contains("another writer"), "{err}");
    }

    #[test]
    fn concurrent_requests_never_mix_up_their_quotes() {
        let kernel = Arc::new(FakeKernel::new("tdx_guest"));
        let (_dir, tsm) = open(kernel);
        let tsm = Arc::new(tsm.unwrap());
        let workers: Vec<_> = (0..8u8)
            .map(|t| {
                let tsm = tsm.clone();
                std::thread::spawn(move || {
                    for i in 0..10u8 {
                        let data = [t.wrapping_mul(31).wrapping_add(i); 64];
                        let quote = tsm.quote_blocking(&data).unwrap();
                        check_quote_binding(&quote, &data).unwrap();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    }
}
