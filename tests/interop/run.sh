#!/usr/bin/env bash
# Runs the interop tests alone and lists each case with its result and run time (scripts/test.sh
# runs them with the rest). Needs ../shared/upstream (or AZIOT_UPSTREAM_DIR) and root.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --workspace --all-targets --locked
cargo test -p interop --locked -- --nocapture 2>&1 | tee /dev/stderr | grep '^interop case' | sort
