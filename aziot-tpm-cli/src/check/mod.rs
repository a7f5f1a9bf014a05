//! `aziot-tpm check`: diagnostics for a TPM gateway, in `aziotctl check`'s format so they also
//! show up in `iotedge check` (see `aziotctl`, the wrapper installed as `/usr/bin/aziotctl`).
//!
//! One module per group of checks: `config` (configs load and are up to date), `daemons` (the
//! sockets answer), `tpm` (device node, TCTI, EK/SRK, auth key, hierarchy passwords) and `cloud`
//! (DPS, the assigned hub, clock skew). `context` holds what they share, `outcome` the JSON
//! schema, `render` the text/json/json-stream writer.

pub mod aziotctl;
mod cloud;
mod config;
mod context;
mod daemons;
mod device_node;
mod ek_certificate;
mod host_info;
mod outcome;
mod provisioned;
mod proxy;
mod render;
mod tpm;
mod tpm_direct;

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::Failure;
use context::{Context, Options};
use outcome::{CheckList, CheckMeta, CheckOutput, CheckResult};
use render::{Format, Renderer};

#[derive(clap::Args, Debug, Clone)]
#[command(
    about = "Check the configuration, daemons, TPM and cloud connectivity of this gateway",
    long_about = "Check the configuration, daemons, TPM and cloud connectivity of this gateway.\n\n\
        Reads the daemons' configs where they do (/etc/aziot/<daemon>/config.toml and config.d, or \
        AZIOT_<DAEMON>_CONFIG and AZIOT_<DAEMON>_CONFIG_DIR), asks the daemons over their sockets, reads the \
        TPM through keyd-tpm or directly, and connects to DPS and the assigned IoT Hub. Changes nothing. \
        Run it as root: the configs and the provisioning state are readable by their services only.\n\n\
        Output and options follow `aziotctl check`, so `iotedge check` can show these results. Unlike \
        aziotctl, the exit code says how it went: 0 every check passed (warnings allowed), 1 a check failed \
        (or warned, with --warnings-as-errors), 2 usage error."
)]
pub struct Args {
    /// Space-separated list of check IDs not to run (they are reported as ignored). `--list`
    /// shows the IDs.
    #[arg(long, value_name = "DONT_RUN", value_delimiter = ' ')]
    pub dont_run: Vec<String>,

    /// Output format: text for people; json (one document) or json-stream (one value per line, as
    /// `aziotctl check -o json-stream`) for scripts and iotedge.
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: Format,

    /// Treat warnings as errors: they fail the run and are reported as errors.
    #[arg(long)]
    pub warnings_as_errors: bool,

    /// Show the causes under each failure and the checks skipped because of earlier failures.
    #[arg(short, long)]
    pub verbose: bool,

    /// Test this IoT Hub instead of the one DPS assigned (from identityd's device_info).
    #[arg(long, value_name = "IOTHUB_HOSTNAME")]
    pub iothub_hostname: Option<String>,

    /// The HTTPS proxy identityd reaches DPS and IoT Hub through (iotedge passes it) [default:
    /// https_proxy of this environment, else of aziot-identityd.service]; the connectivity checks
    /// go through it and `https-proxy` tests it. The aziotctl wrapper hands it to upstream's checks.
    #[arg(long, value_name = "PROXY_URI")]
    pub proxy_uri: Option<String>,

    /// Accepted because iotedge passes it; used only by upstream's checks (through the wrapper).
    #[arg(long, value_name = "VERSION")]
    pub expected_aziot_version: Option<String>,

    /// Accepted as aziotctl does; used only by upstream's host-local-time check (through the
    /// wrapper). The clock-skew check compares with DPS and IoT Hub instead.
    #[arg(long, value_name = "NTP_SERVER")]
    pub ntp_server: Option<String>,

    /// The super-config whose changes `aziot-tpm config apply` turns into the daemons' configs.
    #[arg(long, value_name = "PATH", default_value = "/etc/aziot/config.toml")]
    pub super_config: PathBuf,

    /// The user keyd-tpm runs as, whose access to the TPM device node is checked.
    #[arg(long, value_name = "USER", default_value = "aziotks")]
    pub tpm_user: String,

    #[command(flatten)]
    pub ek_trust: crate::ek_cert::TrustArgs,

    /// List the checks (ID, section, description) instead of running them.
    #[arg(long)]
    pub list: bool,
}

impl Args {
    fn options(&self) -> Options {
        Options {
            iothub_hostname: self.iothub_hostname.clone(),
            super_config: self.super_config.clone(),
            proxy_uri: self.proxy_uri.clone(),
            tpm_user: self.tpm_user.clone(),
            ek_trust_bundle: self.ek_trust.bundle.clone(),
        }
    }
}

/// Every check, in the order it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Id {
    KeydConfig,
    TpmdConfig,
    IdentitydConfig,
    ConfigsUpToDate,
    KeydRunning,
    TpmdRunning,
    IdentitydRunning,
    IdentitydProvisioned,
    TpmDeviceNode,
    TpmTctiOpens,
    TpmEkSrk,
    TpmEkCertificate,
    TpmAuthKey,
    TpmHierarchyAuth,
    HttpsProxy,
    DpsEndpointTls,
    IothubReachable,
    ClockSkew,
}

/// Sections and their checks. IDs shared with `aziotctl check` keep upstream's descriptions; the
/// wrapper shows ours in their place.
const SECTIONS: &[(&str, &[Id])] = &[
    (
        "Configuration checks",
        &[
            Id::KeydConfig,
            Id::TpmdConfig,
            Id::IdentitydConfig,
            Id::ConfigsUpToDate,
            Id::KeydRunning,
            Id::TpmdRunning,
            Id::IdentitydRunning,
            Id::IdentitydProvisioned,
        ],
    ),
    (
        "TPM checks",
        &[
            Id::TpmDeviceNode,
            Id::TpmTctiOpens,
            Id::TpmEkSrk,
            Id::TpmEkCertificate,
            Id::TpmAuthKey,
            Id::TpmHierarchyAuth,
        ],
    ),
    (
        "Connectivity checks",
        &[Id::HttpsProxy, Id::DpsEndpointTls, Id::IothubReachable, Id::ClockSkew],
    ),
];

impl Id {
    fn meta(self) -> (&'static str, &'static str) {
        match self {
            Id::KeydConfig => ("keyd-config-well-formed", "keyd configuration is well-formed"),
            Id::TpmdConfig => ("tpmd-config-well-formed", "tpmd configuration is well-formed"),
            Id::IdentitydConfig => ("identityd-config-well-formed", "identityd configuration is well-formed"),
            Id::ConfigsUpToDate => (
                "configs-up-to-date",
                "daemon configurations up-to-date with config.toml",
            ),
            Id::KeydRunning => ("keyd-running", "keyd is running"),
            Id::TpmdRunning => ("tpmd-running", "tpmd is running"),
            Id::IdentitydRunning => ("identityd-running", "identityd is running"),
            Id::IdentitydProvisioned => (
                "identityd-provisioned",
                "device is provisioned now, with the DPS settings of the config",
            ),
            Id::TpmDeviceNode => (
                "tpm-device-node",
                "TPM device node is present and usable by keyd-tpm's user",
            ),
            Id::TpmTctiOpens => ("tpm-tcti-opens", "TPM answers through the configured TCTI"),
            Id::TpmEkSrk => (
                "tpm-ek-srk",
                "EK and SRK are persisted and the EK is the one the device registered with",
            ),
            Id::TpmEkCertificate => (
                "tpm-ek-certificate",
                "EK certificate verifies against the TPM makers' CAs and names the EK in use",
            ),
            Id::TpmAuthKey => ("tpm-auth-key", "DPS auth key is in the TPM of the provisioned device"),
            Id::TpmHierarchyAuth => (
                "tpm-hierarchy-auth",
                "TPM accepts the configured owner and endorsement passwords",
            ),
            Id::HttpsProxy => ("https-proxy", "HTTPS proxy that identityd uses opens a tunnel to DPS"),
            Id::DpsEndpointTls => (
                "dps-endpoint-tls",
                "host can connect to and perform TLS handshake with the DPS endpoint",
            ),
            Id::IothubReachable => (
                "iothub-reachable",
                "assigned IoT Hub is reachable and accepts the device's credentials",
            ),
            Id::ClockSkew => (
                "clock-skew",
                "host clock agrees with DPS and IoT Hub closely enough for SAS tokens",
            ),
        }
    }

    fn check_meta(self) -> CheckMeta {
        let (id, description) = self.meta();
        CheckMeta {
            id: id.into(),
            description: description.into(),
        }
    }

    async fn run(self, ctx: &mut Context) -> CheckOutput {
        // Checks that read the TPM get its facts even if tpm-tcti-opens was not run.
        if matches!(self, Id::TpmEkSrk | Id::TpmEkCertificate | Id::TpmAuthKey | Id::TpmHierarchyAuth) && ctx.tpm.is_none() {
            tpm::tcti_opens(ctx).await;
        }
        match self {
            Id::KeydConfig => config::keyd(ctx),
            Id::TpmdConfig => config::tpmd(ctx),
            Id::IdentitydConfig => config::identityd(ctx),
            Id::ConfigsUpToDate => config::up_to_date(ctx),
            Id::KeydRunning => daemons::keyd(ctx).await,
            Id::TpmdRunning => daemons::tpmd(ctx).await,
            Id::IdentitydRunning => daemons::identityd(ctx).await,
            Id::IdentitydProvisioned => provisioned::check(ctx).await,
            Id::TpmDeviceNode => tpm::device_node(ctx),
            Id::TpmTctiOpens => tpm::tcti_opens(ctx).await,
            Id::TpmEkSrk => tpm::ek_srk(ctx),
            Id::TpmEkCertificate => ek_certificate::check(ctx),
            Id::TpmAuthKey => tpm::auth_key(ctx),
            Id::TpmHierarchyAuth => tpm::hierarchy_auth(ctx).await,
            Id::HttpsProxy => proxy::answers(ctx).await,
            Id::DpsEndpointTls => cloud::dps_endpoint(ctx).await,
            Id::IothubReachable => cloud::iothub(ctx).await,
            Id::ClockSkew => cloud::clock_skew(ctx),
        }
    }
}

/// Where results go: the renderer, or the wrapper's collector.
pub trait Sink {
    fn section(&mut self, name: &str) -> io::Result<()>;
    fn check(&mut self, meta: CheckMeta, output: CheckOutput) -> io::Result<()>;
    /// True once a fatal result was taken: nothing more should run.
    fn stopped(&self) -> bool;
}

impl<W: Write> Sink for Renderer<W> {
    fn section(&mut self, name: &str) -> io::Result<()> {
        Renderer::section(self, name)
    }
    fn check(&mut self, meta: CheckMeta, output: CheckOutput) -> io::Result<()> {
        Renderer::check(self, meta, output)
    }
    fn stopped(&self) -> bool {
        Renderer::stopped(self)
    }
}

/// Runs every check in order into `sink`, stopping after a fatal result.
async fn execute(args: &Args, ctx: &mut Context, sink: &mut impl Sink) -> io::Result<()> {
    'sections: for (section, ids) in SECTIONS {
        sink.section(section)?;
        for id in ids.iter() {
            let output = if args.dont_run.iter().any(|d| d == id.meta().0) {
                CheckOutput::new(CheckResult::Ignored, json!({}))
            } else {
                id.run(ctx).await
            };
            sink.check(id.check_meta(), output)?;
            if sink.stopped() {
                break 'sections;
            }
        }
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    // libtss2 stays quiet unless TSS2_LOG asks (main sets it before any thread exists): a wrong
    // password is an expected answer here, and every failure is in the check's result.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: 1,
            message: format!("cannot start the async runtime: {e}"),
        })
}

fn output_failed(e: io::Error) -> Failure {
    Failure {
        code: 1,
        message: format!("cannot write the results: {e}"),
    }
}

pub fn run(args: Args) -> Result<(), Failure> {
    if args.list {
        return print_list(args.output, &catalogue()).map_err(output_failed);
    }
    let runtime = runtime()?;
    let mut renderer = Renderer::new(
        io::stdout().lock(),
        args.output,
        args.verbose,
        args.warnings_as_errors,
        args.output == Format::Text && render::stdout_wants_color(),
    );
    let mut ctx = Context::load(args.options());
    runtime
        .block_on(execute(&args, &mut ctx, &mut renderer))
        .map_err(output_failed)?;
    let info = serde_json::to_value(host_info::AdditionalInfo::collect(ctx.iothub_hostname())).unwrap_or_default();
    let counts = renderer.finish(info).map_err(output_failed)?;
    if counts.failed() {
        return Err(Failure {
            code: 1,
            message: format!("{} check(s) failed", counts.errors + counts.fatal),
        });
    }
    Ok(())
}

/// Our checks by section, as `check-list -o json` shows them.
fn catalogue() -> Vec<(String, Vec<CheckMeta>)> {
    SECTIONS
        .iter()
        .map(|(name, ids)| ((*name).to_owned(), ids.iter().map(|id| id.check_meta()).collect()))
        .collect()
}

/// `check-list` output: a JSON map of section → checks, or aziotctl's text table.
fn print_list(format: Format, sections: &[(String, Vec<CheckMeta>)]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if format != Format::Text {
        let list: CheckList = sections.iter().cloned().collect();
        serde_json::to_writer(&mut out, &list)?;
        return writeln!(out);
    }
    let section_width = sections.iter().map(|(s, _)| s.len()).max().unwrap_or(0) + 1;
    let id_width = sections
        .iter()
        .flat_map(|(_, c)| c)
        .map(|c| c.id.len())
        .max()
        .unwrap_or(0)
        + 1;
    writeln!(out, "{:section_width$}{:id_width$}DESCRIPTION", "CATEGORY", "ID")?;
    writeln!(out)?;
    for (section, checks) in sections {
        for check in checks {
            writeln!(
                out,
                "{section:section_width$}{:id_width$}{}",
                check.id, check.description
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_in_aziotctl_style() {
        let ids: Vec<&str> = SECTIONS
            .iter()
            .flat_map(|(_, ids)| ids.iter().map(|id| id.meta().0))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        for id in ids {
            assert!(id.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{id}");
        }
    }
}
