//! Who is calling a hub, from the SAS token.
//!
//! * `skn=iothubowner`, `sr={hub}` → the hub owner (service side), key from the hub's
//!   connection string.
//! * no `skn`, `sr={hub}/devices/{d}` → the device, verified with its current keys.
//! * no `skn`, `sr={hub}/devices/{d}/modules/{m}` → the module, verified with the module's keys.
//!
//! A disabled device (and its modules) gets 401 whatever the signature. Audiences compare
//! case-insensitively because identityd lower-cases them.

use crate::app::App;
use crate::error::ApiError;
use crate::http::Req;
use crate::model::DeviceStatus;
use crate::sas::SasToken;

pub const OWNER_POLICY: &str = "iothubowner";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Owner,
    Device(String),
    Module(String, String),
}

impl Principal {
    /// May this principal act on device `d` (and, with `module`, on that module)?
    /// Owners may do anything; a device may manage itself and its modules; a module only itself.
    pub fn may_access(&self, d: &str, module: Option<&str>) -> bool {
        match self {
            Principal::Owner => true,
            Principal::Device(pd) => pd.eq_ignore_ascii_case(d),
            Principal::Module(pd, pm) => {
                pd.eq_ignore_ascii_case(d) && module.is_some_and(|m| pm.eq_ignore_ascii_case(m))
            }
        }
    }

    pub fn require(&self, d: &str, module: Option<&str>) -> Result<(), ApiError> {
        if self.may_access(d, module) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(format!(
                "the SAS token's identity ({self:?}) may not access this resource"
            )))
        }
    }

    pub fn require_owner(&self) -> Result<(), ApiError> {
        match self {
            Principal::Owner => Ok(()),
            _ => Err(ApiError::Unauthorized(
                "this operation needs the hub's iothubowner policy".into(),
            )),
        }
    }
}

pub fn authenticate(app: &App, hub: &str, req: &Req) -> Result<Principal, ApiError> {
    let token = SasToken::parse(req.header("authorization"))?;
    let now = crate::time::unix_now();
    let audience = token.audience.trim_end_matches('/').to_owned();
    let rest = audience
        .strip_prefix(&hub.to_ascii_lowercase())
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "SAS token audience {audience:?} is not for hub {hub}"
            ))
        })?;
    if let Some(policy) = &token.key_name {
        if policy != OWNER_POLICY || !rest.is_empty() {
            return Err(ApiError::Unauthorized(format!(
                "unknown shared access policy {policy:?} for audience {audience:?}"
            )));
        }
        let key = &app
            .hub_named(hub)
            .ok_or_else(|| ApiError::Internal("hub vanished".into()))?
            .owner_key;
        token.verify(key, now)?;
        return Ok(Principal::Owner);
    }
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let (device_id, module_id) = match parts.as_slice() {
        ["devices", d] => (*d, None),
        ["devices", d, "modules", m] => (*d, Some(*m)),
        _ => {
            return Err(ApiError::Unauthorized(format!(
                "SAS token audience {audience:?} names no device or module"
            )))
        }
    };
    let (canonical, status, keys, module) = app
        .store
        .read(|s| {
            let device = s.device(hub, device_id)?;
            let module = module_id.map(|m| {
                device
                    .modules
                    .values()
                    .find(|x| x.module_id.eq_ignore_ascii_case(m))
                    .map(|x| (x.module_id.clone(), x.keys.decoded()))
            });
            Some((
                device.device_id.clone(),
                device.status,
                device.keys.decoded(),
                module,
            ))
        })
        .ok_or_else(|| {
            ApiError::Unauthorized(format!("device {device_id:?} is not registered in {hub}"))
        })?;
    if status == DeviceStatus::Disabled {
        return Err(ApiError::Unauthorized(format!(
            "device {canonical:?} is disabled"
        )));
    }
    let (principal, keys) = match module {
        None => (Principal::Device(canonical), keys),
        Some(None) => {
            return Err(ApiError::Unauthorized(format!(
                "module {:?} of {canonical:?} does not exist",
                module_id.unwrap_or("")
            )))
        }
        Some(Some((m, mkeys))) => (Principal::Module(canonical, m), mkeys),
    };
    if keys.is_empty() {
        return Err(ApiError::Unauthorized(
            "this identity has no symmetric key".into(),
        ));
    }
    // Either key may sign; every key is checked so timing does not tell which one matched.
    let results: Vec<_> = keys.iter().map(|k| token.verify(k, now)).collect();
    match results.iter().find(|r| r.is_ok()) {
        Some(_) => Ok(principal),
        None => Err(results
            .into_iter()
            .next()
            .and_then(Result::err)
            .map(ApiError::from)
            .unwrap_or_else(|| ApiError::Unauthorized("no key".into()))),
    }
}
