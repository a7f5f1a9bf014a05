//! The state in memory plus its file, `state.json` in the data dir.
//!
//! Updates run a closure on a copy of the state under a short `std::sync::Mutex` (no I/O, no
//! await), swap it in, and hand the serialized bytes to one writer task. The caller then awaits
//! the writer's acknowledgement, so a reply is only sent once its change is on disk, while no
//! lock is ever held across the file write. The writer always writes the newest snapshot, so
//! bursts of updates coalesce into fewer writes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::ApiError;
use crate::persist::write_atomic;
use crate::state::State;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid state file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

struct Inner {
    version: u64,
    state: State,
}

/// What the writer reports: the newest version on disk, or why the last write failed.
#[derive(Debug, Clone)]
struct Written {
    version: u64,
    error: Option<String>,
}

pub struct Store {
    inner: Mutex<Inner>,
    to_writer: watch::Sender<(u64, Arc<Vec<u8>>)>,
    written: watch::Receiver<Written>,
}

impl Store {
    /// Loads `path` (or starts empty) and starts the writer task; needs a Tokio runtime.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
                path: path.to_owned(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => {
                return Err(StoreError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let (to_writer, mut from_store) = watch::channel((0u64, Arc::new(Vec::new())));
        let (ack, written) = watch::channel(Written {
            version: 0,
            error: None,
        });
        let file = path.to_owned();
        tokio::spawn(async move {
            while from_store.changed().await.is_ok() {
                let (version, bytes) = from_store.borrow_and_update().clone();
                let target = file.clone();
                let result =
                    tokio::task::spawn_blocking(move || write_atomic(&target, &bytes, 0o600)).await;
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("writing {}: {e}", file.display())),
                    Err(e) => Some(format!("state writer task failed: {e}")),
                };
                if let Some(e) = &error {
                    log::error!("{e}");
                }
                let _ = ack.send(Written { version, error });
            }
        });
        Ok(Self {
            inner: Mutex::new(Inner { version: 0, state }),
            to_writer,
            written,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside an update closure cannot leave a half-applied state (closures work on a
        // copy), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock().state)
    }

    /// Applies `f` to a copy of the state; on `Ok` the copy replaces the state and is written to
    /// disk before this returns. On `Err` nothing changes.
    pub async fn update<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (version, out) = {
            let mut inner = self.lock();
            let mut next = inner.state.clone();
            let out = f(&mut next)?;
            let bytes = serde_json::to_vec_pretty(&next)
                .map_err(|e| ApiError::Internal(format!("serializing state: {e}")))?;
            inner.state = next;
            inner.version += 1;
            let version = inner.version;
            // Sent under the lock so versions reach the writer in order.
            self.to_writer.send_replace((version, Arc::new(bytes)));
            (version, out)
        };
        let mut written = self.written.clone();
        let outcome = written
            .wait_for(|w| w.version >= version)
            .await
            .map_err(|_| ApiError::Persist("the state writer stopped".into()))?
            .clone();
        match outcome.error {
            Some(e) if outcome.version == version => Err(ApiError::Persist(e)),
            _ => Ok(out),
        }
    }
}
