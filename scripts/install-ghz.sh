#!/usr/bin/env bash
# Builds ghz (the gRPC load generator the benchmarks drive) from its Go module at a pinned
# version and caches it.
source "$(dirname "$0")/lib.sh"
GHZ_VERSION="${GHZ_VERSION:-v0.121.0}"
dir="$GATEHOUSE_CACHE/ghz-$GHZ_VERSION"
if [ -x "$dir/ghz" ]; then echo "$dir/ghz"; exit 0; fi
log "building ghz $GHZ_VERSION (first run only)"
GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >&2
echo "$dir/ghz"
