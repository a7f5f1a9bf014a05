//! HMAC over more than one TPM input buffer (1024 bytes), which needs TPM2_HMAC_Start,
//! TPM2_SequenceUpdate and TPM2_SequenceComplete. tss-esapi 7.7.0 has no wrappers for them and
//! keeps its ESYS context private, so this module, and only this module, drives those three
//! commands through a second raw ESYS context on the same TCTI. It lives inside the TPM owner
//! thread like the main context, so the two never run concurrently. It needs a TCTI that allows
//! a second connection: `/dev/tpmrm0`, swtpm and tabrmd do; a bare `/dev/tpm0` does not.

use std::ffi::CString;
use std::ptr::null_mut;

use tss_esapi::constants::tss::TPM2_ALG_SHA256;
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::UnMarshall;
use tss_esapi::tss2_esys::{
    Esys_Finalize, Esys_FlushContext, Esys_Free, Esys_HMAC_Start, Esys_Initialize, Esys_Load,
    TPM2B_PRIVATE, TPM2B_PUBLIC,
    Esys_SequenceComplete, Esys_SequenceUpdate, Esys_TR_Close, Esys_TR_FromTPMPublic, ESYS_CONTEXT,
    ESYS_TR, ESYS_TR_NONE, ESYS_TR_PASSWORD, ESYS_TR_RH_NULL, TPM2B_AUTH, TPM2_MAX_DIGEST_BUFFER, TPM2B_DIGEST, TPM2B_MAX_BUFFER, TPMT_TK_HASHCHECK, TSS2_RC,
    TSS2_TCTI_CONTEXT, Tss2_TctiLdr_Finalize, Tss2_TctiLdr_Initialize,
};

use super::error::{CommandError, TpmError};

const CHUNK: usize = TPM2_MAX_DIGEST_BUFFER as usize;

/// A raw ESYS context used only for sequence commands.
pub struct SequenceContext {
    esys: *mut ESYS_CONTEXT,
    tcti: *mut TSS2_TCTI_CONTEXT,
}

// SAFETY: the context is created, used and dropped by the single TPM owner thread; `Send` only
// lets the owner move it into that thread once.
unsafe impl Send for SequenceContext {}

fn check(command: &'static str, rc: TSS2_RC) -> Result<(), TpmError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TpmError::Command(CommandError::raw(command, rc)))
    }
}

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
        Ok(Self { esys, tcti: tcti_ctx })
    }

    /// HMAC-SHA256 of `data` with the key at persistent handle `handle` (empty auth).
    pub fn hmac_persistent(&mut self, handle: u32, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        let mut key: ESYS_TR = ESYS_TR_NONE;
        // SAFETY: self.esys is a live context; key is an out-pointer.
        check("TPM2_ReadPublic (TR_FromTPMPublic)", unsafe {
            Esys_TR_FromTPMPublic(self.esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut key)
        })?;
        let result = self.hmac_with(key, data);
        // SAFETY: key is a valid ESYS_TR of this context; closing only frees the ESYS metadata.
        unsafe { Esys_TR_Close(self.esys, &mut key) };
        result
    }

    /// HMAC-SHA256 of `data` with a key object given as its SRK-wrapped blob: loaded under the
    /// SRK (persistent handle `srk`) on this connection, used, and flushed.
    pub fn hmac_object(&mut self, srk: u32, public: &[u8], private: &[u8], data: &[u8]) -> Result<Vec<u8>, TpmError> {
        let bad = |what: &str| TpmError::InvalidKey(format!("stored {what} area does not parse"));
        let public = Public::unmarshall(public).map_err(|_| bad("public"))?;
        let public = TPM2B_PUBLIC::try_from(public).map_err(|_| bad("public"))?;
        let private = TPM2B_PRIVATE::from(Private::try_from(private.to_vec()).map_err(|_| bad("private"))?);
        let mut parent: ESYS_TR = ESYS_TR_NONE;
        // SAFETY: live context; parent is an out-pointer.
        check("TPM2_ReadPublic (TR_FromTPMPublic)", unsafe {
            Esys_TR_FromTPMPublic(self.esys, srk, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut parent)
        })?;
        let mut object: ESYS_TR = ESYS_TR_NONE;
        // SAFETY: live context, valid parent handle, initialized in-structures.
        let loaded = check("TPM2_Load", unsafe {
            Esys_Load(self.esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &private, &public, &mut object)
        });
        let result = loaded.and_then(|()| {
            let r = self.hmac_with(object, data);
            // SAFETY: object was loaded above on this context.
            unsafe { Esys_FlushContext(self.esys, object) };
            r
        });
        // SAFETY: parent is a valid ESYS_TR of this context.
        unsafe { Esys_TR_Close(self.esys, &mut parent) };
        result
    }

    fn hmac_with(&mut self, key: ESYS_TR, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        let auth = TPM2B_AUTH::default();
        let mut sequence: ESYS_TR = ESYS_TR_NONE;
        // SAFETY: live context, valid key handle, pointers to initialized values.
        check("TPM2_HMAC_Start", unsafe {
            Esys_HMAC_Start(
                self.esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &auth,
                TPM2_ALG_SHA256, &mut sequence,
            )
        })?;
        let result = self.run_sequence(sequence, data);
        if result.is_err() {
            // SAFETY: the sequence object is still loaded after a failed update/complete.
            unsafe { Esys_FlushContext(self.esys, sequence) };
        }
        result
    }

    fn run_sequence(&mut self, sequence: ESYS_TR, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        // Every chunk but the last goes through SequenceUpdate; the last through Complete.
        let split = data.len() - data.len().checked_sub(1).map_or(0, |n| n % CHUNK + 1);
        let (body, last) = data.split_at(split);
        for chunk in body.chunks(CHUNK) {
            let buffer = max_buffer(chunk);
            // SAFETY: live context and sequence handle; buffer outlives the call.
            check("TPM2_SequenceUpdate", unsafe {
                Esys_SequenceUpdate(self.esys, sequence, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer)
            })?;
        }
        let buffer = max_buffer(last);
        let mut digest: *mut TPM2B_DIGEST = null_mut();
        let mut ticket: *mut TPMT_TK_HASHCHECK = null_mut();
        // SAFETY: as above; ESYS allocates digest and ticket, freed below.
        check("TPM2_SequenceComplete", unsafe {
            Esys_SequenceComplete(
                self.esys, sequence, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer,
                ESYS_TR_RH_NULL, &mut digest, &mut ticket,
            )
        })?;
        // SAFETY: on success ESYS set both pointers to allocations we now own.
        let out = unsafe {
            let d = &*digest;
            let bytes = d.buffer[..usize::from(d.size)].to_vec();
            Esys_Free(digest.cast());
            Esys_Free(ticket.cast());
            bytes
        };
        Ok(out)
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
