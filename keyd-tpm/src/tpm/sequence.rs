//! HMAC over more than one TPM input buffer (1024 bytes), which needs TPM2_HMAC_Start,
//! TPM2_SequenceUpdate and TPM2_SequenceComplete. tss-esapi 7.7.0 has no wrappers for them and
//! keeps its ESYS context private, so this module, and only this module, drives those commands
//! through a second raw ESYS context on the same TCTI. It lives inside the TPM owner thread like
//! the main context, so the two never run concurrently. It needs a TCTI that allows a second
//! connection: `/dev/tpmrm0`, swtpm and tabrmd do; a bare `/dev/tpm0` does not.
//!
//! A long HMAC (up to ~760 KiB of data, about 760 updates) runs in slices: after each slice,
//! if other callers are waiting for the TPM, the sequence object is context-saved and flushed,
//! so their commands have every slot, and it is loaded again for the next slice. Nobody waits
//! behind one caller's bulk work for more than a slice.

use std::ffi::CString;
use std::ptr::null_mut;
use std::time::{Duration, Instant};

use tss_esapi::constants::tss::TPM2_ALG_SHA256;
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::UnMarshall;
use tss_esapi::tss2_esys::{
    Esys_ContextLoad, Esys_ContextSave, Esys_Finalize, Esys_FlushContext, Esys_Free, Esys_HMAC_Start,
    Esys_Initialize, Esys_Load, Esys_SequenceComplete, Esys_SequenceUpdate, Esys_TR_Close,
    Esys_TR_FromTPMPublic, Tss2_TctiLdr_Finalize, Tss2_TctiLdr_Initialize, ESYS_CONTEXT, ESYS_TR,
    ESYS_TR_NONE, ESYS_TR_PASSWORD, ESYS_TR_RH_NULL, TPM2B_AUTH, TPM2B_DIGEST, TPM2B_MAX_BUFFER,
    TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2_MAX_DIGEST_BUFFER, TPMS_CONTEXT, TPMT_TK_HASHCHECK, TSS2_RC,
    TSS2_TCTI_CONTEXT,
};

use super::error::{CommandError, TpmError};

const CHUNK: usize = TPM2_MAX_DIGEST_BUFFER as usize;

/// How long one slice of a long HMAC may run before others waiting for the TPM get a turn.
pub const SLICE: Duration = Duration::from_millis(5);

/// A raw ESYS context used only for sequence commands.
pub struct SequenceContext {
    esys: *mut ESYS_CONTEXT,
    tcti: *mut TSS2_TCTI_CONTEXT,
    /// Tells sequences started on this context from those of an earlier one (the TPM reopened).
    generation: u64,
    /// The SRK's ESYS handle, read once (it never changes while the daemon runs).
    srk: Option<(u32, ESYS_TR)>,
    /// The auth key's ESYS handle, read at its first sequence and kept until the key at that
    /// handle changes (`forget_persistent`) or a sequence with it fails.
    persistent: Option<(u32, ESYS_TR)>,
}

// SAFETY: the context is created, used and dropped by the single TPM owner thread; `Send` only
// lets the owner move it into that thread once.
unsafe impl Send for SequenceContext {}

/// The key a sequence HMACs with.
pub enum SequenceKey {
    /// A persistent object (the DPS auth key), empty auth.
    Persistent(u32),
    /// A key object given as its SRK-wrapped blob (persistent SRK at `srk`), empty auth.
    Object { srk: u32, public: Vec<u8>, private: Vec<u8> },
}

/// An HMAC-SHA256 in progress: the data, how far it got, and where its sequence object is.
pub struct HmacSequence {
    key: SequenceKey,
    data: Vec<u8>,
    /// Bytes already passed to SequenceUpdate.
    done: usize,
    state: State,
}

enum State {
    NotStarted,
    Loaded { generation: u64, handle: ESYS_TR },
    /// Context-saved and flushed between slices.
    Saved { generation: u64, context: Box<TPMS_CONTEXT> },
}

// SAFETY: an ESYS_TR is a plain number and the saved context plain data; both are only used by
// the owner thread, on the context that made them (checked through `generation`).
unsafe impl Send for HmacSequence {}

fn check(command: &'static str, rc: TSS2_RC) -> Result<(), TpmError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TpmError::Command(CommandError::raw(command, rc)))
    }
}

impl HmacSequence {
    pub fn new(key: SequenceKey, data: Vec<u8>) -> Self {
        Self { key, data, done: 0, state: State::NotStarted }
    }

    /// Whether the sequence needs TPM slots it does not hold yet (its first slice does).
    pub fn is_fresh(&self) -> bool {
        matches!(self.state, State::NotStarted)
    }

    /// Bytes that go through SequenceUpdate; the rest (1..=CHUNK bytes, or none for empty
    /// data) goes to SequenceComplete.
    fn update_len(&self) -> usize {
        self.data.len() - self.data.len().checked_sub(1).map_or(0, |n| n % CHUNK + 1)
    }
}

static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl SequenceContext {
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        let conf = CString::new(tcti).map_err(|_| TpmError::Open {
            tcti: tcti.to_owned(),
            reason: "the TCTI string contains a NUL byte".into(),
        })?;
        let mut tcti_ctx = null_mut();
        // SAFETY: valid C string and out-pointer; the context is finalized in Drop.
        check("Tss2_TctiLdr_Initialize", unsafe {
            Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut tcti_ctx)
        })?;
        let mut esys = null_mut();
        // SAFETY: tcti_ctx was initialized above; esys is an out-pointer.
        let rc = unsafe { Esys_Initialize(&mut esys, tcti_ctx, null_mut()) };
        if rc != 0 {
            // SAFETY: tcti_ctx came from Tss2_TctiLdr_Initialize and is not used afterwards.
            unsafe { Tss2_TctiLdr_Finalize(&mut tcti_ctx) };
            check("Esys_Initialize", rc)?;
        }
        let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { esys, tcti: tcti_ctx, generation, srk: None, persistent: None })
    }

    /// Runs `seq` on: to the end (its digest), or until a slice has passed while
    /// `others_waiting` says someone else wants the TPM (`None`: the sequence is saved, call
    /// again). On an error the sequence holds nothing in the TPM any more.
    pub fn run(
        &mut self,
        seq: &mut HmacSequence,
        others_waiting: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<u8>>, TpmError> {
        let result = self.run_slice(seq, others_waiting);
        if result.is_err() {
            self.abandon(seq);
        }
        result
    }

    /// Frees what `seq` holds in the TPM (a sequence given up before its end).
    pub fn abandon(&mut self, seq: &mut HmacSequence) {
        if let State::Loaded { generation, handle } = std::mem::replace(&mut seq.state, State::NotStarted) {
            if generation == self.generation {
                // SAFETY: the handle was loaded on this context and not flushed since.
                unsafe { Esys_FlushContext(self.esys, handle) };
            }
        }
        // A saved context costs the TPM nothing once dropped.
    }

    fn run_slice(
        &mut self,
        seq: &mut HmacSequence,
        others_waiting: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<u8>>, TpmError> {
        let started = Instant::now();
        let handle = self.resume(seq)?;
        let update_len = seq.update_len();
        while seq.done < update_len {
            let end = (seq.done + CHUNK).min(update_len);
            let buffer = max_buffer(&seq.data[seq.done..end]);
            // SAFETY: live context and sequence handle; buffer outlives the call.
            check("TPM2_SequenceUpdate", unsafe {
                Esys_SequenceUpdate(self.esys, handle, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer)
            })?;
            seq.done = end;
            if seq.done < update_len && started.elapsed() >= SLICE && others_waiting() {
                self.suspend(seq, handle)?;
                return Ok(None);
            }
        }
        let buffer = max_buffer(&seq.data[seq.done..]);
        let mut digest: *mut TPM2B_DIGEST = null_mut();
        let mut ticket: *mut TPMT_TK_HASHCHECK = null_mut();
        // SAFETY: as above; ESYS allocates digest and ticket, freed below.
        check("TPM2_SequenceComplete", unsafe {
            Esys_SequenceComplete(
                self.esys, handle, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer,
                ESYS_TR_RH_NULL, &mut digest, &mut ticket,
            )
        })?;
        // The TPM flushed the sequence object on completion.
        seq.state = State::NotStarted;
        // SAFETY: on success ESYS set both pointers to allocations we now own.
        let out = unsafe {
            let d = &*digest;
            let bytes = d.buffer[..usize::from(d.size)].to_vec();
            Esys_Free(digest.cast());
            Esys_Free(ticket.cast());
            bytes
        };
        Ok(Some(out))
    }

    /// The sequence's handle on this context: started, or loaded back from its saved context.
    fn resume(&mut self, seq: &mut HmacSequence) -> Result<ESYS_TR, TpmError> {
        match std::mem::replace(&mut seq.state, State::NotStarted) {
            State::NotStarted => {
                let handle = self.start(&seq.key)?;
                seq.state = State::Loaded { generation: self.generation, handle };
                Ok(handle)
            }
            State::Loaded { generation, handle } if generation == self.generation => {
                seq.state = State::Loaded { generation, handle };
                Ok(handle)
            }
            State::Saved { generation, context } if generation == self.generation => {
                let mut handle: ESYS_TR = ESYS_TR_NONE;
                // SAFETY: a context saved by this ESYS context; handle is an out-pointer.
                check("TPM2_ContextLoad", unsafe { Esys_ContextLoad(self.esys, &*context, &mut handle) })?;
                seq.state = State::Loaded { generation, handle };
                Ok(handle)
            }
            State::Loaded { .. } | State::Saved { .. } => Err(TpmError::Unexpected(
                "the TPM was reopened in the middle of a long HMAC; retry the request".into(),
            )),
        }
    }

    /// Context-saves the sequence and flushes it, freeing its slot until the next slice.
    fn suspend(&mut self, seq: &mut HmacSequence, handle: ESYS_TR) -> Result<(), TpmError> {
        let mut saved: *mut TPMS_CONTEXT = null_mut();
        // SAFETY: live context and handle; ESYS allocates the saved context.
        check("TPM2_ContextSave", unsafe { Esys_ContextSave(self.esys, handle, &mut saved) })?;
        // SAFETY: ESYS returned a valid allocation; copied out, then freed.
        let context = unsafe {
            let copy = Box::new(std::ptr::read(saved));
            Esys_Free(saved.cast());
            copy
        };
        // SAFETY: the object is saved; flushing frees its slot and the ESYS handle.
        check("TPM2_FlushContext", unsafe { Esys_FlushContext(self.esys, handle) })?;
        seq.state = State::Saved { generation: self.generation, context };
        Ok(())
    }

    /// HMAC_Start with the sequence's key. A key object is loaded for the start only: the
    /// sequence keeps what it needs of the key, so one slot is held from here on.
    fn start(&mut self, key: &SequenceKey) -> Result<ESYS_TR, TpmError> {
        match key {
            SequenceKey::Persistent(handle) => {
                let key = self.persistent(*handle)?;
                let started = self.hmac_start(key);
                if started.is_err() {
                    // Perhaps not the object we read any more: read it again next time.
                    self.forget_persistent();
                }
                started
            }
            SequenceKey::Object { srk, public, private } => {
                let bad = |what: &str| TpmError::InvalidKey(format!("stored {what} area does not parse"));
                let public = Public::unmarshall(public).map_err(|_| bad("public"))?;
                let public = TPM2B_PUBLIC::try_from(public).map_err(|_| bad("public"))?;
                let private = TPM2B_PRIVATE::from(Private::try_from(private.clone()).map_err(|_| bad("private"))?);
                let parent = self.srk(*srk)?;
                let mut object: ESYS_TR = ESYS_TR_NONE;
                // SAFETY: live context, valid parent handle, initialized in-structures.
                check("TPM2_Load", unsafe {
                    Esys_Load(self.esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &private, &public, &mut object)
                })?;
                let started = self.hmac_start(object);
                // SAFETY: object was loaded above on this context.
                unsafe { Esys_FlushContext(self.esys, object) };
                started
            }
        }
    }

    fn hmac_start(&mut self, key: ESYS_TR) -> Result<ESYS_TR, TpmError> {
        let auth = TPM2B_AUTH::default();
        let mut sequence: ESYS_TR = ESYS_TR_NONE;
        // SAFETY: live context, valid key handle, pointers to initialized values.
        check("TPM2_HMAC_Start", unsafe {
            Esys_HMAC_Start(
                self.esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &auth,
                TPM2_ALG_SHA256, &mut sequence,
            )
        })?;
        Ok(sequence)
    }

    /// The ESYS handle of the persistent object at `handle` (the auth key), read from the TPM
    /// the first time.
    fn persistent(&mut self, handle: u32) -> Result<ESYS_TR, TpmError> {
        match self.persistent {
            Some((cached, tr)) if cached == handle => return Ok(tr),
            Some(_) => self.forget_persistent(),
            None => {}
        }
        let tr = self.read_handle(handle)?;
        self.persistent = Some((handle, tr));
        Ok(tr)
    }

    /// Drops the auth key's ESYS handle: the key at its persistent handle was replaced or removed.
    pub fn forget_persistent(&mut self) {
        if let Some((_, mut tr)) = self.persistent.take() {
            // SAFETY: tr is a valid ESYS_TR of this context; closing only frees ESYS metadata.
            unsafe { Esys_TR_Close(self.esys, &mut tr) };
        }
    }

    /// The ESYS handle of the persistent SRK, read from the TPM the first time.
    fn srk(&mut self, handle: u32) -> Result<ESYS_TR, TpmError> {
        if let Some((cached, tr)) = self.srk {
            if cached == handle {
                return Ok(tr);
            }
        }
        let tr = self.read_handle(handle)?;
        self.srk = Some((handle, tr));
        Ok(tr)
    }

    /// An ESYS handle for the persistent object at `handle` (one TPM2_ReadPublic).
    fn read_handle(&mut self, handle: u32) -> Result<ESYS_TR, TpmError> {
        let mut tr: ESYS_TR = ESYS_TR_NONE;
        // SAFETY: live context; tr is an out-pointer.
        check("TPM2_ReadPublic (TR_FromTPMPublic)", unsafe {
            Esys_TR_FromTPMPublic(self.esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut tr)
        })?;
        Ok(tr)
    }
}

fn max_buffer(chunk: &[u8]) -> TPM2B_MAX_BUFFER {
    let mut buffer = TPM2B_MAX_BUFFER { size: chunk.len() as u16, ..Default::default() };
    buffer.buffer[..chunk.len()].copy_from_slice(chunk);
    buffer
}

impl Drop for SequenceContext {
    fn drop(&mut self) {
        // SAFETY: both were created in `open` and are not used after this.
        unsafe {
            Esys_Finalize(&mut self.esys);
            Tss2_TctiLdr_Finalize(&mut self.tcti);
        }
    }
}
