//! `/keypair/{keyPairId}`. `GET` → `{"keyHandle"}` for an existing key pair (400 if there is
//! none). `POST {"from"}` → 204 moves key pair `from` to `keyPairId`, replacing what was there
//! (certd renews a certificate's key this way); the caller must be allowed both ids.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::{load, move_key_pair};

use super::keys::{check_id, check_not_preloaded, shown, Keys};
use super::record::StoredKey;

pub async fn get(keys: &Keys, req: &Request, id: &str) -> Result<Response, HttpError> {
    keys.authorize(req.uid, id)?;
    check_id("id", id)?;
    keys.key_pair(id).await?;
    let handle = keys.handles.mint_key_pair(id, keys.instance(id).await?).await?;
    Ok(Response::json(StatusCode::OK, &load::Response { handle }))
}

pub async fn post(keys: &Keys, req: &Request, to: &str) -> Result<Response, HttpError> {
    let body: move_key_pair::Request = req.json()?;
    let from = body.from;
    if from == to {
        return Err(HttpError::bad_request(
            "source and destination for move are identical",
        ));
    }
    keys.authorize(req.uid, &from)?;
    keys.authorize(req.uid, to)?;
    check_id("from", &from)?;
    check_id("id", to)?;
    check_not_preloaded(keys, "from", &from)?;
    check_not_preloaded(keys, "id", to)?;
    let object = keys.key_pair(&from).await?;
    // The key keeps its instance, so handles to what `to` held before are refused.
    let instance = keys.instance(&from).await?;
    keys.store.put(to, StoredKey::KeyPair(object), instance).await?;
    keys.store.remove(&from).await?;
    log::info!("moved key pair {} to {}", shown(&from), shown(to));
    Ok(Response::no_content())
}
