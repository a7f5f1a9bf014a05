//! Reading the TPM ourselves, for when keyd-tpm is not there to ask, and for the hierarchy
//! passwords, which no TPM Service route tests. Nothing here changes TPM state: the reads are
//! keyd-tpm's read-only inspection (GetCapability, ReadPublic), the password test a PolicySecret
//! in a trial session that is flushed.
//!
//! With the kernel resource manager (`/dev/tpmrm0`) this context lives next to keyd-tpm's without
//! interfering; the raw `/dev/tpm0` admits one opener, so while keyd-tpm holds it the open fails
//! and the check says so.

use std::time::Duration;

use tss_esapi::constants::response_code::Tss2ResponseCodeKind;

/// How long the TPM gets for all the commands of one check.
pub const TPM_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the TPM facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// keyd-tpm's TPM Service (`/get_tpm_keys`, `/tpm_info`).
    KeydTpm,
    /// Our own tss-esapi context on the configured TCTI.
    Direct,
}

/// What the TPM holds that the checks look at.
#[derive(Debug, Clone)]
pub struct TpmFacts {
    pub via: Via,
    pub manufacturer: Option<String>,
    pub firmware_version: Option<String>,
    /// Persistent handles in use.
    pub persistent: Vec<u32>,
    /// EK and SRK as marshalled `TPM2B_PUBLIC` (size prefix included), if persisted.
    pub ek: Option<Vec<u8>>,
    pub srk: Option<Vec<u8>>,
    /// The EK certificates in NV.
    pub ek_certificates: Vec<crate::ek_cert::Found>,
}

/// The TCTI string keyd-tpm actually uses: a bare `device` means the resource manager.
pub fn normalize_tcti(tcti: &str) -> String {
    match tcti.trim() {
        "" | "device" => "device:/dev/tpmrm0".to_owned(),
        other => other.to_owned(),
    }
}

/// The device node of a `device:` TCTI, if it is one.
pub fn device_path(tcti: &str) -> Option<String> {
    let tcti = normalize_tcti(tcti);
    let rest = tcti.strip_prefix("device")?;
    match rest.strip_prefix(':') {
        Some(path) if !path.is_empty() => Some(path.to_owned()),
        Some(_) => Some("/dev/tpmrm0".to_owned()),
        None if rest.is_empty() => Some("/dev/tpmrm0".to_owned()),
        None => None,
    }
}

/// Runs blocking TPM work on its own thread and gives up after `timeout` (a TPM held by another
/// client can block a command indefinitely; the thread is left to finish on its own).
pub async fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tpm-check".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| format!("cannot start a thread for the TPM: {e}"))?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the TPM work ended without an answer".into()),
        Err(_) => Err(format!(
            "the TPM did not answer within {} s; another process may hold it (a raw /dev/tpm0 admits one \
             client: use device:/dev/tpmrm0)",
            timeout.as_secs()
        )),
    }
}

/// Opens an ESYS context on the TCTI (the password test runs only after the TPM answered once,
/// so the reasons an open fails are explained by `tpm-tcti-opens`).
/// Reads manufacturer, firmware, persistent handles and the EK and SRK public areas, with keyd-tpm's
/// read-only inspection (it creates and flushes nothing, and needs no hierarchy password).
pub fn read_facts(tcti: &str, auth_key_index: u32) -> Result<TpmFacts, String> {
    let found = keyd_tpm::tpm::inspect(tcti, auth_key_index).map_err(|e| e.to_string())?;
    Ok(TpmFacts {
        via: Via::Direct,
        manufacturer: Some(found.info.manufacturer),
        firmware_version: Some(found.info.firmware_version),
        persistent: parse_handles(found.info.persistent_handles.iter().map(String::as_str)),
        ek: found.endorsement_key,
        srk: found.storage_root_key,
        ek_certificates: found
            .info
            .ek_certificates
            .iter()
            .filter_map(|c| {
                let der = aziot_tpm_common::from_b64(&c.certificate).ok()?;
                Some(crate::ek_cert::Found { nv_index: c.nv_index.clone(), key: c.key.to_owned(), der })
            })
            .collect(),
    })
}

/// Handles written as `0x81000001`.
pub fn parse_handles<'a>(handles: impl Iterator<Item = &'a str>) -> Vec<u32> {
    handles
        .filter_map(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok())
        .collect()
}

/// What the TPM said about one hierarchy password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// TPM_RC_BAD_AUTH / TPM_RC_AUTH_FAIL: the password is wrong.
    Rejected,
    /// The test itself failed (hierarchy disabled, TPM error).
    Failed(String),
}

/// Proves the owner and endorsement passwords without changing anything: for each hierarchy, a
/// trial policy session gets TPM2_PolicySecret authorized by the hierarchy's password. The TPM
/// checks that authorization before it runs the command; a trial session only accumulates a
/// digest and yields nothing usable, and it is flushed at once. Owner and endorsement
/// authorizations are not dictionary-attack protected (only lockoutAuth is), so a wrong password
/// costs no lockout. Passwords are taken with a trailing NUL, as keyd-tpm and upstream set them,
/// and only key the HMAC of a session salted as keyd-tpm's are (`state_dir` holds its session
/// key): they never cross the bus.
pub fn test_hierarchy_auth(
    tcti: &str,
    state_dir: &std::path::Path,
    owner: &str,
    endorsement: &str,
) -> Result<[(&'static str, Verdict); 2], String> {
    let verdict = |is_owner: bool, password: &str| {
        if password.len() > 63 {
            return Verdict::Failed("the password is longer than the TPM accepts (63 bytes)".into());
        }
        match keyd_tpm::tpm::test_hierarchy_password(tcti, state_dir, is_owner, password) {
            Ok(Ok(())) => Verdict::Accepted,
            Ok(Err(tss_esapi::Error::Tss2Error(rc)))
                if matches!(rc.kind(), Some(Tss2ResponseCodeKind::BadAuth | Tss2ResponseCodeKind::AuthFail)) =>
            {
                Verdict::Rejected
            }
            Ok(Err(e)) => Verdict::Failed(format!("TPM2_PolicySecret failed: {e}")),
            Err(e) => Verdict::Failed(e.to_string()),
        }
    };
    Ok([("owner", verdict(true, owner)), ("endorsement", verdict(false, endorsement))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tctis_name_their_node() {
        assert_eq!(device_path("device").as_deref(), Some("/dev/tpmrm0"));
        assert_eq!(device_path("").as_deref(), Some("/dev/tpmrm0"));
        assert_eq!(device_path("device:/dev/tpm0").as_deref(), Some("/dev/tpm0"));
        assert_eq!(device_path("swtpm:host=127.0.0.1,port=2321"), None);
        assert_eq!(device_path("tabrmd"), None);
        assert_eq!(device_path("devicex"), None);
    }

    #[test]
    fn handles_parse_from_hex() {
        assert_eq!(
            parse_handles(["0x81000001", "0x81010001", "junk"].into_iter()),
            [0x8100_0001, 0x8101_0001]
        );
    }

    #[test]
    fn a_bad_tcti_string_says_what_is_expected() {
        let verdicts = test_hierarchy_auth("nosuchtcti:foo", std::path::Path::new("/nonexistent"), "", "").unwrap();
        for (hierarchy, verdict) in verdicts {
            assert!(matches!(&verdict, Verdict::Failed(e) if e.contains("nosuchtcti")), "{hierarchy}: {verdict:?}");
        }
    }
}
