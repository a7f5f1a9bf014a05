//! `/key`. `POST {"keyId", "keyBytes"?, "usage"}` → `{"keyHandle"}`: without `keyBytes`,
//! generates the key in the TPM unless key `keyId` exists (then its handle is returned); with
//! `keyBytes`, makes TPM objects from them, replacing any key `keyId` (upstream's semantics).
//! `DELETE {"keyHandle"}` → 204.

use zeroize::Zeroizing;

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::{create_key_if_not_exists, delete};

use super::error::KeydError;
use super::handle::Target;
use super::keys::{check_id, check_not_preloaded, shown, Keys};
use super::material::{generate_symmetric, import_symmetric, Purposes};
use super::record::StoredKey;

pub async fn post(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: create_key_if_not_exists::Request = req.json()?;
    let id = body.id;
    keys.authorize(req.uid, &id)?;
    check_id("keyId", &id)?;
    let purposes = Purposes::from_usage(&body.usage);
    let (entry, minted) = match body.import_key_bytes {
        Some(bytes) => {
            check_not_preloaded(keys, "keyId", &id)?;
            let key =
                import_symmetric(&keys.tpm, Zeroizing::new(bytes.into_inner()), purposes).await?;
            (keys.store.put(&id, StoredKey::Key(key), None).await?, None)
        }
        None => {
            // A new key's handle is minted while the key is written.
            let (entry, minted) = keys
                .store
                .get_or_create_with(
                    &id,
                    || generate_symmetric(&keys.tpm, purposes),
                    |instance| keys.handles.mint_key(&id, instance),
                )
                .await?;
            if let StoredKey::KeyPair(_) = &entry.key {
                return Err(KeydError::invalid(
                    "keyId",
                    format!("{} is a key pair, not a symmetric key", shown(&id)),
                )
                .into());
            }
            (entry, minted)
        }
    };
    let handle = match minted {
        Some(handle) => handle,
        None => keys.handles.mint_key(&id, entry.instance).await?,
    };
    Ok(Response::json(
        StatusCode::OK,
        &create_key_if_not_exists::Response { handle },
    ))
}

pub async fn delete(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: delete::Request = req.json()?;
    let Target::Key(id) = keys.handles.verify(&body.key_handle.0).await? else {
        return Err(KeydError::invalid(
            "handle",
            "not a handle to a symmetric key; key pairs are deleted with DELETE /keypair",
        )
        .into());
    };
    check_id("handle", &id)?;
    check_not_preloaded(keys, "handle", &id)?;
    keys.store.remove(&id).await?;
    log::info!("deleted key {}", shown(&id));
    Ok(Response::no_content())
}
