#!/usr/bin/env bash
# Print the path of a pinned Helm binary, building it once from the Go module proxy if it is not cached.
#
#   deploy/tools/helm.sh                 -> /root/.cache/shudi/helm-v3.19.5/helm   (stdout: the path only)
#   "$(deploy/tools/helm.sh)" lint deploy/helm/shudi
#
# Helm is built with `go install helm.sh/helm/v3/cmd/helm@<version>` (no prebuilt binary is downloaded).
# The binary is cached in ${XDG_CACHE_HOME:-~/.cache}/shudi/helm-<version>/; later calls only check it and
# return at once. Progress goes to stderr. Environment:
#   SHUDI_HELM_VERSION  Helm version (default below)
#   SHUDI_HELM_CACHE    cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/shudi/helm-<version>)
#   GO                  the go command (default: `go` on PATH, else /usr/local/go/bin/go)
set -euo pipefail

HELM_VERSION="${SHUDI_HELM_VERSION:-v3.19.5}"
CACHE_DIR="${SHUDI_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shudi/helm-${HELM_VERSION}}"
HELM_BIN="$CACHE_DIR/helm"

cached_ok() {
  [[ -x "$HELM_BIN" && -f "$CACHE_DIR/.complete" ]] &&
    [[ "$("$HELM_BIN" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]]
}

if cached_ok; then
  echo "$HELM_BIN"
  exit 0
fi

GO="${GO:-$(command -v go || true)}"
if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
  GO=/usr/local/go/bin/go
fi
if [[ -z "$GO" ]]; then
  echo "helm.sh: Go is needed to build Helm $HELM_VERSION (set GO= or put go on PATH)" >&2
  exit 1
fi

mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
flock 9   # two callers at once (parallel tests, CI jobs): one builds, the other waits and reuses it
if cached_ok; then
  echo "$HELM_BIN"
  exit 0
fi

echo "helm.sh: building Helm $HELM_VERSION with $("$GO" version) (once; cached in $CACHE_DIR)" >&2
start=$(date +%s)
tmp="$(mktemp -d "$CACHE_DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# Helm's Makefile stamps the version and the default Kubernetes version (.Capabilities.KubeVersion of
# `helm template`, deprecation checks of `helm lint`: 1.<minor of client-go>); do the same, else they read
# "v3.x-dev" and v1.20.0. client-go's version comes from Helm's own go.mod in the module cache.
gomod="$(GOFLAGS=-mod=mod "$GO" mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
client_go="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -n1)"
if [[ -z "$client_go" ]]; then
  echo "helm.sh: cannot find k8s.io/client-go in $gomod" >&2
  exit 1
fi
pkg=helm.sh/helm/v3
ldflags="-s -w -X $pkg/internal/version.version=${HELM_VERSION} -X $pkg/internal/version.gitTreeState=clean"
for v in pkg/chartutil pkg/lint/rules; do
  ldflags+=" -X $pkg/$v.k8sVersionMajor=1 -X $pkg/$v.k8sVersionMinor=${client_go}"
done
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" \
  "$GO" install -ldflags "$ldflags" "$pkg/cmd/helm@${HELM_VERSION}"
rm -f "$CACHE_DIR/.complete"
mv -f "$tmp/helm" "$HELM_BIN"
touch "$CACHE_DIR/.complete"
if ! cached_ok; then
  echo "helm.sh: built $HELM_BIN but it does not report $HELM_VERSION" >&2
  exit 1
fi
echo "helm.sh: built Helm $HELM_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$HELM_BIN"
