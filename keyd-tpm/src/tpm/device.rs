//! The open TPM: the tss-esapi context plus the handles the daemon keeps (EK, SRK, auth key).
//! Only the owner thread ever holds a `Device`.

use std::str::FromStr;

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{Auth, CapabilityData, Public};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::cache::LoadedObjects;
use super::error::{Context as _, TpmError};
use super::primaries::{self, Origin};
use super::sequence::{HmacSequence, SequenceContext, SequenceKey};
use super::session::BusSession;
use super::store::{AuthKeyStore, Slot};
use super::{hierarchy_auth_bytes, TpmSettings};

/// EK and SRK as `TPM2B_PUBLIC` (size prefix included), the bytes DPS receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKeys {
    pub endorsement_key: Vec<u8>,
    pub storage_root_key: Vec<u8>,
}

/// The persistent auth key as the daemon last read or persisted it.
pub(super) struct AuthKey {
    /// nameAlg || SHA-256(public area): what a session's HMAC over a command on it covers.
    pub name: Vec<u8>,
    /// The main context's ESYS handle of it; none when it was persisted through the session
    /// channel, whose commands need only its name.
    pub esys: Option<ObjectHandle>,
}

pub struct Device {
    pub(super) ctx: Context,
    pub(super) settings: TpmSettings,
    pub(super) ek: KeyHandle,
    pub(super) srk: KeyHandle,
    /// The persistent auth key, if one is there.
    pub(super) auth_key: Option<AuthKey>,
    pub(super) store: AuthKeyStore,
    pub(super) loaded: LoadedObjects,
    /// The salted session secret-bearing and hierarchy-authorized commands run with.
    pub(super) bus: BusSession,
    sequence: Option<SequenceContext>,
}

/// The TCTI string actually used: a bare `device` means the kernel resource manager, not the
/// raw `/dev/tpm0` that tcti-device would pick by default.
pub fn normalize_tcti(tcti: &str) -> String {
    match tcti.trim() {
        "" | "device" => "device:/dev/tpmrm0".to_owned(),
        other => other.to_owned(),
    }
}

impl Device {
    pub fn open(settings: TpmSettings) -> Result<Self, TpmError> {
        let (mut ctx, tcti) = open_context(&settings.tcti, &settings.endorsement_auth, &settings.owner_auth)?;
        flush_leftovers(&mut ctx)?;
        let mut bus = BusSession::open(settings.parameter_encryption, &tcti);
        // Creating a primary takes a hierarchy's authorization: on a fresh TPM, through a
        // session salted to an ephemeral key, since the session key needs the SRK.
        let fresh = !super::persistent_exists(&mut ctx, aziot_tpm_common::EK_HANDLE)?
            || !super::persistent_exists(&mut ctx, aziot_tpm_common::SRK_HANDLE)?;
        if fresh {
            bus.bootstrap(&mut ctx)?;
        }
        let (ek, ek_origin) =
            primaries::ensure(&mut ctx, &mut bus, &settings, aziot_tpm_common::EK_HANDLE, Hierarchy::Endorsement, primaries::ek_template)?;
        let (srk, srk_origin) =
            primaries::ensure(&mut ctx, &mut bus, &settings, aziot_tpm_common::SRK_HANDLE, Hierarchy::Owner, primaries::srk_template)?;
        let store = AuthKeyStore::open(&settings.state_dir)?;
        if srk_origin == Origin::Created && store.exists(Slot::SessionKey) {
            // The SRK that wrapped it is gone (a TPM clear): it can never load again.
            log::warn!(
                "the SRK had to be created anew (was the TPM cleared?); the session key {} belonged to the old one and is replaced",
                store.path(Slot::SessionKey).display()
            );
            store.remove(Slot::SessionKey)?;
        }
        let (ek_public, srk_public) = (tpm2b_public(&mut ctx, ek)?, tpm2b_public(&mut ctx, srk)?);
        bus.start(&mut ctx, srk, &ek_public, &srk_public, &store)?;
        log::info!(
            "TPM open on {tcti}: EK at {:#010x} ({}), SRK at {:#010x} ({})",
            aziot_tpm_common::EK_HANDLE,
            origin(ek_origin),
            aziot_tpm_common::SRK_HANDLE,
            origin(srk_origin)
        );
        let mut device = Self {
            bus,
            ctx,
            settings: TpmSettings { tcti, ..settings },
            ek,
            srk,
            auth_key: None,
            store,
            loaded: LoadedObjects::default(),
            sequence: None,
        };
        device.recover_auth_key()?;
        device.auth_key = device.find_auth_key()?;
        match device.auth_key {
            Some(_) => log::info!("DPS auth key present at {:#010x}", device.settings.auth_key_handle()),
            None => log::info!("no DPS auth key at {:#010x} yet", device.settings.auth_key_handle()),
        }
        Ok(device)
    }

    /// Reads the EK and SRK public areas from the TPM now (not from a cache).
    pub fn tpm_keys(&mut self) -> Result<TpmKeys, TpmError> {
        Ok(TpmKeys {
            endorsement_key: self.read_tpm2b_public(self.ek)?,
            storage_root_key: self.read_tpm2b_public(self.srk)?,
        })
    }

    pub(super) fn read_public(&mut self, key: KeyHandle) -> Result<Public, TpmError> {
        Ok(self.ctx.read_public(key).during("TPM2_ReadPublic")?.0)
    }

    fn read_tpm2b_public(&mut self, key: KeyHandle) -> Result<Vec<u8>, TpmError> {
        tpm2b_public(&mut self.ctx, key)
    }

    /// The persistent auth key, if the TPM has one, read now.
    pub(super) fn find_auth_key(&mut self) -> Result<Option<AuthKey>, TpmError> {
        let handle = self.settings.auth_key_handle();
        if !super::persistent_exists(&mut self.ctx, handle)? {
            return Ok(None);
        }
        let handle = TpmHandle::Persistent(primaries::persistent(handle)?);
        let object = self.ctx.tr_from_tpm_public(handle).during("TPM2_ReadPublic (TR_FromTPMPublic)")?;
        let name = self.ctx.tr_get_name(object).during("Esys_TR_GetName")?.value().to_vec();
        Ok(Some(AuthKey { name, esys: Some(object) }))
    }

    /// The object at the auth key's persistent handle is about to change: the sequence context
    /// reads it again at its next sequence.
    pub(super) fn auth_key_changing(&mut self) {
        if let Some(sequence) = self.sequence.as_mut() {
            sequence.forget_persistent();
        }
    }

    /// The raw context for sequence commands, opened on first use.
    pub(super) fn sequence(&mut self) -> Result<&mut SequenceContext, TpmError> {
        if self.sequence.is_none() {
            self.sequence = Some(SequenceContext::open(&self.settings.tcti)?);
        }
        self.sequence
            .as_mut()
            .ok_or_else(|| TpmError::Unexpected("sequence context missing".into()))
    }

    /// One slice of a long HMAC (see `sequence`): its digest once done, `None` when it stopped
    /// to let `others_waiting` in. The first slice frees the cached objects' slots for it.
    pub(super) fn hmac_slice(
        &mut self,
        seq: &mut HmacSequence,
        others_waiting: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<u8>>, TpmError> {
        if seq.is_fresh() {
            self.make_room()?;
        }
        self.sequence()?.run(seq, others_waiting)
    }

    /// Frees what an abandoned long HMAC holds in the TPM.
    pub(super) fn abandon_hmac(&mut self, seq: &mut HmacSequence) {
        if let Some(sequence) = self.sequence.as_mut() {
            sequence.abandon(seq);
        }
    }

    /// A long HMAC run to its end in one go, by whoever holds the owner (a short sequence, or a
    /// key's HMAC that needs one).
    pub(super) fn long_hmac(&mut self, key: SequenceKey, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        let mut seq = HmacSequence::new(key, data.to_vec());
        self.hmac_slice(&mut seq, &|| false)?
            .ok_or_else(|| TpmError::Unexpected("an unsliced HMAC sequence stopped early".into()))
    }

    /// A cheap round trip that tells whether the TPM still answers on this context and still
    /// holds our session (a TPM reset or simulator restart loses it).
    pub fn is_alive(&mut self) -> bool {
        self.bus.is_loaded(&mut self.ctx)
    }
}

fn origin(o: Origin) -> &'static str {
    match o {
        Origin::Existing => "existing",
        Origin::Created => "created",
    }
}

/// Opens an ESYS context on `tcti` (normalized; returned with it) with the hierarchy passwords
/// set, and changes nothing on the TPM.
pub(super) fn open_context(tcti: &str, endorsement_auth: &str, owner_auth: &str) -> Result<(Context, String), TpmError> {
    let tcti = normalize_tcti(tcti);
    let conf = TctiNameConf::from_str(&tcti).map_err(|e| TpmError::Open {
        tcti: tcti.clone(),
        reason: format!("not a TCTI configuration ({e}); use device:/dev/tpmrm0, swtpm:host=H,port=P or tabrmd"),
    })?;
    let mut ctx = Context::new(conf).map_err(|e| TpmError::Open {
        tcti: tcti.clone(),
        reason: open_hint(&tcti, &e),
    })?;
    for (hierarchy, password) in [(ObjectHandle::Endorsement, endorsement_auth), (ObjectHandle::Owner, owner_auth)] {
        let auth = Auth::try_from(hierarchy_auth_bytes(password).to_vec()).map_err(|_| TpmError::Open {
            tcti: tcti.clone(),
            reason: "a hierarchy password is longer than 63 bytes".into(),
        })?;
        ctx.tr_set_auth(hierarchy, auth).during("Esys_TR_SetAuth")?;
    }
    Ok((ctx, tcti))
}

/// The public area of `key` as `TPM2B_PUBLIC` (size prefix included), as DPS receives it.
pub(super) fn tpm2b_public(ctx: &mut Context, key: KeyHandle) -> Result<Vec<u8>, TpmError> {
    let public = ctx.read_public(key).during("TPM2_ReadPublic")?.0;
    let body = public
        .marshall()
        .map_err(|e| TpmError::Unexpected(format!("cannot marshal a public area: {e}")))?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Turns a failure to open the TCTI into a sentence that names the likely cause and the fix.
fn open_hint(tcti: &str, e: &tss_esapi::Error) -> String {
    let base = super::error::describe(e);
    if let Some(path) = tcti.strip_prefix("device:") {
        let p = std::path::Path::new(path);
        if !p.exists() {
            return format!("{base}; {path} does not exist: this machine has no TPM, or its kernel has no TPM resource manager (tpmrm)");
        }
        let c = std::ffi::CString::new(path).unwrap_or_default();
        // SAFETY: access(2) on a valid C string.
        if unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
            return format!("{base}; permission denied on {path}: run the daemon as a member of the group that owns it (usually `tss`: usermod -aG tss <service user>)");
        }
    } else if tcti.starts_with("swtpm") || tcti.starts_with("mssim") {
        return format!("{base}; is the TPM simulator running and listening at that address?");
    } else if tcti.starts_with("tabrmd") {
        return format!("{base}; is tpm2-abrmd running?");
    }
    base
}

/// Flushes transient objects and sessions left on the TPM by a process that died (a TPM without
/// a resource manager keeps them, and has only about three object and a few session slots).
///
/// The handle ranges queried are TPM_HT_TRANSIENT, TPM_HT_LOADED_SESSION and
/// TPM_HT_SAVED_SESSION. A session query lists HMAC sessions (0x02…) and policy sessions
/// (0x03…) alike, whichever range was asked for, so both types are flushed from both lists.
fn flush_leftovers(ctx: &mut Context) -> Result<(), TpmError> {
    const TRANSIENT: u32 = 0x8000_0000;
    const LOADED_SESSION: u32 = 0x0200_0000;
    const SAVED_SESSION: u32 = 0x0300_0000;
    let mut flushed = 0;
    for first in [TRANSIENT, LOADED_SESSION, SAVED_SESSION] {
        let (data, _) = ctx
            .get_capability(CapabilityType::Handles, first, 64)
            .during("TPM2_GetCapability(handles)")?;
        let CapabilityData::Handles(list) = data else { continue };
        for handle in list.iter() {
            let raw = u32::from(*handle);
            let kind = raw >> 24;
            let wanted = if first == TRANSIENT { kind == TRANSIENT >> 24 } else { kind == 0x02 || kind == 0x03 };
            if !wanted {
                continue;
            }
            let flushed_one = TpmHandle::try_from(raw)
                .and_then(|h| ctx.tr_from_tpm_public(h))
                .and_then(|object| ctx.flush_context(object));
            match flushed_one {
                Ok(()) => flushed += 1,
                Err(e) => log::warn!("could not flush leftover handle {raw:#010x}: {}", super::error::describe(&e)),
            }
        }
    }
    if flushed > 0 {
        log::info!("flushed {flushed} transient object(s)/session(s) left on the TPM");
    }
    Ok(())
}
