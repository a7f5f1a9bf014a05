#!/usr/bin/env bash
# Runs the benchmarks against release builds. Figures are ratios against a reference measured in
# the same run (the raw TPM operation on the same swtpm), because these machines are noisy; with
# upstream's release build in ../shared/upstream (or AZIOT_UPSTREAM_DIR), bench-tpmd,
# bench-keyd and bench-identityd run upstream's aziot-tpmd, aziot-keyd and aziot-identityd side
# by side in the same run. The output ends with one line per figure:
# `NAME ours X upstream Y raw Z` ("-" where a column does not apply or was not measured).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p keyd-tpm -p aziot-tpm-bench -p iot-emulator -p identityd-dps
target="${CARGO_TARGET_DIR:-$(pwd)/target}/release"
upstream="${AZIOT_UPSTREAM_DIR:-../shared/upstream}"
export TSS2_LOG=all+none
# bench-tpmd configures only the TPM Service; give the Keys Service a socket and store of its
# own so the daemon does not take /run/aziot/keyd.sock.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
printf '[aziot_keys]\nhomedir_path = "%s/home"\n[endpoints]\naziot_keyd = "unix://%s/keyd.sock"\n' \
  "$scratch" "$scratch" > "$scratch/keyd.toml"
out="$scratch/output"
{
  AZIOT_KEYD_CONFIG="$scratch/keyd.toml" AZIOT_KEYD_CONFIG_DIR="$scratch/none" \
    "$target/bench-tpmd" "$target/keyd-tpm" "${1:-2000}" "$upstream"
  echo
  # Every swtpm command is a TCP connection (the swtpm TCTI connects per command) that stays in
  # TIME_WAIT for a minute; 1000 requests per phase (~12k connections over three operations)
  # keeps this run well inside the ephemeral port range.
  "$target/bench-keyd" "$target/keyd-tpm" "${2:-1000}" "$upstream"
  echo
  "$target/bench-identityd" "$target/keyd-tpm" "$target/iot-emulator" "$target/identityd-dps" "${3:-5}" "${4:-20}" "$upstream"
  echo
  # Parameter encryption: every secret-bearing operation with the session channel, with ESYS's
  # sessions and without encryption, alternating in one run (TPM owner level, no daemon).
  "$target/bench-session" "${5:-200}"
  echo
  # The key store: creating keys, and signing in turn with more keys than the TPM has slots.
  "$target/bench-keystore" "$target/keyd-tpm" "${6:-1000}"
} | tee "$out"
echo
echo "Figures (NAME ours X upstream Y raw Z; µs or ms as the name says):"
sed -n 's/^FIGURE //p' "$out"
