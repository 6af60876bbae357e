#!/usr/bin/env bash
# Prints the path of a Traefik binary of the pinned version: TRAEFIK_BIN or a `traefik` on
# PATH if it reports that version, else one built once from its Go module and cached.
# Traefik's go.mod carries replace/exclude directives that `go install` refuses,
# so a throwaway wrapper module is generated that repeats them from the pinned go.mod.
source "$(dirname "$0")/lib.sh"
TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.6.12}"
bin="$GATEHOUSE_CACHE/traefik-$TRAEFIK_VERSION/traefik"
pinned() { [ -x "$1" ] && [ "$("$1" version | awk '/^Version:/{sub(/^v/, "", $2); print $2}')" = "${TRAEFIK_VERSION#v}" ]; }
if [ -x "${TRAEFIK_BIN:-}" ] && pinned "$TRAEFIK_BIN"; then echo "$TRAEFIK_BIN"; exit 0; fi
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
if command -v traefik >/dev/null 2>&1 && pinned "$(command -v traefik)"; then command -v traefik; exit 0; fi
go="$(bash "$REPO_ROOT/scripts/install-go.sh")"
work="$GATEHOUSE_CACHE/traefik-build-$TRAEFIK_VERSION"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
log "building traefik $TRAEFIK_VERSION from its Go module (first run only, about 9 min on 2 cores)"
modfile=$("$go" mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
{
  echo "module gatehouse.local/traefikbuild"
  echo
  echo "go $("$go" env GOVERSION | sed 's/^go//')"
  echo
  echo "require github.com/traefik/traefik/v3 $TRAEFIK_VERSION"
  echo
  # Repeat the upstream replace and exclude directives (single-line and block forms).
  awk '/^(replace|exclude) \(/{inblk=1} inblk{print} inblk&&/^\)/{inblk=0; next} /^(replace|exclude) [^(]/{print}' "$modfile"
} > go.mod
printf 'package main\n\nimport _ "github.com/traefik/traefik/v3/cmd/traefik"\n' > tools.go
export GOFLAGS=-mod=mod CGO_ENABLED=0
quietly() { "$@" >/dev/null 2>&1; }
ticking "downloading traefik's modules" quietly "$go" mod tidy || true
packages=$("$go" list -deps github.com/traefik/traefik/v3/cmd/traefik | wc -l)
mkdir -p "$(dirname "$bin")"
go_progress traefik "$packages" "$go" build -v -trimpath \
  -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
  -o "$bin.tmp" github.com/traefik/traefik/v3/cmd/traefik
mv "$bin.tmp" "$bin"
rm -rf "$work"
echo "$bin"
