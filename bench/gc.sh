#!/usr/bin/env bash
# Garbage collection of a store full of dead paths: Ferry against Nix 2.8,
# side by side in one run.
#
# Workload, two shapes of store (SHAPES), every path dead (no roots, no
# references, no deriver), the same generated stream for both:
#   small  N_SMALL (100000) paths, each one regular file of SMALL_SIZE (32) B
#   big    N_BIG (1000) paths, each one regular file of BIG_SIZE (1 MiB),
#          random bytes
# The stream is an export bundle (`nix-store --export` / `guix archive
# --export` format) written by bench/gen-export.py (the same seed for both
# sides; only the store directory in the paths differs).
#
# Population (not part of the result; its wall time is printed):
#   Nix   : `nix-store --store local?root=DIR --import` into a fresh chroot
#           store (the real nix-store 2.8 in-process on a local store: no
#           daemon, the same code path as `nix-store --gc` below).
#   Ferry : `ferry archive --import --no-check-sigs` (embedded, no daemon)
#           into a fresh store, under LD_PRELOAD of a tiny shim that makes
#           fsync/fdatasync no-ops (compiled here with cc): Ferry syncs every
#           imported item, which makes 100,000 imports take ~5 min on this
#           disk; Nix's import does not fsync files. Then `sync`.
#
# Timed (after `sync`, caches warm on both sides, same file system):
#   nix          /usr/bin/time nix-store --store local?root=DIR --gc:
#                wall, CPU (user+sys) and max RSS of the one process doing
#                the work
#   ferry-emb    /usr/bin/time ferry gc, no daemon (embedded collector):
#                the same figures, the like-for-like comparison
#   ferry-daemon `ferry gc` against a fresh `ferry daemon` on a store just
#                populated the same way: client wall; the daemon's CPU time
#                (utime+stime) and VmHWM (peak RSS) before and after
# Each shape is done REPS (1) times, sides interleaved; the table shows
# medians. On a shared machine wall times swing with the other load (the
# 1-minute load average is printed before each collection); CPU time
# swings less.
# Checks: after each collection no path of the shape is left in the store
# directory (ls | grep -c -- -gcb-) and the collector's own count is logged.
#
# Output: progress on stderr; 'name: value unit' lines and a table with the
# ratios (nix wall / ferry wall: > 1 means Ferry is faster) on stdout and in
# $BENCH_DIR/results/gc-<stamp>.txt. Goal: ratio >= 1 with RSS that does not
# grow with the number of paths (compare the two shapes' RSS, or run
# N_SMALL=10000 and N_SMALL=100000).
#
# Knobs: REPS (1), SHAPES ("small big"), N_SMALL, SMALL_SIZE, N_BIG, BIG_SIZE,
#   FERRY_MODES ("emb daemon"), NIX=0 to skip Nix, BENCH_DIR
#   (/var/tmp/ferry-bench-gc; needs ~2 x N_BIG x BIG_SIZE free at most, one
#   side at a time), FERRY_BIN (else cargo build --release -p ferry-cli).
# Usage: bench/gc.sh       (root not needed)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SHAPES="${SHAPES:-small big}"
REPS="${REPS:-1}"
N_SMALL="${N_SMALL:-100000}"
SMALL_SIZE="${SMALL_SIZE:-32}"
N_BIG="${N_BIG:-1000}"
BIG_SIZE="${BIG_SIZE:-1048576}"
FERRY_MODES="${FERRY_MODES:-emb daemon}"
NIX="${NIX:-1}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/ferry-bench-gc}"
GEN="$HERE/gen-export.py"

log() { printf '[gc-bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
mkdir -p "$BENCH_DIR/results"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$BENCH_DIR/results/gc-$STAMP.txt"
emit() { printf '%s: %s %s\n' "$1" "$2" "$3" | tee -a "$RESULTS"; }
declare -A V

if [ -n "${FERRY_BIN:-}" ]; then FERRY="$FERRY_BIN"; else
  log "cargo build --release -p ferry-cli"
  (cd "$ROOT" && cargo build --release -q -p ferry-cli >&2)
  FERRY="$ROOT/target/release/ferry"
fi
"$FERRY" gc --help >/dev/null 2>&1 || { log "this ferry has no 'gc' command: Nix half only"; FERRY_MODES=""; }
command -v nix-store >/dev/null || { log "no nix-store: Ferry half only"; NIX=0; }
[ -x /usr/bin/time ] || die "needs /usr/bin/time (GNU time)"

NOSYNC="$BENCH_DIR/nosync.so"
printf 'int fsync(int f){(void)f;return 0;}\nint fdatasync(int f){(void)f;return 0;}\nint syncfs(int f){(void)f;return 0;}\nvoid sync(void){}\n' >"$BENCH_DIR/nosync.c"
cc -shared -fPIC -O2 -o "$NOSYNC" "$BENCH_DIR/nosync.c"

daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "${BENCH_DIR:?}/nix" "${BENCH_DIR:?}/ferry"
}
trap cleanup EXIT

shape_args() { # shape -> "N SIZE"
  case "$1" in
    small) echo "$N_SMALL $SMALL_SIZE" ;;
    big) echo "$N_BIG $BIG_SIZE" ;;
    *) die "unknown shape $1 (small, big)" ;;
  esac
}
# timed CMD... -> sets T_WALL (s), T_CPU (user+sys s) and T_RSS (MiB); the
# command's output in $BENCH_DIR/last.log
timed() {
  log "load before the collection: $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f '%e %U %S %M' -o "$BENCH_DIR/time.out" "$@" >"$BENCH_DIR/last.log" 2>&1 \
    || { tail -20 "$BENCH_DIR/last.log" >&2; die "failed: $*"; }
  local u s
  read -r T_WALL u s T_RSS <"$BENCH_DIR/time.out"
  T_CPU=$(awk -v a="$u" -v b="$s" 'BEGIN{printf "%.2f", a+b}')
  T_RSS=$(awk -v k="$T_RSS" 'BEGIN{printf "%.1f", k/1024}')
}
# add KEY VALUE: one more sample of KEY
add() { V[$1]="${V[$1]:-}${V[$1]:+ }$2"; }
median() { [ -n "$1" ] || { echo -; return; }; tr ' ' '\n' <<<"$1" | sort -g | awk '{a[NR]=$1} END{if(NR==0){print "-"}else if(NR%2){print a[(NR+1)/2]}else{printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}}'; }
left() { find "$1" -maxdepth 1 -name '*-gcb-*' 2>/dev/null | wc -l; }

{
  echo "# $(nix-store --version 2>/dev/null) | ferry $("$FERRY" --version 2>/dev/null | head -1) | $(uname -sr) | $(nproc) cpus | $(df -T "$BENCH_DIR" | awk 'NR==2{print $2}') at $BENCH_DIR"
} | tee -a "$RESULTS"

for rep in $(seq 1 "$REPS"); do
for shape in $SHAPES; do
  read -r n size <<<"$(shape_args "$shape")"
  log "shape $shape: $n paths of $size B, repetition $rep"
  if [ "$NIX" = 1 ]; then
    r="$BENCH_DIR/nix"; rm -rf "$r"; mkdir -p "$r"
    t0=$(now)
    python3 "$GEN" /nix/store "$n" "$size" | nix-store --store "local?root=$r" --import >/dev/null
    t1=$(now); sync
    [ "$(left "$r/nix/store")" = "$n" ] || die "nix: population gave $(left "$r/nix/store") paths, not $n"
    emit "$shape.nix.populate" "$(sub "$t0" "$t1")" s
    timed nix-store --store "local?root=$r" --gc
    [ "$(left "$r/nix/store")" = 0 ] || die "nix: $(left "$r/nix/store") paths left after --gc"
    emit "$shape.nix.gc_wall" "$T_WALL" s; emit "$shape.nix.gc_cpu" "$T_CPU" s
    emit "$shape.nix.gc_rss" "$T_RSS" MiB
    log "nix: $(grep -E 'deleted|freed' "$BENCH_DIR/last.log" | tail -1)"
    add "$shape.nix" "$T_WALL"; add "$shape.nix.cpu" "$T_CPU"; add "$shape.nix.rss" "$T_RSS"
    rm -rf "$r"
  fi
  for mode in $FERRY_MODES; do
    d="$BENCH_DIR/ferry"; rm -rf "$d"; mkdir -p "$d"
    export FERRY_STORE_DIR="$d/store" FERRY_STATE_DIR="$d/state" \
      FERRY_CONFIG_DIR="$d/config" FERRY_DAEMON_SOCKET="$d/socket"
    t0=$(now)
    python3 "$GEN" "$FERRY_STORE_DIR" "$n" "$size" \
      | LD_PRELOAD="$NOSYNC" "$FERRY" archive --import --no-check-sigs >/dev/null 2>&1
    t1=$(now); sync
    [ "$(left "$FERRY_STORE_DIR")" = "$n" ] || die "ferry: population gave $(left "$FERRY_STORE_DIR") paths, not $n"
    emit "$shape.ferry-$mode.populate" "$(sub "$t0" "$t1")" s
    case "$mode" in
      emb)
        timed "$FERRY" gc
        add "$shape.ferry-emb.rss" "$T_RSS"
        emit "$shape.ferry-emb.gc_rss" "$T_RSS" MiB
        ;;
      daemon)
        FERRY_LOG=info "$FERRY" daemon --max-jobs 1 >"$d/daemon.log" 2>&1 &
        daemon_pid=$!
        for _ in $(seq 1 200); do [ -S "$FERRY_DAEMON_SOCKET" ] && break; sleep 0.05; done
        [ -S "$FERRY_DAEMON_SOCKET" ] || { cat "$d/daemon.log" >&2; die "ferry daemon did not start"; }
        hwm0=$(awk '/^VmHWM:/{printf "%.1f", $2/1024}' "/proc/$daemon_pid/status")
        c0=$(awk '{print $14+$15}' "/proc/$daemon_pid/stat")
        timed "$FERRY" gc
        c1=$(awk '{print $14+$15}' "/proc/$daemon_pid/stat")
        hwm1=$(awk '/^VmHWM:/{printf "%.1f", $2/1024}' "/proc/$daemon_pid/status")
        # The daemon's CPU time (the client's is only the request).
        T_CPU=$(awk -v a="$c0" -v b="$c1" -v t="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/t}')
        kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=
        emit "$shape.ferry-daemon.hwm_before" "$hwm0" MiB
        emit "$shape.ferry-daemon.hwm_after" "$hwm1" MiB
        emit "$shape.ferry-daemon.client_rss" "$T_RSS" MiB
        add "$shape.ferry-daemon.rss" "$hwm1"
        ;;
      *) die "unknown ferry mode $mode (emb, daemon)" ;;
    esac
    [ "$(left "$FERRY_STORE_DIR")" = 0 ] || die "ferry ($mode): $(left "$FERRY_STORE_DIR") paths left after gc"
    emit "$shape.ferry-$mode.gc_wall" "$T_WALL" s
    emit "$shape.ferry-$mode.gc_cpu" "$T_CPU" s
    log "ferry-$mode: $(tail -1 "$BENCH_DIR/last.log")"
    add "$shape.ferry-$mode" "$T_WALL"; add "$shape.ferry-$mode.cpu" "$T_CPU"
    rm -rf "$d"
  done
done
done

{
  echo
  echo "| shape | nix --gc s | nix CPU s | nix RSS MiB | ferry mode | ferry gc s | ferry CPU s | ferry peak RSS MiB | nix/ferry (wall) | nix/ferry (CPU) |"
  echo "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
  for shape in $SHAPES; do
    read -r n size <<<"$(shape_args "$shape")"
    for mode in ${FERRY_MODES:-none}; do
      nx=$(median "${V[$shape.nix]:-}"); fx=$(median "${V[$shape.ferry-$mode]:-}")
      nc=$(median "${V[$shape.nix.cpu]:-}"); fc=$(median "${V[$shape.ferry-$mode.cpu]:-}")
      ratio() { [ "$1" != - ] && [ "$2" != - ] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/(b>0?b:0.01)}' || echo -; }
      echo "| $shape ($n x $size B) | $nx | $nc | $(median "${V[$shape.nix.rss]:-}") | $mode | $fx | $fc | $(median "${V[$shape.ferry-$mode.rss]:-}") | $(ratio "$nx" "$fx") | $(ratio "$nc" "$fc") |"
    done
  done
  echo "(ferry-daemon RSS: the daemon's VmHWM after the collection)"
} | tee -a "$RESULTS"
