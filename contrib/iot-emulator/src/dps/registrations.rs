//! DPS service API, registration states: `GET/DELETE /registrations/{registrationId}`. Deleting
//! the state makes DPS forget the assignment (the next registration counts as the first); the
//! device stays in its hub, as with DPS.

use std::sync::Arc;

use hyper::{Method, StatusCode};

use crate::app::App;
use crate::error::{ApiError, Resource};
use crate::http::{Reply, Req};

pub async fn route(app: &Arc<App>, req: &Req, rest: &[&str]) -> Result<Reply, ApiError> {
    req.require_api_version()?;
    let [id] = rest else {
        return Err(ApiError::NoRoute(req.path.clone()));
    };
    let not_found = || ApiError::NotFound {
        what: Resource::Registration,
        id: (*id).to_owned(),
    };
    match req.method {
        Method::GET => app
            .store
            .read(|s| s.registrations.get(*id).and_then(|r| r.result.clone()))
            .ok_or_else(not_found)
            .and_then(|r| serde_json::to_value(r).map_err(|e| ApiError::Internal(e.to_string())))
            .map(Reply::ok),
        Method::DELETE => {
            let id = (*id).to_owned();
            app.store
                .update(move |s| {
                    let reg = s.registrations.get_mut(&id).filter(|r| r.result.is_some());
                    let reg = reg.ok_or(ApiError::NotFound {
                        what: Resource::Registration,
                        id: id.clone(),
                    })?;
                    reg.result = None;
                    Ok(())
                })
                .await?;
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        ref m => Err(ApiError::MethodNotAllowed(m.to_string())),
    }
}
