#!/usr/bin/env bash
# Runs what a doc tells its reader to run, so the doc cannot drift from the product: the fenced
# blocks marked `doctest` (```bash doctest), in order, as one bash script, after the hidden
# `<!-- doctest-setup ... -->` blocks that stand in for what the doc assumes (a TPM, a running
# keyd-tpm). A block fails the doc when any command in it fails.
#
#   bash tests/docs/run.sh [--bin-dir DIR] DOC.md...     (default target/debug; build it first)
#   bash tests/docs/run.sh --extract DOC.md              (the script only, to run elsewhere:
#                                                         the package tests run install.md's
#                                                         in a booted container)
#
# Sandbox: a private mount, PID and network namespace (needs root; skipped without it), with
# its own /tmp and loopback, so fixed paths and ports in a doc (/tmp/emulator, swtpm on 2321)
# meet no other test; our binaries first on PATH; `sudo` runs its command as is (we are root).
# Every process a doc starts ends with the namespace. Ends with "N passed, N failed".
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir="$root/target/debug"
docs=()
extract_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --extract) extract_only=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) docs+=("$1"); shift ;;
  esac
done

# extract DOC: the setup and doctest blocks of DOC as one script, each block headed by a
# comment naming its line in the doc.
extract() {
  awk -v doc="$1" '
    /^<!-- doctest-setup/ { hidden = 1; print "# --- " doc ":" NR " (setup)"; next }
    hidden && /^-->/ { hidden = 0; next }
    hidden { print; next }
    /^[ ]*```[a-z]* doctest/ { fenced = 1; match($0, /^[ ]*/); indent = RLENGTH; print "# --- " doc ":" NR; next }
    fenced && /^[ ]*```/ { fenced = 0; next }
    fenced { print substr($0, indent + 1); next }
  ' "$1"
}

if [ "$extract_only" -eq 1 ]; then
  for doc in "${docs[@]}"; do extract "$doc"; done
  exit 0
fi

passed=0 failed=0 skipped=0
if [ "$(id -u)" -ne 0 ] || ! command -v unshare > /dev/null; then
  echo "skipped - the docs' commands: they need root (a private namespace for their fixed paths and ports)"
  echo "0 passed, 0 failed, ${#docs[@]} skipped"
  exit 0
fi
for doc in "${docs[@]}"; do
  script=$(mktemp)
  {
    echo 'set -euo pipefail'
    echo 'ip link set lo up'
    echo 'mount -t tmpfs tmpfs /tmp'
    # shellcheck disable=SC2016 # for the doc's shell
    echo 'sudo() { if [ "${1:-}" = "-E" ]; then shift; fi; case "${1:-}" in *=*) env "$@" ;; *) "$@" ;; esac; }'
    echo "export PATH='$bin_dir':\"\$PATH\""
    echo "cd '$root'"
    echo 'set -x'
    extract "$doc"
  } > "$script"
  started=$SECONDS
  if out=$(unshare --mount --propagation private --net --pid --fork --mount-proc bash "$script" 2>&1); then
    passed=$((passed + 1))
    echo "ok - $doc runs as written ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    echo "FAIL - $doc runs as written"
    tail -40 <<<"$out" | sed 's/^/    /'
  fi
  rm -f "$script"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
