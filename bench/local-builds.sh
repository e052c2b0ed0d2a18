#!/usr/bin/env bash
# 1000 trivial independent derivations built locally with 2 jobs: Ferry
# against Nix 2.8 (the "local" mode of ../shared/peers/nix), side by side
# in one run.
#
# Workload (the same for both, a fresh salt per round and per mode, so
# nothing is ever cached): N derivations "triv-<i>", system x86_64-linux,
# builder /bin/sh, args ("-c" "echo <salt> <i> > $out"), no inputs.
#   Nix  : a .nix file (builtins.genList), built in the peer's client store
#          with `nixc nix-build FILE --argstr salt S --no-out-link
#          --max-jobs 2 --builders ''` (exactly how the peer's bench.sh runs
#          its local mode; its nix.conf has sandbox = false).
#   Ferry: the equivalent .scm build file (map over iota), built with
#          `ferry build -j 2 FILE.scm`.
#
# Timed per round (RUNS rounds, modes interleaved, start rotating):
#   nix            nix-build (instantiate + build), wall
#   nix-inst       nix-instantiate alone (other salt, not built) -> the
#                  build-only time is nix - nix-inst
#   ferry-sb       `ferry build -j 2` against `ferry daemon --max-jobs 2`
#                  (sandbox on, the default as root), wall
#   ferry-nosb     the same against a daemon started with --no-sandbox (the
#                  like-for-like comparison: the Nix peer has sandbox=false)
#   ferry-emb      `ferry build -j 2` with no daemon (embedded), sandbox on
#   ferry-inst     `ferry derivation add FILE.scm` alone (other salt)
#   floor          N x `/bin/sh -c 'echo <salt> <i> > DIR/<i>'` through
#                  `xargs -P 2`: the cost of just running the builders
# Each daemon is started once for the whole session (its own store, state,
# socket under BENCH_DIR); its idle RSS (VmRSS) is read right after startup
# and 2 s after the last round. Its CPU time (utime+stime of the daemon
# itself, and of its waited-for builders) is read around each run.
#
# Derived figures:
#   speedup        nix wall / ferry wall (per mode, from medians)
#   overhead/build (ferry wall - floor wall) * JOBS / N: the time each build
#                  slot spends on anything but running the builder
#                  (evaluation and upload of the build file included)
#   daemon CPU/build  (utime+stime of the daemon process) / N
#
# Checks: every build prints N output paths; 3 spot-checked outputs contain
# "<salt> <i>"; Nix's log shows N "building" lines.
#
# Disk: the Nix client store is GC'd after each round (`nixc nix-store --gc`,
# not timed; the peer's own approach). Ferry's daemon stores grow by ~15 MB
# per round and are deleted at the end; embedded mode uses a fresh store per
# round, deleted after it.
#
# Output: progress on stderr; on stdout (and in $RESULTS_DIR/local-builds-
# <stamp>.txt) machine and load, 'name: value unit' lines per round, a
# summary table with ratios and the goal checks. With APPEND=1 (default) the
# figures are appended to BENCHMARKS.md as a new section.
#
# Env knobs:
#   RUNS=3  N=1000  JOBS=2
#   BENCH_DIR=/var/tmp/ferry-bench-local   stores, sockets, results
#   FERRY_BIN=path     use this ferry; otherwise `cargo build --release -p ferry-cli`
#   NIX_PEER=../shared/peers/nix        the Nix baseline (setup.sh is run,
#                      with N_BUILDERS=1, if its client nix-daemon is down)
#   MAX_LOAD=2.5       before each timed command, wait (up to LOAD_WAIT=60 s)
#                      until the 1-minute loadavg is below this; the load
#                      seen is recorded either way
#   APPEND=1           append the results section to BENCHMARKS.md
#   KEEP=1             keep the ferry daemons' stores at the end
#
# Usage (as root; Nix's nix-daemon setup needs it):
#   RUNS=3 bench/local-builds.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

RUNS="${RUNS:-3}"
N="${N:-1000}"
JOBS="${JOBS:-2}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/ferry-bench-local}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
NIX_PEER="${NIX_PEER:-$(dirname "$ROOT")/shared/peers/nix}"
MAX_LOAD="${MAX_LOAD:-2.5}"
LOAD_WAIT="${LOAD_WAIT:-60}"
APPEND="${APPEND:-1}"

[ "$(id -u)" = 0 ] || { echo "local-builds.sh: must run as root (the Nix peer's daemon and ferry's sandbox need it)" >&2; exit 1; }
[ -r "$NIX_PEER/common.sh" ] || { echo "local-builds.sh: no Nix peer at $NIX_PEER" >&2; exit 1; }

# The peer's helpers: STATE, client_pid, nixc (runs a command in the client
# mount namespace against its nix-daemon). Ours override log/die.
# shellcheck source=/dev/null
source "$NIX_PEER/common.sh"
log() { printf '[local-builds] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

mkdir -p "$BENCH_DIR" "$RESULTS_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$RESULTS_DIR/local-builds-$STAMP.txt"
WORK="$BENCH_DIR/run-$STAMP"
mkdir -p "$WORK"
say() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
emit() { printf '%s: %s %s\n' "$1" "$2" "$3" | tee -a "$RESULTS"; }

# ------------------------------------------------------------ Nix peer
if ! client_pid >/dev/null; then
  log "Nix peer client daemon not running: $NIX_PEER/setup.sh (N_BUILDERS=1)"
  N_BUILDERS="${N_BUILDERS:-1}" "$NIX_PEER/setup.sh" >&2
fi
client_pid >/dev/null || die "Nix peer client daemon did not start"

# ------------------------------------------------------------ ferry
if [ -n "${FERRY_BIN:-}" ]; then
  FERRY="$FERRY_BIN"
else
  log "cargo build --release -p ferry-cli"
  (cd "$ROOT" && cargo build --release -p ferry-cli >&2)
  FERRY="$ROOT/target/release/ferry"
fi
[ -x "$FERRY" ] || die "no ferry binary at $FERRY"

# ------------------------------------------------------------ workload
NIXFILE="$WORK/trivial.nix"
cat > "$NIXFILE" <<'EOF'
# N independent trivial derivations; a new salt means nothing is cached.
{ salt, n }:
builtins.genList (i: derivation {
  name = "triv-${toString i}";
  system = "x86_64-linux";
  builder = "/bin/sh";
  args = [ "-c" "echo ${salt} ${toString i} > $out" ];
}) n
EOF

# scm_file SALT -> path of a build file equivalent to trivial.nix
scm_file() {
  local f="$WORK/trivial-$1.scm"
  cat > "$f" <<EOF
;;; $N independent trivial derivations (the same as trivial.nix).
(define salt "$1")
(map (lambda (i)
       (derivation (string-append "triv-" (number->string i))
         #:system "x86_64-linux"
         #:builder "/bin/sh"
         #:args (list "-c" (string-append "echo " salt " " (number->string i) " > \$out"))))
     (iota $N))
EOF
  echo "$f"
}

# Wait until the machine is quiet enough; print the load seen.
wait_quiet() {
  local waited=0
  while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$MAX_LOAD" 'BEGIN{exit !(l > m)}'; do
    [ "$waited" -ge "$LOAD_WAIT" ] && { log "load still $(loadavg) after ${LOAD_WAIT}s; going on"; break; }
    sleep 5; waited=$((waited + 5))
  done
  loadavg
}

# ------------------------------------------------------------ ferry daemons
# ferry_env MODE -> exports the store/state/socket of MODE
ferry_env() {
  local d="$BENCH_DIR/$1"
  export FERRY_STORE_DIR="$d/store" FERRY_STATE_DIR="$d/state" \
    FERRY_CONFIG_DIR="$d/config" FERRY_DAEMON_SOCKET="$d/socket"
}
declare -A DPID RSS0
DAEMONS=()
stop_daemons() {
  local m
  for m in "${DAEMONS[@]}"; do
    kill "${DPID[$m]}" 2>/dev/null || true
    wait "${DPID[$m]}" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "${BENCH_DIR:?}/$m"
  done
}
trap stop_daemons EXIT
start_daemon() {
  local mode="$1"; shift
  rm -rf "${BENCH_DIR:?}/$mode"; mkdir -p "$BENCH_DIR/$mode"
  ferry_env "$mode"
  FERRY_LOG=warn "$FERRY" daemon --max-jobs "$JOBS" "$@" \
    >"$BENCH_DIR/$mode/daemon.log" 2>&1 &
  DPID[$mode]=$!
  DAEMONS+=("$mode")
  for _ in $(seq 1 100); do [ -S "$FERRY_DAEMON_SOCKET" ] && break; sleep 0.05; done
  [ -S "$FERRY_DAEMON_SOCKET" ] || { cat "$BENCH_DIR/$mode/daemon.log" >&2; die "ferry daemon ($mode) did not start"; }
  sleep 1
  RSS0[$mode]="$(rss_mib "${DPID[$mode]}")"
  log "ferry daemon $mode: pid ${DPID[$mode]}, RSS ${RSS0[$mode]} MiB at start"
}
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
# cpu_ticks PID -> "self children" (utime+stime, cutime+cstime) in clock ticks
cpu_ticks() { awk '{print $14+$15, $16+$17}' "/proc/$1/stat"; }
TCK="$(getconf CLK_TCK)"

start_daemon ferry-sb
start_daemon ferry-nosb --no-sandbox

# ------------------------------------------------------------ header
{
  echo "# local-builds $STAMP: $N trivial derivations, $JOBS jobs, $RUNS rounds"
  echo "# $(nix-store --version) | ferry $("$FERRY" --version 2>/dev/null | head -1) | $(uname -sr) | $(nproc) cpus | $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) | $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "# ferry: $FERRY ; work files: $WORK"
} | tee -a "$RESULTS"

# check_outputs NAME FILE SALT [nix]: N lines, 3 outputs hold "SALT i"
check_outputs() {
  local name="$1" out="$2" salt="$3" how="${4:-}" n i p got
  n="$(wc -l < "$out")"
  [ "$n" = "$N" ] || die "$name: $n output paths, want $N (see $out)"
  for i in 0 $((N / 2)) $((N - 1)); do
    p="$(grep -- "-triv-$i\$" "$out" | head -1)"
    [ -n "$p" ] || die "$name: no output for triv-$i"
    if [ "$how" = nix ]; then got="$(nixc cat "$p")"; else got="$(cat "$p")"; fi
    [ "$got" = "$salt $i" ] || die "$name: $p holds '$got', want '$salt $i'"
  done
}

# ------------------------------------------------------------ one mode
run_mode() {
  local mode="$1" r="$2" salt t0 dt f load c0 c1 c0c c1c
  salt="$mode-r$r-$(date +%s)-$RANDOM"
  load="$(wait_quiet)"
  case "$mode" in
    nix)
      t0="$(now)"
      nixc nix-build "$NIXFILE" --argstr salt "$salt" --arg n "$N" --no-out-link \
        --max-jobs "$JOBS" --builders '' >"$WORK/$mode-$r.out" 2>"$WORK/$mode-$r.err" \
        || { tail -20 "$WORK/$mode-$r.err" >&2; die "nix-build failed"; }
      dt="$(sub "$t0" "$(now)")"
      check_outputs "$mode" "$WORK/$mode-$r.out" "$salt" nix
      [ "$(grep -c "^building '" "$WORK/$mode-$r.err")" = "$N" ] || die "nix: log does not show $N builds"
      ;;
    nix-inst)
      t0="$(now)"
      nixc nix-instantiate "$NIXFILE" --argstr salt "$salt" --arg n "$N" \
        >"$WORK/$mode-$r.out" 2>"$WORK/$mode-$r.err" || die "nix-instantiate failed"
      dt="$(sub "$t0" "$(now)")"
      [ "$(grep -c '\.drv$' "$WORK/$mode-$r.out")" = "$N" ] || die "nix-instantiate: not $N .drv"
      ;;
    ferry-sb | ferry-nosb)
      f="$(scm_file "$salt")"; ferry_env "$mode"
      read -r c0 c0c < <(cpu_ticks "${DPID[$mode]}")
      t0="$(now)"
      "$FERRY" build -j "$JOBS" "$f" >"$WORK/$mode-$r.out" 2>"$WORK/$mode-$r.err" \
        || { tail -20 "$WORK/$mode-$r.err" >&2; die "ferry build ($mode) failed"; }
      dt="$(sub "$t0" "$(now)")"
      read -r c1 c1c < <(cpu_ticks "${DPID[$mode]}")
      check_outputs "$mode" "$WORK/$mode-$r.out" "$salt"
      emit "run$r.$mode.daemon_cpu_per_build" "$(awk -v a="$c0" -v b="$c1" -v t="$TCK" -v n="$N" 'BEGIN{printf "%.2f", (b-a)/t/n*1000}')" ms
      emit "run$r.$mode.builder_cpu_per_build" "$(awk -v a="$c0c" -v b="$c1c" -v t="$TCK" -v n="$N" 'BEGIN{printf "%.2f", (b-a)/t/n*1000}')" ms
      emit "run$r.$mode.daemon_threads_after" "$(threads "${DPID[$mode]}")" ""
      ;;
    ferry-emb)
      f="$(scm_file "$salt")"
      rm -rf "${BENCH_DIR:?}/ferry-emb"; ferry_env ferry-emb
      export FERRY_DAEMON_SOCKET="$BENCH_DIR/ferry-emb/no-daemon-here"
      t0="$(now)"
      "$FERRY" build -j "$JOBS" "$f" >"$WORK/$mode-$r.out" 2>"$WORK/$mode-$r.err" \
        || { tail -20 "$WORK/$mode-$r.err" >&2; die "ferry build (embedded) failed"; }
      dt="$(sub "$t0" "$(now)")"
      check_outputs "$mode" "$WORK/$mode-$r.out" "$salt"
      rm -rf "${BENCH_DIR:?}/ferry-emb"
      ;;
    ferry-inst)
      f="$(scm_file "$salt")"; ferry_env ferry-nosb
      t0="$(now)"
      "$FERRY" derivation add "$f" >"$WORK/$mode-$r.out" 2>"$WORK/$mode-$r.err" \
        || die "ferry derivation add failed"
      dt="$(sub "$t0" "$(now)")"
      [ "$(grep -c '\.drv$' "$WORK/$mode-$r.out")" = "$N" ] || die "ferry derivation add: not $N .drv"
      ;;
    floor)
      local d="$WORK/floor-$r"; mkdir -p "$d"
      t0="$(now)"
      seq 0 $((N - 1)) | xargs -P "$JOBS" -I{} /bin/sh -c "echo $salt {} > $d/{}"
      dt="$(sub "$t0" "$(now)")"
      [ "$(cat "$d/$((N - 1))")" = "$salt $((N - 1))" ] || die "floor: wrong output"
      rm -rf "$d"
      ;;
  esac
  emit "run$r.$mode.wall" "$dt" s
  say "# run$r.$mode loadavg before: $load; after: $(loadavg)"
}

MODES=(nix ferry-nosb ferry-sb ferry-emb floor nix-inst ferry-inst)
for r in $(seq 1 "$RUNS"); do
  log "round $r/$RUNS"
  # rotate the order so no mode always runs first
  k=$(( (r - 1) % ${#MODES[@]} ))
  order=("${MODES[@]:k}" "${MODES[@]:0:k}")
  for m in "${order[@]}"; do
    log "  $m"
    run_mode "$m" "$r"
  done
  nixc nix-store --gc >/dev/null 2>&1 || true     # not timed
  rm -f "$WORK"/*.scm
done

# ------------------------------------------------------------ idle RSS
sleep 2
for m in ferry-sb ferry-nosb; do
  emit "$m.daemon_rss_start" "${RSS0[$m]}" MiB
  emit "$m.daemon_rss_idle_after" "$(rss_mib "${DPID[$m]}")" MiB
  emit "$m.daemon_threads_idle_after" "$(threads "${DPID[$m]}")" ""
  emit "$m.store_du" "$(du -sm "$BENCH_DIR/$m" | cut -f1)" MiB
done

# ------------------------------------------------------------ summary
stats() {  # stats KEY -> "median min max"
  grep -E "^run[0-9]+\.$1: " "$RESULTS" | awk '{print $2}' | sort -g |
    awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.3f %.3f %.3f", m, v[1], v[NR]}'
}
med() { stats "$1" | cut -d' ' -f1; }
NIXW="$(med nix.wall)"; NIXI="$(med nix-inst.wall)"; FLOOR="$(med floor.wall)"
NIXB="$(awk -v a="$NIXW" -v b="$NIXI" 'BEGIN{printf "%.3f", a-b}')"
FINST="$(med ferry-inst.wall)"
say ""
say "# --- summary over $RUNS rounds (median / min / max seconds; speedup = nix median / this median)"
say ""
say "| what | median s | min s | max s | per build ms | speedup vs Nix |"
say "|---|---:|---:|---:|---:|---:|"
row() {
  local key="$1" label="$2" s
  s="$(stats "$key.wall")"
  set -- $s
  say "$(awk -v l="$label" -v m="$1" -v lo="$2" -v hi="$3" -v n="$N" -v nx="$NIXW" -v nokey="$key" \
    'BEGIN{sp=(nokey ~ /inst|floor/) ? "" : sprintf("%.2fx", nx/m); printf "| %s | %.3f | %.3f | %.3f | %.2f | %s |", l, m, lo, hi, m/n*1000, sp}')"
}
row nix "Nix 2.8 \`nix-build\` (instantiate + build)"
row ferry-nosb "ferry daemon --no-sandbox (like for like)"
row ferry-sb "ferry daemon, sandbox on"
row ferry-emb "ferry embedded (no daemon), sandbox on"
row nix-inst "Nix \`nix-instantiate\` alone"
row ferry-inst "ferry \`derivation add\` alone"
row floor "floor: $N x /bin/sh via xargs -P $JOBS"
say ""
emit summary.nix_build_only_wall "$NIXB" s
for m in ferry-nosb ferry-sb ferry-emb; do
  w="$(med "$m.wall")"
  emit "summary.$m.speedup_vs_nix" "$(awk -v a="$NIXW" -v b="$w" 'BEGIN{printf "%.2f", a/b}')" x
  emit "summary.$m.build_only_speedup_vs_nix" "$(awk -v a="$NIXB" -v b="$w" -v c="$FINST" 'BEGIN{printf "%.2f", a/(b-c)}')" x
  emit "summary.$m.overhead_per_build" "$(awk -v w="$w" -v f="$FLOOR" -v j="$JOBS" -v n="$N" 'BEGIN{printf "%.2f", (w-f)*j/n*1000}')" ms
  emit "summary.$m.overhead_per_build_excl_eval" "$(awk -v w="$w" -v f="$FLOOR" -v i="$FINST" -v j="$JOBS" -v n="$N" 'BEGIN{printf "%.2f", (w-i-f)*j/n*1000}')" ms
done
for m in ferry-nosb ferry-sb; do
  emit "summary.$m.daemon_cpu_per_build" "$(med "$m.daemon_cpu_per_build")" ms
done
emit summary.nix.overhead_per_build "$(awk -v w="$NIXW" -v f="$FLOOR" -v j="$JOBS" -v n="$N" 'BEGIN{printf "%.2f", (w-f)*j/n*1000}')" ms

goal() {  # goal LABEL OK?
  say "- $1: $([ "$2" = 1 ] && echo MET || echo NOT MET)"
}
g() { awk "BEGIN{print ($1) ? 1 : 0}"; }
sp_nosb="$(awk -v a="$NIXW" -v b="$(med ferry-nosb.wall)" 'BEGIN{printf "%.2f", a/b}')"
sp_sb="$(awk -v a="$NIXW" -v b="$(med ferry-sb.wall)" 'BEGIN{printf "%.2f", a/b}')"
ov_nosb="$(awk -v w="$(med ferry-nosb.wall)" -v f="$FLOOR" -v j="$JOBS" -v n="$N" 'BEGIN{printf "%.2f", (w-f)*j/n*1000}')"
ov_sb="$(awk -v w="$(med ferry-sb.wall)" -v f="$FLOOR" -v j="$JOBS" -v n="$N" 'BEGIN{printf "%.2f", (w-f)*j/n*1000}')"
rss_max="$(for m in ferry-sb ferry-nosb; do rss_mib "${DPID[$m]}"; echo; echo "${RSS0[$m]}"; done | sort -g | tail -1)"
say ""
say "Goals:"
goal "at least 3x faster than Nix, no sandbox (like for like): ${sp_nosb}x" "$(g "$sp_nosb >= 3")"
goal "at least 3x faster than Nix, sandbox on: ${sp_sb}x" "$(g "$sp_sb >= 3")"
goal "daemon overhead per build <= 5 ms, no sandbox: $ov_nosb ms" "$(g "$ov_nosb <= 5")"
goal "daemon overhead per build <= 5 ms, sandbox on: $ov_sb ms" "$(g "$ov_sb <= 5")"
goal "idle daemon RSS < 30 MiB: max $rss_max MiB" "$(g "$rss_max < 30")"
say "# results: $RESULTS ; logs: $WORK"

# ------------------------------------------------------------ BENCHMARKS.md
if [ "$APPEND" = 1 ]; then
  {
    echo
    echo "## 1000 trivial local builds, ferry vs Nix 2.8"
    echo
    echo "Generated by \`bench/local-builds.sh\` ($STAMP; see its header for the method)."
    echo
    echo "Command (as root):"
    echo
    echo "    RUNS=$RUNS N=$N JOBS=$JOBS bench/local-builds.sh"
    echo
    echo "Machine: $(nproc) vCPUs $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(uname -sr), $(free -g | awk '/Mem:/{print $2}') GiB RAM, ext4 on virtio ($(findmnt -n -o OPTIONS -T "$BENCH_DIR"));"
    echo "$(nix-store --version); Nix peer: client store in its own mount namespace, sandbox = false."
    echo
    echo "Load (1/5/15-min loadavg) before/after each timed command:"
    echo
    grep -E '^# run[0-9]+\..* loadavg' "$RESULTS" | sed 's/^# /    /'
    echo
    sed -n '/^| what |/,/^$/p' "$RESULTS"
    grep -E '^(summary|ferry-(sb|nosb))\.' "$RESULTS" | sed 's/^/    /'
    echo
    sed -n '/^Goals:/,/^# results/p' "$RESULTS" | grep -v '^# results'
  } >> "$ROOT/BENCHMARKS.md"
  log "appended to $ROOT/BENCHMARKS.md"
fi
