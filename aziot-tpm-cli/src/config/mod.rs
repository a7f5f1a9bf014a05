//! `aziot-tpm config apply`: the super-config `/etc/aziot/config.toml` written to each daemon's
//! `config.d/00-super.toml`, as upstream's `aziotctl config apply` writes them for DPS-TPM, then
//! the services restarted the way it restarts them.
//!
//! `super_config` reads the file, `validate` refuses what cannot work (naming the key), `render`
//! makes the four files, `users` finds their owners, `write` puts them in place, `restart` runs
//! systemctl. Everything is checked and rendered before the first file is touched.

mod error;
#[cfg(test)]
mod fuzz_tests;
mod render;
pub(crate) mod restart;
mod super_config;
mod users;
mod validate;
mod write;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::{Failure, Output};
use error::ApplyError;
use users::{ServiceUser, Users};
use write::Planned;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write the Keys, Certificates, Identity and TPM Services' configs from the super-config
    /// (DPS provisioning with TPM attestation), then restart the services.
    #[command(after_long_help = AFTER_HELP)]
    Apply(ApplyArgs),
}

const AFTER_HELP: &str = "\
Files written (each replaced whole, mode 0600):
  /etc/aziot/keyd/config.d/00-super.toml       owner aziotks (keyd-tpm)
  /etc/aziot/tpmd/config.d/00-super.toml       owner aziottpm (read by keyd-tpm before it drops root)
  /etc/aziot/identityd/config.d/00-super.toml  owner aziotid (identityd-dps)
  /etc/aziot/certd/config.d/00-super.toml      owner aziotcs (upstream's certd; skipped if not installed)

Before writing anything, the files it names are checked (a CA file, a payload) and an id_scope that
is the template's placeholder is refused.

Then, unless --no-restart: systemctl stop the aziot-{identityd,keyd,certd,tpmd} services, start their
sockets, start aziot-identityd.service (as `aziotctl config apply` does), then aziot-keyd.service. Each
start waits until the daemon tells systemd it is ready; each daemon is reported ready (with its
status) or failed (with its own last error), then the first provisioning outcome (up to 10 s).

Exit status: 0 applied; 1 writing failed, or a daemon did not start; 2 the super-config is invalid
(or a file it names cannot be used).

For package builds and tests: --root DIR (or AZIOT_TPM_ROOT) writes under DIR and does not restart;
AZIOT_TPM_USERS replaces the user lookup: `current` (every service user is you), or
`aziotks=UID[:GID],aziotid=NAME,...`.";

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The super-config to apply [default: /etc/aziot/config.toml, under --root if given]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Show what would be written (hierarchy passwords redacted); write and restart nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write the files but leave the services alone.
    #[arg(long)]
    no_restart: bool,
    /// Write under DIR instead of / (package builds, tests); implies --no-restart.
    #[arg(long, value_name = "DIR", env = "AZIOT_TPM_ROOT")]
    root: Option<PathBuf>,
    /// Restart the services even with --root.
    #[arg(long, conflicts_with = "no_restart")]
    restart: bool,
    /// Output format: text for people, json for scripts.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Apply(args) => apply(args),
    }
}

#[derive(Serialize)]
struct Report {
    config: PathBuf,
    dry_run: bool,
    /// `null`: identityd-dps derives it from the EK.
    registration_id: Option<String>,
    files: Vec<FileReport>,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
    restart: RestartReport,
}

#[derive(Serialize)]
struct FileReport {
    service: &'static str,
    path: PathBuf,
    owner: &'static str,
    uid: u32,
    gid: u32,
    mode: String,
    /// Whether the content differs from the file that was there (`null`: could not read it).
    changed: Option<bool>,
    /// Only in a dry run: what would be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

#[derive(Serialize)]
struct Skipped {
    service: &'static str,
    path: PathBuf,
    reason: String,
}

#[derive(Serialize, Default)]
struct RestartReport {
    performed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    units: Vec<restart::Step>,
    /// How each daemon came up (ready, or failed with its error).
    daemons: Vec<restart::Ready>,
    /// Where provisioning stands a few seconds after identityd-dps started.
    #[serde(skip_serializing_if = "Option::is_none")]
    provisioning: Option<String>,
    total_ms: u64,
}

fn apply(args: ApplyArgs) -> Result<(), Failure> {
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| under(&root, "/etc/aziot/config.toml"));
    let fail = |e: ApplyError| match e {
        ApplyError::Toml { .. } | ApplyError::Invalid { .. } => Failure::usage(e.to_string()),
        _ => Failure::failed(e.to_string()),
    };

    let text = std::fs::read_to_string(&config).map_err(|source| {
        fail(ApplyError::ReadConfig {
            path: config.clone(),
            source,
        })
    })?;
    let parsed = super_config::parse(&config, &text).map_err(fail)?;
    let mut validated = validate::validate(&config, parsed, machine_hostname).map_err(fail)?;
    validate::check_files(&config, &root, &validated.settings, &mut validated.warnings).map_err(fail)?;
    let users = users::resolve().map_err(fail)?;
    let (planned, skipped) = plan(&root, &validated.settings, &users, args.dry_run);

    let mut report = Report {
        config: config.clone(),
        dry_run: args.dry_run,
        registration_id: validated.settings.registration_id.clone(),
        files: Vec::new(),
        skipped,
        warnings: validated.warnings,
        restart: RestartReport::default(),
    };
    for p in &planned {
        let changed = if args.dry_run {
            std::fs::read(&p.path)
                .ok()
                .map(|old| old != p.content.as_bytes())
        } else {
            Some(write::write(p).map_err(fail)?)
        };
        if let Some(w) = write::unreachable_warning(&p.path, &p.owner) {
            report.warnings.push(w);
        }
        report.files.push(FileReport {
            service: p.service,
            path: p.path.clone(),
            owner: p.owner.name,
            uid: p.owner.uid,
            gid: p.owner.gid,
            mode: format!("{:04o}", write::MODE),
            changed,
            content: args.dry_run.then(|| p.content.clone()),
        });
    }

    let restart_wanted = !args.dry_run && !args.no_restart && (args.root.is_none() || args.restart);
    let mut cannot_restart = None;
    if restart_wanted {
        let started = Instant::now();
        match restart::restart("systemctl".as_ref()) {
            Ok(units) => {
                report.restart.daemons = restart::readiness(&units);
                report.restart.units = units;
                report.restart.performed = true;
                let identityd_ready = report
                    .restart
                    .daemons
                    .iter()
                    .any(|d| d.unit == "aziot-identityd.service" && d.state == "ready");
                if identityd_ready {
                    report.restart.provisioning = first_provisioning_outcome();
                }
            }
            Err(e) => {
                report.restart.reason = Some(e.to_string());
                cannot_restart = Some(e);
            }
        }
        report.restart.total_ms = started.elapsed().as_millis() as u64;
    } else {
        report.restart.reason = Some(
            if args.dry_run {
                "dry run"
            } else if args.no_restart {
                "--no-restart"
            } else {
                "--root given; add --restart to restart them anyway"
            }
            .into(),
        );
    }

    match args.output {
        Output::Json => crate::exit::print_json(&report),
        Output::Text => print_text(&report),
    }
    if let Some(e) = cannot_restart {
        return Err(fail(e));
    }
    // A daemon that did not start says why in its own words; other failed steps as systemctl did.
    let daemons = &report.restart.daemons;
    let failed: Vec<String> = report
        .restart
        .units
        .iter()
        .filter(|s| s.result == "failed")
        .map(|s| match daemons.iter().find(|d| d.unit == s.unit && d.error.is_some()) {
            Some(d) => format!(
                "{} did not start: {} (log: {})",
                s.unit,
                d.error.as_deref().unwrap_or_default(),
                crate::unit::journal_hint(&s.unit)
            ),
            None => format!("{} {} ({})", s.action, s.unit, s.message.as_deref().unwrap_or("")),
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(format!(
            "the configuration is written, but restarting failed: {}",
            failed.join("; ")
        )))
    }
}

/// Waits a few seconds for identityd-dps's first provisioning outcome (provisioned, or an error)
/// and says it in one line; it goes on by itself after that.
fn first_provisioning_outcome() -> Option<String> {
    use identityd_dps::progress::State;
    let local = crate::local::LocalArgs::default().resolve(std::time::Duration::from_secs(5));
    crate::daemon::block_on(async {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(report) = crate::status::fetch_report(&local.identityd).await {
                let done = report.state == State::Provisioned || report.last_error.is_some();
                last = Some(report);
                if done {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let report = last?;
        Some(match (report.state, &report.last_error) {
            (State::Provisioned, _) => format!(
                "provisioned: device {} on {}",
                report.device_id.as_deref().unwrap_or("?"),
                report.hub.as_deref().unwrap_or("?")
            ),
            (_, Some(e)) => format!(
                "not provisioned yet: {} ({}); identityd-dps keeps trying, `aziot-tpm status` shows how it goes",
                crate::status::shorten_base64(&e.message),
                e.cause
            ),
            _ => "still registering with DPS after 10 s; `aziot-tpm status` shows how it goes".to_owned(),
        })
    })
    .ok()
    .flatten()
}

/// The files, in upstream's order; certd's only if upstream's certd is installed.
fn plan(
    root: &Path,
    s: &validate::Settings,
    users: &Users,
    redact: bool,
) -> (Vec<Planned>, Vec<Skipped>) {
    let file = |service: &'static str, owner: &ServiceUser, body: String| Planned {
        service,
        path: under(
            root,
            &format!("/etc/aziot/{service}/config.d/00-super.toml"),
        ),
        content: format!("{}{body}", render::HEADER),
        owner: owner.clone(),
    };
    let mut planned = vec![file(
        "keyd",
        &users.keyd,
        render::keyd(s, users.identityd.uid),
    )];
    let mut skipped = Vec::new();
    match &users.certd {
        Some(certd) => planned.push(file("certd", certd, render::certd(s))),
        None => skipped.push(Skipped {
            service: "certd",
            path: under(root, "/etc/aziot/certd/config.d/00-super.toml"),
            reason: format!(
                "the user {} does not exist, so upstream's Certificates Service is not installed",
                users::CERTD_USER
            ),
        }),
    }
    planned.push(file("identityd", &users.identityd, render::identityd(s)));
    planned.push(file("tpmd", &users.tpmd, render::tpmd(s, redact)));
    (planned, skipped)
}

/// `path` (absolute) under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn machine_hostname() -> Result<String, ApplyError> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(ApplyError::Hostname(std::io::Error::last_os_error()));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if !h.is_empty() => Ok(h.to_owned()),
        _ => Err(ApplyError::Hostname(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the machine's host name is empty or not UTF-8",
        ))),
    }
}

fn print_text(r: &Report) {
    for w in &r.warnings {
        eprintln!("aziot-tpm: warning: {w}");
    }
    if r.dry_run {
        println!(
            "Dry run of {}: nothing is written, no service restarted.",
            r.config.display()
        );
        for f in &r.files {
            let change = match f.changed {
                Some(true) => "would change",
                Some(false) => "unchanged",
                None => "new",
            };
            println!(
                "\n--- {} (owner {} uid {}, mode {}, {change}) ---",
                f.path.display(),
                f.owner,
                f.uid,
                f.mode
            );
            print!("{}", f.content.as_deref().unwrap_or(""));
        }
    } else {
        println!("Applied {}:", r.config.display());
        let width = r
            .files
            .iter()
            .map(|f| f.path.as_os_str().len())
            .max()
            .unwrap_or(0);
        for f in &r.files {
            let change = if f.changed == Some(false) {
                "unchanged"
            } else {
                "updated"
            };
            println!(
                "  {:width$}  {}  {}  {change}",
                f.path.display().to_string(),
                f.owner,
                f.mode
            );
        }
    }
    for s in &r.skipped {
        println!("  skipped {}: {}", s.path.display(), s.reason);
    }
    match &r.registration_id {
        Some(id) => println!("Registration ID: {id}"),
        None => println!("Registration ID: derived from the TPM's EK by identityd-dps (`aziot-tpm tpm-info` prints it)"),
    }
    if r.restart.performed {
        println!("Restarted the services:");
        for s in &r.restart.units {
            let msg = s
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            println!(
                "  {:5}  {:26}  {:13}  {:>5} ms{msg}",
                s.action, s.unit, s.result, s.ms
            );
        }
        if !r.restart.daemons.is_empty() {
            println!("Daemons:");
        }
        for d in &r.restart.daemons {
            let what = d.error.as_deref().or(d.status.as_deref()).unwrap_or("");
            println!("  {:26}  {:7}  {what}", d.unit, d.state);
        }
        if let Some(p) = &r.restart.provisioning {
            println!("Provisioning: {p}");
        }
        println!("Done in {:.2} s.", r.restart.total_ms as f64 / 1000.0);
    } else if let Some(reason) = &r.restart.reason {
        if !r.dry_run {
            println!("Services not restarted ({reason}).");
        }
    }
}
