# Sourced by the launch scripts: run a command in the background into log.txt (the model zoo's way),
# or in the foreground with FOREGROUND=1, still keeping log.txt.
#   LOG_FILE   where the output goes (default: ./log.txt)
#   FOREGROUND 1 to wait for the run and print its output as well

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_FILE=${LOG_FILE:-log.txt}

launch() {
  if [ "${FOREGROUND:-0}" = "1" ]; then
    set -o pipefail
    "$@" 2>&1 | tee "$LOG_FILE"
  else
    nohup "$@" > "$LOG_FILE" 2>&1 &
    echo "running in the background (pid $!): follow it with  tail -f $LOG_FILE"
  fi
}
