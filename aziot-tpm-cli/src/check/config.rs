//! Configuration checks: each daemon's config loads the way the daemon loads it (upstream's
//! `config.toml` + `config.d/*.toml` rules, `AZIOT_<SVC>_CONFIG[_DIR]` overrides), and the
//! per-daemon files are not older than the super-config they were generated from.

use std::path::Path;
use std::time::SystemTime;

use aziot_config::Svc;
use serde_json::json;

use super::context::{Context, Loaded};
use super::outcome::{CheckOutput, CheckResult};

/// Where `svc`'s config is read from, for `additional_info` and messages.
fn paths(svc: Svc) -> serde_json::Value {
    let (file, dir) = svc.config_paths();
    json!({"config_file": file, "config_dir": dir})
}

fn well_formed<T>(svc: Svc, loaded: &Loaded<T>) -> CheckOutput {
    let result = match loaded {
        Loaded::Ok(_) => CheckResult::Ok,
        // As upstream: nothing after this can be trusted, so stop here.
        Loaded::Denied(message) => {
            CheckResult::fatal(format!("Could not read {}'s configuration: {message}", svc.name()))
        }
        Loaded::Invalid(message) => {
            CheckResult::error(format!("{}'s configuration is not well-formed: {message}", svc.name()))
        }
    };
    CheckOutput::new(result, paths(svc))
}

pub fn keyd(ctx: &Context) -> CheckOutput {
    well_formed(Svc::Keyd, &ctx.keyd)
}

pub fn tpmd(ctx: &Context) -> CheckOutput {
    well_formed(Svc::Tpmd, &ctx.tpmd)
}

pub fn identityd(ctx: &Context) -> CheckOutput {
    well_formed(Svc::Identityd, &ctx.identityd)
}

/// Like `aziotctl`: the super-config must not be newer than any daemon's `00-super.toml`. certd is
/// upstream's daemon and only checked where it is installed (its config dir exists).
pub fn up_to_date(ctx: &Context) -> CheckOutput {
    let super_config = &ctx.opts.super_config;
    let mut info = json!({"super_config": super_config});
    let result = match modified(super_config) {
        Ok(None) => CheckResult::Ignored,
        Ok(Some(super_time)) => compare(super_config, super_time, &mut info),
        Err(e) => CheckResult::error(e),
    };
    CheckOutput::new(result, info)
}

fn compare(super_config: &Path, super_time: SystemTime, info: &mut serde_json::Value) -> CheckResult {
    let mut checked = Vec::new();
    for svc in [Svc::Keyd, Svc::Certd, Svc::Identityd, Svc::Tpmd] {
        let (_, dir) = svc.config_paths();
        if svc == Svc::Certd && !dir.exists() {
            continue;
        }
        let generated = dir.join("00-super.toml");
        checked.push(generated.clone());
        match modified(&generated) {
            Err(e) => return CheckResult::error(e),
            Ok(None) => {
                return CheckResult::warning(format!(
                    "{} does not exist.\nDid you run 'aziot-tpm config apply'?",
                    generated.display()
                ))
            }
            Ok(Some(t)) if super_time > t => {
                return CheckResult::warning(format!(
                    "{} was modified after {}'s config\nYou must run 'aziot-tpm config apply' to update {}'s config with the latest config.toml",
                    super_config.display(),
                    svc.name(),
                    svc.name()
                ))
            }
            Ok(Some(_)) => {}
        }
    }
    info["generated"] = json!(checked);
    CheckResult::Ok
}

fn modified(path: &Path) -> Result<Option<SystemTime>, String> {
    match std::fs::metadata(path) {
        Ok(meta) => meta
            .modified()
            .map(Some)
            .map_err(|e| format!("cannot read the mtime of {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot inspect {}: {e}; run this command as root",
            path.display()
        )),
    }
}
