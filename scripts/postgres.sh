#!/usr/bin/env bash
# Installs (Debian packages) and starts or stops the local PostgreSQL 15 cluster, then
# makes sure the `gatehouse` role and the `authors` and `audit` databases exist.
# PostgreSQL refuses to run as root, so the cluster runs as the postgres user.
# Usage: postgres.sh start|stop|status
source "$(dirname "$0")/lib.sh"
PG_VERSION=15
PG_PORT="${PG_PORT:-5432}"
cmd="${1:-start}"
apt_install "postgresql-$PG_VERSION" postgresql-contrib
[ -d "/etc/postgresql/$PG_VERSION/main" ] || pg_createcluster "$PG_VERSION" main --port "$PG_PORT" >/dev/null
running() { pg_lsclusters -h | awk -v v="$PG_VERSION" '$1==v && $2=="main" {print $4}' | grep -q online; }
as_pg() { su postgres -s /bin/sh -c "$*"; }
case "$cmd" in
  status) running && echo online || { echo down; exit 1; } ;;
  stop) running && pg_ctlcluster "$PG_VERSION" main stop -m fast; exit 0 ;;
  start)
    if ! running; then
      # Tuned for tests and development on a small machine, not for durability.
      cat > "/etc/postgresql/$PG_VERSION/main/conf.d/gatehouse.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = '256MB'
fsync = off
synchronous_commit = off
full_page_writes = off
# Loopback only: TLS would protect nothing here and costs CPU on every statement.
ssl = off
CONF
      pg_ctlcluster "$PG_VERSION" main start
    fi
    for _ in $(seq 1 50); do as_pg "pg_isready -q -h 127.0.0.1 -p $PG_PORT" && break; sleep 0.2; done
    as_pg "psql -q -p $PG_PORT -h /var/run/postgresql" <<'SQL'
SELECT 'CREATE ROLE gatehouse LOGIN SUPERUSER PASSWORD ''gatehouse'''
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gatehouse')\gexec
SELECT 'CREATE DATABASE authors OWNER gatehouse'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'authors')\gexec
SELECT 'CREATE DATABASE audit OWNER gatehouse'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'audit')\gexec
SQL
    log "postgresql $PG_VERSION ready on 127.0.0.1:$PG_PORT (user gatehouse, databases authors, audit)"
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
