#!/usr/bin/env bash
# Prints the directory holding kube-apiserver and etcd of the pinned Kubernetes release,
# built once from their Go modules and cached: the real API server that checks the Helm
# chart (tests/test_helm_apiserver.py, a server-side dry run of every rendered object). The
# k8s.io/kubernetes module points its staging modules (k8s.io/api, k8s.io/apiserver, ...)
# at its own tree with replace directives, which `go install` refuses, so a throwaway
# module requires it and names the released staging modules of the same release instead;
# etcd's server is the one that release's go.mod requires. KUBE_APISERVER_DIR names a
# directory holding both, of the same versions, to use instead.
source "$(dirname "$0")/lib.sh"
if [ -x "${KUBE_APISERVER_DIR:-}/kube-apiserver" ] && [ -x "$KUBE_APISERVER_DIR/etcd" ]; then
  echo "$KUBE_APISERVER_DIR"; exit 0
fi
KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
dir="$GATEHOUSE_CACHE/kube-apiserver-$KUBERNETES_VERSION"
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then echo "$dir"; exit 0; fi
go="$(bash "$REPO_ROOT/scripts/install-go.sh")"
work="$GATEHOUSE_CACHE/kube-apiserver-build-$KUBERNETES_VERSION"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
log "building kube-apiserver and etcd of Kubernetes $KUBERNETES_VERSION from their Go modules (first run only, about 15 min on 2 cores)"
modfile=$("$go" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
staging="v0.${KUBERNETES_VERSION#v1.}"
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$modfile")
{
  echo "module gatehouse.local/kubebuild"
  echo
  echo "go $("$go" env GOVERSION | sed 's/^go//')"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $KUBERNETES_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $etcd"
  echo ")"
  echo
  echo "replace ("
  awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " v}' "$modfile"
  echo ")"
} > go.mod
printf 'package main\n\nimport (\n\t_ "go.etcd.io/etcd/server/v3"\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n)\n' > tools.go
export GOFLAGS=-mod=mod CGO_ENABLED=0
quietly() { "$@" >/dev/null 2>&1; }
ticking "downloading kube-apiserver's modules" quietly "$go" mod tidy || true
packages=$("$go" list -deps k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3 | wc -l)
mkdir -p "$dir.tmp"
# The release's version, as its own build stamps it (`kube-apiserver --version`, /version).
minor="${KUBERNETES_VERSION#v1.}"
version="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
go_progress kube-apiserver "$packages" "$go" build -v -trimpath -ldflags "-s -w $version" \
  -o "$dir.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go_progress etcd "" "$go" build -v -trimpath -ldflags "-s -w" -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3
rm -rf "$dir" && mv "$dir.tmp" "$dir"
rm -rf "$work"
echo "$dir"
