#!/usr/bin/env bash
# Builds Traefik from its Go module at a pinned tag and caches the binary.
# Traefik's go.mod carries replace/exclude directives that `go install` refuses,
# so a throwaway wrapper module is generated that repeats them from the pinned go.mod.
source "$(dirname "$0")/lib.sh"
TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.6.12}"
bin="$GATEHOUSE_CACHE/traefik-$TRAEFIK_VERSION/traefik"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
work="$GATEHOUSE_CACHE/traefik-build-$TRAEFIK_VERSION"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
log "building traefik $TRAEFIK_VERSION (first run only, several minutes)"
modfile=$(go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
{
  echo "module gatehouse.local/traefikbuild"
  echo
  echo "go $(go env GOVERSION | sed 's/^go//')"
  echo
  echo "require github.com/traefik/traefik/v3 $TRAEFIK_VERSION"
  echo
  # Repeat the upstream replace and exclude directives (single-line and block forms).
  awk '/^(replace|exclude) \(/{inblk=1} inblk{print} inblk&&/^\)/{inblk=0; next} /^(replace|exclude) [^(]/{print}' "$modfile"
} > go.mod
printf 'package main\n\nimport _ "github.com/traefik/traefik/v3/cmd/traefik"\n' > tools.go
GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
mkdir -p "$(dirname "$bin")"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
  -o "$bin.tmp" github.com/traefik/traefik/v3/cmd/traefik
mv "$bin.tmp" "$bin"
rm -rf "$work"
echo "$bin"
