//! Keys that upstream's file backend left in the homedir (`keys/<stem>.key`: raw bytes for a
//! symmetric key, a PKCS#8 PEM for a key pair) are taken into the TPM the first time they are
//! used, so `aziot_identityd_master_id` keeps deriving the same module keys and outstanding
//! upstream handles stay valid (`handle-validation-key` migrates like any key).
//!
//! Order, so that no crash loses the key: read the plaintext, make the TPM objects, prove them
//! against the plaintext, write our record (fsynced), and only then remove the plaintext. If a
//! crash leaves both files, the next load proves the record against the plaintext again and
//! removes it if they match; if they differ, the plaintext is kept and a warning logged.

use crate::tpm::TpmHandle;

use super::error::KeydError;
use super::files::KeysDir;
use super::material::{prove, take_into_tpm, Material};
use super::record::StoredKey;

/// Takes upstream's plaintext key `id` into the TPM, if there is one.
pub async fn migrate(
    tpm: &TpmHandle,
    dir: &KeysDir,
    id: &str,
) -> Result<Option<StoredKey>, KeydError> {
    let plaintext = dir.upstream_path(id);
    let Some(bytes) = KeysDir::read(&plaintext)? else {
        return Ok(None);
    };
    let material = Material::from_file_bytes(&bytes).map_err(|reason| KeydError::Corrupt {
        path: plaintext.clone(),
        reason,
    })?;
    drop(bytes);
    let Some(stored) = take_into_tpm(tpm, &material, &plaintext).await? else {
        return Err(KeydError::NotProven {
            id: id.to_owned(),
            path: plaintext,
        });
    };
    drop(material);

    let record = dir.record_path(id);
    // No instance: handles upstream minted for this key must keep working.
    let encoded = stored.encode(id, None);
    let (id_owned, record_owned, plaintext_owned) =
        (id.to_owned(), record.clone(), plaintext.clone());
    let stored = dir
        .run(move |dir| {
            let stored = if dir.write_new(&record_owned, &encoded)? {
                stored
            } else {
                // Another request migrated it first; its record was proven just the same.
                let bytes = KeysDir::read(&record_owned)?.ok_or_else(|| KeydError::Corrupt {
                    path: record_owned.clone(),
                    reason: "vanished while migrating".into(),
                })?;
                StoredKey::decode(&bytes, &id_owned, &record_owned)?.0
            };
            dir.remove(&plaintext_owned)?;
            Ok(stored)
        })
        .await?;
    log::info!(
        "took upstream's plaintext key {id:?} ({}) into the TPM as {} and removed the plaintext file",
        plaintext.display(),
        record.display()
    );
    Ok(Some(stored))
}

/// After a crash between writing our record and removing upstream's plaintext: removes the
/// plaintext if it is the same key. Never fails the request that found it.
pub async fn finish_leftover(tpm: &TpmHandle, dir: &KeysDir, id: &str, stored: &StoredKey) {
    let plaintext = dir.upstream_path(id);
    let bytes = match KeysDir::read(&plaintext) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return,
        Err(e) => return log::warn!("{e}"),
    };
    let same = match Material::from_file_bytes(&bytes) {
        Ok(material) => prove(tpm, stored, &material).await,
        Err(reason) => return log::warn!("leaving {}: {reason}", plaintext.display()),
    };
    match same {
        Ok(true) => match dir.run(move |dir| dir.remove(&plaintext)).await {
            Ok(_) => log::info!("removed upstream's plaintext copy of key {id:?}, already in the TPM"),
            Err(e) => log::warn!("{e}"),
        },
        Ok(false) => log::warn!(
            "key {id:?} is in the TPM and upstream's plaintext {} holds a different key; using the TPM's and leaving the file",
            plaintext.display()
        ),
        Err(e) => log::warn!("cannot compare key {id:?} with {}: {e}", plaintext.display()),
    }
}
