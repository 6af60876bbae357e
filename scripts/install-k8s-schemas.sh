#!/usr/bin/env bash
# Prints the directory of the schemas the Helm chart is checked against (`make
# k8s-check`), gathered once from their Go modules and cached: the Kubernetes API's
# OpenAPI v3 documents of the pinned release (api/openapi-spec/v3 of k8s.io/kubernetes)
# in openapi/, and in crds/ the CustomResourceDefinitions of Traefik (the version
# scripts/install-traefik.sh builds) and of Prometheus Operator (ServiceMonitor,
# PrometheusRule). K8S_SCHEMAS_DIR names such a directory, of the same versions, to use
# instead.
source "$(dirname "$0")/lib.sh"
if [ -d "${K8S_SCHEMAS_DIR:-}/openapi" ] && [ -d "$K8S_SCHEMAS_DIR/crds" ]; then echo "$K8S_SCHEMAS_DIR"; exit 0; fi
KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
TRAEFIK_VERSION="$(sed -n 's/^TRAEFIK_VERSION="\${TRAEFIK_VERSION:-\(.*\)}"$/\1/p' "$REPO_ROOT/scripts/install-traefik.sh")"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.90.1}"
dir="$GATEHOUSE_CACHE/k8s-schemas-$KUBERNETES_VERSION-traefik-$TRAEFIK_VERSION-prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
if [ -d "$dir" ]; then echo "$dir"; exit 0; fi
go="$(bash "$REPO_ROOT/scripts/install-go.sh")"
module_dir() {
  (cd "$GATEHOUSE_CACHE" && "$go" mod download -json "$1") |
    python3 -c 'import json, sys; m = json.load(sys.stdin); print(m.get("Dir") or sys.exit(m["Error"]))'
}
log "fetching the Kubernetes $KUBERNETES_VERSION API schemas and the Traefik $TRAEFIK_VERSION and Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs from their Go modules (first run only, under a minute)"
kubernetes=$(ticking "downloading k8s.io/kubernetes" module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION")
traefik=$(module_dir "github.com/traefik/traefik/v3@$TRAEFIK_VERSION")
operator=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/openapi" "$dir.tmp/crds"
cp "$kubernetes"/api/openapi-spec/v3/*.json "$dir.tmp/openapi/"
cp "$traefik"/docs/content/reference/dynamic-configuration/traefik.io_*.yaml "$dir.tmp/crds/"
cp "$operator"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,prometheusrules}.yaml "$dir.tmp/crds/"
chmod -R u+w "$dir.tmp"
mv "$dir.tmp" "$dir"
echo "$dir"
