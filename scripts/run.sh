#!/usr/bin/env bash
# Runs the whole platform natively under supervisord: Keycloak, Traefik, Prometheus,
# Alertmanager and its alert receiver, Jaeger (traces), VictoriaLogs and its log shipper
# (logs), and the four services (replicas from
# GATEWAY_REPLICAS, AUTHORS_REPLICAS, AUDIT_REPLICAS, RATELIMIT_REPLICAS), plus
# PostgreSQL and Redis through their own scripts.
# Usage:
#   run.sh [up]         start, wait until ready, print the URLs; Ctrl-C stops everything
#   run.sh up -d        the same, then return and leave it running (detached)
#   run.sh down         stop a running stack (PostgreSQL and Redis keep running)
#   run.sh status       the state of every program
#   run.sh ctl ARGS...  supervisorctl ARGS (e.g. `ctl restart gateway:gateway-0`)
# State (logs, generated configuration, Prometheus and Alertmanager data, the supervisord
# socket) lives in ${GATEHOUSE_STATE:-~/.local/state/gatehouse}; delete it to start afresh.
source "$(dirname "$0")/lib.sh"
export GATEHOUSE_REPO="$REPO_ROOT"
export GATEHOUSE_STATE="${GATEHOUSE_STATE:-$HOME/.local/state/gatehouse}"
export GATEWAY_REPLICAS="${GATEWAY_REPLICAS:-1}" AUTHORS_REPLICAS="${AUTHORS_REPLICAS:-1}"
export AUDIT_REPLICAS="${AUDIT_REPLICAS:-1}" RATELIMIT_REPLICAS="${RATELIMIT_REPLICAS:-1}"
export GATEHOUSE_TLS_DIR="$GATEHOUSE_STATE/tls"
# Traefik's internal entrypoints (8081-8083) listen on this address, rendered into its
# static configuration by scripts/traefik-config.sh; only 8080 and 8443 listen on every
# interface.
export GATEHOUSE_INTERNAL_BIND_ADDRESS="${GATEHOUSE_INTERNAL_BIND_ADDRESS:-127.0.0.1}"
# supervisorctl only reads the [supervisorctl] section, but expands every ENV_ it sees.
export TRAEFIK_BIN="${TRAEFIK_BIN:-unset}"
conf="$REPO_ROOT/deploy/supervisor/supervisord.conf"
venv_bin="$REPO_ROOT/.venv/bin"

ctl() { "$venv_bin/supervisorctl" -c "$conf" "$@"; }
# A live supervisord of this state directory, by its pid file: not by asking it through
# supervisorctl, whose failure (a busy socket, a configuration it cannot expand) would
# read as "not running" and start a second stack over the first.
running() {
  local pid
  pid="$(cat "$GATEHOUSE_STATE/supervisord.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -S "$GATEHOUSE_STATE/supervisor.sock" ] \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q supervisord
}

stop_stack() {
  running || return 0
  log "stopping (services drain first, then the edge)"
  local pid
  pid="$(cat "$GATEHOUSE_STATE/supervisord.pid" 2>/dev/null || true)"
  ctl shutdown >/dev/null || true
  # shutdown returns at once; wait for supervisord to stop its children and exit.
  while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  log "stopped"
}

print_urls() {
  cat <<TEXT

Gatehouse is running ($GATEWAY_REPLICAS gateway, $AUTHORS_REPLICAS authors, $AUDIT_REPLICAS audit, $RATELIMIT_REPLICAS ratelimit replicas)
  API and WebSocket   http://localhost:8080   (https://localhost:8443, development certificate)
  API docs            http://localhost:8080/docs
  Keycloak (public)   http://localhost:8080/auth/realms/gatehouse
  Keycloak admin      http://127.0.0.1:8180/auth/admin   (kcadmin / kcadmin-dev-password, loopback only)
  gRPC (internal)     $GATEHOUSE_INTERNAL_HOST:8081   (:authority authors | audit | ratelimit)
  metrics (internal)  http://$GATEHOUSE_INTERNAL_HOST:8082/metrics/<process>/<replica>
  Traefik dashboard   http://$GATEHOUSE_INTERNAL_HOST:8083/dashboard/
  Prometheus          http://127.0.0.1:9090
  Jaeger (traces)     http://127.0.0.1:16686   (query API /api/traces/<trace id>; OTLP 127.0.0.1:4317)
  VictoriaLogs (logs) http://127.0.0.1:9428/select/vmui   (LogsQL API /select/logsql/query; docs/logging.md)
  Alertmanager        http://127.0.0.1:9093
  alert receiver      http://127.0.0.1:9095/notifications
  logs                $GATEHOUSE_STATE/logs
TEXT
  print_dev_users
}

# One start or stop at a time (several test sessions may ask for the stack at once).
# The lock is fd 9 of this shell only: every program started under it gets `9>&-`, so
# no daemon keeps it once this shell lets go. Its holder is written into the lock file.
lockfile="$GATEHOUSE_STATE/run.lock"
lock() {
  mkdir -p "$GATEHOUSE_STATE"
  exec 9<>"$lockfile"  # opened without truncating: the holder's line stays readable
  if ! flock -n 9; then
    log "waiting for the lock ($lockfile), held by: $(head -n 1 "$lockfile" 2>/dev/null || echo unknown)"
    if ! flock -w "${GATEHOUSE_LOCK_WAIT_SECONDS:-300}" 9; then
      log "gave up after ${GATEHOUSE_LOCK_WAIT_SECONDS:-300}s; the holder is: $(head -n 1 "$lockfile" 2>/dev/null || echo unknown)"
      exit 4
    fi
  fi
  printf 'pid %s: run.sh %s (since %s)\n' "$$" "$*" "$(date -u +%H:%M:%SZ)" >"$lockfile"
}
unlock() { : >"$lockfile"; exec 9>&-; }

up() {
  local detached="$1" started
  started=$(date +%s)
  lock "up$([ "$detached" = yes ] && echo ' -d')"
  if running; then
    if [ "$detached" = yes ]; then
      log "already running; checking readiness"
      # The running stack's replica counts, whatever this shell asked for.
      set -a; source "$GATEHOUSE_STATE/replicas.env"; set +a
      GATEHOUSE_INTERNAL_HOST="${GATEHOUSE_INTERNAL_HOST:-127.0.0.1}"
      "$venv_bin/python" "$REPO_ROOT/scripts/stack_ready.py" --timeout 180
      unlock
      print_urls
      return 0
    fi
    log "already running (detached); stop it with: bash scripts/run.sh down"
    exit 1
  fi
  # Traefik's static configuration first: a bad bind address stops here, before anything starts.
  bash "$REPO_ROOT/scripts/traefik-config.sh" "$GATEHOUSE_STATE/traefik/traefik.yml"
  # The address this host's own clients (the gateway, Prometheus, the readiness probes)
  # dial for the internal entrypoints: loopback when they listen on every interface.
  export GATEHOUSE_INTERNAL_HOST="$GATEHOUSE_INTERNAL_BIND_ADDRESS"
  [ "$GATEHOUSE_INTERNAL_HOST" != 0.0.0.0 ] || GATEHOUSE_INTERNAL_HOST=127.0.0.1
  export GATEWAY_AUTHORS_TARGET="${GATEWAY_AUTHORS_TARGET:-$GATEHOUSE_INTERNAL_HOST:8081}"
  export GATEWAY_AUDIT_TARGET="${GATEWAY_AUDIT_TARGET:-$GATEHOUSE_INTERNAL_HOST:8081}"
  export GATEWAY_RATELIMIT_TARGET="${GATEWAY_RATELIMIT_TARGET:-$GATEHOUSE_INTERNAL_HOST:8081}"
  # Install only what is missing (make run has already run bootstrap.sh).
  if ! command -v prometheus >/dev/null 2>&1 || [ ! -x /usr/bin/prometheus-alertmanager ] || ! command -v uv >/dev/null 2>&1 || [ ! -x "$venv_bin/supervisord" ]; then
    bash "$REPO_ROOT/scripts/bootstrap.sh" 9>&-
  fi
  TRAEFIK_BIN="$(bash "$REPO_ROOT/scripts/install-traefik.sh" 9>&-)"
  bash "$REPO_ROOT/scripts/install-keycloak.sh" >/dev/null 9>&-
  bash "$REPO_ROOT/scripts/install-jaeger.sh" >/dev/null 9>&-
  bash "$REPO_ROOT/scripts/install-victorialogs.sh" >/dev/null 9>&-
  bash "$REPO_ROOT/scripts/install-otelcol.sh" >/dev/null 9>&-
  bash "$REPO_ROOT/scripts/install-vmalert.sh" >/dev/null 9>&-
  # PostgreSQL and Redis outlive this shell: they must not inherit the lock.
  bash "$REPO_ROOT/scripts/postgres.sh" start 9>&-
  bash "$REPO_ROOT/scripts/redis.sh" start 9>&-
  mkdir -p "$GATEHOUSE_STATE/logs" "$GATEHOUSE_STATE/prometheus/data" "$GATEHOUSE_STATE/alertmanager/data"
  bash "$REPO_ROOT/scripts/dev-cert.sh" "$GATEHOUSE_TLS_DIR"
  bash "$REPO_ROOT/scripts/prometheus-targets.sh" "$GATEHOUSE_STATE/prometheus/targets" "$GATEHOUSE_INTERNAL_HOST:8082"
  # What is running, for later `up -d` calls and for the test harness.
  printf 'GATEWAY_REPLICAS=%s\nAUTHORS_REPLICAS=%s\nAUDIT_REPLICAS=%s\nRATELIMIT_REPLICAS=%s\nGATEHOUSE_INTERNAL_HOST=%s\n' \
    "$GATEWAY_REPLICAS" "$AUTHORS_REPLICAS" "$AUDIT_REPLICAS" "$RATELIMIT_REPLICAS" \
    "$GATEHOUSE_INTERNAL_HOST" > "$GATEHOUSE_STATE/replicas.env"
  # The stack's tracing settings (docs/tracing.md), read again at each start of Traefik and
  # of every replica: edited, they apply to the programs restarted after.
  for name in TRACING_ENABLED TRACING_SAMPLE_RATIO TRACING_OTLP_ENDPOINT; do
    [ -z "${!name+set}" ] || printf '%s=%q\n' "$name" "${!name}"
  done > "$GATEHOUSE_STATE/tracing.env"
  # Prometheus resolves targets/ and rules/ beside its configuration file.
  ln -sfn "$REPO_ROOT/deploy/prometheus/prometheus.yml" "$GATEHOUSE_STATE/prometheus/prometheus.yml"
  ln -sfn "$REPO_ROOT/deploy/prometheus/rules" "$GATEHOUSE_STATE/prometheus/rules"
  log "starting supervisord (logs in $GATEHOUSE_STATE/logs)"
  # In the foreground, Ctrl-C stops everything, even before the stack is ready.
  [ "$detached" = yes ] || trap 'echo; stop_stack; exit 0' INT TERM
  # supervisord must not inherit the lock.
  "$venv_bin/supervisord" -c "$conf" 9>&-
  if ! "$venv_bin/python" "$REPO_ROOT/scripts/stack_ready.py" --timeout "${GATEHOUSE_READY_TIMEOUT:-180}"; then
    ctl status || true
    log "not ready in time; see the logs in $GATEHOUSE_STATE/logs"
    [ "$detached" = yes ] || stop_stack
    exit 1
  fi
  log "ready in $(($(date +%s) - started))s"
  print_urls
  unlock
  [ "$detached" = yes ] && return 0
  echo "Ctrl-C stops everything."
  # Wait in the background so that the trap runs as soon as a signal arrives.
  while running; do sleep 2 & wait $! || true; done
  log "supervisord has exited"
}

cmd="${1:-up}"
case "$cmd" in
  up) if [ "${2:-}" = "-d" ]; then up yes; else up no; fi ;;
  down) lock down; stop_stack; unlock ;;
  status) if running; then ctl status; else echo "not running"; exit 3; fi ;;
  ctl) shift; ctl "$@" ;;
  *) echo "usage: $0 [up [-d] | down | status | ctl ARGS...]" >&2; exit 2 ;;
esac
