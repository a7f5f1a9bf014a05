//! Module identities: `GET /devices/{d}/modules` and `PUT/GET/DELETE /devices/{d}/modules/{m}`,
//! with IoT Hub's rules: PUT without `If-Match` creates (409 if it exists), with `If-Match`
//! (`*` or the etag) updates (404 if missing, 412 on a stale etag); `moduleId` and
//! `generationId` are immutable; SAS modules get generated keys unless the caller supplies them,
//! and those keys then verify the module's own SAS tokens.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Principal;
use crate::app::App;
use crate::error::{ApiError, Resource};
use crate::http::{etag_matches, Reply, Req};
use crate::model::{Module, SymmetricKey};
use crate::state::State;

pub fn view(m: &Module) -> Value {
    let keys = if m.auth_type == "sas" {
        json!(m.keys)
    } else {
        json!({"primaryKey": null, "secondaryKey": null})
    };
    let mut v = json!({
        "moduleId": m.module_id,
        "deviceId": m.device_id,
        "generationId": m.generation_id,
        "etag": m.etag,
        "connectionState": "Disconnected",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": keys,
            "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
            "type": m.auth_type,
        },
    });
    if let Some(by) = &m.managed_by {
        v["managedBy"] = json!(by);
    }
    v
}

fn device_not_found(d: &str) -> ApiError {
    ApiError::NotFound {
        what: Resource::Device,
        id: d.to_owned(),
    }
}

fn module_not_found(m: &str) -> ApiError {
    ApiError::NotFound {
        what: Resource::Module,
        id: m.to_owned(),
    }
}

pub fn list(app: &App, hub: &str, req: &Req, p: &Principal, d: &str) -> Result<Reply, ApiError> {
    p.require(d, None)?;
    if req.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    let modules = app
        .store
        .read(|s| {
            s.device(hub, d)
                .map(|dev| dev.modules.values().map(view).collect::<Vec<_>>())
        })
        .ok_or_else(|| device_not_found(d))?;
    Ok(Reply::ok(json!(modules)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleBody {
    #[serde(default)]
    module_id: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    managed_by: Option<String>,
    #[serde(default)]
    generation_id: Option<String>,
    #[serde(default)]
    authentication: Option<AuthBody>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    symmetric_key: Option<SymmetricKey>,
}

pub async fn route(
    app: &Arc<App>,
    hub: &str,
    req: &Req,
    p: &Principal,
    d: &str,
    m: &str,
) -> Result<Reply, ApiError> {
    match req.method {
        Method::GET => {
            p.require(d, Some(m))?;
            app.store
                .read(|s| s.device(hub, d).map(|dev| dev.modules.get(m).map(view)))
                .ok_or_else(|| device_not_found(d))?
                .map(Reply::ok)
                .ok_or_else(|| module_not_found(m))
        }
        Method::PUT => {
            p.require(d, None)?;
            let body: ModuleBody = req.json()?;
            if body.module_id.as_deref().is_some_and(|x| x != m) {
                return Err(ApiError::BadRequest(
                    "moduleId in the body differs from the path; moduleId is immutable".into(),
                ));
            }
            if body
                .device_id
                .as_deref()
                .is_some_and(|x| !x.eq_ignore_ascii_case(d))
            {
                return Err(ApiError::BadRequest(
                    "deviceId in the body differs from the path".into(),
                ));
            }
            let (hub, d, m, if_match) =
                (hub.to_owned(), d.to_owned(), m.to_owned(), req.if_match());
            let v = app
                .store
                .update(move |s| put(s, &hub, &d, &m, if_match, body))
                .await?;
            Ok(Reply::ok(v))
        }
        Method::DELETE => {
            p.require(d, None)?;
            let (hub, d, m, if_match) =
                (hub.to_owned(), d.to_owned(), m.to_owned(), req.if_match());
            app.store
                .update(move |s| {
                    let dev = s.device_mut(&hub, &d).ok_or_else(|| device_not_found(&d))?;
                    let module = dev.modules.get(&m).ok_or_else(|| module_not_found(&m))?;
                    if let Some(given) = if_match.filter(|g| !etag_matches(g, &module.etag)) {
                        return Err(ApiError::PreconditionFailed {
                            what: Resource::Module,
                            id: m,
                            given,
                        });
                    }
                    dev.modules.remove(&m);
                    Ok(())
                })
                .await?;
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        ref other => Err(ApiError::MethodNotAllowed(other.to_string())),
    }
}

fn put(
    s: &mut State,
    hub: &str,
    d: &str,
    m: &str,
    if_match: Option<String>,
    body: ModuleBody,
) -> Result<Value, ApiError> {
    let dev = s.device_mut(hub, d).ok_or_else(|| device_not_found(d))?;
    let device_id = dev.device_id.clone();
    let auth_type = body.authentication.as_ref().and_then(|a| a.kind.clone());
    let keys = body.authentication.and_then(|a| a.symmetric_key);
    let module = match (dev.modules.get_mut(m), if_match) {
        (Some(_), None) => {
            return Err(ApiError::Conflict {
                what: Resource::Module,
                id: m.to_owned(),
            })
        }
        (None, Some(_)) => return Err(module_not_found(m)),
        (Some(existing), Some(given)) => {
            if !etag_matches(&given, &existing.etag) {
                return Err(ApiError::PreconditionFailed {
                    what: Resource::Module,
                    id: m.to_owned(),
                    given,
                });
            }
            if body
                .generation_id
                .as_deref()
                .is_some_and(|g| g != existing.generation_id)
            {
                return Err(ApiError::BadRequest("generationId is immutable".into()));
            }
            existing
        }
        (None, None) => {
            dev.modules.insert(
                m.to_owned(),
                Module {
                    module_id: m.to_owned(),
                    device_id,
                    managed_by: None,
                    generation_id: crate::ids::generation_id(),
                    etag: String::new(),
                    auth_type: "sas".into(),
                    keys: SymmetricKey::default(),
                },
            );
            dev.modules
                .get_mut(m)
                .ok_or_else(|| ApiError::Internal("inserted module vanished".into()))?
        }
    };
    if let Some(kind) = auth_type {
        if !["sas", "selfSigned", "certificateAuthority", "none"].contains(&kind.as_str()) {
            return Err(ApiError::BadRequest(format!("authentication.type {kind:?} is not one of sas, selfSigned, certificateAuthority, none")));
        }
        module.auth_type = kind;
    }
    if module.auth_type == "sas" {
        match keys {
            Some(k) => module.keys = super::devices::fill_keys(k)?,
            None if module.keys.primary_key.is_none() => {
                module.keys = super::devices::fill_keys(SymmetricKey::default())?
            }
            None => {}
        }
    } else {
        module.keys = SymmetricKey::default();
    }
    if body.managed_by.is_some() {
        module.managed_by = body.managed_by;
    }
    module.etag = crate::ids::etag();
    Ok(view(module))
}
