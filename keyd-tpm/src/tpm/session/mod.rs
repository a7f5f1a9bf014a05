//! Parameter encryption on the TPM bus. A discrete TPM talks to the CPU over SPI, LPC or I²C,
//! and whoever reads that bus reads every command in clear unless its parameters are encrypted.
//! So every command whose first command parameter is secret (key bytes into TPM2_Create, the
//! inner wrapper key into TPM2_Import) or whose first response parameter is secret
//! (TPM2_Unseal, TPM2_ActivateCredential, TPM2_GetRandom for a new AES key, TPM2_HMAC for a
//! derived key or a handle's MAC) runs with a salted HMAC session whose decrypt or encrypt
//! attribute has that parameter encrypted with AES-128-CFB; and every command authorized by the
//! owner or endorsement hierarchy uses the same session, so a password only keys an HMAC and
//! never crosses the bus.
//!
//! The salt is encrypted to keyd-tpm's session key, an ECC P-256 decryption key under the SRK,
//! made once and kept SRK-wrapped in the tpmd homedir (`session-key`). The public area the salt
//! is encrypted to is the one in that file (TPM2_Load's input, whose name the TPM's answer must
//! match), never one the TPM reports, so something that answers in the TPM's place on the bus
//! cannot slip in a key of its own; and the TPM loads the blob only under the SRK that made it.
//! A blob that does not load stops the daemon with a message saying why, rather than making a
//! new key on the bus's word. Before the first SRK exists (a fresh TPM) the commands that create
//! and persist the EK and SRK use a session salted to an ephemeral ECC primary in the null
//! hierarchy, whose public area can only come from the TPM's answer: a first start is trusted as
//! DPS trusts the first reading of the EK.
//!
//! The commands run on keyd-tpm's own session channel (`channel`): a second connection on which
//! we compute the session HMACs and the CFB ourselves, because ESYS 3.2's cost a millisecond per
//! hash on OpenSSL 3. With a TCTI that admits one connection only, ESYS's own sessions on the main
//! context do the same job more slowly (`esys`). One session serves the owner for its lifetime
//! (continueSession); `is_loaded` tells the owner when the TPM has lost it (TPM reset, simulator
//! restart), and the owner then reopens the device, which starts a new one.

mod channel;
mod crypto;
mod esys;
mod wire;

use std::path::Path;

use tss_esapi::handles::{KeyHandle, SessionHandle};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

pub use channel::{object_name, Answer, Channel};

use super::error::{CommandError, TpmError};
use super::store::{AuthKeyStore, Slot, WrappedKey};

/// How keyd-tpm protects what crosses the TPM bus (`TpmSettings::parameter_encryption`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParameterEncryption {
    /// keyd-tpm's session channel; ESYS's sessions if the TCTI admits no second connection.
    #[default]
    Channel,
    /// ESYS's own salted sessions on the main context.
    Esys,
    /// Password sessions and parameters in clear, as upstream. Only to measure what the others
    /// cost and to show what the bus carries without them.
    Off,
}

/// What an ESYS-session command needs from the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Authorization only.
    Auth,
    /// The first command parameter is secret.
    Decrypt,
    /// The first response parameter is secret.
    Encrypt,
}

/// The owner's bus protection.
pub struct BusSession {
    mode: Mode,
}

enum Mode {
    Off,
    Esys(Option<AuthSession>),
    Channel(Box<Channel>),
}

impl BusSession {
    /// What `setting` asks for on `tcti`, without a session yet.
    pub fn open(setting: ParameterEncryption, tcti: &str) -> Self {
        let mode = match setting {
            ParameterEncryption::Off => Mode::Off,
            ParameterEncryption::Esys => Mode::Esys(None),
            ParameterEncryption::Channel => match Channel::open(tcti) {
                Ok(channel) => Mode::Channel(Box::new(channel)),
                Err(e) => {
                    log::warn!("no second connection to the TPM for the session channel ({e}); using ESYS's slower sessions");
                    Mode::Esys(None)
                }
            },
        };
        if matches!(mode, Mode::Off) {
            log::warn!("parameter encryption is off: secrets and hierarchy passwords cross the TPM bus in clear");
        }
        Self { mode }
    }

    /// A session for creating the EK and SRK on a fresh TPM (see the module doc).
    pub fn bootstrap(&mut self, ctx: &mut Context) -> Result<(), TpmError> {
        match &mut self.mode {
            Mode::Off => Ok(()),
            Mode::Esys(session) => {
                *session = Some(esys::bootstrap(ctx)?);
                Ok(())
            }
            Mode::Channel(ch) => {
                let template = esys::salt_key_template()
                    .and_then(|t| t.marshall())
                    .map_err(|e| TpmError::Unexpected(format!("session salt key template: {e}")))?;
                ch.start_ephemeral(&template)
            }
        }
    }

    /// The session proper, once the EK and SRK exist (both TPM2B_PUBLIC): salted to the stored
    /// session key, made and stored first if there is none.
    pub fn start(&mut self, ctx: &mut Context, srk: KeyHandle, ek_public: &[u8], srk_public: &[u8], store: &AuthKeyStore) -> Result<(), TpmError> {
        if matches!(self.mode, Mode::Off) {
            return Ok(());
        }
        let key = match store.read(Slot::SessionKey)? {
            Some(key) => key,
            None => {
                let key = esys::create_session_key(ctx, srk)?;
                store.write(Slot::SessionKey, &key)?;
                log::info!("made the session key that salts encrypted TPM sessions ({})", store.path(Slot::SessionKey).display());
                key
            }
        };
        let path = store.path(Slot::SessionKey);
        match &mut self.mode {
            Mode::Off => Ok(()),
            Mode::Esys(session) => {
                if let Some(old) = session.take() {
                    esys::flush(ctx, SessionHandle::from(old).into(), "the bootstrap session");
                }
                let loaded = ctx
                    .execute_with_session(Some(AuthSession::Password), |c| c.load(srk, key.private.clone(), key.public.clone()))
                    .map_err(|e| session_key_error(CommandError::esapi("TPM2_Load (session key)", e), &path))?;
                let started = esys::start_salted(ctx, loaded);
                esys::flush(ctx, loaded.into(), "the session key");
                *session = Some(started?);
                Ok(())
            }
            Mode::Channel(ch) => {
                let tpmt = |tpm2b: &[u8]| tpm2b.get(2..).map(<[u8]>::to_vec).unwrap_or_default();
                ch.set_primaries(&tpmt(ek_public), &tpmt(srk_public));
                salt_channel(ch, &key, &path)
            }
        }
    }

    /// The session channel, when commands go through it.
    pub fn channel(&mut self) -> Option<&mut Channel> {
        match &mut self.mode {
            Mode::Channel(ch) => Some(ch),
            _ => None,
        }
    }

    /// Whether secrets are protected at all.
    pub fn enabled(&self) -> bool {
        !matches!(self.mode, Mode::Off)
    }

    /// For a command on the main context: its authorization session (a password session when
    /// encryption is off), attributes set for `usage`.
    pub fn auth(&self, ctx: &mut Context, usage: Use) -> Result<AuthSession, TpmError> {
        match self.mode {
            Mode::Off => Ok(AuthSession::Password),
            Mode::Esys(Some(session)) => {
                esys::set_attributes(ctx, session, usage)?;
                Ok(session)
            }
            Mode::Esys(None) | Mode::Channel(_) => Err(TpmError::Unexpected("no ESYS session for this command".into())),
        }
    }

    /// For a command on the main context without authorization whose response is secret
    /// (TPM2_GetRandom): the session, or none when encryption is off.
    pub fn encrypt_only(&self, ctx: &mut Context) -> Result<Option<AuthSession>, TpmError> {
        match self.mode {
            Mode::Off => Ok(None),
            _ => self.auth(ctx, Use::Encrypt).map(Some),
        }
    }

    /// One round trip through the session. False if the TPM does not answer or no longer
    /// knows the session (it was reset or restarted).
    pub fn is_loaded(&mut self, ctx: &mut Context) -> bool {
        match &mut self.mode {
            Mode::Off => esys::ping(ctx, None),
            Mode::Esys(session) => esys::ping(ctx, *session),
            Mode::Channel(ch) => matches!(ch.get_random(1), Ok(Ok(_))),
        }
    }

    /// How many TPM object slots the channel holds (0 or 1).
    pub fn objects_loaded(&self) -> usize {
        match &self.mode {
            Mode::Channel(ch) => ch.objects_loaded(),
            _ => 0,
        }
    }

    /// Frees the TPM object slot the channel holds.
    pub fn make_room(&mut self) {
        if let Mode::Channel(ch) = &mut self.mode {
            ch.make_room();
        }
    }
}

/// Loads the session key on the channel and salts the session to it.
fn salt_channel(ch: &mut Channel, key: &WrappedKey, path: &Path) -> Result<(), TpmError> {
    let public = key
        .public
        .marshall()
        .map_err(|e| TpmError::Unexpected(format!("cannot marshal the session key: {e}")))?;
    let (handle, _) = ch
        .load(aziot_tpm_common::SRK_HANDLE, &public, key.private.value())?
        .map_err(|e| session_key_error(CommandError::esapi("TPM2_Load (session key)", e), path))?;
    let started = ch.start_salted(handle, &key.public);
    let _ = ch.flush(handle);
    started
}

fn session_key_error(error: CommandError, path: &Path) -> TpmError {
    if super::cache::refuses_blob(&error) {
        TpmError::SessionKey { path: path.to_owned(), reason: error.detail }
    } else {
        TpmError::Command(error)
    }
}

/// Tests a hierarchy password without changing anything, for a tool that opens the TPM itself
/// (`aziot-tpm check`): TPM2_PolicySecret in a trial session, authorized through a salted
/// session of its own connection on `tcti`, salted to keyd-tpm's session key if `state_dir`
/// holds one, else to an ephemeral key. The inner result is the TPM's answer (BAD_AUTH for a
/// wrong password).
pub fn test_hierarchy_password(
    tcti: &str,
    state_dir: &Path,
    owner: bool,
    password: &str,
) -> Result<Result<(), tss_esapi::Error>, TpmError> {
    let mut ch = Channel::open(&super::device::normalize_tcti(tcti))?;
    let stored = state_dir.join(Slot::SessionKey.file_name());
    let key = if stored.exists() { AuthKeyStore::open(state_dir)?.read(Slot::SessionKey)? } else { None };
    match key {
        Some(key) => salt_channel(&mut ch, &key, &stored)?,
        None => {
            let template = esys::salt_key_template()
                .and_then(|t| t.marshall())
                .map_err(|e| TpmError::Unexpected(format!("session salt key template: {e}")))?;
            ch.start_ephemeral(&template)?;
        }
    }
    let hierarchy = if owner { wire::RH_OWNER } else { wire::RH_ENDORSEMENT };
    let result = ch.policy_secret_trial(hierarchy, &super::hierarchy_auth_bytes(password));
    ch.close();
    result
}
