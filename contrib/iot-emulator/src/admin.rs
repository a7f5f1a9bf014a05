//! The admin API, on its own loopback port, for tests and scripts to steer the emulator while it
//! runs. Requests carry `Authorization: Bearer <token>` (the token is in the ready line and in
//! `emulator.json`), so other local users cannot inject faults.
//!
//! * `GET /faults` — active rules with how often each fired and what is left
//! * `POST /faults` `{"spec":"dps/register=429,count=2,retry_after=3"}` — add a rule (201)
//! * `DELETE /faults` — remove all rules; `DELETE /faults/{id}` — remove one

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::{ApiError, Resource};
use crate::faults::FaultRule;
use crate::http::{Reply, Req};

#[derive(Debug, Deserialize)]
struct AddFault {
    spec: String,
}

pub fn route(app: &App, req: &Req) -> Result<Reply, ApiError> {
    authorize(app, req)?;
    let segs = req.segments()?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["faults"]) => Ok(Reply::ok(json!(app.faults.list()))),
        (&Method::POST, ["faults"]) => {
            let body: AddFault = req.json()?;
            let rule =
                FaultRule::parse(&body.spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let rule = app.faults.add(rule);
            log::info!("fault rule {} added: {}", rule.id, rule.spec);
            Ok(Reply::json(StatusCode::CREATED, json!(rule)))
        }
        (&Method::DELETE, ["faults"]) => {
            app.faults.clear();
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["faults", id]) => {
            let n: u64 = id
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("fault id {id:?} is not a number")))?;
            if app.faults.remove(n) {
                Ok(Reply::empty(StatusCode::NO_CONTENT))
            } else {
                Err(ApiError::NotFound {
                    what: Resource::Fault,
                    id: (*id).to_owned(),
                })
            }
        }
        (m, ["faults", ..]) => Err(ApiError::MethodNotAllowed(m.to_string())),
        _ => Err(ApiError::NoRoute(req.path.clone())),
    }
}

fn authorize(app: &App, req: &Req) -> Result<(), ApiError> {
    let given = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim();
    let want = app.admin_token.as_bytes();
    if given.len() == want.len() && openssl::memcmp::eq(given.as_bytes(), want) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "admin API needs Authorization: Bearer <admin token from the ready line>".into(),
        ))
    }
}
