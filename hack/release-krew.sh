#!/usr/bin/env bash
# Fills the krew manifest of kubectl pam for a release from its archives.
#
#   hack/release-krew.sh [--output FILE] [--url-base URL] [--template FILE] VERSION ARCHIVE_DIR
#
# ARCHIVE_DIR holds one archive per platform of the template
# (crates/kubectl-pam/krew/pam.yaml), named as hack/package-plugin.sh makes
# them: kubectl-pam_v<version>_<os>_<arch>.tar.gz, .zip on windows. Each must
# hold the `from` files krew copies (kubectl-pam, kubectl-pam.exe on windows,
# and kubectl_complete-pam beside it on linux and darwin). The manifest gets
# the version, the download URLs (--url-base, by default the GitHub release
# https://github.com/kubepam/kubepam/releases/download/v<version>) and each
# archive's sha256, and is written to FILE (by default ARCHIVE_DIR/pam.yaml;
# - for stdout). It refuses, writing nothing, when an archive is missing or
# lacks a file, or when a {{ placeholder would be left in the manifest.
#
# Try it before publishing: kubectl krew install --manifest=ARCHIVE_DIR/pam.yaml \
#   --archive=ARCHIVE_DIR/kubectl-pam_v<version>_<os>_<arch>.tar.gz
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  echo "usage: $(sed -n '4p' "${BASH_SOURCE[0]}" | sed 's/^# *//')" >&2
  exit 2
}
die() {
  echo "release-krew.sh: $*" >&2
  exit 1
}

output="" url_base="" template="$root/crates/kubectl-pam/krew/pam.yaml"
positional=()
while (($#)); do
  case "$1" in
    -o | --output) output="${2:?--output needs a value}"; shift 2 ;;
    --url-base) url_base="${2:?--url-base needs a value}"; shift 2 ;;
    --template) template="${2:?--template needs a value}"; shift 2 ;;
    -h | --help) usage ;;
    -?*) echo "release-krew.sh: unknown option $1" >&2; usage ;;
    *) positional+=("$1"); shift ;;
  esac
done
((${#positional[@]} == 2)) || usage
version="${positional[0]#v}"
dir="${positional[1]}"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] ||
  die "version '${positional[0]}' is not a semantic version (like 0.1.0)"
[[ -d "$dir" ]] || die "no archive directory $dir"
[[ -f "$template" ]] || die "no manifest template $template"
url_base="${url_base:-https://github.com/kubepam/kubepam/releases/download/v$version}"
url_base="${url_base%/}"
output="${output:-$dir/pam.yaml}"

if command -v sha256sum >/dev/null; then
  sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null; then
  sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
  die "needs sha256sum (or shasum)"
fi

# The archive's file names, one a line.
list_archive() {
  case "$1" in
    *.zip)
      if command -v unzip >/dev/null; then
        unzip -Z1 "$1"
      elif command -v python3 >/dev/null; then
        python3 -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$1"
      else
        die "reading $1 needs unzip or python3"
      fi
      ;;
    *) tar -tzf "$1" ;;
  esac
}

# Replaces {{NAME}} in the manifest with the value, taken literally: passed in variables,
# neither quotes nor (with patsub_replacement off) & in the value are special.
fill() {
  local placeholder="{{$1}}" value="$2"
  manifest="${manifest//$placeholder/$value}"
}

# The template's leading comment is about the template; the manifest starts after it.
manifest="$(awk 'body || !/^#/ { body = 1; print }' "$template")"
# The platforms are those the template names, so it alone decides them.
platforms="$(grep -o '{{SHA256_[a-z0-9]*_[a-z0-9]*}}' <<<"$manifest" | sed 's/{{SHA256_\(.*\)}}/\1/' | sort -u)"
[[ -n "$platforms" ]] || die "$template names no {{SHA256_<os>_<arch>}} placeholder"

problems=()
for platform in $platforms; do
  os="${platform%%_*}"
  if [[ "$os" == windows ]]; then
    archive="$dir/kubectl-pam_v${version}_$platform.zip"
    needed=(kubectl-pam.exe)
  else
    archive="$dir/kubectl-pam_v${version}_$platform.tar.gz"
    needed=(kubectl-pam kubectl_complete-pam)
  fi
  if [[ ! -f "$archive" ]]; then
    problems+=("missing archive for ${platform/_//}: $archive")
    continue
  fi
  if ! contents="$(list_archive "$archive" 2>&1)"; then
    problems+=("cannot read $archive: $contents")
    continue
  fi
  for file in "${needed[@]}"; do
    grep -qx "\(\./\)\{0,1\}$file" <<<"$contents" || problems+=("$archive has no $file at its root")
  done
  fill "SHA256_$platform" "$(sha256 "$archive")"
done
if ((${#problems[@]})); then
  printf 'release-krew.sh: %s\n' "${problems[@]}" >&2
  die "no manifest written"
fi

fill VERSION "$version"
fill URL_BASE "$url_base"
if left="$(grep '{{' <<<"$manifest")"; then
  echo "release-krew.sh: placeholders left unfilled in the manifest from $template:" >&2
  echo "$left" >&2
  die "no manifest written"
fi

if [[ "$output" == - ]]; then
  printf '%s\n' "$manifest"
else
  tmp="$(mktemp "$(dirname "$output")/.pam.yaml.XXXXXX")"
  printf '%s\n' "$manifest" >"$tmp"
  chmod 0644 "$tmp"
  mv "$tmp" "$output"
  echo "release-krew.sh: wrote $output for v$version" >&2
fi
