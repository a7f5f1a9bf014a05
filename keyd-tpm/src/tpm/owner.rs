//! The TPM owner: one thread holds the [`Device`] and runs requests one at a time, in arrival
//! order. Callers hold a [`TpmHandle`] and await replies; no lock is ever taken around the TPM.
//! If the TPM stops answering (simulator restarted, device reset), the owner reopens it and
//! retries the request once, so the daemon survives without a restart.

use tokio::sync::{mpsc, oneshot};

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::device::{Device, TpmKeys};
use super::info::TpmInfo;
use super::keys::{KeyObject, KeyPairAlgorithm, Secret};
use super::error::TpmError;
use super::TpmSettings;

/// How many requests may wait for the TPM before callers get `TpmError::Busy` (HTTP 503).
const QUEUE_DEPTH: usize = 4096;

type Job = Box<dyn FnOnce(&mut Owner) + Send>;

/// A cheap, cloneable way to reach the TPM owner.
#[derive(Clone)]
pub struct TpmHandle {
    jobs: mpsc::Sender<Job>,
    /// The owner thread, taken by the first [`TpmHandle::shutdown`].
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

struct Owner {
    settings: TpmSettings,
    device: Option<Device>,
    /// Set by the shutdown job: the thread stops after it.
    stopping: bool,
}

impl TpmHandle {
    /// Opens the TPM (EK/SRK ensured, leftovers flushed, interrupted swaps finished) on a new
    /// owner thread. Fails if the TPM cannot be opened, so a daemon reports that at start.
    pub fn start(settings: TpmSettings) -> Result<Self, TpmError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("tpm-owner".into())
            .spawn(move || {
                let device = match Device::open(settings.clone()) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut owner = Owner { settings, device: Some(device), stopping: false };
                while let Some(job) = rx.blocking_recv() {
                    job(&mut owner);
                    if owner.stopping {
                        break;
                    }
                }
                // Shut down (or every handle dropped). Requests still queued are dropped, so
                // their callers get `OwnerGone`; dropping the device flushes what the context
                // loaded, leaving the TPM's transient slots free for other users.
                rx.close();
                drop(owner);
                log::debug!("TPM owner thread stopped");
            })
            .map_err(|e| TpmError::Unexpected(format!("cannot start the TPM owner thread: {e}")))?;
        ready_rx.recv().map_err(|_| TpmError::OwnerGone)??;
        Ok(Self { jobs, thread: Arc::new(Mutex::new(Some(thread))) })
    }

    /// Stops the owner thread after the requests already queued and waits until it has flushed
    /// what it loaded into the TPM, so a daemon exits with the TPM's transient slots free.
    /// Blocking: call it outside the async runtime, after the servers have stopped. Later
    /// requests through any clone of this handle fail with `OwnerGone`.
    pub fn shutdown(self) {
        let stop: Job = Box::new(|owner: &mut Owner| owner.stopping = true);
        // A closed queue means the thread has already stopped; the join below returns at once.
        let _ = self.jobs.blocking_send(stop);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            if thread.join().is_err() {
                log::error!("the TPM owner thread panicked while stopping");
            }
        }
    }

    /// Runs `op` on the owner thread and returns its result.
    async fn call<T, F>(&self, op: F) -> Result<T, TpmError>
    where
        T: Send + 'static,
        F: FnMut(&mut Device) -> Result<T, TpmError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let mut op = op;
        let job: Job = Box::new(move |owner: &mut Owner| {
            let _ = reply.send(owner.run(&mut op));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TpmError::Busy,
            mpsc::error::TrySendError::Closed(_) => TpmError::OwnerGone,
        })?;
        result.await.map_err(|_| TpmError::OwnerGone)?
    }

    pub async fn get_tpm_keys(&self) -> Result<TpmKeys, TpmError> {
        self.call(|d| d.tpm_keys()).await
    }

    /// Manufacturer, firmware, persistent handles, EK certificate, auth key presence.
    pub async fn info(&self) -> Result<TpmInfo, TpmError> {
        self.call(|d| d.info()).await
    }

    pub async fn import_auth_key(&self, blob: Vec<u8>) -> Result<(), TpmError> {
        self.call(move |d| d.import_auth_key(&blob)).await
    }

    pub async fn restore_auth_key(&self) -> Result<(), TpmError> {
        self.call(|d| d.restore_auth_key()).await
    }

    pub async fn sign_with_auth_key(&self, data: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        self.call(move |d| d.sign_with_auth_key(&data)).await
    }
}

/// Keys Service operations: every key is a TPM object under the SRK (see `keys`).
impl TpmHandle {
    /// A new HMAC-SHA256 key: generated inside the TPM (`None`) or made from the given bytes.
    pub async fn create_hmac_key(&self, bytes: Option<Secret>) -> Result<KeyObject, TpmError> {
        self.call(move |d| d.create_hmac_key(bytes.as_deref().map(|b| &b[..]))).await
    }

    /// A new sealed AES-256 key for AEAD: 32 bytes from the TPM's RNG (`None`) or the given bytes.
    pub async fn create_sealed_key(&self, bytes: Option<Secret>) -> Result<KeyObject, TpmError> {
        self.call(move |d| d.create_sealed_key(bytes.as_deref().map(|b| &b[..]))).await
    }

    /// A new key pair generated inside the TPM.
    pub async fn create_key_pair(&self, algorithm: KeyPairAlgorithm) -> Result<KeyObject, TpmError> {
        self.call(move |d| d.create_key_pair(algorithm)).await
    }

    /// Takes an existing private key (PKCS#8 DER, EC P-256 or RSA-2048; e.g. a key upstream's
    /// file backend left on disk) into the TPM.
    pub async fn import_key_pair(&self, pkcs8_der: Secret) -> Result<KeyObject, TpmError> {
        self.call(move |d| d.import_key_pair(&pkcs8_der)).await
    }

    /// HMAC-SHA256 with an `Hmac` object, any data length.
    pub async fn hmac(&self, key: Arc<KeyObject>, data: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        self.call(move |d| d.key_hmac(&key, &data)).await
    }

    /// The AES key of a `Sealed` object; zeroized when dropped.
    pub async fn unseal(&self, key: Arc<KeyObject>) -> Result<Secret, TpmError> {
        self.call(move |d| d.unseal(&key)).await
    }

    /// ECDSA over the caller's digest with an `EcP256` object; DER ECDSA-Sig-Value.
    pub async fn ecdsa_sign(&self, key: Arc<KeyObject>, digest: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        self.call(move |d| d.ecdsa_sign(&key, &digest)).await
    }

    /// The raw RSA private operation (block^d mod n) with an `Rsa2048` object; the block must be
    /// exactly the modulus length (callers pad).
    pub async fn rsa_private(&self, key: Arc<KeyObject>, block: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        self.call(move |d| d.rsa_private(&key, &block)).await
    }
}

impl Owner {
    fn run<T>(
        &mut self,
        op: &mut dyn FnMut(&mut Device) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let device = self.device()?;
        let result = op(device);
        let retry = match &result {
            // Errors about the caller's input or our state say nothing about the connection.
            Ok(_) | Err(TpmError::InvalidBlob(_) | TpmError::NoAuthKey { .. } | TpmError::NoPreviousAuthKey | TpmError::InvalidKey(_)) => false,
            Err(_) => !device.is_alive(),
        };
        if !retry {
            return result;
        }
        log::warn!("the TPM stopped answering ({}); reopening it", result.as_ref().err().map(ToString::to_string).unwrap_or_default());
        self.device = None;
        let device = self.device()?;
        op(device)
    }

    /// The open device, reopening it if the last one was lost.
    fn device(&mut self) -> Result<&mut Device, TpmError> {
        if self.device.is_none() {
            self.device = Some(Device::open(self.settings.clone())?);
            log::info!("TPM reopened");
        }
        self.device
            .as_mut()
            .ok_or_else(|| TpmError::Unexpected("device missing after open".into()))
    }
}
