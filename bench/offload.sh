#!/usr/bin/env bash
# Offload, ferry vs Nix 2.8 remote builds, on the same work in one run
# Needs root.
#
#   ferry: the testbed (crates/testbed), 3 hosts x 2 slots (parallel-builds
#          2, each host's daemon --max-jobs 2), a master `ferry daemon`
#          started fresh for each run (so SSH connections are cold at the
#          start of every run, warm within it).
#   Nix:   the peer of ../shared/peers/nix (setup.sh with N_BUILDERS=3
#          JOBS_PER_BUILDER=2, run here if its builders are not up), nix-build
#          --max-jobs 0 --builders @machines-ssh-ng, as its bench.sh does.
#
# Work, per run, a fresh salt each time (nothing cached anywhere):
#   (a) 20 independent trivial builds, wall time;
#   (b) a 200 MiB input up and a 200 MiB output down (cat input > $out):
#       effective throughput 400 MiB / wall, and the raw SSH pipe
#       `ssh host 'cat > /dev/null'` of each side (the testbed's ssh config
#       for ferry, the peer's for Nix);
#   (c) a chain of 10 dependent builds, wall time.
# Everything is forced remote on both sides: Nix by --max-jobs 0; ferry by a
# required feature "remote" that only the hosts list in machines.scm (this
# machine then cannot build them, so they wait for a slot rather than run
# here). Both time the whole client command (evaluation included).
#
# Usage: RUNS=3 bench/offload.sh      (prints a markdown table at the end)
# Knobs: RUNS (3), N_TRIVIAL (20), CHAIN_LEN (10), BIG_MIB (200), NIX=0 to
#        skip Nix, SCHEME (ssh-ng), FERRY_COMPRESSION (none, as the Nix peer),
#        RATE (Mbit/s limit of the testbed's links; unset: none).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
N_TRIVIAL=${N_TRIVIAL:-20}
CHAIN_LEN=${CHAIN_LEN:-10}
BIG_MIB=${BIG_MIB:-200}
NIX=${NIX:-1}
SCHEME=${SCHEME:-ssh-ng}
PEER="${NIX_PEER:-$(dirname "$ROOT")/shared/peers/nix}"

[ "$(id -u)" = 0 ] || { echo "bench/offload.sh needs root" >&2; exit 1; }
cargo build --release -q -p ferry-cli -p ferry-testbed
FERRY=$ROOT/target/release/ferry
TB=$ROOT/target/release/ferry-testbed

work=$(mktemp -d /tmp/ferry-offload-bench-XXXXXX)
dir=$work/tb
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  "$TB" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
declare -A R # R[key]="v1 v2 v3"
rec() { R[$1]="${R[$1]:-}${R[$1]:+ }$2"; printf '%s: %s\n' "$1" "$2" >&2; }

# ------------------------------------------------------------------ ferry
"$TB" up --hosts 3 --slots 2 --store-size 2G ${RATE:+--rate "$RATE"} --dir "$dir" --ferry "$FERRY" >/dev/null
# Hosts listed with feature "remote" (see above), and the same SSH
# compression as the Nix peer's ssh config (`Compression no`): like for like.
# FERRY_COMPRESSION=zlib@openssh.com,zlib measures the seed's default instead
# (on random data over a LAN it only costs: sshd deflates at level 6).
sed -i "s/  (parallel-builds/  (features (list \"remote\")) (compression \"${FERRY_COMPRESSION:-none}\")\n  (parallel-builds/" "$dir/master/config/machines.scm"
set -a; . "$dir/env"; set +a

# build_file NAME SALT: the work as a ferry build file in $work/NAME.scm
scm_trivial() { # salt
  echo "(list"
  for i in $(seq 0 $((N_TRIVIAL - 1))); do
    echo " (derivation \"bench-triv-$i-$1\" #:builder \"/bin/sh\" #:env '((\"requiredSystemFeatures\" . \"remote\") (\"salt\" . \"$1\"))"
    echo "   #:args '(\"-c\" \"echo $1-$i > \$out\"))"
  done
  echo ")"
}
scm_chain() { # salt
  echo "(define (link i prev)"
  echo "  (derivation (string-append \"bench-chain-\" (number->string i) \"-$1\") #:builder \"/bin/sh\""
  echo "    #:env '((\"requiredSystemFeatures\" . \"remote\"))"
  echo "    #:args (list \"-c\" (string-append (if prev (string-append \"/bin/cat \" (derivation-output prev) \" > \$out && \") \"\") \"echo $1-\" (number->string i) \" >> \$out\"))))"
  echo "(let loop ((i 0) (prev #f)) (if (= i $CHAIN_LEN) prev (loop (+ i 1) (link i prev))))"
}
scm_big() { # salt blobfile
  echo "(derivation \"bench-big-$1\" #:builder \"/bin/sh\" #:env '((\"requiredSystemFeatures\" . \"remote\"))"
  echo "  #:args (list \"-c\" (string-append \"/bin/cat \" (local-file \"$2\") \" > \$out && echo $1 >> \$out\")))"
}
fbuild() { # name want-remote [target] -> seconds; checks every build was remote
  local t0 t1 n
  t0=$(now)
  "$FERRY" build "${3:-$work/$1.scm}" >"$work/$1.out" 2>"$work/$1.err" || { tail -30 "$work/$1.err" >&2; exit 1; }
  t1=$(now)
  n=$(grep -c "^building '.*' on '10\.213\." "$work/$1.err" || true)
  [ "$n" = "$2" ] || { echo "$1: $n remote builds, want $2" >&2; cat "$work/$1.err" >&2; exit 1; }
  sub "$t0" "$t1"
}

for run in $(seq "$RUNS"); do
  "$FERRY" daemon -j 1 >"$work/daemon-$run.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do [ -S "$FERRY_DAEMON_SOCKET" ] && break; sleep 0.1; done
  salt=r$run-$RANDOM$RANDOM
  scm_trivial "$salt" >"$work/triv-$run.scm"
  rec ferry.trivial "$(fbuild "triv-$run" "$N_TRIVIAL")"
  scm_chain "$salt" >"$work/chain-$run.scm"
  rec ferry.chain "$(fbuild "chain-$run" "$CHAIN_LEN")"
  [ "$(wc -l <"$(cat "$work/chain-$run.out")")" = "$CHAIN_LEN" ] || { echo "chain output wrong" >&2; exit 1; }
  head -c $((BIG_MIB << 20)) /dev/urandom >"$work/blob-$run"
  scm_big "$salt" "$work/blob-$run" >"$work/big-$run.scm"
  # Add the input and the .drv first (not timed: Nix's `nix-store --add`
  # is not, and its evaluation does not hash the input), then build the .drv.
  drv=$("$FERRY" derivation add "$work/big-$run.scm" | tail -1)
  # ... and on disk: the 400 MiB just written (the blob and its store copy)
  # are not written back during the timed build (on both sides).
  sync
  t=$(fbuild "big-$run" 1 "$drv")
  sz=$(stat -c %s "$(cat "$work/big-$run.out")")
  [ "$sz" -gt $((BIG_MIB << 20)) ] || { echo "big output has size $sz" >&2; exit 1; }
  rec ferry.big "$(awk -v m="$BIG_MIB" -v t="$t" 'BEGIN{printf "%.1f", 2*m/t}')"
  t0=$(now)
  ssh -F "$dir/master/ssh/config" h1 'cat > /dev/null' <"$work/blob-$run"
  rec ferry.pipe "$(awk -v m="$BIG_MIB" -v t="$(sub "$t0" "$(now)")" 'BEGIN{printf "%.1f", m/t}')"
  rm -f "$work/blob-$run"
  kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=
done

# -------------------------------------------------------------------- Nix
if [ "$NIX" = 1 ]; then
  source "$PEER/common.sh"
  N_BUILDERS=3 JOBS_PER_BUILDER=2 SKIP_APT=1 "$PEER/setup.sh" >/dev/null 2>"$work/nix-setup.log" ||
    { tail -20 "$work/nix-setup.log" >&2; exit 1; }
  grep -c nixb "$STATE/machines-$SCHEME" | grep -qx 3 || { echo "the Nix peer has not 3 builders" >&2; exit 1; }
  EXPR=$PEER/bench.nix
  nbuild() { # name want-remote args... -> seconds
    local name=$1 want=$2 t0 t1 n; shift 2
    t0=$(now)
    nixc nix-build "$EXPR" --no-out-link --max-jobs 0 --builders "@$STATE/machines-$SCHEME" "$@" \
      >"$work/$name.out" 2>"$work/$name.err" || { tail -30 "$work/$name.err" >&2; exit 1; }
    t1=$(now)
    n=$(grep -c "^building '.*' on '$SCHEME://" "$work/$name.err" || true)
    [ "$n" = "$want" ] || { echo "$name: $n remote builds, want $want" >&2; exit 1; }
    sub "$t0" "$t1"
  }
  for run in $(seq "$RUNS"); do
    salt=ferrybench-r$run-$(date +%s)-$RANDOM
    rec nix.trivial "$(nbuild "nix-triv-$run" "$N_TRIVIAL" -A trivial --argstr salt "$salt-triv" --arg n "$N_TRIVIAL")"
    rec nix.chain "$(nbuild "nix-chain-$run" "$CHAIN_LEN" -A chain --argstr salt "$salt-chain" --arg chainLen "$CHAIN_LEN")"
    mkdir -p "$STATE/tmp"
    blobf=$STATE/tmp/blob-$salt
    head -c $((BIG_MIB << 20)) /dev/urandom >"$blobf"
    blob=$(nixc nix-store --add "$blobf")
    sync
    t=$(nbuild "nix-big-$run" 1 -A big --argstr salt "$salt-big" --argstr blob "$blob")
    rec nix.big "$(awk -v m="$BIG_MIB" -v t="$t" 'BEGIN{printf "%.1f", 2*m/t}')"
    t0=$(now)
    ssh -F "$STATE/ssh/config" nixb1 'cat > /dev/null' <"$blobf"
    rec nix.pipe "$(awk -v m="$BIG_MIB" -v t="$(sub "$t0" "$(now)")" 'BEGIN{printf "%.1f", m/t}')"
    rm -f "$blobf"
    nixc nix-store --gc >/dev/null 2>&1 || true
    for i in 1 2 3; do nixb "$i" nix-store --gc >/dev/null 2>&1 || true; done
  done
fi

# ------------------------------------------------------------------ table
median() { tr ' ' '\n' <<<"$1" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { # label key unit
  local f=${R[ferry.$2]:-} n=${R[nix.$2]:-}
  printf '| %s | %s (median %s) | %s (median %s) |\n' "$1" "${f// /, }" "$(median "$f")" "${n:+${n// /, }}" "$( [ -n "$n" ] && median "$n" || echo -)"
}
echo
echo "RUNS=$RUNS; $(nproc) cores; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| work | ferry (testbed, 3 x 2 slots) | Nix 2.8 $SCHEME:// (3 x 2 slots) |"
echo "|---|---|---|"
row "$N_TRIVIAL independent trivial builds, wall s" trivial
row "chain of $CHAIN_LEN dependent builds, wall s" chain
row "$BIG_MIB MiB up + $BIG_MIB MiB down, MiB/s" big
row "raw SSH pipe ssh host 'cat > /dev/null', MiB/s" pipe
if [ "$NIX" = 1 ]; then
  ft=$(median "${R[ferry.trivial]}") nt=$(median "${R[nix.trivial]}")
  fc=$(median "${R[ferry.chain]}") nc=$(median "${R[nix.chain]}")
  fb=$(median "${R[ferry.big]}") nb=$(median "${R[nix.big]}") fp=$(median "${R[ferry.pipe]}")
  echo
  awk -v ft="$ft" -v nt="$nt" -v fc="$fc" -v nc="$nc" -v fb="$fb" -v nb="$nb" -v fp="$fp" 'BEGIN{
    printf "ratios (medians): (a) Nix/ferry %.1fx, ferry %.3f s; (c) Nix/ferry %.1fx; (b) ferry/Nix %.2fx, ferry/own raw pipe %.2fx\n", nt/ft, ft, nc/fc, fb/nb, fb/fp
    printf "goals: (a) >=15x and <0.5 s: %s; (c) >=10x: %s; (b) >=1.2x Nix: %s, >=0.9x pipe: %s\n",
      (nt/ft>=15 && ft<0.5)?"met":"NOT met", (nc/fc>=10)?"met":"NOT met", (fb/nb>=1.2)?"met":"NOT met", (fb/fp>=0.9)?"met":"NOT met" }'
fi
