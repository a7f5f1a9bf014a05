//! `device_info`: upstream's `HubDeviceInfo` as TOML. The literal `unprovisioned` (written by old
//! upstream versions) means no device.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::device::Device;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DeviceInfo {
    pub hub_name: String,
    pub local_gateway_hostname: String,
    pub device_id: String,
}

impl DeviceInfo {
    pub fn of(device: &Device) -> Self {
        DeviceInfo {
            hub_name: device.hub_name.clone(),
            local_gateway_hostname: device.gateway_host.clone(),
            device_id: device.device_id.clone(),
        }
    }

    pub fn device(&self) -> Device {
        Device {
            hub_name: self.hub_name.clone(),
            gateway_host: self.local_gateway_hostname.clone(),
            device_id: self.device_id.clone(),
        }
    }

    /// `Ok(None)` when absent or `unprovisioned`.
    pub fn load(homedir: &Path) -> Result<Option<Self>, StateError> {
        let path = homedir.join(super::DEVICE_INFO);
        let Some(text) = super::read_optional(&path)? else {
            return Ok(None);
        };
        if text.trim() == "unprovisioned" {
            return Ok(None);
        }
        super::parse_toml(path, &text).map(Some)
    }

    pub fn save(&self, homedir: &Path) -> Result<(), StateError> {
        super::save_toml(&homedir.join(super::DEVICE_INFO), self)
    }

    pub fn remove(homedir: &Path) -> Result<(), StateError> {
        super::remove(&homedir.join(super::DEVICE_INFO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_upstreams_file_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("device_info"),
            "hub_name = \"myhub.azure-devices.net\"\nlocal_gateway_hostname = \"myhub.azure-devices.net\"\ndevice_id = \"dev1\"\n",
        )
        .unwrap();
        let info = DeviceInfo::load(dir.path()).unwrap().unwrap();
        assert_eq!(info.device().device_id, "dev1");
        info.save(dir.path()).unwrap();
        assert_eq!(DeviceInfo::load(dir.path()).unwrap(), Some(info));
    }

    #[test]
    fn absent_or_unprovisioned_is_none_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DeviceInfo::load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("device_info"), "unprovisioned").unwrap();
        assert_eq!(DeviceInfo::load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("device_info"), "hub_name = 3").unwrap();
        assert!(DeviceInfo::load(dir.path()).is_err());
    }
}
