//! The Identity Service API on identityd.sock, route for route as upstream (api-versions
//! 2020-09-01, 2021-12-01, 2022-08-01), one file per route. Handlers check the caller's uid against
//! the principals first, then read the device status snapshot: none of them waits for
//! provisioning, and none holds a lock across a Keys Service or IoT Hub call.

mod device;
mod identity;
mod module;
mod modules;
mod provisioning;
mod reprovision;
mod trust_bundle;
pub mod wire;

use std::sync::Arc;

use aziot_http::{HttpError, Method, Request, Response, StatusCode};

use crate::app::App;
use crate::auth::{authorized, Caller, Operation, Principals};
use crate::error::Error;

pub const API_VERSIONS: &[&str] = &["2020-09-01", "2021-12-01", "2022-08-01"];

pub struct Api {
    app: Arc<App>,
    principals: Principals,
}

impl Api {
    pub fn new(app: Arc<App>) -> Self {
        let principals = Principals::new(&app.config.principals);
        Api { app, principals }
    }

    async fn route(&self, req: &Request) -> Result<Response, HttpError> {
        let caller = self.principals.caller(req.uid);
        let ctx = Ctx {
            app: &self.app,
            caller: &caller,
        };
        let path = req.path.as_str();
        let result = match (path, &req.method) {
            ("/identities/identity", &Method::GET) => identity::get(&ctx).await,
            ("/identities/device", &Method::POST) => device::post(&ctx, req).await,
            ("/identities/provisioning", &Method::GET)
                if req.api_version.as_str() >= "2021-12-01" =>
            {
                provisioning::get(&ctx).await
            }
            ("/identities/provisioning/status", &Method::GET) => provisioning::status(&ctx),
            ("/identities/device/reprovision", &Method::POST) => reprovision::post(&ctx, req).await,
            ("/identities/modules", &Method::GET) => modules::list(&ctx, req).await,
            ("/identities/modules", &Method::POST) => modules::create(&ctx, req).await,
            ("/trust-bundle", &Method::GET) => trust_bundle::get(&ctx),
            (
                "/identities/identity"
                | "/identities/device"
                | "/identities/device/reprovision"
                | "/identities/modules"
                | "/identities/provisioning/status"
                | "/trust-bundle",
                _,
            ) => return Err(HttpError::method_not_allowed()),
            ("/identities/provisioning", &Method::GET) => return Err(HttpError::not_found()),
            ("/identities/provisioning", _) => return Err(HttpError::method_not_allowed()),
            _ => match req.match_path("/identities/modules/{}")?.as_deref() {
                Some([module_id]) => match req.method {
                    Method::GET => module::get(&ctx, req, module_id).await,
                    Method::PUT => module::update(&ctx, req, module_id).await,
                    Method::DELETE => module::delete(&ctx, req, module_id).await,
                    _ => return Err(HttpError::method_not_allowed()),
                },
                _ => return Err(HttpError::not_found()),
            },
        };
        result.map_err(HttpError::from)
    }
}

impl aziot_http::Service for Api {
    fn api_versions(&self) -> &'static [&'static str] {
        API_VERSIONS
    }

    async fn handle(&self, req: Request) -> Response {
        self.route(&req)
            .await
            .unwrap_or_else(HttpError::into_response)
    }
}

/// What every handler gets.
struct Ctx<'a> {
    app: &'a Arc<App>,
    caller: &'a Caller,
}

impl Ctx<'_> {
    fn authorize(&self, op: Operation<'_>) -> Result<(), Error> {
        if authorized(self.caller, op) {
            Ok(())
        } else {
            log::info!("denied {op:?} to {:?}", self.caller);
            Err(Error::Unauthorized)
        }
    }
}

/// The `type` query parameter of module routes: `aziot`, or `local` where `allow_local`.
fn id_type(req: &Request, allow_local: bool) -> Result<(), Error> {
    let value = req
        .query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("type"))
        .map(|(_, v)| v.as_str());
    check_type(value, allow_local)
}

fn check_type(value: Option<&str>, allow_local: bool) -> Result<(), Error> {
    match value {
        None => Err(Error::invalid("type", "missing parameter")),
        Some("aziot") => Ok(()),
        Some("local") if allow_local => Err(Error::LocalUnsupported),
        Some(other) => Err(Error::invalid("type", format!("invalid type: {other}"))),
    }
}

fn ok_json<T: serde::Serialize>(value: &T) -> Result<Response, Error> {
    Ok(Response::json(StatusCode::OK, value))
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
