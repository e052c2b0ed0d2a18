#!/usr/bin/env bash
# Soak run: N derivations in a seeded random DAG with
# mixed durations and sizes, offloaded over the testbed's hosts while
# faults are injected every few seconds; at the end every output is checked
# against what it must be, every store is verified, nothing may be left
# running or holding a slot. Needs root (the testbed does). A script, not
# CI: the full run takes several minutes.
#
# What it does:
#   1. cargo build --release -p ferry-cli -p ferry-testbed; the two
#      binaries are copied to WORK/bin (another build of target/ during the
#      run cannot swap them).
#   2. ferry-testbed up --hosts HOSTS --slots SLOTS --store-size STORE_SIZE
#      (its own directory WORK/tb; the testbed takes the first free address
#      block, so it coexists with tests' testbeds). machines.scm lists
#      feature "remote" on every host and SSH compression "none".
#   3. A master `ferry daemon -j MASTER_JOBS --offload-max-wait
#      OFFLOAD_MAX_WAIT` on the master's store (like bench/offload.sh).
#   4. bench/soak/gen.awk writes the DAG (WORK/dag.tsv) and the build file
#      (WORK/soak.scm, every node a root); each derivation runs
#      bench/soak/builder.sh: sleep, then write a header, one line per input
#      (its first line and cksum) and padding up to its size. All but
#      LOCAL_PCT % require the feature "remote", which only the hosts list:
#      the master cannot build them, they wait for a host; the others may
#      also be built on the master when every host is busy.
#   5. `ferry build -k WORK/soak.scm` against the master daemon, re-run
#      until it succeeds (the client gets FERRY_STATE_DIR=/dev/null/...,
#      so it can never fall back to an in-process build: without a daemon
#      it fails and is re-run). Meanwhile an injector, every FAULT_EVERY s,
#      picks a random host not already faulted (at most MAX_FAULTED at
#      once) and a random fault of FAULTS, holds it FAULT_MIN..FAULT_MAX s
#      and undoes it: stop/cont (SIGSTOP the host), kill-daemon/start-daemon,
#      cut/heal (drop its traffic), fill/unfill (its store full); one tick
#      in MASTER_ONE_IN instead kills -9 the master daemon and restarts it
#      after FAULT_MIN..FAULT_MAX s (the client loses its connection and is
#      re-run; what was built stays). Every fault is logged with a
#      timestamp (WORK/logs/faults.log); client logs are timestamped too
#      (+seconds since the start, the same clock).
#   6. Checks: the injector stopped and every fault undone (hosts' status,
#      the master alive); each of the N outputs recomputed here (without
#      the builder) and compared byte for byte; a no-op re-run builds
#      nothing and prints the same outputs; no builder left running (60 s
#      grace for builds abandoned on a stopped host); once no machine is
#      backed off (at most 180 s), no slot in use on the master and no build
#      counted running by any host's daemon; HOSTS x SLOTS new builds run
#      at once (the master still serves, no slot lost); no panic in any
#      daemon log; `ferry store verify` on the master and every host; no
#      .tmp-ferry-* in the stores, no build directory left in /tmp.
#   7. A markdown summary on stdout (and WORK/logs/summary.md): wall time,
#      N, faults by kind, client re-runs (and why), "building elsewhere"
#      count and reasons, back-offs, failures. Exit status 0 only if every
#      check passed. Logs stay in WORK/logs (the testbed and its stores are
#      removed on exit, whatever happens).
#
# Usage:  bench/soak.sh                            (N=2000, 4 hosts x 2 slots)
#         N=100 FAULT_EVERY=2 bench/soak.sh        (a quick one)
# Knobs (environment):
#   N (2000) derivations; SEED (1): the DAG and the fault sequence;
#   HOSTS (4), SLOTS (2) parallel builds per host; STORE_SIZE (1536M) each
#   host's store tmpfs; DURATION (1) scales builders' sleeps; SIZE (1)
#   scales output sizes; LOCAL_PCT (5) % of derivations the master may build;
#   FAULT_EVERY (4) s between faults; FAULT_MIN (2), FAULT_MAX (14) s a
#   fault is held (the master notices a hung or cut host after 9 s of SSH
#   keep-alives: shorter faults are ridden out, longer ones make it build
#   elsewhere); MAX_FAULTED (2) hosts faulted at once; FAULTS
#   (stop,kill-daemon,cut,fill,kill-master): drop one to exclude it, "none"
#   or empty for a run without faults;
#   MASTER_ONE_IN (12): the master is killed on one tick in this many;
#   MASTER_JOBS (1); OFFLOAD_MAX_WAIT (3600, see below); MAX_RUNS (100)
#   client runs before giving up; STALL (300) s without any client output
#   before a run is declared stuck (evidence saved, client killed, re-run);
#   TIMEOUT (7200) s for the whole build; AFTER_SLEEP (4) s of each of the
#   HOSTS x SLOTS builds of the final slot check; WORK (mktemp -d
#   /tmp/ferry-soak-XXXXXX); NO_BUILD=1 skips cargo build.
#
# OFFLOAD_MAX_WAIT: the daemon's --offload-max-wait counts from the moment
# a derivation is ready, also while every machine is merely busy; with
# hundreds of derivations ready at once and only HOSTS x SLOTS slots, the
# default 60 s fails those that wait longer ("no build machine could take
# ... within 60 s") although nothing is wrong. Set OFFLOAD_MAX_WAIT=60 to
# see it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

N=${N:-2000}
SEED=${SEED:-1}
HOSTS=${HOSTS:-4}
SLOTS=${SLOTS:-2}
STORE_SIZE=${STORE_SIZE:-1536M}
DURATION=${DURATION:-1}
SIZE=${SIZE:-1}
LOCAL_PCT=${LOCAL_PCT:-5}
FAULT_EVERY=${FAULT_EVERY:-4}
FAULT_MIN=${FAULT_MIN:-2}
FAULT_MAX=${FAULT_MAX:-14}
MAX_FAULTED=${MAX_FAULTED:-2}
FAULTS=${FAULTS-stop,kill-daemon,cut,fill,kill-master}
MASTER_ONE_IN=${MASTER_ONE_IN:-12}
MASTER_JOBS=${MASTER_JOBS:-1}
OFFLOAD_MAX_WAIT=${OFFLOAD_MAX_WAIT:-3600}
MAX_RUNS=${MAX_RUNS:-100}
STALL=${STALL:-300}
TIMEOUT=${TIMEOUT:-7200}

[ "$(id -u)" = 0 ] || { echo "bench/soak.sh needs root (the testbed does)" >&2; exit 1; }
for t in jq cksum cmp awk; do
  command -v "$t" >/dev/null || { echo "bench/soak.sh needs $t" >&2; exit 1; }
done
IFS=, read -ra FAULT_LIST <<<"$FAULTS"
HOST_FAULTS=()
KILL_MASTER=0
for f in "${FAULT_LIST[@]}"; do
  case $f in
    stop | kill-daemon | cut | fill) HOST_FAULTS+=("$f") ;;
    kill-master) KILL_MASTER=1 ;;
    '' | none) ;;
    *) echo "FAULTS: unknown fault '$f' (stop, kill-daemon, cut, fill, kill-master)" >&2; exit 1 ;;
  esac
done

if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p ferry-cli -p ferry-testbed
fi
work=${WORK:-$(mktemp -d /tmp/ferry-soak-XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
logs=$work/logs
tb=$work/tb
mkdir -p "$logs" "$work/bin" "$work/busy"
cp "$ROOT/target/release/ferry" "$ROOT/target/release/ferry-testbed" "$work/bin/"
# What was built: the commit and any uncommitted change (others may be
# editing the tree).
{ git -C "$ROOT" log -1 --format='%H %s' && git -C "$ROOT" status --short && git -C "$ROOT" diff HEAD; } >"$logs/source.txt" 2>&1 || true
FERRY=$work/bin/ferry
TB=$work/bin/ferry-testbed
rm -f "$work/stop-faults" "$work/master.up" "$work/master.pid"
touch "$work/started" # build directories made after this are the soak's
echo 0 >"$work/master.count"

# ------------------------------------------------------------ clock, logs
T0=${EPOCHREALTIME/./}
el() { # seconds since the start, 0.1 s
  local d=$((${EPOCHREALTIME/./} - T0))
  printf '%d.%d' $((d / 1000000)) $((d / 100000 % 10))
}
flog() { printf '%s +%ss %s\n' "$(date +%T.%3N)" "$(el)" "$*" >>"$logs/faults.log"; }
say() { printf '[soak +%ss] %s\n' "$(el)" "$*" >&2; }
ts() { # timestamp each line of stdin (no fork per line)
  local l d
  while IFS= read -r l; do
    d=$((${EPOCHREALTIME/./} - T0))
    printf '+%d.%03d %s\n' $((d / 1000000)) $((d / 1000 % 1000)) "$l"
  done
}
tbc() { # a testbed command, its output logged
  { printf '+%ss ferry-testbed %s\n' "$(el)" "$*"; "$TB" --dir "$tb" "$@" 2>&1; } >>"$logs/testbed-cmds.log"
}

# ---------------------------------------------------------------- cleanup
injector_pid=
client_pid=
cleanup() {
  local rc=$?
  touch "$work/stop-faults"
  for f in "$work"/busy/*; do # fault subshells still holding a fault
    [ -e "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  [ -n "$injector_pid" ] && kill "$injector_pid" 2>/dev/null || true
  [ -f "$work/client.pid" ] && kill "$(cat "$work/client.pid")" 2>/dev/null || true
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  if [ -f "$work/master.pid" ]; then
    p=$(cat "$work/master.pid")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  fi
  "$TB" down --dir "$tb" >>"$logs/testbed-cmds.log" 2>&1 || echo "soak: ferry-testbed down --dir $tb failed (see $logs/testbed-cmds.log)" >&2
  rm -rf "$tb" "$work/bin"
  echo "soak: logs in $logs" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- testbed
say "work directory $work"
"$TB" up --hosts "$HOSTS" --slots "$SLOTS" --store-size "$STORE_SIZE" --dir "$tb" --ferry "$FERRY" >"$logs/testbed-up.log" 2>&1 ||
  { cat "$logs/testbed-up.log" >&2; exit 1; }
sed -i 's/  (parallel-builds/  (features (list "remote")) (compression "none")\n  (parallel-builds/' "$tb/master/config/machines.scm"
cp "$tb/master/config/machines.scm" "$logs/machines.scm"
set -a
. "$tb/env"
set +a
HOST_NAMES=()
for i in $(seq "$HOSTS"); do HOST_NAMES+=("h$i"); done
grep -v '^ferry-testbed:' "$logs/testbed-up.log" | head -n $((HOSTS + 1)) >&2

# ----------------------------------------------------------------- master
master_alive() { [ -f "$work/master.pid" ] && kill -0 "$(cat "$work/master.pid")" 2>/dev/null; }
start_master() {
  local n log pid
  n=$(($(cat "$work/master.count") + 1))
  echo "$n" >"$work/master.count"
  log=$logs/master-$n.log
  "$FERRY" daemon -j "$MASTER_JOBS" --offload-max-wait "$OFFLOAD_MAX_WAIT" </dev/null >"$log" 2>&1 &
  pid=$!
  disown "$pid" 2>/dev/null || true # no "Killed" message from bash when it is
  echo "$pid" >"$work/master.pid"
  for _ in $(seq 300); do
    grep -q 'listening on' "$log" && { touch "$work/master.up"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "soak: the master daemon #$n did not start (see $log)" >&2
  return 1
}
start_master

# -------------------------------------------------------------------- DAG
cp "$ROOT/bench/soak/builder.sh" "$work/soak-builder.sh"
awk -v n="$N" -v seed="$SEED" -v dur_scale="$DURATION" -v size_scale="$SIZE" \
  -v local_pct="$LOCAL_PCT" -v tsv="$work/dag.tsv" -f "$ROOT/bench/soak/gen.awk" \
  >"$work/soak.scm" 2>"$logs/dag.txt"
DAG_STATS=$(cat "$logs/dag.txt")
cp "$work/soak.scm" "$work/dag.tsv" "$logs/"
say "$DAG_STATS"

# --------------------------------------------------------------- injector
fault_host() { # kind host hold; in a background subshell
  local kind=$1 h=$2 hold=$3 apply undo try
  echo "$BASHPID" >"$work/busy/$h"
  case $kind in
    stop) apply=stop undo=cont ;;
    kill-daemon) apply=kill-daemon undo=start-daemon ;;
    cut) apply=cut undo=heal ;;
    fill) apply=fill undo=unfill ;;
  esac
  if tbc "$apply" "$h"; then
    flog "FAULT $kind $h (held ${hold}s)"
    sleep "$hold"
    for try in 1 2 3 4 5; do
      if tbc "$undo" "$h"; then
        flog "UNDO $undo $h"
        break
      fi
      flog "UNDO-FAILED $undo $h (try $try; see testbed-cmds.log)"
      sleep 1
    done
  else
    flog "INJECT-FAILED $kind $h (see testbed-cmds.log)"
  fi
  rm -f "$work/busy/$h"
}
fault_master() { # hold; in a background subshell
  local hold=$1 pid
  echo "$BASHPID" >"$work/busy/master"
  pid=$(cat "$work/master.pid")
  rm -f "$work/master.up"
  if kill -9 "$pid" 2>/dev/null; then
    flog "FAULT kill-master pid $pid (restarted ${hold}s after it is gone)"
    local t=${EPOCHREALTIME/./}
    for _ in $(seq 300); do [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break; sleep 0.05; done
    flog "master pid $pid gone $(((${EPOCHREALTIME/./} - t) / 1000)) ms after SIGKILL"
  else
    flog "INJECT-FAILED kill-master: pid $pid not running (a crash?)"
  fi
  sleep "$hold"
  if start_master; then
    flog "UNDO master restarted, pid $(cat "$work/master.pid")"
  else
    flog "UNDO-FAILED master did not restart"
  fi
  rm -f "$work/busy/master"
}
injector() {
  RANDOM=$((SEED * 7919 + 17))
  local free busy h kind hold
  flog "injector: every ${FAULT_EVERY}s, hosts faults: ${HOST_FAULTS[*]:-none}; kill-master: $KILL_MASTER (1 tick in $MASTER_ONE_IN)"
  while :; do
    sleep "$FAULT_EVERY"
    [ -e "$work/stop-faults" ] && break
    hold=$((FAULT_MIN + RANDOM % (FAULT_MAX - FAULT_MIN + 1)))
    if [ "$KILL_MASTER" = 1 ] && [ $((RANDOM % MASTER_ONE_IN)) = 0 ]; then
      if [ ! -e "$work/busy/master" ]; then
        : >"$work/busy/master"
        fault_master "$hold" &
        continue
      fi
    fi
    [ ${#HOST_FAULTS[@]} -gt 0 ] || continue
    free=()
    busy=0
    for h in "${HOST_NAMES[@]}"; do
      if [ -e "$work/busy/$h" ]; then busy=$((busy + 1)); else free+=("$h"); fi
    done
    if [ "$busy" -ge "$MAX_FAULTED" ] || [ ${#free[@]} = 0 ]; then
      flog "skip: $busy hosts faulted"
      continue
    fi
    h=${free[RANDOM % ${#free[@]}]}
    kind=${HOST_FAULTS[RANDOM % ${#HOST_FAULTS[@]}]}
    : >"$work/busy/$h"
    fault_host "$kind" "$h" "$hold" &
  done
  wait
  flog "injector stopped, every fault undone"
}

# ------------------------------------------------------------------ build
client_run() { # run; in a background subshell: ferry build, timestamped stderr
  local r=$1 fifo=$work/client.fifo rc=0 tspid
  rm -f "$fifo"
  mkfifo "$fifo"
  ts <"$fifo" >"$logs/client-$r.err" &
  tspid=$!
  FERRY_STATE_DIR=/dev/null/soak-client-has-no-state "$FERRY" build -k "$work/soak.scm" \
    >"$logs/client-$r.out" 2>"$fifo" </dev/null &
  echo $! >"$work/client.pid"
  wait $! || rc=$?
  wait "$tspid" || true
  rm -f "$fifo" "$work/client.pid"
  echo "$rc" >"$work/client.rc"
}
evidence() { # name: what the testbed and daemons look like now
  local d=$logs/evidence-$1
  mkdir -p "$d"
  "$TB" --dir "$tb" status >"$d/testbed-status.txt" 2>&1 || true
  FERRY_STATE_DIR=/dev/null/x timeout 30 "$FERRY" offload status >"$d/offload-status.txt" 2>&1 || true
  ps -eo pid,ppid,stat,etimes,args --forest >"$d/ps.txt" 2>&1 || true
  cp "$logs/faults.log" "$d/" 2>/dev/null || true
  for h in "${HOST_NAMES[@]}"; do cp "$tb/hosts/$h/daemon.log" "$d/$h-daemon.log" 2>/dev/null || true; done
}

say "building $N derivations on $HOSTS hosts x $SLOTS slots; faults every ${FAULT_EVERY}s ($FAULTS)"
: >"$logs/faults.log"
injector &
injector_pid=$!
build_t0=${EPOCHREALTIME/./}
run=0
reruns_master=0   # the client lost the master (killed by the injector)
reruns_failed=0   # a build failed (exit 100)
reruns_other=0    # anything else
stalls=0
ok=0
: >"$logs/runs.txt"
while [ "$run" -lt "$MAX_RUNS" ]; do
  run=$((run + 1))
  for _ in $(seq 1200); do [ -e "$work/master.up" ] && break; sleep 0.1; done
  if [ ! -e "$work/master.up" ]; then
    say "the master daemon is not up after 120 s"
    evidence "master-down-$run"
    break
  fi
  if ! master_alive && [ ! -e "$work/busy/master" ]; then
    say "the master daemon died without being killed: a crash (see $logs/master-$(cat "$work/master.count").log)"
    echo "run $run: master crash detected before the run" >>"$logs/runs.txt"
    evidence "master-crash-$run"
    rm -f "$work/master.up"
    start_master
  fi
  run_t0=$(el)
  rm -f "$work/client.rc"
  client_run "$run" &
  client_pid=$!
  last_size=-1
  last_change=${EPOCHREALTIME/./}
  stalled=0
  while kill -0 "$client_pid" 2>/dev/null; do
    sleep 1
    now=${EPOCHREALTIME/./}
    size=$(($(stat -c %s "$logs/client-$run.err" 2>/dev/null || echo 0) + $(stat -c %s "$logs/client-$run.out" 2>/dev/null || echo 0)))
    if [ "$size" != "$last_size" ]; then
      last_size=$size
      last_change=$now
    elif [ "$stalled" = 0 ] && [ $(((now - last_change) / 1000000)) -ge "$STALL" ]; then
      say "run $run: no client output for ${STALL}s: stuck; evidence in $logs/evidence-stall-$run"
      evidence "stall-$run"
      stalled=1
      [ -f "$work/client.pid" ] && kill "$(cat "$work/client.pid")" 2>/dev/null || true
    fi
    if [ "$stalled" != 2 ] && [ $(((now - build_t0) / 1000000)) -ge "$TIMEOUT" ]; then
      say "TIMEOUT (${TIMEOUT}s) reached"
      evidence "timeout"
      [ -f "$work/client.pid" ] && kill "$(cat "$work/client.pid")" 2>/dev/null || true
      stalled=2
    fi
  done
  wait "$client_pid" || true
  client_pid=
  rc=$(cat "$work/client.rc" 2>/dev/null || echo "?")
  run_t1=$(el)
  started=$(grep -c "^+[0-9.]* building '" "$logs/client-$run.err" || true)
  # Was the master killed while this run was going on?
  killed=$(awk -v a="$run_t0" -v b="$run_t1" '/FAULT kill-master/ { t = substr($2, 2) + 0; if (t >= a - 0.5 && t <= b + 0.5) n++ } END { print n + 0 }' "$logs/faults.log")
  if [ "$rc" = 0 ]; then
    why=success
    ok=1
  elif [ "$stalled" = 1 ]; then
    why="stuck (no output for ${STALL}s), killed"
    stalls=$((stalls + 1))
  elif [ "$stalled" = 2 ]; then
    why="timeout"
  elif [ "$rc" = 100 ]; then
    why="build failure(s): $(grep -c '^+[0-9.]* error: ' "$logs/client-$run.err" || true) error lines"
    reruns_failed=$((reruns_failed + 1))
  elif [ "$killed" -gt 0 ]; then
    why="lost the master (killed during the run): $(grep -m1 'ferry: error' "$logs/client-$run.err" | cut -c1-200 || true)"
    reruns_master=$((reruns_master + 1))
  else
    why="exit $rc: $(grep -m1 'ferry: error' "$logs/client-$run.err" | cut -c1-200 || true)"
    reruns_other=$((reruns_other + 1))
  fi
  echo "run $run: +${run_t0}s..+${run_t1}s, $started builds started, $why" | tee -a "$logs/runs.txt" >&2
  [ "$ok" = 1 ] && break
  [ "$stalled" = 2 ] && break
done
build_wall=$(awk -v a="$build_t0" -v b="${EPOCHREALTIME/./}" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
say "build loop over after ${build_wall}s: $run run(s), success=$ok"

# ----------------------------------------------------------------- checks
touch "$work/stop-faults"
say "stopping the injector (waiting for the faults in progress to be undone)"
wait "$injector_pid" || true
injector_pid=
FAILURES=()
fail() { FAILURES+=("$*"); say "FAIL: $*"; }

# Every host back to normal (the injector undid its faults; check it).
"$TB" --dir "$tb" status >"$logs/testbed-status-end.txt" 2>&1 || true
for h in "${HOST_NAMES[@]}"; do
  line=$(awk -v h="$h" '$1 == h' "$logs/testbed-status-end.txt")
  set -- $line
  if [ "${5:-}" != "" ] && ! [[ ${5:-} =~ ^[0-9]+$ ]]; then
    fail "$h: daemon not running at the end ($line)"
    tbc start-daemon "$h" || true
  fi
  if [ -n "${6:-}" ]; then
    fail "$h: faults still on at the end: $6"
    tbc cont "$h" || true; tbc heal "$h" || true; tbc unfill "$h" || true
  fi
done
if ! master_alive; then
  fail "the master daemon is not running at the end"
  start_master || true
fi

# Outputs: recompute each one from its name, size and inputs' expected
# contents (not by running the builder) and compare byte for byte.
declare -A OUT LINE1 CK
final=$logs/client-$run.out
if [ "$ok" = 1 ]; then
  while IFS= read -r p; do
    b=${p##*/}
    OUT[${b:33}]=$p
  done <"$final"
  [ "${#OUT[@]}" = "$N" ] || fail "the final run printed ${#OUT[@]} distinct outputs, want $N"
fi
checked=0
wrong=0
missing=0
expected() { # i size dur fill inputs
  local i=$1 size=$2 dur=$3 fill=$4 inputs=$5 head j
  head=$(printf 'soak-%s size=%s dur=%s\n' "$i" "$size" "$dur"
    if [ "$inputs" != - ]; then
      IFS=, read -ra ins <<<"$inputs"
      for j in "${ins[@]}"; do printf 'in %s %s\n' "${LINE1[$j]}" "${CK[$j]}"; done
    fi
    printf x)
  head=${head%x}
  printf '%s' "$head"
  local have=${#head}
  [ "$size" -gt "$have" ] && head -c "$((size - have))" /dev/zero | tr '\0' "$fill"
  return 0
}
if [ "$ok" = 1 ]; then
  say "checking the $N outputs"
  mkdir -p "$logs/wrong"
  while IFS=$'\t' read -r i dur size fill loc inputs; do
    name=soak-$i
    LINE1[$i]="$name size=$size dur=$dur"
    p=${OUT[$name]:-}
    if [ -n "$p" ] && [ -f "$p" ] && expected "$i" "$size" "$dur" "$fill" "$inputs" | cmp -s - "$p"; then
      CK[$i]=$(cksum <"$p")
    else
      # What its dependents must show is the expected content's cksum.
      CK[$i]=$(expected "$i" "$size" "$dur" "$fill" "$inputs" | cksum)
      if [ -z "$p" ] || [ ! -f "$p" ]; then
        missing=$((missing + 1))
        fail "$name: no output (${p:-not printed})"
        continue
      fi
      wrong=$((wrong + 1))
      fail "$name: $p differs from what it must be (first 64 KiB of both in $logs/wrong/)"
      head -c 65536 "$p" >"$logs/wrong/$name.actual"
      expected "$i" "$size" "$dur" "$fill" "$inputs" | head -c 65536 >"$logs/wrong/$name.expected"
    fi
    checked=$((checked + 1))
  done <"$work/dag.tsv"
  say "checked $checked outputs: $wrong wrong, $missing missing"
else
  fail "the build never succeeded ($run runs)"
fi

# What a client re-run costs once everything is built (evaluation, the
# .drvs sent again, the plan): each re-run after a master kill pays it
# before its first build starts.
noop=-
if [ "$ok" = 1 ]; then
  a0=${EPOCHREALTIME/./}
  if FERRY_STATE_DIR=/dev/null/x timeout 600 "$FERRY" build -k "$work/soak.scm" >"$logs/noop.out" 2>"$logs/noop.err"; then
    noop=$(awk -v a="$a0" -v b="${EPOCHREALTIME/./}" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
    cmp -s "$logs/noop.out" "$final" || fail "a no-op re-run printed other outputs than the last run (noop.out)"
    grep -q "building '" "$logs/noop.err" && fail "a no-op re-run built something again (noop.err)"
  else
    fail "a no-op re-run failed (noop.err)"
  fi
fi

# Nothing left running: builders abandoned on a stopped host finish after
# `cont`; give them 60 s.
leaked=""
for _ in $(seq 60); do
  leaked=$(pgrep -f -- '-soak-builder\.sh' || true)
  [ -z "$leaked" ] && break
  sleep 1
done
if [ -n "$leaked" ]; then
  ps -o pid,ppid,stat,etimes,args -p "$(echo $leaked | tr ' ' ,)" >"$logs/leaked-builders.txt" 2>&1 || true
  fail "builders still running 60 s after the end: $(echo $leaked) (see leaked-builders.txt)"
fi

# Back-off: a machine that failed is skipped for a while (doubled at each
# failure reported, up to 120 s). Wait until none is (at most 180 s) before
# the slot checks: a machine still backed off would look like lost slots.
backoff_end=none
backoff_wait=0
a0=${EPOCHREALTIME/./}
for k in $(seq 36); do
  FERRY_STATE_DIR=/dev/null/x timeout 60 "$FERRY" offload status --json >"$logs/offload-status-backoff.json" 2>/dev/null || true
  backed=$(jq -r '[.[] | select(.daemon.backed_off_for != null) | "\(.machine) for \(.daemon.backed_off_for | floor) s more (\(.daemon.failures) failures reported)"] | join(", ")' \
    "$logs/offload-status-backoff.json" 2>/dev/null || echo "?")
  [ "$k" = 1 ] && backoff_end=${backed:-none}
  [ -z "$backed" ] && break
  sleep 5
done
backoff_wait=$(awk -v a="$a0" -v b="${EPOCHREALTIME/./}" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')
[ -z "$backed" ] || fail "machines still backed off ${backoff_wait}s after the faults ended: $backed"

# Slots: the master's view (in use) and each host's daemon (builds running),
# once the master's measurements are fresh (re-measured every 10 s).
sleep 12
FERRY_STATE_DIR=/dev/null/x timeout 60 "$FERRY" offload status --json >"$logs/offload-status-end.json" 2>"$logs/offload-status-end.err" || true
FERRY_STATE_DIR=/dev/null/x FERRY_DAEMON_SOCKET=/dev/null/no-daemon timeout 60 "$FERRY" offload status --json \
  >"$logs/offload-status-direct-end.json" 2>>"$logs/offload-status-end.err" || true
in_use=$(jq -r '[.[] | .daemon.in_use // 0] | add // 0' "$logs/offload-status-end.json" 2>/dev/null || echo "?")
running=$(jq -r '[.[] | .info.builds_running // 0] | add // 0' "$logs/offload-status-direct-end.json" 2>/dev/null || echo "?")
up=$(jq -r '[.[] | select(.info != null)] | length' "$logs/offload-status-direct-end.json" 2>/dev/null || echo "?")
[ "$in_use" = 0 ] || fail "the master holds $in_use slot(s) with nothing building (offload-status-end.json)"
[ "$running" = 0 ] || fail "the hosts' daemons report $running build(s) running (builds_running in \`ferry offload status --json\`) with nothing building; per host: $(jq -r '[.[] | "\(.machine)=\(.info.builds_running)"] | join(" ")' "$logs/offload-status-direct-end.json")"
[ "$up" = "$HOSTS" ] || fail "$up of $HOSTS hosts answer at the end (offload-status-direct-end.json)"

# The master daemon still serves, and no slot is lost on either side: a
# new batch of HOSTS x SLOTS derivations sleeping AFTER_SLEEP s each must
# run at once (one on each slot of each host): well under 2 x AFTER_SLEEP.
AFTER_SLEEP=${AFTER_SLEEP:-4}
K=$((HOSTS * SLOTS))
{
  echo "(list"
  for i in $(seq "$K"); do
    echo " (derivation \"soak-after-$SEED-$i\" #:builder \"/bin/sh\""
    echo "   #:env '((\"requiredSystemFeatures\" . \"remote\") (\"PATH\" . \"/bin:/usr/bin\"))"
    echo "   #:args '(\"-c\" \"sleep $AFTER_SLEEP; echo still serving $i > \$out\"))"
  done
  echo ")"
} >"$work/after.scm"
a0=${EPOCHREALTIME/./}
after_ok=no
if FERRY_STATE_DIR=/dev/null/x timeout 120 "$FERRY" build "$work/after.scm" >"$logs/after.out" 2>"$logs/after.err"; then
  after_wall=$(awk -v a="$a0" -v b="${EPOCHREALTIME/./}" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
  after_hosts=$(grep -o "on '[0-9.]*'" "$logs/after.err" | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $3, $1}')
  good=$(for p in $(cat "$logs/after.out"); do cat "$p"; done | grep -c '^still serving' || true)
  if [ "$good" != "$K" ]; then
    fail "after the soak: $good of $K new derivations built right (after.out)"
  elif awk -v w="$after_wall" -v s="$AFTER_SLEEP" 'BEGIN { exit !(w >= 2 * s) }'; then
    fail "after the soak: $K builds of ${AFTER_SLEEP}s took ${after_wall}s: not all $K slots free ($after_hosts)"
  else
    after_ok="yes: $K x ${AFTER_SLEEP}s builds in ${after_wall}s ($after_hosts)"
  fi
else
  fail "the master daemon did not build $K new derivations after the soak (after.err)"
fi

# Panics, in any daemon's log.
panics=$(grep -l 'panicked' "$logs"/master-*.log "$tb"/hosts/*/daemon.log 2>/dev/null || true)
[ -z "$panics" ] || fail "panic in: $panics"
for h in "${HOST_NAMES[@]}"; do cp "$tb/hosts/$h/daemon.log" "$logs/$h-daemon.log" 2>/dev/null || true; done

# Stores: stop the master, verify its store and every host's.
p=$(cat "$work/master.pid")
kill "$p" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
kill -0 "$p" 2>/dev/null && fail "the master daemon did not exit on SIGTERM within 10 s"
kill -0 "$p" 2>/dev/null || rm -f "$work/master.pid"
declare -A VERIFY
if v=$("$FERRY" store verify 2>&1); then VERIFY[master]="ok ($v)"; else VERIFY[master]="FAILED"; fail "master store verify: $v"; fi
echo "master: $v" >"$logs/verify.txt"
for h in "${HOST_NAMES[@]}"; do
  if v=$("$TB" --dir "$tb" exec "$h" ferry store verify 2>&1); then VERIFY[$h]="ok ($v)"; else VERIFY[$h]="FAILED"; fail "$h store verify: $v"; fi
  echo "$h: $v" >>"$logs/verify.txt"
done
tmp_left=$(find "$tb/store" "$tb"/hosts/*/store -maxdepth 1 -name '.tmp-ferry-*' 2>/dev/null | wc -l)
# Build directories ($TMPDIR/ferry-build-[PID-]soak-I-XXXXXX, every daemon
# here has TMPDIR unset, so /tmp) left by builds: a daemon killed -9 leaves
# its own, to be removed by the next daemon started on the same state.
dirs_left=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -type d -name 'ferry-build-*soak-*' -newer "$work/started" 2>/dev/null | wc -l)
if [ "$dirs_left" != 0 ]; then
  find "${TMPDIR:-/tmp}" -maxdepth 1 -type d -name 'ferry-build-*soak-*' -newer "$work/started" >"$logs/build-dirs-left.txt" 2>/dev/null || true
  fail "$dirs_left build directories left in ${TMPDIR:-/tmp} (build-dirs-left.txt)"
fi

# ---------------------------------------------------------------- summary
count() { grep -c "$1" "$logs/faults.log" || true; }
elsewhere=$(cat "$logs"/client-*.err | grep -c 'building elsewhere' || true)
remote=$(cat "$logs"/client-*.err | grep -c "^+[0-9.]* building '.*' on '" || true)
localb=$(cat "$logs"/client-*.err | grep -c "^+[0-9.]* building '[^']*'\.\.\.$" || true)
total_wall=$(el)
{
  echo
  echo "## Soak run: $N derivations, $HOSTS hosts x $SLOTS slots, seed $SEED"
  echo
  echo "- commit $(head -1 "$logs/source.txt" | cut -c1-7)$(grep -q '^ M\|^M ' "$logs/source.txt" 2>/dev/null && echo " with uncommitted changes in $(grep '^ M\|^M ' "$logs/source.txt" | awk '{print $2}' | tr '\n' ' ')(diff in logs/source.txt)"); $(nproc) cores; load at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- DAG: $DAG_STATS"
  echo "- knobs: FAULT_EVERY=$FAULT_EVERY FAULT_MIN=$FAULT_MIN FAULT_MAX=$FAULT_MAX MAX_FAULTED=$MAX_FAULTED FAULTS=$FAULTS MASTER_ONE_IN=$MASTER_ONE_IN DURATION=$DURATION SIZE=$SIZE LOCAL_PCT=$LOCAL_PCT STORE_SIZE=$STORE_SIZE OFFLOAD_MAX_WAIT=$OFFLOAD_MAX_WAIT"
  echo
  echo "| figure | value |"
  echo "|---|---|"
  echo "| result | $([ ${#FAILURES[@]} = 0 ] && echo "**pass**" || echo "**FAIL** (${#FAILURES[@]} problem(s))") |"
  echo "| build wall time (first client start to success) | ${build_wall} s |"
  echo "| whole script wall time (testbed up to summary) | ${total_wall} s |"
  echo "| derivations built and checked byte for byte | $checked of $N ($wrong wrong, $missing missing) |"
  echo "| faults injected | $(count '^.* FAULT ') |"
  for k in stop kill-daemon cut fill kill-master; do
    echo "| - $k | $(count " FAULT $k ") |"
  done
  echo "| faults that could not be injected / undone | $(count 'INJECT-FAILED') / $(count 'UNDO-FAILED') |"
  echo "| client runs | $run (re-runs: $reruns_master master lost, $reruns_failed build failures, $stalls stuck, $reruns_other other) |"
  echo "| builds started on a host / on the master (all runs) | $remote / $localb |"
  echo "| \"building elsewhere\" (rebuilt after a transport failure) | $elsewhere |"
  echo "| a client re-run once everything is built (eval, send, plan) | ${noop} s |"
  echo "| back-off reports in the master logs (\"skipping it for N s\") / of them at the 120 s maximum | $(cat "$logs"/master-*.log | grep -c 'skipping it for' || true) / $(cat "$logs"/master-*.log | grep -c 'skipping it for 120 s' || true) |"
  echo "| machines backed off when the last fault was undone | $backoff_end (all usable again ${backoff_wait} s later) |"
  echo "| master daemons started (1 + restarts) | $(cat "$work/master.count") |"
  echo "| slots in use at the end (master) / builds running on hosts | $in_use / $running |"
  echo "| builders left running 60 s after the end | $( [ -z "$leaked" ] && echo 0 || echo "$leaked" | wc -w) |"
  echo "| master still serves, every slot free (HOSTS x SLOTS new builds at once) | $after_ok |"
  echo "| .tmp-ferry-* left in the stores / build directories left in ${TMPDIR:-/tmp} | $tmp_left / $dirs_left |"
  for k in master "${HOST_NAMES[@]}"; do
    echo "| ferry store verify, $k | ${VERIFY[$k]} |"
  done
  echo
  echo "Why builds were placed again (\"building elsewhere\" lines, by kind):"
  echo
  cat "$logs"/client-*.err | grep 'building elsewhere' |
    sed -E 's/^\+[0-9.]+ ferry: //; s/10\.213\.[0-9]+\.[0-9]+/HOST/g; s/\/[^ ]*socket/SOCKET/g; s/[0-9]+ MiB/N MiB/g; s/: check that.*;/:...;/' |
    sort | uniq -c | sort -rn | sed 's/^/    /'
  echo
  echo "Client runs:"
  echo
  sed 's/^/    /' "$logs/runs.txt"
  if [ ${#FAILURES[@]} -gt 0 ]; then
    echo
    echo "Failures:"
    echo
    printf -- '- %s\n' "${FAILURES[@]}"
  fi
  echo
  echo "Logs: $logs (faults.log, client-*.err, master-*.log, h*-daemon.log)"
} | tee "$logs/summary.md"
[ ${#FAILURES[@]} = 0 ]
