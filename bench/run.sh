#!/usr/bin/env bash
# Runs the benchmarks against release builds. Figures are ratios against a reference measured in
# the same run (the raw TPM operation on the same swtpm), because these machines are noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p keyd-tpm -p aziot-tpm-bench
target="${CARGO_TARGET_DIR:-$(pwd)/target}/release"
export TSS2_LOG=all+none
"$target/bench-tpmd" "$target/keyd-tpm" "${1:-2000}"
