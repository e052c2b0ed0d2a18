#!/usr/bin/env bash
# NAR dump + SHA-256 of a ~1 GiB tree: Ferry against Nix, side by side in one run.
#
# Measures, after one untimed warm-up pass of each (page cache hot), RUNS rounds
# of these four, interleaved within each round (the starting tool rotates):
#   ferry-hash   ferry store hash --base32 TREE
#   nix-hash     nix-hash --type sha256 --base32 TREE
#   ferry-dump   ferry store dump TREE | sha256sum
#   nix-dump     nix-store --dump TREE | sha256sum
# and, to see the dumpers themselves (sha256sum runs at ~150 MiB/s without
# SHA-NI and dominates the two pipelines above), with a consumer that is
# nearly free:
#   ferry-pipe   ferry store dump TREE | wc -c      (byte count checked)
#   nix-pipe     nix-store --dump TREE | wc -c
# Wall time is the whole command (for the pipelines: the whole pipeline); peak
# RSS is /usr/bin/time's %M of the hashing/dumping process (for the pipelines:
# the left side, not sha256sum). Every run's hash is checked against the others;
# any disagreement aborts the benchmark.
#
# Output (stdout; progress goes to stderr): machine and tree description, a
# table (median/min/max s, MiB/s of NAR bytes, peak RSS) with ferry/nix
# ratios, then 'name: value unit' lines (the style of
# ../shared/peers/nix/bench.sh). Everything on stdout, plus each run's
# figures, is also written to $RESULTS_DIR/nar-hash-<timestamp>.txt.
#
# The tree is generated once, deterministically (sizes from a seeded LCG,
# contents from AES-128-CTR over zeros with a fixed key, so every byte and the
# NAR hash are the same on every machine), and cached in $BENCH_DIR/tree:
#   src/dXX/eYY/fZZ.dat  4096 small files, 1-64 KiB (every 9th executable)
#   media/mNN.bin        48 medium files, 1-10 MiB
#   big/largeN.bin       3 large files filling the total up to exactly 1 GiB
#                        (one of them executable)
#   links/               64 relative symlinks to files, one to a directory,
#                        one dangling; plus an empty file and an empty directory
# Nothing under /nix is written (Nix only looks up its config and profiles):
# nix-hash and nix-store --dump on a plain directory need no store.
#
# Env knobs:
#   RUNS=5                       timed rounds
#   BENCH_DIR=/var/tmp/ferry-bench   where the tree (and results) live
#   FERRY_BIN=path               use this ferry binary; otherwise the script
#                                runs `cargo build --release -p ferry-cli`
#   RESULTS_DIR=$BENCH_DIR/results
#   REGEN=1                      throw away the cached tree and generate again
#
# Usage: bench/nar-hash.sh        (from anywhere; needs nix-hash, nix-store,
#                                  openssl, sha256sum, /usr/bin/time)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

RUNS="${RUNS:-5}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/ferry-bench}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
TREE="$BENCH_DIR/tree"
GEN_VERSION=1          # bump when the generator changes; invalidates the cache
TOTAL_BYTES=$((1024 * 1024 * 1024))

die() { echo "nar-hash.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
emit() { printf '%s: %s %s\n' "$1" "$2" "$3" | tee -a "$RESULTS"; }
say() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

# ------------------------------------------------------------------ tools
for t in nix-hash nix-store openssl sha256sum; do
  command -v "$t" >/dev/null || die "$t not found in PATH"
done
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "# installing GNU time (Debian package 'time') for peak RSS" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null \
      || die "apt-get install time failed; install GNU time (/usr/bin/time) yourself"
  else
    die "/usr/bin/time (GNU time) is missing: apt-get install time"
  fi
fi

if [ -n "${FERRY_BIN:-}" ]; then
  FERRY="$FERRY_BIN"
else
  echo "# cargo build --release -p ferry-cli" >&2
  (cd "$ROOT" && cargo build --release -q -p ferry-cli) || die "cargo build failed"
  FERRY="$ROOT/target/release/ferry"
fi
[ -x "$FERRY" ] || die "no ferry binary at $FERRY"

# ------------------------------------------------------------------ tree
# A deterministic pseudo-random number generator (31-bit LCG) in pure bash.
SEED=20240601
rnd() { SEED=$(( (SEED * 1103515245 + 12345) & 0x7fffffff )); R=$(( SEED >> 8 )); }

gen_tree() {
  local tmp="$BENCH_DIR/tree.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  echo "# generating the benchmark tree in $TREE (once)" >&2
  # One deterministic incompressible stream; each file takes the next bytes.
  exec 3< <(openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
              -iv 00000000000000000000000000000000 < /dev/zero 2>/dev/null)
  local used=0 i j k n f size
  # 4096 small files, 1 KiB - 64 KiB, sizes not multiples of 8 (NAR padding)
  n=0
  for i in $(seq -w 0 15); do
    for j in $(seq -w 0 15); do
      mkdir -p "$tmp/src/d$i/e$j"
      for k in $(seq -w 0 15); do
        rnd; size=$(( 1024 + R % (64 * 1024 - 1024 + 1) ))
        f="$tmp/src/d$i/e$j/f$k.dat"
        head -c "$size" <&3 > "$f"
        n=$((n + 1)); [ $((n % 9)) = 0 ] && chmod 755 "$f"
        used=$((used + size))
      done
    done
  done
  # 48 medium files, 1 - 10 MiB
  mkdir -p "$tmp/media"
  for i in $(seq -w 0 47); do
    rnd; size=$(( 1024 * 1024 + R % (9 * 1024 * 1024 + 1) ))
    head -c "$size" <&3 > "$tmp/media/m$i.bin"
    used=$((used + size))
  done
  # 3 large files: the rest, up to exactly TOTAL_BYTES
  mkdir -p "$tmp/big"
  local rest=$(( TOTAL_BYTES - used ))
  [ "$rest" -ge $((3 * 100 * 1024 * 1024)) ] || die "generator bug: only $rest bytes left for the large files"
  for i in 1 2 3; do
    if [ "$i" = 3 ]; then size=$rest; else size=$(( (TOTAL_BYTES - used) / 3 + i * 4099 )); fi
    head -c "$size" <&3 > "$tmp/big/large$i.bin"
    rest=$((rest - size))
  done
  chmod 755 "$tmp/big/large2.bin"
  exec 3<&-
  # symlinks, an empty file, an empty directory
  mkdir -p "$tmp/links" "$tmp/empty-dir"
  : > "$tmp/empty-file"
  for i in $(seq -w 0 63); do
    rnd; ln -s "../src/d$(printf %02d $((R % 16)))/e$(printf %02d $(((R >> 4) % 16)))/f$(printf %02d $(((R >> 8) % 16))).dat" "$tmp/links/l$i"
  done
  ln -s ../media "$tmp/links/to-media"
  ln -s does/not/exist "$tmp/links/dangling"
  # sanity: exact size
  local got
  got="$(find "$tmp" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%d", s}')"
  [ "$got" = "$TOTAL_BYTES" ] || die "generated tree holds $got bytes, want $TOTAL_BYTES"
  echo "$GEN_VERSION" > "$BENCH_DIR/tree.version"
  rm -rf "$TREE"; mv "$tmp" "$TREE"
}

mkdir -p "$BENCH_DIR" "$RESULTS_DIR"
if [ "${REGEN:-0}" = 1 ] || [ ! -d "$TREE" ] || [ "$(cat "$BENCH_DIR/tree.version" 2>/dev/null)" != "$GEN_VERSION" ]; then
  rm -f "$BENCH_DIR/tree.version"
  gen_tree
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$RESULTS_DIR/nar-hash-$STAMP.txt"
LOGDIR="$BENCH_DIR/logs/$STAMP"; mkdir -p "$LOGDIR"

# ------------------------------------------------------------------ describe
tree_bytes="$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%d", s}')"
n_files="$(find "$TREE" -type f | wc -l)"
n_exec="$(find "$TREE" -type f -perm -u+x | wc -l)"
n_dirs="$(find "$TREE" -type d | wc -l)"
n_links="$(find "$TREE" -type l | wc -l)"
n_small="$(find "$TREE" -type f -size +0 -size -65537c | wc -l)"
n_medium="$(find "$TREE" -type f -size +65536c -size -$((10 * 1024 * 1024 + 1))c | wc -l)"
n_large="$(find "$TREE" -type f -size +$((100 * 1024 * 1024))c | wc -l)"
nar_bytes="$("$FERRY" store dump "$TREE" | wc -c)"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
flags=""
grep -qw sha_ni /proc/cpuinfo && flags="$flags sha_ni"
grep -qw avx2 /proc/cpuinfo && flags="$flags avx2"

say "# ferry nar-hash bench $STAMP"
say "# machine: $(nproc) cpus, $cpu (${flags# }), $(uname -sr), $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
say "# tools: $("$FERRY" --version 2>/dev/null || echo ferry) ($FERRY) | $(nix-hash --version) | $(nix-store --version) | $(sha256sum --version | head -1)"
say "# tree: $TREE: $tree_bytes bytes in $n_files regular files ($n_small of 1-64 KiB, $n_medium of 1-10 MiB, $n_large > 100 MiB, 1 empty; $n_exec executable), $n_dirs directories, $n_links symlinks; NAR $nar_bytes bytes"
say "# runs=$RUNS, loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ measure
TOOLS=(ferry-hash nix-hash ferry-dump nix-dump ferry-pipe nix-pipe)

# run_tool TOOL TAG: runs it, leaves "<wall> <rss_kib> <hash>" in $LOGDIR/TAG.res
run_tool() {
  local tool="$1" tag="$2" tf="$LOGDIR/$2.time" out="$LOGDIR/$2.out" t0 t1
  t0="$(now)"
  case "$tool" in
    ferry-hash) /usr/bin/time -o "$tf" -f '%e %M' "$FERRY" store hash --base32 "$TREE" > "$out" ;;
    nix-hash)   /usr/bin/time -o "$tf" -f '%e %M' nix-hash --type sha256 --base32 "$TREE" > "$out" ;;
    ferry-dump) /usr/bin/time -o "$tf" -f '%e %M' "$FERRY" store dump "$TREE" | sha256sum > "$out" ;;
    nix-dump)   /usr/bin/time -o "$tf" -f '%e %M' nix-store --dump "$TREE" | sha256sum > "$out" ;;
    ferry-pipe) /usr/bin/time -o "$tf" -f '%e %M' "$FERRY" store dump "$TREE" | wc -c > "$out" ;;
    nix-pipe)   /usr/bin/time -o "$tf" -f '%e %M' nix-store --dump "$TREE" | wc -c > "$out" ;;
  esac
  t1="$(now)"
  local h
  h="$(awk '{print $1; exit}' "$out")"
  case "$tool" in
    *-dump) ;;                                           # hex from sha256sum
    *-pipe) [ "$h" = "$nar_bytes" ] || die "$tool wrote $h bytes, want $nar_bytes"
            h=pipe ;;
    *) h="$(nix-hash --type sha256 --to-base16 "$h")" ;; # nix32 -> hex
  esac
  [ -n "$h" ] || die "$tool printed no hash (see $out)"
  awk -v a="$t0" -v b="$t1" -v r="$(awk '{print $2}' "$tf" | tail -1)" -v h="$h" \
    'BEGIN{printf "%.3f %d %s\n", b-a, r, h}' > "$LOGDIR/$tag.res"
}

check_hash() {
  local tool="$1" tag="$2" h
  h="$(awk '{print $3}' "$LOGDIR/$tag.res")"
  [ "$h" = pipe ] && return 0
  if [ -z "${WANT:-}" ]; then WANT="$h"; WANT_FROM="$tool"; fi
  [ "$h" = "$WANT" ] || die "HASH MISMATCH: $tool ($tag) gave $h but $WANT_FROM gave $WANT"
}

echo "# warm-up (untimed): one pass of each" >&2
WANT=""
for tool in "${TOOLS[@]}"; do run_tool "$tool" "warm.$tool"; check_hash "$tool" "warm.$tool"; done
say "# NAR sha256: $WANT (base16) = $(nix-hash --type sha256 --to-base32 "$WANT") (nix32); all four hashers agree"

for run in $(seq 1 "$RUNS"); do
  for k in $(seq 0 $((${#TOOLS[@]} - 1))); do
    tool="${TOOLS[$(( (run - 1 + k) % ${#TOOLS[@]} ))]}"
    run_tool "$tool" "run$run.$tool"
    check_hash "$tool" "run$run.$tool"
    read -r wall rss _ < "$LOGDIR/run$run.$tool.res"
    printf 'run%s.%s: %s s, %s MiB RSS\n' "$run" "$tool" "$wall" "$(awk -v r="$rss" 'BEGIN{printf "%.1f", r/1024}')" >> "$RESULTS"
  done
  echo "# round $run/$RUNS done (loadavg $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ report
# stats TOOL -> "median min max rss_max_kib"
stats() {
  local tool="$1"
  for run in $(seq 1 "$RUNS"); do cat "$LOGDIR/run$run.$tool.res"; done | sort -n -k1,1 | awk '
    { t[NR]=$1; if ($2 > rss) rss=$2 }
    END { m = (NR % 2) ? t[(NR+1)/2] : (t[NR/2] + t[NR/2+1]) / 2
          printf "%.3f %.3f %.3f %d\n", m, t[1], t[NR], rss }'
}
declare -A MED MIN MAX RSS
for tool in "${TOOLS[@]}"; do
  read -r MED[$tool] MIN[$tool] MAX[$tool] RSS[$tool] < <(stats "$tool")
done
mibs() { awk -v b="$nar_bytes" -v t="$1" 'BEGIN{printf "%.0f", b/1048576/t}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

say ""
say "# loadavg after: $LOAD_AFTER"
say "$(printf '%-40s %8s %8s %8s %9s %9s' tool median_s min_s max_s MiB/s peakRSS_MiB)"
for tool in "${TOOLS[@]}"; do
  case "$tool" in
    ferry-hash) label="ferry store hash --base32" ;;
    nix-hash)   label="nix-hash --type sha256 --base32" ;;
    ferry-dump) label="ferry store dump | sha256sum" ;;
    nix-dump)   label="nix-store --dump | sha256sum" ;;
    ferry-pipe) label="ferry store dump | wc -c" ;;
    nix-pipe)   label="nix-store --dump | wc -c" ;;
  esac
  say "$(printf '%-40s %8s %8s %8s %9s %9s' "$label" "${MED[$tool]}" "${MIN[$tool]}" "${MAX[$tool]}" "$(mibs "${MED[$tool]}")" "$(mib "${RSS[$tool]}")")"
done
say "# ratios on medians: time ferry/nix (<1 = ferry faster), speedup nix/ferry"
say "$(printf '  hash:             time ratio %s, speedup %sx, RSS ratio %s' "$(ratio "${MED[ferry-hash]}" "${MED[nix-hash]}")" "$(ratio "${MED[nix-hash]}" "${MED[ferry-hash]}")" "$(ratio "${RSS[ferry-hash]}" "${RSS[nix-hash]}")")"
say "$(printf '  dump | sha256sum: time ratio %s, speedup %sx, RSS ratio %s' "$(ratio "${MED[ferry-dump]}" "${MED[nix-dump]}")" "$(ratio "${MED[nix-dump]}" "${MED[ferry-dump]}")" "$(ratio "${RSS[ferry-dump]}" "${RSS[nix-dump]}")")"
say "$(printf '  dump | wc -c:     time ratio %s, speedup %sx, RSS ratio %s' "$(ratio "${MED[ferry-pipe]}" "${MED[nix-pipe]}")" "$(ratio "${MED[nix-pipe]}" "${MED[ferry-pipe]}")" "$(ratio "${RSS[ferry-pipe]}" "${RSS[nix-pipe]}")")"
say ""

emit tree.bytes "$tree_bytes" B
emit tree.nar_bytes "$nar_bytes" B
emit tree.files "$n_files" count
emit tree.dirs "$n_dirs" count
emit tree.symlinks "$n_links" count
for tool in "${TOOLS[@]}"; do
  key="${tool/-/_}"
  emit "$key.median" "${MED[$tool]}" s
  emit "$key.min" "${MIN[$tool]}" s
  emit "$key.max" "${MAX[$tool]}" s
  emit "$key.throughput" "$(mibs "${MED[$tool]}")" MiB/s
  emit "$key.peak_rss" "$(mib "${RSS[$tool]}")" MiB
done
emit ratio.hash.time_ferry_over_nix "$(ratio "${MED[ferry-hash]}" "${MED[nix-hash]}")" x
emit ratio.hash.speedup "$(ratio "${MED[nix-hash]}" "${MED[ferry-hash]}")" x
emit ratio.dump.time_ferry_over_nix "$(ratio "${MED[ferry-dump]}" "${MED[nix-dump]}")" x
emit ratio.dump.speedup "$(ratio "${MED[nix-dump]}" "${MED[ferry-dump]}")" x
emit ratio.pipe.time_ferry_over_nix "$(ratio "${MED[ferry-pipe]}" "${MED[nix-pipe]}")" x
emit ratio.pipe.speedup "$(ratio "${MED[nix-pipe]}" "${MED[ferry-pipe]}")" x
say "# results: $RESULTS ; per-run logs: $LOGDIR"
