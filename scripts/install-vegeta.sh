#!/usr/bin/env bash
# Builds vegeta (the open-loop HTTP load generator the platform benchmark drives) from its
# Go module at a pinned version and caches it.
source "$(dirname "$0")/lib.sh"
go_tool vegeta github.com/tsenart/vegeta/v12 "${VEGETA_VERSION:-v12.12.0}" 1
