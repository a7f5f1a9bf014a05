//! `/keypair`. `POST {"keyId", "preferredAlgorithms"?}` → `{"keyHandle"}`: generates a key pair
//! in the TPM unless key pair `keyId` exists. `DELETE {"keyHandle"}` → 204.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::{create_key_pair_if_not_exists, delete};

use super::error::KeydError;
use super::handle::Target;
use super::keys::{check_id, check_not_preloaded, shown, Keys};
use super::material::generate_key_pair;
use super::preferred;
use super::record::StoredKey;

pub async fn post(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: create_key_pair_if_not_exists::Request = req.json()?;
    let id = body.id;
    keys.authorize(req.uid, &id)?;
    check_id("keyId", &id)?;
    let preferred = body.preferred_algorithms;
    // A new key pair's handle is minted while the key pair is written.
    let (entry, minted) = keys
        .store
        .get_or_create_with(
            &id,
            || async {
                let algorithm = preferred::choose(preferred.as_deref())?;
                generate_key_pair(&keys.tpm, algorithm).await
            },
            |instance| keys.handles.mint_key_pair(&id, instance),
        )
        .await?;
    if let StoredKey::Key(_) = &entry.key {
        return Err(KeydError::invalid(
            "keyId",
            format!("{} is a symmetric key, not a key pair", shown(&id)),
        )
        .into());
    }
    let handle = match minted {
        Some(handle) => handle,
        None => keys.handles.mint_key_pair(&id, entry.instance).await?,
    };
    Ok(Response::json(
        StatusCode::OK,
        &create_key_pair_if_not_exists::Response { handle },
    ))
}

pub async fn delete(keys: &Keys, req: &Request) -> Result<Response, HttpError> {
    let body: delete::Request = req.json()?;
    let Target::KeyPair(id) = keys.handles.verify(&body.key_handle.0).await? else {
        return Err(KeydError::invalid(
            "handle",
            "not a handle to a key pair; symmetric keys are deleted with DELETE /key",
        )
        .into());
    };
    check_id("handle", &id)?;
    check_not_preloaded(keys, "handle", &id)?;
    keys.store.remove(&id).await?;
    log::info!("deleted key pair {}", shown(&id));
    Ok(Response::no_content())
}
