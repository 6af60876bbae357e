#!/usr/bin/env bash
# Prints the path of a VictoriaLogs binary of the pinned version (the log store, Apache-2.0),
# built once from its Go module (command app/victoria-logs) and cached.
# VICTORIALOGS_BIN names one of the same version to use instead.
source "$(dirname "$0")/lib.sh"
VICTORIALOGS_VERSION="${VICTORIALOGS_VERSION:-v1.52.2}"
if [ -x "${VICTORIALOGS_BIN:-}" ]; then echo "$VICTORIALOGS_BIN"; exit 0; fi
go_tool victoria-logs github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs "$VICTORIALOGS_VERSION" 2
