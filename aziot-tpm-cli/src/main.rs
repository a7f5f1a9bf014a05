//! `aziot-tpm`: the gateway admin's command. Exit codes: 0 success, 1 the operation failed,
//! 2 usage error (clap), 3 a daemon could not be reached.

mod tpm_info;

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
    /// the enrollment's endorsement key) and the registration ID derived from it, plus the SRK.
    TpmInfo(tpm_info::Args),
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::TpmInfo(args) => tpm_info::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("aziot-tpm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
