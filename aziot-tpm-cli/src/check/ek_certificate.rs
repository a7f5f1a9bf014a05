//! `tpm-ek-certificate`: the EK certificates in NV verify against the TPM makers' CAs of the
//! trust bundle, and the RSA one's key is the EK at 0x81010001 (see `ek_cert`). DPS does not
//! need a certificate, so none, or one that does not verify, is a warning: without a verified
//! certificate nothing shows that the EK the device enrolls with is a genuine TPM's.

use serde_json::json;

use super::context::Context;
use super::outcome::{CheckOutput, CheckResult};
use crate::ek_cert::{self, Bundle, Verdict};

pub fn check(ctx: &Context) -> CheckOutput {
    let Some(Ok(facts)) = &ctx.tpm else {
        return CheckOutput::new(CheckResult::Skipped, json!({}));
    };
    let bundle = Bundle::load(&ctx.opts.ek_trust_bundle);
    let checks = ek_cert::verify_all(&facts.ek_certificates, facts.ek.as_deref(), &bundle);
    let info = json!({"trust_bundle": bundle.describe(), "certificates": checks});
    let result = if checks.is_empty() {
        CheckResult::warning(
            "the TPM has no EK certificate in NV (0x01c00002, 0x01c0000a or the high range): DPS attests without one, \
             but nothing shows that this EK is a genuine TPM's; TPMs from the major makers ship with one, a simulator \
             or some firmware TPMs do not",
        )
    } else if checks.iter().all(|c| c.verdict == Verdict::Verified) {
        CheckResult::Ok
    } else {
        let mut lines: Vec<String> = checks.iter().filter(|c| c.verdict != Verdict::Verified).map(ek_cert::line).collect();
        if checks.iter().any(|c| c.verdict == Verdict::NoTrustBundle) {
            lines.push(format!(
                "put the TPM maker's EK CA certificates (PEM) at {}, or name them with --ek-trust-bundle",
                ctx.opts.ek_trust_bundle.display()
            ));
        }
        CheckResult::warning(lines.join("\n"))
    };
    CheckOutput::new(result, info)
}
