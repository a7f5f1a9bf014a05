//! `/key/{keyId}`. `GET` → `{"keyHandle"}` for an existing symmetric key (400 if there is
//! none). `POST` is the move route, which upstream has for key pairs only: 400.

use aziot_http::{HttpError, Request, Response, StatusCode};
use aziot_key_common_http::{load, move_key_pair};

use super::keys::{check_id, Keys};

pub async fn get(keys: &Keys, req: &Request, id: &str) -> Result<Response, HttpError> {
    keys.authorize(req.uid, id)?;
    check_id("id", id)?;
    keys.symmetric(id).await?;
    let handle = keys.handles.mint_key(id, keys.instance(id).await?).await?;
    Ok(Response::json(StatusCode::OK, &load::Response { handle }))
}

pub async fn post(req: &Request, id: &str) -> Result<Response, HttpError> {
    let body: move_key_pair::Request = req.json()?;
    if body.from == id {
        return Err(HttpError::bad_request(
            "source and destination for move are identical",
        ));
    }
    Err(HttpError::bad_request("invalid type \"key\""))
}
