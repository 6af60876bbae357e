#!/usr/bin/env bash
# Builds Helm (the Kubernetes chart tool, for deploy/helm: `make k8s-check`) from its Go
# module at a pinned version and caches it.
source "$(dirname "$0")/lib.sh"
go_tool helm helm.sh/helm/v4/cmd/helm "${HELM_VERSION:-v4.3.2}" 4
