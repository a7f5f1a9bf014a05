//! `GET /tpm_info` (extension) → manufacturer, vendor, firmware, persistent handles, EK
//! certificate (base64 DER, if provisioned), auth key handle and presence. For `aziot-tpm
//! tpm-info` and `aziot-tpm check`.

use aziot_http::{HttpError, Response, StatusCode};

use crate::tpm::TpmHandle;

pub async fn handle(tpm: &TpmHandle) -> Result<Response, HttpError> {
    Ok(Response::json(StatusCode::OK, &tpm.info().await?))
}
