#!/usr/bin/env bash
# `make images`: the project image and every third-party image docker-compose.yml names.
# Each third-party image is the one the compose file names (its upstream name, or what
# GATEHOUSE_<SERVICE>_IMAGE says): used when the engine has it or can pull it; otherwise an
# equivalent is built from Debian's archive and from the programs `make run` uses, under
# the local name $GATEHOUSE_LOCAL_IMAGES/<name>:<tag> (never under the upstream name), and
# this script says so and which versions it holds. Grafana has no such equivalent: without
# a registry the stack runs without it. The names chosen are written to
# $GATEHOUSE_STATE/compose/images.env, read by scripts/compose.sh and the test harness.
#   GATEHOUSE_BASE_IMAGE     Debian 12 base of the equivalents (default: the BASE_IMAGE of
#                            deploy/images/*/Dockerfile, debian:bookworm-slim); where it
#                            cannot be had, made by mmdebstrap from Debian's archive
#                            (the sources of /etc/apt/sources.list.d/debian.sources when
#                            present) and `docker import`
#   GATEHOUSE_PYTHON_IMAGE   base of the project image (default: the Dockerfile's
#                            PYTHON_IMAGE, python:3.11-slim-bookworm)
#   GATEHOUSE_CA_CERTS       a directory of extra certificate authorities (*.crt) that
#                            the images made here trust, for builds behind an HTTPS proxy
#                            that re-signs traffic (default /usr/local/share/ca-certificates,
#                            the host's own additions)
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
docker_ready
state="${GATEHOUSE_STATE:-$HOME/.local/state/gatehouse}/compose"
env_file="$state/images.env"
local_prefix="${GATEHOUSE_LOCAL_IMAGES:-gatehouse-local}"
ca_certs="${GATEHOUSE_CA_CERTS:-/usr/local/share/ca-certificates}"
mkdir -p "$state"
built=() missing=()

have() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }
arg_default() { sed -n "s/^ARG $2=//p" "$1" | head -n 1; }
# The image the compose file names for a service, with every profile active.
wanted() {
  docker compose --profile grafana config --format json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["services"][sys.argv[1]]["image"])' "$1"
}
# The tag of an image name (what follows the last colon after the last slash).
tag_of() { local name=${1##*/}; echo "${name#*:}"; }
build() {
  local name=$1 dir=$2 context=${3:-$2}
  docker_build "$name" --build-arg "BASE_IMAGE=$base" -f "$dir/Dockerfile" -t "$name" "$context"
}
# docker build with the classic builder (the only one Debian's docker.io has), quietly;
# its output only when it fails: docker_build WHAT ARGS...
docker_build() {
  local what=$1 out; shift
  out=$(mktemp)
  if ! ticking "building $what" docker build --force-rm "$@" >"$out" 2>&1; then
    cat "$out" >&2; rm -f "$out"; return 1
  fi
  rm -f "$out"
}

base="${GATEHOUSE_BASE_IMAGE:-$(arg_default deploy/images/python/Dockerfile BASE_IMAGE)}"
ensure_base() {
  [ -z "${base_ready:-}" ] || return 0
  base_ready=1
  have "$base" && return 0
  local upstream=$base sources=http://deb.debian.org/debian hooks=()
  base="$local_prefix/debian:bookworm"
  docker image inspect "$base" >/dev/null 2>&1 && return 0
  command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
  [ -f /etc/apt/sources.list.d/debian.sources ] && sources=/etc/apt/sources.list.d/debian.sources
  if compgen -G "$ca_certs/*.crt" >/dev/null; then
    hooks=(--customize-hook="copy-in $(echo "$ca_certs"/*.crt) /usr/local/share/ca-certificates/"
      --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1')
  fi
  log "$upstream cannot be had: making $base with mmdebstrap from Debian's archive (about a minute)"
  # Without documentation, manual pages and translations, as Debian's slim images.
  mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' "${hooks[@]}" bookworm - "$sources" |
    docker import --change 'CMD ["bash"]' - "$base" >/dev/null
  built+=("$base|Debian 12 minbase with ca-certificates$([ ${#hooks[@]} -eq 0 ] || echo " and the certificate authorities of $ca_certs"), instead of $upstream")
}

# Runs a command in an image and prints its first line of output: version IMAGE COMMAND...
version() { docker run --rm --entrypoint "$2" "$1" "${@:3}" 2>&1 | sed -n 1p; }

# Sets `chosen` to the image that runs SERVICE (empty when none can be had).
third_party() {
  local service=$1 image upstream tag context
  image="$(wanted "$service")" chosen=""
  if have "$image"; then chosen=$image; return 0; fi
  upstream=$image tag=$(tag_of "$image")
  case $service in
    grafana)
      missing+=("$upstream: no registry answers and Debian packages no Grafana; the stack runs without it (profile grafana)")
      return 0 ;;
  esac
  ensure_base
  image="$local_prefix/$service:$tag"
  log "$upstream cannot be had: building $image"
  case $service in
    traefik)
      context=$(mktemp -d) && cp "$(bash scripts/install-traefik.sh)" "$context/traefik"
      build "$image" deploy/images/traefik "$context" && rm -rf "$context"
      built+=("$image|instead of $upstream: $(version "$image" /usr/local/bin/traefik version | awk '{print $2}') built by scripts/install-traefik.sh from its Go module (upstream: the release binary), on Debian 12 (upstream: Alpine)") ;;
    keycloak)
      context=$(mktemp -d)
      cp -a "$(bash scripts/java-home.sh)" "$context/java"
      cp -a "$(bash scripts/install-keycloak.sh)" "$context/keycloak"
      rm -rf "${context:?}/keycloak/data" "$context/keycloak/build.log" && mkdir "$context/keycloak/data"
      build "$image" deploy/images/keycloak "$context" && rm -rf "$context"
      built+=("$image|instead of $upstream: the same distribution from Maven Central, pre-built for make run's options, on $(version "$image" /opt/java/bin/java -version) and Debian 12 (upstream: OpenJDK 21 on UBI 9)") ;;
    postgres)
      build "$image" deploy/images/postgres
      built+=("$image|instead of $upstream: $(version "$image" postgres --version) (upstream: the latest 15.x built by the PostgreSQL project), on Debian 12") ;;
    redis)
      build "$image" deploy/images/redis
      built+=("$image|instead of $upstream: $(version "$image" redis-server --version | awk '{print $3}') from Debian 12 (upstream: the latest 7.x)") ;;
    jaeger)
      context=$(mktemp -d) && cp "$(bash scripts/install-jaeger.sh)" "$context/jaeger"
      build "$image" deploy/images/jaeger "$context" && rm -rf "$context"
      built+=("$image|instead of $upstream: the same version built by scripts/install-jaeger.sh from its Go module (upstream: the release binary, with the UI embedded; here a placeholder UI), on Debian 12 (upstream: Alpine)") ;;
    victoria-logs)
      context=$(mktemp -d) && cp "$(bash scripts/install-victorialogs.sh)" "$context/victoria-logs"
      build "$image" deploy/images/victoria-logs "$context" && rm -rf "$context"
      built+=("$image|instead of $upstream: the same version built by scripts/install-victorialogs.sh from its Go module (upstream: the release binary), on Debian 12 (upstream: scratch)") ;;
    otelcol)
      context=$(mktemp -d) && cp "$(bash scripts/install-otelcol.sh)" "$context/otelcol"
      build "$image" deploy/images/otelcol "$context" && rm -rf "$context"
      built+=("$image|instead of $upstream: the log shipper scripts/install-otelcol.sh built from deploy/otelcol/manifest.yaml, its components of the same release (upstream: every contrib component), on Debian 12") ;;
    vmalert)
      context=$(mktemp -d) && cp "$(bash scripts/install-vmalert.sh)" "$context/vmalert"
      build "$image" deploy/images/vmalert "$context" && rm -rf "$context"
      built+=("$image|instead of $upstream: the same version built by scripts/install-vmalert.sh from the VictoriaMetrics Go module (upstream: the release binary), on Debian 12 (upstream: Alpine)") ;;
    prometheus)
      build "$image" deploy/images/prometheus
      built+=("$image|instead of $upstream: $(version "$image" /usr/bin/prometheus --version | awk '{print $3}') from Debian 12 (built with Debian's Go; the web UI from Debian's packaging)") ;;
    alertmanager)
      build "$image" deploy/images/alertmanager
      built+=("$image|instead of $upstream: $(version "$image" /usr/bin/prometheus-alertmanager --version | awk '{print $3}') from Debian 12 (built with Debian's Go)") ;;
  esac
  chosen=$image
}

images=()
for service in postgres redis keycloak traefik jaeger victoria-logs otelcol vmalert prometheus alertmanager grafana; do
  third_party "$service"
  [ -z "$chosen" ] || images+=("GATEHOUSE_$(tr a-z- A-Z_ <<<"$service")_IMAGE=$chosen")
done
python_image="${GATEHOUSE_PYTHON_IMAGE:-$(arg_default Dockerfile PYTHON_IMAGE)}"
if ! have "$python_image"; then
  ensure_base
  upstream=$python_image python_image="$local_prefix/python:3.11-bookworm"
  log "$upstream cannot be had: building $python_image"
  build "$python_image" deploy/images/python
  built+=("$python_image|instead of $upstream: $(version "$python_image" python3 --version) from Debian 12 (upstream: the latest 3.11 built by the image's maintainers)")
fi
project="$(wanted gateway-0)"
log "building $project (the four services) on $python_image"
docker_build "$project" --build-arg "PYTHON_IMAGE=$python_image" -t "$project" .
{
  echo "# Written by scripts/images.sh: the images docker-compose.yml runs here."
  printf '%s\n' "${images[@]}"
  echo "GATEHOUSE_IMAGE=$project"
  echo "GATEHOUSE_PYTHON_IMAGE=$python_image"
  if [ ${#missing[@]} -eq 0 ]; then echo "COMPOSE_PROFILES=grafana"; fi
} >"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
size() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }
log "$project: $(size "$project")"
for line in "${built[@]}"; do log "built ${line%%|*} ($(size "${line%%|*}")): ${line#*|}"; done
for line in "${missing[@]}"; do log "not had: $line"; done
log "image names in $env_file"
