# Sourced by the bench scripts. stage NAME COMMAND...: runs the command unless OUT/done/NAME exists
# (a finished stage of an earlier run), appends "NAME<TAB>seconds" to OUT/times.tsv and marks it done,
# so a script run again on the same OUT goes on after its last finished stage. Needs $OUT.
stage() {
  local name=$1 start=$SECONDS marker=$OUT/done/${1// /_}; shift
  if [[ -f $marker ]]; then echo "== $name: done in an earlier run ($marker), skipped"; return; fi
  echo "== $name: $*"
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - start)) | tee -a "$OUT/times.tsv"
  touch "$marker"
}
