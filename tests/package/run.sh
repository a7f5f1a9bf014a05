#!/usr/bin/env bash
# Package tests: builds the aziot-tpm .deb from already built binaries, checks its contents and
# maintainer scripts, then installs and purges it in throwaway Debian chroots: alone, beside
# upstream's aziot-identity-service (a stand-in with its files, units, users and maintainer
# script behaviour, in upstream-stand-in/), and with upstream's package coming and going; then
# boots two of them with systemd (systemd-nspawn, a swtpm inside) to see the units at work.
#
#   bash tests/package/run.sh [--bin-dir DIR]    (default target/debug; build it first)
#
# The chroots need root and the Debian mirror the host's apt uses; a minimal base (debootstrap,
# about 40 s) is cached under target/package-test and rebuilt when the package's dependencies
# change. Without root those checks are reported as skipped. Ends with "N passed, N failed".
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/package"
bin_dir="$root/target/debug"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

cache="$root/target/package-test"
mkdir -p "$cache"
work=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/package/lib.sh
. "$here/lib.sh"

bash "$root/scripts/setup.sh" shellcheck debootstrap systemd-container procps >&2

# --- Build ---------------------------------------------------------------------------------
step "build the package from $bin_dir"
build_package "the package builds and lintian finds no error or warning" --bin-dir "$bin_dir"

# --- Contents --------------------------------------------------------------------------------
step "contents"
check_contents "$deb" "$(dpkg-architecture -qDEB_HOST_ARCH)"

# --- Maintainer scripts ----------------------------------------------------------------------
step "maintainer scripts"
if command -v shellcheck > /dev/null; then
  check "shellcheck: maintainer scripts (with debhelper's parts)" \
    shellcheck -s sh "$work/control/preinst" "$work/control/postinst" "$work/control/postrm" "$work/control/prerm"
  check "shellcheck: scripts/package.sh, the package tests, the stand-in's scripts" \
    shellcheck -x -P "$root" "$root/scripts/package.sh" "$here"/*.sh "$here"/upstream-stand-in/DEBIAN/p*
else
  skip "shellcheck is not installed (apt-get install shellcheck)"
fi

# --- Units, offline --------------------------------------------------------------------------
# The chroot's own systemd-analyze checks its units: the host needs no systemd. verify prints
# warnings but exits 0 on many of them: clean means no output.
verify_units() { # ROOT UNIT...
  local r=$1 out
  shift
  if ! out=$(chroot "$r" systemd-analyze verify --man=no "$@" 2>&1) || [ -n "$out" ]; then
    echo "$out"
    return 1
  fi
}
# Prints the overall exposure (0 safest .. 10) systemd-analyze security gives a service.
exposure() { # ROOT UNIT
  chroot "$1" systemd-analyze security --offline=true "$2" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}

# with_generated ROOT COMMAND...: runs COMMAND while the generated units are installed where
# offline tools find them (systemd-analyze reads generator directories only from a manager).
with_generated() {
  local r=$1 status=0 unit
  shift
  cp "$r"/run/systemd/generator.late/aziot-* "$r/etc/systemd/system/"
  "$@" || status=$?
  for unit in "$r"/run/systemd/generator.late/aziot-*; do rm -f "$r/etc/systemd/system/${unit##*/}"; done
  return "$status"
}
the_units=(aziot-keyd.service aziot-keyd.socket aziot-tpmd.socket aziot-identityd.service aziot-identityd.socket)
# runs_our_daemons ROOT: the merged units run keyd-tpm (both sockets, root then aziotks, three
# capabilities, the TPM device only) and identityd-dps (as aziotid).
runs_our_daemons() {
  has_lines "$(merged "$1" aziot-keyd.service)" Environment= ExecStart=/usr/libexec/aziot-tpm/keyd-tpm \
    User=root Environment=AZIOT_KEYD_TPM_USER=aziotks "Sockets=aziot-keyd.socket aziot-tpmd.socket" \
    "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID" "DeviceAllow=/dev/tpmrm0 rw" \
  && has_lines "$(merged "$1" aziot-tpmd.socket)" Service=aziot-keyd.service \
  && has_lines "$(merged "$1" aziot-identityd.service)" ExecStart=/usr/libexec/aziot-tpm/identityd-dps User=aziotid
}
# all_at_most LIMIT VALUE...: every VALUE is a number no greater than LIMIT.
all_at_most() {
  local limit=$1 v
  shift
  for v in "$@"; do
    awk -v l="$limit" -v v="$v" 'BEGIN { exit !(v ~ /^[0-9.]+$/ && v + 0 <= l + 0) }' || { echo "exposure '$v' > $limit"; return 1; }
  done
}

# --- Chroots ---------------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  skip "install/purge in Debian chroots: needs root"
  echo "$passed passed, $failed failed, $skipped skipped (${SECONDS}s)"
  [ "$failed" -eq 0 ]
  exit
fi

step "chroot base"
base_chroot "$deb" "$(dpkg-architecture -qDEB_HOST_ARCH)"

# The stand-in's empty directories, which git does not keep: upstream ships them too.
cp -a "$here/upstream-stand-in" "$work/stand-in"
for svc in keyd tpmd certd identityd; do
  mkdir -p "$work/stand-in/etc/aziot/$svc/config.d" "$work/stand-in/var/lib/aziot/$svc"
  chmod 0700 "$work/stand-in/etc/aziot/$svc/config.d" "$work/stand-in/var/lib/aziot/$svc"
done
dpkg-deb --build --root-owner-group "$work/stand-in" "$work/aziot-identity-service.deb" > /dev/null

# new_chroot NAME: a fresh copy of the base with both packages in /tmp; prints its path.
new_chroot() {
  local r="$work/$1"
  cp -a "$base" "$r"
  cp "$deb" "$r/tmp/aziot-tpm.deb"
  cp "$work/aziot-identity-service.deb" "$r/tmp/aziot-identity-service.deb"
  echo "$r"
}
# merged ROOT UNIT: the unit file and its drop-ins, as systemd reads them.
merged() { chroot "$1" systemd-analyze cat-config "systemd/system/$2"; }

step "alone: install"
r=$(new_chroot alone)
before=$(snapshot "$r")
check "dpkg -i installs it on a minimal $suite with its dependencies" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
check "the binaries run there (shared libraries resolved)" in_root "$r" /usr/bin/aziot-tpm --version
check_installed_alone "$r"
same "$(generated "$r")" "$all_generated" \
  "the generator makes upstream's five units and enables the three sockets (socket activation)"
check "systemd-analyze verify: the generated units with our drop-ins are clean" \
  with_generated "$r" verify_units "$r" "${the_units[@]}"
check "they run keyd-tpm and identityd-dps as designed" with_generated "$r" runs_our_daemons "$r"
keyd_exposure=$(with_generated "$r" exposure "$r" aziot-keyd.service)
identityd_exposure=$(with_generated "$r" exposure "$r" aziot-identityd.service)
check "systemd-analyze security: keyd-tpm's exposure ${keyd_exposure:-?}, identityd-dps's ${identityd_exposure:-?} (at most 2.0; 0 safest, 10 worst)" \
  all_at_most 2.0 "$keyd_exposure" "$identityd_exposure"
check "keyd-tpm refuses to run without a TPM, naming the device" \
  exits_with "$r" 1 /dev/tpmrm0 /usr/libexec/aziot-tpm/keyd-tpm
same "$(in_root "$r" dpkg-divert --list /usr/bin/aziotctl)" \
  "diversion of /usr/bin/aziotctl to /usr/bin/aziotctl.distrib by aziot-tpm" \
  "upstream's aziotctl is diverted to aziotctl.distrib, before it is even installed"

record_before=$(cat "$r/var/lib/aziot-tpm/created")
check "installing it again (the upgrade path) succeeds" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
same "$(cat "$r/var/lib/aziot-tpm/created")" "$record_before" "and records nothing new"

step "alone: purge"
check "dpkg --purge removes it" in_root "$r" dpkg --purge aziot-tpm
same "$(snapshot "$r")" "$before" "after purge the system is as before install (files, users, groups)"
check "the tss group (tpm-udev's) is still there" in_root "$r" getent group tss

step "beside upstream's aziot-identity-service: install"
r=$(new_chroot beside)
before=$(snapshot "$r")
check "the stand-in for aziot-identity-service installs" in_root "$r" dpkg -i /tmp/aziot-identity-service.deb
with_upstream=$(snapshot "$r")
check "aziot-tpm installs beside it (no file conflicts)" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
upstream_units=("${the_units[@]}" aziot-tpmd.service)
check "systemd-analyze verify: upstream's units with our drop-ins are clean" verify_units "$r" "${upstream_units[@]}"
check "upstream's units run keyd-tpm and identityd-dps" runs_our_daemons "$r"
check "upstream's aziot-tpmd.service is skipped (keyd-tpm owns the TPM)" \
  has_lines "$(merged "$r" aziot-tpmd.service)" "ConditionPathExists=!/usr/libexec/aziot-tpm/keyd-tpm"
same "$(generated "$r")" "" "the generator makes nothing: upstream's units are installed"
same "$(grep -c '^user\|^group' "$r/var/lib/aziot-tpm/created" || true)" "0" "no user or group created: upstream's are used"
same "$(groups_of "$r" aziotks)" "aziotks tss" "upstream's aziotks is added to group tss"
check "upstream's aziotctl moved to aziotctl.distrib; aziotctl is our wrapper" \
  test "$(readlink "$r/usr/bin/aziotctl")" = aziot-tpm -a -x "$r/usr/bin/aziotctl.distrib"
check "the wrapper runs upstream's aziotctl for commands other than check" \
  exits_with "$r" 1 "stand-in for upstream's aziotctl" aziotctl system status

step "beside upstream's aziot-identity-service: purge ours"
check "dpkg --purge aziot-tpm" in_root "$r" dpkg --purge aziot-tpm
same "$(snapshot "$r")" "$with_upstream" "upstream's users, groups and directories stay, ours are gone, aziotks left group tss"
check "then purging the stand-in too" in_root "$r" dpkg --purge aziot-identity-service
same "$(snapshot "$r")" "$before" "after both purges the system is as before"

step "upstream's package arrives after ours, then leaves"
r=$(new_chroot arrives)
before=$(snapshot "$r")
check "aziot-tpm installs alone" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
same "$(generated "$r")" "$all_generated" "the generator makes the units"
check "installing aziot-identity-service triggers aziot-tpm (sockets listen again)" \
  dpkg_says "$r" "Processing triggers for aziot-tpm" -i /tmp/aziot-identity-service.deb
same "$(generated "$r")" "" "the generator steps aside for upstream's units"
check "which run our daemons" runs_our_daemons "$r"
check "removing aziot-identity-service triggers aziot-tpm again" \
  dpkg_says "$r" "Processing triggers for aziot-tpm" -r aziot-identity-service
same "$(generated "$r")" "$all_generated" "the generator makes the units again"
check "systemd-analyze verify: they are clean" with_generated "$r" verify_units "$r" "${the_units[@]}"
check "purging aziot-tpm while upstream's configuration remains" in_root "$r" dpkg --purge aziot-tpm
check "keeps the users upstream's purge will delete" in_root "$r" getent passwd aziotks aziottpm aziotid
check "and removes keyd-tpm's own state" test ! -e "$r/var/lib/aziot/keyd-tpm"
check "purging aziot-identity-service's configuration too" in_root "$r" dpkg --purge aziot-identity-service
same "$(snapshot "$r")" "$before" "after both purges the system is as before"

# --- Booted: systemd runs the units -----------------------------------------------------------
# The container's TPM: a swtpm on its private loopback, and keyd-tpm allowed to reach it with the
# drop-in docs/install.md gives for a simulator. Configs as `config apply` leaves them: each 0600
# to its service user. identityd's DPS does not answer (port 9), so identityd-dps keeps retrying.
prepare_boot() { # ROOT
  local r=$1
  cat > "$r/etc/systemd/system/swtpm-test.service" <<'UNIT'
[Unit]
Description=TPM simulator for the package tests
[Service]
StateDirectory=swtpm-test
ExecStart=/usr/bin/swtpm socket --tpm2 --tpmstate dir=/var/lib/swtpm-test --server type=tcp,port=2321,bindaddr=127.0.0.1 --ctrl type=tcp,port=2322,bindaddr=127.0.0.1 --flags not-need-init,startup-clear
UNIT
  mkdir -p "$r/etc/systemd/system/aziot-keyd.service.d"
  cat > "$r/etc/systemd/system/aziot-keyd.service.d/90-swtpm.conf" <<'UNIT'
[Unit]
Wants=swtpm-test.service
After=swtpm-test.service
[Service]
PrivateNetwork=no
IPAddressDeny=
RestrictAddressFamilies=AF_UNIX AF_INET
UNIT
  write_config "$r" /etc/aziot/tpmd/config.d/00-super.toml aziottpm 'tcti = "swtpm:host=127.0.0.1,port=2321"'
  write_config "$r" /etc/aziot/keyd/config.d/00-super.toml aziotks "$(printf '[aziot_keys]\nhomedir_path = "/var/lib/aziot/keyd"\n\n[[principal]]\nuid = %s\nkeys = ["aziot_identityd_master_id"]' "$(in_root "$r" id -u aziotid)")"
  write_config "$r" /etc/aziot/identityd/config.d/00-super.toml aziotid "$(printf 'hostname = "boot-test"\nhomedir = "/var/lib/aziot/identityd"\n\n[provisioning]\nsource = "dps"\nglobal_endpoint = "https://127.0.0.1:9/"\nscope_id = "0ne00000001"\n\n[provisioning.attestation]\nmethod = "tpm"')"
}
write_config() { # ROOT PATH OWNER TEXT
  printf '%s\n' "$4" > "$1$2"
  in_root "$1" chown "$3:$3" "$2"
  chmod 0600 "$1$2"
}
# in_ct COMMAND...: runs COMMAND in the booted container (its PID 1's namespaces, root and cwd:
# entering the mount namespace alone does not move the root when this script runs in a chroot).
in_ct() { nsenter -t "$ct" -a --root --wd "$@"; }
# boot ROOT: starts systemd in ROOT (systemd-nspawn, own network namespace) and waits until it
# has booted; sets nspawn and ct (the container's PID 1).
boot() {
  local _
  ct=""
  systemd-nspawn -q -D "$1" -b --register=no --keep-unit --private-network > "$work/boot.log" 2>&1 &
  nspawn=$!
  for _ in $(seq 1 120); do
    ct=$(pgrep -P "$nspawn" | head -1 || true)
    if [ -n "$ct" ] && in_ct systemctl is-system-running 2> /dev/null | grep -qE '^(running|degraded)$'; then
      return 0
    fi
    kill -0 "$nspawn" 2> /dev/null || break
    sleep 0.5
  done
  echo "container PID 1: ${ct:-not found} (children of nspawn $nspawn: $(pgrep -P "$nspawn" | tr '\n' ' '))"
  if [ -n "$ct" ]; then
    echo "is-system-running: $(in_ct systemctl is-system-running 2>&1)"
    in_ct systemctl list-jobs --no-pager 2>&1 | head -10
  fi
  ct=""
  tail -30 "$work/boot.log"
  return 1
}
shut_down() {
  local _
  kill -TERM "$nspawn" 2> /dev/null || true
  for _ in $(seq 1 60); do kill -0 "$nspawn" 2> /dev/null || break; sleep 0.5; done
  check "the container shuts down" test ! -e "/proc/$nspawn"
  kill -KILL "$nspawn" 2> /dev/null || true
}
trap 'kill -KILL "${nspawn:-}" 2> /dev/null || true; rm -rf "$work"' EXIT
# proc_status UNIT KEY: the KEY line of the unit's main process's /proc status, values only.
proc_status() {
  local pid
  pid=$(in_ct systemctl show -p MainPID --value "$1")
  in_ct cat "/proc/$pid/status" | sed -n "s/^$2:[[:space:]]*//p" | tr -s '[:space:]' ' ' | sed 's/ $//'
}
tpm_info_via_socket() {
  local info
  info=$(in_ct aziot-tpm tpm-info -o json) || return 1
  grep -q registration_id <<<"$info" && in_ct systemctl is-active -q aziot-keyd.service
}
# journald may file a line a moment after the daemon wrote it: look again for up to 10 s.
switched_after_configs() {
  local _
  for _ in $(seq 1 40); do
    in_ct journalctl -u aziot-keyd.service --no-pager | grep -q "configs read; now running as aziotks" && return 0
    sleep 0.25
  done
  return 1
}
# identityd-dps derives the registration ID from the EK, read through tpmd.sock as aziotid
# (group aziottpm), before it sends anything to DPS.
identityd_registers() {
  local _
  in_ct systemctl start aziot-identityd.service || return 1
  for _ in $(seq 1 120); do
    if in_ct journalctl -u aziot-identityd.service --no-pager | grep -q 'registering "[a-z0-9]*" with DPS at https://127.0.0.1:9'; then
      in_ct systemctl is-active -q aziot-identityd.service
      return
    fi
    sleep 0.25
  done
  in_ct journalctl -u aziot-identityd.service --no-pager | tail -20
  return 1
}
stops_cleanly() {
  in_ct systemctl stop aziot-keyd.service \
    && [ "$(in_ct systemctl show -p ExecMainStatus --value aziot-keyd.service)" = 0 ]
}
# booted_checks ROOT FRAGMENT_DIR: boots ROOT and checks the daemons at work under their units,
# whose files must come from FRAGMENT_DIR (the generator's, or upstream's package's).
booted_checks() {
  local r=$1 fragments=$2 ks_uid ks_gid tss_gid id_uid
  prepare_boot "$r"
  # Not through check: boot sets ct and nspawn, which check's subshell would lose.
  if boot "$r" > "$work/booted.out"; then
    pass "the container boots with systemd"
  else
    fail "the container boots with systemd" "$(cat "$work/booted.out")"
    shut_down
    return
  fi
  same "$(in_ct systemctl show -p FragmentPath --value aziot-keyd.service aziot-tpmd.socket aziot-identityd.service | grep . | xargs -n1 dirname | sort -u)" \
    "$fragments" "the units' files are in $fragments"
  same "$(in_ct stat -c '%n %U:%G %a' /run/aziot/keyd.sock /run/aziot/tpmd.sock /run/aziot/identityd.sock)" \
"/run/aziot/keyd.sock aziotks:aziotks 660
/run/aziot/tpmd.sock aziottpm:aziottpm 660
/run/aziot/identityd.sock aziotid:aziotid 660" "the sockets listen from boot, owned as upstream's"
  check "aziot-tpm tpm-info through tpmd.sock starts keyd-tpm (socket activation)" tpm_info_via_socket
  ks_uid=$(in_root "$r" id -u aziotks) ks_gid=$(in_root "$r" id -g aziotks)
  tss_gid=$(in_root "$r" getent group tss | cut -d: -f3)
  same "$(proc_status aziot-keyd.service Uid)/$(proc_status aziot-keyd.service Gid)/$(proc_status aziot-keyd.service Groups)" \
    "$ks_uid $ks_uid $ks_uid $ks_uid/$ks_gid $ks_gid $ks_gid $ks_gid/$(printf '%s\n' "$ks_gid" "$tss_gid" | sort -n | paste -sd' ' -)" \
    "keyd-tpm runs as aziotks with groups aziotks and tss"
  same "$(proc_status aziot-keyd.service CapPrm) $(proc_status aziot-keyd.service CapEff) $(proc_status aziot-keyd.service NoNewPrivs) $(proc_status aziot-keyd.service Seccomp)" \
    "0000000000000000 0000000000000000 1 2" "keyd-tpm has no capability, no new privileges, a system call filter"
  check "keyd-tpm read both configs as root, then switched" switched_after_configs
  check "identityd-dps starts, reads the EK through tpmd.sock and calls DPS (unreachable here)" identityd_registers
  id_uid=$(in_root "$r" id -u aziotid)
  same "$(proc_status aziot-identityd.service Uid) $(proc_status aziot-identityd.service CapEff)" \
    "$id_uid $id_uid $id_uid $id_uid 0000000000000000" "identityd-dps runs as aziotid with no capability"
  if [ -e "$r/lib/systemd/system/aziot-tpmd.service" ]; then
    check "upstream's aziot-tpmd.service, started anyway, is skipped" in_ct systemctl start aziot-tpmd.service
    same "$(in_ct systemctl show -p ConditionResult --value aziot-tpmd.service) $(in_ct systemctl is-active aziot-tpmd.service || true)" \
      "no inactive" "and does not run"
  fi
  check "SIGTERM stops keyd-tpm cleanly (exit 0)" stops_cleanly
  shut_down
}

step "booted alone: the generator's units at work (systemd-nspawn, swtpm in the container)"
r=$(new_chroot boot-alone)
check "aziot-tpm installs" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
booted_checks "$r" /run/systemd/generator.late

step "booted beside upstream's aziot-identity-service: its units run our daemons"
r=$(new_chroot boot-beside)
check "the stand-in, then aziot-tpm, install" in_root "$r" dpkg -i /tmp/aziot-identity-service.deb /tmp/aziot-tpm.deb
booted_checks "$r" /lib/systemd/system

# What an admin meets when something is wrong (purge, config apply, failing daemons).
# shellcheck source=/dev/null
. "$here/admin.sh"

echo "# package tests took ${SECONDS}s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
