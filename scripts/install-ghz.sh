#!/usr/bin/env bash
# Builds ghz (the gRPC load generator the benchmarks drive) from its Go module at a pinned
# version and caches it.
source "$(dirname "$0")/lib.sh"
go_tool ghz github.com/bojand/ghz/cmd/ghz "${GHZ_VERSION:-v0.121.0}" 1
