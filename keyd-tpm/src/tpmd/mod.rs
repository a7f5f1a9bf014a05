//! The aziot TPM Service API (tpmd.sock), byte for byte as upstream aziot-tpmd, plus two
//! extensions upstream clients never call: `POST /restore_auth_key` and `GET /tpm_info`. One file per route.

mod get_tpm_keys;
mod import_auth_key;
mod restore_auth_key;
mod sign_with_auth_key;
mod tpm_info;

use aziot_http::{HttpError, Method, Request, Response};

use crate::tpm::TpmHandle;

pub struct TpmService {
    tpm: TpmHandle,
}

impl TpmService {
    pub fn new(tpm: TpmHandle) -> Self {
        Self { tpm }
    }

    async fn route(&self, req: Request) -> Result<Response, HttpError> {
        let method = req.method.clone();
        match req.path.as_str() {
            "/get_tpm_keys" => match method {
                Method::GET => get_tpm_keys::handle(&self.tpm).await,
                _ => Err(HttpError::method_not_allowed()),
            },
            "/import_auth_key" => match method {
                Method::POST => import_auth_key::handle(&self.tpm, &req).await,
                _ => Err(HttpError::method_not_allowed()),
            },
            "/sign_with_auth_key" => match method {
                Method::POST => sign_with_auth_key::handle(&self.tpm, &req).await,
                _ => Err(HttpError::method_not_allowed()),
            },
            "/tpm_info" => match method {
                Method::GET => tpm_info::handle(&self.tpm).await,
                _ => Err(HttpError::method_not_allowed()),
            },
            "/restore_auth_key" => match method {
                Method::POST => restore_auth_key::handle(&self.tpm).await,
                _ => Err(HttpError::method_not_allowed()),
            },
            _ => Err(HttpError::not_found()),
        }
    }
}

impl aziot_http::Service for TpmService {
    fn api_versions(&self) -> &'static [&'static str] {
        &[aziot_tpm_common::http::API_VERSION]
    }

    /// `sign_with_auth_key` takes caller data (1 MiB, as the Keys Service's data routes); a DPS
    /// blob and the other routes fit the default.
    fn body_limit(&self, _method: &Method, path: &str) -> usize {
        match path {
            "/sign_with_auth_key" => crate::keyd::DATA_BODY_LIMIT,
            _ => aziot_http::DEFAULT_BODY_LIMIT,
        }
    }

    async fn handle(&self, req: Request) -> Response {
        // The device's own signing waits in a lane of its own (see `tpm::owner`).
        let lane = crate::tpm::Lane::Tpmd(req.uid);
        crate::tpm::in_lane(lane, self.route(req)).await.unwrap_or_else(HttpError::into_response)
    }
}

/// Decodes a base64 request field, naming the field when it is not base64.
fn decode_field(field: &str, value: &str) -> Result<Vec<u8>, HttpError> {
    aziot_tpm_common::from_b64(value).map_err(|e| {
        HttpError::bad_request(format!("parameter \"{field}\" is not valid standard base64: {e}"))
    })
}
