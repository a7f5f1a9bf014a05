//! The key store: key id → [`Entry`] (the key's TPM objects and its instance), on disk under
//! `<homedir>/keys` and cached in memory.
//!
//! A lookup tries, in upstream's order of precedence: the cache, `[preloaded_keys]`, our record
//! file, then a plaintext file upstream left (migrated on the spot). Nothing here holds a lock
//! across an await: the cache is a std `RwLock` around a map, and creation races are settled
//! by the file system (`write_new` links the record into place only if absent; the loser uses
//! the winner's key). A generation counter keeps a slow disk read from putting back a value
//! that a concurrent write replaced.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::tpm::TpmHandle;

use super::error::KeydError;
use super::files::KeysDir;
use super::migrate;
use super::preloaded::Preloaded;
use super::record::{new_instance, Instance, StoredKey};

/// A stored key and its instance (see `record`); `None` for keys from before instances, for
/// keys migrated from upstream's files and for preloaded keys.
#[derive(Debug)]
pub struct Entry {
    pub key: StoredKey,
    pub instance: Option<Instance>,
}

pub struct KeyStore {
    tpm: TpmHandle,
    dir: KeysDir,
    preloaded: Preloaded,
    cache: RwLock<Cache>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<Entry>>,
    /// Bumped by every write, so reads that started before it do not cache stale values.
    generation: u64,
}

impl KeyStore {
    pub fn new(tpm: TpmHandle, homedir: &Path, preloaded: Preloaded) -> Self {
        let dir = KeysDir::new(homedir);
        dir.remove_stale_temp_files();
        Self {
            tpm,
            dir,
            preloaded,
            cache: RwLock::new(Cache::default()),
        }
    }

    pub fn keys_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_preloaded(&self, id: &str) -> bool {
        self.preloaded.contains(id)
    }

    /// Key `id`, or `None` if there is no such key.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Entry>>, KeydError> {
        let generation = {
            let cache = self.read_cache();
            if let Some(key) = cache.keys.get(id) {
                return Ok(Some(key.clone()));
            }
            cache.generation
        };
        if let Some(key) = self.preloaded.load(&self.tpm, id).await? {
            return Ok(Some(self.cache_if_unchanged(id, Entry { key, instance: None }, generation)));
        }
        let record = self.dir.record_path(id);
        if let Some(bytes) = KeysDir::read(&record)? {
            let (key, instance) = StoredKey::decode(&bytes, id, &record)?;
            migrate::finish_leftover(&self.tpm, &self.dir, id, &key).await;
            return Ok(Some(self.cache_if_unchanged(id, Entry { key, instance }, generation)));
        }
        match migrate::migrate(&self.tpm, &self.dir, id).await? {
            Some(key) => Ok(Some(self.cache_set(id, Entry { key, instance: None }))),
            None => Ok(None),
        }
    }

    /// Key `id`; if there is none, the key `create` makes, stored with a new instance. Two
    /// concurrent creators both run `create`; the first to store wins and both get its key.
    pub async fn get_or_create<F, Fut>(&self, id: &str, create: F) -> Result<Arc<Entry>, KeydError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<StoredKey, KeydError>>,
    {
        let (entry, _) = self.get_or_create_with(id, create, |_| async { Ok(()) }).await?;
        Ok(entry)
    }

    /// As [`get_or_create`](Self::get_or_create), and `meanwhile` runs with the instance of a
    /// key just created while that key is written to disk (so a handle is minted in the TPM
    /// during the fsync, not after it). Its result comes back with the key when the key stored
    /// is that one; `None` when the key existed already or another creator stored first, and
    /// whatever `meanwhile` made is dropped.
    pub async fn get_or_create_with<F, Fut, M, MFut, T>(
        &self,
        id: &str,
        create: F,
        meanwhile: M,
    ) -> Result<(Arc<Entry>, Option<T>), KeydError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<StoredKey, KeydError>>,
        M: FnOnce(Option<Instance>) -> MFut,
        MFut: Future<Output = Result<T, KeydError>>,
    {
        if let Some(key) = self.get(id).await? {
            return Ok((key, None));
        }
        let key = create().await?;
        let instance = new_instance()?;
        let path = self.dir.record_path(id);
        let encoded = key.encode(id, Some(&instance));
        let write = {
            let path = path.clone();
            self.dir.run(move |dir| dir.write_new(&path, &encoded))
        };
        let (written, made) = tokio::join!(write, meanwhile(Some(instance)));
        if written? {
            return Ok((self.cache_set(id, Entry { key, instance: Some(instance) }), Some(made?)));
        }
        let bytes = KeysDir::read(&path)?.ok_or_else(|| KeydError::Corrupt {
            path: path.clone(),
            reason: "vanished while being created".into(),
        })?;
        let (key, instance) = StoredKey::decode(&bytes, id, &path)?;
        Ok((self.cache_set(id, Entry { key, instance }), None))
    }

    /// Stores `key` as `id`, replacing any key with that id (import, move target); a plaintext
    /// copy upstream left for `id` is replaced too. An import gives a new instance (`None`
    /// here); a move passes the moved key's, so its handles' checks follow the key.
    pub async fn put(&self, id: &str, key: StoredKey, instance: Option<Instance>) -> Result<Arc<Entry>, KeydError> {
        let instance = match instance {
            Some(instance) => instance,
            None => new_instance()?,
        };
        let (record, plaintext) = (self.dir.record_path(id), self.dir.upstream_path(id));
        let encoded = key.encode(id, Some(&instance));
        self.dir
            .run(move |dir| {
                dir.write_replace(&record, &encoded)?;
                dir.remove(&plaintext).map(drop)
            })
            .await?;
        Ok(self.cache_set(id, Entry { key, instance: Some(instance) }))
    }

    /// Deletes key `id` (our record and any plaintext upstream left); no error if absent.
    pub async fn remove(&self, id: &str) -> Result<(), KeydError> {
        let (record, plaintext) = (self.dir.record_path(id), self.dir.upstream_path(id));
        let result = self
            .dir
            .run(move |dir| {
                dir.remove(&record)?;
                dir.remove(&plaintext).map(drop)
            })
            .await;
        // Drop the cached key even if a removal failed half way: the next lookup reads the disk.
        let mut cache = self.write_cache();
        cache.generation += 1;
        cache.keys.remove(id);
        result
    }

    fn cache_set(&self, id: &str, key: Entry) -> Arc<Entry> {
        let key = Arc::new(key);
        let mut cache = self.write_cache();
        cache.generation += 1;
        cache.keys.insert(id.to_owned(), key.clone());
        key
    }

    fn cache_if_unchanged(&self, id: &str, key: Entry, generation: u64) -> Arc<Entry> {
        let key = Arc::new(key);
        let mut cache = self.write_cache();
        if cache.generation == generation {
            cache.keys.insert(id.to_owned(), key.clone());
        }
        key
    }

    // A panic while holding the lock cannot leave the map half-updated (single inserts and
    // removes), so a poisoned lock is still usable.
    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }
}
