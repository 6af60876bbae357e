#!/usr/bin/env bash
# The compose stack (docker-compose.yml) with the images `make images` chose:
#   compose.sh up      scripts/images.sh, then `docker compose up --wait` (every container
#                      started and healthy), then the URLs
#   compose.sh down    stops the stack and removes its containers, networks and volumes
#   compose.sh ARGS... `docker compose ARGS` with those images (e.g. `ps`, `logs traefik`)
# The image names come from $GATEHOUSE_STATE/compose/images.env (written by
# scripts/images.sh); the published ports are GATEHOUSE_COMPOSE_*_PORT (docker-compose.yml),
# the native ones + 10000 by default, so that `make run`'s stack may run beside it.
source "$(dirname "$0")/lib.sh"
env_file="${GATEHOUSE_STATE:-$HOME/.local/state/gatehouse}/compose/images.env"

docker_ready
compose() {
  (
    set -a
    # shellcheck disable=SC1090  # written by scripts/images.sh
    [ ! -f "$env_file" ] || source "$env_file"
    set +a
    docker compose -f "$REPO_ROOT/docker-compose.yml" "$@"
  )
}
# The address on the host of a published container port: published SERVICE PORT.
published() { compose port "$1" "$2" | sed 's/^0\.0\.0\.0:/localhost:/'; }

print_urls() {
  local web https keycloak
  web=$(published traefik 8080) https=$(published traefik 8443) keycloak=$(published keycloak 8180)
  cat <<TEXT

Gatehouse is running in containers (docker compose project gatehouse, one replica of each service)
  API and WebSocket   http://$web   (https://$https, development certificate)
  API docs            http://$web/docs
  Keycloak (public)   http://$web/auth/realms/gatehouse
  Keycloak admin      http://$keycloak/auth/admin   (kcadmin / kcadmin-dev-password, loopback only)
  gRPC (internal)     $(published traefik 8081)   (:authority authors | audit | ratelimit)
  metrics (internal)  http://$(published traefik 8082)/metrics/<process>/<replica>
  Traefik dashboard   http://$(published traefik 8083)/dashboard/
  Prometheus          http://$(published prometheus 9090)
  Alertmanager        http://$(published alertmanager 9093)
  alert receiver      http://$(published alertmanager 9095)/notifications
TEXT
  if compose ps --services | grep -qx grafana; then
    echo "  Grafana             http://$(published grafana 3000)   (admin / grafana-dev-password)"
  else
    echo "  Grafana             not running (its image cannot be had here; see make images)"
  fi
  cat <<TEXT
  logs                bash scripts/compose.sh logs <service>
  stop                make compose-down (removes containers, networks and volumes)
TEXT
  print_dev_users
}

case "${1:-}" in
  up)
    bash "$REPO_ROOT/scripts/images.sh"
    log "starting the compose stack and waiting until every container is healthy (about a minute)"
    if ! ticking "starting the compose stack" compose up -d --wait --no-build --remove-orphans --quiet-pull; then
      compose ps -a >&2
      compose logs --tail 20 >&2
      log "the compose stack did not come up (above: its containers and their last log lines)"
      exit 1
    fi
    print_urls ;;
  down)
    compose --profile grafana down --volumes --remove-orphans --timeout 30 ;;
  "")
    echo "usage: $0 up|down|ARGS..." >&2; exit 2 ;;
  *)
    compose "$@" ;;
esac
