//! keyd-tpm: the one process that owns the TPM. It serves the aziot Keys Service API (`keyd`)
//! and the aziot TPM Service API (`tpmd`) over Unix sockets; every TPM command goes through one
//! owner thread (`tpm::TpmHandle`).

pub mod config;
mod http_error;
pub mod keyd;
pub mod tpm;
pub mod tpmd;
