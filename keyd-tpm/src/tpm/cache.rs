//! Loaded key objects. A TPM without a resource manager has about three object slots, and a
//! persistent key (SRK, auth key) needs one while in use, so at most `CAPACITY` key objects stay
//! loaded, counting the one the session channel may hold: the least recently used is flushed to
//! make room. Commands that need slots of their own (import, the auth-key swap, sequences) call
//! `make_room` first; a create flushes only enough for its one new object.
//!
//! An object is context-saved the first time it is flushed, and loaded again from that context
//! (`TPM2_ContextLoad`, which checks the context's integrity) rather than from its wrapped
//! private area (`TPM2_Load`, which unwraps it under the SRK): on swtpm that is a third of the
//! cost, so a caller rotating over more keys than the TPM has slots pays much less per key. An
//! object context can be loaded any number of times; the TPM refuses it after a TPM reset or a
//! hierarchy change, and then the object is loaded from its private area as before. The saved
//! contexts stay in this process's memory (they are encrypted and integrity-protected by the
//! TPM, like the wrapped private areas on disk), `SAVED_CAPACITY` of them at most.

use std::collections::{HashMap, VecDeque};

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::UnMarshall;
use tss_esapi::utils::TpmsContext;
use tss_esapi::Context;

use super::device::Device;
use super::error::{CommandError, TpmError};
use super::keys::KeyObject;

const CAPACITY: usize = 2;
/// Saved contexts kept: a few hundred bytes each (about 1.5 KiB for an RSA-2048 key pair).
const SAVED_CAPACITY: usize = 1024;

/// Loaded objects, least recently used first, keyed by a hash of their wrapped private area,
/// and the saved contexts of objects flushed before.
#[derive(Default)]
pub struct LoadedObjects {
    entries: Vec<([u8; 32], KeyHandle)>,
    saved: SavedContexts,
}

/// Saved object contexts by the same key, the oldest dropped first beyond `SAVED_CAPACITY`.
#[derive(Default)]
struct SavedContexts {
    contexts: HashMap<[u8; 32], TpmsContext>,
    order: VecDeque<[u8; 32]>,
}

impl SavedContexts {
    fn get(&self, id: &[u8; 32]) -> Option<TpmsContext> {
        self.contexts.get(id).cloned()
    }

    fn contains(&self, id: &[u8; 32]) -> bool {
        self.contexts.contains_key(id)
    }

    fn insert(&mut self, id: [u8; 32], context: TpmsContext) {
        if self.contexts.insert(id, context).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > SAVED_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.contexts.remove(&old);
            }
        }
    }

    fn remove(&mut self, id: &[u8; 32]) {
        if self.contexts.remove(id).is_some() {
            self.order.retain(|k| k != id);
        }
    }
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
        let handle = self.load_object(&id, key)?;
        self.loaded.entries.push((id, handle));
        op(&mut self.ctx, handle)
    }

    fn load_object(&mut self, id: &[u8; 32], key: &KeyObject) -> Result<KeyHandle, TpmError> {
        self.make_room_for_one();
        if let Some(handle) = self.load_saved_context(id) {
            return Ok(handle);
        }
        let public = Public::unmarshall(&key.public)
            .map_err(|e| TpmError::InvalidKey(format!("stored public area does not parse: {e}")))?;
        let private = Private::try_from(key.private.clone())
            .map_err(|e| TpmError::InvalidKey(format!("stored private area does not parse: {e}")))?;
        let srk = self.srk;
        self.with_room(|ctx| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| c.load(srk, private.clone(), public.clone()))
        })?
        .map_err(|e| load_error(CommandError::esapi("TPM2_Load", e)))
    }

    /// Runs the TPM command `op`; if the TPM has no object slot left (someone else holds slots:
    /// no resource manager), frees ours and runs it once more.
    pub(super) fn with_room<T>(
        &mut self,
        mut op: impl FnMut(&mut Context) -> tss_esapi::Result<T>,
    ) -> Result<tss_esapi::Result<T>, TpmError> {
        let result = op(&mut self.ctx);
        if !matches!(&result, Err(e) if is_out_of_object_memory(e)) {
            return Ok(result);
        }
        self.make_room()?;
        Ok(op(&mut self.ctx))
    }

    /// The object saved as `id`, loaded from its context; `None` if there is no context or the
    /// TPM no longer takes it (it is then forgotten).
    fn load_saved_context(&mut self, id: &[u8; 32]) -> Option<KeyHandle> {
        let context = self.loaded.saved.get(id)?;
        match self.with_room(|ctx| ctx.context_load(context.clone())).ok()? {
            Ok(handle) => Some(KeyHandle::from(handle)),
            Err(e) => {
                log::debug!("a saved key object context no longer loads ({}); loading the object itself", super::error::describe(&e));
                self.loaded.saved.remove(id);
                None
            }
        }
    }

    /// Flushes the least recently used object, saving its context first if it has none saved.
    fn flush_oldest(&mut self) {
        if !self.loaded.entries.is_empty() {
            let (id, handle) = self.loaded.entries.remove(0);
            if !self.loaded.saved.contains(&id) {
                match self.ctx.context_save(ObjectHandle::from(handle)) {
                    Ok(context) => self.loaded.saved.insert(id, context),
                    Err(e) => log::debug!("saving a key object's context: {}", super::error::describe(&e)),
                }
            }
            if let Err(e) = self.ctx.flush_context(handle.into()) {
                log::debug!("flushing a cached key object: {}", super::error::describe(&e));
            }
        }
    }

    /// Flushes cached key objects until one more object fits beside them and the session
    /// channel's (an object to load, a create's new object), keeping the most recently used.
    pub(super) fn make_room_for_one(&mut self) {
        while !self.loaded.entries.is_empty() && self.loaded.entries.len() + self.bus.objects_loaded() >= CAPACITY {
            self.flush_oldest();
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

/// Whether a command failed because the TPM has no object slot left.
pub(super) fn is_out_of_object_memory(error: &tss_esapi::Error) -> bool {
    matches!(error, tss_esapi::Error::Tss2Error(rc) if rc.kind() == Some(Tss2ResponseCodeKind::ObjectMemory))
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
