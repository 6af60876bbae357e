#!/usr/bin/env bash
# Prints the path of the log shipper: an OpenTelemetry Collector built by the collector's
# builder from deploy/otelcol/manifest.yaml (its components, all of one release), once, and
# cached under a name that carries the manifest's hash, so that an edit of the manifest
# builds anew. OTELCOL_BIN names a build of the same manifest to use instead.
source "$(dirname "$0")/lib.sh"
OTELCOL_BUILDER_VERSION="${OTELCOL_BUILDER_VERSION:-v0.165.0}"
manifest="$REPO_ROOT/deploy/otelcol/manifest.yaml"
if [ -x "${OTELCOL_BIN:-}" ]; then echo "$OTELCOL_BIN"; exit 0; fi
bin="$GATEHOUSE_CACHE/otelcol-$OTELCOL_BUILDER_VERSION-$(sha256sum "$manifest" | cut -c1-12)/gatehouse-otelcol"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
builder="$(go_tool builder go.opentelemetry.io/collector/cmd/builder "$OTELCOL_BUILDER_VERSION" 2)"
go="$(bash "$REPO_ROOT/scripts/install-go.sh")"
work="$GATEHOUSE_CACHE/otelcol-build-$OTELCOL_BUILDER_VERSION"
rm -rf "$work" && mkdir -p "$work"
cp "$manifest" "$work/manifest.yaml"
cd "$work"
log "building the log shipper (OpenTelemetry Collector $OTELCOL_BUILDER_VERSION) from its Go modules (first run only, about 8 min on 2 cores)"
# The builder runs the `go` it finds first on PATH: the pinned toolchain.
export CGO_ENABLED=0 GOFLAGS=-mod=mod PATH="$(dirname "$go"):$PATH"
build() { "$builder" --config manifest.yaml --ldflags "-s -w" >build.log 2>&1; }
ticking "building the log shipper" build || { tail -n 40 build.log >&2; exit 1; }
mkdir -p "$(dirname "$bin")"
mv build/gatehouse-otelcol "$bin"
cd / && rm -rf "$work"
echo "$bin"
