//! TPM commands as bytes for the session channel: a connection of its own through the TCTI
//! loader, and the marshalling of the few commands it sends (TPM 2.0 Part 1 §18, Part 2 for the
//! structures). This module, and only this module, calls the TCTI through raw FFI, as `sequence`
//! does for its commands.

use std::ffi::CString;
use std::ptr::null_mut;

use tss_esapi::tss2_esys::{
    Tss2_TctiLdr_Finalize, Tss2_TctiLdr_Initialize, TSS2_RC, TSS2_TCTI_CONTEXT, TSS2_TCTI_CONTEXT_COMMON_V1,
};

use crate::tpm::error::TpmError;

pub const ST_NO_SESSIONS: u16 = 0x8001;
pub const ST_SESSIONS: u16 = 0x8002;
pub const RS_PW: u32 = 0x4000_0009;
pub const RH_NULL: u32 = 0x4000_0007;
pub const RH_OWNER: u32 = 0x4000_0001;
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_AES: u16 = 0x0006;
pub const ALG_CFB: u16 = 0x0043;
pub const ALG_NULL: u16 = 0x0010;

const MAX_RESPONSE: usize = 4096;
const TIMEOUT_BLOCK: i32 = -1;
/// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: the TPM did not run the command; send it again.
const RESUBMIT: [u32; 3] = [0x922, 0x908, 0x90A];

/// A connection to the TPM of our own.
pub struct Transport {
    tcti: *mut TSS2_TCTI_CONTEXT,
}

// SAFETY: created, used and dropped by the TPM owner thread only; `Send` lets the owner move it
// into that thread once.
unsafe impl Send for Transport {}

impl Transport {
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        let conf = CString::new(tcti)
            .map_err(|_| TpmError::Open { tcti: tcti.to_owned(), reason: "the TCTI string contains a NUL byte".into() })?;
        let mut ctx = null_mut();
        // SAFETY: a valid C string and an out-pointer; the context is finalized in Drop.
        let rc = unsafe { Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut ctx) };
        if rc != 0 || ctx.is_null() {
            return Err(TpmError::Open { tcti: tcti.to_owned(), reason: crate::tpm::error::decode_rc(rc) });
        }
        Ok(Self { tcti: ctx })
    }

    /// Sends one command and returns the response bytes; a transport failure is the TCTI's
    /// response code.
    pub fn execute(&mut self, command: &[u8]) -> Result<Vec<u8>, TSS2_RC> {
        for _ in 0..8 {
            let response = self.round_trip(command)?;
            match response_code(&response) {
                Some(rc) if RESUBMIT.contains(&rc) => continue,
                _ => return Ok(response),
            }
        }
        Err(0x922)
    }

    fn round_trip(&mut self, command: &[u8]) -> Result<Vec<u8>, TSS2_RC> {
        // SAFETY: every TCTI context starts with the v1 common header; the loader's is valid
        // until Drop.
        let common = unsafe { &*(self.tcti as *const TSS2_TCTI_CONTEXT_COMMON_V1) };
        let (Some(transmit), Some(receive)) = (common.transmit, common.receive) else {
            return Err(0x000a_0003); // TSS2_TCTI_RC_NOT_IMPLEMENTED
        };
        // SAFETY: a live context and a buffer of `command.len()` bytes.
        let rc = unsafe { transmit(self.tcti, command.len() as _, command.as_ptr()) };
        if rc != 0 {
            return Err(rc);
        }
        let mut buf = vec![0u8; MAX_RESPONSE];
        let mut size = buf.len() as _;
        // SAFETY: a live context; `size` holds the buffer's length and receives the response's.
        let rc = unsafe { receive(self.tcti, &mut size, buf.as_mut_ptr(), TIMEOUT_BLOCK) };
        if rc != 0 {
            return Err(rc);
        }
        buf.truncate(size as usize);
        Ok(buf)
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // SAFETY: created in `open`, not used after this.
        unsafe { Tss2_TctiLdr_Finalize(&mut self.tcti) };
    }
}

pub fn response_code(response: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(response.get(6..10)?.try_into().ok()?))
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u16(out, bytes.len() as u16);
    out.extend_from_slice(bytes);
}

/// One entry of a command's authorization area, ready to marshal.
pub struct CommandAuth {
    pub handle: u32,
    pub nonce: Vec<u8>,
    pub attributes: u8,
    pub hmac: Vec<u8>,
}

/// A complete command: header, handles, authorization area, parameters.
pub fn command(code: u32, handles: &[u32], auths: &[CommandAuth], parameters: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parameters.len());
    put_u16(&mut out, if auths.is_empty() { ST_NO_SESSIONS } else { ST_SESSIONS });
    put_u32(&mut out, 0);
    put_u32(&mut out, code);
    for h in handles {
        put_u32(&mut out, *h);
    }
    if !auths.is_empty() {
        let mut area = Vec::new();
        for a in auths {
            put_u32(&mut area, a.handle);
            put_tpm2b(&mut area, &a.nonce);
            area.push(a.attributes);
            put_tpm2b(&mut area, &a.hmac);
        }
        put_u32(&mut out, area.len() as u32);
        out.extend_from_slice(&area);
    }
    out.extend_from_slice(parameters);
    let size = out.len() as u32;
    out[2..6].copy_from_slice(&size.to_be_bytes());
    out
}

/// One entry of a response's authorization area.
pub struct ResponseAuth {
    pub nonce: Vec<u8>,
    pub attributes: u8,
    pub hmac: Vec<u8>,
}

/// A successful response, split.
pub struct Response {
    pub handles: Vec<u32>,
    pub parameters: Vec<u8>,
    pub auths: Vec<ResponseAuth>,
}

/// Splits a successful response that returns `handle_count` handles; `None` if it is malformed.
pub fn parse_response(bytes: &[u8], handle_count: usize) -> Option<Response> {
    let mut r = Reader::new(bytes);
    let tag = r.u16()?;
    let size = r.u32()? as usize;
    if size != bytes.len() {
        return None;
    }
    r.u32()?; // response code, known to be 0 here
    let handles = (0..handle_count).map(|_| r.u32()).collect::<Option<Vec<_>>>()?;
    if tag != ST_SESSIONS {
        return Some(Response { handles, parameters: r.rest().to_vec(), auths: Vec::new() });
    }
    let parameter_size = r.u32()? as usize;
    let parameters = r.take(parameter_size)?.to_vec();
    let mut auths = Vec::new();
    while !r.is_empty() {
        auths.push(ResponseAuth { nonce: r.tpm2b()?.to_vec(), attributes: r.u8()?, hmac: r.tpm2b()?.to_vec() });
    }
    Some(Response { handles, parameters, auths })
}

/// Reads big-endian TPM structures.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn tpm2b(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_and_its_response_round_trip_through_the_marshalling() {
        let auth = CommandAuth { handle: RS_PW, nonce: vec![], attributes: 1, hmac: b"pw".to_vec() };
        let c = command(0x15E, &[0x8000_0001], &[auth], &[]);
        assert_eq!(&c[..2], &ST_SESSIONS.to_be_bytes());
        assert_eq!(u32::from_be_bytes(c[2..6].try_into().unwrap()) as usize, c.len());
        assert_eq!(&c[10..14], &0x8000_0001u32.to_be_bytes());
        assert_eq!(&c[14..18], &11u32.to_be_bytes());

        let mut r = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        put_u32(&mut r, 4);
        put_tpm2b(&mut r, b"ok");
        put_tpm2b(&mut r, &[9; 32]);
        r.push(1);
        put_tpm2b(&mut r, &[8; 32]);
        let size = r.len() as u32;
        r[2..6].copy_from_slice(&size.to_be_bytes());
        let parsed = parse_response(&r, 0).unwrap();
        assert_eq!(parsed.parameters, [0, 2, b'o', b'k']);
        assert_eq!(parsed.auths.len(), 1);
        assert_eq!((parsed.auths[0].nonce.len(), parsed.auths[0].attributes), (32, 1));
        assert!(parse_response(&r[..r.len() - 1], 0).is_none());
    }
}
