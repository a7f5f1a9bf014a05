//! End-to-end tests: swtpm + keyd-tpm + iot-emulator + identityd-dps, real processes on loopback.
//! Build the workspace first (`cargo build --workspace`, as scripts/test.sh does): the keyd-tpm
//! and iot-emulator binaries are taken from the target dir.

mod crashes;
mod faults;
mod fixture;
mod fuzz;
mod fuzz_api;
mod modules;
mod payload;
mod provisioning;
mod proxy;
mod status;
mod tokens;
