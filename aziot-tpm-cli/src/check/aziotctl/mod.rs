//! The `aziotctl` wrapper: how our checks reach `iotedge check`.
//!
//! `iotedge check` runs `aziotctl check -o=json-stream` and shows what it streams. Our package
//! dpkg-diverts upstream's `/usr/bin/aziotctl` to `/usr/bin/aziotctl.distrib` and installs
//! `/usr/bin/aziotctl` as a symlink to `aziot-tpm`, which acts as this wrapper when called by that
//! name. Every command goes to the real aziotctl unchanged (exec, same arguments, exit code and
//! terminal), except:
//!
//! * `check`: runs the real `check -o json-stream` (with the IoT Hub from the provisioning state
//!   when none is given, so upstream's hub connectivity checks run on DPS devices too) next to
//!   ours, and shows one merged result in the requested format (see `merge`), with one top-level
//!   `additional_info` carrying `iothub_hostname`. Exit code as `aziot-tpm check`.
//! * `check-list`: upstream's list with our checks added.
//!
//! If the real aziotctl is missing or fails, `check` still shows our checks (plus a note), and
//! the commands admins are told to run (`config apply`, `system reprovision`, `system restart`,
//! ...) are done by aziot-tpm (`without_upstream`); the rest exit 127 saying what is missing.

mod merge;
mod without_upstream;

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::Parser;
use serde_json::{json, Value};

use super::context::Context;
use super::outcome::{CheckList, CheckMeta, CheckOutput, CheckResult, StreamEntry};
use super::render::{self, Format, Renderer};
use super::{catalogue, execute, host_info, print_list, runtime, Args, Sink};

/// Where the diversion puts upstream's aziotctl.
pub const REAL_AZIOTCTL: &str = "/usr/bin/aziotctl.distrib";
/// Overrides [`REAL_AZIOTCTL`] (tests, unusual layouts).
pub const REAL_AZIOTCTL_ENV: &str = "AZIOT_TPM_REAL_AZIOTCTL";
/// The name that makes `aziot-tpm` act as the wrapper.
pub const NAME: &str = "aziotctl";
/// ID of the note about upstream's checks (missing, or failed).
const NOTE_ID: &str = "aziot-identity-service-checks";
/// Exit code when a command needs the real aziotctl and it is not there (as a shell's).
const NOT_FOUND: u8 = 127;

/// True when run as `aziotctl` (through the symlink).
pub fn invoked_as_aziotctl() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == OsStr::new(NAME)))
        .unwrap_or(false)
}

pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("check") => check(&args[1..]),
        Some("check-list") => check_list(&args[1..]),
        _ => pass_through(&args),
    }
}

/// The real aziotctl, unless it is missing or is this program (a loop).
fn real_aziotctl() -> Result<PathBuf, String> {
    let path = std::env::var_os(REAL_AZIOTCTL_ENV).map_or_else(|| PathBuf::from(REAL_AZIOTCTL), PathBuf::from);
    let real = std::fs::canonicalize(&path).map_err(|e| {
        format!(
            "upstream's aziotctl is not at {} ({e}); install aziot-identity-service for its commands",
            path.display()
        )
    })?;
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    if me.as_deref() == Some(real.as_path()) {
        return Err(format!(
            "{} is this wrapper itself, not upstream's aziotctl; reinstall aziot-identity-service",
            path.display()
        ));
    }
    Ok(path)
}

fn pass_through(args: &[OsString]) -> ExitCode {
    match real_aziotctl() {
        Ok(real) => {
            // exec only returns on failure.
            let e = Command::new(&real).arg0(NAME).args(args).exec();
            eprintln!("aziotctl: cannot run {}: {e}", real.display());
            ExitCode::from(NOT_FOUND)
        }
        Err(missing) => without_upstream::run(args, &missing),
    }
}

#[derive(Parser)]
#[command(
    name = "aziotctl check",
    about = "Check for common config and deployment issues, TPM checks included"
)]
struct CheckCli {
    #[command(flatten)]
    args: Args,
}

fn check(rest: &[OsString]) -> ExitCode {
    let cli =
        match CheckCli::try_parse_from(std::iter::once(OsString::from("aziotctl check")).chain(rest.iter().cloned())) {
            Ok(cli) => cli,
            Err(e) if e.use_stderr() && real_aziotctl().is_ok() => {
                // An option we do not know may be one a newer upstream has: let it decide.
                let mut all = vec![OsString::from("check")];
                all.extend(rest.iter().cloned());
                return pass_through(&all);
            }
            Err(e) => e.exit(),
        };
    let args = cli.args;
    if args.list {
        return check_list_with(args.output);
    }
    match merged_check(&args) {
        Ok(true) => ExitCode::from(1),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aziotctl: {e}");
            ExitCode::from(1)
        }
    }
}

/// Our results, held until upstream's stream says where they go.
#[derive(Default)]
struct Collector {
    sections: Vec<(String, Vec<(CheckMeta, CheckOutput)>)>,
    stopped: bool,
}

impl Sink for Collector {
    fn section(&mut self, name: &str) -> io::Result<()> {
        self.sections.push((name.to_owned(), Vec::new()));
        Ok(())
    }
    fn check(&mut self, meta: CheckMeta, output: CheckOutput) -> io::Result<()> {
        self.stopped |= matches!(output.result, CheckResult::Fatal { .. });
        if let Some((_, checks)) = self.sections.last_mut() {
            checks.push((meta, output));
        }
        Ok(())
    }
    fn stopped(&self) -> bool {
        self.stopped
    }
}

/// Runs upstream's checks and ours side by side and shows them merged; true if a check failed.
fn merged_check(args: &Args) -> Result<bool, String> {
    let runtime = runtime().map_err(|f| f.message)?;
    let mut ctx = Context::load(args.options());
    let hub = ctx.iothub_hostname();

    // Upstream first, so it runs while ours do.
    let upstream = real_aziotctl().map(|real| spawn_upstream(&real, args, hub.as_deref()));
    let mut ours = Collector::default();
    runtime
        .block_on(execute(args, &mut ctx, &mut ours))
        .map_err(|e| e.to_string())?;

    let color = args.output == Format::Text && render::stdout_wants_color();
    let mut renderer = Renderer::new(
        io::stdout().lock(),
        args.output,
        args.verbose,
        args.warnings_as_errors,
        color,
    );
    let mut merger = merge::Merger::new(&mut renderer, ours.sections);
    let mut upstream_info = None;
    let note = match upstream {
        Err(missing) => Some((CheckResult::Ignored, json!({"reason": missing}))),
        Ok(Err(e)) => Some((CheckResult::warning(e), json!({}))),
        Ok(Ok(child)) => {
            let (info, problem) = stream_upstream(child, &mut merger).map_err(|e| e.to_string())?;
            upstream_info = info;
            problem.map(|p| (CheckResult::warning(p), json!({})))
        }
    };
    if let Some((result, info)) = note {
        let meta = CheckMeta {
            id: NOTE_ID.into(),
            description: "aziot-identity-service's own checks ran (aziotctl.distrib)".into(),
        };
        merger
            .note(meta, CheckOutput::new(result, info))
            .map_err(|e| e.to_string())?;
    }
    merger.finish().map_err(|e| e.to_string())?;
    let ours_info = serde_json::to_value(host_info::AdditionalInfo::collect(hub)).unwrap_or_default();
    let counts = renderer
        .finish(merge_additional_info(upstream_info, ours_info))
        .map_err(|e| e.to_string())?;
    Ok(counts.failed())
}

/// The arguments upstream gets: ours translated, the output forced to json-stream.
fn upstream_args(args: &Args, hub: Option<&str>) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["check".into(), "-o".into(), "json-stream".into()];
    let dont_run: Vec<&str> = args
        .dont_run
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !dont_run.is_empty() {
        out.extend(["--dont-run".into(), dont_run.join(" ").into()]);
    }
    let options = [
        ("--iothub-hostname", args.iothub_hostname.as_deref().or(hub)),
        ("--proxy-uri", args.proxy_uri.as_deref()),
        ("--expected-aziot-version", args.expected_aziot_version.as_deref()),
        ("--ntp-server", args.ntp_server.as_deref()),
    ];
    for (flag, value) in options {
        if let Some(value) = value {
            out.extend([flag.into(), value.into()]);
        }
    }
    if args.warnings_as_errors {
        out.push("--warnings-as-errors".into());
    }
    out
}

struct Upstream {
    child: std::process::Child,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn_upstream(real: &Path, args: &Args, hub: Option<&str>) -> Result<Upstream, String> {
    let mut child = Command::new(real)
        .arg0(NAME)
        .args(upstream_args(args, hub))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", real.display()))?;
    let mut err = child.stderr.take();
    // Drained on its own thread so a chatty upstream cannot block on a full pipe.
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(err) = err.as_mut() {
            let _ = err.read_to_string(&mut text);
        }
        text
    });
    Ok(Upstream { child, stderr })
}

/// Feeds upstream's stream into the merger as it arrives. Returns its `additional_info` and, if
/// it failed, what went wrong.
fn stream_upstream<S: Sink>(
    mut upstream: Upstream,
    merger: &mut merge::Merger<'_, S>,
) -> io::Result<(Option<Value>, Option<String>)> {
    let mut info = None;
    let mut problem = None;
    if let Some(stdout) = upstream.child.stdout.take() {
        for entry in serde_json::Deserializer::from_reader(stdout).into_iter::<StreamEntry>() {
            match entry {
                Ok(entry) => {
                    if let Some(i) = merger.upstream(entry)? {
                        info = Some(i);
                    }
                }
                Err(e) => {
                    problem = Some(format!("upstream aziotctl's output is not a check stream: {e}"));
                    break;
                }
            }
        }
    }
    let status = upstream.child.wait()?;
    let stderr = upstream.stderr.join().unwrap_or_default();
    if problem.is_none() && !status.success() {
        problem = Some(format!("upstream aziotctl check exited with {status}"));
    }
    Ok((info, problem.map(|p| with_stderr(p, &stderr))))
}

fn with_stderr(problem: String, stderr: &str) -> String {
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    if tail.is_empty() {
        return problem;
    }
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{problem}; its last words: {}", tail.join(" / "))
}

/// Upstream's `additional_info`, with our IoT Hub when it has none (it never has one on a DPS
/// device); ours alone when upstream gave none.
fn merge_additional_info(upstream: Option<Value>, ours: Value) -> Value {
    match upstream {
        Some(Value::Object(mut map)) => {
            if !map.get("iothub_hostname").is_some_and(Value::is_string) {
                if let Some(hub) = ours.get("iothub_hostname") {
                    map.insert("iothub_hostname".into(), hub.clone());
                }
            }
            Value::Object(map)
        }
        _ => ours,
    }
}

#[derive(Parser)]
#[command(
    name = "aziotctl check-list",
    about = "List the checks that are run for 'aziotctl check', TPM checks included"
)]
struct CheckListCli {
    /// Output format: text or json.
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t)]
    output: Format,
}

fn check_list(rest: &[OsString]) -> ExitCode {
    let cli = match CheckListCli::try_parse_from(
        std::iter::once(OsString::from("aziotctl check-list")).chain(rest.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    check_list_with(cli.output)
}

fn check_list_with(format: Format) -> ExitCode {
    let upstream: CheckList = real_aziotctl()
        .ok()
        .and_then(|real| {
            Command::new(real)
                .arg0(NAME)
                .args(["check-list", "-o", "json"])
                .stderr(Stdio::null())
                .output()
                .ok()
        })
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default();
    match print_list(format, &merge_lists(upstream, catalogue())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aziotctl: cannot write the list: {e}");
            ExitCode::from(1)
        }
    }
}

/// Upstream's catalogue with ours added: our description for shared IDs, our other checks at
/// the end of the section of the same name.
fn merge_lists(mut upstream: CheckList, ours: Vec<(String, Vec<CheckMeta>)>) -> Vec<(String, Vec<CheckMeta>)> {
    for (section, checks) in ours {
        for check in checks {
            let existing = upstream.values_mut().flatten().find(|c| c.id == check.id);
            match existing {
                Some(c) => c.description = check.description,
                None => upstream.entry(section.clone()).or_default().push(check),
            }
        }
    }
    upstream.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        CheckCli::try_parse_from(std::iter::once("aziotctl check").chain(extra.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn upstream_gets_json_stream_and_the_provisioned_hub() {
        let a = args(&[
            "-o=text",
            "--dont-run",
            "tpm-ek-srk hostname",
            "--proxy-uri",
            "http://proxy:3128",
            "--warnings-as-errors",
        ]);
        let out: Vec<String> = upstream_args(&a, Some("hub.example"))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            out,
            [
                "check",
                "-o",
                "json-stream",
                "--dont-run",
                "tpm-ek-srk hostname",
                "--iothub-hostname",
                "hub.example",
                "--proxy-uri",
                "http://proxy:3128",
                "--warnings-as-errors"
            ]
        );
        let given = args(&["--iothub-hostname", "other.example"]);
        let out = upstream_args(&given, Some("hub.example"));
        assert!(out
            .windows(2)
            .any(|w| w[0] == "--iothub-hostname" && w[1] == "other.example"));
    }

    #[test]
    fn iotedge_style_arguments_parse() {
        let a = args(&[
            "-o=json-stream",
            "--dont-run",
            "a b",
            "--expected-aziot-version",
            "1.5.0",
        ]);
        assert_eq!(a.output, Format::JsonStream);
        assert_eq!(a.dont_run, ["a", "b"]);
    }

    #[test]
    fn additional_info_gains_the_hub_only_when_upstream_has_none() {
        let ours = json!({"now": "ours", "iothub_hostname": "hub.example"});
        let merged = merge_additional_info(Some(json!({"now": "up", "os": {}})), ours.clone());
        assert_eq!(merged, json!({"now": "up", "os": {}, "iothub_hostname": "hub.example"}));
        let kept = merge_additional_info(Some(json!({"iothub_hostname": "given.example"})), ours.clone());
        assert_eq!(kept["iothub_hostname"], "given.example");
        assert_eq!(merge_additional_info(None, ours.clone()), ours);
    }

    #[test]
    fn lists_merge_by_id_and_section() {
        let mut upstream = CheckList::new();
        upstream.insert(
            "Configuration checks".into(),
            vec![CheckMeta {
                id: "tpmd-running".into(),
                description: "tpmd is running".into(),
            }],
        );
        let merged = merge_lists(upstream, catalogue());
        let names: Vec<&str> = merged.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["Configuration checks", "Connectivity checks", "TPM checks"]);
        let config = &merged[0].1;
        assert_eq!(config.iter().filter(|c| c.id == "tpmd-running").count(), 1);
        assert!(config.iter().any(|c| c.id == "keyd-config-well-formed"));
    }

    #[test]
    fn stderr_tail_is_kept_short() {
        assert_eq!(with_stderr("p".into(), ""), "p");
        assert_eq!(
            with_stderr("p".into(), "1\n2\n3\n4\n5\n6\n7\n"),
            "p; its last words: 3 / 4 / 5 / 6 / 7"
        );
    }
}
