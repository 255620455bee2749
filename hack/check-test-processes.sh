#!/usr/bin/env bash
# Fails when a process started by the test suites outlives them: every
# control plane and kubepam the tests start names a file under
# target/test-clusters/ on its command line. A cluster's watchdog needs a few
# seconds to stop it after its test binary exits, so survivors get a grace
# period; what is still there after it is listed, killed, and fails the run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
marker="$root/target/test-clusters/"
grace="${1:-30}"

survivors() {
  local p cmd
  for p in /proc/[0-9]*; do
    [[ "${p#/proc/}" == "$$" ]] && continue
    cmd="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" || continue
    # Servers and operators, not the watchdogs that are stopping them.
    [[ "$cmd" == *"$marker"* && "$cmd" != bash\ -c* && "$cmd" != *cluster.sh\ down* ]] \
      && echo "${p#/proc/}"
  done
  return 0
}

deadline=$((SECONDS + grace))
while [[ -n "$(survivors)" && $SECONDS -lt $deadline ]]; do sleep 0.5; done
left="$(survivors)"
if [[ -z "$left" ]]; then
  echo "test processes: none left running"
  exit 0
fi
echo "processes started by the tests still run ${grace}s after the suites ended:" >&2
# shellcheck disable=SC2086
ps -o pid,etimes,args -p "$(echo $left | tr ' ' ',')" | cut -c1-200 >&2 || true
# shellcheck disable=SC2086
kill -KILL $left 2>/dev/null || true
exit 1
