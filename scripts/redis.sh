#!/usr/bin/env bash
# Installs (Debian package) and starts or stops a local Redis 7 on loopback.
# Append-only file on: the change stream (docs/authors.md, Change events) outlives a
# restart or a kill -9 of Redis (each write reaches the file before Redis answers it;
# everysec fsyncs, so only a crash of the machine can take the last second).
# Usage: redis.sh start|stop|status
source "$(dirname "$0")/lib.sh"
REDIS_PORT="${REDIS_PORT:-6379}"
state="${GATEHOUSE_STATE:-$HOME/.local/state/gatehouse}/redis"
cmd="${1:-start}"
apt_install redis-server
mkdir -p "$state"
running() { redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
case "$cmd" in
  status) running && echo online || { echo down; exit 1; } ;;
  stop) running && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1; exit 0 ;;
  start)
    if ! running; then
      redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
        --dir "$state" --pidfile "$state/redis.pid" --logfile "$state/redis.log" \
        --save "" --appendonly yes --appendfsync everysec --maxclients 10000
      for _ in $(seq 1 50); do running && break; sleep 0.1; done
    fi
    running || { log "redis did not start; see $state/redis.log"; exit 1; }
    log "redis ready on 127.0.0.1:$REDIS_PORT"
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
