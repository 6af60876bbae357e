#!/usr/bin/env bash
# Fetches the Keycloak server distribution from Maven Central at a pinned version,
# unpacks it once into the cache and pre-builds it for the dev profile.
source "$(dirname "$0")/lib.sh"
KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.5.6}"
home="$GATEHOUSE_CACHE/keycloak-$KEYCLOAK_VERSION"
if [ -x "$home/bin/kc.sh" ] && [ -f "$home/.built" ]; then echo "$home"; exit 0; fi
log "fetching keycloak $KEYCLOAK_VERSION from Maven Central (first run only)"
mvn -q -B dependency:copy \
  -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
  -DoutputDirectory="$GATEHOUSE_CACHE" >&2
rm -rf "$home" "$home.tmp" && mkdir -p "$home.tmp"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  "$GATEHOUSE_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" "$home.tmp"
mv "$home.tmp/keycloak-$KEYCLOAK_VERSION" "$home" && rm -rf "$home.tmp"
chmod +x "$home"/bin/*.sh
rm -f "$GATEHOUSE_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip"
# Build once with the options that are fixed at build time, so that each start is quick.
JAVA_HOME="$("$(dirname "$0")/java-home.sh")" "$home/bin/kc.sh" build \
  --health-enabled=true --metrics-enabled=true --db=dev-file --http-relative-path=/auth >&2
touch "$home/.built"
echo "$home"
