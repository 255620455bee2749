#!/usr/bin/env bash
# The local demo: a real control plane, kubepam installed and running in the
# background with its webhooks registered, and what to try as alice and bob.
#
#   hack/demo.sh up     start it all (again: reuses what is running)
#   hack/demo.sh down   stop kubepam and the control plane, leave nothing behind
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev="${KUBEPAM_DEV_DIR:-$root/.dev}"
webhook_port="${WEBHOOK_PORT:-18443}"
metrics_port="${METRICS_PORT:-18080}"
pid_file="$dev/kubepam.pid"
log_file="$dev/kubepam.log"

running() { [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

# One line per stage, and how long it took: the first run builds a lot.
stage_start=0
stage() { stage_start=$SECONDS; echo "==> $*"; }
stage_done() { echo "    done in $((SECONDS - stage_start))s"; }

up() {
  if [[ ! -x "$root/target/release/kubepam" ]]; then
    cat <<'EOF'
First run: kube-apiserver, etcd and kubectl are built from the Go module proxy
(several minutes on 2 cores, then cached in ~/.cache/kubepam), and kubepam and
kubectl-pam are compiled in release mode (about 6 minutes on 2 cores; cargo
shows its progress). Later runs take seconds.
EOF
  fi
  stage "control plane: build (once, then cached) and start"
  "$root/hack/cluster.sh" up --dir "$dev" >/dev/null
  local bin kubectl
  bin="$("$root/hack/build-controlplane.sh" 2>/dev/null)"
  kubectl="$bin/kubectl --kubeconfig $dev/kubeconfig --context admin"
  stage_done
  stage "install the CRDs, namespace and RBAC (hack/local)"
  $kubectl apply --server-side -k "$root/hack/local/" >/dev/null
  $kubectl wait --for condition=Established --timeout 60s -f "$root/crds/kubepam.io.yaml" >/dev/null
  stage_done
  stage "build kubepam and kubectl-pam (release)"
  (cd "$root" && cargo build --release --package kubepam --package kubectl-pam)
  stage_done
  stage "start kubepam and wait until its webhooks are registered"

  if running; then
    echo "kubepam already running (pid $(cat "$pid_file"))"
  else
    # setsid: kubepam outlives this script and is stopped by `down`.
    setsid "$root/target/release/kubepam" run \
      --kubeconfig "$dev/kubeconfig" --context operator --instance demo \
      --webhook-bind "127.0.0.1:$webhook_port" --webhook-url "https://127.0.0.1:$webhook_port" \
      --webhook-client-ca-file "$dev/pki/webhook-client-ca.crt" \
      --metrics-bind "127.0.0.1:$metrics_port" --log-format text \
      </dev/null >"$log_file" 2>&1 &
    echo $! >"$pid_file"
  fi
  local waited=0
  until curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 \
    && $kubectl get validatingwebhookconfiguration kubepam >/dev/null 2>&1; do
    if ! running; then
      echo "kubepam stopped; its log ($log_file) ends with:" >&2
      tail -20 "$log_file" >&2
      exit 1
    fi
    ((waited++ < 300)) || { echo "kubepam not ready after 30 s; see $log_file" >&2; exit 1; }
    sleep 0.1
  done
  stage_done

  cat <<EOF

kubepam is running: log $log_file, metrics http://127.0.0.1:$metrics_port/metrics
Identities: admin (cluster admin), alice (developer), bob and carol (approvers,
group pam-approvers), dave, ci-bot. In another terminal:

  export KUBECONFIG=$dev/kubeconfig PATH=$root/target/release:$bin:\$PATH

  # admin turns PAM on and says who approves deleting Deployments in prod
  kubectl pam --context admin enable --approver-group pam-approvers
  kubectl --context admin create namespace prod
  kubectl pam --context admin policy create prod-delete-deployments \\
      --task 'delete deployments.apps' -n prod --approval Manual

  # alice has no standing right; she asks for one, for 30 minutes
  kubectl --context alice auth can-i delete deployments.apps -n prod        # no
  kubectl pam --context alice request prod-delete-deployments \\
      --reason 'INC-1234: remove the stuck canary' --duration 30m --wait &

  # bob sees what waits for him and approves it (NAME from the list)
  kubectl pam --context bob list --to-review
  kubectl pam --context bob approve NAME -m 'go ahead'

  # alice now may, until the window ends; everything is on the record
  kubectl --context alice auth can-i delete deployments.apps -n prod        # yes
  kubectl pam --context alice status NAME
  kubectl --context admin get events --field-selector involvedObject.name=NAME

  # carol takes it back early
  kubectl pam --context carol revoke NAME -m 'done'
  kubectl --context alice auth can-i delete deployments.apps -n prod        # no

Stop everything: make demo-down
EOF
}

down() {
  if running; then
    local pid
    pid="$(cat "$pid_file")"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "kubepam stopped"
  fi
  rm -f "$pid_file"
  "$root/hack/cluster.sh" down --dir "$dev"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
