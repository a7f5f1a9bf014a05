//! Errors of the TPM owner. Each variant says which step failed and carries the TSS error, so a
//! log line or an HTTP message names the TPM command and the decoded response code.

use std::path::PathBuf;

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;

/// A failed TPM command: which one, and the TSS response decoded.
#[derive(Debug, thiserror::Error)]
#[error("{command} failed: {detail}")]
pub struct CommandError {
    pub command: &'static str,
    pub detail: String,
    /// The decoded response code, when tss-esapi produced the error.
    pub kind: Option<Tss2ResponseCodeKind>,
}

impl CommandError {
    pub fn esapi(command: &'static str, e: tss_esapi::Error) -> Self {
        let kind = match e {
            tss_esapi::Error::Tss2Error(rc) => rc.kind(),
            tss_esapi::Error::WrapperError(_) => None,
        };
        Self { command, detail: describe(&e), kind }
    }

    /// From a raw TSS2_RC (commands run outside tss-esapi), decoded by libtss2-rc.
    pub fn raw(command: &'static str, rc: u32) -> Self {
        Self { command, detail: decode_rc(rc), kind: None }
    }
}

/// Renders a tss-esapi error the way upstream logs TPM errors: `Tss2_RC_Decode` text and the
/// hex code. tss-esapi 7.7.0 keeps the raw code private but prints it in its `Debug` form
/// (`... { .0: 257, ... }`), so it is recovered from there; its own text is the fallback.
pub fn describe(e: &tss_esapi::Error) -> String {
    match e {
        tss_esapi::Error::Tss2Error(rc) => {
            let debug = format!("{rc:?}");
            let raw = debug
                .split_once(".0: ")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u32>().ok());
            match raw {
                Some(code) => format!("{rc}: {}", decode_rc(code)),
                None => format!("{rc}"),
            }
        }
        tss_esapi::Error::WrapperError(kind) => format!("{kind} (tss-esapi)"),
    }
}

#[link(name = "tss2-rc")]
extern "C" {
    fn Tss2_RC_Decode(rc: u32) -> *const std::os::raw::c_char;
}

/// `Tss2_RC_Decode`, as upstream aziot-tpmd logs it: e.g. "tpm:parameter(1):structure is the
/// wrong size (0x000001d5)".
pub fn decode_rc(rc: u32) -> String {
    // SAFETY: Tss2_RC_Decode returns a pointer to a static, NUL-terminated, thread-local buffer.
    let text = unsafe {
        let p = Tss2_RC_Decode(rc);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    format!("{text} ({rc:#010x})")
}

#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI could not be opened: no device node, no permission, simulator not running.
    #[error("cannot open the TPM through TCTI \"{tcti}\": {reason}")]
    Open { tcti: String, reason: String },

    #[error(transparent)]
    Command(#[from] CommandError),

    /// A hierarchy password was refused (TPM_RC_BAD_AUTH / AUTH_FAIL on the hierarchy).
    #[error("the TPM refused the {hierarchy} hierarchy password ({command}): check [hierarchy_authorization] {hierarchy} in the tpmd config")]
    HierarchyAuth { hierarchy: &'static str, command: &'static str },

    /// The caller sent a DPS blob that does not parse; the message names the field.
    #[error("invalid authentication key blob: {0}")]
    InvalidBlob(String),

    /// The blob parses but the TPM rejects it (not made for this TPM's EK/SRK, or corrupted).
    #[error("the TPM rejected the authentication key: {0}; the blob was not made for this TPM's EK and SRK, or it was altered. The previous auth key is unchanged")]
    BlobRejected(CommandError),

    #[error("no DPS auth key is present in the TPM at handle {handle:#010x}; the device has to be provisioned (import_auth_key) first")]
    NoAuthKey { handle: u32 },

    #[error("no previous auth key is kept, so there is nothing to restore")]
    NoPreviousAuthKey,

    #[error("auth key store {path}: {source}")]
    Store { path: PathBuf, #[source] source: std::io::Error },

    /// A key object cannot do what was asked (wrong kind, bad input size), or does not parse.
    #[error("{0}")]
    InvalidKey(String),

    /// The stored session key does not load: the SRK is not the one that made it.
    #[error("the session key {path} does not load under the SRK at 0x81000001 ({reason}): the TPM was cleared or replaced, the file was altered, or something between the CPU and the TPM answers in its place. keyd-tpm does not encrypt its secrets to a key it cannot check; if the TPM was cleared or replaced on purpose, remove {path} and start keyd-tpm again")]
    SessionKey { path: PathBuf, reason: String },

    #[error("the TPM request queue is full; retry later")]
    Busy,

    #[error("the TPM owner thread has stopped")]
    OwnerGone,

    #[error("unexpected TPM state: {0}")]
    Unexpected(String),
}

impl TpmError {
    /// Wraps a TSS error with the name of the command that produced it.
    pub fn command(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
        move |source| TpmError::Command(CommandError::esapi(command, source))
    }
}

/// Adds the command name to a tss-esapi result.
pub trait Context<T> {
    fn during(self, command: &'static str) -> Result<T, TpmError>;
}

impl<T> Context<T> for tss_esapi::Result<T> {
    fn during(self, command: &'static str) -> Result<T, TpmError> {
        self.map_err(TpmError::command(command))
    }
}
