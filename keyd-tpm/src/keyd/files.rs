//! The key store's directory, `<homedir>/keys`: file names safe for any key id, and writes that
//! never leave a half-written key behind.
//!
//! A key's files share upstream's stem, `<ASCII alphanumerics of id>-<hex SHA-256 of id>`, so
//! any id (slashes, dots, unicode) maps to one flat, collision-free name, and a key that
//! upstream's file backend left (`<stem>.key`, plaintext) is found next to ours
//! (`<stem>.tpmkey`, TPM-wrapped). File names are at most 255 bytes, so our stem keeps at most
//! [`MAX_STEM_ALNUM`] of the alphanumerics (upstream keeps them all and cannot store such ids);
//! a name too long to exist is simply a file that is not there. Every write goes to a 0600 temp file that is fsynced, then
//! renamed (replace) or hard-linked (create only if absent) into place, and the directory is
//! fsynced, so after a crash a key file is either the old one or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use super::error::KeydError;

/// Our files: the TPM's wrapped key objects (see `record`).
const RECORD_EXT: &str = "tpmkey";
/// Upstream's file backend: plaintext key bytes or a PKCS#8 PEM.
const UPSTREAM_EXT: &str = "key";
const TEMP_MARKER: &str = ".tmp-";
/// Alphanumerics of the id kept in our file names: `<183>-<64 hex>.tpmkey` is 255 bytes.
const MAX_STEM_ALNUM: usize = 255 - 1 - 64 - 1 - RECORD_EXT.len();

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Our file stem for `id`: upstream's, unless the id has more than [`MAX_STEM_ALNUM`]
/// alphanumerics (no key with such an id could have been stored before).
pub fn stem(id: &str) -> String {
    stem_keeping(id, MAX_STEM_ALNUM)
}

/// Upstream's file stem for `id`, all alphanumerics kept.
fn upstream_stem(id: &str) -> String {
    stem_keeping(id, usize::MAX)
}

fn stem_keeping(id: &str, alnum: usize) -> String {
    let mut out: String = id.chars().filter(char::is_ascii_alphanumeric).take(alnum).collect();
    out.push('-');
    for b in openssl::sha::sha256(id.as_bytes()) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[derive(Clone, Debug)]
pub struct KeysDir {
    dir: PathBuf,
}

impl KeysDir {
    pub fn new(homedir: &Path) -> Self {
        Self {
            dir: homedir.join("keys"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where keyd-tpm keeps key `id`.
    pub fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{}.{RECORD_EXT}", stem(id)))
    }

    /// Where upstream's file backend kept key `id` in plaintext.
    pub fn upstream_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{}.{UPSTREAM_EXT}", upstream_stem(id)))
    }

    /// The file's bytes, or `None` if there is no such file (a name too long to exist included).
    pub fn read(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, KeydError> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(KeydError::io(path)(e)),
        }
    }

    /// Writes `bytes` to `path` unless a file is already there. False if one was.
    pub fn write_new(&self, path: &Path, bytes: &[u8]) -> Result<bool, KeydError> {
        let temp = self.write_temp(bytes)?;
        let linked = fs::hard_link(&temp, path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(KeydError::io(path)(e)),
        }
    }

    /// Writes `bytes` to `path`, replacing what is there.
    pub fn write_replace(&self, path: &Path, bytes: &[u8]) -> Result<(), KeydError> {
        let temp = self.write_temp(bytes)?;
        if let Err(e) = fs::rename(&temp, path) {
            let _ = fs::remove_file(&temp);
            return Err(KeydError::io(path)(e));
        }
        self.sync_dir()
    }

    /// Removes `path`; true if it existed.
    pub fn remove(&self, path: &Path) -> Result<bool, KeydError> {
        match fs::remove_file(path) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(KeydError::io(path)(e)),
        }
    }

    /// Runs blocking file work (writes fsync) off the async workers.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&KeysDir) -> Result<T, KeydError> + Send + 'static,
    ) -> Result<T, KeydError> {
        let dir = self.clone();
        tokio::task::spawn_blocking(move || work(&dir))
            .await
            .unwrap_or_else(|e| {
                Err(KeydError::Io {
                    path: self.dir.clone(),
                    source: io::Error::other(format!("key store task failed: {e}")),
                })
            })
    }

    /// Deletes temp files a crash left behind. Called at start, before any write.
    pub fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => log::info!(
                        "removed {} left by an interrupted write",
                        entry.path().display()
                    ),
                    Err(e) => log::warn!(
                        "cannot remove stale temp file {}: {e}",
                        entry.path().display()
                    ),
                }
            }
        }
    }

    fn ensure_dir(&self) -> Result<(), KeydError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(KeydError::io(&self.dir))?;
        // `mode` is filtered by the umask; the key directory is for this daemon only.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(KeydError::io(&self.dir))
    }

    /// A new 0600 file holding `bytes`, fsynced, with a name unique in the directory (not
    /// derived from the final name, which may already be 255 bytes long).
    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, KeydError> {
        self.ensure_dir()?;
        let temp = self.dir.join(format!(
            "{TEMP_MARKER}{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(KeydError::io(&temp)(e));
        }
        Ok(temp)
    }

    fn sync_dir(&self) -> Result<(), KeydError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(KeydError::io(&self.dir))
    }
}

/// A file that is not there, or whose name is too long to be there.
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENAMETOOLONG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_match_upstream_file_names() {
        // The file names upstream's documentation and packaging show.
        assert_eq!(
            stem("aziot_identityd_master_id"),
            "aziotidentitydmasterid-91b92c2c06a5a5dda5fbc9c48b4d428d930b9c1b8b2956a1044ccbc7a266afc9"
        );
        assert_eq!(
            stem("handle-validation-key"),
            "handlevalidationkey-40f1ca41fe8b50f53e10f3e3a580dcae24087f37aa498ba9903f2612b03e90ba"
        );
        assert!(stem("../../etc/passwd").starts_with("etcpasswd-"));
        assert!(stem("").starts_with('-'));
    }

    #[test]
    fn long_ids_get_names_that_fit_and_stay_distinct() {
        let dir = KeysDir::new(Path::new("/k"));
        let a = "a".repeat(1024);
        let b = format!("{}b", "a".repeat(1023));
        let name = |id: &str| dir.record_path(id).file_name().unwrap().len();
        assert_eq!(name(&a), 255);
        assert_eq!(name(&"x".repeat(183)), 255, "the longest name that keeps upstream's stem");
        assert_ne!(dir.record_path(&a), dir.record_path(&b));
        // Up to 183 alphanumerics the stem is upstream's, so older records are found.
        let id = "m".repeat(183);
        assert_eq!(stem(&id), upstream_stem(&id));
    }

    #[test]
    fn write_new_never_replaces_and_write_replace_does() {
        let home = tempfile::tempdir().unwrap();
        let dir = KeysDir::new(home.path());
        let path = dir.record_path("k");
        assert!(dir.write_new(&path, b"first").unwrap());
        assert!(!dir.write_new(&path, b"second").unwrap());
        assert_eq!(&KeysDir::read(&path).unwrap().unwrap()[..], b"first");
        dir.write_replace(&path, b"third").unwrap();
        assert_eq!(&KeysDir::read(&path).unwrap().unwrap()[..], b"third");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        // No temp files are left.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(dir.remove(&path).unwrap());
        assert!(!dir.remove(&path).unwrap());
        assert!(KeysDir::read(&path).unwrap().is_none());
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let home = tempfile::tempdir().unwrap();
        let dir = KeysDir::new(home.path());
        dir.ensure_dir().unwrap();
        let stale = dir.path().join(format!("{TEMP_MARKER}1-1"));
        fs::write(&stale, b"half").unwrap();
        dir.remove_stale_temp_files();
        assert!(!stale.exists());
    }
}
