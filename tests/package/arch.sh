#!/usr/bin/env bash
# Package tests for another architecture than the host's (arm64, armhf), under emulation: cross-
# builds the .deb (scripts/package.sh --arch, debug profile), checks it as run.sh checks the
# host's, then in a Debian chroot of that architecture, its programs run by qemu-user through
# binfmt_misc: installs it, checks its users and directories, runs the daemons on that
# architecture and purges it. The smoke run: that architecture's swtpm, keyd-tpm on it,
# `aziot-tpm tpm-info` (its EK compared with what tpm2-tools on the host read from the same TPM),
# `aziot-tpm enroll` and identityd-dps provisioning against the emulator on the host (DPS auth
# key blobs imported, sign_with_auth_key), a device SAS token from sign_with_auth_key that the
# hub accepts, a Keys Service HMAC and ECDSA signature checked with openssl, and all of it again
# after keyd-tpm restarts from its key store.
#
#   bash tests/package/arch.sh --arch arm64|armhf [--bin-dir DIR] [--emulator PATH]
#
#   --bin-dir DIR     package the binaries in DIR (built for ARCH) instead of a debug cross build
#   --emulator PATH   the host's iot-emulator (default target/debug/iot-emulator, built if missing)
#
# Needs root, binfmt_misc (registered here for qemu-user-static when it is not) and the Debian
# mirror the host's apt uses. The chroot base (debootstrap, the second stage under qemu: a few
# minutes) is cached under target/package-test like run.sh's. Ends with "N passed, N failed".
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/package"
arch=""
bin_dir=""
emulator="${CARGO_TARGET_DIR:-$root/target}/debug/iot-emulator"
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs arm64 or armhf}; shift 2 ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --emulator) emulator=${2:?--emulator needs a path}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "arch.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
# qemu-user's name for the CPU.
case "$arch" in
  arm64) cpu=aarch64 ;;
  armhf) cpu=arm ;;
  *) echo "arch.sh: --arch arm64 or --arch armhf (the host's own architecture is run.sh's)" >&2; exit 2 ;;
esac

mkdir -p "$root/target/package-test"
work=$(mktemp -d "$root/target/package-test/$arch.XXXXXX")
pids=()
# Stop what the smoke run started (daemons before the TPM and the cloud they talk to), then
# remove the chroots.
cleanup() {
  local i
  for (( i=${#pids[@]}-1; i>=0; i-- )); do kill "${pids[i]}" 2> /dev/null || true; done
  for (( i=${#pids[@]}-1; i>=0; i-- )); do wait "${pids[i]}" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=tests/package/lib.sh
. "$here/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
  skip "$arch package tests: they need root (chroots, binfmt_misc)"
  summary
  exit 0
fi
bash "$root/scripts/setup.sh" debootstrap qemu-user-static curl openssl xxd >&2

# --- Emulation -----------------------------------------------------------------------------------
# binfmt_misc runs the chroot's programs, and the programs they start (dpkg's maintainer
# scripts), with qemu-user. Debian's qemu-user-static ships the registration; its F flag makes
# the kernel open the interpreter now, so it works inside any chroot. A registration outlives
# this script (as the package's own, by systemd-binfmt, would); the mount does not.
binfmt=/proc/sys/fs/binfmt_misc
emulation_ready() {
  local mounted=""
  if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" || { echo "cannot mount binfmt_misc on $binfmt"; return 1; }
    mounted=yes
  fi
  [ -e "$binfmt/qemu-$cpu" ] || cat "/usr/lib/binfmt.d/qemu-$cpu.conf" > "$binfmt/register" \
    || echo "cannot register /usr/lib/binfmt.d/qemu-$cpu.conf"
  local state
  state=$(cat "$binfmt/qemu-$cpu" 2> /dev/null || true)
  [ -z "$mounted" ] || umount "$binfmt"
  if ! grep -qx enabled <<<"$state" || ! grep -q '^flags: .*F' <<<"$state"; then
    echo "qemu-$cpu in binfmt_misc: ${state:-not registered}"
    return 1
  fi
}
step "emulation"
check "binfmt_misc runs $arch programs with qemu-$cpu-static (flag F: inside chroots too)" emulation_ready
[ "$failed" -eq 0 ] || { summary; exit 1; }

# --- Build ---------------------------------------------------------------------------------------
step "build the $arch package"
if [ -n "$bin_dir" ]; then
  build_package "the $arch package builds from $bin_dir and lintian finds no error or warning" --arch "$arch" --bin-dir "$bin_dir"
else
  build_package "the $arch package cross-builds (debug) and lintian finds no error or warning" --arch "$arch" --debug
fi
echo "# built in ${SECONDS}s"
if [ ! -x "$emulator" ]; then
  (cd "$root" && nice cargo build --locked -p iot-emulator >&2)
fi

step "contents"
check_contents "$deb" "$arch"

# --- Install -------------------------------------------------------------------------------------
step "chroot base ($arch)"
base_chroot "$deb" "$arch"
r="$work/alone"
cp -a "$base" "$r"
cp "$deb" "$r/tmp/aziot-tpm.deb"
same "$(in_root "$r" uname -m)" "$(case $arch in arm64) echo aarch64 ;; armhf) echo armv7l ;; esac)" \
  "the chroot runs $arch code (uname -m under qemu-$cpu)"

step "install"
before=$(snapshot "$r")
check "dpkg -i installs it on a minimal $suite for $arch with its dependencies" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
check "the binaries run there (shared libraries resolved)" in_root "$r" /usr/bin/aziot-tpm --version
# libs_depended_on ROOT: every library the binaries need (DT_NEEDED) belongs to a package that
# Depends names: dpkg-shlibdeps read the target's libraries, not the host's.
libs_depended_on() {
  local r=$1 lib owner bin missing=""
  local depends
  depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/ //g')
  for bin in /usr/bin/aziot-tpm /usr/libexec/aziot-tpm/keyd-tpm /usr/libexec/aziot-tpm/identityd-dps; do
    for lib in $(readelf -d "$r$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      owner=$(in_root "$r" dpkg -S "*/$lib" 2> /dev/null | head -1 | cut -d: -f1)
      grep -qxF -- "${owner:-?}" <<<"$depends" || missing+="$bin needs $lib (package ${owner:-none}), not in Depends: $depends"$'\n'
    done
  done
  [ -z "$missing" ] || { echo "$missing"; return 1; }
}
check "every library the binaries need is in a package Depends names" libs_depended_on "$r"
check_installed_alone "$r"
same "$(generated "$r")" "$all_generated" \
  "the generator makes upstream's five units and enables the three sockets (socket activation)"
check "keyd-tpm refuses to run without a TPM, naming the device" \
  exits_with "$r" 1 /dev/tpmrm0 /usr/libexec/aziot-tpm/keyd-tpm

# --- Smoke run -----------------------------------------------------------------------------------
# The TPM and the daemons run in the chroot as the package's binaries for $arch; the emulator
# (DPS and IoT Hub) on the host, reached over loopback, which the chroot shares. curl and
# openssl on the host talk to the daemons' sockets in the chroot and check their answers.
step "smoke run on $arch: swtpm, keyd-tpm, tpm-info"
# The string value of "key" in the JSON on stdin (flat values only; enough for these answers).
json_field() { sed -nE "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"([^\"]*)\".*/\1/p" | head -n 1; }
free_port_pair() {
  local p _
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 12000 ))  # below the ephemeral range
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"; return
    fi
  done
  return 1
}
# wait_for TEST SECONDS: until TEST succeeds (emulated programs start slowly: be generous).
wait_for() {
  local _
  for _ in $(seq 1 $(( $2 * 5 ))); do eval "$1" && return 0; sleep 0.2; done
  return 1
}
# api SOCKET METHOD PATH [BODY]: a request to a daemon's socket in the chroot; prints the body,
# fails on an HTTP error.
api() {
  curl -sS --fail-with-body --unix-socket "$r/run/aziot/$1" -X "$2" -H 'Content-Type: application/json' \
    ${4:+-d "$4"} "http://${1%.sock}.sock$3"
}
b64() { base64 -w0; }

port=$(free_port_pair)
mkdir -p "$r/tmp/swtpm"
# qemu-user cannot load swtpm's seccomp filter (it is for the guest's system calls).
chroot "$r" swtpm socket --tpm2 --tpmstate dir=/tmp/swtpm --seccomp action=none \
  --server "type=tcp,port=$port,bindaddr=127.0.0.1" --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
  --flags not-need-init,startup-clear > "$work/swtpm.log" 2>&1 &
pids+=($!)
check "$arch swtpm listens on 127.0.0.1:$port" \
  wait_for "(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$((port + 1))) 2>/dev/null" 60

"$emulator" --data-dir "$work/emulator" --assigning-ms 300 > "$work/emulator.ready" 2> "$work/emulator.log" &
pids+=($!)

# The daemons' configs from a super-config, by aziot-tpm config apply on $arch (with the owners
# and modes upstream's gives them; no restart: systemd does not run in the chroot).
device=arm-gateway-$arch
check "the emulator (on the host) is ready" wait_for "[ -s '$work/emulator.ready' ]" 60
ready=$(head -n 1 "$work/emulator.ready")
cp "$(json_field ca_pem <<<"$ready")" "$r/tmp/emulator-ca.pem"
cat > "$r/etc/aziot/config.toml" <<TOML
hostname = "$device"

[provisioning]
source = "dps"
global_endpoint = "$(json_field dps_endpoint <<<"$ready")"
id_scope = "$(json_field id_scope <<<"$ready")"

[provisioning.attestation]
method = "tpm"

[tpm]
tcti = "swtpm:host=127.0.0.1,port=$port"

[cloud]
trust_bundle = "/tmp/emulator-ca.pem"
TOML
check "aziot-tpm config apply --no-restart writes the daemons' configs" in_root "$r" aziot-tpm config apply --no-restart
same "$(owner_mode "$r" /etc/aziot/{keyd,tpmd,identityd}/config.d/00-super.toml)" \
"aziotks:aziotks 600
aziottpm:aziottpm 600
aziotid:aziotid 600" "each config belongs to its daemon's user, mode 0600"
# keyd-tpm binds its sockets after becoming aziotks, in a directory of its own as the unit's
# sockets would be (socket activation is run.sh's booted test).
mkdir -p "$r/run/aziot"
in_root "$r" chown aziotks:aziotks /run/aziot
keyd_pid=""
# start_keyd: keyd-tpm as the unit runs it (root, then AZIOT_KEYD_TPM_USER), until both sockets listen.
start_keyd() {
  rm -f "$r/run/aziot/keyd.sock" "$r/run/aziot/tpmd.sock"
  AZIOT_KEYD_TPM_USER=aziotks AZIOT_LOG=info chroot "$r" /usr/libexec/aziot-tpm/keyd-tpm >> "$work/keyd-tpm.log" 2>&1 &
  keyd_pid=$!
  pids+=("$keyd_pid")
  wait_for "[ -S '$r/run/aziot/keyd.sock' ] && [ -S '$r/run/aziot/tpmd.sock' ] || ! kill -0 $keyd_pid" 180
  kill -0 "$keyd_pid" 2> /dev/null || { tail -20 "$work/keyd-tpm.log"; return 1; }
}
check_here "keyd-tpm starts on $arch: EK and SRK created and persisted, both APIs served" start_keyd
check "keyd-tpm became aziotks with group tss before opening the TPM" \
  grep -q "now running as aziotks (uid [0-9]*, gid [0-9]*, groups aziotks([0-9]*),tss([0-9]*)), with no capabilities" "$work/keyd-tpm.log"

info=$(in_root "$r" aziot-tpm tpm-info -o json 2>&1) || true
reg_id=$(json_field registration_id <<<"$info")
check "aziot-tpm tpm-info through tpmd.sock: a registration ID" test -n "$reg_id"
# The host's tpm2-tools (amd64) read the same persistent EK from the TPM: the marshalled
# TPM2B_PUBLIC keyd-tpm made on $arch must be byte for byte the TPM's.
tpm2_readpublic -c 0x81010001 -T "swtpm:host=127.0.0.1,port=$port" -o "$work/ek.pub" > /dev/null 2>&1 || true
same "$(json_field endorsement_key <<<"$info")" "$(b64 < "$work/ek.pub")" \
  "the EK tpm-info prints is the TPM's, as tpm2_readpublic on the host reads it"

step "smoke run on $arch: enroll and provision against the emulator"
check "aziot-tpm enroll on $arch: the individual enrollment for this EK (HTTPS to the emulator)" \
  env AZIOT_DPS_CONNECTION_STRING="$(json_field service_connection_string <<<"$ready")" \
  chroot "$r" aziot-tpm enroll --trust-ca /tmp/emulator-ca.pem --device-id "$device"
# As root here: the unit's aziotid, with its socket, is run.sh's booted test.
AZIOT_LOG=info chroot "$r" /usr/libexec/aziot-tpm/identityd-dps > "$work/identityd.log" 2>&1 &
pids+=($!)
provisioned() {
  wait_for "chroot '$r' aziot-tpm status > /dev/null 2>&1" 240 \
    || { chroot "$r" aziot-tpm status 2>&1; tail -20 "$work/identityd.log"; return 1; }
}
check "identityd-dps on $arch provisions: DPS challenge, auth key blobs imported into the TPM, registration signed with sign_with_auth_key" provisioned
status=$(in_root "$r" aziot-tpm status -o json 2>&1) || true
hub=$(json_field hub <<<"$status")
same "$(json_field device_id <<<"$status")" "$device" "aziot-tpm status: provisioned as $device (hub ${hub:-?})"

step "smoke run on $arch: signatures checked on the host"
# device_token: a device SAS token for the hub, signed by sign_with_auth_key with the key DPS
# gave the device (imported from the assignment's blob).
device_token() {
  local sr se sig
  sr=${hub,,}/devices/$device
  se=$(( $(date +%s) + 3600 ))
  sig=$(api tpmd.sock POST '/sign_with_auth_key?api-version=2020-09-01' \
    "{\"data\":\"$(printf '%s\n%s' "$sr" "$se" | b64)\"}" | json_field digest) || return 1
  sig=$(sed -e 's/+/%2B/g' -e 's/\//%2F/g' -e 's/=/%3D/g' <<<"$sig")
  echo "SharedAccessSignature sr=$sr&sig=$sig&se=$se"
}
# hub_accepts_device: the hub answers the device's own twin to that token.
hub_accepts_device() {
  local token code
  token=$(device_token) || return 1
  code=$(curl -sS --cacert "$r/tmp/emulator-ca.pem" -o "$work/twin.json" -w '%{http_code}' \
    -H "Authorization: $token" "https://$hub/twins/$device?api-version=2021-04-12")
  [ "$code" = 200 ] || { echo "HTTP $code: $(cat "$work/twin.json")"; return 1; }
}
message="a message signed on $arch"
hmac_key=$(openssl rand -hex 32)
# hmac_matches HANDLE: the Keys Service's HMAC-SHA256 of the message is openssl's with the key bytes.
hmac_matches() {
  local ours theirs
  ours=$(api keyd.sock POST '/sign?api-version=2020-09-01' \
    "{\"keyHandle\":\"$1\",\"algorithm\":\"HMAC-SHA256\",\"parameters\":{\"message\":\"$(printf '%s' "$message" | b64)\"}}" \
    | json_field signature) || return 1
  theirs=$(printf '%s' "$message" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hmac_key" -binary | b64)
  [ "$ours" = "$theirs" ] || { echo "keyd-tpm: $ours, openssl: $theirs"; return 1; }
}
# ecdsa_verifies HANDLE: the Keys Service's ECDSA signature of the message's SHA-256 verifies
# with openssl against the public key /parameters/ec-point gives.
ecdsa_verifies() {
  local point
  point=$(api keyd.sock POST '/parameters/ec-point?api-version=2020-09-01' "{\"keyHandle\":\"$1\"}" | json_field value) \
    || return 1
  # SubjectPublicKeyInfo of a compressed P-256 point: the DER header, then the 33 bytes.
  { printf '3039301306072a8648ce3d020106082a8648ce3d030107032200' | xxd -r -p; base64 -d <<<"$point"; } > "$work/ec.der"
  openssl pkey -pubin -inform DER -in "$work/ec.der" -out "$work/ec.pem" || return 1
  printf '%s' "$message" | openssl dgst -sha256 -binary > "$work/digest"
  api keyd.sock POST '/sign?api-version=2020-09-01' \
    "{\"keyHandle\":\"$1\",\"algorithm\":\"ECDSA\",\"parameters\":{\"digest\":\"$(b64 < "$work/digest")\"}}" \
    | json_field signature | base64 -d > "$work/ec.sig" || return 1
  openssl pkeyutl -verify -pubin -inkey "$work/ec.pem" -in "$work/digest" -sigfile "$work/ec.sig"
}
check "sign_with_auth_key: the hub accepts a device SAS token signed with the key DPS gave" hub_accepts_device
hmac_handle=$(api keyd.sock POST '/key?api-version=2020-09-01' \
  "{\"keyId\":\"arch-test-hmac\",\"keyBytes\":\"$(xxd -r -p <<<"$hmac_key" | b64)\",\"usage\":\"sign\"}" | json_field keyHandle) || true
check "Keys Service: an imported HMAC key signs as openssl computes it" hmac_matches "$hmac_handle"
ec_handle=$(api keyd.sock POST '/keypair?api-version=2020-09-01' \
  "{\"keyId\":\"arch-test-ec\",\"preferredAlgorithms\":\"ec-p256\"}" | json_field keyHandle) || true
check "Keys Service: an EC P-256 key made in the TPM signs what openssl verifies" ecdsa_verifies "$ec_handle"

step "smoke run on $arch: keyd-tpm restarts from its key store"
stops_cleanly() { kill -TERM "$keyd_pid" && wait "$keyd_pid"; }
check_here "SIGTERM stops keyd-tpm cleanly (exit 0)" stops_cleanly
check_here "keyd-tpm starts again with the EK, SRK and auth key it left" start_keyd
check "the same handle signs the same HMAC (key store read back on $arch)" hmac_matches "$hmac_handle"
check "the same EC key signs what openssl verifies" ecdsa_verifies "$ec_handle"
check "the auth key still signs tokens the hub accepts" hub_accepts_device

# --- Purge ---------------------------------------------------------------------------------------
step "purge"
cleanup_smoke() {
  local i
  for (( i=${#pids[@]}-1; i>=0; i-- )); do kill "${pids[i]}" 2> /dev/null || true; wait "${pids[i]}" 2> /dev/null || true; done
  pids=()
}
cleanup_smoke
rm "$r/etc/aziot/config.toml"   # the administrator's file: the package leaves it
check "dpkg --purge removes it" in_root "$r" dpkg --purge aziot-tpm
same "$(snapshot "$r")" "$before" "after purge the system is as before install (files, users, groups, the daemons' state)"

echo "# $arch package tests took ${SECONDS}s"
summary
[ "$failed" -eq 0 ]
