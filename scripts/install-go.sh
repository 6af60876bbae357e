#!/usr/bin/env bash
# Prints the path of a go command new enough for the pinned Go builds (Traefik, buf, ghz):
# the machine's `go` if it is at least GO_MINIMUM, else Go GO_VERSION installed once into
# the cache. Each Go release is also published as the module golang.org/toolchain (a whole
# GOROOT), so any go, Debian's old golang-go included (installed if none), downloads it.
source "$(dirname "$0")/lib.sh"
GO_VERSION="${GO_VERSION:-1.26.8}"
GO_MINIMUM=1.26.7 # the go line of buf v1.75.0's go.mod (Traefik v3.6.12: 1.25.0)
root="$GATEHOUSE_CACHE/go-$GO_VERSION"
at_least() { [ "$(printf '%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]; }
if command -v go >/dev/null 2>&1; then
  version="$(go env GOVERSION)"
  version="${version%% *}"
  if at_least "$GO_MINIMUM" "${version#go}"; then command -v go; exit 0; fi
fi
if [ -x "$root/bin/go" ]; then echo "$root/bin/go"; exit 0; fi
command -v go >/dev/null 2>&1 || apt_install golang-go
log "fetching Go $GO_VERSION as the Go module golang.org/toolchain (first run only, under a minute)"
module="golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$(dpkg --print-architecture)"
download="$GATEHOUSE_CACHE/go-download"
rm -rf "$download" "$root.tmp"
dir=$(cd "$GATEHOUSE_CACHE" && GOMODCACHE="$download" GOFLAGS=-modcacherw \
  ticking "fetching Go $GO_VERSION" go mod download -json "$module" |
  python3 -c 'import json, sys; m = json.load(sys.stdin); print(m.get("Dir") or sys.exit(m["Error"]))')
mv "$dir" "$root.tmp"
# Module zips keep no file modes: the commands need their exec bits back.
chmod +x "$root.tmp"/bin/* "$root.tmp"/pkg/tool/*/*
rm -rf "$download"
mv "$root.tmp" "$root"
echo "$root/bin/go"
