#!/usr/bin/env bash
# Prints the path of a vmalert binary of the pinned version (Apache-2.0; the alerts
# computed from the log store: deploy/vmalert/rules.yml, docs/logging.md), built once
# from the VictoriaMetrics Go module (command app/vmalert) and cached.
# VMALERT_BIN names one of the same version to use instead.
source "$(dirname "$0")/lib.sh"
VMALERT_VERSION="${VMALERT_VERSION:-v1.151.0}"
if [ -x "${VMALERT_BIN:-}" ]; then echo "$VMALERT_BIN"; exit 0; fi
go_tool vmalert github.com/VictoriaMetrics/VictoriaMetrics/app/vmalert "$VMALERT_VERSION" 2
