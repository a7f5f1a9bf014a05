//! A stand-in for `iotedge check`'s use of aziotctl (Azure/iotedge,
//! `edgelet/iotedge/src/check/mod.rs`), written from its behaviour, not its code: it spawns
//! `<aziot_bin> check -o=json-stream`, adding `--iothub-hostname`, `--proxy-uri`, `--dont-run`
//! (one space-separated argument) and `--expected-aziot-version` when it has them; reads stdout
//! as a stream of JSON values of aziotctl's streaming type (a value that does not fit fails the
//! whole run, as there); shows each section as "<name> (aziot-identity-service)" and each check
//! like its own, stops at the first fatal result, and takes `iothub_hostname` (unless given) and
//! `local_gateway_hostname` from `additional_info` for its own hub connectivity checks.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

/// aziotctl-common's `CheckOutputSerializableStreaming`, declared independently of our crate.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Streaming {
    AdditionalInfo(Value),
    Section {
        name: String,
    },
    Check {
        #[serde(flatten)]
        meta: Meta,
        #[serde(flatten)]
        output: Output,
    },
}

#[derive(Deserialize)]
struct Meta {
    id: String,
    description: String,
}

#[derive(Deserialize)]
struct Output {
    result: Outcome,
    additional_info: Value,
}

#[derive(Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Outcome {
    Ok,
    Warning { details: Vec<String> },
    Ignored,
    Skipped,
    Fatal { details: Vec<String> },
    Error { details: Vec<String> },
}

/// One check as iotedge shows it.
#[derive(Debug, Clone)]
pub struct Shown {
    pub section: String,
    pub id: String,
    pub description: String,
    /// ok, warning, ignored, skipped, fatal or error.
    pub result: &'static str,
    pub details: Vec<String>,
}

/// What iotedge got out of aziotctl.
#[derive(Debug, Default)]
pub struct Seen {
    pub sections: Vec<String>,
    pub checks: Vec<Shown>,
    pub iothub_hostname: Option<String>,
    pub parent_hostname: Option<String>,
    /// The text iotedge prints for these checks.
    pub text: String,
}

impl Seen {
    pub fn check(&self, id: &str) -> &Shown {
        self.checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("iotedge did not see {id}: {self:#?}"))
    }

    pub fn count(&self, id: &str) -> usize {
        self.checks.iter().filter(|c| c.id == id).count()
    }
}

/// The options of `iotedge check` that reach aziotctl.
#[derive(Default)]
pub struct Options<'a> {
    pub iothub_hostname: Option<&'a str>,
    pub proxy_uri: Option<&'a str>,
    pub dont_run: &'a [&'a str],
    pub expected_aziot_version: Option<&'a str>,
}

/// Runs aziotctl as iotedge does; `Err` where iotedge would fail the whole check run.
pub fn iotedge_check(aziot_bin: &Path, env: &[(String, String)], options: &Options<'_>) -> Result<Seen, String> {
    let mut command = Command::new(aziot_bin);
    command
        .arg("check")
        .arg("-o=json-stream")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(hub) = options.iothub_hostname {
        command.arg("--iothub-hostname").arg(hub);
    }
    if let Some(proxy) = options.proxy_uri {
        command.arg("--proxy-uri").arg(proxy);
    }
    if !options.dont_run.is_empty() {
        command.arg("--dont-run").arg(options.dont_run.join(" "));
    }
    if let Some(version) = options.expected_aziot_version {
        command.arg("--expected-aziot-version").arg(version);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().map_err(|e| {
        format!(
            "(aziot-identity-service-error): cannot run {}: {e}",
            aziot_bin.display()
        )
    })?;
    let stdout = child.stdout.take().unwrap();
    let mut seen = Seen {
        iothub_hostname: options.iothub_hostname.map(str::to_owned),
        ..Seen::default()
    };
    let mut section = String::new();
    for value in serde_json::Deserializer::from_reader(stdout).into_iter::<Streaming>() {
        match value.map_err(|e| format!("aziotctl's output is not a check stream: {e}"))? {
            Streaming::Section { name } => {
                section = format!("{name} (aziot-identity-service)");
                seen.text
                    .push_str(&format!("{section}\n{}\n", "-".repeat(section.len())));
                seen.sections.push(section.clone());
            }
            Streaming::Check { meta, output } => {
                let _ = output.additional_info;
                let (result, details, line) = match output.result {
                    Outcome::Ok => ("ok", vec![], format!("\u{221a} {} - OK", meta.description)),
                    Outcome::Warning { details } => {
                        ("warning", details, format!("\u{203c} {} - Warning", meta.description))
                    }
                    Outcome::Ignored => ("ignored", vec![], String::new()),
                    Outcome::Skipped => ("skipped", vec![], String::new()),
                    Outcome::Fatal { details } => ("fatal", details, format!("\u{00d7} {} - Error", meta.description)),
                    Outcome::Error { details } => ("error", details, format!("\u{00d7} {} - Error", meta.description)),
                };
                if !line.is_empty() {
                    seen.text.push_str(&format!("{line}\n"));
                    if let Some(first) = details.first() {
                        seen.text.push_str(&format!("    {first}\n"));
                    }
                }
                seen.checks.push(Shown {
                    section: section.clone(),
                    id: meta.id,
                    description: meta.description,
                    result,
                    details,
                });
                if result == "fatal" {
                    break;
                }
            }
            Streaming::AdditionalInfo(info) => {
                if seen.iothub_hostname.is_none() {
                    seen.iothub_hostname = info.get("iothub_hostname").and_then(Value::as_str).map(str::to_owned);
                }
                seen.parent_hostname = info
                    .get("local_gateway_hostname")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
        }
    }
    let _ = child.wait();
    Ok(seen)
}
