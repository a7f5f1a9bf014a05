#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration against swtpm, real sockets and processes)
# and the package tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo build --workspace --all-targets --locked
# tests/interop runs upstream's release binaries from ../shared/upstream beside the project.
if [ -z "${AZIOT_UPSTREAM_DIR:-}" ] && [ ! -f ../shared/upstream/aziotd ]; then
  echo "interop: ../shared/upstream is absent, so the tests against upstream's binaries are skipped (they run in CI)"
fi
cargo test --workspace --locked
# The docs' commands, run as written (docs/install.md's run in the package tests' container).
bash tests/docs/run.sh docs/emulator.md
# The Debian package, from the debug binaries built above: contents, lintian, install and purge
# in Debian chroots (tests/package/run.sh says more).
bash tests/package/run.sh
# The arm64 and armhf packages, cross-compiled (debug profile), installed, run and purged in
# Debian chroots of those architectures under qemu-user (tests/package/arch.sh says more).
bash tests/package/arch.sh --arch arm64
bash tests/package/arch.sh --arch armhf
