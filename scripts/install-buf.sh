#!/usr/bin/env bash
# Builds buf (the protobuf linter) from its Go module at a pinned version and caches it.
source "$(dirname "$0")/lib.sh"
BUF_VERSION="${BUF_VERSION:-v1.75.0}"
dir="$GATEHOUSE_CACHE/buf-$BUF_VERSION"
if [ -x "$dir/buf" ]; then echo "$dir/buf"; exit 0; fi
log "building buf $BUF_VERSION (first run only)"
GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION" >&2
echo "$dir/buf"
