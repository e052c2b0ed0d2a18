#!/usr/bin/env bash
# Nix clients, offloading with --max-jobs 0, side by side in one run
# Needs root, nix 2.8 and the testbed.
#
# The same build machines for both: the testbed's hosts (crates/testbed),
# 3 hosts x 2 slots, each running a Ferry daemon on its own store at DIR/store.
#   (a) Nix: nix-build on Nix's own local store at DIR/store (a private mount
#       namespace with a fresh tmpfs over DIR/store, so the master's Ferry
#       store is untouched), --max-jobs 0 --builders with the hosts as
#       `ssh-ng://hI?remote-program=DIR/bin/ferry-nix-stdio` (a two-line
#       script: `ferry daemon --stdio` on the host's store), i.e. Nix's own
#       remote builds (build-remote) to Ferry machines;
#   (b) Ferry: the master's `ferry daemon --nix-socket`, nix-build with
#       NIX_REMOTE=unix://SOCKET and NIX_STORE_DIR=DIR/store, --max-jobs 0
#       (Ferry's "build machines only"): Ferry's offload to the same hosts.
# (The Nix peer of ../shared/peers/nix is not used: Ferry cannot yet use Nix
# machines as build machines.)
#
# Work, per run, a fresh salt each time (nothing cached anywhere):
#   trivial: N_TRIVIAL independent trivial derivations, wall time of nix-build;
#   big:     a BIG_MIB MiB input (added by `nix-store --add` first, not timed)
#            up and a BIG_MIB MiB output down (cat input > $out): 2*BIG_MIB/wall.
# Both time the whole nix-build (evaluation included); each checks that every
# build ran on a testbed host.
#
# Usage: RUNS=3 bench/nix-clients.sh   (prints a markdown table at the end)
# Knobs: RUNS (3), N_TRIVIAL (20), BIG_MIB (200), NIX=0 to skip (a), FERRY=0
#        to skip (b).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
N_TRIVIAL=${N_TRIVIAL:-20}
BIG_MIB=${BIG_MIB:-200}
DO_NIX=${NIX:-1}
DO_FERRY=${FERRY:-1}

[ "$(id -u)" = 0 ] || { echo "bench/nix-clients.sh needs root" >&2; exit 1; }
command -v nix-build >/dev/null || { echo "bench/nix-clients.sh needs nix-build" >&2; exit 1; }
cargo build --release -q -p ferry-cli -p ferry-testbed
FERRY_BIN=$ROOT/target/release/ferry
TB=$ROOT/target/release/ferry-testbed

work=$(mktemp -d /tmp/ferry-nix-clients-bench-XXXXXX)
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

"$TB" up --hosts 3 --slots 2 --store-size 4G --dir "$dir" --ferry "$FERRY_BIN" >/dev/null
# No SSH compression on either side (random data; like bench/offload.sh).
sed -i 's/  (parallel-builds/  (compression "none")\n  (parallel-builds/' "$dir/master/config/machines.scm"
set -a; . "$dir/env"; set +a
STORE=$FERRY_STORE_DIR

# The Nix side's settings, and the expression both sides build.
mkdir -p "$work/etc" "$work/home"
cat >"$work/etc/nix.conf" <<EOF
build-users-group =
sandbox = false
substituters =
experimental-features = nix-command
EOF
cat >"$work/bench.nix" <<'EOF'
{ salt, n ? 20, blob ? null }:
let
  sh = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };
in {
  trivial = builtins.genList (i: sh "bench-triv-${toString i}-${salt}" "echo ${salt}-${toString i} > $out") n;
  big = sh "bench-big-${salt}" "/bin/cat ${builtins.storePath blob} > $out; echo ${salt} >> $out";
}
EOF
# `ferry daemon --stdio` on a host's own store, for Nix's ssh-ng://.
cat >"$dir/bin/ferry-nix-stdio" <<'EOF'
#!/bin/sh
exec ferry daemon "$@"
EOF
chmod 755 "$dir/bin/ferry-nix-stdio"
machines=$work/machines
: >"$machines"
for h in h1 h2 h3; do
  echo "ssh-ng://$h?remote-program=$dir/bin/ferry-nix-stdio $(uname -m)-linux - 2 1 - -" >>"$machines"
done

nixenv() { # the environment of a Nix client on DIR/store
  env -u NIX_REMOTE HOME="$work/home" NIX_STORE_DIR="$STORE" NIX_CONF_DIR="$work/etc" \
    NIX_LOG_DIR="$work/nix-log" "$@"
}
count_remote() { # file pattern -> number of "building '…' on 'PATTERN…" lines
  grep -c "^building '.*' on '$2" "$1" || true
}

# ------------------------------------------------------------ (b) Ferry
ferry_side() {
  "$FERRY_BIN" daemon -j 1 --no-sandbox --nix-socket "$work/nix-socket" >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do [ -S "$work/nix-socket" ] && [ -S "$FERRY_DAEMON_SOCKET" ] && break; sleep 0.1; done
  fnix() { nixenv NIX_STATE_DIR="$work/ferry-nix-state" NIX_REMOTE="unix://$work/nix-socket" "$@"; }
  for run in $(seq "$RUNS"); do
    salt=f$run-$RANDOM$RANDOM
    t0=$(now)
    fnix nix-build "$work/bench.nix" -A trivial --argstr salt "$salt" --arg n "$N_TRIVIAL" \
      --no-out-link --max-jobs 0 >"$work/f-triv-$run.out" 2>"$work/f-triv-$run.err" ||
      { tail -30 "$work/f-triv-$run.err" >&2; exit 1; }
    t=$(sub "$t0" "$(now)")
    n=$(count_remote "$work/f-triv-$run.err" "10\.213\.")
    [ "$n" = "$N_TRIVIAL" ] || n=$(grep -c "build started.*bench-triv-.*-$salt.drv on=10\.213\." "$work/daemon.log" || true)
    [ "$n" = "$N_TRIVIAL" ] || { echo "ferry trivial: $n remote builds, want $N_TRIVIAL" >&2; exit 1; }
    rec ferry.trivial "$t"
    head -c $((BIG_MIB << 20)) /dev/urandom >"$work/blob-$run"
    blob=$(fnix nix-store --add "$work/blob-$run")
    rm -f "$work/blob-$run"
    sync
    t0=$(now)
    out=$(fnix nix-build "$work/bench.nix" -A big --argstr salt "$salt" --argstr blob "$blob" \
      --no-out-link --max-jobs 0 2>"$work/f-big-$run.err") || { tail -30 "$work/f-big-$run.err" >&2; exit 1; }
    t=$(sub "$t0" "$(now)")
    grep -q "build started.*bench-big-$salt.drv on=10\.213\." "$work/daemon.log" ||
      { echo "ferry big: not built on a host" >&2; exit 1; }
    sz=$(stat -c %s "$out")
    [ "$sz" -gt $((BIG_MIB << 20)) ] || { echo "big output has size $sz" >&2; exit 1; }
    rec ferry.big "$(awk -v m="$BIG_MIB" -v t="$t" 'BEGIN{printf "%.1f", 2*m/t}')"
  done
  kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=
}

# -------------------------------------------------------------- (a) Nix
# Run inside `unshare --mount` with a fresh tmpfs over DIR/store: Nix's own
# local store at the testbed's store path, the master's Ferry store hidden.
nix_side() {
  export -f nixenv count_remote now sub
  export work STORE RUNS N_TRIVIAL BIG_MIB machines dir
  unshare --mount --propagation private -- bash -euo pipefail -c '
    mount -t tmpfs ferry-bench-nix-store "$STORE"
    nnix() { nixenv NIX_STATE_DIR="$work/nix-state" NIX_REMOTE=local \
      NIX_SSHOPTS="-F $dir/master/ssh/config" "$@"; }
    for run in $(seq "$RUNS"); do
      salt=n$run-$RANDOM$RANDOM
      t0=$(now)
      nnix nix-build "$work/bench.nix" -A trivial --argstr salt "$salt" --arg n "$N_TRIVIAL" \
        --no-out-link --max-jobs 0 --builders "@$machines" >"$work/n-triv-$run.out" 2>"$work/n-triv-$run.err" ||
        { tail -30 "$work/n-triv-$run.err" >&2; exit 1; }
      t=$(sub "$t0" "$(now)")
      n=$(count_remote "$work/n-triv-$run.err" "ssh-ng://")
      [ "$n" = "$N_TRIVIAL" ] || { echo "nix trivial: $n remote builds, want $N_TRIVIAL" >&2; exit 1; }
      echo "nix.trivial $t"
      head -c $((BIG_MIB << 20)) /dev/urandom >"$work/blob-$run"
      blob=$(nnix nix-store --add "$work/blob-$run")
      rm -f "$work/blob-$run"
      sync
      t0=$(now)
      out=$(nnix nix-build "$work/bench.nix" -A big --argstr salt "$salt" --argstr blob "$blob" \
        --no-out-link --max-jobs 0 --builders "@$machines" 2>"$work/n-big-$run.err") ||
        { tail -30 "$work/n-big-$run.err" >&2; exit 1; }
      t=$(sub "$t0" "$(now)")
      [ "$(count_remote "$work/n-big-$run.err" "ssh-ng://")" = 1 ] || { echo "nix big: not remote" >&2; exit 1; }
      echo "nix.big $(awk -v m="$BIG_MIB" -v t="$t" "BEGIN{printf \"%.1f\", 2*m/t}")"
    done' >"$work/nix-side.out" || { echo "(a) failed; see above" >&2; NIX_FAILED=1; }
  while read -r k v; do rec "$k" "$v"; done <"$work/nix-side.out"
}

NIX_FAILED=
[ "$DO_FERRY" = 1 ] && ferry_side
[ "$DO_NIX" = 1 ] && nix_side

# ------------------------------------------------------------------ table
median() { tr ' ' '\n' <<<"$1" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { # label key
  local f=${R[ferry.$2]:-} n=${R[nix.$2]:-}
  printf '| %s | %s (median %s) | %s (median %s) |\n' "$1" "${n:+${n// /, }}" \
    "$([ -n "$n" ] && median "$n" || echo -)" "${f// /, }" "$([ -n "$f" ] && median "$f" || echo -)"
}
echo
echo "RUNS=$RUNS; $(nproc) cores; load at end: $(cut -d' ' -f1-3 /proc/loadavg)${NIX_FAILED:+; (a) FAILED, see its log}"
echo
echo "| nix-build --max-jobs 0 | (a) Nix 2.8 --builders ssh-ng:// to the testbed (3 x 2) | (b) Ferry daemon offloading to the testbed (3 x 2) |"
echo "|---|---|---|"
row "$N_TRIVIAL independent trivial builds, wall s" trivial
row "$BIG_MIB MiB up + $BIG_MIB MiB down, MiB/s" big
if [ -n "${R[nix.trivial]:-}" ] && [ -n "${R[ferry.trivial]:-}" ]; then
  awk -v ft="$(median "${R[ferry.trivial]}")" -v nt="$(median "${R[nix.trivial]}")" \
      -v fb="$(median "${R[ferry.big]:-0}")" -v nb="$(median "${R[nix.big]:-0}")" 'BEGIN{
    printf "\nratios (medians): trivial (a)/(b) %.1fx (goal >=10x: %s)", nt/ft, (nt/ft>=10)?"met":"NOT met"
    if (nb > 0) printf "; transfer (b)/(a) %.2fx (goal >=1.2x: %s)", fb/nb, (fb/nb>=1.2)?"met":"NOT met"
    printf "\n" }'
fi
[ -z "$NIX_FAILED" ] || exit 1
