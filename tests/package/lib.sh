# Helpers shared by the package tests: run.sh (the host's architecture) and arch.sh (arm64 and
# armhf under qemu-user). Sourced, not run; the caller sets root (the repository) and work (its
# temp dir under target/package-test).
# shellcheck shell=bash
# shellcheck disable=SC2154 # root and work: the caller's

# --- Results -----------------------------------------------------------------------------------
passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok - $1"; }
fail() {
  local line
  failed=$((failed + 1))
  echo "FAIL - $1"
  if [ -n "${2:-}" ]; then while IFS= read -r line; do echo "    $line"; done <<<"$2"; fi
}
skip() { skipped=$((skipped + 1)); echo "skipped - $1"; }
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds; shows its output when it fails.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$what"; else fail "$what" "$out"; fi
}
# check_here DESCRIPTION COMMAND...: as check, but COMMAND runs in this shell, so it may set
# variables and start processes this shell waits for.
check_here() {
  local what=$1
  shift
  if "$@" > "$work/check.out" 2>&1; then pass "$what"; else fail "$what" "$(cat "$work/check.out")"; fi
}
# same ACTUAL EXPECTED DESCRIPTION: passes when they are equal; shows the difference otherwise.
same() {
  if [ "$1" = "$2" ]; then pass "$3"; else fail "$3" "$(diff <(echo "$2") <(echo "$1") || true)"; fi
}
step() { echo "# $1 (at ${SECONDS}s)"; }
summary() { echo "$passed passed, $failed failed, $skipped skipped"; }
# has_lines TEXT LINE...: every LINE is a whole line of TEXT.
has_lines() {
  local text=$1 line
  shift
  for line in "$@"; do
    grep -qxF -- "$line" <<<"$text" || { echo "no line \"$line\" in:"; echo "$text"; return 1; }
  done
}

# --- The package -------------------------------------------------------------------------------
# build_package WHAT PACKAGE.SH-ARGS...: builds the .deb into $work with scripts/package.sh and
# sets deb; on failure reports it with the build log's end and exits.
build_package() {
  local what=$1
  shift
  if ! deb=$(bash "$root/scripts/package.sh" --out "$work" "$@" 2> "$work/build.log" | tail -1) \
     || [ ! -f "$deb" ]; then
    fail "$what" "$(tail -40 "$work/build.log")"
    summary
    exit 1
  fi
  pass "$what ($(du -h "$deb" | cut -f1))"
}

# check_contents DEB ARCH: the same files, modes, docs, relations and conffile on every
# architecture; the control files end up in $work/control.
check_contents() {
  local deb=$1 arch=$2 listing expected docs depends
  # mode owner path (symlinks with their target), docs apart: they follow docs/.
  listing=$(dpkg-deb -c "$deb" | awk '{p = $6; for (i = 7; i <= NF; i++) p = p " " $i; print $1, $2, p}' \
    | grep -v ' \./usr/share/doc/' | sort -k3)
  expected=$(sort -k3 <<'EOF'
drwxr-xr-x root/root ./
drwxr-xr-x root/root ./etc/
drwxr-xr-x root/root ./etc/aziot/
drwxr-xr-x root/root ./etc/aziot/tpmd/
drwxr-xr-x root/root ./etc/aziot/tpmd/config.d/
-rw-r--r-- root/root ./etc/aziot/tpmd/config.d/50-aziot-tpm.toml
drwxr-xr-x root/root ./lib/
drwxr-xr-x root/root ./lib/systemd/
drwxr-xr-x root/root ./lib/systemd/system/
drwxr-xr-x root/root ./lib/systemd/system/aziot-identityd.service.d/
-rw-r--r-- root/root ./lib/systemd/system/aziot-identityd.service.d/50-identityd-dps.conf
drwxr-xr-x root/root ./lib/systemd/system/aziot-keyd.service.d/
-rw-r--r-- root/root ./lib/systemd/system/aziot-keyd.service.d/50-keyd-tpm.conf
-rw-r--r-- root/root ./lib/systemd/system/aziot-keyd.service.d/60-tpmd-socket.conf
drwxr-xr-x root/root ./lib/systemd/system/aziot-tpmd.service.d/
-rw-r--r-- root/root ./lib/systemd/system/aziot-tpmd.service.d/50-keyd-tpm.conf
drwxr-xr-x root/root ./lib/systemd/system/aziot-tpmd.socket.d/
-rw-r--r-- root/root ./lib/systemd/system/aziot-tpmd.socket.d/50-keyd-tpm.conf
drwxr-xr-x root/root ./lib/systemd/system-generators/
-rwxr-xr-x root/root ./lib/systemd/system-generators/aziot-tpm-generator
drwxr-xr-x root/root ./usr/
drwxr-xr-x root/root ./usr/bin/
-rwxr-xr-x root/root ./usr/bin/aziot-tpm
lrwxrwxrwx root/root ./usr/bin/aziotctl -> aziot-tpm
drwxr-xr-x root/root ./usr/libexec/
drwxr-xr-x root/root ./usr/libexec/aziot-tpm/
-rwxr-xr-x root/root ./usr/libexec/aziot-tpm/identityd-dps
-rwxr-xr-x root/root ./usr/libexec/aziot-tpm/keyd-tpm
drwxr-xr-x root/root ./usr/share/
drwxr-xr-x root/root ./usr/share/aziot-tpm/
-rw-r--r-- root/root ./usr/share/aziot-tpm/config.toml.template
drwxr-xr-x root/root ./usr/share/aziot-tpm/units/
-rw-r--r-- root/root ./usr/share/aziot-tpm/units/aziot-identityd.service
-rw-r--r-- root/root ./usr/share/aziot-tpm/units/aziot-identityd.socket
-rw-r--r-- root/root ./usr/share/aziot-tpm/units/aziot-keyd.service
-rw-r--r-- root/root ./usr/share/aziot-tpm/units/aziot-keyd.socket
-rw-r--r-- root/root ./usr/share/aziot-tpm/units/aziot-tpmd.socket
drwxr-xr-x root/root ./usr/share/lintian/
drwxr-xr-x root/root ./usr/share/lintian/overrides/
-rw-r--r-- root/root ./usr/share/lintian/overrides/aziot-tpm
drwxr-xr-x root/root ./usr/share/man/
drwxr-xr-x root/root ./usr/share/man/man1/
-rw-r--r-- root/root ./usr/share/man/man1/aziot-tpm.1.gz
EOF
)
  same "$listing" "$expected" "paths, modes and owners are exactly the expected ones"
  # debhelper compresses docs over 4 KiB, so compare the names without .gz.
  docs=$(dpkg-deb -c "$deb" | awk '{print $6}' | grep '^\./usr/share/doc/aziot-tpm/' | sed 's|.*/||; s|\.gz$||' | sort)
  check "docs include the README, install.md and the copyright" \
    has_lines "$docs" README.md install.md copyright changelog
  same "$(dpkg-deb -f "$deb" Package Architecture | tr '\n' ' ')" \
    "Package: aziot-tpm Architecture: $arch " "one binary package for $arch"
  depends=$(dpkg-deb -f "$deb" Depends)
  check "Depends names adduser, tpm-udev (tss group, /dev/tpmrm0 rule) and the TSS and OpenSSL libraries" \
    has_lines "$(tr ',' '\n' <<<"$depends" | sed 's/(.*)//; s/ //g')" adduser tpm-udev libtss2-esys-3.0.2-0 libtss2-tctildr0 libssl3
  same "$(dpkg-deb -f "$deb" Conflicts Breaks Replaces Provides)" "" \
    "no Conflicts/Breaks/Replaces/Provides: it coexists with aziot-identity-service"
  mkdir -p "$work/control"
  dpkg-deb -e "$deb" "$work/control"
  same "$(cat "$work/control/conffiles")" "/etc/aziot/tpmd/config.d/50-aziot-tpm.toml" "the one conffile is the tpmd snippet"
  check "the version is the workspace's" grep -qE "^version = \"$(dpkg-deb -f "$deb" Version)\"" "$root/Cargo.toml"
}

# --- Chroots -----------------------------------------------------------------------------------
# The host's Debian release: the chroots are of the same one.
# shellcheck source=/dev/null
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

# base_chroot DEB ARCH: sets base to a minimal Debian of the host's release for ARCH with the
# package's dependencies (first of each alternative), systemd for the units and their checks and
# swtpm as a TPM, jq for docs/install.md's commands, made once with debootstrap and cached under target/package-test (rebuilt when
# that list changes). A foreign ARCH is bootstrapped in two stages, the second one run under
# qemu-user (binfmt_misc must be set up for it). Reports a failure and exits if it cannot.
base_chroot() {
  local deb=$1 arch=$2 include mirror foreign=()
  include=$( { echo systemd; echo swtpm; echo jq; dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g'; } \
    | grep . | sort -u | paste -sd, -)
  base="$root/target/package-test/base-$suite"
  if [ "$arch" != "$(dpkg --print-architecture)" ]; then
    base="$base-$arch"
    foreign=(--foreign "--arch=$arch")
  fi
  (
    flock 9
    if [ ! -f "$base.stamp" ] || [ "$(cat "$base.stamp")" != "$include" ]; then
      # shellcheck disable=SC2016 # apt's format, not the shell's
      mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE)' 2>/dev/null | awk -v s="$suite" '$2 == s {print $1; exit}')
      rm -rf "$base" "$base.new" "$base.stamp"
      echo "# debootstrap $suite ($arch) with $include"
      nice debootstrap "${foreign[@]}" --variant=minbase --include="$include" "$suite" "$base.new" ${mirror:+"$mirror"} \
        > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
      if [ ${#foreign[@]} -gt 0 ]; then
        echo "# debootstrap's second stage under qemu-user (at ${SECONDS}s)"
        nice chroot "$base.new" /debootstrap/debootstrap --second-stage > "$work/debootstrap.log" 2>&1 \
          || { tail -20 "$work/debootstrap.log"; exit 1; }
      fi
      mv "$base.new" "$base"
      echo "$include" > "$base.stamp"
    fi
  ) 9> "$root/target/package-test/base.lock" \
    || { fail "a minimal $suite chroot for $arch can be made (debootstrap)"; summary; exit 1; }
}

in_root() { local r=$1; shift; chroot "$r" "$@"; }
# What purge must restore: every path outside dpkg's and the logs' own state, and the account files.
snapshot() {
  local r=$1
  (cd "$r" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./run \
      -o -path ./var/lib/dpkg -o -path ./var/log -o -path ./var/cache -o -name '*-' \) -prune -o -print | sort)
  (cd "$r/etc" && md5sum passwd group shadow gshadow)
}
# owner_mode ROOT PATH...: owner, group (names from the chroot's databases) and mode.
owner_mode() { local r=$1; shift; in_root "$r" stat -c '%U:%G %a' "$@"; }
# system_user ROOT USER HOME: a system user (uid < 1000) with that home and no login shell.
system_user() {
  local line uid home shell
  line=$(in_root "$1" getent passwd "$2") || { echo "no user $2"; return 1; }
  IFS=: read -r _ _ uid _ _ home shell <<<"$line"
  if [ "$uid" -ge 1000 ] || [ "$home" != "$3" ] || [ "$shell" != /usr/sbin/nologin ]; then
    echo "$line"
    return 1
  fi
}
# dpkg_says ROOT TEXT DPKG-ARGS...: dpkg succeeds and prints TEXT.
dpkg_says() {
  local r=$1 text=$2 out
  shift 2
  if ! out=$(in_root "$r" dpkg "$@" 2>&1) || ! grep -qF -- "$text" <<<"$out"; then
    echo "$out"
    return 1
  fi
}
# exits_with ROOT CODE TEXT COMMAND...: COMMAND in the chroot exits CODE and prints TEXT.
exits_with() {
  local r=$1 code=$2 text=$3 out status=0
  shift 3
  out=$(in_root "$r" "$@" 2>&1) || status=$?
  if [ "$status" -ne "$code" ] || ! grep -qF -- "$text" <<<"$out"; then
    echo "exit $status: $out"
    return 1
  fi
}
groups_of() { in_root "$1" id -nG "$2" | tr ' ' '\n' | sort | paste -sd' ' -; }

# check_installed_alone ROOT: what installing the package on a system without upstream's leaves:
# the service users, their groups, and the state and config directories with their owners.
check_installed_alone() {
  local r=$1 u
  for u in aziotks:/var/lib/aziot/keyd aziottpm:/var/lib/aziot/tpmd aziotid:/var/lib/aziot/identityd; do
    check "system user ${u%%:*} (home ${u#*:}, no login)" system_user "$r" "${u%%:*}" "${u#*:}"
  done
  same "$(groups_of "$r" aziotks)" "aziotks tss" "aziotks is in group tss (tpm-udev gives it /dev/tpmrm0)"
  same "$(groups_of "$r" aziotid)" "aziotid aziotks aziottpm" "aziotid is in aziotks and aziottpm (keyd.sock, tpmd.sock)"
  same "$(owner_mode "$r" /var/lib/aziot /var/lib/aziot/keyd /var/lib/aziot/keyd-tpm /var/lib/aziot/identityd \
          /etc/aziot/keyd/config.d /etc/aziot/tpmd/config.d /etc/aziot/identityd/config.d \
          /etc/aziot/tpmd/config.d/50-aziot-tpm.toml)" \
"root:root 755
aziotks:aziotks 700
aziotks:aziotks 700
aziotid:aziotid 700
aziotks:aziotks 700
aziottpm:aziottpm 700
aziotid:aziotid 700
aziottpm:aziottpm 600" "state and config directories: owners and modes"
}

# generated ROOT: runs our systemd generator in the chroot as systemd would at boot and lists
# what it made, relative to its output directory.
generated() {
  local r=$1 out=/run/systemd/generator.late
  rm -rf "$r/run/systemd"
  mkdir -p "$r/run/systemd/generator" "$r/run/systemd/generator.early" "$r$out"
  in_root "$r" /lib/systemd/system-generators/aziot-tpm-generator \
    /run/systemd/generator /run/systemd/generator.early "$out"
  (cd "$r$out" && find . -mindepth 1 | sort)
}
# shellcheck disable=SC2034 # used by the tests that source this
all_generated="./aziot-identityd.service
./aziot-identityd.socket
./aziot-keyd.service
./aziot-keyd.socket
./aziot-tpmd.socket
./sockets.target.wants
./sockets.target.wants/aziot-identityd.socket
./sockets.target.wants/aziot-keyd.socket
./sockets.target.wants/aziot-tpmd.socket"
