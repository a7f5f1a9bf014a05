//! The Keys Service calls identityd makes (api-version 2021-05-01, as upstream's client): the
//! master identity key and the module keys derived from it.

use std::path::Path;

use aziot_http::Method;
use aziot_key_common_http::{
    create_derived_key, create_key_if_not_exists, export_derived_key, load, ByteString, KeyHandle,
    KeyUsage,
};
use zeroize::Zeroizing;

use super::{to_json, LocalError, Pool};

const API_VERSION: &str = "2021-05-01";

pub struct KeysClient {
    pool: Pool,
}

impl KeysClient {
    pub fn new(socket: &Path) -> Self {
        KeysClient {
            pool: Pool::new("Keys Service", socket),
        }
    }

    /// `GET /key/{id}`: the handle of an existing key.
    pub async fn load_key(&self, id: &str) -> Result<KeyHandle, LocalError> {
        let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        let r: load::Response = self
            .pool
            .call(
                "load_key",
                Method::GET,
                &format!("/key/{id}?api-version={API_VERSION}"),
                None,
            )
            .await?;
        Ok(r.handle)
    }

    /// `POST /key`: generates the key unless it exists, and returns its handle.
    pub async fn create_key_if_not_exists(
        &self,
        id: &str,
        usage: &[KeyUsage],
    ) -> Result<KeyHandle, LocalError> {
        let body = to_json(&create_key_if_not_exists::Request {
            id: id.to_owned(),
            import_key_bytes: None,
            usage: usage.to_vec(),
        });
        let r: create_key_if_not_exists::Response = self
            .pool
            .call(
                "create_key",
                Method::POST,
                &format!("/key?api-version={API_VERSION}"),
                Some(&body),
            )
            .await?;
        Ok(r.handle)
    }

    /// `POST /derivedkey`: the handle of HMAC-SHA256(base, data).
    pub async fn create_derived_key(
        &self,
        base: &KeyHandle,
        data: &[u8],
    ) -> Result<KeyHandle, LocalError> {
        let body = to_json(&create_derived_key::Request {
            base_handle: base.clone(),
            derivation_data: ByteString(data.to_vec()),
        });
        let r: create_derived_key::Response = self
            .pool
            .call(
                "create_derived_key",
                Method::POST,
                &format!("/derivedkey?api-version={API_VERSION}"),
                Some(&body),
            )
            .await?;
        Ok(r.handle)
    }

    /// `POST /derivedkey/export`: the derived key's bytes (uploaded to IoT Hub as a module key).
    pub async fn export_derived_key(
        &self,
        handle: &KeyHandle,
    ) -> Result<Zeroizing<Vec<u8>>, LocalError> {
        let body = to_json(&export_derived_key::Request {
            handle: handle.clone(),
        });
        let r: export_derived_key::Response = self
            .pool
            .call(
                "export_derived_key",
                Method::POST,
                &format!("/derivedkey/export?api-version={API_VERSION}"),
                Some(&body),
            )
            .await?;
        Ok(Zeroizing::new(r.key.into_inner()))
    }
}
