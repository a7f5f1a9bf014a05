//! The TPM owner: whoever holds the [`Owner`] (the open [`Device`]) runs TPM jobs, one at a
//! time; callers hold a [`TpmHandle`] and get replies. No lock is ever held across the TPM: the
//! owner is taken out of the shared state to run a job and put back after it. If the TPM stops
//! answering (simulator restarted, device reset), the owner reopens it and retries the request
//! once, so the daemon survives without a restart.
//!
//! Where a job runs: a short job (one or a few commands, see [`Quick`]; an HMAC over up to four
//! TPM buffers is one) that finds the TPM idle and nobody waiting runs at once on the caller's
//! own thread, so a lone request costs no hand-off between threads (two thread wake-ups, about
//! as long as the TPM command itself on a software TPM). Every other job waits in the queue of
//! its [`Lane`] (the API and the caller's uid) for the owner thread, which takes the lanes in
//! turn, one job each. A longer HMAC runs in slices (see `sequence`) and goes to the back of
//! the line between them while others wait, so the device's own signing never starves behind
//! one caller's bulk work. A kind of quick job whose last run took longer than [`INLINE_LIMIT`]
//! (a slow discrete TPM) goes to the owner thread too, and so does the first job of each kind
//! (its time is not known yet), so a caller's async worker is never blocked for long.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tss_esapi::structures::MaxBuffer;

use super::device::{Device, TpmKeys};
use super::info::TpmInfo;
use super::keys::{KeyObject, KeyPairAlgorithm, ObjectKind, Secret};
use super::error::TpmError;
use super::sequence::{HmacSequence, SequenceKey};
use super::TpmSettings;

/// How many requests may wait for the TPM before callers get `TpmError::Busy` (HTTP 503).
const QUEUE_DEPTH: usize = 4096;

/// A quick job runs on its caller's thread only while its kind's last run took less than this.
pub const INLINE_LIMIT: Duration = Duration::from_millis(2);

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

/// The short jobs that may run on their caller's thread: one TPM command on an object that is
/// usually loaded already (a load and a flush when it is not), or an HMAC sequence over at most
/// [`SHORT_SEQUENCE`] bytes (HMAC_Start, a few SequenceUpdates, SequenceComplete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quick {
    TpmKeys,
    AuthKeyHmac,
    AuthKeySequence,
    KeyHmac,
    KeySequence,
    KeyHmacSecret,
    Unseal,
    Ecdsa,
    Rsa,
}

impl Quick {
    const COUNT: usize = 9;
}

/// The longest data a sequence HMAC may take on its caller's thread: four TPM buffers, five
/// commands in all. Longer data always runs in slices on the owner thread.
const SHORT_SEQUENCE: usize = 4 * MaxBuffer::MAX_SIZE;

/// Sends a job's result to its caller (a one-off job's, or a sliced job's after its last slice).
/// The owner thread calls it only after it has put the owner back, so a caller that goes on with
/// its next request finds the TPM idle.
type Reply = Box<dyn FnOnce() + Send>;

enum Job {
    Once(Box<dyn FnOnce(&mut Owner) -> Reply + Send>),
    /// Runs in slices until it says it is done.
    Sliced(Box<dyn Sliced>),
}

trait Sliced: Send {
    /// Runs one slice: `Continue` to run another later, or `Done` with the reply to send (none
    /// when the caller is gone).
    fn slice(&mut self, owner: &mut Owner, others_waiting: &dyn Fn() -> bool) -> Slice;
}

enum Slice {
    Continue,
    Done(Option<Reply>),
}

/// A cheap, cloneable way to reach the TPM owner. When the last clone is dropped, the owner
/// thread finishes the jobs already queued and stops.
#[derive(Clone)]
pub struct TpmHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    shared: Arc<Shared>,
    /// The owner thread, taken by the first [`TpmHandle::shutdown`].
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

struct Owner {
    settings: TpmSettings,
    device: Option<Device>,
}

// SAFETY: the device's TSS contexts (ESYS, TCTI, the session channel's connection) keep no
// thread-local state; what they need is that one thread at a time uses them, and an `Owner` is
// only ever reached through `Shared::state`, taken out by one thread at a time.
unsafe impl Send for Owner {}

/// What the callers and the owner thread share. The mutex guards bookkeeping only, never a
/// TPM command.
struct Shared {
    state: Mutex<State>,
    /// The owner thread waits here for a job and the owner.
    wake: Condvar,
    /// How long each kind of quick job took last time, in µs; `u64::MAX` until one has run.
    last_run_us: [AtomicU64; Quick::COUNT],
    /// Quick jobs run on their caller's thread, and quick jobs that went to the owner thread.
    inline_runs: AtomicU64,
    queued_runs: AtomicU64,
}

/// Where the owner's quick jobs (one-command signs, unseals, the TPM's keys) have run since it
/// started: on their caller's thread, or queued for the owner thread (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuickRuns {
    pub inline: u64,
    pub queued: u64,
}

struct State {
    lanes: Lanes,
    /// The owner, when no job is running.
    owner: Option<Owner>,
    /// No new jobs: the handle was shut down or dropped.
    closed: bool,
}

/// Jobs waiting, by lane, and the order in which lanes get their next turn.
#[derive(Default)]
struct Lanes {
    queues: HashMap<Lane, VecDeque<Job>>,
    turns: VecDeque<Lane>,
    len: usize,
}

impl Lanes {
    fn push_back(&mut self, lane: Lane, job: Job) {
        let queue = self.queues.entry(lane).or_default();
        if queue.is_empty() {
            self.turns.push_back(lane);
        }
        queue.push_back(job);
        self.len += 1;
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
        self.len -= 1;
        Some((lane, job))
    }

    /// Puts a job that is not finished back at the head of its lane, whose turn comes last.
    fn resume_later(&mut self, lane: Lane, job: Job) {
        let queue = self.queues.entry(lane).or_default();
        if queue.is_empty() {
            self.turns.push_back(lane);
        }
        queue.push_front(job);
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held cannot leave the queues half-updated (each change is
        // one push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `op` with `owner`; for a quick job, counts where it ran and records how long it took.
    fn run_counted<T>(
        &self,
        owner: &mut Owner,
        quick: Option<Quick>,
        inline: bool,
        op: &mut dyn FnMut(&mut Device) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let started = Instant::now();
        let result = owner.run(op);
        if let Some(kind) = quick {
            self.record(kind, inline, started.elapsed());
        }
        result
    }

    /// Counts a quick job of `kind` where it ran and keeps how long it took.
    fn record(&self, kind: Quick, inline: bool, took: Duration) {
        let runs = if inline { &self.inline_runs } else { &self.queued_runs };
        runs.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_run_us[kind as usize].store(us, Ordering::Relaxed);
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Gives the owner back after a job; the owner thread takes over if jobs are waiting.
    fn put_back(&self, owner: Owner) {
        let mut state = self.lock();
        state.owner = Some(owner);
        if !state.lanes.is_empty() || state.closed {
            self.wake.notify_all();
        }
    }

    /// The owner thread: runs queued jobs, lanes in turn, until the handle is closed and the
    /// queue is empty; then drops the owner, which flushes what the device loaded.
    fn serve(&self) {
        let mut state = self.lock();
        loop {
            if let Some(mut owner) = state.owner.take() {
                if let Some((lane, job)) = state.lanes.pop() {
                    drop(state);
                    let (unfinished, reply) = run_job(&mut owner, job, &|| !self.lock().lanes.is_empty());
                    state = self.lock();
                    state.owner = Some(owner);
                    if let Some(job) = unfinished {
                        state.lanes.resume_later(lane, job);
                    }
                    if let Some(reply) = reply {
                        drop(state);
                        reply();
                        state = self.lock();
                    }
                    continue;
                }
                if state.closed {
                    drop(state);
                    drop(owner);
                    return;
                }
                state.owner = Some(owner);
            }
            state = self.wake.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// Runs one job (one slice of a sliced one) with `owner`: the job back if it is not finished,
/// or the reply to send once the owner is back. A job that panics loses its reply (its caller
/// gets `OwnerGone`) and the device, which is opened again for the next job.
fn run_job(owner: &mut Owner, job: Job, others_waiting: &dyn Fn() -> bool) -> (Option<Job>, Option<Reply>) {
    let outcome = catch_unwind(AssertUnwindSafe(|| match job {
        Job::Once(job) => (None, Some(job(owner))),
        Job::Sliced(mut job) => match job.slice(owner, others_waiting) {
            Slice::Continue => (Some(Job::Sliced(job)), None),
            Slice::Done(reply) => (None, reply),
        },
    }));
    outcome.unwrap_or_else(|_| {
        log::error!("a TPM job panicked; the TPM is opened again for the next request");
        owner.device = None;
        (None, None)
    })
}

/// The owner taken out for a job on the caller's thread, given back when dropped (also when
/// the job panics: the device, possibly half way through a command, is then opened again).
struct Borrowed<'a> {
    shared: &'a Shared,
    owner: Option<Owner>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(mut owner) = self.owner.take() {
            if std::thread::panicking() {
                owner.device = None;
            }
            self.shared.put_back(owner);
        }
    }
}

impl TpmHandle {
    /// Opens the TPM (EK/SRK ensured, leftovers flushed, interrupted swaps finished) on a new
    /// owner thread. Fails if the TPM cannot be opened, so a daemon reports that at start.
    pub fn start(settings: TpmSettings) -> Result<Self, TpmError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { lanes: Lanes::default(), owner: None, closed: false }),
            wake: Condvar::new(),
            last_run_us: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
            inline_runs: AtomicU64::new(0),
            queued_runs: AtomicU64::new(0),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let for_thread = Arc::clone(&shared);
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
                for_thread.lock().owner = Some(Owner { settings, device: Some(device) });
                let _ = ready_tx.send(Ok(()));
                // Until shut down (or every handle dropped). Dropping the device at the end
                // flushes what the context loaded, leaving the TPM's transient slots free.
                for_thread.serve();
                log::debug!("TPM owner thread stopped");
            })
            .map_err(|e| TpmError::Unexpected(format!("cannot start the TPM owner thread: {e}")))?;
        ready_rx.recv().map_err(|_| TpmError::OwnerGone)??;
        Ok(Self { inner: Arc::new(HandleInner { shared, thread: Mutex::new(Some(thread)) }) })
    }

    /// Stops the owner thread after the requests already queued and waits until it has flushed
    /// what it loaded into the TPM, so a daemon exits with the TPM's transient slots free.
    /// Blocking: call it outside the async runtime, after the servers have stopped. Later
    /// requests through any clone of this handle fail with `OwnerGone`.
    pub fn shutdown(self) {
        self.inner.shared.close();
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            if thread.join().is_err() {
                log::error!("the TPM owner thread panicked while stopping");
            }
        }
    }

    /// Where quick jobs have run so far (for tests and benchmarks).
    pub fn quick_runs(&self) -> QuickRuns {
        let shared = &self.inner.shared;
        QuickRuns {
            inline: shared.inline_runs.load(Ordering::Relaxed),
            queued: shared.queued_runs.load(Ordering::Relaxed),
        }
    }

    fn submit(&self, job: Job) -> Result<(), TpmError> {
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        if state.closed {
            return Err(TpmError::OwnerGone);
        }
        if state.lanes.len >= QUEUE_DEPTH {
            return Err(TpmError::Busy);
        }
        state.lanes.push_back(current_lane(), job);
        if state.owner.is_some() {
            shared.wake.notify_all();
        }
        Ok(())
    }

    /// Runs `op` with the owner and returns its result: at once on this thread if `quick` is
    /// set, the TPM is idle and nobody waits (see the module doc), else on the owner thread.
    async fn call<T, F>(&self, quick: Option<Quick>, op: F) -> Result<T, TpmError>
    where
        T: Send + 'static,
        F: FnMut(&mut Device) -> Result<T, TpmError> + Send + 'static,
    {
        let mut op = op;
        if let Some(kind) = quick {
            if let Ok(result) = self.try_inline(kind, &mut op) {
                return result;
            }
        }
        let (reply, result) = oneshot::channel();
        let shared = Arc::clone(&self.inner.shared);
        self.submit(Job::Once(Box::new(move |owner: &mut Owner| {
            let result = shared.run_counted(owner, quick, false, &mut op);
            Box::new(move || {
                let _ = reply.send(result);
            })
        })))?;
        result.await.map_err(|_| TpmError::OwnerGone)?
    }

    /// Runs `op` here if the TPM is idle, nobody waits and `kind` has been quick; `Err(())`
    /// when it must be queued instead.
    fn try_inline<T>(
        &self,
        kind: Quick,
        op: &mut dyn FnMut(&mut Device) -> Result<T, TpmError>,
    ) -> Result<Result<T, TpmError>, ()> {
        let shared = &*self.inner.shared;
        if shared.last_run_us[kind as usize].load(Ordering::Relaxed) > INLINE_LIMIT.as_micros() as u64 {
            return Err(());
        }
        let owner = {
            let mut state = shared.lock();
            if state.closed {
                return Ok(Err(TpmError::OwnerGone));
            }
            if !state.lanes.is_empty() {
                return Err(());
            }
            state.owner.take().ok_or(())?
        };
        let mut borrowed = Borrowed { shared, owner: Some(owner) };
        let result = match borrowed.owner.as_mut() {
            Some(owner) => shared.run_counted(owner, Some(kind), true, op),
            None => Err(TpmError::OwnerGone),
        };
        drop(borrowed);
        Ok(result)
    }

    /// HMAC-SHA256 of more than one TPM buffer of data. Up to [`SHORT_SEQUENCE`] bytes it is a
    /// quick job of kind `quick` (on this thread when the TPM is idle; the first of its kind
    /// queued whole, so its time is known); longer data, or a busy TPM or a slow one, runs in
    /// slices on the owner thread (see `sequence`).
    async fn long_hmac<K>(&self, quick: Quick, key: K, data: Vec<u8>) -> Result<Vec<u8>, TpmError>
    where
        K: Fn(&mut Device) -> Result<SequenceKey, TpmError> + Send + 'static,
    {
        if data.len() <= SHORT_SEQUENCE {
            let inline = {
                let mut op = |d: &mut Device| {
                    let key = key(d)?;
                    d.long_hmac(key, &data)
                };
                self.try_inline(quick, &mut op)
            };
            if let Ok(result) = inline {
                return result;
            }
            if self.inner.shared.last_run_us[quick as usize].load(Ordering::Relaxed) == u64::MAX {
                return self
                    .call(Some(quick), move |d| {
                        let key = key(d)?;
                        d.long_hmac(key, &data)
                    })
                    .await;
            }
        }
        // A short sequence that runs in slices still counts as its kind's last run, so a kind
        // that was slow once is tried on the caller's thread again when it is quick again.
        let timed = (data.len() <= SHORT_SEQUENCE).then(|| (Arc::clone(&self.inner.shared), quick));
        let (reply, result) = oneshot::channel();
        self.submit(Job::Sliced(Box::new(LongHmac {
            key: Some(Box::new(key)),
            data,
            sequence: None,
            reply: Some(reply),
            timed,
            ran: Duration::ZERO,
        })))?;
        result.await.map_err(|_| TpmError::OwnerGone)?
    }

    pub async fn get_tpm_keys(&self) -> Result<TpmKeys, TpmError> {
        self.call(Some(Quick::TpmKeys), |d| d.tpm_keys()).await
    }

    /// Manufacturer, firmware, persistent handles, EK certificate, auth key presence.
    pub async fn info(&self) -> Result<TpmInfo, TpmError> {
        self.call(None, |d| d.info()).await
    }

    pub async fn import_auth_key(&self, blob: Vec<u8>) -> Result<(), TpmError> {
        self.call(None, move |d| d.import_auth_key(&blob)).await
    }

    pub async fn restore_auth_key(&self) -> Result<(), TpmError> {
        self.call(None, |d| d.restore_auth_key()).await
    }

    pub async fn sign_with_auth_key(&self, data: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        if data.len() > MaxBuffer::MAX_SIZE {
            return self.long_hmac(Quick::AuthKeySequence, |d| d.auth_key_sequence(), data).await;
        }
        self.call(Some(Quick::AuthKeyHmac), move |d| d.sign_with_auth_key(&data)).await
    }
}

/// Keys Service operations: every key is a TPM object under the SRK (see `keys`).
impl TpmHandle {
    /// A new HMAC-SHA256 key: generated inside the TPM (`None`) or made from the given bytes.
    pub async fn create_hmac_key(&self, bytes: Option<Secret>) -> Result<KeyObject, TpmError> {
        self.call(None, move |d| d.create_hmac_key(bytes.as_deref().map(|b| &b[..]))).await
    }

    /// A new sealed AES-256 key for AEAD: 32 bytes from the TPM's RNG (`None`) or the given bytes.
    pub async fn create_sealed_key(&self, bytes: Option<Secret>) -> Result<KeyObject, TpmError> {
        self.call(None, move |d| d.create_sealed_key(bytes.as_deref().map(|b| &b[..]))).await
    }

    /// A new key pair generated inside the TPM.
    pub async fn create_key_pair(&self, algorithm: KeyPairAlgorithm) -> Result<KeyObject, TpmError> {
        self.call(None, move |d| d.create_key_pair(algorithm)).await
    }

    /// Takes an existing private key (PKCS#8 DER, EC P-256 or RSA-2048; e.g. a key upstream's
    /// file backend left on disk) into the TPM.
    pub async fn import_key_pair(&self, pkcs8_der: Secret) -> Result<KeyObject, TpmError> {
        self.call(None, move |d| d.import_key_pair(&pkcs8_der)).await
    }

    /// HMAC-SHA256 with an `Hmac` object, any data length.
    pub async fn hmac(&self, key: Arc<KeyObject>, data: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        if data.len() > MaxBuffer::MAX_SIZE {
            super::key_objects::expect_kind(&key, ObjectKind::Hmac, "HMAC-SHA256")?;
            return self.long_hmac(Quick::KeySequence, move |_| Ok(super::key_objects::sequence_key(&key)), data).await;
        }
        self.call(Some(Quick::KeyHmac), move |d| d.key_hmac(&key, &data)).await
    }

    /// HMAC-SHA256 whose result is itself a secret (a derived key, a handle's MAC), so the TPM
    /// encrypts it on the bus. Data beyond one TPM buffer takes the sequence commands, which run
    /// without a session (see `hmac`).
    pub async fn hmac_secret(&self, key: Arc<KeyObject>, data: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        if data.len() > MaxBuffer::MAX_SIZE {
            return self.hmac(key, data).await;
        }
        self.call(Some(Quick::KeyHmacSecret), move |d| d.key_hmac_secret(&key, &data)).await
    }

    /// The AES key of a `Sealed` object; zeroized when dropped.
    pub async fn unseal(&self, key: Arc<KeyObject>) -> Result<Secret, TpmError> {
        self.call(Some(Quick::Unseal), move |d| d.unseal(&key)).await
    }

    /// ECDSA over the caller's digest with an `EcP256` object; DER ECDSA-Sig-Value.
    pub async fn ecdsa_sign(&self, key: Arc<KeyObject>, digest: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        self.call(Some(Quick::Ecdsa), move |d| d.ecdsa_sign(&key, &digest)).await
    }

    /// The raw RSA private operation (block^d mod n) with an `Rsa2048` object; the block must be
    /// exactly the modulus length (callers pad).
    pub async fn rsa_private(&self, key: Arc<KeyObject>, block: Vec<u8>) -> Result<Vec<u8>, TpmError> {
        self.call(Some(Quick::Rsa), move |d| d.rsa_private(&key, &block)).await
    }
}

/// A long HMAC as a sliced job: its key is settled on the first slice (the auth key must be
/// there), then the sequence runs slice by slice until it replies.
struct LongHmac {
    key: Option<Box<dyn FnOnce(&mut Device) -> Result<SequenceKey, TpmError> + Send>>,
    data: Vec<u8>,
    sequence: Option<HmacSequence>,
    reply: Option<oneshot::Sender<Result<Vec<u8>, TpmError>>>,
    /// For a short sequence: the quick kind whose last run it records when it is done.
    timed: Option<(Arc<Shared>, Quick)>,
    /// Time spent in its slices so far.
    ran: Duration,
}

impl LongHmac {
    /// The job is done: its reply, sent once the owner is back.
    fn finish(&mut self, result: Result<Vec<u8>, TpmError>) -> Slice {
        Slice::Done(self.reply.take().map(|reply| -> Reply {
            Box::new(move || {
                let _ = reply.send(result);
            })
        }))
    }

    /// One slice of the sequence: its key settled first, the caller checked for having gone.
    fn run_slice(&mut self, owner: &mut Owner, others_waiting: &dyn Fn() -> bool) -> Slice {
        let device = match owner.device() {
            Ok(device) => device,
            Err(e) => return self.finish(Err(e)),
        };
        if self.reply.as_ref().is_none_or(|r| r.is_closed()) {
            // The caller went away: stop, and give back what the sequence holds.
            if let Some(sequence) = self.sequence.as_mut() {
                device.abandon_hmac(sequence);
            }
            return Slice::Done(None);
        }
        if self.sequence.is_none() {
            let key = self.key.take().map(|key| key(device));
            match key {
                Some(Ok(key)) => self.sequence = Some(HmacSequence::new(key, std::mem::take(&mut self.data))),
                Some(Err(e)) => return self.finish(Err(e)),
                None => return self.finish(Err(TpmError::Unexpected("long HMAC without a key".into()))),
            }
        }
        let Some(sequence) = self.sequence.as_mut() else { return Slice::Done(None) };
        match device.hmac_slice(sequence, others_waiting) {
            Ok(Some(digest)) => self.finish(Ok(digest)),
            Ok(None) => Slice::Continue,
            Err(e) => self.finish(Err(e)),
        }
    }
}

impl Sliced for LongHmac {
    fn slice(&mut self, owner: &mut Owner, others_waiting: &dyn Fn() -> bool) -> Slice {
        let started = Instant::now();
        let outcome = self.run_slice(owner, others_waiting);
        self.ran += started.elapsed();
        if let (Slice::Done(_), Some((shared, kind))) = (&outcome, &self.timed) {
            shared.record(*kind, false, self.ran);
        }
        outcome
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
