#!/usr/bin/env bash
# Fails when a process started by the test suites outlives them: every
# kube-apiserver, etcd and kubepam the tests start names a file under
# target/test-clusters/ on its command line. A cluster's watchdog needs a few
# seconds to stop it after its test binary exits, so survivors get a grace
# period; what is still there after it is listed, killed, and fails the run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
marker="$root/target/test-clusters/"
grace="${1:-30}"

# Only the programs the tests start (servers and operators): not the
# watchdogs stopping them, nor someone's `tail -f` of a test log.
survivors() {
  local p cmd program
  for p in /proc/[0-9]*; do
    cmd="$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" || continue
    program="${cmd%% *}"
    case "${program##*/}" in
      kube-apiserver|etcd|kubepam) [[ "$cmd" == *"$marker"* ]] && echo "${p#/proc/}" ;;
    esac
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
