//! On-disk copies of the DPS auth keys this daemon imported, as the TPM returned them from
//! TPM2_Import: public area plus the private area wrapped by the SRK. Nothing here is usable
//! without this TPM. They exist so that the previous key can be restored after a failed
//! registration, and so that a crash in the middle of swapping keys can be finished at start.
//! The key that salts the daemon's encrypted sessions is kept the same way (`session-key`).
//!
//! Three auth key slots: `current` (the key at the persistent handle), `previous` (the one before it) and
//! `next` (a proven key that is being swapped in). Every write is atomic: temp file, fsync,
//! rename, fsync of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

use super::error::TpmError;

const MAGIC: &[u8; 8] = b"AZTPMAK1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Current,
    Previous,
    Next,
    /// The key that salts keyd-tpm's encrypted sessions (see `session`).
    SessionKey,
}

impl Slot {
    pub fn file_name(self) -> &'static str {
        match self {
            Slot::Current => "auth-key.current",
            Slot::Previous => "auth-key.previous",
            Slot::Next => "auth-key.next",
            Slot::SessionKey => "session-key",
        }
    }
}

/// An SRK-wrapped key as TPM2_Import returned it.
#[derive(Debug, Clone)]
pub struct WrappedKey {
    pub public: Public,
    pub private: Private,
}

impl WrappedKey {
    /// The marshalled TPMT_PUBLIC, which identifies the key (its unique field hashes the secret).
    pub fn public_bytes(&self) -> Result<Vec<u8>, TpmError> {
        self.public
            .marshall()
            .map_err(|e| TpmError::Unexpected(format!("cannot marshal a key's public area: {e}")))
    }

    fn encode(&self) -> Result<Vec<u8>, TpmError> {
        let public = self.public_bytes()?;
        let private = self.private.value();
        let mut out = Vec::with_capacity(12 + public.len() + private.len());
        out.extend_from_slice(MAGIC);
        for part in [&public[..], private] {
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (public, rest) = split_tpm2b(rest)?;
        let (private, rest) = split_tpm2b(rest)?;
        if !rest.is_empty() {
            return None;
        }
        Some(Self {
            public: Public::unmarshall(public).ok()?,
            private: Private::try_from(private.to_vec()).ok()?,
        })
    }
}

fn split_tpm2b(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let size = usize::from(u16::from_be_bytes([*input.first()?, *input.get(1)?]));
    let body = input.get(2..)?;
    (body.len() >= size).then(|| body.split_at(size))
}

pub struct AuthKeyStore {
    dir: PathBuf,
}

impl AuthKeyStore {
    /// Opens (creating it 0700 if needed) the directory that holds the slots.
    pub fn open(dir: &Path) -> Result<Self, TpmError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TpmError::Store { path: dir.to_owned(), source })?;
        Ok(Self { dir: dir.to_owned() })
    }

    pub fn path(&self, slot: Slot) -> PathBuf {
        self.dir.join(slot.file_name())
    }

    fn io<T>(&self, path: &Path, r: std::io::Result<T>) -> Result<T, TpmError> {
        r.map_err(|source| TpmError::Store { path: path.to_owned(), source })
    }

    /// Reads a slot. A file that does not decode is reported and treated as absent.
    pub fn read(&self, slot: Slot) -> Result<Option<WrappedKey>, TpmError> {
        let path = self.path(slot);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return self.io(&path, Err(e)),
        };
        match WrappedKey::decode(&bytes) {
            Some(key) => Ok(Some(key)),
            None => {
                log::warn!("ignoring {}: not a wrapped auth key (corrupt or foreign file)", path.display());
                Ok(None)
            }
        }
    }

    pub fn exists(&self, slot: Slot) -> bool {
        self.path(slot).exists()
    }

    /// Writes a slot atomically.
    pub fn write(&self, slot: Slot, key: &WrappedKey) -> Result<(), TpmError> {
        let path = self.path(slot);
        let tmp = self.dir.join(format!(".{}.tmp", slot.file_name()));
        let bytes = key.encode()?;
        let _ = fs::remove_file(&tmp);
        let mut file = self.io(
            &tmp,
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp),
        )?;
        self.io(&tmp, file.write_all(&bytes).and_then(|()| file.sync_all()))?;
        self.io(&path, fs::rename(&tmp, &path))?;
        self.sync_dir()
    }

    /// Renames one slot onto another (replacing it) and makes the rename durable.
    pub fn rename(&self, from: Slot, to: Slot) -> Result<(), TpmError> {
        let (src, dst) = (self.path(from), self.path(to));
        self.io(&src, fs::rename(&src, &dst))?;
        self.sync_dir()
    }

    pub fn remove(&self, slot: Slot) -> Result<(), TpmError> {
        let path = self.path(slot);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => self.io(&path, Err(e)),
        }
    }

    fn sync_dir(&self) -> Result<(), TpmError> {
        self.io(&self.dir, File::open(&self.dir).and_then(|d| d.sync_all()))
    }
}
