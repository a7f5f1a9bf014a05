//! The exit codes every command shares, and constructors of [`Failure`] for them, so a command
//! states what kind of failure it has and the code follows.

use crate::Failure;

/// The operation ran and failed (DPS refused, the device is not provisioned, ...).
pub const FAILED: u8 = 1;
/// The command line or an input file is wrong; clap uses 2 for its own usage errors too.
pub const USAGE: u8 = 2;
/// A service could not be reached: a daemon's socket, the TPM, or DPS.
pub const UNREACHABLE: u8 = 3;

impl Failure {
    pub fn failed(message: impl Into<String>) -> Self {
        Failure { code: FAILED, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure { code: USAGE, message: message.into() }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Failure { code: UNREACHABLE, message: message.into() }
    }
}

/// Pretty JSON for `-o json`; our output types always serialize.
pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}
