//! DPS service API, individual enrollments: `PUT/GET/DELETE /enrollments/{registrationId}` and
//! `POST /enrollments/query`. TPM attestation only (DPS supports TPM for individual enrollments
//! only). Enrollments are validated when written, so registration never meets a bad one: the EK
//! must parse as an RSA `TPM2B_PUBLIC`, listed hubs must be emulated ones, and `static` and
//! `custom` need what they use.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::App;
use crate::error::{ApiError, Resource};
use crate::http::{etag_matches, Reply, Req};
use crate::model::{AllocationPolicy, Enrollment};
use crate::state::State;

pub async fn route(app: &Arc<App>, req: &Req, rest: &[&str]) -> Result<Reply, ApiError> {
    req.require_api_version()?;
    match (&req.method, rest) {
        (&Method::PUT, [id]) => put(app, req, id).await,
        (&Method::GET, [id]) => get(app, id),
        (&Method::DELETE, [id]) => delete(app, req, id).await,
        (&Method::POST, ["query"]) => query(app, req),
        (m, [_]) => Err(ApiError::MethodNotAllowed(m.to_string())),
        _ => Err(ApiError::NoRoute(req.path.clone())),
    }
}

/// The enrollment as the service API returns it, with `registrationState` when there is one.
pub fn view(state: &State, enrollment: &Enrollment) -> Value {
    let mut v = serde_json::to_value(enrollment).unwrap_or(Value::Null);
    if let Some(result) = state
        .registrations
        .get(&enrollment.registration_id)
        .and_then(|r| r.result.as_ref())
    {
        v["registrationState"] = serde_json::to_value(result).unwrap_or(Value::Null);
    }
    v
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        what: Resource::Enrollment,
        id: id.to_owned(),
    }
}

fn validate(app: &App, id: &str, e: &mut Enrollment) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return bad(format!(
            "registration ID {id:?} must be 1-128 characters of a-z, 0-9, '-', '.', '_', ':'"
        ));
    }
    if e.registration_id.is_empty() {
        e.registration_id = id.to_owned();
    } else if e.registration_id != id {
        return bad(format!(
            "registrationId {:?} in the body differs from {id:?} in the path",
            e.registration_id
        ));
    }
    if !e.attestation.kind.eq_ignore_ascii_case("tpm") {
        return bad(format!(
            "attestation.type {:?} is not supported: the emulator does TPM attestation only",
            e.attestation.kind
        ));
    }
    e.attestation.kind = "tpm".into();
    let Some(tpm) = &e.attestation.tpm else {
        return bad("attestation.tpm.endorsementKey is required".into());
    };
    let ek = super::decode_b64("attestation.tpm.endorsementKey", &tpm.endorsement_key)?;
    if let Err(err) = dps_attestation::parse_rsa_public(&ek) {
        return bad(format!(
            "attestation.tpm.endorsementKey is not an RSA TPM2B_PUBLIC: {err}"
        ));
    }
    for hub in e.iot_hubs.iter_mut().chain(e.iot_hub_host_name.as_mut()) {
        match app.hub_named(hub) {
            Some(h) => *hub = h.hostname.clone(),
            None => {
                return bad(format!(
                    "hub {hub:?} is not linked; linked hubs are {:?}",
                    app.hostnames()
                ))
            }
        }
    }
    match e.allocation_policy {
        Some(AllocationPolicy::Static)
            if e.iot_hubs.len() + usize::from(e.iot_hub_host_name.is_some()) != 1 =>
        {
            return bad("allocationPolicy static needs exactly one hub in iotHubs".into());
        }
        Some(AllocationPolicy::Custom) => {
            let url = e
                .custom_allocation_definition
                .as_ref()
                .map(|d| d.webhook_url.as_str())
                .unwrap_or("");
            if !url.to_ascii_lowercase().starts_with("https://") {
                return bad("allocationPolicy custom needs customAllocationDefinition.webhookUrl, an https:// URL".into());
            }
        }
        _ => {}
    }
    Ok(())
}

async fn put(app: &Arc<App>, req: &Req, id: &str) -> Result<Reply, ApiError> {
    let mut enrollment: Enrollment = req.json()?;
    validate(app, id, &mut enrollment)?;
    let if_match = req.if_match();
    let id = id.to_owned();
    let value = app
        .store
        .update(move |s| {
            let now = crate::time::rfc3339_now();
            let existing = s.enrollments.get(&id);
            if let Some(given) = &if_match {
                match existing.and_then(|e| e.etag.as_deref()) {
                    Some(etag) if etag_matches(given, etag) => {}
                    _ => {
                        return Err(ApiError::PreconditionFailed {
                            what: Resource::Enrollment,
                            id,
                            given: given.clone(),
                        })
                    }
                }
            }
            enrollment.created_date_time_utc = Some(
                existing
                    .and_then(|e| e.created_date_time_utc.clone())
                    .unwrap_or_else(|| now.clone()),
            );
            enrollment.last_updated_date_time_utc = Some(now);
            enrollment.etag = Some(crate::ids::etag());
            let v = view(s, &enrollment);
            s.enrollments.insert(id, enrollment);
            Ok(v)
        })
        .await?;
    Ok(Reply::ok(value))
}

fn get(app: &App, id: &str) -> Result<Reply, ApiError> {
    app.store
        .read(|s| s.enrollments.get(id).map(|e| view(s, e)))
        .map(Reply::ok)
        .ok_or_else(|| not_found(id))
}

async fn delete(app: &Arc<App>, req: &Req, id: &str) -> Result<Reply, ApiError> {
    let if_match = req.if_match();
    let id = id.to_owned();
    app.store
        .update(move |s| {
            let etag = s
                .enrollments
                .get(&id)
                .ok_or_else(|| not_found(&id))?
                .etag
                .clone()
                .unwrap_or_default();
            if let Some(given) = if_match.filter(|g| !etag_matches(g, &etag)) {
                return Err(ApiError::PreconditionFailed {
                    what: Resource::Enrollment,
                    id,
                    given,
                });
            }
            s.enrollments.remove(&id);
            s.registrations.remove(&id);
            s.operations.retain(|_, o| o.registration_id != id);
            Ok(())
        })
        .await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

/// `POST /enrollments/query` with `{"query":"*"}` (the only query DPS documents for individual
/// enrollments); pages with `x-ms-max-item-count` and an opaque `x-ms-continuation`.
fn query(app: &App, req: &Req) -> Result<Reply, ApiError> {
    if !req.body.is_empty() {
        let body: Value = req.json()?;
        let q = body
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("*")
            .trim();
        if q != "*" && !q.eq_ignore_ascii_case("select * from enrollments") {
            return Err(ApiError::BadRequest(format!(
                "query {q:?} is not supported; use \"*\""
            )));
        }
    }
    let max = match req.header("x-ms-max-item-count") {
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::BadRequest("x-ms-max-item-count must be a positive number".into())
        })?,
        None => usize::MAX,
    };
    let after = req.header("x-ms-continuation").map(str::to_owned);
    let (items, more) = app.store.read(|s| {
        let mut all = s
            .enrollments
            .iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k.as_str() > a.as_str()));
        let items: Vec<(String, Value)> = all
            .by_ref()
            .take(max)
            .map(|(k, e)| (k.clone(), view(s, e)))
            .collect();
        (items, all.next().is_some())
    });
    let last = items.last().map(|(k, _)| k.clone());
    let mut reply = Reply::ok(json!(items.into_iter().map(|(_, v)| v).collect::<Vec<_>>()))
        .header("x-ms-item-type", "Enrollment".into());
    if let (true, Some(last)) = (more, last) {
        reply = reply.header("x-ms-continuation", last);
    }
    Ok(reply)
}
