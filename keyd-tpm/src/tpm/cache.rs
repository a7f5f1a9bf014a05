//! Loaded key objects. A TPM without a resource manager has about three object slots, and a
//! persistent key (SRK, auth key) needs one while in use, so at most `CAPACITY` key objects stay
//! loaded: the least recently used is flushed to make room. Commands that need slots of their own
//! (create, import, the auth-key swap, sequences) call `make_room` first.

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::UnMarshall;
use tss_esapi::Context;

use super::device::Device;
use super::error::{CommandError, TpmError};
use super::keys::KeyObject;

const CAPACITY: usize = 2;

/// Loaded objects, least recently used first, keyed by a hash of their wrapped private area.
#[derive(Default)]
pub struct LoadedObjects {
    entries: Vec<([u8; 32], KeyHandle)>,
}

impl Device {
    /// Runs `op` with `key` loaded. If a cached handle fails (e.g. the TPM restarted and lost
    /// its transient objects), the object is loaded again and `op` retried once.
    pub(super) fn with_loaded<T>(
        &mut self,
        key: &KeyObject,
        op: impl Fn(&mut Context, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let id = openssl::sha::sha256(&key.private);
        if let Some(i) = self.loaded.entries.iter().position(|(k, _)| *k == id) {
            let entry = self.loaded.entries.remove(i);
            self.loaded.entries.push(entry);
            match op(&mut self.ctx, entry.1) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    log::debug!("cached key object failed ({e}); loading it again");
                    self.loaded.entries.pop();
                    let _ = self.ctx.flush_context(entry.1.into());
                }
            }
        }
        let handle = self.load_object(key)?;
        self.loaded.entries.push((id, handle));
        op(&mut self.ctx, handle)
    }

    fn load_object(&mut self, key: &KeyObject) -> Result<KeyHandle, TpmError> {
        while self.loaded.entries.len() >= CAPACITY {
            self.flush_oldest();
        }
        let public = Public::unmarshall(&key.public)
            .map_err(|e| TpmError::InvalidKey(format!("stored public area does not parse: {e}")))?;
        let private = Private::try_from(key.private.clone())
            .map_err(|e| TpmError::InvalidKey(format!("stored private area does not parse: {e}")))?;
        let srk = self.srk;
        let attempt = |ctx: &mut Context| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| c.load(srk, private.clone(), public.clone()))
        };
        match attempt(&mut self.ctx) {
            Ok(h) => Ok(h),
            Err(e) => {
                let error = CommandError::esapi("TPM2_Load", e);
                if error.kind != Some(Tss2ResponseCodeKind::ObjectMemory) {
                    return Err(load_error(error));
                }
                // Someone else holds slots (no resource manager): free ours and try once more.
                self.make_room()?;
                attempt(&mut self.ctx).map_err(|e| load_error(CommandError::esapi("TPM2_Load", e)))
            }
        }
    }

    fn flush_oldest(&mut self) {
        if !self.loaded.entries.is_empty() {
            let (_, handle) = self.loaded.entries.remove(0);
            if let Err(e) = self.ctx.flush_context(handle.into()) {
                log::debug!("flushing a cached key object: {}", super::error::describe(&e));
            }
        }
    }

    /// Flushes every cached key object.
    pub(super) fn make_room(&mut self) -> Result<(), TpmError> {
        while !self.loaded.entries.is_empty() {
            self.flush_oldest();
        }
        self.bus.make_room();
        Ok(())
    }
}

/// A key file that the TPM refuses to load was made by another TPM or SRK, or was altered.
fn load_error(error: CommandError) -> TpmError {
    if refuses_blob(&error) {
        TpmError::InvalidKey(format!("the TPM cannot load this key object ({error}); it was made for another TPM or SRK, or it was altered"))
    } else {
        TpmError::Command(error)
    }
}

/// Whether a failed TPM2_Load refused the blob itself (not made under this SRK, or altered),
/// rather than failing for want of memory or a connection.
pub(super) fn refuses_blob(error: &CommandError) -> bool {
    use Tss2ResponseCodeKind as K;
    matches!(
        error.kind,
        Some(K::Integrity | K::Size | K::Value | K::Attributes | K::Type | K::Failure | K::Binding | K::Key)
    )
}
