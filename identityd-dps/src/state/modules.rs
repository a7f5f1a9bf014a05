//! Module identity backups, at upstream's paths: served when IoT Hub cannot be reached, and the
//! cache for `GET /identities/modules/{m}`. Failures to write are logged, not fatal, as upstream:
//! the backup is a convenience for offline operation.

use std::path::{Path, PathBuf};

use super::sha256_hex;
use crate::device::Device;
use crate::hub::Module;

const MODULES: &str = "modules";

pub struct ModuleBackups {
    homedir: PathBuf,
}

impl ModuleBackups {
    pub fn new(homedir: &Path) -> Self {
        ModuleBackups {
            homedir: homedir.to_owned(),
        }
    }

    fn device_dir(&self, device: &Device) -> PathBuf {
        self.homedir.join(MODULES).join(format!(
            "{}-{}",
            sha256_hex(&device.hub_name),
            sha256_hex(&device.device_id)
        ))
    }

    fn module_path(&self, device: &Device, module_id: &str) -> PathBuf {
        let alnum: String = module_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        self.device_dir(device)
            .join(format!("{alnum}-{}", sha256_hex(module_id)))
    }

    /// Makes `device` the one whose modules are kept: another device's backups are removed.
    pub fn set_device(&self, device: &Device) {
        let dir = self.device_dir(device);
        if dir.is_dir() {
            return;
        }
        let all = self.homedir.join(MODULES);
        if let Err(e) = std::fs::remove_dir_all(&all) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!(
                    "could not remove old module backups in {}: {e}",
                    all.display()
                );
            }
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            log::warn!(
                "could not create the module backup dir {}: {e}",
                dir.display()
            );
        }
    }

    /// Forgets every module backup of `device`.
    pub fn clear(&self, device: &Device) {
        let dir = self.device_dir(device);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("could not remove module backups {}: {e}", dir.display());
            }
        }
    }

    pub fn save(&self, device: &Device, module: &Module) {
        let path = self.module_path(device, &module.module_id);
        let result = serde_json::to_vec(&module.without_keys())
            .map_err(|e| e.to_string())
            .and_then(|json| super::write_atomic(&path, &json).map_err(|e| e.to_string()));
        if let Err(e) = result {
            log::warn!("could not back up module {:?}: {e}", module.module_id);
        }
    }

    pub fn remove(&self, device: &Device, module_id: &str) {
        if let Err(e) = super::remove(&self.module_path(device, module_id)) {
            log::warn!("could not remove the backup of module {module_id:?}: {e}");
        }
    }

    pub fn load(&self, device: &Device, module_id: &str) -> Option<Module> {
        let path = self.module_path(device, module_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("could not read module backup {}: {e}", path.display());
                return None;
            }
        };
        match serde_json::from_slice::<Module>(&bytes) {
            Ok(m) if m.module_id == module_id => Some(m),
            Ok(_) => None,
            Err(e) => {
                log::warn!("ignoring invalid module backup {}: {e}", path.display());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> Device {
        Device {
            hub_name: "hub.example".into(),
            gateway_host: "hub.example".into(),
            device_id: id.into(),
        }
    }

    fn module(id: &str) -> Module {
        serde_json::from_value(serde_json::json!({
            "moduleId": id, "deviceId": "d1", "generationId": "g1",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "c2VjcmV0"}}
        }))
        .unwrap()
    }

    #[test]
    fn paths_follow_upstream_naming() {
        let b = ModuleBackups::new(Path::new("/var/lib/aziot/identityd"));
        let p = b.module_path(&device("d1"), "$edgeAgent");
        let s = p.to_str().unwrap();
        assert!(s.starts_with("/var/lib/aziot/identityd/modules/"), "{s}");
        assert!(
            s.ends_with(&format!("/edgeAgent-{}", sha256_hex("$edgeAgent"))),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "{}-{}",
                sha256_hex("hub.example"),
                sha256_hex("d1")
            )),
            "{s}"
        );
    }

    #[test]
    fn saves_without_keys_and_clears_other_devices() {
        let dir = tempfile::tempdir().unwrap();
        let b = ModuleBackups::new(dir.path());
        let d1 = device("d1");
        b.set_device(&d1);
        b.save(&d1, &module("m1"));
        let text = std::fs::read_to_string(b.module_path(&d1, "m1")).unwrap();
        assert!(
            !text.contains("c2VjcmV0"),
            "keys must not be backed up: {text}"
        );
        assert_eq!(
            b.load(&d1, "m1").unwrap().generation_id.as_deref(),
            Some("g1")
        );
        b.remove(&d1, "m1");
        assert!(b.load(&d1, "m1").is_none());

        b.save(&d1, &module("m2"));
        let d2 = device("d2");
        b.set_device(&d2);
        assert!(
            b.load(&d1, "m2").is_none(),
            "another device's backups are dropped"
        );
    }
}
