//! Everything that talks to the TPM. One thread owns the TSS context (see `owner`); the rest of
//! the daemon holds a cloneable [`TpmHandle`] and sends it requests. Nothing else opens the TPM.

mod auth_key;
mod cache;
mod device;
mod dps_blob;
mod error;
mod info;
mod inspect;
mod key_objects;
mod keys;
mod owner;
mod primaries;
mod sequence;
mod session;
mod store;

use std::path::PathBuf;

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::CapabilityType;
use tss_esapi::structures::CapabilityData;
use tss_esapi::Context;
use zeroize::Zeroizing;

pub use device::TpmKeys;
pub use info::TpmInfo;
pub use inspect::{inspect, Inspection};
pub use error::{decode_rc, CommandError, TpmError};
pub use keys::{KeyObject, KeyPairAlgorithm, ObjectKind, PublicKey, Secret};
pub use owner::{in_lane, Lane, QuickRuns, TpmHandle};
pub use session::{test_hierarchy_password, ParameterEncryption};

/// Turns libtss2's own logging off unless `TSS2_LOG` is set: its default writes WARNING and
/// ERROR lines to stderr for conditions we report ourselves (once, with the cause and the fix).
/// `TSS2_LOG=all+debug` (or any other setting) brings them back. Call before the first TPM
/// context is made, while the process has one thread.
pub fn quiet_tss_unless_asked() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
}

/// What the owner needs to open and use the TPM. Hierarchy passwords are zeroized on drop and
/// never printed.
#[derive(Clone)]
pub struct TpmSettings {
    /// A TCTI configuration string: `device:/dev/tpmrm0`, `swtpm:host=...,port=...`, `tabrmd`.
    pub tcti: String,
    /// The DPS auth key lives at 0x81000000 + this index.
    pub auth_key_index: u32,
    pub endorsement_auth: Zeroizing<String>,
    pub owner_auth: Zeroizing<String>,
    /// Where SRK-wrapped copies of imported auth keys (and the session key) are kept.
    pub state_dir: PathBuf,
    /// Encrypted, salted sessions for every secret-bearing command and HMAC authorization for
    /// the hierarchies (see `session`). The daemon always uses the default.
    pub parameter_encryption: ParameterEncryption,
}

impl std::fmt::Debug for TpmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmSettings")
            .field("tcti", &self.tcti)
            .field("auth_key_index", &format_args!("{:#08x}", self.auth_key_index))
            .field("endorsement_auth", &redacted(&self.endorsement_auth))
            .field("owner_auth", &redacted(&self.owner_auth))
            .field("state_dir", &self.state_dir)
            .field("parameter_encryption", &self.parameter_encryption)
            .finish()
    }
}

fn redacted(s: &str) -> &'static str {
    if s.is_empty() {
        "(empty)"
    } else {
        "(set, redacted)"
    }
}

impl TpmSettings {
    pub fn auth_key_handle(&self) -> u32 {
        aziot_tpm_common::AUTH_KEY_HANDLE_BASE + self.auth_key_index
    }
}

/// True if a persistent object sits at `handle`. Asked through GetCapability rather than
/// ReadPublic so that an empty handle is not an error (ESYS would log one).
fn persistent_exists(ctx: &mut Context, handle: u32) -> Result<bool, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, handle, 1)
        .map_err(TpmError::command("TPM2_GetCapability(handles)"))?;
    Ok(match data {
        CapabilityData::Handles(list) => list.iter().any(|h| u32::from(*h) == handle),
        _ => false,
    })
}

/// Maps a failure of a command authorized by a hierarchy password to a message that says so.
fn hierarchy_auth_error(
    e: tss_esapi::Error,
    hierarchy: &'static str,
    command: &'static str,
) -> TpmError {
    if is_auth_failure(&e) {
        TpmError::HierarchyAuth { hierarchy, command }
    } else {
        TpmError::Command(CommandError::esapi(command, e))
    }
}

/// The TPM refused an authorization: a wrong password, or an HMAC over other names.
fn is_auth_failure(e: &tss_esapi::Error) -> bool {
    matches!(
        e,
        tss_esapi::Error::Tss2Error(rc)
            if matches!(rc.kind(), Some(Tss2ResponseCodeKind::BadAuth | Tss2ResponseCodeKind::AuthFail))
    )
}

/// Upstream sets hierarchy passwords as the config string plus a NUL byte (`to_bytes_with_nul`);
/// the TPM ignores trailing zero bytes of a password, so "" and "\0" are the same empty password.
fn hierarchy_auth_bytes(password: &str) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(password.len() + 1));
    bytes.extend_from_slice(password.as_bytes());
    bytes.push(0);
    bytes
}
