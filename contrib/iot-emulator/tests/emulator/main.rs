//! End-to-end tests of the emulator with real parts: the `iot-emulator` binary as a process,
//! real HTTPS (cloud-http trusting the emulator's CA), and a swtpm per test driven by keyd-tpm's
//! TPM owner (or by tpm2-tools). Every fixture kills its processes and removes its temp dirs on
//! drop.

mod allocation;
mod attestation;
mod errors;
mod faults;
mod fixture;
mod registration;
mod restart;
