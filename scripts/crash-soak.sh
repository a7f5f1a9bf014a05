#!/usr/bin/env bash
# Long runs of the crash tests: keyd-tpm SIGKILLed at random points of auth-key imports and of
# key create/import/move/delete, identityd-dps SIGKILLed at random points of DPS registration,
# each restarted on the same swtpm and checked (see keyd-tpm/tests/crashes.rs and
# identityd-dps/tests/e2e/crashes.rs). CI runs 30 rounds of each; this runs many more.
#
#   bash scripts/crash-soak.sh [ROUNDS]      (default 300 rounds per test)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rounds=${1:-300}
cargo build --workspace --all-targets --locked
started=$SECONDS
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
  local what=$1 t0=$SECONDS verdict=passed; shift
  CRASH_ROUNDS=$rounds cargo test --locked "$@" -- --nocapture --test-threads 1 >"$log" 2>&1 || verdict=FAILED
  grep -E "CRASH_SEED=" "$log" || true
  if [ "$verdict" = FAILED ]; then failed=1; tail -n 60 "$log"; fi
  echo "# $what: $rounds rounds, $verdict, in $((SECONDS - t0)) s"
}
run "keyd-tpm: kill during auth-key import" -p keyd-tpm --test crashes kill_during_auth_key_import
run "keyd-tpm: kill during key create/import/move/delete" -p keyd-tpm --test crashes kill_during_key_create
run "identityd-dps: kill during DPS registration" -p identityd-dps --test e2e crashes::
echo "crash soak: 3 tests x $rounds rounds in $((SECONDS - started)) s: $([ $failed = 0 ] && echo all passed || echo FAILED)"
exit $failed
