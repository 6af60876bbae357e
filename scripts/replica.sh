#!/usr/bin/env bash
# Runs replica <k> (0-based) of a Gatehouse service with every port shifted by 100*k,
# as docs/architecture.md lays out. supervisord starts one per replica (numprocs).
# Usage: replica.sh gateway|authors|audit|ratelimit <k>
set -euo pipefail
process="${1:?usage: $0 <process> <replica>}"
k="${2:?usage: $0 <process> <replica>}"
offset=$((100 * k))
case "$process" in
  gateway)
    export GATEWAY_HTTP_PORT=$((8000 + offset)) GATEWAY_METRICS_PORT=$((9100 + offset)) ;;
  authors)
    export AUTHORS_GRPC_PORT=$((7051 + offset)) AUTHORS_METRICS_PORT=$((9101 + offset)) ;;
  audit)
    export AUDIT_GRPC_PORT=$((7052 + offset)) AUDIT_METRICS_PORT=$((9102 + offset)) ;;
  ratelimit)
    export RATELIMIT_GRPC_PORT=$((7053 + offset)) RATELIMIT_METRICS_PORT=$((9103 + offset)) ;;
  *) echo "unknown process: $process" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
# The stack's tracing settings as they stand now (written by scripts/run.sh; docs/tracing.md).
if [ -n "${GATEHOUSE_STATE:-}" ] && [ -f "$GATEHOUSE_STATE/tracing.env" ]; then
  set -a && source "$GATEHOUSE_STATE/tracing.env" && set +a
fi
# uv forwards SIGTERM to the service, which then drains in-flight work.
exec uv run --frozen python -m "gatehouse_$process"
