//! `aziot-tpm`: the gateway admin's command. Exit codes (see `exit.rs`): 0 success, 1 the
//! operation failed (or a check failed), 2 usage error, 3 something could not be reached (a
//! daemon's socket, the TPM, DPS).

mod check;
mod config;
mod daemon;
mod dps_service;
mod ek_cert;
mod enroll;
mod exit;
mod local;
mod registration;
mod reprovision;
mod status;
mod tpm_info;
mod tpm_read;
mod unit;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "aziot-tpm", version, about = "Provision and inspect an IoT Edge gateway's TPM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what a DPS individual enrollment needs: the EK (base64 TPM2B_PUBLIC, paste it as
    /// the enrollment's endorsement key) and the registration ID DPS will see (the configured
    /// one, else the one derived from the EK) with where it comes from, plus the SRK and the
    /// [provisioning] block for /etc/aziot/config.toml.
    TpmInfo(tpm_info::Args),
    /// Create or update this device's DPS individual enrollment (TPM attestation) through the
    /// DPS service API, with a DPS connection string. Prints what was enrolled.
    Enroll(enroll::Args),
    /// Is the device provisioned: its IoT Hub and device ID, since when, and whether the DPS auth
    /// key is in the TPM. Exit 0 provisioned, 1 not provisioned, 3 a daemon is unreachable.
    Status(status::Args),
    /// Register with DPS again now (identityd-dps), then show the new status.
    Reprovision(reprovision::Args),
    /// Apply the super-config /etc/aziot/config.toml to the daemons' config files.
    #[command(subcommand)]
    Config(config::Command),
    // About and long help come from check::Args.
    Check(check::Args),
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`aziot-tpm tpm-info | head -1`) instead of panicking on a write to a closed pipe.
    // SAFETY: restores the default action of one signal before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // tpm-info and check may open the TPM themselves: libtss2's stderr lines only if asked.
    keyd_tpm::tpm::quiet_tss_unless_asked();
    // Installed as /usr/bin/aziotctl (a symlink), this program wraps upstream's aziotctl.
    if check::aziotctl::invoked_as_aziotctl() {
        return check::aziotctl::main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::TpmInfo(args) => tpm_info::run(args),
        Command::Enroll(args) => enroll::run(args),
        Command::Status(args) => status::run(args),
        Command::Reprovision(args) => reprovision::run(args),
        Command::Config(command) => config::run(command),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("aziot-tpm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
