#!/usr/bin/env bash
# Writes Traefik's static configuration: deploy/traefik/traefik.yml with its internal
# entrypoints (grpc 8081, metrics 8082, traefik 8083: the addresses on 127.0.0.1 there)
# bound to GATEHOUSE_INTERNAL_BIND_ADDRESS. Traefik reads its static configuration from a
# file or from the environment, never both, hence the rendering.
#   GATEHOUSE_INTERNAL_BIND_ADDRESS  an IPv4 address: 127.0.0.1 (the default, loopback);
#     a private interface's address on a host whose internal clients live elsewhere;
#     0.0.0.0 (every interface) only where every interface is private, as inside a
#     compose container. Anything else is refused (exit 2) and nothing is written.
# and its tracing block (docs/tracing.md) from the variables every process reads:
#   TRACING_ENABLED       false (or 0, no, off) drops the block: Traefik traces nothing
#   TRACING_SAMPLE_RATIO  sampleRate, a number from 0 to 1 (default 0.01, as in the file)
#   TRACING_OTLP_ENDPOINT the collector's OTLP/gRPC address, [http://]host:port
#     (default http://127.0.0.1:4317, as in the file)
# A value of either that is not of that form is refused (exit 2), and nothing is written.
# and where the access log goes:
#   TRAEFIK_ACCESS_LOG    an absolute file path: Traefik writes its access log there itself
#     (and reopens it on USR1, after scripts/logrotate.sh rotated it); unset or empty:
#     standard output, with Traefik's own log (compose, where Docker keeps the output)
# Usage: traefik-config.sh <output file>
set -euo pipefail
out="${1:?usage: $0 <output file>}"
bind="${GATEHOUSE_INTERNAL_BIND_ADDRESS:-127.0.0.1}"
octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])'
if ! [[ "$bind" =~ ^$octet\.$octet\.$octet\.$octet$ ]]; then
  echo "GATEHOUSE_INTERNAL_BIND_ADDRESS must be an IPv4 address such as 127.0.0.1 or 10.0.0.5, not '$bind'" >&2
  exit 2
fi
ratio="${TRACING_SAMPLE_RATIO:-0.01}"
if ! [[ "$ratio" =~ ^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$ ]]; then
  echo "TRACING_SAMPLE_RATIO must be a number from 0 to 1 such as 0.01, not '$ratio'" >&2
  exit 2
fi
endpoint="${TRACING_OTLP_ENDPOINT:-http://127.0.0.1:4317}"
if ! [[ "$endpoint" =~ ^(http://)?([A-Za-z0-9.-]+:[0-9]{1,5})/?$ ]]; then
  echo "TRACING_OTLP_ENDPOINT must be [http://]host:port such as http://127.0.0.1:4317, not '$endpoint'" >&2
  exit 2
fi
endpoint="${BASH_REMATCH[2]}"
access_log="${TRAEFIK_ACCESS_LOG:-}"
if [ -n "$access_log" ] && ! [[ "$access_log" =~ ^/[A-Za-z0-9._/-]+$ ]]; then
  echo "TRAEFIK_ACCESS_LOG must be an absolute path of letters, digits, '.', '_', '-' and '/', not '$access_log'" >&2
  exit 2
fi
access=""
[ -z "$access_log" ] || access="s|^accessLog:\$|accessLog:\n  filePath: \"$access_log\"|"
case "${TRACING_ENABLED:-true}" in
  [Ff][Aa][Ll][Ss][Ee] | 0 | [Nn][Oo] | [Oo][Ff][Ff]) tracing='/^tracing:/,/^$/d' ;;
  *) tracing="s/^  sampleRate: .*/  sampleRate: $ratio/; s/^      endpoint: 127\.0\.0\.1:4317$/      endpoint: $endpoint/" ;;
esac
source_file="$(cd "$(dirname "$0")/.." && pwd)/deploy/traefik/traefik.yml"
mkdir -p "$(dirname "$out")"
sed "s/^\(    address: \"\)127\.0\.0\.1:/\1$bind:/; $tracing; $access" "$source_file" > "$out.tmp"
# Replaced whole, never half-written.
mv "$out.tmp" "$out"
