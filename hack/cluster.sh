#!/usr/bin/env bash
# A real local Kubernetes control plane: etcd + kube-apiserver on loopback,
# with client-certificate users and RBAC, built from pinned versions.
#
#   hack/cluster.sh up   [--dir DIR] [--owner-pid PID]   start (or reuse) a cluster
#   hack/cluster.sh down [--dir DIR]                     stop it and remove its state
#   hack/cluster.sh status [--dir DIR]                   exit 0 when it answers
#
# DIR defaults to .dev in the repository; the kubeconfig is DIR/kubeconfig with
# one context per identity (admin, alice, bob, carol, dave, ci-bot, operator).
# With --owner-pid, a watchdog stops the cluster as soon as that process exits,
# so a test run that panics or is killed never leaves servers behind.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"; shift || true
dir="$root/.dev"
owner_pid=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --owner-pid) owner_pid="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pki="$dir/pki"
run="$dir/run"
logs="$dir/logs"
kubeconfig="$dir/kubeconfig"

log() { echo "cluster: $*" >&2; }

# identity name | username | groups (comma separated)
identities=(
  "admin|admin|system:masters"
  "alice|alice|developers"
  "bob|bob|pam-approvers"
  "carol|carol|pam-approvers"
  "dave|dave|developers,ops-approvers"
  "ci-bot|system:serviceaccount:ci:deployer|system:serviceaccounts,system:serviceaccounts:ci"
  "operator|system:serviceaccount:kubepam-system:kubepam|system:serviceaccounts,system:serviceaccounts:kubepam-system"
)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

apiserver_ready() {
  [[ -f "$run/apiserver.port" ]] || return 1
  curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$(cat "$run/apiserver.port")/readyz" >/dev/null 2>&1
}

# Whether pid is still a process of this cluster (it names DIR on its command
# line): a pid file left by a crash or a reboot may name someone else's now.
ours() { # pid
  [[ "$1" =~ ^[0-9]+$ ]] || return 1
  local cmd; cmd="$( { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null)" || return 1
  [[ "$cmd" == *"$dir/"* || "$cmd" == *"$dir "* ]]
}

stop_pid() { # pidfile
  local f="$1"
  [[ -f "$f" ]] || return 0
  local pid; pid="$(cat "$f")"
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

make_pki() {
  mkdir -p "$pki"
  [[ -f "$pki/ca.crt" ]] && return 0
  local ossl=(openssl)
  "${ossl[@]}" req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kubepam-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  # Serving certificate of the apiserver, valid for loopback.
  "${ossl[@]}" req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$pki/apiserver.ext"
  "${ossl[@]}" x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  # Service-account token signing keys.
  "${ossl[@]}" genrsa -out "$pki/sa.key" 2048 2>/dev/null
  "${ossl[@]}" rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  # One client certificate per identity: CN = username, O = groups.
  printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
  local entry name user groups subj g
  for entry in "${identities[@]}"; do
    IFS='|' read -r name user groups <<<"$entry"
    subj="/CN=$user"
    IFS=',' read -ra gs <<<"$groups"
    for g in "${gs[@]}"; do subj="$subj/O=$g"; done
    "${ossl[@]}" req -newkey rsa:2048 -nodes -subj "$subj" \
      -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
    "${ossl[@]}" x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -CAcreateserial -days 3650 -extfile "$pki/client.ext" -out "$pki/$name.crt" 2>/dev/null
  done
  rm -f "$pki"/*.csr
}

# The client certificate the API server presents to admission webhooks,
# from a CA of its own: kubepam (--webhook-client-ca-file) trusts that CA for
# nothing but the API server, so nobody else can call its webhooks.
make_webhook_client_pki() {
  [[ -f "$pki/webhook-client-ca.crt" ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kubepam-local-webhook-client-ca" \
    -keyout "$pki/webhook-client-ca.key" -out "$pki/webhook-client-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver-webhook-client" \
    -keyout "$pki/apiserver-webhook-client.key" -out "$pki/apiserver-webhook-client.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$pki/webhook-client.ext"
  openssl x509 -req -in "$pki/apiserver-webhook-client.csr" -CA "$pki/webhook-client-ca.crt" \
    -CAkey "$pki/webhook-client-ca.key" -CAcreateserial -days 3650 -extfile "$pki/webhook-client.ext" \
    -out "$pki/apiserver-webhook-client.crt" 2>/dev/null
  rm -f "$pki"/*.csr
}

# The API server's AdmissionConfiguration: its client certificate for every
# webhook, and kubepam's static admission policy (manifests/static-admission),
# which no API call can change or delete.
write_admission_config() {
  local admission="$dir/admission"
  mkdir -p "$admission/static"
  cp "$root"/manifests/static-admission/*.yaml "$admission/static/"
  cat >"$admission/webhook-kubeconfig.yaml" <<EOF
apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: $pki/apiserver-webhook-client.crt
    client-key: $pki/apiserver-webhook-client.key
EOF
  cat >"$admission/config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $admission/webhook-kubeconfig.yaml
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $admission/webhook-kubeconfig.yaml
- name: ValidatingAdmissionPolicy
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: ValidatingAdmissionPolicyConfiguration
    staticManifestsDir: $admission/static
EOF
}

write_kubeconfig() {
  local port="$1" b64="base64 -w0"
  {
    echo "apiVersion: v1"
    echo "kind: Config"
    echo "clusters:"
    echo "- name: kubepam-local"
    echo "  cluster:"
    echo "    server: https://127.0.0.1:$port"
    echo "    certificate-authority-data: $($b64 <"$pki/ca.crt")"
    echo "users:"
    local entry name user groups
    for entry in "${identities[@]}"; do
      IFS='|' read -r name user groups <<<"$entry"
      echo "- name: $name"
      echo "  user:"
      echo "    client-certificate-data: $($b64 <"$pki/$name.crt")"
      echo "    client-key-data: $($b64 <"$pki/$name.key")"
    done
    echo "contexts:"
    for entry in "${identities[@]}"; do
      IFS='|' read -r name user groups <<<"$entry"
      echo "- name: $name"
      echo "  context:"
      echo "    cluster: kubepam-local"
      echo "    user: $name"
    done
    echo "current-context: admin"
  } >"$kubeconfig.tmp"
  chmod 600 "$kubeconfig.tmp"
  mv "$kubeconfig.tmp" "$kubeconfig"
}

up() {
  if pid_alive "$run/apiserver.pid" && pid_alive "$run/etcd.pid" && apiserver_ready; then
    log "reusing the running cluster at https://127.0.0.1:$(cat "$run/apiserver.port") ($dir)"
    echo "$kubeconfig"
    return 0
  fi
  down_quiet
  local bin; bin="$("$root/hack/build-controlplane.sh")"
  local start=$SECONDS
  mkdir -p "$run" "$logs"
  make_pki
  make_webhook_client_pki
  write_admission_config

  local etcd_port peer_port api_port
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
  rm -rf "$dir/etcd"
  setsid "$bin/etcd" --name local --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "local=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level warn \
    </dev/null >"$logs/etcd.log" 2>&1 &
  echo $! >"$run/etcd.pid"
  echo "$etcd_port" >"$run/etcd.port"
  for _ in $(seq 1 300); do
    curl -sf --max-time 1 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"' && break
    pid_alive "$run/etcd.pid" || { log "etcd exited; see $logs/etcd.log"; tail -20 "$logs/etcd.log" >&2; exit 1; }
    sleep 0.1
  done

  setsid "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode RBAC \
    --service-cluster-ip-range 10.0.0.0/24 \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --disable-admission-plugins ServiceAccount \
    --admission-control-config-file "$dir/admission/config.yaml" \
    --feature-gates ManifestBasedAdmissionControlConfig=true \
    --allow-privileged=true \
    --profiling=false \
    </dev/null >"$logs/kube-apiserver.log" 2>&1 &
  echo $! >"$run/apiserver.pid"
  echo "$api_port" >"$run/apiserver.port"
  for _ in $(seq 1 1200); do
    apiserver_ready && break
    pid_alive "$run/apiserver.pid" || { log "kube-apiserver exited; see $logs/kube-apiserver.log"; tail -20 "$logs/kube-apiserver.log" >&2; exit 1; }
    sleep 0.1
  done
  apiserver_ready || { log "kube-apiserver not ready after 120s; see $logs/kube-apiserver.log"; exit 1; }
  write_kubeconfig "$api_port"

  if [[ -n "$owner_pid" ]]; then
    # Stops the cluster when the owner exits, however it exits.
    setsid bash -c 'while kill -0 "$0" 2>/dev/null; do sleep 0.5; done; exec "$1" down --dir "$2"' \
      "$owner_pid" "$root/hack/cluster.sh" "$dir" </dev/null >/dev/null 2>&1 &
    echo $! >"$run/watchdog.pid"
  fi
  log "ready at https://127.0.0.1:$api_port in $((SECONDS - start))s; kubeconfig: $kubeconfig"
  echo "$kubeconfig"
}

# The servers of this cluster found by their command line (they name files
# under DIR), kube-apiserver first: a pid file can be stale or gone (a test
# restarts kube-apiserver; a crashed run leaves files behind).
servers_of_dir() { # binary name
  local p cmd
  for p in /proc/[0-9]*; do
    cmd="$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" || continue
    [[ "$cmd" == *"/$1 "*"$dir/"* ]] && echo "${p#/proc/}"
  done
  return 0
}

stop_servers() { # binary name: TERM, then KILL after 10 s
  local pids; pids="$(servers_of_dir "$1")"
  [[ -z "$pids" ]] && return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 100); do
    [[ -z "$(servers_of_dir "$1")" ]] && return 0
    sleep 0.1
  done
  pids="$(servers_of_dir "$1")"
  # shellcheck disable=SC2086
  [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
}

down_quiet() {
  # kube-apiserver before etcd: without etcd it can ignore SIGTERM for long.
  stop_pid "$run/apiserver.pid"
  stop_servers kube-apiserver
  stop_pid "$run/etcd.pid"
  stop_servers etcd
  rm -rf "$dir/etcd" "$run"/*.port
}

down() {
  # The watchdog may be the caller; stop it last and never ourselves.
  down_quiet
  if [[ -f "$run/watchdog.pid" ]]; then
    local w; w="$(cat "$run/watchdog.pid")"
    rm -f "$run/watchdog.pid"
    [[ "$w" != "$PPID" && "$w" != "$$" ]] && ours "$w" && kill "$w" 2>/dev/null || true
  fi
  rm -f "$kubeconfig"
  log "stopped ($dir)"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) apiserver_ready && pid_alive "$run/etcd.pid" ;;
  *) echo "usage: $0 up|down|status [--dir DIR] [--owner-pid PID]" >&2; exit 2 ;;
esac
