#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the pinned tools modules into a
# cache outside the work tree, keyed by version. A second run reuses the cache.
# Prints the bin directory on stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/controlplane.env
source "$root/hack/controlplane.env"

cache="${KUBEPAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubepam}"
bin="$cache/controlplane/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION/bin"
mkdir -p "$bin"

k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$KUBERNETES_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$k8s_minor -X $version_pkg.gitTreeState=clean"

build() { # module-dir package output [ldflags]
  local dir="$1" pkg="$2" out="$3" flags="${4:-}"
  if [[ -x "$bin/$out" ]]; then
    echo "reusing $bin/$out" >&2
    return
  fi
  echo "building $out from $pkg (first build takes several minutes)" >&2
  local start=$SECONDS
  (cd "$root/hack/controlplane/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go build -trimpath -ldflags "$flags" -o "$bin/$out.tmp" "$pkg")
  mv "$bin/$out.tmp" "$bin/$out"
  echo "built $out in $((SECONDS - start))s" >&2
}

build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$ldflags"
build kubernetes k8s.io/kubernetes/cmd/kubectl kubectl "$ldflags"
build etcd go.etcd.io/etcd/server/v3 etcd "-s -w"

echo "$bin"
