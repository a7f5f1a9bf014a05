//! The top-level `additional_info` of `aziotctl check`'s JSON: the time, the OS (from
//! os-release), DMI product and vendor, memory and disks, and the IoT Hub the device uses. Field
//! names and formats follow upstream's (`aziotctl/src/internal/check/additional_info.rs`,
//! `aziotctl-common/src/host_info.rs`), read straight from /proc and /sys rather than through a
//! system-information crate.

use std::ffi::CString;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AdditionalInfo {
    pub now: String,
    pub os: OsInfo,
    pub dmi: DmiInfo,
    pub system_info: SystemInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iothub_hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_gateway_hostname: Option<String>,
}

impl AdditionalInfo {
    pub fn collect(iothub_hostname: Option<String>) -> Self {
        AdditionalInfo {
            now: rfc3339(SystemTime::now()),
            os: OsInfo::read(),
            dmi: DmiInfo::read(),
            system_info: SystemInfo::read(),
            iothub_hostname,
            // DPS devices are never nested (identityd-dps refuses local_gateway_hostname).
            local_gateway_hostname: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OsInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    pub arch: &'static str,
    pub bitness: usize,
}

impl OsInfo {
    fn read() -> Self {
        let text = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        Self::parse(&text)
    }

    fn parse(os_release: &str) -> Self {
        let get = |key: &str| {
            os_release.lines().find_map(|line| {
                let (k, v) = line.trim().split_once('=')?;
                (k == key).then(|| unquote(v).to_owned())
            })
        };
        OsInfo {
            id: get("ID"),
            version_id: get("VERSION_ID"),
            variant_id: get("VARIANT_ID"),
            build_id: get("BUILD_ID"),
            arch: std::env::consts::ARCH,
            bitness: usize::BITS as usize,
        }
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[derive(Debug, Clone, Serialize)]
pub struct DmiInfo {
    pub product: Option<String>,
    pub vendor: Option<String>,
}

impl DmiInfo {
    fn read() -> Self {
        let read = |entry: &str| {
            std::fs::read_to_string(format!("/sys/devices/virtual/dmi/id/{entry}"))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        DmiInfo {
            product: read("product_name"),
            vendor: read("sys_vendor"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemInfo {
    pub used_ram: String,
    pub total_ram: String,
    pub used_swap: String,
    pub total_swap: String,
    pub disks: Vec<DiskInfo>,
}

impl SystemInfo {
    fn read() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |key: &str| {
            meminfo.lines().find_map(|line| {
                let rest = line.strip_prefix(key)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        let total = kib("MemTotal").unwrap_or(0);
        let available = kib("MemAvailable").or_else(|| kib("MemFree")).unwrap_or(0);
        let swap_total = kib("SwapTotal").unwrap_or(0);
        let swap_free = kib("SwapFree").unwrap_or(0);
        SystemInfo {
            used_ram: pretty_bytes(total.saturating_sub(available) * 1024),
            total_ram: pretty_bytes(total * 1024),
            used_swap: pretty_bytes(swap_total.saturating_sub(swap_free) * 1024),
            total_swap: pretty_bytes(swap_total * 1024),
            disks: DiskInfo::read_all(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskInfo {
    pub name: String,
    pub percent_free: String,
    pub available_space: String,
    pub total_space: String,
    pub file_system: String,
    pub file_type: String,
}

impl DiskInfo {
    /// Mounted block devices (`/dev/...` in /proc/mounts), each device once.
    fn read_all() -> Vec<DiskInfo> {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut seen = Vec::new();
        let mut disks = Vec::new();
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            let (Some(device), Some(mount_point), Some(fs)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if !device.starts_with("/dev/") || seen.iter().any(|d| d == device) {
                continue;
            }
            let Some((available, total)) = statvfs(mount_point) else {
                continue;
            };
            if total == 0 {
                continue;
            }
            seen.push(device.to_owned());
            let name = device.trim_start_matches("/dev/").to_owned();
            disks.push(DiskInfo {
                percent_free: format!("{:.1}%", available as f64 / total as f64 * 100.0),
                available_space: pretty_bytes(available),
                total_space: pretty_bytes(total),
                file_system: fs.to_owned(),
                file_type: disk_type(&name),
                name,
            });
        }
        disks
    }
}

/// (available to unprivileged users, total) bytes of the file system at `path`.
fn statvfs(path: &str) -> Option<(u64, u64)> {
    let c = CString::new(path).ok()?;
    // SAFETY: statvfs(3) fills the zeroed struct we pass; the path is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some((s.f_bavail as u64 * frsize, s.f_blocks as u64 * frsize))
}

/// "SSD" or "HDD" from the block device's `rotational` flag, as upstream's sysinfo reports it.
fn disk_type(name: &str) -> String {
    let base: String = name
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .trim_end_matches('p')
        .to_owned();
    for dev in [name, base.as_str()] {
        if let Ok(flag) = std::fs::read_to_string(format!("/sys/block/{dev}/queue/rotational")) {
            return if flag.trim() == "0" { "SSD".into() } else { "HDD".into() };
        }
    }
    "Unknown(-1)".into()
}

/// Bytes in the largest binary unit that keeps the value at least 1, two decimals ("1.50 GiB").
pub fn pretty_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// RFC 3339 in UTC with nanoseconds, as chrono prints `Utc::now()` in upstream's JSON.
pub fn rfc3339(t: SystemTime) -> String {
    let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let seconds = crate::status::rfc3339(t);
    format!("{}.{nanos:09}Z", seconds.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn os_release_values_are_unquoted_and_missing_ones_omitted() {
        let os = OsInfo::parse("NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n");
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        let v = serde_json::to_value(&os).unwrap();
        assert!(v.get("variant_id").is_none(), "{v}");
        assert_eq!(v["bitness"], usize::BITS as usize);
    }

    #[test]
    fn bytes_are_printed_in_binary_units() {
        assert_eq!(pretty_bytes(512), "512 B");
        assert_eq!(pretty_bytes(1536), "1.50 KiB");
        assert_eq!(pretty_bytes(8 * 1024 * 1024 * 1024), "8.00 GiB");
    }

    #[test]
    fn collected_info_has_upstreams_fields() {
        let v = serde_json::to_value(AdditionalInfo::collect(Some("hub.example".into()))).unwrap();
        for key in ["now", "os", "dmi", "system_info", "iothub_hostname"] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert!(v.get("local_gateway_hostname").is_none());
        assert!(v["system_info"]["total_ram"].as_str().unwrap().contains("iB"), "{v}");
    }
}
