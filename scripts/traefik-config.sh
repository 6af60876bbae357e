#!/usr/bin/env bash
# Writes Traefik's static configuration: deploy/traefik/traefik.yml with its internal
# entrypoints (grpc 8081, metrics 8082, traefik 8083: the addresses on 127.0.0.1 there)
# bound to GATEHOUSE_INTERNAL_BIND_ADDRESS. Traefik reads its static configuration from a
# file or from the environment, never both, hence the rendering.
#   GATEHOUSE_INTERNAL_BIND_ADDRESS  an IPv4 address: 127.0.0.1 (the default, loopback);
#     a private interface's address on a host whose internal clients live elsewhere;
#     0.0.0.0 (every interface) only where every interface is private, as inside a
#     compose container. Anything else is refused (exit 2) and nothing is written.
# Usage: traefik-config.sh <output file>
set -euo pipefail
out="${1:?usage: $0 <output file>}"
bind="${GATEHOUSE_INTERNAL_BIND_ADDRESS:-127.0.0.1}"
octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])'
if ! [[ "$bind" =~ ^$octet\.$octet\.$octet\.$octet$ ]]; then
  echo "GATEHOUSE_INTERNAL_BIND_ADDRESS must be an IPv4 address such as 127.0.0.1 or 10.0.0.5, not '$bind'" >&2
  exit 2
fi
source_file="$(cd "$(dirname "$0")/.." && pwd)/deploy/traefik/traefik.yml"
mkdir -p "$(dirname "$out")"
sed "s/^\(    address: \"\)127\.0\.0\.1:/\1$bind:/" "$source_file" > "$out.tmp"
# Replaced whole, never half-written.
mv "$out.tmp" "$out"
