#!/usr/bin/env bash
# Writes Prometheus file_sd target lists, one file per job, from the replica counts:
# every replica is scraped through Traefik's metrics entrypoint at
# /metrics/<process>/<replica> and labelled instance=<process>-<replica>. Also writes
# alerting.json, the Alertmanager that Prometheus sends its alerts to.
# Usage: prometheus-targets.sh <output dir> [metrics address, default 127.0.0.1:8082]
#          [Alertmanager address, default 127.0.0.1:9093]
set -euo pipefail
out="${1:?usage: $0 <output dir> [metrics address] [Alertmanager address]}"
address="${2:-127.0.0.1:8082}"
alertmanager="${3:-127.0.0.1:9093}"
mkdir -p "$out"
write() {  # write <job> <replicas> <path of replica k, with K for k> ...
  local job="$1" replicas="$2" path="$3" sep="" k
  {
    printf '['
    for ((k = 0; k < replicas; k++)); do
      printf '%s\n  {"targets": ["%s"], "labels": {"instance": "%s-%d", "__metrics_path__": "%s"}}' \
        "$sep" "$address" "$job" "$k" "${path//K/$k}"
      sep=","
    done
    printf '\n]\n'
  } > "$out/$job.json.tmp"
  # Prometheus watches the file: replace it whole, never half-written.
  mv "$out/$job.json.tmp" "$out/$job.json"
}
write gateway "${GATEWAY_REPLICAS:-1}" /metrics/gateway/K
write authors "${AUTHORS_REPLICAS:-1}" /metrics/authors/K
write audit "${AUDIT_REPLICAS:-1}" /metrics/audit/K
write ratelimit "${RATELIMIT_REPLICAS:-1}" /metrics/ratelimit/K
write keycloak 1 /metrics/keycloak/K
write traefik 1 /metrics
write alertmanager 1 /metrics/alertmanager/K
write alert-receiver 1 /metrics/alert-receiver/K
# The log store, its shipper and vmalert (docs/logging.md).
write victoria-logs 1 /metrics/victoria-logs/K
write otelcol 1 /metrics/otelcol/K
write vmalert 1 /metrics/vmalert/K
printf '[{"targets": ["%s"]}]\n' "$alertmanager" > "$out/alerting.json.tmp"
mv "$out/alerting.json.tmp" "$out/alerting.json"
