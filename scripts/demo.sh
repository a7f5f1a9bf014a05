#!/usr/bin/env bash
# The demo: a gateway with a TPM goes online through DPS, all on this machine in a temp dir (no
# root-owned paths): a TPM simulator (swtpm), the local DPS + IoT Hub emulator, keyd-tpm and
# identityd-dps. It reads the TPM's identity, enrolls it with `aziot-tpm enroll`, lets
# identityd-dps provision, shows the device's status, creates a module identity and a SAS token
# for it that the hub accepts, then runs `aziot-tpm check` if this build has it. Cleans up on exit,
# also on failure or Ctrl-C; it can be run again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

demo_started=$(date +%s%N)
step_started=0
step() { step_started=$(date +%s%N); printf '\n==> %s\n' "$*"; }
done_step() { printf '    done in %d ms\n' $(( ($(date +%s%N) - step_started) / 1000000 )); }
indent() { sed 's/^/    /'; }
# The string value of "key" in the JSON on stdin (flat values only; enough for these answers).
json_field() { sed -nE "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"([^\"]*)\".*/\1/p" | head -n 1; }
fail() { echo "demo: $*" >&2; exit 1; }

step "Installing system packages (if missing)"
bash scripts/setup.sh
done_step

step "Building keyd-tpm, identityd-dps, iot-emulator and aziot-tpm"
cargo build --quiet --locked -p keyd-tpm -p identityd-dps -p iot-emulator -p aziot-tpm-cli
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
done_step
after_build=$(date +%s%N)

work=$(mktemp -d -t aziot-tpm-demo.XXXXXX)
pids=()
cleanup() {
  local status=$?
  # Stop the daemons before the simulator and the cloud they talk to.
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ] && [ -d "$work" ]; then
    for log in "$work"/*.log; do [ -s "$log" ] && { echo "--- $log (last lines)"; tail -n 15 "$log"; }; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port_pair() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 12000 ))  # below the ephemeral range
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"; return
    fi
  done
  fail "no free port pair found"
}
wait_for_socket() {
  for _ in $(seq 1 1500); do [ -S "$1" ] && return; sleep 0.02; done
  fail "$1 did not appear; see $2"
}

# Every daemon and aziot-tpm find their files through upstream's variables, as they would find
# /etc/aziot/<service>/config.toml on a gateway.
export AZIOT_TPMD_CONFIG="$work/tpmd.toml" AZIOT_TPMD_CONFIG_DIR="$work/config.d"
export AZIOT_KEYD_CONFIG="$work/keyd.toml" AZIOT_KEYD_CONFIG_DIR="$work/config.d"
export AZIOT_IDENTITYD_CONFIG="$work/identityd.toml" AZIOT_IDENTITYD_CONFIG_DIR="$work/config.d"
export AZIOT_LOG=info TSS2_LOG=all+none
mkdir -p "$work/config.d" "$work/run"

step "Starting swtpm (TPM 2.0 simulator) with its state in $work/tpm"
mkdir -p "$work/tpm"
port=$(free_port_pair)
swtpm socket --tpm2 --tpmstate "dir=$work/tpm" \
  --server "type=tcp,port=$port,bindaddr=127.0.0.1" --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
  --flags not-need-init,startup-clear --log "file=$work/swtpm.log" &
pids+=($!)
for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null && break; sleep 0.02; done
echo "    TCTI: swtpm:host=127.0.0.1,port=$port"
done_step

step "Starting the DPS + IoT Hub emulator (HTTPS on loopback, its own CA)"
"$bin/iot-emulator" --data-dir "$work/emulator" --assigning-ms 300 >"$work/emulator.ready" 2>"$work/emulator.log" &
pids+=($!)
for _ in $(seq 1 1500); do [ -s "$work/emulator.ready" ] && break; sleep 0.02; done
ready=$(head -n 1 "$work/emulator.ready")
[ -n "$ready" ] || fail "the emulator printed no ready line; see $work/emulator.log"
dps=$(json_field dps_endpoint <<<"$ready")
scope=$(json_field id_scope <<<"$ready")
ca=$(json_field ca_pem <<<"$ready")
# The DPS service connection string (its key stays in this variable; nothing prints it).
AZIOT_DPS_CONNECTION_STRING=$(json_field service_connection_string <<<"$ready")
export AZIOT_DPS_CONNECTION_STRING
echo "    DPS: $dps (ID scope $scope), CA: $ca"
done_step

step "Starting keyd-tpm (creates and persists the EK and SRK on this fresh TPM)"
cat > "$AZIOT_TPMD_CONFIG" <<TOML
tcti = "swtpm:host=127.0.0.1,port=$port"
homedir = "$work/tpmd"

[endpoints]
aziot_tpmd = "unix://$work/run/tpmd.sock"
TOML
cat > "$AZIOT_KEYD_CONFIG" <<TOML
[aziot_keys]
homedir_path = "$work/keyd"

[endpoints]
aziot_keyd = "unix://$work/run/keyd.sock"
TOML
# The daemons never see the DPS owner's connection string; only `aziot-tpm enroll` needs it.
env -u AZIOT_DPS_CONNECTION_STRING "$bin/keyd-tpm" 2>"$work/keyd-tpm.log" &
pids+=($!)
wait_for_socket "$work/run/tpmd.sock" "$work/keyd-tpm.log"
wait_for_socket "$work/run/keyd.sock" "$work/keyd-tpm.log"
{ grep -E "TPM open|Service API" "$work/keyd-tpm.log" || true; } | sed -E 's/^\[[^]]*\] ?/log: /' | indent
done_step

step "What the DPS enrollment needs: aziot-tpm tpm-info"
"$bin/aziot-tpm" tpm-info | indent
done_step

step "Enrolling the TPM in DPS: aziot-tpm enroll (connection string from AZIOT_DPS_CONNECTION_STRING)"
"$bin/aziot-tpm" enroll --trust-ca "$ca" --device-id demo-gateway | indent
done_step

step "Starting identityd-dps: it registers with DPS using TPM attestation"
cat > "$AZIOT_IDENTITYD_CONFIG" <<TOML
hostname = "demo-gateway"
homedir = "$work/identityd"

[provisioning]
source = "dps"
global_endpoint = "$dps"
scope_id = "$scope"

[provisioning.attestation]
method = "tpm"

[cloud]
trust_bundle = "$ca"

[endpoints]
aziot_identityd = "unix://$work/run/identityd.sock"
aziot_keyd = "unix://$work/run/keyd.sock"
aziot_tpmd = "unix://$work/run/tpmd.sock"

# This user may manage module identities (on a gateway: aziot-edged's user).
[[principal]]
uid = $(id -u)
name = "demo-admin"
TOML
env -u AZIOT_DPS_CONNECTION_STRING "$bin/identityd-dps" 2>"$work/identityd.log" &
pids+=($!)
wait_for_socket "$work/run/identityd.sock" "$work/identityd.log"
# Only now: until the backgrounded shell has exec'd the daemon, /proc/<pid>/environ is the
# shell's, which has the connection string.
for pid in "${pids[@]: -2}"; do
  if tr '\0' '\n' <"/proc/$pid/environ" | grep -q '^AZIOT_DPS_CONNECTION_STRING='; then
    fail "a daemon (pid $pid) was started with the DPS connection string in its environment"
  fi
done
provisioned=no
for _ in $(seq 1 600); do
  if "$bin/aziot-tpm" status >/dev/null 2>&1; then provisioned=yes; break; fi
  sleep 0.1
done
[ "$provisioned" = yes ] || { "$bin/aziot-tpm" status | indent || true; fail "identityd-dps did not provision within 60 s"; }
{ grep -E "DPS assigned|registration" "$work/identityd.log" || true; } | sed -E 's/^\[[^]]*\] ?/log: /' | head -n 5 | indent
done_step

step "The device's status: aziot-tpm status"
"$bin/aziot-tpm" status | indent
status_json=$("$bin/aziot-tpm" status -o json)
hub=$(json_field hub <<<"$status_json")
device=$(json_field device_id <<<"$status_json")
done_step

step "Creating a module identity through identityd.sock (POST /identities/modules)"
module=demo-module
identity=$(curl -sS --fail-with-body --unix-socket "$work/run/identityd.sock" \
  -H 'Content-Type: application/json' -d "{\"type\":\"aziot\",\"moduleId\":\"$module\"}" \
  "http://identityd.sock/identities/modules?api-version=2021-12-01")
echo "    hub $(json_field hubName <<<"$identity"), device $(json_field deviceId <<<"$identity"), module $(json_field moduleId <<<"$identity"), generation $(json_field genId <<<"$identity")"
key_handle=$(json_field keyHandle <<<"$identity")
[ -n "$key_handle" ] || fail "no key handle in identityd's answer: $identity"
echo "    key handle (Keys Service): ${key_handle:0:40}..."
done_step

step "A SAS token for the module, signed by the Keys Service (POST /sign with the module's key handle)"
resource="$hub/devices/$device/modules/$module"
resource=${resource,,}
expiry=$(( $(date +%s) + 3600 ))
message=$(printf '%s\n%s' "$resource" "$expiry" | base64 -w0)
signed=$(curl -sS --fail-with-body --unix-socket "$work/run/keyd.sock" -H 'Content-Type: application/json' \
  -d "{\"keyHandle\":\"$key_handle\",\"algorithm\":\"HMAC-SHA256\",\"parameters\":{\"message\":\"$message\"}}" \
  "http://keyd.sock/sign?api-version=2021-05-01")
signature=$(json_field signature <<<"$signed" | sed -e 's/+/%2B/g' -e 's/\//%2F/g' -e 's/=/%3D/g')
token="SharedAccessSignature sr=$resource&sig=$signature&se=$expiry"
echo "    ${token:0:90}..."
done_step

step "The hub's answer to the module's token (GET https://$hub/twins/$device/modules/$module)"
answer=$(curl -sS --cacert "$ca" -H "Authorization: $token" -w '\n%{http_code}' \
  "https://$hub/twins/$device/modules/$module?api-version=2021-04-12")
code=${answer##*$'\n'}
echo "    HTTP $code: ${answer%$'\n'*}" | cut -c 1-200
[ "$code" = 200 ] || fail "the hub refused the module's token"
done_step

if "$bin/aziot-tpm" check --help >/dev/null 2>&1; then
  step "Checking the device: aziot-tpm check"
  check_status=0
  "$bin/aziot-tpm" check | indent || check_status=$?
  echo "    (exit code $check_status)"
  done_step
else
  step "aziot-tpm check: not in this build, skipped"
fi

printf '\nDemo complete in %.1f s after the build: the TPM-attested gateway is online with a module identity.\n' \
  "$(( $(date +%s%N) - after_build ))e-9"
printf 'Whole run: %.1f s. Cleaning up %s.\n' "$(( $(date +%s%N) - demo_started ))e-9" "$work"
