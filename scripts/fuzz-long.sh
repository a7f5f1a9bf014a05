#!/usr/bin/env bash
# The long run of every property and fuzz suite (the CI run of `cargo test` makes a few
# thousand cases; this makes over a million): the parsers in-process, the three APIs'
# routes in-process, and keyd-tpm (keyd.sock, tpmd.sock) and identityd-dps (identityd.sock)
# as processes on their own swtpm, sent hostile requests as raw bytes.
#
#   bash scripts/fuzz-long.sh            # every suite that passes on main
#   bash scripts/fuzz-long.sh --pending  # also the ones marked #[ignore = "needs ..."]
#   FUZZ_SCALE=0.1 bash scripts/fuzz-long.sh   # a tenth of the long run
#
# AZIOT_FUZZ_SEED=<64 hex digits> replays a run (each failure prints its seed). Prints one line
# per target and the totals: cases, crashes, hangs, 5xx for caller mistakes, error answers
# without a {"message"}, keys lost. Exits 1 if any suite failed.
set -uo pipefail
cd "$(dirname "$0")/.."

pending=()
if [[ "${1:-}" == "--pending" ]]; then
    pending=(--include-ignored)
fi
scale="${FUZZ_SCALE:-1}"
report="$(mktemp -t fuzz-report.XXXXXX)"
log="$(mktemp -t fuzz-log.XXXXXX)"
trap 'rm -f "$report"' EXIT
export CARGO_TERM_COLOR=never RUST_BACKTRACE=0 AZIOT_FUZZ_REPORT="$report"

echo "building the test binaries ..."
cargo build --workspace --all-targets --locked -q || exit 1

failed=()
# package, test target, name filter, scale over the CI cases
suites=(
    "keyd-tpm       --lib          properties 150"
    "keyd-tpm       --test=fuzz    ''         30"
    "identityd-dps  --lib          fuzz_tests 60"
    "identityd-dps  --test=e2e     fuzz::     30"
    "aziot-http     --test=server  fuzz::     60"
    "aziot-config   --test=properties ''      20"
    "aziot-tpm-cli  --bin=aziot-tpm fuzz_tests 60"
)
started=$SECONDS
for suite in "${suites[@]}"; do
    read -r package target filter factor <<<"$suite"
    filter="${filter//\'/}"
    suite_scale=$(awk -v a="$factor" -v b="$scale" 'BEGIN { print a * b }')
    echo "== $package $target $filter (x$suite_scale of the CI cases)"
    if ! AZIOT_FUZZ_SCALE="$suite_scale" cargo test --locked -q -p "$package" "$target" -- $filter "${pending[@]}" >>"$log" 2>&1; then
        failed+=("$package $target $filter")
    fi
done

echo
printf '%-30s %9s %7s %5s %6s %10s %9s %10s %8s\n' target cases crashes hangs 5xx no-message keys-lost unanswered seconds
awk '
/^FUZZ / {
    delete f
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    printf "%-30s %9d %7d %5d %6d %10d %9d %10d %8.1f\n", f["target"], f["cases"], f["crashes"], f["hangs"], f["server_errors"], f["no_message"], f["keys_lost"], f["unanswered"], f["seconds"]
    cases += f["cases"]; crashes += f["crashes"]; hangs += f["hangs"]; s5 += f["server_errors"]
    nm += f["no_message"]; lost += f["keys_lost"]; un += f["unanswered"]; other += f["other"]; targets++
}
END {
    printf "%-30s %9d %7d %5d %6d %10d %9d %10d\n", "TOTAL (" targets " targets)", cases, crashes, hangs, s5, nm, lost, un
    printf "\nfuzz-long: %d cases, %d crashes, %d hangs, %d 5xx for caller mistakes, %d errors without a message, %d keys lost, %d other violations\n", cases, crashes, hangs, s5, nm, lost, other
}' "$report"
echo "fuzz-long: $((SECONDS - started)) s; test output in $log"
if ((${#failed[@]})); then
    echo "fuzz-long: FAILED suites:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    grep -E '^(FUZZ|thread .* panicked|  minimal input|replay with)' "$log" | grep -v ' crashes=0 hangs=0 server_errors=0 no_message=0 keys_lost=0 unanswered=[0-9]* other=0 ' | head -40 >&2
    exit 1
fi
