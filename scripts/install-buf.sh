#!/usr/bin/env bash
# Builds buf (the protobuf linter) from its Go module at a pinned version and caches it.
source "$(dirname "$0")/lib.sh"
go_tool buf github.com/bufbuild/buf/cmd/buf "${BUF_VERSION:-v1.75.0}" 3
