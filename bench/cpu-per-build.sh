#!/usr/bin/env bash
# CPU per build of a daemon, for profiling changes to the build path (not a
# side-by-side benchmark: bench/local-builds.sh is). Starts a daemon on a
# fresh store, builds two salted rounds of N trivial derivations (the
# workload of bench/local-builds.sh), and prints per round the wall time,
# the daemon's CPU per build (utime+stime) and its children's (the builders
# and whatever it forks for them), read from /proc/PID/stat. CPU figures
# stay comparable under load where walls do not.
#
# Usage (root for the sandbox): bench/cpu-per-build.sh FERRY N [daemon args...]
# With PERF=FILE, `perf record -g` of the daemon over the second round.
set -euo pipefail
FERRY=$1; N=$2; shift 2
D=$(mktemp -d /var/tmp/ferry-cpu-XXXX)
chmod 755 "$D" # build users (--no-sandbox) must reach the store
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$D"' EXIT
export FERRY_STORE_DIR=$D/store FERRY_STATE_DIR=$D/state FERRY_CONFIG_DIR=$D/config FERRY_DAEMON_SOCKET=$D/socket
FERRY_LOG=warn "$FERRY" daemon --max-jobs 2 "$@" > "$D/daemon.log" 2>&1 &
P=$!
for _ in $(seq 100); do [ -S "$D/socket" ] && break; sleep 0.05; done
cpu() { awk '{print $14+$15, $16+$17}' "/proc/$P/stat"; }
for r in 1 2; do
  cat > "$D/t.scm" <<EOT
(define salt "s$r-$RANDOM")
(map (lambda (i) (derivation (string-append "triv-" (number->string i)) #:system "x86_64-linux" #:builder "/bin/sh"
  #:args (list "-c" (string-append "echo " salt " " (number->string i) " > \$out")))) (iota $N))
EOT
  read -r u0 c0 < <(cpu)
  s=$(date +%s.%N)
  if [ -n "${PERF:-}" ] && [ "$r" = 2 ]; then perf record -q -g -o "$PERF" -p "$P" -- sleep 1000 & PP=$!; sleep 0.5; fi
  "$FERRY" build "$D/t.scm" > /dev/null 2> "$D/build.err" || { tail -3 "$D/build.err" >&2; exit 1; }
  e=$(date +%s.%N)
  if [ -n "${PERF:-}" ] && [ "$r" = 2 ]; then kill -INT "$PP"; wait "$PP" || true; fi
  read -r u1 c1 < <(cpu)
  tck=$(getconf CLK_TCK)
  echo "round $r: wall $(echo "$e - $s" | bc) s; daemon cpu/build $(echo "($u1 - $u0)*1000/$tck/$N" | bc -l | cut -c1-5) ms; children cpu/build $(echo "($c1 - $c0)*1000/$tck/$N" | bc -l | cut -c1-5) ms; load $(cut -d' ' -f1 /proc/loadavg)"
done
