#!/usr/bin/env bash
# Fetches the Keycloak server distribution from Maven Central at a pinned version with
# Maven (Debian's, installed if missing), unpacks it once into the cache and pre-builds it
# for the dev profile.
source "$(dirname "$0")/lib.sh"
KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.5.6}"
home="$GATEHOUSE_CACHE/keycloak-$KEYCLOAK_VERSION"
# Options fixed at build time (runtime options are given by scripts/keycloak.sh).
BUILD_OPTIONS="--health-enabled=true --metrics-enabled=true --db=dev-file --http-relative-path=/auth"
build() {
  local java_home
  java_home="$(bash "$REPO_ROOT/scripts/java-home.sh")" || return 1
  # shellcheck disable=SC2086  # the options are words on purpose
  if ! JAVA_HOME="$java_home" "$home/bin/kc.sh" build $BUILD_OPTIONS >"$home/build.log" 2>&1; then
    cat "$home/build.log" >&2
    return 1
  fi
  echo "$BUILD_OPTIONS" > "$home/.built"
}
fetch() {
  if ! mvn -B dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
    -DoutputDirectory="$GATEHOUSE_CACHE" >"$GATEHOUSE_CACHE/keycloak-fetch.log" 2>&1; then
    cat "$GATEHOUSE_CACHE/keycloak-fetch.log" >&2
    return 1
  fi
  rm -f "$GATEHOUSE_CACHE/keycloak-fetch.log"
}
if [ -x "$home/bin/kc.sh" ] && [ -f "$home/.built" ]; then
  # Rebuild (seconds, no download) only when the build options changed.
  [ "$(cat "$home/.built")" = "$BUILD_OPTIONS" ] || build
  echo "$home"; exit 0
fi
command -v mvn >/dev/null 2>&1 || apt_install maven
log "fetching keycloak $KEYCLOAK_VERSION from Maven Central (first run only, about a minute)"
ticking "fetching keycloak" fetch
rm -rf "$home" "$home.tmp" && mkdir -p "$home.tmp"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  "$GATEHOUSE_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" "$home.tmp"
mv "$home.tmp/keycloak-$KEYCLOAK_VERSION" "$home" && rm -rf "$home.tmp"
chmod +x "$home"/bin/*.sh
rm -f "$GATEHOUSE_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip"
# Build once with the options that are fixed at build time, so that each start is quick.
log "building keycloak for its fixed options (first run only, under a minute)"
ticking "building keycloak" build
echo "$home"
