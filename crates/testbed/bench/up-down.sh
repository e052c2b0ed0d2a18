#!/usr/bin/env bash
# Wall time of `ferry-testbed up --hosts N` and `down` (release build),
# RUNS times each; prints every run and the median. Needs root.
# Usage: crates/testbed/bench/up-down.sh [HOSTS=4] [RUNS=10]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
hosts=${1:-4}
runs=${2:-10}
cargo build --release -q -p ferry-cli -p ferry-testbed
tb=./target/release/ferry-testbed
dir=$(mktemp -d /tmp/ferry-testbed-bench-XXXXXX)/tb
trap '$tb down --dir "$dir" >/dev/null 2>&1 || true; rmdir "$(dirname "$dir")" 2>/dev/null || true' EXIT
now() { date +%s.%N; }
ups=() downs=()
for _ in $(seq "$runs"); do
  t0=$(now); $tb up --hosts "$hosts" --dir "$dir" >/dev/null; t1=$(now)
  $tb down --dir "$dir" >/dev/null; t2=$(now)
  ups+=("$(awk "BEGIN {printf \"%.3f\", $t1 - $t0}")") downs+=("$(awk "BEGIN {printf \"%.3f\", $t2 - $t1}")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "up   --hosts $hosts: ${ups[*]} s; median $(median "${ups[@]}") s"
echo "down --hosts $hosts: ${downs[*]} s; median $(median "${downs[@]}") s"
