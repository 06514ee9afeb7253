#!/usr/bin/env bash
# A long fuzzing campaign: each named target (default: all) runs for SECONDS (default 3600)
# over its own persistent corpus (fuzz/corpus/<target>, not checked in) plus the checked-in
# seeds, one after the other. Each run's log, with libFuzzer's final statistics (executions,
# coverage, features, corpus size), goes to fuzz/campaign/<target>.log and a one-line summary
# to fuzz/campaign/summary.tsv. A crash stops that target and leaves its input under
# fuzz/artifacts/<target>/: turn it into a regression test in the owning crate.
#
#   fuzz/campaign.sh [-t SECONDS] [target ...]
#
# Runs at the lowest CPU priority, so it can go on in the background while you work.
set -euo pipefail

cd "$(dirname "$0")"
seconds=3600
if [ "${1:-}" = "-t" ]; then
    seconds=$2
    shift 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

mkdir -p campaign
cargo fuzz build -s none >/dev/null
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="campaign/$t.log"
    started=$(date -u +%FT%TZ)
    status=ok
    nice -n 19 cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=crash
    stat() { grep -E "^stat::$1:" "$log" | awk '{print $2}' | tail -n 1; }
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1)
    printf '%s\t%s\t%ss\t%s\texecs=%s\t%s\n' "$started" "$t" "$seconds" "$status" \
        "$(stat number_of_executed_units)" "$cov" | tee -a campaign/summary.tsv
done
