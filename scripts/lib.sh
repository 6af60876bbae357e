# Common settings for the install and start scripts; sourced, never run.
set -euo pipefail
GATEHOUSE_CACHE="${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$GATEHOUSE_CACHE"
# Programs the bootstrap put into the cache (uv, when the machine has none) come after
# the machine's own.
PATH="$PATH:$GATEHOUSE_CACHE/bin"
# The pinned Go toolchain builds, never a newer one that a go.mod would ask for.
export GOTOOLCHAIN=local
log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]} (Debian packages, first run only, a minute or two)"
  # apt's lock is shared by parallel installers; wait for it rather than fail.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" 2>&1 >/dev/null |
    sed '/^debconf: delaying package configuration/d' >&2
}
# Runs a slow command and says every 30 s that it still runs: ticking WHAT COMMAND...
# (the ticker also stops when this script is gone).
ticking() {
  local what=$1 start=$SECONDS rc=0 ticker; shift
  (
    trap 'kill $! 2>/dev/null; exit 0' TERM
    while sleep 30 & wait $! && kill -0 $$ 2>/dev/null; do
      log "still $what ($((SECONDS - start)) s)"
    done
  ) >/dev/null &
  ticker=$!
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$rc"
}
# Runs a Go build given with -v and, instead of the package names it prints, says every
# 30 s how many packages it has compiled (of TOTAL, when known); other lines (errors) pass
# through: go_progress WHAT TOTAL GO-COMMAND...
go_progress() {
  local what=$1 of=${2:+ of $2} start=$SECONDS next=30 n=0 modules=0 line; shift 2
  "$@" 2>&1 | while IFS= read -r line; do
    case $line in
      "go: downloading "*) modules=$((modules + 1)) ;;
      *" "* | "#"*) printf '%s\n' "$line" >&2 ;;
      *) n=$((n + 1)) ;;
    esac
    if [ $((SECONDS - start)) -ge $next ]; then
      if [ $n -eq 0 ]; then
        log "$what: $modules modules downloaded ($((SECONDS - start)) s)"
      else
        log "$what: $n$of packages compiled ($((SECONDS - start)) s)"
      fi
      next=$((next + 30))
    fi
  done
}
# Builds a Go command from its module at a pinned version into the cache, once, and prints
# its path: go_tool NAME PACKAGE VERSION MINUTES (e.g. go_tool buf
# github.com/bufbuild/buf/cmd/buf v1.75.0 3), MINUTES being the first build's rough time.
go_tool() {
  local name=$1 package=$2 version=$3 minutes=$4 go
  local dir="$GATEHOUSE_CACHE/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    go="$(bash "$REPO_ROOT/scripts/install-go.sh")"
    log "building $name $version from its Go module (first run only, about $minutes min on 2 cores)"
    GOBIN="$dir" GOFLAGS=-mod=mod CGO_ENABLED=0 go_progress "$name" "" "$go" install -v "$package@$version"
  fi
  echo "$dir/$name"
}
# Fails with what to do when `docker compose` or a Docker engine is missing.
docker_ready() {
  if ! docker compose version >/dev/null 2>&1; then
    log "the Compose v2 CLI is not installed as a Docker CLI plugin (\`docker compose\` fails):" \
      "bash scripts/docker-engine.sh install links the one of the project's Python dependencies"
    return 1
  fi
  if ! docker info >/dev/null 2>&1; then
    log "no Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST}: bash scripts/docker-engine.sh start"
    return 1
  fi
}
# The realm's development users, as `make run` and `make compose-up` print them.
print_dev_users() {
  cat <<TEXT

Development users (realm gatehouse, client gatehouse-web; passwords are for development only):
  admin    admin-dev-password     every role
  editor   editor-dev-password    get-authors create-author update-author delete-author
  viewer   viewer-dev-password    get-authors
  auditor  auditor-dev-password   view-audit-logs
  nobody   nobody-dev-password    no role
TEXT
}
