#!/usr/bin/env bash
# Builds Helm (the Kubernetes chart tool, for deploy/helm: `make k8s-check`) from its Go
# module at a pinned version and caches it. HELM_BIN names one of the same version to use
# instead.
source "$(dirname "$0")/lib.sh"
if [ -x "${HELM_BIN:-}" ]; then echo "$HELM_BIN"; exit 0; fi
go_tool helm helm.sh/helm/v4/cmd/helm "${HELM_VERSION:-v4.3.2}" 4
