//! Property and fuzz suites of keyd-tpm (stable Rust, proptest-generated inputs):
//!
//! * `parsers`: the pure parsers in-process (DPS blobs, configs);
//! * `routes`: the Keys Service and TPM Service routes called in-process on a real swtpm,
//!   bypassing HTTP, with mutated JSON, ids, forged handles and DPS blobs;
//! * `daemon`: the same and malformed HTTP as raw bytes over the daemon's Unix sockets.
//!
//! Every answer must carry no 5xx and, for an error, a `{"message"}` body; the daemon must not
//! crash or hang, and keys made before a run must still work after it. CI runs a few seconds of
//! each; `scripts/fuzz-long.sh` scales them up (`AZIOT_FUZZ_SCALE`).

mod common;

#[path = "fuzz/api.rs"]
mod api;
#[path = "fuzz/daemon.rs"]
mod daemon;
#[path = "fuzz/parsers.rs"]
mod parsers;
#[path = "fuzz/routes.rs"]
mod routes;
#[path = "fuzz/witness.rs"]
mod witness;
