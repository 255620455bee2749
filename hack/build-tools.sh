#!/usr/bin/env bash
# Builds helm and promtool from the Go module proxy at the versions pinned in
# hack/tools.env, into a cache outside the work tree keyed by version, and
# fetches cert-manager's CRDs (the install tests validate against them).
# A second run reuses the cache. Prints the bin directory on stdout; the CRDs
# are in its sibling directory `cert-manager-crds/`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/tools.env
source "$root/hack/tools.env"

cache="${KUBEPAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubepam}"
dir="$cache/tools/helm-$HELM_VERSION-k8s-1.$HELM_KUBERNETES_MINOR-prometheus-$PROMETHEUS_MODULE_VERSION-cert-manager-$CERT_MANAGER_VERSION"
bin="$dir/bin"
mkdir -p "$bin"

# Every module is checked against the checksum database, whatever this
# machine's Go settings say (an empty variable would not override them, so the
# exclusions name a pattern that matches nothing).
go_verified() {
  GOSUMDB=sum.golang.org GONOSUMDB=none.invalid GOPRIVATE=none.invalid \
    GOINSECURE=none.invalid GOWORK=off CGO_ENABLED=0 go "$@"
}

build() { # package@version output ldflags
  local pkg="$1" out="$2" flags="$3"
  local module="${pkg%@*}" version="${pkg##*@}"
  # Reuse only a whole binary built from that module at that version.
  if [[ -x "$bin/$out" ]] && go version -m "$bin/$out" 2>/dev/null \
    | awk -v m="$module" -v v="$version" '$1 == "path" && $2 == m { p = 1 } $1 == "mod" && $3 == v { ok = 1 } END { exit !(p && ok) }'; then
    echo "reusing $bin/$out" >&2
    return
  fi
  echo "building $out from $module (first build takes a few minutes)" >&2
  local start=$SECONDS work
  work="$(mktemp -d "$bin/.build-XXXXXX")"
  # `go install pkg@version` builds the module as its own main module, with
  # the go.sum it publishes. Built beside its place and renamed into it, so an
  # interrupted build never leaves a partial binary to be reused.
  if ! GOBIN="$work" go_verified install -trimpath -ldflags "$flags" "$pkg"; then
    rm -rf "$work"
    exit 1
  fi
  mv "$work/$(basename "$module")" "$bin/$out"
  rm -rf "$work"
  echo "built $out in $((SECONDS - start))s" >&2
}

# v0.316.0 is Prometheus 3.16.0.
module_minor="${PROMETHEUS_MODULE_VERSION#v0.}"; module_minor="${module_minor%%.*}"
prometheus_version="3.$((module_minor - 300)).${PROMETHEUS_MODULE_VERSION##*.}"
# As helm's own release build: its default Kubernetes version for `template`
# and `lint` is that of its client-go, not 1.20.
helm_k8s="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_KUBERNETES_MINOR"
helm_k8s+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_KUBERNETES_MINOR"
build "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $helm_k8s"
build "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION" promtool \
  "-s -w -X github.com/prometheus/common/version.Version=$prometheus_version"

crds="$dir/cert-manager-crds"
if [[ ! -f "$crds/cert-manager.io_certificates.yaml" ]]; then
  echo "fetching cert-manager $CERT_MANAGER_VERSION CRDs from the Go module proxy" >&2
  module="$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod go_verified mod download -json \
    "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION")"
  source_dir="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["Dir"])' <<<"$module")"
  rm -rf "$crds" "$crds.tmp"
  mkdir -p "$crds.tmp"
  cp "$source_dir"/deploy/crds/*cert-manager.io_*.yaml "$crds.tmp/"
  chmod u+w "$crds.tmp"/*
  mv "$crds.tmp" "$crds"
fi

echo "$bin"
