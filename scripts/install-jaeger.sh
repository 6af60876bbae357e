#!/usr/bin/env bash
# Prints the path of a Jaeger v2 binary of the pinned version (the trace backend: an
# OpenTelemetry Collector distribution with Jaeger's storage and query API), built once
# from its Go module and cached. JAEGER_BIN names one of the same version to use instead.
# Jaeger's go.mod carries a replace directive that `go install` refuses, so a throwaway
# module that requires it as a tool (`go get -tool`) repeats it.
source "$(dirname "$0")/lib.sh"
JAEGER_VERSION="${JAEGER_VERSION:-v1.75.0}" # the module's tag of Jaeger v2.12.0
bin="$GATEHOUSE_CACHE/jaeger-$JAEGER_VERSION/jaeger"
if [ -x "${JAEGER_BIN:-}" ]; then echo "$JAEGER_BIN"; exit 0; fi
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
go="$(bash "$REPO_ROOT/scripts/install-go.sh")"
work="$GATEHOUSE_CACHE/jaeger-build-$JAEGER_VERSION"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
log "building jaeger $JAEGER_VERSION from its Go module (first run only, about 10 min on 2 cores)"
modfile=$("$go" mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
{
  echo "module gatehouse.local/jaegerbuild"
  echo
  echo "go $("$go" env GOVERSION | sed 's/^go//')"
  echo
  awk '/^(replace|exclude) \(/{inblk=1} inblk{print} inblk&&/^\)/{inblk=0; next} /^(replace|exclude) [^(]/{print}' "$modfile"
} > go.mod
export GOFLAGS=-mod=mod CGO_ENABLED=0
quietly() { "$@" >/dev/null 2>&1; }
ticking "downloading jaeger's modules" quietly "$go" get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
packages=$("$go" list -deps github.com/jaegertracing/jaeger/cmd/jaeger | wc -l)
mkdir -p "$(dirname "$bin")"
go_progress jaeger "$packages" "$go" build -v -trimpath -ldflags "-s -w" \
  -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$bin.tmp" "$bin"
rm -rf "$work"
echo "$bin"
