#!/usr/bin/env bash
# Runs Keycloak in the foreground (supervisord starts it) on 127.0.0.1:8180, management
# (health, metrics) on 127.0.0.1:9000. Its database is disposable: each start wipes it
# and imports deploy/keycloak/gatehouse-realm.json, so the realm in the repository is
# always the one that runs. A single node needs no cluster cache (and skips discovery).
source "$(dirname "$0")/lib.sh"
state="${GATEHOUSE_STATE:-$HOME/.local/state/gatehouse}/keycloak"
home="$(bash "$REPO_ROOT/scripts/install-keycloak.sh")"
rm -rf "$state" && mkdir -p "$state" "$home/data/import"
rm -f "$home"/data/import/*.json
cp "$REPO_ROOT/deploy/keycloak/gatehouse-realm.json" "$home/data/import/"
export JAVA_HOME
JAVA_HOME="$(bash "$REPO_ROOT/scripts/java-home.sh")"
export JAVA_OPTS_KC_HEAP="${KEYCLOAK_JAVA_HEAP:--Xms64m -Xmx512m}"
# The JIT's first tier only: measured here, it halves the CPU time of a start (about 21 s
# to 11 s of CPU), which matters on a two-core machine; a development server does not
# need the peak throughput of the optimising compiler.
export JAVA_OPTS_APPEND="${KEYCLOAK_JAVA_OPTS:--XX:TieredStopAtLevel=1}"
# The master realm's administrator; development only, reachable on loopback only.
export KC_BOOTSTRAP_ADMIN_USERNAME="${KEYCLOAK_ADMIN_USER:-kcadmin}"
export KC_BOOTSTRAP_ADMIN_PASSWORD="${KEYCLOAK_ADMIN_PASSWORD:-kcadmin-dev-password}"
# The issuer is always the public URL through Traefik, however a token is fetched;
# back-channel endpoints (token, JWKS) follow the request, so services may call Keycloak
# directly. The admin console lives on the direct address only.
exec "$home/bin/kc.sh" start --optimized \
  --http-enabled=true --http-host=127.0.0.1 --http-port=8180 \
  --http-management-port=9000 \
  --hostname=http://localhost:8080/auth \
  --hostname-admin=http://127.0.0.1:8180/auth \
  --hostname-backchannel-dynamic=true \
  --proxy-headers=xforwarded \
  --cache=local \
  --import-realm \
  "--db-url=jdbc:h2:file:$state/h2/keycloakdb;NON_KEYWORDS=VALUE"
