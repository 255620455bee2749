#!/usr/bin/env bash
# Packages a built kubectl-pam into the release archive krew downloads:
#   <out-dir>/kubectl-pam_v<version>_<os>_<arch>.tar.gz   (.zip on windows)
# with the binary at the archive's root, and beside it on linux and darwin
# kubectl_complete-pam, the helper kubectl's own shell completion runs
# (crates/kubectl-pam/krew/kubectl_complete-pam).
#
#   hack/package-plugin.sh [--os OS] [--arch ARCH] [--binary PATH] VERSION [OUT_DIR]
#
# By default it packages target/release/kubectl-pam (kubectl-pam.exe on
# windows) for the host's os and arch, so a release builds on each platform
#   cargo build --release --locked -p kubectl-pam && hack/package-plugin.sh 0.1.0 dist
# and then fills the krew manifest from the collected archives with
#   hack/release-krew.sh 0.1.0 dist
# --os/--arch/--binary package a cross-compiled binary instead (os: linux,
# darwin, windows; arch: amd64, arm64). VERSION may carry a leading v.
# OUT_DIR defaults to dist/ and is created. Prints the archive's path.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
helper="$root/crates/kubectl-pam/krew/kubectl_complete-pam"

usage() {
  echo "usage: $(sed -n '8p' "${BASH_SOURCE[0]}" | sed 's/^# *//')" >&2
  exit 2
}
die() {
  echo "package-plugin.sh: $*" >&2
  exit 1
}

os="" arch="" binary=""
positional=()
while (($#)); do
  case "$1" in
    --os) os="${2:?--os needs a value}"; shift 2 ;;
    --arch) arch="${2:?--arch needs a value}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a value}"; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "package-plugin.sh: unknown option $1" >&2; usage ;;
    *) positional+=("$1"); shift ;;
  esac
done
((${#positional[@]} >= 1 && ${#positional[@]} <= 2)) || usage
version="${positional[0]#v}"
out_dir="${positional[1]:-$root/dist}"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] ||
  die "version '${positional[0]}' is not a semantic version (like 0.1.0)"

if [[ -z "$os" ]]; then
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    MINGW* | MSYS* | CYGWIN*) os=windows ;;
    *) die "unknown host os $(uname -s); give --os" ;;
  esac
fi
if [[ -z "$arch" ]]; then
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) die "unknown host arch $(uname -m); give --arch" ;;
  esac
fi
case "$os/$arch" in
  linux/amd64 | linux/arm64 | darwin/amd64 | darwin/arm64 | windows/amd64) ;;
  *) die "$os/$arch is not a platform of the krew manifest" ;;
esac

exe=kubectl-pam
[[ "$os" == windows ]] && exe=kubectl-pam.exe
binary="${binary:-$root/target/release/$exe}"
[[ -f "$binary" ]] || die "no binary at $binary (build it: cargo build --release -p kubectl-pam)"

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$binary" "$stage/$exe"
chmod 0755 "$stage/$exe"
files=("$exe")

name="kubectl-pam_v${version}_${os}_${arch}"
if [[ "$os" == windows ]]; then
  archive="$out_dir/$name.zip"
  rm -f "$archive"
  if command -v zip >/dev/null; then
    (cd "$stage" && zip -q -X "$archive" "${files[@]}")
  elif command -v python3 >/dev/null; then
    (cd "$stage" && python3 -m zipfile -c "$archive" "${files[@]}")
  else
    die "making $archive needs zip or python3"
  fi
else
  cp "$helper" "$stage/kubectl_complete-pam"
  chmod 0755 "$stage/kubectl_complete-pam"
  files+=(kubectl_complete-pam)
  archive="$out_dir/$name.tar.gz"
  tar -czf "$archive" -C "$stage" "${files[@]}"
fi
echo "$archive"
