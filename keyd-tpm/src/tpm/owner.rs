//! The TPM owner: one thread holds the [`Device`] and runs requests one at a time. Callers hold
//! a [`TpmHandle`] and await replies; no lock is ever taken around the TPM. If the TPM stops
//! answering (simulator restarted, device reset), the owner reopens it and retries the request
//! once, so the daemon survives without a restart.
//!
//! Fairness: every request waits in the queue of its [`Lane`] (the API and the caller's uid),
//! and the owner takes the lanes in turn, one job each. A long HMAC runs in slices (see
//! `sequence`) and goes to the back of the line between them while others wait, so the
//! device's own signing never starves behind one caller's bulk work.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use tss_esapi::structures::MaxBuffer;

use super::device::{Device, TpmKeys};
use super::info::TpmInfo;
use super::keys::{KeyObject, KeyPairAlgorithm, ObjectKind, Secret};
use super::error::TpmError;
use super::sequence::{HmacSequence, SequenceKey};
use super::TpmSettings;

/// How many requests may wait for the TPM before callers get `TpmError::Busy` (HTTP 503).
const QUEUE_DEPTH: usize = 4096;

/// Whose request a TPM job is: jobs of one lane run in order, lanes take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The TPM Service API, for a caller uid.
    Tpmd(u32),
    /// The Keys Service API, for a caller uid.
    Keyd(u32),
    /// The daemon's own work (start-up, shutdown).
    Daemon,
}

tokio::task_local! {
    static LANE: Lane;
}

/// Runs `request` with every TPM job it makes queued in `lane` (the HTTP services wrap each
/// request in this, so nothing below them has to pass the caller along).
pub async fn in_lane<F: Future>(lane: Lane, request: F) -> F::Output {
    LANE.scope(lane, request).await
}

fn current_lane() -> Lane {
    LANE.try_with(|lane| *lane).unwrap_or(Lane::Daemon)
}

enum Job {
    Once(Box<dyn FnOnce(&mut Owner) + Send>),
    /// Runs in slices until it says it is done.
    Sliced(Box<dyn Sliced>),
}

trait Sliced: Send {
    /// Runs one slice; true when the job is finished (and has replied).
    fn slice(&mut self, owner: &mut Owner, others_waiting: &dyn Fn() -> bool) -> bool;
}

/// A cheap, cloneable way to reach the TPM owner.
#[derive(Clone)]
pub struct TpmHandle {
    jobs: mpsc::Sender<(Lane, Job)>,
    /// The owner thread, taken by the first [`TpmHandle::shutdown`].
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

struct Owner {
    settings: TpmSettings,
    device: Option<Device>,
    /// Set by the shutdown job: the thread stops after it.
    stopping: bool,
}

/// Jobs waiting, by lane, and the order in which lanes get their next turn.
#[derive(Default)]
struct Lanes {
    queues: HashMap<Lane, VecDeque<Job>>,
    turns: VecDeque<Lane>,
}

impl Lanes {
    fn push_back(&mut self, lane: Lane, job: Job) {
        let queue = self.queues.entry(lane).or_default();
        if queue.is_empty() {
            self.turns.push_back(lane);
        }
        queue.push_back(job);
    }

    /// The next lane's first job.
    fn pop(&mut self) -> Option<(Lane, Job)> {
        let lane = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&lane)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(&lane);
        } else {
            self.turns.push_back(lane);
        }
        Some((lane, job))
    }

    /// Puts a job that is not finished back at the head of its lane, whose turn comes last.
    fn resume_later(&mut self, lane: Lane, job: Job) {
        let queue = self.queues.entry(lane).or_default();
        if queue.is_empty() {
            self.turns.push_back(lane);
        }
        queue.push_front(job);
    }

    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

impl TpmHandle {
    /// Opens the TPM (EK/SRK ensured, leftovers flushed, interrupted swaps finished) on a new
    /// owner thread. Fails if the TPM cannot be opened, so a daemon reports that at start.
    pub fn start(settings: TpmSettings) -> Result<Self, TpmError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (jobs, rx) = mpsc::channel::<(Lane, Job)>(QUEUE_DEPTH);
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
                owner.serve(rx);
                // Shut down (or every handle dropped). Requests still queued are dropped, so
                // their callers get `OwnerGone`; dropping the device flushes what the context
                // loaded, leaving the TPM's transient slots free for other users.
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
        let stop = Job::Once(Box::new(|owner: &mut Owner| owner.stopping = true));
        // A closed queue means the thread has already stopped; the join below returns at once.
        let _ = self.jobs.blocking_send((Lane::Daemon, stop));
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            if thread.join().is_err() {
                log::error!("the TPM owner thread panicked while stopping");
            }
        }
    }

    fn submit(&self, job: Job) -> Result<(), TpmError> {
        self.jobs.try_send((current_lane(), job)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TpmError::Busy,
            mpsc::error::TrySendError::Closed(_) => TpmError::OwnerGone,
        })
    }

    /// Runs `op` on the owner thread and returns its result.
    async fn call<T, F>(&self, op: F) -> Result<T, TpmError>
    where
        T: Send + 'static,
        F: FnMut(&mut Device) -> Result<T, TpmError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let mut op = op;
        self.submit(Job::Once(Box::new(move |owner: &mut Owner| {
            let _ = reply.send(owner.run(&mut op));
        })))?;
        result.await.map_err(|_| TpmError::OwnerGone)?
    }

    /// HMAC-SHA256 of more than one TPM buffer of data, in slices (see `sequence`).
    async fn long_hmac<K>(&self, key: K, data: Vec<u8>) -> Result<Vec<u8>, TpmError>
    where
        K: FnOnce(&mut Device) -> Result<SequenceKey, TpmError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        self.submit(Job::Sliced(Box::new(LongHmac {
            key: Some(Box::new(key)),
            data,
            sequence: None,
            reply: Some(reply),
        })))?;
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
        if data.len() > MaxBuffer::MAX_SIZE {
            return self.long_hmac(|d| d.auth_key_sequence(), data).await;
        }
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
        if data.len() > MaxBuffer::MAX_SIZE {
            super::key_objects::expect_kind(&key, ObjectKind::Hmac, "HMAC-SHA256")?;
            return self.long_hmac(move |_| Ok(super::key_objects::sequence_key(&key)), data).await;
        }
        self.call(move |d| d.key_hmac(&key, &data)).await
    }

    /// HMAC-SHA256 whose result is itself a secret (a derived key, a handle's MAC), so the TPM
    /// encrypts it on the bus. Data beyond one TPM buffer takes the sequence commands, which run
    /// without a session (see `hmac`).
    pub async fn hmac_secret(&self, key: Arc<KeyObject>, data: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        if data.len() > MaxBuffer::MAX_SIZE {
            return self.hmac(key, data).await;
        }
        self.call(move |d| d.key_hmac_secret(&key, &data)).await
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

/// A long HMAC as a sliced job: its key is settled on the first slice (the auth key must be
/// there), then the sequence runs slice by slice until it replies.
struct LongHmac {
    key: Option<Box<dyn FnOnce(&mut Device) -> Result<SequenceKey, TpmError> + Send>>,
    data: Vec<u8>,
    sequence: Option<HmacSequence>,
    reply: Option<oneshot::Sender<Result<Vec<u8>, TpmError>>>,
}

impl LongHmac {
    fn finish(&mut self, result: Result<Vec<u8>, TpmError>) -> bool {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
        true
    }
}

impl Sliced for LongHmac {
    fn slice(&mut self, owner: &mut Owner, others_waiting: &dyn Fn() -> bool) -> bool {
        let device = match owner.device() {
            Ok(device) => device,
            Err(e) => return self.finish(Err(e)),
        };
        if self.reply.as_ref().is_none_or(|r| r.is_closed()) {
            // The caller went away: stop, and give back what the sequence holds.
            if let Some(sequence) = self.sequence.as_mut() {
                device.abandon_hmac(sequence);
            }
            return true;
        }
        if self.sequence.is_none() {
            let key = self.key.take().map(|key| key(device));
            match key {
                Some(Ok(key)) => self.sequence = Some(HmacSequence::new(key, std::mem::take(&mut self.data))),
                Some(Err(e)) => return self.finish(Err(e)),
                None => return self.finish(Err(TpmError::Unexpected("long HMAC without a key".into()))),
            }
        }
        let Some(sequence) = self.sequence.as_mut() else { return true };
        match device.hmac_slice(sequence, others_waiting) {
            Ok(Some(digest)) => self.finish(Ok(digest)),
            Ok(None) => false,
            Err(e) => self.finish(Err(e)),
        }
    }
}

impl Owner {
    /// Takes jobs from `rx` into their lanes and runs them, lanes in turn, until the channel
    /// closes or a shutdown job ran.
    fn serve(&mut self, mut rx: mpsc::Receiver<(Lane, Job)>) {
        let mut lanes = Lanes::default();
        loop {
            while let Ok((lane, job)) = rx.try_recv() {
                lanes.push_back(lane, job);
            }
            let Some((lane, job)) = lanes.pop() else {
                match rx.blocking_recv() {
                    Some((lane, job)) => lanes.push_back(lane, job),
                    None => break,
                }
                continue;
            };
            match job {
                Job::Once(job) => job(self),
                Job::Sliced(mut job) => {
                    let others_waiting = || !lanes.is_empty() || !rx.is_empty();
                    if !job.slice(self, &others_waiting) {
                        lanes.resume_later(lane, Job::Sliced(job));
                    }
                }
            }
            if self.stopping {
                break;
            }
        }
        rx.close();
    }

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
