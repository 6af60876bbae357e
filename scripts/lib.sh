# Common settings for the install and start scripts; sourced, never run.
set -euo pipefail
GATEHOUSE_CACHE="${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$GATEHOUSE_CACHE"
log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  # apt's lock is shared by parallel installers; wait for it rather than fail.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
# Builds a Go command from its module at a pinned version into the cache, once, and prints
# its path: go_tool NAME PACKAGE VERSION (e.g. go_tool buf github.com/bufbuild/buf/cmd/buf v1.75.0).
go_tool() {
  local name=$1 package=$2 version=$3
  local dir="$GATEHOUSE_CACHE/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    log "building $name $version (first run only)"
    GOBIN="$dir" GOFLAGS=-mod=mod go install "$package@$version" >&2
  fi
  echo "$dir/$name"
}
