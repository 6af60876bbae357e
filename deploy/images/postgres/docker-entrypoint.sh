#!/bin/sh
# On an empty data directory: a cluster whose superuser is POSTGRES_USER (default
# postgres) with POSTGRES_PASSWORD, the database POSTGRES_DB (default the user's name),
# then /docker-entrypoint-initdb.d/*.sql and *.sh in name order, against a server that
# listens on a private socket only (so that neither pg_isready nor TCP clients see it
# ready before the scripts are done). Then the server on every interface, password login.
set -eu
if [ "${1:-}" != postgres ]; then exec "$@"; fi
shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "docker-entrypoint.sh: POSTGRES_PASSWORD must be set" >&2
    exit 1
  fi
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  init=$(mktemp -d)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$init/pw"
  initdb -D "$PGDATA" -U "$user" --pwfile "$init/pw" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
  rm -f "$init/pw"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$init" start
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -h "$init" -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case $f in
      *.sql) psql -v ON_ERROR_STOP=1 -h "$init" -U "$user" -d "$db" -f "$f" ;;
      *.sh) PGHOST=$init PGUSER=$user PGDATABASE=$db sh "$f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  rmdir "$init"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
