#!/usr/bin/env bash
# Installs the system packages the build, the tests and the demo need, once: a second run with
# everything present installs nothing. Debian/Ubuntu, as root (or with sudo available).
# Extra package names given as arguments are installed the same way.
set -euo pipefail

packages=(
  pkg-config libssl-dev libtss2-dev   # build: openssl and tpm2-tss (tss-esapi links the distro's libtss2)
  swtpm swtpm-tools                    # tests and demo: the TPM 2.0 simulator
  tpm2-tools                           # tests: an independent TPM client to cross-check ours
  curl ca-certificates                 # demo: talk to the daemons' sockets
  jq xxd                               # tests/docs: the docs' commands read JSON and hex with them
  tinyproxy                            # tests: a real HTTPS (CONNECT) proxy on loopback
  iproute2                             # tests/docs: loopback up in the private network namespace the docs run in
  faketime                             # tests: swtpm's EK certificates issued in the past (expired); a host clock hours off (check)
)
packages+=("$@")                       # what a caller needs besides (scripts/package.sh: packaging tools)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
