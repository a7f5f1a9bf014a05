//! keyd-tpm: the one process that owns the TPM. It serves the aziot TPM Service API (and, as it
//! grows, the Keys Service API) over Unix sockets; every TPM command goes through one owner
//! thread (`tpm::TpmHandle`).

pub mod config;
mod http_error;
pub mod tpm;
pub mod tpmd;
