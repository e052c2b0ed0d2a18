# The builder of every derivation of bench/soak.sh (run by /bin/sh in the
# sandbox; PATH=/bin:/usr/bin comes from the derivation's env).
#
# Environment: soakName, soakDur (seconds to sleep), soakSize (bytes),
# soakFill (one letter), soakInputs (the input derivations' output paths,
# space-separated, in the order of the DAG file).
#
# The output, a deterministic function of the name, the size and the
# inputs' contents (bench/soak.sh recomputes it without running this):
#   SOAKNAME size=SIZE dur=DUR
#   in FIRST-LINE-OF-INPUT CKSUM-OF-INPUT SIZE-OF-INPUT     (one per input)
#   then soakFill repeated up to SIZE bytes (if the lines are shorter)
set -eu
sleep "$soakDur"
{
  printf '%s size=%s dur=%s\n' "$soakName" "$soakSize" "$soakDur"
  for f in $soakInputs; do
    printf 'in %s %s\n' "$(head -n 1 "$f")" "$(cksum <"$f")"
  done
} >"$out"
have=$(wc -c <"$out")
if [ "$soakSize" -gt "$have" ]; then
  head -c "$((soakSize - have))" /dev/zero | tr '\0' "$soakFill" >>"$out"
fi
