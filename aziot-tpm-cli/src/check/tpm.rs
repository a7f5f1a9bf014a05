//! TPM checks: the device node keyd-tpm opens, the TCTI answering, the EK and SRK at their
//! persistent handles (and the EK still being the one the device registered with), the DPS auth
//! key present when the device is provisioned, and the hierarchy passwords accepted.
//!
//! The TPM is read through keyd-tpm (`/get_tpm_keys`, `/tpm_info`) when it runs, else directly.
//! The hierarchy passwords are always tested directly: no TPM Service route does that.

use std::path::Path;

use serde_json::json;
use tss_esapi::structures::Public;
use tss_esapi::traits::UnMarshall;

use super::context::Context;
use super::device_node::{self, Node};
use super::outcome::{CheckOutput, CheckResult};
use super::tpm_direct::{self, TpmFacts, Verdict, Via, TPM_TIMEOUT};

/// PolicySecret(TPM_RH_ENDORSEMENT): the authPolicy of the TCG default EK templates.
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7,
    0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

fn hex(handle: u32) -> String {
    format!("{handle:#010x}")
}

pub fn device_node(ctx: &Context) -> CheckOutput {
    let Some(tpmd) = ctx.tpmd.get() else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let tcti = tpm_direct::normalize_tcti(&tpmd.shared.tcti);
    let Some(path) = tpm_direct::device_path(&tcti) else {
        return CheckOutput::new(
            CheckResult::Ignored,
            json!({"tcti": tcti, "reason": "not a device TCTI"}),
        );
    };
    let user = &ctx.opts.tpm_user;
    let mut info = json!({"tcti": tcti, "path": path, "user": user});
    let result = match device_node::inspect(Path::new(&path)) {
        Err(e) => CheckResult::error(e),
        Ok(Node::Missing) => CheckResult::error(format!(
            "{path} does not exist: this machine has no TPM 2.0 enabled in its firmware, or the kernel has no TPM \
             driver (tpm_tis, tpm_crb){}. Check `ls -l /dev/tpm*` and the firmware's TPM setting.",
            if path.contains("tpmrm") { ", or no TPM resource manager (/dev/tpmrm0 needs Linux 4.12 or later)" } else { "" }
        )),
        Ok(Node::NotACharDevice) => CheckResult::error(format!(
            "{path} is not a character device; set tcti to the TPM's device node (device:/dev/tpmrm0) in the [tpm] table of /etc/aziot/config.toml"
        )),
        Ok(Node::CharDevice(perms)) => {
            let (owner, group) = (device_node::user_name(perms.uid), device_node::group_name(perms.gid));
            info["owner"] = json!(owner);
            info["group"] = json!(group);
            info["mode"] = json!(format!("{:04o}", perms.mode));
            let described = format!("{path} (owner {owner}, group {group}, mode {:04o})", perms.mode);
            match device_node::lookup_user(user) {
                Err(e) => CheckResult::warning(e),
                Ok(None) => CheckResult::warning(format!(
                    "the user {user} does not exist, so whether keyd-tpm may open {described} cannot be told; \
                     install the aziot-tpm package, or name the user keyd-tpm runs as with --tpm-user"
                )),
                Ok(Some(u)) if !device_node::can_read_write(perms, &u) => {
                    CheckResult::error(format!("{user} cannot read and write {described}; {}", access_fix(perms, user, &group)))
                }
                Ok(Some(_)) if path == "/dev/tpm0" => CheckResult::warning(format!(
                    "{path} is the raw TPM without the kernel's resource manager: only one process may open it, so \
                     nothing else (tpm2-tools, this check) can use the TPM while keyd-tpm runs; set tcti = \"device:/dev/tpmrm0\""
                )),
                Ok(Some(_)) => CheckResult::Ok,
            }
        }
    };
    CheckOutput::new(result, info)
}

fn access_fix(perms: device_node::Perms, user: &str, group: &str) -> String {
    if perms.mode & 0o060 == 0o060 {
        format!("add it to the group {group} (`usermod -aG {group} {user}`) and restart keyd-tpm")
    } else {
        format!(
            "let the tss group use the node with a udev rule (KERNEL==\"tpmrm[0-9]*\", GROUP=\"tss\", MODE=\"0660\" in \
             /etc/udev/rules.d/, then `udevadm trigger`), add {user} to tss (`usermod -aG tss {user}`) and restart keyd-tpm"
        )
    }
}

pub async fn tcti_opens(ctx: &mut Context) -> CheckOutput {
    let tcti = ctx.tpmd.get().map(|c| tpm_direct::normalize_tcti(&c.shared.tcti));
    let daemon_error = match &ctx.tpmd_answer {
        Some(answer) => match (&answer.keys, &answer.info) {
            (Ok((ek, srk)), Some(Ok(info))) => {
                let facts = facts_from_daemon(ek, srk, info);
                let output = CheckOutput::new(CheckResult::Ok, describe(&facts, tcti.as_deref()));
                ctx.tpm = Some(Ok(facts));
                return output;
            }
            (Err(e), _) | (Ok(_), Some(Err(e))) => Some(e.clone()),
            // Upstream aziot-tpmd has no /tpm_info: read the handles ourselves.
            (Ok(_), None) => None,
        },
        None => None,
    };
    let (Some(tcti), Some(tpmd)) = (tcti, ctx.tpmd.get()) else {
        ctx.tpm = Some(Err("tpmd's configuration could not be loaded".into()));
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let direct = {
        let (tcti, index) = (tcti.clone(), tpmd.shared.auth_key_index);
        tpm_direct::with_timeout(TPM_TIMEOUT, move || tpm_direct::read_facts(&tcti, index)).await
    };
    let output = match (&direct, daemon_error) {
        (Ok(facts), None) => CheckOutput::new(CheckResult::Ok, describe(facts, Some(&tcti))),
        (Ok(facts), Some(daemon)) => CheckOutput::new(
            CheckResult::warning(format!(
                "keyd-tpm cannot use the TPM ({daemon}), but it answers on {tcti} when opened directly; restart keyd-tpm"
            )),
            describe(facts, Some(&tcti)),
        ),
        (Err(e), daemon) => {
            let mut result = CheckResult::error(e.clone());
            if let Some(daemon) = daemon {
                result = result.caused_by(format!("keyd-tpm reports: {daemon}"));
            }
            CheckOutput::new(result, json!({"tcti": tcti}))
        }
    };
    ctx.tpm = Some(direct);
    output
}

fn facts_from_daemon(ek: &[u8], srk: &[u8], info: &serde_json::Value) -> TpmFacts {
    let text = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let handles = info["persistent_handles"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    TpmFacts {
        via: Via::KeydTpm,
        manufacturer: text("manufacturer"),
        firmware_version: text("firmware_version"),
        persistent: tpm_direct::parse_handles(handles.iter().filter_map(|h| h.as_str())),
        ek: Some(ek.to_vec()),
        srk: Some(srk.to_vec()),
        ek_certificates: info.as_object().map(crate::ek_cert::found_in).unwrap_or_default(),
    }
}

fn describe(facts: &TpmFacts, tcti: Option<&str>) -> serde_json::Value {
    json!({
        "tcti": tcti,
        "via": facts.via,
        "manufacturer": facts.manufacturer,
        "firmware_version": facts.firmware_version,
        "persistent_handles": facts.persistent.iter().map(|h| hex(*h)).collect::<Vec<_>>(),
    })
}

pub fn ek_srk(ctx: &Context) -> CheckOutput {
    let Some(Ok(facts)) = &ctx.tpm else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let (ek_handle, srk_handle) = (aziot_tpm_common::EK_HANDLE, aziot_tpm_common::SRK_HANDLE);
    let mut info = json!({"ek_handle": hex(ek_handle), "srk_handle": hex(srk_handle)});
    let missing = |what: &str, handle: u32| {
        CheckResult::error(format!(
            "no {what} at {}: keyd-tpm creates it when it starts (authorized by the endorsement and owner \
             passwords); start keyd-tpm and read its log",
            hex(handle)
        ))
    };
    let (Some(ek), Some(srk)) = (&facts.ek, &facts.srk) else {
        let result = if facts.ek.is_none() {
            missing("endorsement key (EK)", ek_handle)
        } else {
            missing("storage root key (SRK)", srk_handle)
        };
        return CheckOutput::new(result, info);
    };
    let derived = aziot_tpm_common::registration_id(ek);
    let configured = ctx.identityd.get().and_then(|c| c.dps.registration_id.clone());
    let registered = ctx.provisioning.registered_id.clone();
    info["registration_id"] = json!(derived);
    info["configured_registration_id"] = json!(configured);
    info["registered_registration_id"] = json!(registered);

    let provisioned = ctx.provisioning.device().is_some();
    let result = match (&configured, &registered) {
        (None, Some(registered)) if provisioned && *registered != derived => CheckResult::error(format!(
            "the EK at {} is not the one this device registered with: it gives the registration ID {derived}, but the \
             device registered as {registered}. The TPM was cleared or replaced, so DPS will not attest it under the old \
             enrollment: put the new EK (`aziot-tpm tpm-info`) into the enrollment and run `aziot-tpm reprovision`",
            hex(ek_handle)
        )),
        _ => match (key_shape(ek, true), key_shape(srk, false)) {
            (Err(e), _) => CheckResult::warning(format!("the object at {} {e}", hex(ek_handle))),
            (_, Err(e)) => CheckResult::warning(format!("the object at {} {e}", hex(srk_handle))),
            _ => CheckResult::Ok,
        },
    };
    CheckOutput::new(result, info)
}

/// Whether a TPM2B_PUBLIC looks like an EK (TCG template: restricted decryption key bound to the
/// TPM, used through PolicySecret(endorsement)) or an SRK (restricted decryption key).
fn key_shape(tpm2b: &[u8], ek: bool) -> Result<(), String> {
    let public = tpm2b
        .get(2..)
        .ok_or_else(|| "has an empty public area".to_owned())
        .and_then(|body| {
            Public::unmarshall(body).map_err(|e| format!("has a public area that does not parse ({e})"))
        })?;
    let attrs = public.object_attributes();
    if !(attrs.restricted() && attrs.decrypt() && !attrs.sign_encrypt() && attrs.fixed_tpm()) {
        return Err(
            "is not a restricted decryption key bound to this TPM; it cannot serve as a DPS attestation key".into(),
        );
    }
    if ek && (!attrs.admin_with_policy() || public.auth_policy().value() != EK_POLICY) {
        return Err(
            "is not made from the TCG EK template (its policy is not PolicySecret(endorsement)); \
                    an EK certificate from the TPM maker will not match it"
                .into(),
        );
    }
    Ok(())
}

pub fn auth_key(ctx: &Context) -> CheckOutput {
    let (Some(Ok(facts)), Some(handle)) = (&ctx.tpm, ctx.auth_key_handle()) else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let present = facts.persistent.contains(&handle);
    let device = ctx.provisioning.device();
    let info = json!({"auth_key_handle": hex(handle), "present": present, "provisioned": device.is_some()});
    let result = match (device, present, &ctx.provisioning.device_info) {
        (Some(_), true, _) | (None, true, _) => CheckResult::Ok,
        (Some(d), false, _) => CheckResult::error(format!(
            "the device is provisioned (device {} on {}) but the TPM has no DPS auth key at {}: every SAS token \
             identityd signs fails. Run `aziot-tpm reprovision` to register again and import a new key",
            d.device_id,
            d.hub_name,
            hex(handle)
        )),
        (None, false, Some(Err(e))) => CheckResult::warning(e.clone()),
        (None, false, _) => CheckResult::Ignored,
    };
    CheckOutput::new(result, info)
}

pub async fn hierarchy_auth(ctx: &Context) -> CheckOutput {
    let (Some(tpmd), Some(Ok(_))) = (ctx.tpmd.get(), &ctx.tpm) else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let tcti = tpm_direct::normalize_tcti(&tpmd.shared.tcti);
    let owner = tpmd.shared.hierarchy_authorization.owner.clone();
    let endorsement = tpmd.shared.hierarchy_authorization.endorsement.clone();
    let set = json!({"owner": !owner.is_empty(), "endorsement": !endorsement.is_empty()});
    let tested = {
        let (tcti, homedir) = (tcti.clone(), tpmd.homedir.clone());
        tpm_direct::with_timeout(TPM_TIMEOUT, move || {
            tpm_direct::test_hierarchy_auth(&tcti, &homedir, &owner, &endorsement)
        })
        .await
    };
    let verdicts = match tested {
        Ok(v) => v,
        Err(e) => {
            return CheckOutput::new(
                CheckResult::warning(format!("the hierarchy passwords could not be tested: {e}")),
                json!({"tcti": tcti, "password_set": set}),
            )
        }
    };
    let mut info = json!({"tcti": tcti, "password_set": set, "method": "TPM2_PolicySecret in a trial session, authorized by a salted HMAC session"});
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for (hierarchy, verdict) in &verdicts {
        info[hierarchy] = json!(match verdict {
            Verdict::Accepted => "accepted",
            Verdict::Rejected => "rejected",
            Verdict::Failed(_) => "untested",
        });
        match verdict {
            Verdict::Accepted => {}
            Verdict::Rejected => errors.push(rejected(hierarchy, set[hierarchy].as_bool().unwrap_or(false))),
            Verdict::Failed(e) => warnings.push(format!("the {hierarchy} password could not be tested: {e}")),
        }
    }
    let result = if !errors.is_empty() {
        CheckResult::error(errors.join("\n"))
    } else if !warnings.is_empty() {
        CheckResult::warning(warnings.join("\n"))
    } else {
        CheckResult::Ok
    };
    CheckOutput::new(result, info)
}

fn rejected(hierarchy: &str, configured: bool) -> String {
    let what = if configured {
        format!(
            "the TPM rejected the {hierarchy} password set in tpmd's config ([hierarchy_authorization] {hierarchy})"
        )
    } else {
        format!("the TPM's {hierarchy} hierarchy has a password, but tpmd's config sets none")
    };
    format!(
        "{what}: keyd-tpm cannot create the EK or SRK or import a DPS key with it. Set the right password as \
         [tpm.hierarchy_authorization] {hierarchy} in /etc/aziot/config.toml and run `aziot-tpm config apply`. \
         (Nothing on the TPM was changed, and a wrong owner or endorsement password does not count towards \
         dictionary-attack lockout.)"
    )
}
