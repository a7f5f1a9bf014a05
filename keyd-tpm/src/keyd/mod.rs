//! The aziot Keys Service API (keyd.sock), wire-compatible with upstream aziot-keyd, with every
//! key kept in the TPM: symmetric keys as HMAC and sealed objects, key pairs as TPM key pairs,
//! all wrapped by the SRK and stored as files only this TPM can use (see `store`, `record`).
//!
//! One file per route, each with its parsing and its work; `keys` holds what they share.
//! Requests are parsed and checked concurrently; only TPM commands are serialized, by the TPM
//! owner. Upstream serializes every request behind one mutex.

mod aead;
mod authz;
pub mod config;
mod crypto;
mod error;
mod files;
mod handle;
mod keys;
mod material;
mod migrate;
mod pkcs1;
mod preferred;
mod preloaded;
mod public_params;
mod record;
mod store;

mod decrypt;
mod derivedkey;
mod derivedkey_export;
mod encrypt;
mod key;
mod key_id;
mod keypair;
mod keypair_id;
mod parameters;
mod sign;

use aziot_http::{HttpError, Method, Request, Response};
use aziot_key_common_http::ApiVersion;

use crate::tpm::TpmHandle;

pub use config::KeydConfig;
pub use error::KeydError;
pub use files::stem as key_file_stem;
pub use handle::HANDLE_VALIDATION_KEY_ID;

/// Largest body of `/sign`, `/encrypt` and `/decrypt`: 1 MiB of JSON, about 760 KiB of data.
/// SAS tokens and the secrets IoT Edge encrypts are a few hundred bytes.
pub const DATA_BODY_LIMIT: usize = 1024 * 1024;

pub struct KeyService {
    keys: keys::Keys,
}

impl KeyService {
    pub fn new(tpm: TpmHandle, config: &KeydConfig) -> Self {
        Self {
            keys: keys::Keys::new(tpm, config),
        }
    }

    async fn route(&self, req: Request) -> Result<Response, HttpError> {
        let keys = &self.keys;
        let method = req.method.clone();
        let post_only = |method: &Method| {
            if *method == Method::POST {
                Ok(())
            } else {
                Err(HttpError::method_not_allowed())
            }
        };
        match req.path.as_str() {
            "/key" => match method {
                Method::POST => key::post(keys, &req).await,
                Method::DELETE => key::delete(keys, &req).await,
                _ => Err(HttpError::method_not_allowed()),
            },
            "/keypair" => match method {
                Method::POST => keypair::post(keys, &req).await,
                Method::DELETE => keypair::delete(keys, &req).await,
                _ => Err(HttpError::method_not_allowed()),
            },
            "/derivedkey" => {
                post_only(&method)?;
                derivedkey::post(keys, &req).await
            }
            "/derivedkey/export" => {
                post_only(&method)?;
                derivedkey_export::post(keys, &req).await
            }
            "/sign" => {
                post_only(&method)?;
                sign::post(keys, &req).await
            }
            "/encrypt" => {
                post_only(&method)?;
                encrypt::post(keys, &req).await
            }
            "/decrypt" => {
                post_only(&method)?;
                decrypt::post(keys, &req).await
            }
            _ => {
                if let Some(id) = capture(&req, "/key/{}")? {
                    match method {
                        Method::GET => key_id::get(keys, &req, &id).await,
                        Method::POST => key_id::post(&req, &id).await,
                        _ => Err(HttpError::method_not_allowed()),
                    }
                } else if let Some(id) = capture(&req, "/keypair/{}")? {
                    match method {
                        Method::GET => keypair_id::get(keys, &req, &id).await,
                        Method::POST => keypair_id::post(keys, &req, &id).await,
                        _ => Err(HttpError::method_not_allowed()),
                    }
                } else if let Some(name) = capture(&req, "/parameters/{}")? {
                    post_only(&method)?;
                    parameters::post(keys, &req, &name).await
                } else {
                    Err(HttpError::not_found())
                }
            }
        }
    }
}

/// The one `{}` segment of `pattern` in the request path, percent-decoded (400 if that is not
/// UTF-8).
fn capture(req: &Request, pattern: &str) -> Result<Option<String>, HttpError> {
    Ok(req.match_path(pattern)?.and_then(|mut captures| captures.pop()))
}

impl aziot_http::Service for KeyService {
    fn api_versions(&self) -> &'static [&'static str] {
        ApiVersion::ALL_STR
    }

    /// The routes that take caller data (a message to sign, a plaintext or ciphertext) take up
    /// to 1 MiB; the others carry ids, handles and short parameters.
    fn body_limit(&self, _method: &Method, path: &str) -> usize {
        match path {
            "/sign" | "/encrypt" | "/decrypt" => DATA_BODY_LIMIT,
            _ => aziot_http::DEFAULT_BODY_LIMIT,
        }
    }

    async fn handle(&self, req: Request) -> Response {
        // Each caller's TPM work waits in its own lane (see `tpm::owner`).
        let lane = crate::tpm::Lane::Keyd(req.uid);
        crate::tpm::in_lane(lane, self.route(req))
            .await
            .unwrap_or_else(HttpError::into_response)
    }
}
