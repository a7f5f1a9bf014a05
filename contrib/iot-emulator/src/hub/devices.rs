//! Device identities: `GET /devices` (owner), `GET/PUT/DELETE /devices/{id}`. DPS creates TPM
//! devices on assignment; the owner may also create plain SAS devices, and disable or enable any
//! device (`"status":"disabled"`), after which its tokens get 401. PUT on an existing device needs
//! `If-Match` (`*` or its etag), as IoT Hub does.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Principal;
use crate::app::App;
use crate::error::{ApiError, Resource};
use crate::http::{etag_matches, Reply, Req};
use crate::model::{Device, DeviceStatus, SymmetricKey, Twin};

/// A device as IoT Hub returns it; keys only for the owner.
pub fn view(d: &Device, with_keys: bool) -> Value {
    let keys = if with_keys {
        json!(d.keys)
    } else {
        json!({"primaryKey": null, "secondaryKey": null})
    };
    json!({
        "deviceId": d.device_id,
        "generationId": d.generation_id,
        "etag": d.etag,
        "status": d.status,
        "statusReason": null,
        "connectionState": "Disconnected",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": keys,
            "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
            "type": "sas",
        },
        "capabilities": {"iotEdge": d.iot_edge},
    })
}

pub fn list(app: &App, hub: &str, req: &Req, p: &Principal) -> Result<Reply, ApiError> {
    p.require_owner()?;
    if req.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    let devices = app.store.read(|s| {
        s.hubs
            .get(hub)
            .map(|d| d.values().map(|x| view(x, true)).collect::<Vec<_>>())
            .unwrap_or_default()
    });
    Ok(Reply::ok(json!(devices)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceBody {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    status: Option<DeviceStatus>,
    #[serde(default)]
    authentication: Option<AuthBody>,
    #[serde(default)]
    capabilities: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthBody {
    #[serde(default)]
    symmetric_key: Option<SymmetricKey>,
}

pub async fn route(
    app: &Arc<App>,
    hub: &str,
    req: &Req,
    p: &Principal,
    id: &str,
) -> Result<Reply, ApiError> {
    let not_found = || ApiError::NotFound {
        what: Resource::Device,
        id: id.to_owned(),
    };
    match req.method {
        Method::GET => {
            p.require(id, None)?;
            let owner = *p == Principal::Owner;
            app.store
                .read(|s| s.device(hub, id).map(|d| view(d, owner)))
                .map(Reply::ok)
                .ok_or_else(not_found)
        }
        Method::PUT => {
            p.require_owner()?;
            let body: DeviceBody = req.json()?;
            if body.device_id.as_deref().is_some_and(|d| d != id) {
                return Err(ApiError::BadRequest(
                    "deviceId in the body differs from the path".into(),
                ));
            }
            let (hub, id, if_match) = (hub.to_owned(), id.to_owned(), req.if_match());
            let v = app
                .store
                .update(move |s| put(s, &hub, &id, if_match, body))
                .await?;
            Ok(Reply::ok(v))
        }
        Method::DELETE => {
            p.require_owner()?;
            let (hub, id, if_match) = (hub.to_owned(), id.to_owned(), req.if_match());
            app.store
                .update(move |s| {
                    let d = s.device(&hub, &id).ok_or(ApiError::NotFound {
                        what: Resource::Device,
                        id: id.clone(),
                    })?;
                    let key = d.device_id.clone();
                    if let Some(given) = if_match.filter(|g| !etag_matches(g, &d.etag)) {
                        return Err(ApiError::PreconditionFailed {
                            what: Resource::Device,
                            id,
                            given,
                        });
                    }
                    s.hubs.entry(hub).or_default().remove(&key);
                    Ok(())
                })
                .await?;
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        ref m => Err(ApiError::MethodNotAllowed(m.to_string())),
    }
}

fn put(
    s: &mut crate::state::State,
    hub: &str,
    id: &str,
    if_match: Option<String>,
    body: DeviceBody,
) -> Result<Value, ApiError> {
    let keys = body.authentication.and_then(|a| a.symmetric_key);
    let iot_edge = body
        .capabilities
        .as_ref()
        .and_then(|c| c.get("iotEdge"))
        .and_then(Value::as_bool);
    let device = match (s.device_mut(hub, id), if_match) {
        (Some(_), None) => {
            return Err(ApiError::Conflict {
                what: Resource::Device,
                id: id.to_owned(),
            })
        }
        (None, Some(_)) => {
            return Err(ApiError::NotFound {
                what: Resource::Device,
                id: id.to_owned(),
            })
        }
        (Some(d), Some(given)) => {
            if !etag_matches(&given, &d.etag) {
                return Err(ApiError::PreconditionFailed {
                    what: Resource::Device,
                    id: id.to_owned(),
                    given,
                });
            }
            if let Some(k) = keys {
                d.keys = fill_keys(k)?;
            }
            d
        }
        (None, None) => {
            let d = Device {
                device_id: id.to_owned(),
                generation_id: crate::ids::generation_id(),
                etag: String::new(),
                status: DeviceStatus::Enabled,
                keys: fill_keys(keys.unwrap_or_default())?,
                iot_edge: false,
                registration_id: None,
                twin: Twin::default(),
                modules: Default::default(),
            };
            let devices = s.hubs.entry(hub.to_owned()).or_default();
            devices.insert(id.to_owned(), d);
            devices
                .get_mut(id)
                .ok_or_else(|| ApiError::Internal("inserted device vanished".into()))?
        }
    };
    if let Some(status) = body.status {
        device.status = status;
    }
    if let Some(edge) = iot_edge {
        device.iot_edge = edge;
    }
    device.ensure_edge_modules();
    device.etag = crate::ids::etag();
    Ok(view(device, true))
}

/// Keys as given (validated as base64 of 16..=64 bytes), missing ones generated.
pub fn fill_keys(k: SymmetricKey) -> Result<SymmetricKey, ApiError> {
    let check = |field: &str, v: Option<String>| -> Result<String, ApiError> {
        match v {
            None => Ok(crate::ids::symmetric_key()),
            Some(v) => {
                let n = data_encoding::BASE64
                    .decode(v.as_bytes())
                    .map(|b| b.len())
                    .unwrap_or(0);
                if (16..=64).contains(&n) {
                    Ok(v)
                } else {
                    Err(ApiError::BadRequest(format!(
                        "{field} must be base64 of 16 to 64 bytes"
                    )))
                }
            }
        }
    };
    Ok(SymmetricKey {
        primary_key: Some(check(
            "authentication.symmetricKey.primaryKey",
            k.primary_key,
        )?),
        secondary_key: Some(check(
            "authentication.symmetricKey.secondaryKey",
            k.secondary_key,
        )?),
    })
}
