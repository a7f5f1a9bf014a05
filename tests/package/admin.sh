# Sourced by run.sh, after its chroot and booted-container checks, with its helpers: what a
# gateway admin meets when something is wrong, on the installed package.
#
# * purge keeps what the admin wrote (config.toml, a CA file, a drop-in), and a reinstall finds it;
# * docs/install.md's emulator path, its commands run as written in a booted container;
# * booted with systemd: `config apply` refuses the template's placeholder and a missing CA file
#   before writing anything, waits for each daemon to be ready and reports it, and fails with
#   the daemon's own error when one does not start; a keyd-tpm without a TPM is an error in
#   `journalctl -p err` once per start (no libtss2 lines), systemd stops restarting it at the
#   start limit, and `aziot-tpm status` names the failing unit, its error and what to run.
# shellcheck shell=bash disable=SC2154,SC2016
# (SC2154: run.sh sets work, r and the helpers; SC2016: backquotes in expected messages, and
# sh -c scripts, are literal.)

step "purge keeps what the admin wrote"
r=$(new_chroot purge-keeps)
check "aziot-tpm installs" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
admin_config='hostname = "purge-test"
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net/"
id_scope = "0ne00000001"
[provisioning.attestation]
method = "tpm"
[cloud]
trust_bundle = "/etc/aziot/my-ca.pem"'
printf '%s\n' "$admin_config" > "$r/etc/aziot/config.toml"
printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' > "$r/etc/aziot/my-ca.pem"
printf '# the admin'"'"'s drop-in\n' > "$r/etc/aziot/identityd/config.d/90-admin.toml"
admin_files=(etc/aziot/config.toml etc/aziot/my-ca.pem etc/aziot/identityd/config.d/90-admin.toml)
admin_sums=$(cd "$r" && md5sum "${admin_files[@]}")
check "config apply --no-restart writes the daemons' files" in_root "$r" aziot-tpm config apply --no-restart
check "dpkg --purge removes it" in_root "$r" dpkg --purge aziot-tpm
same "$(cd "$r" && md5sum "${admin_files[@]}" 2>&1)" "$admin_sums" \
  "the admin's config.toml, CA file and drop-in are still there, unchanged"
same "$(cd "$r" && find ./etc/aziot -name 00-super.toml | sort)" "" "the files config apply generated are gone"
check "a reinstall finds them and config apply works again" \
  sh -c "chroot '$r' dpkg -i /tmp/aziot-tpm.deb > /dev/null && chroot '$r' aziot-tpm config apply --no-restart > /dev/null"

step "booted: config apply, readiness and failing daemons as the admin sees them"
r=$(new_chroot boot-admin)
check "aziot-tpm installs" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
prepare_boot "$r"
# config apply's super-config: the container's swtpm, a DPS that does not answer.
good_config='hostname = "boot-test"
[provisioning]
source = "dps"
global_endpoint = "https://127.0.0.1:9/"
id_scope = "0ne00000001"
[provisioning.attestation]
method = "tpm"
[tpm]
tcti = "swtpm:host=127.0.0.1,port=2321"'
# apply_in_ct CONFIG: writes CONFIG as /etc/aziot/config.toml, runs config apply in the container;
# sets applied (its output), applied_status and applied_ms.
apply_in_ct() {
  local t0
  printf '%s\n' "$1" > "$r/etc/aziot/config.toml"
  t0=$(date +%s%N)
  applied_status=0
  applied=$(in_ct aziot-tpm config apply 2>&1) || applied_status=$?
  applied_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "# config apply: exit $applied_status after $applied_ms ms" >&2
  printf '%s\n' "$applied" | sed 's/^/#   /' >&2
}
# outcome CODE TEXT...: the last apply_in_ct exited CODE and printed every TEXT.
outcome() {
  local code=$1 text
  shift
  [ "$applied_status" -eq "$code" ] || { echo "exit $applied_status, expected $code:"; echo "$applied"; return 1; }
  for text in "$@"; do
    grep -qF -- "$text" <<<"$applied" || { echo "no \"$text\" in:"; echo "$applied"; return 1; }
  done
}
# journal_err UNIT: the daemon's own lines at priority err.
journal_err() { in_ct journalctl --no-pager -q -o cat -p err "_SYSTEMD_UNIT=$1"; }
# settles_at_start_limit UNIT: systemd stops restarting UNIT within 90 s (the unit is failed,
# its restart count stays).
settles_at_start_limit() {
  local _ n
  for _ in $(seq 1 180); do
    if [ "$(in_ct systemctl show -p ActiveState --value "$1")" = failed ]; then
      n=$(in_ct systemctl show -p NRestarts --value "$1")
      # Past RestartSec (5 s): a unit still being restarted would have moved.
      sleep 7
      [ "$(in_ct systemctl show -p ActiveState --value "$1")" = failed ] \
        && [ "$(in_ct systemctl show -p NRestarts --value "$1")" = "$n" ] && return 0
    fi
    sleep 0.5
  done
  in_ct systemctl status --no-pager "$1" | tail -5
  return 1
}

if boot "$r" > "$work/booted.out"; then
  pass "the container boots with systemd"
  identityd_before=$(md5sum "$r/etc/aziot/identityd/config.d/00-super.toml")

  apply_in_ct "${good_config/0ne00000001/<ID scope of your DPS instance, e.g. 0ne00000001>}"
  check "the template's placeholder ID scope is refused (exit 2), naming the key" \
    outcome 2 '`provisioning.id_scope`' "the template's placeholder"
  apply_in_ct "$(printf '%s\n[cloud]\ntrust_bundle = "/etc/aziot/no-such-ca.pem"' "$good_config")"
  check "a CA file that does not exist is refused (exit 2), naming the key and the file" \
    outcome 2 '`cloud.trust_bundle` = "/etc/aziot/no-such-ca.pem" cannot be read'
  same "$(md5sum "$r/etc/aziot/identityd/config.d/00-super.toml")" "$identityd_before" \
    "and nothing was written"

  apply_in_ct "$good_config"
  check "a good config: exit 0, each daemon ready, and the first DPS error (${applied_ms} ms)" \
    outcome 0 "aziot-keyd.service" "aziot-identityd.service" "ready" \
      "Provisioning: not provisioned yet: cannot reach DPS at https://127.0.0.1:9" "(dps_unreachable)"

  # identityd-dps (aziotid) cannot read a CA file only root may read: it fails to start.
  printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' > "$r/etc/aziot/root-only-ca.pem"
  chmod 0600 "$r/etc/aziot/root-only-ca.pem"
  apply_in_ct "$(printf '%s\n[cloud]\ntrust_bundle = "/etc/aziot/root-only-ca.pem"' "$good_config")"
  check "identityd-dps failing to start: exit 1 with its own error (${applied_ms} ms)" \
    outcome 1 "aziot-identityd.service did not start: identityd-dps cannot start:" "root-only-ca.pem" \
      "journalctl -u aziot-identityd.service -e"

  # keyd-tpm without a TPM (no /dev/tpmrm0 in the container).
  apply_in_ct "${good_config/swtpm:host=127.0.0.1,port=2321/device:\/dev\/tpmrm0}"
  check "keyd-tpm failing to start: exit 1 with its own error (${applied_ms} ms)" \
    outcome 1 "aziot-keyd.service did not start: keyd-tpm cannot start:" "/dev/tpmrm0"
  status_t0=$(date +%s%N)
  status_status=0
  status_out=$(in_ct aziot-tpm status 2>&1) || status_status=$?
  status_ms=$(( ($(date +%s%N) - status_t0) / 1000000 ))
  printf '%s\n' "# aziot-tpm status: exit $status_status after $status_ms ms" "$status_out" | sed '2,$s/^/#   /' >&2
  check "aziot-tpm status: exit 3, the failing unit, its last error and the log command (${status_ms} ms)" \
    sh -c '[ "$1" -eq 3 ] && printf %s "$2" | grep -qF "is not running: aziot-keyd.service" \
      && printf %s "$2" | grep -qF "Its last error: keyd-tpm cannot start: cannot open the TPM" \
      && printf %s "$2" | grep -qF "journalctl -u aziot-keyd.service -e" || { echo "exit $1:"; echo "$2"; exit 1; }' \
      _ "$status_status" "$status_out"
  check "systemd stops restarting keyd-tpm at the start limit" settles_at_start_limit aziot-keyd.service
  starts=$(in_ct journalctl --no-pager -q -o cat "_SYSTEMD_UNIT=aziot-keyd.service" | grep -c "keyd-tpm cannot start" || true)
  errors=$(journal_err aziot-keyd.service | grep -c "cannot start" || true)
  same "$errors" "$starts" "journalctl -p err: the start error once per start (${starts} starts), at priority err"
  same "$(in_ct journalctl --no-pager -q -o cat "_SYSTEMD_UNIT=aziot-keyd.service" | grep -c 'ERROR:\|WARNING:\|Error when creating' || true)" "0" \
    "and no libtss2 or tss-esapi lines at any priority"
  status_out=$(in_ct aziot-tpm status 2>&1 || true)
  check "at the start limit, status says systemd stopped trying and how to start it again" \
    sh -c 'printf %s "$1" | grep -qF "systemd stopped restarting it" && printf %s "$1" | grep -qF "systemctl reset-failed aziot-keyd.service" && printf %s "$1" | grep -qF "aziot-tpmd.socket" || { echo "$1"; exit 1; }' \
      _ "$status_out"
  printf '%s\n' "# aziot-tpm status at the start limit:" "$status_out" | sed '2,$s/^/#   /' >&2
else
  fail "the container boots with systemd" "$(cat "$work/booted.out")"
fi
shut_down

step "booted: docs/install.md's emulator path, run as written"
r=$(new_chroot boot-docs)
check "aziot-tpm installs" in_root "$r" dpkg -i /tmp/aziot-tpm.deb
# What the doc says to copy from the build machine.
cp "$bin_dir/iot-emulator" "$r/root/iot-emulator"
{
  echo 'set -euo pipefail'
  # The container has no sudo: we are root.
  echo 'sudo() { case "${1:-}" in *=*) env "$@" ;; *) "$@" ;; esac; }'
  echo 'cd /root'
  echo 'set -x'
  bash "$root/tests/docs/run.sh" --extract "$root/docs/install.md"
} > "$r/root/install-md.sh"
if boot "$r" > "$work/booted.out"; then
  pass "the container boots with systemd"
  docs_t0=$SECONDS
  if docs_out=$(in_ct bash /root/install-md.sh 2>&1); then
    pass "docs/install.md's emulator path runs as written, to a provisioned device ($((SECONDS - docs_t0)) s)"
  else
    fail "docs/install.md's emulator path runs as written" "$(tail -40 <<<"$docs_out")"
  fi
else
  fail "the container boots with systemd" "$(cat "$work/booted.out")"
fi
shut_down
