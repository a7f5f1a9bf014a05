//! Twins, read-only: `GET /twins/{d}` and `GET /twins/{d}/modules/{m}`. They show the
//! `initialTwin` an enrollment or a custom allocation set, and give module tokens something to
//! authenticate against.

use hyper::Method;
use serde_json::{json, Value};

use super::Principal;
use crate::app::App;
use crate::error::{ApiError, Resource};
use crate::http::{Reply, Req};
use crate::model::Twin;

fn props(twin: &Twin) -> (Value, Value) {
    let tags = if twin.tags.is_null() {
        json!({})
    } else {
        twin.tags.clone()
    };
    let mut desired = if twin.desired.is_object() {
        twin.desired.clone()
    } else {
        json!({})
    };
    desired["$version"] = json!(1);
    (tags, desired)
}

pub fn device(app: &App, hub: &str, req: &Req, p: &Principal, d: &str) -> Result<Reply, ApiError> {
    if req.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    p.require(d, None)?;
    app.store
        .read(|s| {
            s.device(hub, d).map(|dev| {
                let (tags, desired) = props(&dev.twin);
                json!({
                    "deviceId": dev.device_id,
                    "etag": dev.etag,
                    "version": 1,
                    "status": dev.status,
                    "tags": tags,
                    "properties": {"desired": desired, "reported": {"$version": 1}},
                    "capabilities": {"iotEdge": dev.iot_edge},
                })
            })
        })
        .map(Reply::ok)
        .ok_or_else(|| ApiError::NotFound {
            what: Resource::Device,
            id: d.to_owned(),
        })
}

pub fn module(
    app: &App,
    hub: &str,
    req: &Req,
    p: &Principal,
    d: &str,
    m: &str,
) -> Result<Reply, ApiError> {
    if req.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method.to_string()));
    }
    p.require(d, Some(m))?;
    app.store
        .read(|s| {
            s.device(hub, d)
                .and_then(|dev| dev.modules.get(m))
                .map(|module| {
                    json!({
                        "deviceId": module.device_id,
                        "moduleId": module.module_id,
                        "etag": module.etag,
                        "version": 1,
                        "properties": {"desired": {"$version": 1}, "reported": {"$version": 1}},
                    })
                })
        })
        .map(Reply::ok)
        .ok_or_else(|| ApiError::NotFound {
            what: Resource::Module,
            id: m.to_owned(),
        })
}
