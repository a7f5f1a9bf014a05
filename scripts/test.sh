#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration against swtpm, real sockets and processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo build --workspace --all-targets --locked
cargo test --workspace --locked
