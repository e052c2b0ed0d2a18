#!/usr/bin/env bash
# Export + import of a 1 GiB closure between two stores on this machine:
# Ferry (`ferry archive --export | ferry archive --import`, signed, verified)
# against Nix 2.8 (`nix-store --export | nix-store --import`), side by side in
# one run.
#
# Data: 8 trees ("store paths"), 1 GiB of regular-file bytes in total,
# generated once, deterministically (sizes from a seeded LCG, contents from
# AES-128-CTR over zeros with a fixed key, as bench/nar-hash.sh does), cached
# in $BENCH_DIR/trees:
#   t0-src        2048 files of 1-64 KiB, 16 per directory, 2 levels deep
#                 (l1NN/l2NN/fNNNN.c; every 9th file of each tree executable)
#   t1-headers    2048 files of 64 B-4 KiB, 4 levels deep; links/: 32
#                 relative symlinks to files
#   t2-docs       1024 files of 1-64 KiB, an empty file, an empty directory,
#                 a dangling symlink, a symlink to a directory
#   t3-media-a    24 files of 1-10 MiB
#   t4-media-b    24 files of 1-10 MiB
#   t5-toolchain  bin/: 12 executables of 0.5-8 MiB; lib/: 12 files of
#                 1-16 MiB, each with a .so -> .so.1 symlink
#   t6-big-a      one large executable (a third of what is left)
#   t7-big-b      two large files (the rest, up to exactly 1 GiB)
# The same 8 trees are added once to each source store.
#
# Ferry: store A (FERRY_STORE_DIR=$BENCH_DIR/store, state and config under
# $BENCH_DIR/a) gets the trees with `ferry store add` (cached across runs) and
# a signing key; store B's config authorizes A's key. B must use the same
# store directory path, so B runs in a private mount namespace where
# $BENCH_DIR/store-b is bind-mounted over $BENCH_DIR/store (state and config
# under $BENCH_DIR/b). Each round starts from an empty B and times
#   ferry archive --export P0..P7 | <B namespace> ferry archive --import
# (wall of the whole pipeline; peak RSS of each side from /usr/bin/time).
# Then checks: B holds all 8 paths, `ferry store verify` is clean in B, and
# B's NAR hashes and sizes equal A's (`ferry store path-info --json`).
#
# Nix: the Nix peer (../shared/peers/nix): the trees are added once to its
# client store (`nixc nix-store --add`, kept alive by GC roots); each round
# first deletes them from builder b1's store (`nixb 1 nix-store --delete`),
# then times
#   nixc nix-store --export P0..P7 | nixb 1 nix-store --import
# (the client's export goes through its nix-daemon, as a user's would; b1's
# import uses its local store as root). Then checks: b1 has all 8 paths valid
# with the client's NAR hashes. Nix's NAR hashes must also equal Ferry's (same
# trees, same NAR): that is checked once.
#
# Emptying the receiving stores between rounds deletes nothing: the copies
# are renamed into $BENCH_DIR/graveyard (deleted after the last round) and
# dropped from the page cache. On this journal-less ext4, freshly deleted
# inodes make every file creation slow for minutes, and writing into fresh
# VM memory is slow; see the comments above reset_b for both. Do not start
# the script again within ~6 minutes of a previous run's end, nor while
# something else deletes thousands of files on the same file system.
#
# Rounds: RUNS, ferry and Nix interleaved (the order alternates per round);
# `uptime` is printed before each round, and each timed command waits (up to
# LOAD_WAIT s) for the 1-minute load to drop below MAX_LOAD. One untimed
# warm-up round of each comes first (page cache hot on the export side).
#
# Output: progress on stderr; on stdout (and $RESULTS_DIR/archive-<stamp>.txt)
# a table (median/min/max s, MiB/s of NAR bytes over the median, peak RSS and
# CPU time (user+sys, median) of each side's process), ratios,
# 'name: value unit' lines, and the goal check
# (>= 1.5x Nix's throughput, memory flat: peak RSS of each ferry side below
# FLAT_RSS_MIB, default 64, whatever the size of the items). With APPEND=1
# (default) a section is appended to BENCHMARKS.md.
#
# Env knobs:
#   RUNS=3                 timed rounds
#   BENCH_DIR=/var/tmp/ferry-bench-archive
#   RESULTS_DIR=$BENCH_DIR/results
#   FERRY_BIN=path         use this ferry; otherwise `cargo build --release -p ferry-cli`
#   NIX_PEER=../shared/peers/nix   (setup.sh is run with N_BUILDERS=1 if down)
#   MAX_LOAD=2.5  LOAD_WAIT=60
#   WARMUP=1               one untimed round of each first
#   APPEND=1               append the results section to BENCHMARKS.md
#   REGEN=1                regenerate the trees (and re-add them everywhere)
#   DIV=1                  divide every file count and the total by this
#                          (DIV=8: a 128 MiB smoke test; use another BENCH_DIR)
#   FLAT_RSS_MIB=64        "memory flat" threshold for each ferry side
#   KEEP_B=0               KEEP_B=1: keep store B, b1's copies and the
#                          graveyard after the last round
#
# Usage (as root):  RUNS=3 bench/archive.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

RUNS="${RUNS:-3}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/ferry-bench-archive}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
NIX_PEER="${NIX_PEER:-$(dirname "$ROOT")/shared/peers/nix}"
MAX_LOAD="${MAX_LOAD:-2.5}"
LOAD_WAIT="${LOAD_WAIT:-60}"
WARMUP="${WARMUP:-1}"
APPEND="${APPEND:-1}"
DIV="${DIV:-1}"
FLAT_RSS_MIB="${FLAT_RSS_MIB:-64}"
KEEP_B="${KEEP_B:-0}"
GEN_VERSION="1.div$DIV"      # bump when the generator changes
TOTAL_BYTES=$((1024 * 1024 * 1024 / DIV))
TREES="$BENCH_DIR/trees"
NAMES=(t0-src t1-headers t2-docs t3-media-a t4-media-b t5-toolchain t6-big-a t7-big-b)

# (redefined after sourcing the Nix peer's common.sh, which has its own)
log() { printf '[archive] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

[ "$(id -u)" = 0 ] || die "must run as root (mount namespaces, the Nix peer)"

# ------------------------------------------------------------------ tools
for t in openssl unshare nsenter mount awk; do
  command -v "$t" >/dev/null || die "$t not found in PATH"
done
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time (Debian package 'time') for peak RSS"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null \
    || die "apt-get install time failed; install GNU time (/usr/bin/time) yourself"
fi
if [ -n "${FERRY_BIN:-}" ]; then
  FERRY="$FERRY_BIN"
else
  log "cargo build --release -p ferry-cli"
  (cd "$ROOT" && cargo build --release -q -p ferry-cli) || die "cargo build failed"
  FERRY="$ROOT/target/release/ferry"
fi
[ -x "$FERRY" ] || die "no ferry binary at $FERRY"
FERRY="$(readlink -f "$FERRY")"

# shellcheck source=/dev/null
source "$NIX_PEER/common.sh"
if ! client_pid >/dev/null || ! builder_pid 1 >/dev/null; then
  log "Nix peer not running: N_BUILDERS=1 $NIX_PEER/setup.sh"
  N_BUILDERS=1 "$NIX_PEER/setup.sh" >&2 || die "Nix peer setup failed"
fi
client_pid >/dev/null && builder_pid 1 >/dev/null || die "Nix peer still not running"
log() { printf '[archive] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ trees
SEED=20240607
rnd() { SEED=$(( (SEED * 1103515245 + 12345) & 0x7fffffff )); R=$(( SEED >> 8 )); }
USED=0
# mkfile PATH SIZE [exec]: the next SIZE bytes of the stream on fd 3
mkfile() {
  head -c "$2" <&3 > "$1"
  [ "${3:-}" = x ] && chmod 755 "$1"
  USED=$((USED + $2))
}
# small_files DIR COUNT MIN MAX DEPTH: COUNT files, 16 per leaf directory,
# leaves spread over DEPTH levels of 8-way directories; every 9th executable.
small_files() {
  local dir="$1" count="$2" min="$3" max="$4" depth="$5" i leaf p l c size
  for i in $(seq 0 $((count - 1))); do
    leaf=$((i / 16)); p="$dir"
    for l in $(seq 1 "$depth"); do
      if [ "$l" = 1 ]; then c=$(( leaf >> (3 * (depth - 1)) ))
      else c=$(( (leaf >> (3 * (depth - l))) & 7 )); fi
      p="$p/$(printf 'l%d%02d' "$l" "$c")"
    done
    [ $((i % 16)) = 0 ] && mkdir -p "$p"
    rnd; size=$(( min + R % (max - min + 1) ))
    if [ $((i % 9)) = 8 ]; then mkfile "$p/f$(printf %04d "$i").c" "$size" x
    else mkfile "$p/f$(printf %04d "$i").c" "$size"; fi
  done
}
gen_trees() {
  local tmp="$BENCH_DIR/trees.tmp.$$" i size rest n
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "generating the trees in $TREES (once; $((TOTAL_BYTES / 1048576)) MiB)"
  exec 3< <(openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
              -iv 000000000000000000000000000000a5 < /dev/zero 2>/dev/null)
  USED=0
  small_files "$tmp/t0-src" $((2048 / DIV)) 1024 $((64 * 1024)) 2
  small_files "$tmp/t1-headers" $((2048 / DIV)) 64 4096 4
  mkdir -p "$tmp/t1-headers/links"
  i=0
  for f in $(cd "$tmp/t1-headers" && find l1* -type f | LC_ALL=C sort | awk 'NR % 7 == 1' | head -32); do
    ln -s "../$f" "$tmp/t1-headers/links/s$(printf %02d "$i")"; i=$((i + 1))
  done
  small_files "$tmp/t2-docs" $((1024 / DIV)) 1024 $((64 * 1024)) 2
  : > "$tmp/t2-docs/empty-file"; mkdir "$tmp/t2-docs/empty-dir"
  ln -s does/not/exist "$tmp/t2-docs/dangling"; ln -s l100 "$tmp/t2-docs/to-dir"
  for t in t3-media-a t4-media-b; do
    mkdir -p "$tmp/$t/share"
    for i in $(seq -w 0 $((24 / DIV - 1))); do
      rnd; size=$(( 1048576 + R % (9 * 1048576 + 1) ))
      mkfile "$tmp/$t/share/m$i.bin" "$size"
    done
  done
  mkdir -p "$tmp/t5-toolchain/bin" "$tmp/t5-toolchain/lib"
  n=$(( 12 / DIV )); [ "$n" -ge 1 ] || n=1
  for i in $(seq -w 0 $((n - 1))); do
    rnd; mkfile "$tmp/t5-toolchain/bin/tool$i" $(( 524288 + R % (7 * 1048576 + 1) )) x
    rnd; mkfile "$tmp/t5-toolchain/lib/libt$i.so.1" $(( 1048576 + R % (15 * 1048576 + 1) ))
    ln -s "libt$i.so.1" "$tmp/t5-toolchain/lib/libt$i.so"
  done
  rest=$(( TOTAL_BYTES - USED ))
  [ "$rest" -ge $((3 * 1048576)) ] || die "generator bug: only $rest bytes left for the large files"
  mkdir -p "$tmp/t6-big-a" "$tmp/t7-big-b"
  size=$(( rest / 3 + 4099 )); mkfile "$tmp/t6-big-a/blob-a.bin" "$size" x
  size=$(( rest / 3 - 12289 )); mkfile "$tmp/t7-big-b/blob-b1.bin" "$size"
  mkfile "$tmp/t7-big-b/blob-b2.bin" $(( TOTAL_BYTES - USED ))
  exec 3<&-
  local got
  got="$(find "$tmp" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%d", s}')"
  [ "$got" = "$TOTAL_BYTES" ] || die "generated trees hold $got bytes, want $TOTAL_BYTES"
  rm -rf "$TREES"; mv "$tmp" "$TREES"
  echo "$GEN_VERSION" > "$BENCH_DIR/trees.version"
}

mkdir -p "$BENCH_DIR" "$RESULTS_DIR"
if [ "${REGEN:-0}" = 1 ] || [ ! -d "$TREES" ] || [ "$(cat "$BENCH_DIR/trees.version" 2>/dev/null)" != "$GEN_VERSION" ]; then
  rm -f "$BENCH_DIR/trees.version" "$BENCH_DIR/a/paths" "$BENCH_DIR/nix-paths"
  gen_trees
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$RESULTS_DIR/archive-$STAMP.txt"
LOGDIR="$BENCH_DIR/logs/$STAMP"; mkdir -p "$LOGDIR"
say() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
emit() { printf '%s: %s %s\n' "$1" "$2" "$3" | tee -a "$RESULTS"; }

# ------------------------------------------------------------------ ferry stores
STORE="$BENCH_DIR/store"            # the store directory both stores use
STORE_B="$BENCH_DIR/store-b"        # B's real directory, mounted over $STORE
fa() { FERRY_STORE_DIR="$STORE" FERRY_STATE_DIR="$BENCH_DIR/a/state" \
       FERRY_CONFIG_DIR="$BENCH_DIR/a/config" "$@"; }
# fb CMD...: CMD in B's private mount namespace, with B's state and config.
fb() {
  FERRY_STORE_DIR="$STORE" FERRY_STATE_DIR="$BENCH_DIR/b/state" \
  FERRY_CONFIG_DIR="$BENCH_DIR/b/config" \
  unshare --mount --propagation private -- /bin/sh -c \
    'mount --bind "$0" "$1" && shift && exec "$@"' "$STORE_B" "$STORE" "$@"
}
mkdir -p "$STORE" "$STORE_B" "$BENCH_DIR/a" "$BENCH_DIR/b/config"

if [ ! -s "$BENCH_DIR/a/config/signing-key.pub" ]; then
  fa "$FERRY" archive --generate-key >&2
fi
fb "$FERRY" archive --authorize < "$BENCH_DIR/a/config/signing-key.pub" 2>&1 | sed 's/^/[archive] B: /' >&2

# Store A's paths (cached; re-added if the database lost them).
a_ok=0
if [ -s "$BENCH_DIR/a/paths" ] && [ "$(wc -l < "$BENCH_DIR/a/paths")" = "${#NAMES[@]}" ]; then
  mapfile -t FPATHS < "$BENCH_DIR/a/paths"
  fa "$FERRY" store path-info "${FPATHS[@]}" >/dev/null 2>&1 && a_ok=1
fi
if [ "$a_ok" = 0 ]; then
  log "ferry store add: the 8 trees into store A"
  FPATHS=()
  for n in "${NAMES[@]}"; do FPATHS+=("$(fa "$FERRY" store add "$TREES/$n")"); done
  printf '%s\n' "${FPATHS[@]}" > "$BENCH_DIR/a/paths"
fi
fa "$FERRY" store path-info --json "${FPATHS[@]}" > "$LOGDIR/a.path-info.json"
# "path narHash narSize" per line, from path-info --json
info_lines() {
  awk -F'"' '/"path":/{p=$4} /"narHash":/{h=$4} /"narSize":/{s=$3; gsub(/[^0-9]/,"",s)}
             p != "" && h != "" && s != "" {print p, h, s; p=""; h=""; s=""}' "$1" | sort
}
info_lines "$LOGDIR/a.path-info.json" > "$LOGDIR/a.info"
NAR_BYTES="$(awk '{s+=$3} END{printf "%d", s}' "$LOGDIR/a.info")"
[ "$(wc -l < "$LOGDIR/a.info")" = "${#NAMES[@]}" ] || die "path-info of store A lists $(wc -l < "$LOGDIR/a.info") paths"

# ------------------------------------------------------------------ Nix stores
n_ok=0
if [ -s "$BENCH_DIR/nix-paths" ]; then
  mapfile -t NPATHS < "$BENCH_DIR/nix-paths"
  nixc nix-store --check-validity "${NPATHS[@]}" >/dev/null 2>&1 && n_ok=1
fi
if [ "$n_ok" = 0 ]; then
  log "nix-store --add: the 8 trees into the Nix client store"
  NPATHS=()
  for n in "${NAMES[@]}"; do NPATHS+=("$(nixc nix-store --add "$TREES/$n")"); done
  printf '%s\n' "${NPATHS[@]}" > "$BENCH_DIR/nix-paths"
fi
# GC roots, so that the peer's bench.sh (which GCs the client) keeps them.
for i in "${!NPATHS[@]}"; do
  nixc ln -sfn "${NPATHS[$i]}" "/nix/var/nix/gcroots/$(basename "$BENCH_DIR")-$i"
done
# Same trees, same NAR: Nix's hashes and sizes must equal Ferry's.
for i in "${!NPATHS[@]}"; do
  nh="$(nixc nix-store -q --hash "${NPATHS[$i]}")"; ns="$(nixc nix-store -q --size "${NPATHS[$i]}")"
  fh="$(grep -F "${FPATHS[$i]} " "$LOGDIR/a.info" | cut -d' ' -f2)"
  fs="$(grep -F "${FPATHS[$i]} " "$LOGDIR/a.info" | cut -d' ' -f3)"
  [ "$nh $ns" = "$fh $fs" ] || die "NAR of ${NAMES[$i]} differs: nix $nh $ns, ferry $fh $fs"
done
nixc nix-store -q --hash "${NPATHS[@]}" > "$LOGDIR/nix-client.hashes"

# ------------------------------------------------------------------ describe
n_files="$(find "$TREES" -type f | wc -l)"
n_exec="$(find "$TREES" -type f -perm -u+x | wc -l)"
n_dirs="$(find "$TREES" -type d | wc -l)"
n_links="$(find "$TREES" -type l | wc -l)"
tree_bytes="$(find "$TREES" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%d", s}')"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
fsinfo="$(findmnt -n -o FSTYPE,OPTIONS -T "$BENCH_DIR" | head -1 | awk '{print $1, "(" $2 ")"}')"
journal=""; [ -d "/proc/fs/jbd2/$(basename "$(findmnt -n -o SOURCE -T "$BENCH_DIR" | head -1)")" ] || journal=", no journal"
nixfs="$(findmnt -n -o FSTYPE -T "$STATE" | head -1)"
MACHINE="$(nproc) vCPUs $cpu, $(uname -sr), $(free -g | awk '/^Mem:/{print $2}') GiB RAM; $BENCH_DIR on $fsinfo$journal; Nix stores under $STATE (same file system: $nixfs)"
say "# ferry archive bench $STAMP"
say "# machine: $MACHINE"
say "# tools: $("$FERRY" --version 2>/dev/null || echo ferry) ($FERRY) | $(nix-store --version)"
say "# data: ${#NAMES[@]} store paths, $tree_bytes bytes in $n_files regular files ($n_exec executable), $n_dirs directories, $n_links symlinks; NAR total $NAR_BYTES bytes"
while read -r p h s; do say "#   $(basename "$p") $s NAR bytes"; done < "$LOGDIR/a.info"
say "# runs=$RUNS"

# ------------------------------------------------------------------ rounds
wait_load() {
  local waited=0
  while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$MAX_LOAD" 'BEGIN{exit !(l > m)}'; do
    [ "$waited" -ge "$LOAD_WAIT" ] && { log "load still $(loadavg) after ${LOAD_WAIT}s; going on"; break; }
    sleep 5; waited=$((waited + 5))
  done
}

# Emptying the receiving stores. This ext4 has no journal, and then the
# kernel's inode allocator skips every free inode of a block group that was
# deleted less than 60 s ago (360 s while its inode-table block is dirty),
# checking each one in turn (fs/ext4/ialloc.c: recently_deleted()). Deleting
# the previous round's 5,200 files right before an import makes every file
# creation scan thousands of inodes: 0.5-0.8 ms per open(O_CREAT) instead of
# 20 us, 2-3 s per GiB, for Ferry and Nix alike and varying with which
# groups were hit. So nothing is deleted during the rounds: the previous
# copies are renamed into $GRAVE (same file system, inodes stay allocated)
# and deleted after the last round.
# The renamed copies' pages are then dropped from the page cache (after a
# sync, posix_fadvise(DONTNEED) on each file): otherwise every round grows
# the page cache by 2 GiB into memory this VM has never touched, and writing
# into never-touched guest memory costs ~1.2 s of extra sys time per GiB
# here (copy_folio_from_iter_atomic at 60 % of the importer's samples),
# against ~0.2 s when the kernel reuses freed pages. Both importers (Ferry's
# files; Nix's files and its in-memory copy of each NAR) get the same
# treatment.
GRAVE="$BENCH_DIR/graveyard"
mkdir -p "$GRAVE"
evict() {
  sync
  python3 - "$@" <<'PYEOF' || log "could not drop $* from the page cache (python3 missing?)"
import os, sys
for top in sys.argv[1:]:
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue          # symlinks
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
PYEOF
}
reset_b() {
  if [ -d "$STORE_B" ]; then mv "$STORE_B" "$GRAVE/ferry.$1"; evict "$GRAVE/ferry.$1"; fi
  rm -rf "$BENCH_DIR/b/state"
  mkdir -p "$STORE_B"
}
reset_b1() {
  local valid
  valid="$(nixb 1 nix-store --check-validity --print-invalid "${NPATHS[@]}" 2>/dev/null || true)"
  # --print-invalid lists the invalid ones; delete the others.
  local del=()
  for p in "${NPATHS[@]}"; do grep -qxF "$p" <<<"$valid" || del+=("$p"); done
  if [ "${#del[@]}" -gt 0 ]; then
    # Move the contents out of b1's store first (see above); `nix-store
    # --delete` then invalidates the paths and finds nothing to unlink.
    mkdir -p "$GRAVE/nix.$1"
    for p in "${del[@]}"; do
      if [ -e "$STATE/b1$p" ]; then mv "$STATE/b1$p" "$GRAVE/nix.$1/"; fi
    done
    evict "$GRAVE/nix.$1"
    nixb 1 nix-store --delete "${del[@]}" >/dev/null 2>&1 || die "nix-store --delete in b1 failed"
  fi
  if nixb 1 nix-store --check-validity "${NPATHS[0]}" >/dev/null 2>&1; then
    die "b1 still holds ${NPATHS[0]} after --delete"
  fi
}

# run_ferry TAG -> $LOGDIR/TAG.res: "wall rss_export_kib rss_import_kib"
run_ferry() {
  local tag="$1" t0 t1
  reset_b "$tag"
  sync
  wait_load
  echo "$tag loadavg before: $(loadavg)" >> "$LOGDIR/load"
  t0="$(now)"
  fa /usr/bin/time -o "$LOGDIR/$tag.exp.time" -f '%e %M %U %S' \
      "$FERRY" archive --export "${FPATHS[@]}" 2> "$LOGDIR/$tag.exp.err" \
    | fb /usr/bin/time -o "$LOGDIR/$tag.imp.time" -f '%e %M %U %S' \
      "$FERRY" archive --import > "$LOGDIR/$tag.imp.out" 2> "$LOGDIR/$tag.imp.err" \
    || die "ferry pipeline failed (see $LOGDIR/$tag.*.err)"
  t1="$(now)"
  # checks
  [ "$(sort "$LOGDIR/$tag.imp.out")" = "$(printf '%s\n' "${FPATHS[@]}" | sort)" ] \
    || die "ferry import printed other paths than exported (see $LOGDIR/$tag.imp.out)"
  fb "$FERRY" store verify > "$LOGDIR/$tag.verify" 2>&1 \
    || die "ferry store verify in B failed: $(cat "$LOGDIR/$tag.verify")"
  fb "$FERRY" store path-info --json "${FPATHS[@]}" > "$LOGDIR/$tag.b.json" \
    || die "path-info in B failed"
  info_lines "$LOGDIR/$tag.b.json" > "$LOGDIR/$tag.b.info"
  cmp -s "$LOGDIR/a.info" "$LOGDIR/$tag.b.info" \
    || die "NAR hashes/sizes in B differ from A's (see $LOGDIR/$tag.b.info)"
  res_line "$tag" "$t0" "$t1"
}

run_nix() {
  local tag="$1" t0 t1
  reset_b1 "$tag"
  sync
  wait_load
  echo "$tag loadavg before: $(loadavg)" >> "$LOGDIR/load"
  t0="$(now)"
  nixc /usr/bin/time -o "$LOGDIR/$tag.exp.time" -f '%e %M %U %S' \
      nix-store --export "${NPATHS[@]}" 2> "$LOGDIR/$tag.exp.err" \
    | nixb 1 /usr/bin/time -o "$LOGDIR/$tag.imp.time" -f '%e %M %U %S' \
      nix-store --import > "$LOGDIR/$tag.imp.out" 2> "$LOGDIR/$tag.imp.err" \
    || die "nix pipeline failed (see $LOGDIR/$tag.*.err)"
  t1="$(now)"
  [ "$(sort "$LOGDIR/$tag.imp.out")" = "$(printf '%s\n' "${NPATHS[@]}" | sort)" ] \
    || die "nix-store --import printed other paths (see $LOGDIR/$tag.imp.out)"
  nixb 1 nix-store --check-validity "${NPATHS[@]}" || die "b1 lacks paths after import"
  nixb 1 nix-store -q --hash "${NPATHS[@]}" > "$LOGDIR/$tag.b1.hashes"
  cmp -s "$LOGDIR/nix-client.hashes" "$LOGDIR/$tag.b1.hashes" || die "b1's NAR hashes differ from the client's"
  res_line "$tag" "$t0" "$t1"
}

# res_line TAG T0 T1 -> $LOGDIR/TAG.res:
#   "wall rss_export_kib rss_import_kib cpu_export_s cpu_import_s" (cpu = user+sys)
res_line() {
  local e i
  e="$(grep -E '^[0-9.]+ [0-9]+ [0-9.]+ [0-9.]+$' "$LOGDIR/$1.exp.time" | tail -1)"
  i="$(grep -E '^[0-9.]+ [0-9]+ [0-9.]+ [0-9.]+$' "$LOGDIR/$1.imp.time" | tail -1)"
  [ -n "$e" ] && [ -n "$i" ] || die "no /usr/bin/time figures for $1"
  awk -v a="$2" -v b="$3" -v e="$e" -v i="$i" 'BEGIN{
    split(e, E, " "); split(i, I, " ")
    printf "%.3f %d %d %.2f %.2f\n", b-a, E[2], I[2], E[3]+E[4], I[3]+I[4] }' > "$LOGDIR/$1.res"
}

show_res() {
  local tag="$1" w e i ce ci
  read -r w e i ce ci < "$LOGDIR/$tag.res"
  printf '%s: %s s, %s MiB/s, peak RSS export %.1f MiB, import %.1f MiB, CPU export %s s, import %s s\n' "$tag" "$w" \
    "$(awk -v b="$NAR_BYTES" -v t="$w" 'BEGIN{printf "%.0f", b/1048576/t}')" \
    "$(awk -v k="$e" 'BEGIN{print k/1024}')" "$(awk -v k="$i" 'BEGIN{print k/1024}')" "$ce" "$ci" | tee -a "$RESULTS" >&2
}

if [ "$WARMUP" = 1 ]; then
  log "warm-up (untimed): one round of each; uptime: $(uptime)"
  run_ferry warm.ferry; show_res warm.ferry
  run_nix warm.nix; show_res warm.nix
fi
for run in $(seq 1 "$RUNS"); do
  say "# round $run/$RUNS, uptime: $(uptime)"
  if [ $((run % 2)) = 1 ]; then order=(ferry nix); else order=(nix ferry); fi
  for tool in "${order[@]}"; do
    "run_$tool" "run$run.$tool"; show_res "run$run.$tool"
  done
done
LOAD_AFTER="$(loadavg)"
if [ "$KEEP_B" != 1 ]; then
  reset_b end
  reset_b1 end
  log "deleting $GRAVE (the previous rounds' copies)"
  rm -rf "$GRAVE"
fi

# ------------------------------------------------------------------ report
# stats TOOL -> "median min max max_rss_export max_rss_import
#                 median_cpu_export median_cpu_import" (RSS in KiB)
med() { sort -n | awk '{v[NR]=$1} END{printf "%.2f", (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
stats() {
  local all; all="$(for run in $(seq 1 "$RUNS"); do cat "$LOGDIR/run$run.$1.res"; done)"
  printf '%s %s %s\n' "$(sort -n -k1,1 <<<"$all" | awk '
    { t[NR]=$1; if ($2 > e) e=$2; if ($3 > i) i=$3 }
    END { m = (NR % 2) ? t[(NR+1)/2] : (t[NR/2] + t[NR/2+1]) / 2
          printf "%.3f %.3f %.3f %d %d", m, t[1], t[NR], e, i }')" \
    "$(awk '{print $4}' <<<"$all" | med)" "$(awk '{print $5}' <<<"$all" | med)"
}
declare -A MED MIN MAX RE RI CE CI
for tool in ferry nix; do
  read -r MED[$tool] MIN[$tool] MAX[$tool] RE[$tool] RI[$tool] CE[$tool] CI[$tool] < <(stats "$tool")
done
mibs() { awk -v b="$NAR_BYTES" -v t="$1" 'BEGIN{printf "%.0f", b/1048576/t}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }          # KiB -> MiB
bmib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }       # B -> MiB
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
TP_F="$(mibs "${MED[ferry]}")"; TP_N="$(mibs "${MED[nix]}")"
SPEEDUP="$(ratio "${MED[nix]}" "${MED[ferry]}")"     # = throughput ratio ferry/nix
LABEL_F='(`ferry archive --export` to `ferry archive --import`)'
LABEL_N='(`nix-store --export` to `nix-store --import`)'

TABLE="$(
  echo '| pipeline | median s | min s | max s | MiB/s (NAR/median) | peak RSS export MiB | peak RSS import MiB | CPU s export | CPU s import |'
  echo '|---|---:|---:|---:|---:|---:|---:|---:|---:|'
  printf '| ferry %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$LABEL_F" "${MED[ferry]}" "${MIN[ferry]}" "${MAX[ferry]}" "$TP_F" "$(mib "${RE[ferry]}")" "$(mib "${RI[ferry]}")" "${CE[ferry]}" "${CI[ferry]}"
  printf '| Nix 2.8 %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$LABEL_N" "${MED[nix]}" "${MIN[nix]}" "${MAX[nix]}" "$TP_N" "$(mib "${RE[nix]}")" "$(mib "${RI[nix]}")" "${CE[nix]}" "${CI[nix]}"
)"
max_item="$(awk '{if ($3 > m) m=$3} END{printf "%d", m}' "$LOGDIR/a.info")"
flat=MET
for k in "${RE[ferry]}" "${RI[ferry]}"; do
  awk -v k="$k" -v t="$FLAT_RSS_MIB" 'BEGIN{exit !(k/1024 < t)}' || flat="NOT MET"
done
tp_goal=MET
awk -v s="$SPEEDUP" 'BEGIN{exit !(s >= 1.5)}' || tp_goal="NOT MET"

say ""
say "# loadavg after: $LOAD_AFTER"
say "$TABLE"
say "# throughput ratio ferry/nix (= nix median / ferry median): ${SPEEDUP}x"
say "# peak RSS ratio ferry/nix: export $(ratio "${RE[ferry]}" "${RE[nix]}"), import $(ratio "${RI[ferry]}" "${RI[nix]}"); largest item's NAR: $(bmib "$max_item") MiB"
say ""
emit data.paths "${#NAMES[@]}" count
emit data.files "$n_files" count
emit data.dirs "$n_dirs" count
emit data.symlinks "$n_links" count
emit data.bytes "$tree_bytes" B
emit data.nar_bytes "$NAR_BYTES" B
emit data.largest_item_nar "$max_item" B
for tool in ferry nix; do
  emit "$tool.median" "${MED[$tool]}" s
  emit "$tool.min" "${MIN[$tool]}" s
  emit "$tool.max" "${MAX[$tool]}" s
  emit "$tool.throughput" "$(mibs "${MED[$tool]}")" MiB/s
  emit "$tool.peak_rss_export" "$(mib "${RE[$tool]}")" MiB
  emit "$tool.peak_rss_import" "$(mib "${RI[$tool]}")" MiB
  emit "$tool.cpu_export" "${CE[$tool]}" s
  emit "$tool.cpu_import" "${CI[$tool]}" s
done
emit ratio.throughput_ferry_over_nix "$SPEEDUP" x
emit ratio.rss_export_ferry_over_nix "$(ratio "${RE[ferry]}" "${RE[nix]}")" x
emit ratio.rss_import_ferry_over_nix "$(ratio "${RI[ferry]}" "${RI[nix]}")" x
say "goal: throughput >= 1.5x Nix: ${SPEEDUP}x: $tp_goal"
say "goal: memory flat (each ferry side < $FLAT_RSS_MIB MiB peak RSS with items up to $(bmib "$max_item") MiB): export $(mib "${RE[ferry]}") MiB, import $(mib "${RI[ferry]}") MiB: $flat"
say "# results: $RESULTS ; per-run logs: $LOGDIR"

# ------------------------------------------------------------ BENCHMARKS.md
if [ "$APPEND" = 1 ]; then
  {
    echo
    echo "## Export + import of a 1 GiB closure, ferry vs Nix 2.8"
    echo
    echo "Generated by \`bench/archive.sh\` ($STAMP; see its header for the method)."
    echo
    echo "Command (as root):"
    echo
    echo "    RUNS=$RUNS bench/archive.sh"
    echo
    echo "Machine: $MACHINE; $(nix-store --version)."
    echo
    echo "Data: ${#NAMES[@]} store paths (exported together, no references between them),"
    echo "$tree_bytes bytes in $n_files regular files ($n_exec executable), $n_dirs directories,"
    echo "$n_links symlinks; $NAR_BYTES NAR bytes; items from $(bmib "$(awk 'NR==1{m=$3} {if ($3 < m) m=$3} END{print m}' "$LOGDIR/a.info")") to $(bmib "$max_item") MiB of NAR"
    echo "(many small files in nested directories, medium files, a few large files,"
    echo "executables, symlinks; contents AES-CTR, incompressible)."
    echo
    echo "Ferry: store A -> store B (B empty each round, in its own mount namespace"
    echo "with its directory bind-mounted at A's store path), bundle signed by A's key,"
    echo "verified against B's ACL. Nix: the peer's client store (export through its"
    echo "nix-daemon) -> builder b1's store (local store, as root; the paths are"
    echo "deleted with \`nix-store --delete\` before each round, after their contents"
    echo "were renamed out of the store: see the script's header on why nothing is"
    echo "deleted during the rounds)."
    echo "Wall time of the whole pipeline; peak RSS (/usr/bin/time %M) of each side's"
    echo "process (for Nix's export: the nix-store client, not the daemon worker)."
    echo "Checked each round: all paths valid on the receiving side with the sender's"
    echo "NAR hashes; \`ferry store verify\` clean in B. Nix's and Ferry's NAR hashes of"
    echo "the 8 trees are equal."
    echo
    echo "Load (1/5/15-min loadavg) before each timed pipeline:"
    echo
    sed 's/^/    /' "$LOGDIR/load"
    echo
    echo "$TABLE"
    echo
    echo "Per round (warm = untimed warm-up):"
    echo
    grep -E '^(warm|run[0-9]+)\.' "$RESULTS" | sed 's/^/    /'
    echo
    grep -E '^[a-z_]+\.[a-z_.]+: ' "$RESULTS" | grep -vE '^(warm|run[0-9]+)\.' | sed 's/^/    /'
    echo
    echo "Goals:"
    echo "- throughput at least 1.5x Nix's: ${SPEEDUP}x: $tp_goal"
    echo "- memory flat (each ferry side < $FLAT_RSS_MIB MiB, items up to $(bmib "$max_item") MiB): export $(mib "${RE[ferry]}") MiB, import $(mib "${RI[ferry]}") MiB: $flat"
  } >> "$ROOT/BENCHMARKS.md"
  log "appended to $ROOT/BENCHMARKS.md"
fi
