#!/usr/bin/env bash
# The demo: a TPM simulator and keyd-tpm in a temp dir (no root-owned paths), then what an admin
# needs to enroll the device in DPS: the EK, the SRK and the registration ID. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step_started=0
step() { step_started=$(date +%s%N); printf '\n==> %s\n' "$*"; }
done_step() { printf '    done in %d ms\n' $(( ($(date +%s%N) - step_started) / 1000000 )); }

step "Installing system packages (if missing)"
bash scripts/setup.sh
done_step

step "Building keyd-tpm and aziot-tpm"
cargo build --quiet --locked -p keyd-tpm -p aziot-tpm-cli
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
done_step

work=$(mktemp -d -t aziot-tpm-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port_pair() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 12000 ))  # below the ephemeral range
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"; return
    fi
  done
  echo "no free port pair found" >&2; return 1
}

step "Starting swtpm (TPM 2.0 simulator) with its state in $work/tpm"
mkdir -p "$work/tpm"
port=$(free_port_pair)
swtpm socket --tpm2 --tpmstate "dir=$work/tpm" \
  --server "type=tcp,port=$port,bindaddr=127.0.0.1" --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
  --flags not-need-init,startup-clear --log "file=$work/tpm/swtpm.log" &
pids+=($!)
for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.02; done
echo "    TCTI: swtpm:host=127.0.0.1,port=$port"
done_step

step "Starting keyd-tpm (creates and persists the EK and SRK on this fresh TPM)"
mkdir -p "$work/config.d"
cat > "$work/tpmd.toml" <<TOML
tcti = "swtpm:host=127.0.0.1,port=$port"
homedir = "$work/tpmd"

[endpoints]
aziot_tpmd = "unix://$work/tpmd.sock"
TOML
cat > "$work/keyd.toml" <<TOML
[aziot_keys]
homedir_path = "$work/keyd"

[endpoints]
aziot_keyd = "unix://$work/keyd.sock"
TOML
AZIOT_TPMD_CONFIG="$work/tpmd.toml" AZIOT_TPMD_CONFIG_DIR="$work/config.d" \
AZIOT_KEYD_CONFIG="$work/keyd.toml" AZIOT_KEYD_CONFIG_DIR="$work/config.d" AZIOT_LOG=info \
  "$bin/keyd-tpm" 2>"$work/keyd-tpm.log" &
pids+=($!)
for _ in $(seq 1 500); do [ -S "$work/tpmd.sock" ] && break; sleep 0.02; done
[ -S "$work/tpmd.sock" ] || { echo "keyd-tpm did not start:"; cat "$work/keyd-tpm.log"; exit 1; }
sed 's/^/    log: /' "$work/keyd-tpm.log"
done_step

step "What the DPS individual enrollment needs (aziot-tpm tpm-info)"
"$bin/aziot-tpm" tpm-info --socket "$work/tpmd.sock" | sed 's/^/    /'
done_step

step "The same as JSON, for scripts (aziot-tpm tpm-info -o json)"
"$bin/aziot-tpm" tpm-info --socket "$work/tpmd.sock" -o json | head -c 400 | sed 's/^/    /'
echo "..."
done_step

echo
echo "Demo complete: the TPM's identity is ready to enroll. Cleaning up $work."
